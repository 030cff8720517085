"""The embedded default model extended ×4 (8k -> 32k): training-free RoPE scaling against trained and merged runs.

Rows (each a base or merged checkpoint):

  unchanged   SmolLM2-135M-Instruct as shipped, its RoPE unchanged past its 8k context
  dynamic     dynamic NTK ×4 (--factor) at load/serve time, no training
  yarn        YaRN ×4 at load/serve time, no training
  linear      position interpolation ×4, no training (only when asked for: --rows linear)
  RUN names   `finetune merge` of each `finetune train` run given with --runs (PI+LongLoRA, YaRN+LongLoRA, PoSE...)

Each row gets perplexity by `finetune eval` (full attention, ppl only) at --ppl-lengths on held-out text of
another genre than the training data (--data, e.g. Jane Austen's novels), and retrieval through the served
checkpoint (`python -m serve`, greedy, benchmarks/retrieval.py): the single pass key (LongLoRA's protocol)
and the multi-key needle (RULER's MK-NIAH, the --data text as haystack) at --retrieval-lengths.

Every cell (row × length × measure) is cached under $LONGCTX_HOME/default-extended by the model's contents
and the settings, and retrieval records are appended as they come, so the table fills in over several
invocations (`--rows`, `--measure`) and an interrupted one resumes where it stopped. Each invocation
rewrites benchmarks/results/default-extended.md (+ .json, .png) from every cell cached so far, and keeps
the cells of the results file already there that this machine's cache lacks (a cache lives on one machine,
the results file in the repository): rows of runs measured elsewhere stay, and a cell measured again here
replaces the carried one, its earlier value listed beside it.

    finetune train --target-length 32768 --rope yarn --out runs/yarn-32k ...      # the trained rows
    python benchmarks/extend_default.py --data austen/ --runs runs/yarn-32k --rows unchanged yarn yarn-32k
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import retrieval  # noqa: E402
from benchmarks.common import PORT, REPO, digest, finetune, machine_header, machine_summary  # noqa: E402
from benchmarks.common import start_server  # noqa: E402
from benchmarks.common import check_positive  # noqa: E402
from longctx import cli  # noqa: E402
from longctx.home import atomic_dir, longctx_home  # noqa: E402
from longctx.rope import original_context  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PROG = "python benchmarks/extend_default.py"


@dataclass(frozen=True)
class Settings:
    """What the cells measure (recorded in the results); every field is a flag."""

    base: Path | None = None
    """the base model folder; default: the embedded SmolLM2-135M-Instruct"""
    runs: tuple[Path, ...] = ()
    """`finetune train` run folders: each is merged and is a row named after its folder"""
    factor: int = 4
    """extension factor of the training-free rows (served length = original context × factor)"""
    data: tuple[Path, ...] = ()
    """held-out text (files or folders) for perplexity and the multi-key haystack; default: the held-out
    tail of the default corpus (the training genre: give another one)"""
    ppl_lengths: tuple[int, ...] = (2048, 8192, 16384, 32768)
    """perplexity window lengths (tokens)"""
    max_windows: int = 2
    """perplexity windows per length"""
    retrieval_lengths: tuple[int, ...] = (8192, 16384, 24576, 32760)
    """prompt lengths for retrieval; prompt + answer must fit the served length (32760 + 7 <= 32768)"""
    depth_bins: int = 5
    """needle depth bins per length"""
    trials: int = 1
    """single-key trials per length and depth bin (the same keys and depths at every length)"""
    multikey_trials: int = 1
    """multi-key trials per length and depth bin"""
    keys: int = 4
    """needles per multi-key prompt"""
    seed: int = 0
    """seed of keys, names, depths and haystack offsets"""
    port: int = PORT
    """port of the servers this script starts (one at a time, on 127.0.0.1)"""
    kv_cache_gib: int = 2
    """KV cache of each server (a 32k sequence of SmolLM2 takes 0.7 GiB in bf16)"""

    def __post_init__(self) -> None:
        check_positive(self, "factor", "ppl_lengths", "max_windows", "retrieval_lengths", "depth_bins", "keys",
                       "port", "kv_cache_gib")
        check_positive(self, "trials", "multikey_trials", minimum=0)


@dataclass(frozen=True)
class Invocation:
    """Which rows this invocation measures, and where the report goes; every field is a flag."""

    rows: tuple[str, ...] | None = None
    """rows to measure: unchanged, dynamic, yarn, linear and the --runs folders' names (default: all but linear)"""
    measure: tuple[Literal["ppl", "retrieval"], ...] = ("ppl", "retrieval")
    """what to measure in the chosen rows; `--measure` with no value measures nothing and only rewrites the
    report"""
    out: Path = RESULTS / "default-extended.md"
    """the results file, with its .json and .png beside it (default: benchmarks/results/default-extended.md)"""


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    model: Path
    """the checkpoint `finetune eval` loads"""
    eval_flags: tuple[str, ...] = ()
    served: Path | None = None
    """the checkpoint the server loads, if not `model`"""
    serve_flags: tuple[str, ...] = ()
    run: Path | None = None


FREE = ("unchanged", "dynamic", "yarn", "linear")  # linear (PI without training) only when asked for


def training_free_row(key: str, s: Settings, work: Path) -> Row:
    """A row of the base with RoPE scaling applied at load time (eval) and at serve time (vLLM)."""
    if key == "unchanged":
        length = original_context(json.loads((s.base / "config.json").read_text())) * s.factor
        return Row(key, "base, RoPE unchanged", s.base, served=unchanged_variant(s.base, work, length))
    flags = ("--rope", key, "--factor", str(s.factor))
    return Row(key, f"base + {key} ×{s.factor}, no training", s.base, flags, serve_flags=flags)


def unchanged_variant(base: Path, work: Path, length: int) -> Path:
    """The base with room for `length` positions in vLLM and its RoPE as it is: the weights linked, config.json
    with max_position_embeddings raised (default RoPE ignores it; vLLM sizes its cos/sin cache and max length
    by it) and without the longctx block (whose trained length would cap the server)."""
    config = json.loads((base / "config.json").read_text())
    out = work / f"unchanged-{length}-{digest(model_stamp(base))}"
    if (out / "config.json").is_file():
        return out
    with atomic_dir(out) as tmp:
        for f in base.iterdir():
            if f.name != "config.json":
                (tmp / f.name).symlink_to(f.resolve())
        config = {k: v for k, v in config.items() if k != "longctx"}
        (tmp / "config.json").write_text(json.dumps({**config, "max_position_embeddings": length}, indent=2) + "\n")
    return out


def trained_row(run: Path, work: Path) -> Row:
    info = json.loads((run / "run.json").read_text())
    st = info["settings"]
    pose = f", PoSE window {st['pose_window']}" if st.get("pose_window") else ""
    drills = f", drills {st['drills']:g}" if st.get("drills") else ""
    if drills and st.get("drill_window"):
        drills += f" in {st['drill_window']}-token windows"
    decay = f", learning rate decayed over the last {st['decay_steps']} steps" if st.get("decay_steps") else ""
    label = f"{st['rope']} + {st['mode']} ({st['attention']} attention{pose}{drills}{decay}), trained, merged"
    return Row(run.name, label, merged_model(run, work), run=run)


def merged_model(run: Path, work: Path) -> Path:
    """The run merged into a servable folder (re-merged when the run has a newer checkpoint)."""
    checkpoints = sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
    out = work / f"merged-{run.name}-{digest([str(run.resolve()), [c.name for c in checkpoints]])}"
    if not (out / "config.json").is_file():
        finetune("merge", str(run), "--out", str(out))
    return out


def model_stamp(model: Path) -> dict:
    """What identifies a model folder's contents cheaply: its config and its weight files' sizes and times."""
    weights = sorted(model.glob("*.safetensors"))
    return {"config": (model / "config.json").read_text(),
            "weights": [(w.name, w.resolve().stat().st_size, w.resolve().stat().st_mtime_ns) for w in weights]}


# ---------------------------------------------------------------- cells


def ppl_cell(row: Row, s: Settings, length: int, work: Path) -> Path:
    """Where one row's perplexity at one length is cached."""
    key = [row.eval_flags, model_stamp(row.model), length, s.max_windows, [str(d) for d in s.data]]
    return work / row.key / f"ppl-{length}-{digest(key)}" / "eval.json"


def measure_ppl(row: Row, s: Settings, length: int, work: Path) -> dict:
    """`finetune eval` at one length (perplexity only), or its cached result."""
    path = ppl_cell(row, s, length, work)
    if not path.is_file():
        print(f"\n== {row.key}: perplexity @ {length}", flush=True)
        finetune("eval", str(row.model), "--out", str(path.parent), "--lengths", str(length),
                 "--max-windows", str(s.max_windows), "--passkey-trials", "0", *row.eval_flags,
                 *(["--data", *map(str, s.data)] if s.data else []))
    return json.loads(path.read_text())


def retrieval_settings(s: Settings, length: int) -> retrieval.Retrieval:
    return retrieval.Retrieval(lengths=(length,), depth_bins=s.depth_bins, trials=s.trials,
                               multikey_trials=s.multikey_trials, keys=s.keys, seed=s.seed)


def retrieval_cell(row: Row, s: Settings, length: int, work: Path) -> Path:
    """Where one row's retrieval records at one length are appended."""
    served = row.served or row.model
    key = [row.serve_flags, model_stamp(served), dataclasses.asdict(retrieval_settings(s, length)),
           [str(d) for d in s.data]]
    return work / row.key / f"retrieval-{length}-{digest(key)}.jsonl"


def measure_retrieval(row: Row, s: Settings, lengths: tuple[int, ...], work: Path) -> None:
    """Serve the row's checkpoint once and ask every retrieval request not yet recorded."""
    from finetune.eval import encoder
    from finetune.model import load_tokenizer

    served = row.served or row.model
    tokenizer = load_tokenizer(served)
    encode, text = encoder(tokenizer), retrieval.haystack_ids(tokenizer, s.data)
    todo = []
    for length in lengths:
        requests = retrieval.plan(encode, text, retrieval_settings(s, length))
        done = {(r["kind"], r["index"]) for r in retrieval.read_records(retrieval_cell(row, s, length, work))}
        if any((q.kind, q.index) not in done for q in requests):
            todo.append((length, requests))
    if not todo:
        return
    print(f"\n== {row.key}: retrieval through the server @ {[n for n, _ in todo]}", flush=True)
    log = work / row.key / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    flags = (*row.serve_flags, "--kv-cache-gib", str(s.kv_cache_gib))
    # One request at a time: the throughput preset prefills 8192 tokens a step; the latency preset's cap
    # of 256 per step protects concurrent short requests, of which there are none here.
    proc, ready = start_server(served, "throughput", longctx_home(), True, log, flags, s.port)
    print(f"server ready in {ready:.0f} s", flush=True)
    try:
        for length, requests in todo:
            retrieval.run(f"http://127.0.0.1:{s.port}", requests, retrieval_cell(row, s, length, work))
    finally:
        proc.terminate()  # `python -m serve` forwards it to vLLM
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()


def collect(row: Row, s: Settings, work: Path) -> dict:
    """Every cached cell of a row: perplexity per length, retrieval records per length."""
    ppl = {n: json.loads(p.read_text()) for n in s.ppl_lengths if (p := ppl_cell(row, s, n, work)).is_file()}
    records = {n: retrieval.read_records(retrieval_cell(row, s, n, work)) for n in s.retrieval_lengths}
    out = {"label": row.label, "model": str(row.model), "eval_flags": list(row.eval_flags),
           "served": str(row.served or row.model), "serve_flags": list(row.serve_flags),
           "perplexity": {n: r["perplexity"][0] for n, r in ppl.items()},
           "eval_seconds": {n: r["seconds"] for n, r in ppl.items()},
           "eval_dtype": {n: r.get("dtype") for n, r in ppl.items()},
           "retrieval": {n: r for n, r in records.items() if r}}
    if row.run is not None:
        out["run"] = run_record(row.run)
    return out


def run_record(run: Path) -> dict:
    """What the training run did, from its run.json and metrics.jsonl: steps, tokens, time, dtype."""
    info = json.loads((run / "run.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"settings": info["settings"], "longctx": info["longctx"], "dtype": info.get("precision"),
            "world_size": info.get("world_size", 1), "steps": len(metrics),
            # tokens_per_s is the step's tokens (all processes) over its seconds
            "tokens": round(sum(m["tokens_per_s"] * m["seconds"] for m in metrics)),
            "losses": [m["loss"] for m in metrics],
            "eval_losses": {m["step"]: m["eval_loss"] for m in metrics if m.get("eval_loss") is not None},
            "median_step_s": statistics.median(m["seconds"] for m in metrics) if metrics else None,
            "train_hours": sum(m["seconds"] for m in metrics) / 3600}


# ---------------------------------------------------------------- report


def hits(result: dict, kind: str, length: int) -> tuple[int, int] | None:
    records = [r for r in result["retrieval"].get(length, []) if r["kind"] == kind]
    return (sum(bool(r["correct"]) for r in records), len(records)) if records else None


def cell_ppl(result: dict, n: int) -> str:
    p = result["perplexity"].get(n)
    return f"{p['perplexity']:.2f}" if p else "—"


def cell_hits(result: dict, kind: str, n: int) -> str:
    h = hits(result, kind, n)
    return f"{h[0]}/{h[1]}" if h else "—"


def training(result: dict) -> str:
    r = result.get("run")
    if not r:
        return "none"
    lr = r.get("settings", {}).get("lr")
    return (f"{r['steps']} steps, {r['tokens'] / 1e6:.2f} M tokens, {r['train_hours']:.2f} h, "
            f"{f'lr {lr:g}, ' if lr else ''}{r['dtype']}")


def table(s: Settings, results: dict[str, dict]) -> list[str]:
    head = ([f"ppl @{n}" for n in s.ppl_lengths] + [f"key @{n}" for n in s.retrieval_lengths]
            + [f"multi-key @{n}" for n in s.retrieval_lengths])
    lines = ["| row | " + " | ".join(head) + " | training |", "|---|" + "---:|" * len(head) + "---|"]
    for key, r in results.items():
        cells = ([cell_ppl(r, n) for n in s.ppl_lengths] + [cell_hits(r, "single", n) for n in s.retrieval_lengths]
                 + [cell_hits(r, "multikey", n) for n in s.retrieval_lengths])
        lines.append(f"| {r['label']} (`{key}`) | " + " | ".join(cells) + f" | {training(r)} |")
    return lines


def timings(s: Settings, results: dict[str, dict]) -> list[str]:
    """What each cell cost on this machine: `finetune eval` wall time per length (model load included)
    and the median seconds per retrieval request (prefill dominated), for planning the rest."""
    lines = ["| row | " + " | ".join([f"eval s @{n}" for n in s.ppl_lengths]
                                     + [f"s/request @{n}" for n in s.retrieval_lengths]) + " |",
             "|---|" + "---:|" * (len(s.ppl_lengths) + len(s.retrieval_lengths))]
    for key, r in results.items():
        evals = [f"{r['eval_seconds'][n]:.0f}" if n in r["eval_seconds"] else "—" for n in s.ppl_lengths]
        reqs = [f"{statistics.median(x['seconds'] for x in r['retrieval'][n]):.1f}" if n in r["retrieval"] else "—"
                for n in s.retrieval_lengths]
        lines.append(f"| `{key}` | " + " | ".join(evals + reqs) + " |")
    return lines


def targets(s: Settings, results: dict[str, dict]) -> list[str]:
    """The write-up's targets, where the cells they need are measured."""
    free = {k: r for k, r in results.items() if "run" not in r}
    trained = {k: r for k, r in results.items() if "run" in r}
    top, short = max(s.ppl_lengths), min(s.ppl_lengths)

    def best(rows: dict[str, dict], n: int) -> tuple[str, float] | None:
        got = [(k, r["perplexity"][n]["perplexity"]) for k, r in rows.items() if n in r["perplexity"]]
        return min(got, key=lambda x: x[1]) if got else None

    lines = []
    bf, bt = best(free, top), best(trained, top)
    if bf and bt:
        lines.append(f"- ppl @{top}: best trained `{bt[0]}` {bt[1]:.2f} is {bt[1] / bf[1]:.3f}× the best "
                     f"training-free `{bf[0]}` {bf[1]:.2f} (target ≤ 0.9×).")
    base = results.get("unchanged", {}).get("perplexity", {}).get(short)
    for k, r in trained.items():
        if base and short in r["perplexity"]:
            lines.append(f"- ppl @{short}: `{k}` is {r['perplexity'][short]['perplexity'] / base['perplexity']:.3f}× "
                         f"the unchanged base (target within 3%).")
    return lines


def answers(s: Settings, results: dict[str, dict]) -> list[str]:
    """Every retrieval answer at the longest measured length (small N: show them all)."""
    lines = ["| row | kind | length | depth | key | answer |", "|---|---|---:|---:|---:|---|"]
    for key, r in results.items():
        if not r["retrieval"]:
            continue
        n = max(r["retrieval"])
        for t in r["retrieval"][n]:
            answer = " ".join(t["answer"].split())[:50].replace("|", "/")
            mark = "✓" if t["correct"] else ("distractor" if t.get("distractor") else "✗")
            lines.append(f"| `{key}` | {t['kind']} | {n} | {t['depth']:.2f} | {t['key']} | {mark} `{answer}` |")
    return lines


def plot(s: Settings, results: dict[str, dict], title: str, path: Path) -> None:
    """Left: perplexity against length per row. Right: retrieval accuracy against length (single solid,
    multi-key dashed, same colour per row)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 4.5))
    for i, (key, r) in enumerate(results.items()):
        colour = f"C{i}"
        ns = [n for n in s.ppl_lengths if n in r["perplexity"]]
        if ns:
            ax.plot(ns, [r["perplexity"][n]["perplexity"] for n in ns], marker="o", color=colour, label=key)
        for kind, style, mark in (("single", "-", "o"), ("multikey", "--", "s")):
            got = [(n, h) for n in s.retrieval_lengths if (h := hits(r, kind, n))]
            if got:
                bx.plot([n for n, _ in got], [a / b for _, (a, b) in got], style, marker=mark, color=colour,
                        fillstyle="full" if kind == "single" else "none",
                        label=f"{key} ({'single key' if kind == 'single' else f'{s.keys} keys'})")
    for axis, lengths in ((ax, s.ppl_lengths), (bx, s.retrieval_lengths)):
        axis.set_xscale("log", base=2)
        axis.set_xticks(lengths, [str(n) for n in lengths])
        axis.minorticks_off()
        axis.set_xlabel("context length (tokens)")
    if ax.get_lines():
        ax.legend(fontsize=7)
    if bx.get_lines():  # beside the axes: accuracies sit at 0 and 1, where a legend inside would cover them
        bx.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_ylabel("perplexity on held-out text (log)")
    ax.set_title(title, fontsize=10)
    bx.set_ylim(-0.05, 1.05)
    bx.set_ylabel("retrieval accuracy (served, greedy)")
    bx.set_title("pass key retrieval through the server", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def shown(path: Path) -> str:
    """`path` as a user would type it: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def caveats(results: dict[str, dict]) -> list[str]:
    """How the dynamic row is served and measured (not transformers' own per-length dynamic NTK)."""
    if "dynamic" not in results:
        return []
    return ["- `dynamic`: the server builds one NTK base for the whole served length (longctx/rope.py, "
            "`serving_rope`) and uses it at every position; `finetune eval` measures that same RoPE "
            "(`as_served`), so below the original context this row is not the base model (transformers' own "
            "`dynamic` would rescale per sequence length and equal the base there)."]


def invocations(entries: list[dict]) -> list[str]:
    """The invocations that measured the cached cells (the header's command may only have reported)."""
    return [f"- {e['start']} – {e['end']} UTC{'' if e['finished'] else ' (stopped before the end)'}, load "
            f"{' / '.join(map(str, e['load']))} at the end{machine(e)}: `{e['command']}`" for e in entries]


def machine(entry: dict) -> str:
    return f", on {entry['machine']}" if entry.get("machine") else ""


# ---------------------------------------------------------------- cells carried from the results file

# The settings that decide what a cell measured: cells of a results file written under others are not kept.
CELL_SETTINGS = ("base", "factor", "data", "max_windows", "depth_bins", "trials", "multikey_trials", "keys", "seed")


@dataclass(frozen=True)
class Carried:
    """What a results file already holds: its rows and the lines of the invocations that measured them."""

    results: dict[str, dict]
    invocations: list[str]


def carried(s: Settings, out: Path) -> Carried:
    """The results file at `out` (its .json), if it was written under the same cell settings; lengths become
    ints again. A file written before the JSON kept its invocations gives them from its .md, with the machine
    its header names."""
    path = out.with_suffix(".json")
    if not path.is_file():
        return Carried({}, [])
    old = json.loads(path.read_text())
    now = json.loads(json.dumps(dataclasses.asdict(s), default=str))
    if differ := [f for f in CELL_SETTINGS if old["settings"].get(f) != now[f]]:
        print(f"not keeping the cells of {path}: written with other {', '.join(differ)}", flush=True)
        return Carried({}, [])
    results = {key: {**r, **{f: {int(n): v for n, v in r[f].items()}
                             for f in ("perplexity", "eval_seconds", "eval_dtype", "retrieval")}}
               for key, r in old["results"].items()}
    return Carried(results, old.get("invocations") or legacy_invocations(out))


def legacy_invocations(out: Path) -> list[str]:
    if not out.is_file():
        return []
    text = out.read_text()
    header = dict(line[2:].split(": ", 1) for line in text.split("\n\n")[1].splitlines() if ": " in line)
    flags, auto = header["CPU flags that choose the dtype"].split("; this machine's auto dtype: ")
    cpu = ", ".join(header["machine"].split(", ")[:2])  # as machine_summary() names it
    where = f", on {cpu}, {flags}, auto dtype {auto.split()[0]}"
    section = text.split("Invocations that measured")[1].split("\n\n")[1].splitlines()
    return [line.replace(" at the end: `", f" at the end{where}: `", 1) for line in section if line.startswith("- ")]


def merge(here: dict[str, dict], before: Carried) -> tuple[dict[str, dict], list[str]]:
    """This machine's cells over the carried ones (of the same model), and a line for each perplexity cell
    measured on both."""
    merged, again = {}, []
    for key in [*here, *(k for k in before.results if k not in here)]:
        new, old = here.get(key), before.results.get(key)
        if new is None or old is None:
            merged[key] = new or old
            continue
        if identity(new) != identity(old):
            again.append(f"- `{key}`: the results file's cells were of another checkpoint (other flags, or a run "
                         f"with other settings or losses); only the cells measured here are kept")
            merged[key] = new
            continue
        for n in sorted(set(new["perplexity"]) & set(old["perplexity"])):
            dtypes = (old["eval_dtype"].get(n), new["eval_dtype"][n])
            again.append(f"- `{key}` ppl @{n}: {old['perplexity'][n]['perplexity']:.2f} in the results file before, "
                         f"{new['perplexity'][n]['perplexity']:.2f} measured here ("
                         + (f"{dtypes[1]} both times)" if dtypes[0] == dtypes[1]
                            else f"{dtypes[0]} before, {dtypes[1]} here)"))
        merged[key] = {**old, **new, **{f: {**old[f], **new[f]}
                                        for f in ("perplexity", "eval_seconds", "eval_dtype", "retrieval")}}
    return merged, again


def identity(row: dict) -> list:
    """What makes two rows of one name the same model: the flags they were loaded with and, for a trained row,
    the run's settings and its loss at every step (a run trained again the same way has them all equal).
    Settings that do not change the math (where the run was written, how often it saved, whether it was
    resumed) are left out, and a setting added to `finetune train` since is taken at its default."""
    from finetune.checkpoint import RESUMABLE_CHANGES, settings
    from finetune.config import TrainConfig

    run = row.get("run") or {}
    ran = run.get("settings")
    if ran is not None:
        bookkeeping = set(RESUMABLE_CHANGES) - {"max_steps", "decay_steps"}
        ran = {k: v for k, v in {**settings(TrainConfig()), **ran}.items() if k not in bookkeeping}
    return [row.get("eval_flags"), row.get("serve_flags"), ran, run.get("losses")]


def report(s: Settings, results: dict[str, dict], out: Path, argv: list[str], log: list[dict] = (),
           before: Carried = Carried({}, [])) -> None:
    original = original_context(json.loads((s.base / "config.json").read_text()))
    title = f"{s.base.name}: {original} → {original * s.factor} tokens"
    results, again = merge(results, before)
    measured = [*before.invocations, *(line for line in invocations(list(log)) if line not in before.invocations)]
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(s, results, title, out.with_suffix(".png"))
    out.with_suffix(".json").write_text(json.dumps({"settings": dataclasses.asdict(s), "results": results,
                                                    "invocations": measured}, indent=2, default=str) + "\n")
    data = ", ".join(shown(d) for d in s.data) if s.data else "the held-out tail of the default corpus"
    text = [f"# {title}: training-free RoPE scaling against trained runs", "", machine_header(argv), "",
            f"**Perplexity**: `finetune eval`, full attention, on {data}, {s.max_windows} window(s) per length. "
            f"**Retrieval**: through `python -m serve` (vLLM, eager), prompts sent as token ids (length checked "
            f"against the server's count), greedy; single key = LongLoRA's pass key in its repeated filler, "
            f"{s.depth_bins} depth bins × {s.trials} trial(s) per length; multi-key = {s.keys} keys of one form "
            f"(\"The pass key for <name> is <5 digits>\") at spread depths in the held-out text, the question "
            f"naming one, {s.depth_bins} × {s.multikey_trials} per length. Cells: correct/trials; — = not "
            f"measured yet.", "", *table(s, results), "", *targets(s, results), *caveats(results), "",
            f"![perplexity and retrieval against length]({out.with_suffix('.png').name})", "",
            "What each measured cell cost (wall seconds on this machine, shared with other work; single-key "
            "prompts of one length share their filler up to the needle, so vLLM's prefix cache shortens the "
            "deeper ones, and a server start adds minutes per row):", "",
            *timings(s, results), "", "Invocations that measured (cells are cached: each was measured once; "
            "cells measured on another machine are kept from the results file):", "", *measured, "",
            *(["Measured again on this machine, against the value the results file held:", "", *again, ""]
              if again else []),
            "Retrieval answers at each row's longest measured length:", "",
            *answers(s, results), ""]
    out.write_text("\n".join(text))
    print(f"wrote {out}, {out.with_suffix('.png')} and {out.with_suffix('.json')}")


# ---------------------------------------------------------------- main


def parse(argv: list[str] | None) -> tuple[Settings, Invocation]:
    return cli.parse_many((Settings, Invocation), argv, PROG, __doc__, may_be_empty=("measure",))


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: extend(*parse(argv), argv))


def extend(s: Settings, invocation: Invocation, argv: list[str] | None) -> None:
    """Measure the cells asked for that are not cached yet, then rewrite the report from every cached cell."""
    out, wanted, measures = invocation.out, invocation.rows, invocation.measure
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = longctx_home() / "default-extended"
    work.mkdir(parents=True, exist_ok=True)
    if s.base is None:
        from longctx.default_model import ensure_default_model

        s = dataclasses.replace(s, base=ensure_default_model())
    # `finetune` runs from the repository root: hand it absolute paths
    s = dataclasses.replace(s, base=s.base.resolve(), runs=tuple(r.resolve() for r in s.runs),
                            data=tuple(d.resolve() for d in s.data))
    for run in s.runs:
        if not (run / "run.json").is_file():
            raise cli.UsageError(f"--runs {run}: not a `finetune train` run (no run.json); give run folders")
    names = [*FREE, *(r.name for r in s.runs)]
    if bad := [r for r in (wanted or []) if r not in names]:
        raise cli.UsageError(f"--rows: unknown row {bad[0]!r}; choose from {', '.join(names)}")
    started, command = time.time(), sys.argv if argv is None else ["benchmarks/extend_default.py", *argv]
    rows = [training_free_row(k, s, work) for k in FREE] + [trained_row(r, work) for r in s.runs]
    finished = False
    try:
        for row in rows:
            if row.key in (wanted or [k for k in names if k != "linear"]):
                for n in s.ppl_lengths if "ppl" in measures else ():
                    measure_ppl(row, s, n, work)
                if "retrieval" in measures:
                    measure_retrieval(row, s, s.retrieval_lengths, work)
        finished = True
    finally:
        if measures:
            log_invocation(work, command, started, finished)
    before = carried(s, out)
    results = {row.key: r for row in rows if (r := collect(row, s, work))["perplexity"] or r["retrieval"]}
    report(s, results, out, command, read_invocations(work), before)
    print(f"{(time.time() - started) / 60:.1f} min")


def log_invocation(work: Path, command: list[str], started: float, finished: bool) -> None:
    """Append a measuring invocation (command, UTC start and end, load) to the log the report lists."""
    utc = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))  # noqa: E731
    entry = {"command": shlex.join(["python", *command]), "start": utc(started), "end": utc(time.time()),
             "finished": finished, "load": [round(x, 1) for x in os.getloadavg()], "machine": machine_summary()}
    with (work / "invocations.jsonl").open("a") as f:
        f.write(json.dumps(entry) + "\n")


def read_invocations(work: Path) -> list[dict]:
    return retrieval.read_records(work / "invocations.jsonl")


if __name__ == "__main__":
    sys.exit(main())
