"""The embedded default model extended 8k -> 16k with LongLoRA: perplexity and passkey, before and after.

Three rows, each measured by `finetune eval` (full attention) on the held-out tail of the default corpus,
text that no `finetune train` run on that corpus trains on:

  base      SmolLM2-135M-Instruct as shipped, its RoPE unchanged past its 8k context
  base+PI   the same with linear position interpolation x2 at load time, no training
  LongLoRA  `finetune merge` of a `finetune train` run (default: runs/smollm2-16k, from the preset)

It writes benchmarks/results/default-extended.md (with .json and .png), including the run's own record
(steps, loss, held-out loss, seconds per step). Evaluations are cached per row and settings under
$LONGCTX_HOME/default-extended, so a rerun after more training re-measures only the trained row.

    finetune train --preset presets/smollm2-16k.toml     # the run; meant for a GPU, hours on a CPU
    python benchmarks/extend_default.py                  # then this
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import REPO, digest, finetune, machine_header  # noqa: E402
from finetune.home import longctx_home  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class Settings:
    run: Path = Path("runs/smollm2-16k")
    """the `finetune train` run to merge and evaluate"""
    base: Path | None = None
    """the base model folder; default: the embedded SmolLM2-135M-Instruct"""
    lengths: tuple[int, ...] = (8192, 16384)
    """perplexity window lengths (tokens)"""
    max_windows: int = 2
    """perplexity windows per length (a 16k forward pass takes minutes on 2 cores)"""
    passkey_lengths: tuple[int, ...] = (2048, 16256)
    """passkey prompt lengths: one short sanity length, one near 16k with room for the answer"""
    passkey_depths: int = 3
    """depth bins for the needle"""
    passkey_trials: int = 1
    """trials per length and depth bin"""
    seed: int = 0
    data: tuple[Path, ...] = ()
    """held-out text files for `finetune eval --data`; default: the held-out tail of the default corpus"""


@dataclass(frozen=True)
class Row:
    key: str
    label: str


ROWS = (Row("base", "base, RoPE unchanged"), Row("pi", "base + PI, no training"),
        Row("longlora", "LongLoRA run, merged"))


def model_stamp(model: Path) -> dict:
    """What identifies a model folder's contents cheaply: its config and its weight files' sizes and times."""
    weights = sorted(model.glob("*.safetensors"))
    return {"config": (model / "config.json").read_text(),
            "weights": [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]}


def merged_model(s: Settings, work: Path) -> Path:
    """The run merged into a servable folder (re-merged when the run has a newer checkpoint)."""
    checkpoints = sorted((s.run / "checkpoints").glob("step-*")) if (s.run / "checkpoints").is_dir() else []
    out = work / f"merged-{s.run.name}-{digest([str(s.run.resolve()), [c.name for c in checkpoints]])}"
    if not (out / "config.json").is_file():
        finetune("merge", str(s.run), "--out", str(out))
    return out


def evaluate_row(row: Row, s: Settings, model: Path, factor: float, work: Path) -> dict:
    """`finetune eval` of one row; a finished evaluation of the same model and settings is reused."""
    flags = ["--rope", "linear", "--factor", f"{factor:g}"] if row.key == "pi" else []
    settings = {k: v for k, v in dataclasses.asdict(s).items() if k not in ("run", "base")}
    folder = work / f"{row.key}-{digest([row.key, flags, settings, model_stamp(model)])}"
    if not (folder / "eval.json").is_file():
        print(f"\n== {row.label}: {model}", flush=True)
        finetune("eval", str(model), "--out", str(folder), "--lengths", *map(str, s.lengths),
                 "--passkey-lengths", *map(str, s.passkey_lengths), "--max-windows", str(s.max_windows),
                 "--passkey-depths", str(s.passkey_depths), "--passkey-trials", str(s.passkey_trials),
                 "--seed", str(s.seed), *flags, *(["--data", *map(str, s.data)] if s.data else []))
    else:
        print(f"{row.label}: cached in {folder}")
    result = json.loads((folder / "eval.json").read_text())
    result["folder"] = str(folder)
    return result


# ---------------------------------------------------------------- report


def run_record(run: Path) -> dict:
    """What the training run did, from its run.json and metrics.jsonl."""
    info = json.loads((run / "run.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"settings": info["settings"], "longctx": info["longctx"], "steps": len(metrics),
            "losses": [m["loss"] for m in metrics],
            "eval_losses": {m["step"]: m["eval_loss"] for m in metrics if m.get("eval_loss") is not None},
            "median_step_s": statistics.median(m["seconds"] for m in metrics) if metrics else None,
            "train_hours": sum(m["seconds"] for m in metrics) / 3600}


def ppl_at(result: dict, length: int) -> float:
    return next(p["perplexity"] for p in result["perplexity"] if p["length"] == length)


def passkey_at(result: dict, length: int) -> str:
    keys = result["passkey"]
    cells = keys["accuracy"][keys["lengths"].index(length)]
    trials = [t for t in keys["trials"] if t["length"] == length]
    return f"{sum(t['correct'] for t in trials)}/{len(trials)}" if trials else f"{sum(cells) / len(cells):.2f}"


def table(s: Settings, results: dict[str, dict]) -> list[str]:
    lines = ["| row | " + " | ".join(f"ppl @{n}" for n in s.lengths) + " | "
             + " | ".join(f"passkey @{n}" for n in s.passkey_lengths) + " | eval time (min) |",
             "|---|" + "---:|" * (len(s.lengths) + len(s.passkey_lengths) + 1)]
    for row in ROWS:
        if row.key in results:
            r = results[row.key]
            lines.append(f"| {row.label} | " + " | ".join(f"{ppl_at(r, n):.2f}" for n in s.lengths) + " | "
                         + " | ".join(passkey_at(r, n) for n in s.passkey_lengths)
                         + f" | {r['seconds'] / 60:.1f} |")
    return lines


def ratios(s: Settings, results: dict[str, dict]) -> list[str]:
    """What training changed, as perplexity ratios: at the target against PI alone, at the original
    context against the base (does the extension cost short-context quality?)."""
    if not {"longlora", "pi", "base"} <= set(results):
        return []
    short, long = min(s.lengths), max(s.lengths)
    r_long = ppl_at(results["longlora"], long) / ppl_at(results["pi"], long)
    r_short = ppl_at(results["longlora"], short) / ppl_at(results["base"], short)
    return [f"- At {long} tokens, LongLoRA's perplexity is {r_long:.3f}× that of PI without training.",
            f"- At {short} tokens, it is {r_short:.3f}× that of the unchanged base.", ""]


def answers(s: Settings, results: dict[str, dict]) -> list[str]:
    """Every passkey trial near the target: what each row answered (small N, so show them all)."""
    n = max(s.passkey_lengths)
    lines = [f"| row | depth | key | answer at {n} tokens |", "|---|---:|---:|---|"]
    for row in ROWS:
        for t in (results[row.key]["passkey"]["trials"] if row.key in results else []):
            if t["length"] == n:
                answer = " ".join(t["answer"].split())[:60].replace("|", "/")
                lines.append(f"| {row.key} | {t['depth']:.2f} | {t['key']} | {'✓' if t['correct'] else '✗'} "
                             f"`{answer}` |")
    return lines


def plot(s: Settings, results: dict[str, dict], record: dict, title: str, path: Path) -> None:
    """Left: perplexity against length per row. Right: the run's training loss and held-out loss by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for row in ROWS:
        if row.key in results:
            ax.plot(s.lengths, [ppl_at(results[row.key], n) for n in s.lengths], marker="o", label=row.label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(s.lengths, [str(n) for n in s.lengths])
    ax.minorticks_off()
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("perplexity on held-out text (log)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    steps = range(1, len(record["losses"]) + 1)
    bx.plot(steps, record["losses"], marker=".", label="training loss (one block per step)")
    held = record["eval_losses"]
    bx.plot([int(k) for k in held], list(held.values()), "s", label="held-out loss")
    bx.set_xlabel("optimizer step")
    bx.set_ylabel("loss")
    bx.set_title(f"the run: {s.run.name}", fontsize=10)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def shown(path: Path) -> str:
    """`path` as a user would type it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def report(s: Settings, results: dict[str, dict], record: dict, out: Path, argv: list[str]) -> None:
    original, factor = record["longctx"]["original_context"], record["longctx"]["rope_factor"]
    title = f"{s.base.name}: {original} → {round(original * factor)} tokens"
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(s, results, record, title, out.with_suffix(".png"))
    out.with_suffix(".json").write_text(json.dumps({"settings": dataclasses.asdict(s), "run": record,
                                                    "results": results}, indent=2, default=str) + "\n")
    text = [f"# {title}: before and after LongLoRA", "", machine_header(argv), ""]
    st = record["settings"]
    evals = ", ".join(f"step {k}: {v:.3f}" for k, v in record["eval_losses"].items()) or "none"
    text += [f"**The run** (`{shown(s.run)}`): {record['steps']} steps of `finetune train` ({st['mode']}, "
             f"{st['attention']} attention, {st['rope']} RoPE to {st['target_length']} tokens, batch "
             f"{st['batch_size']} × accumulation {st['grad_accum']}, lr {st['lr']}, warm-up "
             f"{st['warmup_steps']}), median {record['median_step_s']:.0f} s per step, "
             f"{record['train_hours']:.2f} h in all. Training loss by step (each step a different block): "
             + ", ".join(f"{x:.2f}" for x in record["losses"]) + f". Held-out loss at checkpoints: {evals}.", ""]
    data = ", ".join(str(d) for d in s.data) if s.data else "the held-out tail of the default corpus"
    text += [f"**The evaluation**: `finetune eval`, full attention, {data}; "
             f"perplexity over {s.max_windows} window(s) per length; passkey retrieval with greedy decoding, "
             f"{s.passkey_depths} depth bin(s) × {s.passkey_trials} trial(s) per length (so each passkey cell is "
             f"a handful of trials: a coarse signal). The base row runs past its {original}-token context "
             f"with its RoPE unchanged; base+PI interpolates ×{factor:g} at load time without training.", "",
             *table(s, results), "", *ratios(s, results), f"![perplexity against length, and the run's loss]({out.with_suffix('.png').name})", "",
             "Passkey trials near the target:", "", *answers(s, results), ""]
    out.write_text("\n".join(text))
    print(f"wrote {out}, {out.with_suffix('.png')} and {out.with_suffix('.json')}")


# ---------------------------------------------------------------- main


def parse(argv: list[str] | None) -> tuple[Settings, Path, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(Settings):
        many = isinstance(f.default, tuple)
        kind = Path if f.name in ("run", "base", "data") else int
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, nargs="+" if many else None, default=f.default,
                       help=f"(default: {f.default if f.default not in (None, ()) else 'see the module doc'})")
    p.add_argument("--rows", nargs="+", choices=[r.key for r in ROWS], default=[r.key for r in ROWS],
                   help="rows to measure (default: all)")
    p.add_argument("--out", type=Path, default=RESULTS / "default-extended.md", help="the results file")
    a = vars(p.parse_args(argv))
    out, rows = a.pop("out"), a.pop("rows")
    return Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in a.items()}), out, rows


def main(argv: list[str] | None = None) -> None:
    s, out, rows = parse(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = longctx_home() / "default-extended"
    work.mkdir(parents=True, exist_ok=True)
    if s.base is None:
        from finetune.default_model import ensure_default_model

        s = dataclasses.replace(s, base=ensure_default_model())
    # `finetune` runs from the repository root: hand it absolute paths
    s = dataclasses.replace(s, run=s.run.resolve(), base=s.base.resolve(), data=tuple(d.resolve() for d in s.data))
    if not (s.run / "run.json").is_file():
        raise SystemExit(f"{s.run} is not a `finetune train` run; train first: "
                         f"finetune train --preset presets/smollm2-16k.toml")
    started = time.time()
    record = run_record(s.run)
    results = {}
    for row in (r for r in ROWS if r.key in rows):
        model = merged_model(s, work) if row.key == "longlora" else s.base
        results[row.key] = evaluate_row(row, s, model, record["longctx"]["rope_factor"], work)
    report(s, results, record, out, sys.argv if argv is None else ["benchmarks/extend_default.py", *argv])
    print(f"{(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
