"""LongLoRA's main comparison in miniature, on CPU: extend a small model ×4 with each method, same data
and steps, and measure what the paper claims (Chen et al. 2024, Tables 1-2 and §4).

1. Base: a BPE tokenizer and a small Llama pretrained from scratch at context 256 on the Shakespeare
   corpus, with a few works held out (cached under $LONGCTX_HOME/replication/base-256).
2. Rows, each extending 256 -> 1024: PI and YaRN without training; PI with plain LoRA, LongLoRA
   (LoRA+ with S²-Attn), LoRA+ with full attention and full fine-tuning; YaRN with LongLoRA. Trained rows
   go through `finetune train` and `finetune merge`; every row through `finetune eval` (full attention).
3. Report: benchmarks/results/replication.md (table, claims, machine header) and replication.png.

    python benchmarks/replicate.py            # the default setting: about an hour (58 min on one core of 2)
    python benchmarks/replicate.py --quick    # a few minutes: checks the pipeline, numbers meaningless
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import check_positive, digest, finetune, machine_header  # noqa: E402
from longctx import cli  # noqa: E402
from longctx.home import atomic_dir, longctx_home  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CONTEXT, FACTOR = 256, 4
TARGET = CONTEXT * FACTOR
LENGTHS = (256, 512, 1024)
# Held-out works: whole plays never seen by pretraining or fine-tuning. None of them has a second edition
# in the corpus (several plays appear twice under different spellings, e.g. twelfth_night/twelfe-night).
HELDOUT_WORKS = ("hamlet_gut.txt", "tempest_gut.txt", "winters_tale_gut.txt")
EOS = "<|endoftext|>"
IGNORE = -100  # label of a position the loss does not score
# the drills' recipe, in the base's stamp: a base cached with other drills is rebuilt
DRILLS = "passkey prompts, one a row or packed at random lengths, answers scored"
# Thresholds the claims are judged against; the paper gives none, so they are stated in the report.
FEW_PERCENT = 0.05
FAR_WORSE = 1.5
PASSKEY_AT_TARGET = 0.9  # the paper's extended models retrieve the passkey at their target length
BASE_PASSKEY, BASE_COLLAPSE = 0.95, 0.2  # the base: retrieves at its context, not at 4x past it unchanged
PROG = "python benchmarks/replicate.py"


@dataclass(frozen=True)
class Settings:
    """Sizes of the experiment; every field is a flag (`--pretrain-steps` ...)."""

    vocab: int = 2048
    """BPE vocabulary size of the tokenizer trained on the training works"""
    layers: int = 4
    """transformer layers of the base model"""
    hidden: int = 128
    """hidden size; 4 heads of hidden/4 (at least 32, vLLM's CPU minimum) and 2 kv heads"""
    pretrain_steps: int = 4000
    """optimizer steps pretraining the base at context 256"""
    pretrain_batch: int = 16
    """sequences of 256 tokens per pretraining step"""
    pretrain_lr: float = 3e-3
    """peak learning rate of pretraining (warm-up, then cosine to a tenth)"""
    passkey_drill: float = 0.5
    """share of each pretraining batch that is recall drills (passkey prompts filling the row or packed at
    random lengths, with their answers, scored on the answers only), so that the base retrieves a passkey
    at 256 and extension can be judged on keeping it (0: text only)"""
    steps: int = 1000
    """optimizer steps of every trained row (sequences of 1024 tokens; the paper's 1000 steps)"""
    grad_accum: int = 1
    """sequences per optimizer step of every trained row"""
    lr: float = 1e-3
    """learning rate of every trained row (same for all, as the paper uses one for all its rows)"""
    eval_windows: int = 4
    """perplexity windows per length on the held-out works"""
    passkey_trials: int = 4
    """passkey trials per length (256, 512 and 1024) and depth bin (5 bins)"""
    seed: int = 0
    """seed of pretraining, fine-tuning data order and passkeys"""

    def __post_init__(self) -> None:
        check_positive(self, "vocab", "layers", "hidden", "pretrain_steps", "pretrain_batch", "steps", "grad_accum",
                       "eval_windows")
        check_positive(self, "passkey_trials", minimum=0)
        if not 0 <= round(self.passkey_drill * self.pretrain_batch) < self.pretrain_batch:
            raise ValueError(f"--passkey-drill is the share of each batch that is drills, from 0 to below 1 (the "
                             f"rest is text, at least one row of --pretrain-batch), not {self.passkey_drill}")

    def quick(self) -> Settings:
        """A few minutes: checks that every stage runs; the numbers mean nothing."""
        return dataclasses.replace(self, pretrain_steps=10, pretrain_batch=4, steps=2, grad_accum=1,
                                   eval_windows=2, passkey_trials=1)


@dataclass(frozen=True)
class Invocation:
    """How this invocation runs the experiment (not part of the settings that key the cached runs)."""

    quick: bool = False
    """a few minutes: checks the pipeline, numbers meaningless (its own base and runs, never the cached real ones)"""
    out: Path | None = None
    """the results file (and its .png); default: benchmarks/results/replication.md, or under
    $LONGCTX_HOME/replication/quick with --quick"""


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    rope: str
    mode: str | None  # None: no training, RoPE extended at load time
    attention: str = "full"


ROWS = (
    Row("base", "base model, no extension", "none", None),
    Row("a", "PI, no training", "linear", None),
    Row("b", "PI + LoRA (full attn)", "linear", "lora", "full"),
    Row("c", "PI + LongLoRA (LoRA+, S²-Attn)", "linear", "longlora", "s2"),
    Row("d", "PI + LoRA+ (full attn)", "linear", "longlora", "full"),
    Row("e", "PI + full fine-tuning (full attn)", "linear", "full", "full"),
    Row("f", "YaRN, no training", "yarn", None),
    Row("g", "YaRN + LongLoRA (LoRA+, S²-Attn)", "yarn", "longlora", "s2"),
)


# ---------------------------------------------------------------- data


def split_works() -> tuple[list[Path], list[Path]]:
    """(training works, held-out works) of the default corpus; metadata.txt is not a work."""
    from longctx.corpus import default_corpus_files

    works = [f for f in default_corpus_files() if f.name != "metadata.txt"]
    heldout = [f for f in works if f.name in HELDOUT_WORKS]
    if len(heldout) != len(HELDOUT_WORKS):
        raise SystemExit(f"the corpus lacks some held-out works {HELDOUT_WORKS}; delete it and run again")
    return [f for f in works if f.name not in HELDOUT_WORKS], heldout


def passkey_drills(encode, rng: random.Random, pad: int) -> tuple[list[int], list[int]]:
    """One pretraining row of CONTEXT tokens, (ids, labels): half the rows one passkey prompt filling the row
    (the eval's shape at the base context), half prompts of random lengths packed back to back (keys at
    random distances from their question), each prompt followed by its answer, the rest padded with `pad`.
    Labels are -100 (unscored) except on the answers: the filler is trivially predictable, and scoring it
    would drown the few tokens that need the needle."""
    from finetune import passkey

    shortest, longest_answer = passkey.task_tokens(encode) + 1, len(encode(f" {passkey.MAX_KEY}."))
    whole = rng.random() < 0.5
    ids: list[int] = []
    labels: list[int] = []
    while CONTEXT - len(ids) >= shortest + longest_answer:
        key = rng.randint(1, passkey.MAX_KEY)
        answer = encode(f" {key}.")
        room = CONTEXT - len(ids) - len(answer)
        prompt = passkey.passkey_prompt(encode, room if whole else rng.randint(shortest, room), rng.random(), key)
        ids += prompt.ids + answer
        labels += [IGNORE] * len(prompt.ids) + answer
    fill = CONTEXT - len(ids)
    return ids + [pad] * fill, labels + [IGNORE] * fill


def next_token_loss(logits, labels):
    """Mean cross-entropy of each position's logits (B, T, V) against the next label (B, T); -100 unscored."""
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)


# ---------------------------------------------------------------- base model


def ensure_base(s: Settings, train_files: list[Path], folder: Path) -> tuple[Path, dict]:
    """The pretrained base in `folder` and its stamp; rebuilt only when missing or made with other settings."""
    wanted = {"settings": base_settings(s), "train_works": [f.name for f in train_files], "drills": DRILLS}
    stamp = folder / "pretrain.json"
    if stamp.is_file() and (folder / "model.safetensors").is_file():
        done = json.loads(stamp.read_text())
        if {k: done.get(k) for k in wanted} == wanted:
            print(f"base model: cached in {folder}")
            return folder, done
    with atomic_dir(folder) as tmp:
        done = dict(wanted, **pretrain(s, train_files, tmp))
        (tmp / "pretrain.json").write_text(json.dumps(done, indent=2) + "\n")
    return folder, done


def base_settings(s: Settings) -> dict:
    names = ("vocab", "layers", "hidden", "pretrain_steps", "pretrain_batch", "pretrain_lr", "passkey_drill", "seed")
    return {n: getattr(s, n) for n in names}


def pretrain(s: Settings, train_files: list[Path], out: Path) -> dict:
    """Tokenizer, model, and the pretraining loop (AdamW, warm-up then cosine, clipped); saves to `out`."""
    import torch
    from tqdm import tqdm

    from finetune.data import pack, read_documents, tokenize_joined
    from finetune.scratch import train_tokenizer

    started = time.time()
    tokenizer = train_tokenizer((f.read_text(errors="replace") for f in train_files), s.vocab, (EOS,))
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    blocks = pack(tokenize_joined([d for f in train_files for d in read_documents(f)], tokenizer), CONTEXT)
    model = new_model(s, tokenizer)
    rng = random.Random(s.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.pretrain_lr, betas=(0.9, 0.95), weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(s.pretrain_steps))
    print(f"pretraining {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters on {len(blocks)} "
          f"blocks of {CONTEXT} tokens ({len(train_files)} works), {s.pretrain_steps} steps of {s.pretrain_batch}")
    drills = round(s.passkey_drill * s.pretrain_batch)  # rows of each batch that are recall drills
    model.train()
    losses, answer_losses = [], []
    with tqdm(range(s.pretrain_steps), unit="step", dynamic_ncols=True) as bar:
        for _ in bar:
            text = [blocks[rng.randrange(len(blocks))].tolist() for _ in range(s.pretrain_batch - drills)]
            drill = [passkey_drills(encode, rng, tokenizer.eos_token_id) for _ in range(drills)]
            n = len(text)
            ids = torch.tensor(text + [row for row, _ in drill])  # (B, 256): text rows, then drill rows
            logits = model(input_ids=ids).logits  # (B, 256, V)
            # two means, added: the drills' few answer tokens weigh as much as all the text
            text_loss = next_token_loss(logits[:n], ids[:n])
            answer_loss = next_token_loss(logits[n:], torch.tensor([y for _, y in drill])) if drill else None
            (text_loss if answer_loss is None else text_loss + answer_loss).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(text_loss.item())
            if drill:
                answer_losses.append(answer_loss.item())
            bar.set_postfix({k: f"{v.item():.3f}" for k, v in (("loss", text_loss), ("answers", answer_loss))
                            if v is not None})
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"parameters": sum(p.numel() for p in model.parameters()), "train_blocks": len(blocks),
            "final_loss": sum(losses[-10:]) / len(losses[-10:]),
            "final_answer_loss": sum(answer_losses[-10:]) / len(answer_losses[-10:]) if answer_losses else None,
            "seconds": round(time.time() - started, 1)}


def new_model(s: Settings, tokenizer):
    """A random-init Llama with RoPE at the base context (untied embeddings, as Llama)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=s.hidden, intermediate_size=s.hidden * 8 // 3,
        num_hidden_layers=s.layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=CONTEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(s.seed)
    return LlamaForCausalLM(config)


def lr_schedule(steps: int):
    """LR multiplier at step i: linear warm-up over a tenth of the steps, then cosine down to 0.1."""
    warmup = max(1, steps // 10)

    def factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return 0.1 + 0.45 * (1 + math.cos(math.pi * (i - warmup) / max(1, steps - warmup)))

    return factor


# ---------------------------------------------------------------- rows


def run_row(row: Row, s: Settings, base: Path, base_stamp: dict, train_files: list[Path],
            heldout: list[Path], work: Path) -> dict:
    """Train (if the row trains), merge, evaluate; a finished row with the same inputs is reused."""
    key = digest({"row": dataclasses.asdict(row), "settings": dataclasses.asdict(s), "base": base_stamp})
    folder = work / f"{row.key}-{key}"
    if (folder / "row.json").is_file():
        print(f"row {row.key}: cached in {folder}")
        return json.loads((folder / "row.json").read_text())
    shutil.rmtree(folder, ignore_errors=True)
    print(f"\n== row {row.key}: {row.label}")
    started = time.time()
    result = {"row": row.key, "label": row.label}
    model, rope_flags = base, []
    if row.mode is None and row.rope != "none":
        rope_flags = ["--rope", row.rope, "--factor", str(FACTOR)]
    if row.mode is not None:
        result.update(train_row(row, s, base, train_files, folder / "run"))
        model = folder / "model"
        finetune("merge", str(folder / "run"), "--out", str(model))
    eval_dir = folder / "eval"
    finetune("eval", str(model), "--out", str(eval_dir), "--data", *map(str, heldout),
             "--lengths", *map(str, LENGTHS), "--passkey-lengths", *map(str, LENGTHS),
             "--max-windows", str(s.eval_windows), "--passkey-trials", str(s.passkey_trials),
             "--seed", str(s.seed), *rope_flags)
    result["eval"] = json.loads((eval_dir / "eval.json").read_text())
    result["row_seconds"] = time.time() - started
    (folder / "row.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def train_row(row: Row, s: Settings, base: Path, train_files: list[Path], run: Path) -> dict:
    """`finetune train` for one row: loop time from its metrics, peak RSS of the process."""
    # Gradient checkpointing off: the model is tiny, and recomputing the forward would only add time.
    seconds, peak = finetune(
        "train", "--model", str(base), "--target-length", str(TARGET), "--data", *map(str, train_files),
        "--out", str(run), "--rope", row.rope, "--mode", row.mode, "--attention", row.attention,
        "--max-steps", str(s.steps), "--batch-size", "1", "--grad-accum", str(s.grad_accum), "--lr", str(s.lr),
        "--warmup-steps", str(max(1, s.steps // 10)), "--save-every", str(s.steps), "--eval-fraction", "0",
        "--seed", str(s.seed), "--precision", "fp32", "--no-gradient-checkpointing")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    info = json.loads((run / "run.json").read_text())
    return {"train_seconds": sum(m["seconds"] for m in metrics), "process_seconds": seconds,
            "peak_rss_mib": peak, "final_loss": sum(m["loss"] for m in metrics[-5:]) / len(metrics[-5:]),
            "trainable_parameters": info["trainable_parameters"], "total_parameters": info["total_parameters"]}


# ---------------------------------------------------------------- report


def ppl(result: dict, length: int) -> float:
    return next(p["perplexity"] for p in result["eval"]["perplexity"] if p["length"] == length)


def passkey_at(result: dict, length: int) -> float:
    keys = result["eval"]["passkey"]
    accs = keys["accuracy"][keys["lengths"].index(length)]
    return sum(accs) / len(accs)


def paired(a: dict, b: dict, length: int = TARGET) -> tuple[float, float]:
    """Perplexity ratio a/b at `length` and the standard error of its log, paired over the same windows."""
    wa = next(p["window_losses"] for p in a["eval"]["perplexity"] if p["length"] == length)
    wb = next(p["window_losses"] for p in b["eval"]["perplexity"] if p["length"] == length)
    diffs = [x - y for x, y in zip(wa, wb, strict=True)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(1, len(diffs) - 1)
    return math.exp(mean), math.sqrt(var / len(diffs))


def pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def table(results: dict[str, dict]) -> list[str]:
    lines = ["| row | method | trained params | train time (s) | peak RSS (MiB) | final train loss | "
             + " | ".join(f"ppl @{n}" for n in LENGTHS) + " | " + " | ".join(f"passkey @{n}" for n in LENGTHS) + " |",
             "|" + "---|" * (6 + 2 * len(LENGTHS))]
    for row in ROWS:
        r = results[row.key]
        trained = (f"{r['trainable_parameters'] / 1e6:.2f}M / {r['total_parameters'] / 1e6:.2f}M"
                   if row.mode else "-")
        cells = [row.key, row.label, trained,
                 f"{r['train_seconds']:.0f}" if row.mode else "-",
                 f"{r['peak_rss_mib']:.0f}" if row.mode else "-",
                 f"{r['final_loss']:.3f}" if row.mode else "-",
                 *(f"{ppl(r, n):.2f}" for n in LENGTHS),
                 *(f"{passkey_at(r, n):.2f}" for n in LENGTHS)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def claims(r: dict[str, dict]) -> list[str]:
    """Each of the paper's claims, judged on perplexity at 1024 with the thresholds stated."""
    def vs(x: str, y: str) -> str:
        ratio, se = paired(r[x], r[y])
        return f"({x}) / ({y}) = {ratio:.3f} ({pct(ratio)}, paired s.e. of the log ±{se:.4f})"

    ce, _ = paired(r["c"], r["e"])
    worst_trained = max(ppl(r[k], TARGET) for k in "bcde")
    bc, bc_se = paired(r["b"], r["c"])
    cd, cd_se = paired(r["c"], r["d"])
    c_keys = passkey_at(r["c"], TARGET)
    base_keys, base_beyond = passkey_at(r["base"], CONTEXT), passkey_at(r["base"], TARGET)
    base_ppl, base_ppl_beyond = ppl(r["base"], CONTEXT), ppl(r["base"], TARGET)
    verdict = lambda ok: "**holds**" if ok else "**does not hold**"  # noqa: E731
    noise = lambda ratio, se: " (within two paired standard errors: window noise)" if abs(math.log(ratio)) <= 2 * se else ""  # noqa: E731
    return [
        f"1. (c) LongLoRA within a few percent (≤{FEW_PERCENT:.0%}) of (e) full fine-tuning at {TARGET}: "
        f"{vs('c', 'e')} → {verdict(abs(ce - 1) <= FEW_PERCENT)}.",
        f"2. (a) PI without training far worse (≥{FAR_WORSE}× every trained PI row) at {TARGET}: "
        f"(a) {ppl(r['a'], TARGET):.2f} vs the worst trained PI row {worst_trained:.2f} "
        f"({ppl(r['a'], TARGET) / worst_trained:.2f}×) → {verdict(ppl(r['a'], TARGET) >= FAR_WORSE * worst_trained)}.",
        f"3. (b) plain LoRA worse than (c) LongLoRA: {vs('b', 'c')} → {verdict(bc > 1)}{noise(bc, bc_se)}.",
        f"4. S²-Attn training does not hurt full-attention evaluation ((c) no more than {FEW_PERCENT:.0%} above "
        f"(d)): {vs('c', 'd')} → {verdict(cd <= 1 + FEW_PERCENT)}{noise(cd, cd_se)}.",
        f"5. YaRN (not a claim of the paper, for reference): untrained {vs('f', 'a')}; "
        f"with LongLoRA {vs('g', 'c')}.",
        f"6. (c) LongLoRA retrieves the passkey at {TARGET} in ≥{PASSKEY_AT_TARGET:.0%} of trials: "
        f"{c_keys:.0%} of {trials(r['c'])} → {verdict(c_keys >= PASSKEY_AT_TARGET)}.",
        "",
        f"Base check: a base worth extending uses its context and loses it past {CONTEXT}. With its RoPE unchanged "
        f"it retrieves the passkey at {CONTEXT} in {base_keys:.0%} of {trials(r['base'])} trials "
        f"(bar ≥{BASE_PASSKEY:.0%}: {met(base_keys >= BASE_PASSKEY)}) and at {TARGET} in {base_beyond:.0%} "
        f"(bar ≤{BASE_COLLAPSE:.0%}: {met(base_beyond <= BASE_COLLAPSE)}); its perplexity is {base_ppl_beyond:.2f} "
        f"at {TARGET} against {base_ppl:.2f} at {CONTEXT} ({base_ppl_beyond / base_ppl:.2f}×). "
        f"A base that misses these relies on short-range context, where extension methods have little to win or "
        f"lose, and the comparisons above are weak evidence either way.",
    ]


def trials(result: dict) -> int:
    """Passkey trials per length."""
    keys = result["eval"]["passkey"]
    return keys["trials_per_cell"] * keys["depth_bins"]


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in ROWS:
        style = "--" if row.mode is None else "-"
        ax.plot(LENGTHS, [ppl(results[row.key], n) for n in LENGTHS], style, marker="o",
                label=f"({row.key}) {row.label}")
    ax.axvline(CONTEXT, color="gray", linestyle=":", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(LENGTHS, [str(n) for n in LENGTHS])
    ax.minorticks_off()
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("perplexity on held-out works")
    ax.set_title(f"{CONTEXT} → {TARGET} (×{FACTOR}): perplexity against length", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(s: Settings, quick: bool, base_stamp: dict, heldout: list[Path], results: dict[str, dict],
           out: Path, seconds: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(results, out.with_suffix(".png"))
    settings = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(s).items())
    b = base_stamp["settings"]  # what the cached base was built with
    drill = (f" ({b['passkey_drill']:.0%} of each batch recall drills: {base_stamp['drills']})"
             if b["passkey_drill"] else "")
    text = [
        "# LongLoRA's comparison in miniature",
        "",
        machine_header(),
        f"- time: pretraining {base_stamp['seconds'] / 60:.1f} min, rows (train, merge, eval) "
        f"{sum(r['row_seconds'] for r in results.values()) / 60:.1f} min; this invocation {seconds / 60:.1f} min "
        f"(stages cached by an earlier invocation are reused, with the times they took then)",
        "",
        f"A {base_stamp['parameters'] / 1e6:.1f}M-parameter Llama ({b['layers']} layers, hidden {b['hidden']}, 4 heads, "
        f"2 kv heads, {b['vocab']}-token BPE) pretrained from scratch at {CONTEXT} tokens on "
        f"{len(base_stamp['train_works'])} Shakespeare works for {b['pretrain_steps']} steps of {b['pretrain_batch']} "
        f"sequences{drill}, final loss "
        f"{base_stamp['final_loss']:.3f}, in {base_stamp['seconds'] / 60:.1f} min. Every row extends it ×{FACTOR} "
        f"to {TARGET}; trained rows run `finetune train` ({s.steps} steps × {s.grad_accum} sequence(s) of {TARGET} "
        f"tokens from the same training works, lr {s.lr}, fp32, no gradient checkpointing), then `finetune merge`. "
        f"Every row is measured by `finetune eval` ({results['base']['eval']['dtype']}, its auto choice from the CPU "
        f"flags) with full attention on held-out works never trained on "
        f"({', '.join(f.stem for f in heldout)}): perplexity over {s.eval_windows} windows per length, passkey "
        f"accuracy over 5 depth bins × {s.passkey_trials} trials. Untrained rows extend RoPE at load time "
        f"(`--rope linear|yarn --factor {FACTOR}`); the base row runs its RoPE unchanged past {CONTEXT}.",
        "",
        f"Settings: {settings}." + (" **`--quick`: a pipeline check; the numbers mean nothing.**" if quick else ""),
        "",
        "Training time is the sum of the optimizer steps' times from the run's metrics.jsonl; peak RSS is that of "
        "the `finetune train` process (os.wait4). Both run on a 2-core machine shared with other jobs: times are "
        "noisy, and at this size the memory is mostly the Python/torch process, not activations.",
        "",
        *table(results),
        "",
        f"![perplexity against length]({out.with_suffix('.png').name})",
        "",
        "## Claims, from the numbers above",
        "",
        f"Judged on perplexity at {TARGET}. A/B ratios are exp of the mean per-window loss difference over the "
        f"same {s.eval_windows} held-out windows; the paired standard error says how much of a gap is window noise.",
        "",
        *claims(results),
        "",
    ]
    out.write_text("\n".join(text))
    print(f"wrote {out} and {out.with_suffix('.png')}")


# ---------------------------------------------------------------- main


def parse(argv: list[str] | None) -> tuple[Settings, bool, Path | None]:
    s, invocation = cli.parse_many((Settings, Invocation), argv, PROG, __doc__)
    return (s.quick() if invocation.quick else s), invocation.quick, invocation.out


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: replicate(*parse(argv)))


def replicate(s: Settings, quick: bool, out: Path | None) -> None:
    started = time.time()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the subprocesses fork after tokenizing
    train_files, heldout = split_works()
    home = longctx_home() / "replication"
    # --quick keeps its own base and runs, so it never replaces the cached real ones
    base, base_stamp = ensure_base(s, train_files, home / ("base-quick" if quick else f"base-{CONTEXT}"))
    work = home / ("runs-quick" if quick else "runs")
    results = {row.key: run_row(row, s, base, base_stamp, train_files, heldout, work) for row in ROWS}
    report(s, quick, base_stamp, heldout, results, out or default_out(quick), time.time() - started)


def default_out(quick: bool) -> Path:
    return longctx_home() / "replication" / "quick" / "replication.md" if quick else RESULTS / "replication.md"


if __name__ == "__main__":
    sys.exit(main())
