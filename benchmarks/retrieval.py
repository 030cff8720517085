"""Passkey and multi-key retrieval through a running server (`python -m serve`): what a client of the served
checkpoint gets, not what transformers computes.

Prompts come from finetune/passkey.py (the single key: LongLoRA's protocol; the multi-key needle: RULER's
MK-NIAH in real text) and go to /v1/completions as token ids, so each has exactly the planned length (the
server's `usage.prompt_tokens` is checked against it) and no chat template or BOS is added. Decoding is
greedy (temperature 0) with just enough new tokens for the key and one more; grading is exact match.

    python -m serve MODEL --port 8813 --enforce-eager &
    python benchmarks/retrieval.py --url http://127.0.0.1:8813 --model MODEL --lengths 8192 --data book.txt
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import check_positive  # noqa: E402
from finetune import passkey  # noqa: E402
from longctx import cli  # noqa: E402

PROG = "python benchmarks/retrieval.py"


@dataclass(frozen=True)
class Retrieval:
    """What to ask the server; every field is a flag of this script (and of extend_default.py)."""

    lengths: tuple[int, ...] = (8192, 16384, 24576, 32768)
    """prompt lengths in tokens (the served max_model_len must hold the prompt and the answer)"""
    depth_bins: int = 5
    """depth bins between 0 and 1 for the (asked) needle"""
    trials: int = 1
    """single-key trials per length and depth bin (0 skips)"""
    multikey_trials: int = 1
    """multi-key trials per length and depth bin (0 skips)"""
    keys: int = 4
    """needles per multi-key prompt"""
    seed: int = 0
    """seed for keys, names, depths and haystack offsets"""

    def __post_init__(self) -> None:
        check_positive(self, "lengths", "depth_bins", "keys")
        check_positive(self, "trials", "multikey_trials", minimum=0)


@dataclass(frozen=True)
class Invocation:
    """Which server to ask, and where the records go; every field is a flag of this script."""

    url: str
    """the server, e.g. http://127.0.0.1:8813"""
    model: Path
    """the served checkpoint folder (for its tokenizer)"""
    data: tuple[Path, ...] = ()
    """haystack text for the multi-key needle (files or folders; default: the held-out tail of the default corpus)"""
    api_key: str | None = None
    """bearer token of the server, if it wants one"""
    out: Path = Path("retrieval.jsonl")
    """records, appended (resumes)"""


@dataclass(frozen=True)
class Request:
    """One planned trial: the prompt's token ids and how to grade the answer."""

    kind: str  # "single" or "multikey"
    index: int  # position in the plan of its kind: a record's identity when resuming
    ids: list[int]
    max_tokens: int
    trial: passkey.Trial | passkey.MultikeyTrial


def plan(encode: passkey.Encode, text: list[int], r: Retrieval) -> list[Request]:
    """Every single-key then every multi-key request, in a fixed order (the seed decides everything)."""
    single = passkey.plan_trials(r.lengths, r.depth_bins, r.trials, r.seed) if r.trials else []
    multi = passkey.plan_multikey_trials(r.lengths, r.depth_bins, r.multikey_trials, r.keys, r.seed) \
        if r.multikey_trials else []
    out = [Request("single", i, passkey.passkey_prompt(encode, t.length, t.depth, t.key).ids,
                   passkey.answer_tokens(encode, t.key), t) for i, t in enumerate(single)]
    out += [Request("multikey", i, passkey.multikey_prompt(encode, text, t).ids,
                    passkey.answer_tokens(encode, t.key), t) for i, t in enumerate(multi)]
    return out


def grade(request: Request, answer: str) -> dict:
    """The record of one answered request: the trial, the answer and its exact-match grade."""
    t = request.trial
    record = {"kind": request.kind, "index": request.index, "length": t.length, "depth_bin": t.depth_bin,
              "depth": t.depth, "key": t.key, "answer": answer}
    if request.kind == "single":
        return {**record, "correct": passkey.is_correct(answer, t.key)}
    return {**record, **passkey.multikey_record(t, answer)}


# ---------------------------------------------------------------- HTTP


def _post(url: str, body: dict, api_key: str | None, timeout: float) -> dict:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def served_model(base_url: str, api_key: str | None = None) -> str:
    """The name the server serves its (only) model under."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with urllib.request.urlopen(urllib.request.Request(f"{base_url}/v1/models", headers=headers), timeout=30) as r:
        return json.loads(r.read())["data"][0]["id"]


def ask(base_url: str, model: str, request: Request, api_key: str | None = None, timeout: float = 3600) -> dict:
    """Send one request greedily; its graded record with the server's prompt count and the wall seconds."""
    started = time.monotonic()
    body = {"model": model, "prompt": request.ids, "max_tokens": request.max_tokens, "temperature": 0}
    out = _post(f"{base_url}/v1/completions", body, api_key, timeout)
    seconds = time.monotonic() - started
    counted = out["usage"]["prompt_tokens"]
    if counted != len(request.ids):
        raise RuntimeError(f"the server counted {counted} prompt tokens for the {len(request.ids)} sent")
    return {**grade(request, out["choices"][0]["text"]), "prompt_tokens": counted,
            "answer_tokens": out["usage"]["completion_tokens"], "seconds": round(seconds, 2)}


def run(base_url: str, requests: list[Request], records: Path, api_key: str | None = None,
        log=print) -> list[dict]:
    """Ask every request not yet in `records` (a JSON-lines file, appended to as answers come, so an
    interrupted run resumes); return all records in plan order."""
    done = {(d["kind"], d["index"]): d for d in read_records(records)}
    model = served_model(base_url, api_key)
    for request in requests:
        if (request.kind, request.index) in done:
            continue
        record = ask(base_url, model, request, api_key)
        with records.open("a") as f:
            f.write(json.dumps(record) + "\n")
        done[(request.kind, request.index)] = record
        log(f"{request.kind} @ {record['length']} depth {record['depth']:.2f}: "
            f"{'✓' if record['correct'] else '✗'} {record['answer']!r} ({record['seconds']:.1f} s)")
    return [done[(r.kind, r.index)] for r in requests]


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def accuracy(records: list[dict], kind: str) -> dict[int, tuple[int, int]]:
    """(correct, trials) per prompt length for one kind of request."""
    out: dict[int, tuple[int, int]] = {}
    for r in (r for r in records if r["kind"] == kind):
        hit, n = out.get(r["length"], (0, 0))
        out[r["length"]] = (hit + bool(r["correct"]), n + 1)
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- main


def haystack_ids(tokenizer, data: tuple[Path, ...]) -> list[int]:
    """Token ids of the haystack text: the files given, else the held-out tail of the default corpus."""
    from finetune.eval import heldout_ids

    return heldout_ids(data, tokenizer, print)


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: ask_all(*cli.parse_many((Invocation, Retrieval), argv, PROG, __doc__)))


def ask_all(where: Invocation, r: Retrieval) -> None:
    """Every planned request not yet recorded in --out, then the accuracy per kind and length."""
    url, model, data, key, out = where.url, where.model, where.data, where.api_key, where.out
    from finetune.eval import encoder
    from finetune.model import load_tokenizer

    tokenizer = load_tokenizer(model)
    records = run(url, plan(encoder(tokenizer), haystack_ids(tokenizer, tuple(data)), r), out, key)
    for kind in ("single", "multikey"):
        for length, (hit, n) in accuracy(records, kind).items():
            print(f"{kind} @ {length}: {hit}/{n}")


if __name__ == "__main__":
    sys.exit(main())
