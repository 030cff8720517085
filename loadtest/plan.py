"""The run plan: server facts, scenario, and every prompt, made once before Locust starts.

Users read the plan instead of tokenizing under load, so the tokenizer calls never compete with the
requests being measured."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from loadtest.prompts import local_tokenizer, parse_bucket, plan_prompts, request_fields
from loadtest.scenarios import SCENARIOS
from loadtest.server import ServerInfo, http_tokenizer, probe

DEFAULT_BUCKETS = ("1k", "4k", "8k")
SOAK_SHORTEST = 256
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
GOLDEN = 0.6180339887498949  # users' starting points: k * GOLDEN mod 1 spreads any number of users evenly


def soak_buckets(limit: int | None, shortest: int = SOAK_SHORTEST) -> list[str]:
    """256, 512, 1k, ... doubling while below the limit, then the limit itself (8k without one)."""
    top = limit or 8192
    sizes = [shortest * 2**i for i in range(16) if shortest * 2**i < top]
    return [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in sizes] + [str(top)]


def choose_buckets(asked: list[str] | None, info: ServerInfo, max_tokens: int, long_vs_short: bool,
                   soak: bool = False) -> list[str]:
    """The buckets to plan. Asked ones must fit max_model_len with the output; default ones that do not
    fit are dropped (one bucket at the limit if none fits). long-vs-short keeps the shortest bucket and
    adds one at the limit; soak mixes lengths from 256 tokens to the limit."""
    limit = info.max_model_len - max_tokens if info.max_model_len else None
    for b in asked or []:
        if limit is not None and parse_bucket(b) > limit:
            raise ValueError(f"bucket {b} ({parse_bucket(b)} tokens) plus --max-tokens {max_tokens} exceeds the "
                             f"server's max_model_len {info.max_model_len}: use buckets up to {limit} tokens")
    if soak and not asked:
        return soak_buckets(limit)
    buckets = list(asked or [b for b in DEFAULT_BUCKETS if limit is None or parse_bucket(b) <= limit])
    buckets = buckets or [str(limit)]
    buckets.sort(key=parse_bucket)
    if long_vs_short:
        return [buckets[0], str(limit) if limit else buckets[-1]]
    return buckets


def corpus_text() -> str:
    """The project's default corpus (Shakespeare) as one string."""
    from longctx.corpus import default_corpus_files  # fetched once and cached under LONGCTX_HOME

    return "\n".join(f.read_text(errors="replace") for f in default_corpus_files(log=lambda *_: None))


def make_plan(host: str, api_key: str | None, scenario: str, buckets: list[str] | None, per_bucket: int,
              max_tokens: int, seed: int = 0, corpus: str | None = None, tokenizer: str | None = None,
              chunk_tokens: int | None = None, original_context: int | None = None, ignore_eos: bool = False) -> dict:
    """Probe the server and plan the prompts; raises ServerError or ValueError with a message to show.

    With `tokenizer` (a local folder) prompts are counted locally, for servers without /tokenize."""
    sc = SCENARIOS[scenario]
    info = probe(host, api_key)
    chosen = choose_buckets(buckets, info, max_tokens, sc.long_vs_short, sc.soak)
    if tokenizer:
        tok = local_tokenizer(load_hf_tokenizer(tokenizer), sc.endpoint)
    else:
        tok = http_tokenizer(host, api_key, info.model, sc.endpoint)
    prompts = plan_prompts(tok, corpus or corpus_text(), chosen, per_bucket, sc.shared_prefix, seed, chunk_tokens,
                           original_context)
    return {"host": host, "model": info.model, "max_model_len": info.max_model_len, "scenario": scenario,
            "endpoint": sc.endpoint, "max_tokens": max_tokens, "ignore_eos": ignore_eos, "buckets": chosen,
            "chunk_tokens": chunk_tokens, "original_context": original_context,
            "long_bucket": chosen[-1] if sc.long_vs_short else None, "short_bucket": chosen[0],
            # vLLM's per-request cache_salt keeps reused prompts from hitting the prefix cache
            "cache_salt": not sc.shared_prefix, "prompts": [p.to_dict() for p in prompts]}


def load_hf_tokenizer(folder: str):
    """The transformers tokenizer in `folder`, or a ValueError naming it."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise ValueError(f"--tokenizer {folder}: not a tokenizer folder ({str(e).splitlines()[0][:160]})") from None


def user_queue(prompts: list[dict], bucket: str | None, user: int) -> list[dict]:
    """The prompts user number `user` cycles through: those of `bucket` (all when None) with the buckets
    interleaved round-robin, plan order kept within each, so that even a short run spreads every user's
    requests over every bucket; rotated to a start spread by the golden ratio, so that users started together
    ask different prompts."""
    groups: dict[str, list[dict]] = {}
    for p in prompts:
        if bucket in (None, p["bucket"]):
            groups.setdefault(p["bucket"], []).append(p)
    order = [p for row in itertools.zip_longest(*groups.values()) for p in row if p is not None]
    start = int(user * GOLDEN % 1 * len(order))
    return order[start:] + order[:start]


def payload(plan: dict, prompt: dict, salt: str | None, stream: bool = True) -> dict:
    """The greedy request body for one planned prompt (streamed with usage under load)."""
    body = {"model": plan["model"], "max_tokens": plan["max_tokens"], "temperature": 0.0, "stream": stream,
            **request_fields(plan["endpoint"], prompt["text"])}
    if plan.get("ignore_eos"):
        body["ignore_eos"] = True
    if stream:
        body["stream_options"] = {"include_usage": True}
    if salt:
        body["cache_salt"] = salt
    return body


def save_plan(plan: dict, path: Path) -> Path:
    path.write_text(json.dumps(plan))
    return path


def load_plan(path: Path) -> dict:
    return json.loads(Path(path).read_text())
