"""Is a missed passkey the model's or the server's? The load test's passkey prompts, with needles at chosen
depths (or the prompts of a load test's plan.json), answered greedily one at a time by a running server and
by transformers (the reference implementation) on the served weights, with the RoPE the server runs. Where
both miss with the same answer, the model cannot reach that far back and the check is measuring the model;
where only the server misses, the server is broken.

    python -m serve --port 8812 --enforce-eager          # the default model, default (latency) preset
    python benchmarks/passkey_reach.py --host http://127.0.0.1:8812 --bucket 8160 --depth-to 0.3 --trials 8
    # a load test's chunk-boundary needles on a server started with --rope dynamic --factor 2:
    python benchmarks/passkey_reach.py --host http://127.0.0.1:8814 --rope dynamic --factor 2 \
        --plan benchmarks/results/load-extended/plan.json --bucket 12k --kinds chunk --name passkey-reach-12k

Prints one line per prompt (the key's distance from the prompt's end, both answers) and writes
benchmarks/results/passkey-reach.{md,json}."""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import check_positive, machine_header  # noqa: E402
from loadtest.baseline import ask_once  # noqa: E402
from loadtest.plan import corpus_text  # noqa: E402
from loadtest.prompts import KEYS, build_prompt, filler_window, local_tokenizer, parse_bucket  # noqa: E402
from loadtest.server import probe  # noqa: E402
from longctx import cli, hardware  # noqa: E402
from longctx.rope import Method, check_extension  # noqa: E402
from longctx.passkey import first_number  # noqa: E402

RESULTS = Path("benchmarks/results")
PROG = "python benchmarks/passkey_reach.py"


@dataclass(frozen=True)
class Settings:
    """The server, the prompts and the reference; every field is a flag."""

    host: str
    """server root, e.g. http://127.0.0.1:8812"""
    model: Path | None = None
    """the served model's folder, for transformers; default: the folder the server reports (/v1/models root)"""
    bucket: str = "8160"
    """prompt length in tokens, e.g. 8160 or 4k"""
    depth_from: float = 0.0
    """shallowest needle depth (share of the filler before the needle)"""
    depth_to: float = 0.3
    """deepest needle depth; the trials' depths are spread evenly between the two"""
    trials: int = 8
    """prompts per endpoint"""
    endpoints: tuple[Literal["completions", "chat"], ...] = ("completions", "chat")
    """scenarios to ask: chat, completions"""
    max_tokens: int = 8
    """output tokens per answer (a 5-digit key fits)"""
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """transformers' dtype: auto (the machine's, as the server chooses it), bfloat16 or float32"""
    seed: int = 1
    """seed of the filler windows and keys"""
    plan: Path | None = None
    """a load test's plan.json: ask its prompts of --bucket and --kinds (its endpoint) instead of new ones"""
    kinds: tuple[Literal["spread", "chunk", "past-original"], ...] = ("spread", "chunk", "past-original")
    """with --plan: the needle kinds to ask"""
    rope: Method | None = None
    """the RoPE extension the server was started with (`python -m serve --rope`), for transformers"""
    factor: float | None = None
    """the server's --factor, with --rope"""
    served_with: str = "python -m serve --port 8812 --enforce-eager (bfloat16, latency preset)"
    """how the server was started, for the results file"""
    name: str = "passkey-reach"
    """results file stem"""

    def __post_init__(self) -> None:
        check_positive(self, "trials", "max_tokens")
        check_extension(self.rope, self.factor)  # as the server was started
        if not 0 <= self.depth_from <= self.depth_to <= 1:
            raise cli.UsageError("need 0 <= --depth-from <= --depth-to <= 1")


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: measure(cli.parse(Settings, argv, PROG, __doc__)))


def reference_answer(model, hf, ids: list[int], max_tokens: int) -> str:
    """transformers' greedy continuation of the rendered request `ids`."""
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=hf.eos_token_id)
    return hf.decode(out[0, len(ids):], skip_special_tokens=True)


def measure(args: Settings) -> None:
    import torch
    from transformers import AutoTokenizer

    from finetune.eval import load_model

    info = probe(args.host, None)
    folder = args.model or Path(info.root or info.model)
    dtype = hardware.choose_dtype(False).dtype if args.dtype == "auto" else args.dtype
    hf = AutoTokenizer.from_pretrained(folder)
    model = load_model(folder, args.rope, args.factor, torch.device("cpu"), getattr(torch, dtype))
    rows = []
    for plan, prompt in prompts(args, hf, info.model):
        length, tok = prompt["tokens"], local_tokenizer(hf, plan["endpoint"])
        ids = tok.render(prompt["text"])
        if len(ids) != length:
            raise SystemExit(f"{folder}'s tokenizer renders a planned {length}-token prompt as {len(ids)} tokens: "
                             f"is --model the served model?")
        served = ask_once(args.host, None, plan, prompt)
        start = time.perf_counter()
        ref = reference_answer(model, hf, ids, plan["max_tokens"])
        row = {"endpoint": plan["endpoint"], "kind": prompt.get("kind", "spread"), "depth": prompt["depth"],
               "key": prompt["key"], "key_at": prompt["key_at"], "distance": length - prompt["key_at"],
               "server": served["answer"], "server_ok": served["passkey_ok"], "server_failure": served["failure"],
               "server_s": served["e2e"], "reference": ref[:80], "reference_ok": first_number(ref) == prompt["key"],
               "reference_s": time.perf_counter() - start}
        row["agree"] = first_number(row["server"]) == first_number(ref) and row["server_ok"] == row["reference_ok"]
        rows.append(row)
        print(f"{row['endpoint']:11s} {row['kind']:13s} depth {row['depth']:.3f}  key {row['distance']:5d} tokens "
              f"before the end  server {'ok  ' if row['server_ok'] else 'MISS'} {row['server']!r:40s} "
              f"transformers {'ok  ' if row['reference_ok'] else 'MISS'} {ref!r}", flush=True)
    write(rows, args, info.model, dtype, parse_bucket(args.bucket))


def prompts(args: Settings, hf, model: str) -> list[tuple[dict, dict]]:
    """(request settings, prompt) pairs: a plan's prompts of the bucket and kinds, or new ones per endpoint
    with depths spread evenly over --depth-from..--depth-to."""
    if args.plan:
        plan = json.loads(args.plan.read_text())
        chosen = [p for p in plan["prompts"] if p["bucket"] == args.bucket and p.get("kind", "spread") in args.kinds]
        if not chosen:
            raise cli.UsageError(f"{args.plan} has no {'/'.join(args.kinds)} prompts in bucket {args.bucket}")
        return [({**plan, "model": model}, p) for p in chosen[:args.trials]]
    corpus, length, pairs = corpus_text(), parse_bucket(args.bucket), []
    for endpoint in args.endpoints:
        tok, rng = local_tokenizer(hf, endpoint), random.Random(args.seed)
        plan = {"endpoint": endpoint, "model": model, "max_tokens": args.max_tokens, "cache_salt": True}
        for i in range(args.trials):
            depth = args.depth_from + (args.depth_to - args.depth_from) * (i + 0.5) / args.trials
            filler = filler_window(tok, corpus, rng.randrange(len(corpus)), length)
            pairs.append((plan, build_prompt(tok, filler, length, depth, rng.randint(*KEYS), args.bucket).to_dict()))
    return pairs


def write(rows: list[dict], args: Settings, model: str, dtype: str, length: int) -> None:
    lines = [f"# Passkey reach: {model} at {length} tokens, the server against transformers", "",
             machine_header(), f"- server: `{args.served_with}`",
             f"- reference: transformers `generate`, greedy, {dtype}, the server's weights, RoPE "
             + (f"{args.rope} x{args.factor:g} as the server runs it" if args.rope else "as in config.json"),
             (f"- prompts: {args.plan}'s {'/'.join(args.kinds)} needles at {args.bucket}" if args.plan else
              f"- {args.trials} prompts per endpoint, depths spread over {args.depth_from}-{args.depth_to}, seed "
              f"{args.seed}, max_tokens {args.max_tokens}; wording as the load test's (`loadtest/prompts.py`)"), "",
             "| endpoint | needle | depth | key: tokens before the end | server | transformers | same verdict and number |",
             "|---|---|---:|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['endpoint']} | {r['kind']} | {r['depth']:.3f} | {r['distance']} | "
                     f"{'ok' if r['server_ok'] else 'miss'}: "
                     f"`{r['server'].strip()[:36]!r}` | {'ok' if r['reference_ok'] else 'miss'}: "
                     f"`{r['reference'].strip()[:36]!r}` | {'yes' if r['agree'] else 'NO'} |")
    for endpoint in dict.fromkeys(r["endpoint"] for r in rows):
        mine = [r for r in rows if r["endpoint"] == endpoint]
        lines += ["", f"- {endpoint}: server {sum(r['server_ok'] for r in mine)}/{len(mine)}, transformers "
                      f"{sum(r['reference_ok'] for r in mine)}/{len(mine)}, same verdict and number "
                      f"{sum(r['agree'] for r in mine)}/{len(mine)}"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"settings": asdict(args) | {"model": str(args.model)},
                                                           "dtype": dtype, "rows": rows}, indent=1, default=str))
    print(f"wrote {RESULTS / args.name}.md")


if __name__ == "__main__":
    sys.exit(main())
