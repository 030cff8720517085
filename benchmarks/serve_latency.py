"""Serving latency of `python -m serve` on this machine: cold start, time to first token and decode
rate at several prompt lengths, and the two chunked-prefill presets side by side on one long prompt
(alone, and with a short request arriving behind it).

    python benchmarks/serve_latency.py                       # default model, both presets
    python benchmarks/serve_latency.py --lengths 1024,4096 --profiles latency

Prints the figures and writes benchmarks/results/serving-latency.{md,json}."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import URL, check_positive, corpus_token_ids, machine_header  # noqa: E402
from benchmarks.common import start_server  # noqa: E402
from loadtest.sse import stream_metrics  # noqa: E402
from longctx import cli  # noqa: E402
from serve.config import ProfileName  # noqa: E402

PROG = "python benchmarks/serve_latency.py"


@dataclass(frozen=True)
class Settings:
    """What to serve and measure; every field is a flag."""

    model: Path | None = None
    """checkpoint (default: the embedded default model)"""
    lengths: tuple[int, ...] = (1024, 4096, 8000)
    """prompt lengths in tokens, one request each; the longest is also the long prompt of the preset comparison"""
    profiles: tuple[ProfileName, ...] = ("latency", "throughput")
    """`python -m serve --profile` presets to run, one fresh server each, e.g. latency,throughput"""
    max_tokens: int = 64
    """output tokens of each by-length request (ignore_eos: exactly this many)"""
    eager: bool = False
    """`python -m serve --enforce-eager` (no torch.compile)"""
    out: Path = Path("benchmarks/results/serving-latency")
    """results path without suffix: OUT.md and OUT.json"""

    def __post_init__(self) -> None:
        check_positive(self, "lengths", "max_tokens")

def stream(prompt: list[int], max_tokens: int, name: str) -> dict:
    """One streamed completion: TTFT, decode tokens/s after the first token, end-to-end seconds."""
    body = {"model": name, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True}
    start = time.monotonic()
    with requests.post(f"{URL}/v1/completions", json=body, stream=True, timeout=900) as resp:
        resp.raise_for_status()
        r = stream_metrics([(time.monotonic(), line) for line in resp.iter_lines()], start)
    if r.error or r.ttft is None:
        raise SystemExit(f"the stream failed: {r.error or 'no output text'}")
    decode = len(r.itl) / sum(r.itl) if r.itl and sum(r.itl) > 0 else float("nan")
    return {"prompt_tokens": len(prompt), "ttft_s": r.ttft, "decode_tok_s": decode, "e2e_s": r.e2e}


def short_behind_long(long_prompt: list[int], short_prompt: list[int], name: str, delay: float) -> dict:
    """A long prompt, then after `delay` s a short one: how long does the short one wait?"""
    results: dict = {}
    thread = threading.Thread(target=lambda: results.update(long=stream(long_prompt, 16, name)))
    thread.start()
    time.sleep(delay)
    results["short"] = stream(short_prompt, 16, name)
    thread.join()
    return results


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: measure(cli.parse(Settings, argv, PROG, __doc__)))


def measure(args: Settings) -> None:
    from transformers import AutoTokenizer

    from longctx.default_model import ensure_default_model

    model = (args.model or ensure_default_model()).resolve()
    tokenizer = AutoTokenizer.from_pretrained(model)
    lengths = list(args.lengths)
    corpus = corpus_token_ids(tokenizer, 4 * sum(lengths) + 20000)
    offset = 0

    def prompt(n: int) -> list[int]:  # a fresh slice each time: prefix caching cannot help
        nonlocal offset
        offset += n + 7
        return corpus[offset - n - 7: offset - 7]

    runs = []
    with tempfile.TemporaryDirectory() as cache_home:  # empty compile cache: a true cold start
        for profile in args.profiles:
            log = Path(cache_home) / f"server-{profile}.log"
            proc, ready_s = start_server(model, profile, Path(cache_home), args.eager, log)
            print(f"[{profile}] ready after {ready_s:.0f} s", flush=True)
            try:
                stream(prompt(32), 4, model.name)  # warm-up
                by_length = [stream(prompt(n), args.max_tokens, model.name) for n in lengths]
                for r in by_length:
                    print(f"[{profile}] {r['prompt_tokens']:>6} tokens: TTFT {r['ttft_s']:.2f} s, "
                          f"decode {r['decode_tok_s']:.1f} tok/s", flush=True)
                fair = short_behind_long(prompt(max(lengths)), prompt(128), model.name, delay=2.0)
                print(f"[{profile}] short request behind a {max(lengths)}-token prefill: TTFT "
                      f"{fair['short']['ttft_s']:.2f} s (long one's TTFT {fair['long']['ttft_s']:.2f} s)", flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=120)
            runs.append({"profile": profile, "ready_s": ready_s, "eager": args.eager, "by_length": by_length,
                         "short_behind_long": fair})
    write(args.out, runs, model)


def write(out: Path, runs: list[dict], model: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"model": model.name, "runs": runs}, indent=2))
    lines = [f"# Serving latency: {model.name} through `python -m serve`", "", machine_header(), "",
             "One request at a time unless said; prompts are fresh slices of the default corpus (no prefix-cache "
             "hits); 64 output tokens with ignore_eos; TTFT measured at the client on the streamed response.", "",
             "| profile | start-up (s) | prompt tokens | TTFT (s) | decode (tok/s) |", "|---|---|---|---|---|"]
    for run in runs:
        for r in run["by_length"]:
            lines.append(f"| {run['profile']} | {run['ready_s']:.0f} | {r['prompt_tokens']} | {r['ttft_s']:.2f} | "
                         f"{r['decode_tok_s']:.1f} |")
    lines += ["", "Chunked-prefill presets on one long prompt, with a short (128-token) request sent 2 s after it:",
              "", "| profile | long prompt TTFT (s) | short request TTFT (s) |", "|---|---|---|"]
    for run in runs:
        f = run["short_behind_long"]
        lines.append(f"| {run['profile']} | {f['long']['ttft_s']:.2f} | {f['short']['ttft_s']:.2f} |")
    decode = [r["decode_tok_s"] for run in runs for r in run["by_length"]]
    lines += ["", f"Median decode rate over all rows: {statistics.median(decode):.1f} tok/s.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
