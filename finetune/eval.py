"""`finetune eval MODEL`: perplexity against context length and passkey retrieval, with full attention.

Perplexity follows LongLoRA's `eval.py`: windows of each length starting every `stride` tokens, every
token scored, the mean of the per-window mean losses, exponentiated. The model is loaded fresh and never
patched, so attention is full (the paper evaluates S²-trained models with full attention, §3.2)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from finetune import passkey
from longctx import hardware
from finetune.config import EvalConfig, TrainConfig, UsageError
from finetune.data import read_documents, text_files, tokenize_joined
from finetune.loss import causal_lm_loss
from finetune.model import load_as_served, load_tokenizer, read_config
from longctx.rope import extend_config, length_for_factor, serving_length

# `finetune train` holds out the last blocks of the packed corpus, `eval_fraction` of them rounded up; the
# tail starting at ceil((1 - fraction) * tokens) never reaches a training block, whatever the block length.
HELDOUT_FRACTION = TrainConfig.eval_fraction


def evaluate(cfg: EvalConfig, log: Callable[[str], None] = print) -> Path:
    """Measure, write eval.json and the plots (perplexity, passkey, multi-key) into `cfg.out`; return it."""
    started = time.time()
    device = torch.device("cuda" if hardware.cuda_available() else "cpu")
    dtype = eval_dtype(cfg.dtype, device)
    read_config(cfg.model)  # bad input fails in one line before anything slow
    tokenizer = load_tokenizer(cfg.model)
    ids = torch.tensor(heldout_ids(cfg.data, tokenizer, log), dtype=torch.int64)
    if len(ids) < max(cfg.lengths):
        raise UsageError(f"the held-out text has {len(ids)} tokens, fewer than --lengths {max(cfg.lengths)}; "
                         f"give more text with --data or lower --lengths")
    check_passkey_lengths(cfg, tokenizer)
    check_multikey_lengths(cfg, tokenizer)
    model = load_model(cfg.model, cfg.rope, cfg.factor, device, getattr(torch, dtype.dtype))
    log(f"evaluating {cfg.model} on {len(ids)} held-out tokens, {device.type}, {dtype.dtype}, full attention")
    ppl = [perplexity(model, ids, length, cfg.stride, cfg.max_windows) for length in cfg.lengths]
    keys = passkey_results(model, tokenizer, cfg)
    multikey = multikey_results(model, tokenizer, cfg, ids.tolist())
    result = {"model": str(cfg.model), "rope_override": {"rope": cfg.rope, "factor": cfg.factor},
              "rope_parameters": model.config.rope_parameters,
              "max_position_embeddings": model.config.max_position_embeddings,
              "rope_length": serving_length(model.config.to_dict()),
              **dtype.as_dict(), "heldout_tokens": len(ids),
              "data": [str(p) for p in cfg.data] or "default corpus, held-out tail",
              "perplexity": ppl, "passkey": keys, "multikey": multikey,
              "seconds": round(time.time() - started, 1),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return write_results(Path(cfg.out), result, log)


# ---------------------------------------------------------------- model and text


def eval_dtype(asked: str, device: torch.device) -> hardware.DtypeChoice:
    """--dtype as given, or the machine's best (LONGCTX_DTYPE, then the hardware); recorded in eval.json."""
    choice = hardware.choose_dtype(device.type == "cuda")
    return choice if asked == "auto" else hardware.DtypeChoice(asked, "--dtype", choice.cpu_flags)


def load_model(model_dir: Path, rope: str | None, factor: float | None, device: torch.device,
               dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The causal LM in eval mode, with the RoPE the server runs; with `rope`, its RoPE extended by `factor`
    over the original context."""
    config = read_config(model_dir)  # refuses a missing folder or an unsupported family in one line
    if rope is not None:
        target = length_for_factor(config, factor)  # extend_config refuses a ratio that does not round-trip
        config = extend_config(config, rope, target)
    model = load_as_served(model_dir, config, dtype)  # dynamic NTK: the server's fixed base, not per length
    return model.to(device).eval()


def heldout_ids(data: tuple[Path, ...], tokenizer, log) -> list[int]:
    """Token ids of `data` whole, or of the held-out tail of the default corpus."""
    from longctx.corpus import default_corpus_files, resolve_data

    if data:
        return tokenize_joined([d for f in text_files(resolve_data(data, log)) for d in read_documents(f)], tokenizer)

    files = default_corpus_files(log)
    ids = tokenize_joined([d for f in files for d in read_documents(f)], tokenizer)
    return heldout_tail(ids, HELDOUT_FRACTION)


def heldout_tail(ids: list[int], fraction: float) -> list[int]:
    """The last `fraction` of the tokens: text no `finetune train` run with that fraction trained on."""
    return ids[math.ceil((1 - fraction) * len(ids)):]


# ---------------------------------------------------------------- perplexity


def window_starts(n_tokens: int, length: int, stride: int, max_windows: int) -> list[int]:
    """Starts of the windows every `stride` tokens that fit, thinned evenly to at most `max_windows`."""
    starts = list(range(0, n_tokens - length + 1, stride))
    if len(starts) <= max_windows:
        return starts
    step = (len(starts) - 1) / max(max_windows - 1, 1)
    return [starts[round(i * step)] for i in range(max_windows)]


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, length: int, stride: int, max_windows: int) -> dict:
    """exp(mean over windows of the window's mean next-token loss); every token after the first is scored."""
    starts = window_starts(len(ids), length, stride, max_windows)
    device = next(model.parameters()).device
    losses = []
    for start in tqdm(starts, desc=f"perplexity @ {length}", unit="window", dynamic_ncols=True):
        window = ids[start:start + length].to(device)[None]  # (1, T)
        batch = {"input_ids": window, "attention_mask": torch.ones_like(window), "labels": window}
        # chunked: at 16k the full float32 logits and their log-softmax would take 6 GB
        losses.append(float(causal_lm_loss(model, batch, TrainConfig.loss_chunk, model.get_output_embeddings())))
    loss = sum(losses) / len(losses)
    return {"length": length, "perplexity": math.exp(loss), "loss": loss, "windows": len(starts),
            "window_losses": losses}


# ---------------------------------------------------------------- passkey


def encoder(tokenizer) -> passkey.Encode:
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


def check_passkey_lengths(cfg: EvalConfig, tokenizer) -> None:
    shortest = passkey.task_tokens(encoder(tokenizer)) + 1
    if cfg.passkey_trials and min(cfg.passkey_lengths or cfg.lengths) < shortest:
        raise UsageError(f"a passkey prompt needs at least {shortest} tokens with this tokenizer; raise "
                         f"--passkey-lengths (or --lengths), or skip it with --passkey-trials 0")


def passkey_results(model, tokenizer, cfg: EvalConfig) -> dict | None:
    """Accuracy per length and depth bin over `cfg.passkey_trials` greedy trials each, and every trial."""
    if cfg.passkey_trials == 0:
        return None
    lengths = cfg.passkey_lengths or cfg.lengths
    encode = encoder(tokenizer)
    plan = passkey.plan_trials(lengths, cfg.passkey_depths, cfg.passkey_trials, cfg.seed)
    records = []
    for trial in tqdm(plan, desc="passkey", unit="trial", dynamic_ncols=True):
        prompt = passkey.passkey_prompt(encode, trial.length, trial.depth, trial.key)
        answer = greedy(model, tokenizer, prompt.ids, passkey.answer_tokens(encode, trial.key))
        records.append({"length": trial.length, "depth": trial.depth, "key": trial.key, "answer": answer,
                        "correct": passkey.is_correct(answer, trial.key)})
    grid = passkey.accuracy_grid(plan, [r["correct"] for r in records], lengths, cfg.passkey_depths)
    return {"lengths": list(lengths), "depth_bins": cfg.passkey_depths, "trials_per_cell": cfg.passkey_trials,
            "accuracy": grid, "trials": records}


@torch.no_grad()
def greedy(model, tokenizer, ids: list[int], max_new_tokens: int) -> str:
    """The model's greedy continuation of `ids`, decoded."""
    device = next(model.parameters()).device
    prompt = torch.tensor([ids], device=device)  # (1, T)
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


# ---------------------------------------------------------------- multi-key needle


def check_multikey_lengths(cfg: EvalConfig, tokenizer) -> None:
    shortest = passkey.multikey_task_tokens(encoder(tokenizer), cfg.multikey_keys) + 1
    if cfg.multikey_trials and min(cfg.passkey_lengths or cfg.lengths) < shortest:
        raise UsageError(f"a multi-key prompt with {cfg.multikey_keys} keys needs at least {shortest} tokens with "
                         f"this tokenizer; raise --passkey-lengths, lower --multikey-keys, or --multikey-trials 0")


def multikey_results(model, tokenizer, cfg: EvalConfig, text: list[int]) -> dict | None:
    """Multi-key accuracy per length and depth bin (the held-out text as haystack), and every trial."""
    if cfg.multikey_trials == 0:
        return None
    lengths = cfg.passkey_lengths or cfg.lengths
    encode = encoder(tokenizer)
    plan = passkey.plan_multikey_trials(lengths, cfg.passkey_depths, cfg.multikey_trials, cfg.multikey_keys,
                                        cfg.seed)
    records = []
    for trial in tqdm(plan, desc="multi-key", unit="trial", dynamic_ncols=True):
        prompt = passkey.multikey_prompt(encode, text, trial)
        answer = greedy(model, tokenizer, prompt.ids, passkey.answer_tokens(encode, trial.key))
        records.append(multikey_record(trial, prompt, answer))
    grid = passkey.accuracy_grid(plan, [r["correct"] for r in records], lengths, cfg.passkey_depths)
    return {"lengths": list(lengths), "depth_bins": cfg.passkey_depths, "trials_per_cell": cfg.multikey_trials,
            "keys_per_prompt": cfg.multikey_keys, "accuracy": grid, "trials": records}


def multikey_record(trial: passkey.MultikeyTrial, prompt: passkey.MultikeyPrompt, answer: str) -> dict:
    """One graded multi-key trial as eval.json (and the served benchmark) record it."""
    return {"length": trial.length, "depth": trial.depth, "depths": list(prompt.depths),
            **passkey.multikey_record(trial, answer)}


# ---------------------------------------------------------------- results


def write_results(out: Path, result: dict, log) -> Path:
    """eval.json and the plots; prints a one-line summary per length."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_perplexity(result, out / "perplexity.png")
    if result["passkey"]:
        plot_passkey(result["passkey"], out / "passkey.png")
    if result.get("multikey"):
        plot_passkey(result["multikey"], out / "multikey.png",
                     f"multi-key accuracy, {result['multikey']['keys_per_prompt']} keys per prompt")
    for row in result["perplexity"]:
        log(f"perplexity @ {row['length']}: {row['perplexity']:.3f} ({row['windows']} windows)")
    if result["passkey"]:
        for length, accs in zip(result["passkey"]["lengths"], result["passkey"]["accuracy"]):
            log(f"passkey @ {length}: {sum(accs) / len(accs):.2f}")
    if result.get("multikey"):
        for length, accs in zip(result["multikey"]["lengths"], result["multikey"]["accuracy"]):
            log(f"multi-key @ {length}: {sum(accs) / len(accs):.2f}")
    log(f"results in {out}")
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    return plt


def plot_perplexity(result: dict, path: Path) -> None:
    plt = _pyplot()
    rows = result["perplexity"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["length"] for r in rows], [r["perplexity"] for r in rows], marker="o")
    limit = result["rope_length"]
    if limit < max(r["length"] for r in rows):  # mark where the model leaves the positions it knows
        ax.axvline(limit, color="gray", linestyle="--", label=f"RoPE length {limit}")
        ax.legend()
    ax.set_xscale("log", base=2)
    ax.set_xticks([r["length"] for r in rows], [str(r["length"]) for r in rows])
    ax.minorticks_off()
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("perplexity (held-out)")
    ax.set_title(Path(result["model"]).name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_passkey(keys: dict, path: Path, what: str = "passkey accuracy") -> None:
    plt = _pyplot()
    grid, bins = keys["accuracy"], keys["depth_bins"]
    fig, ax = plt.subplots(figsize=(1.2 * bins + 2, 0.5 * len(grid) + 2))
    ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for i, row in enumerate(grid):
        for j, acc in enumerate(row):
            ax.text(j, i, f"{acc:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(bins), [f"{b / bins:.2g}-{(b + 1) / bins:.2g}" for b in range(bins)])
    ax.set_yticks(range(len(grid)), [str(n) for n in keys["lengths"]])
    ax.set_xlabel("needle depth")
    ax.set_ylabel("prompt length (tokens)")
    ax.set_title(f"{what} ({keys['trials_per_cell']} trials per cell)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
