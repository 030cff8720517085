"""`finetune train`: the LongLoRA recipe (paper §4.1) with the whole loop visible in `train()`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from finetune import checkpoint, distributed, pose
from longctx import hardware
from finetune.config import TrainConfig, UsageError
from finetune.data import Dataset, Stream, collate, pretraining_data, sft_data
from finetune.drills import Drills
from finetune.lora import apply_mode, load_adapter, trainable_count
from finetune.loss import causal_lm_loss
from finetune.model import extended_config, load_extended, load_tokenizer

EVAL_SAMPLES = 8  # held-out samples scored at each checkpoint; enough to see a trend, cheap on CPU


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train as `cfg` says and return the run folder; every `save_every` steps a resumable checkpoint.

    Under torchrun it joins (or reuses) the process group; the caller ends it (`distributed.finish`)."""
    d = distributed.init()
    log = log if d.main else (lambda _: None)
    run, base_dir = Path(cfg.out), base_model(cfg, log)
    rope = extended_config(base_dir, cfg.rope, cfg.target_length)  # refuses a bad target or method early
    check_attention(cfg, rope)
    resume_from = open_run(run, cfg, d.world)
    tokenizer = load_tokenizer(base_dir)
    with distributed.main_first(d):  # rank 0 fills the tokenized cache, the others read it
        data = load_data(cfg, tokenizer, base_dir, log)  # bad data fails here, before anything is written
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, base_dir, resume_from).to(d.device)
    model = distributed.wrap(model, cfg.mode, d)
    bf16 = use_bf16(cfg.precision, d.device)
    params = [p for p in model.parameters() if p.requires_grad]
    # AdamW with the paper's betas (0.9, 0.95); linear warm-up then constant (DeepSpeed WarmupLR), then a decay.
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    # The chunked loss calls the LM head outside the forward, which FSDP's sharded weights do not allow.
    chunk = 0 if distributed.is_sharded(model) else cfg.loss_chunk
    head = distributed.unwrap(model).get_output_embeddings()
    loss_of = lambda batch: causal_lm_loss(model, batch, chunk, head)  # noqa: E731
    # PoSE: each window's position ids skip to span the target, drawn per sample from (seed, data position).
    positions = pose.sampler(cfg.pose_window, cfg.target_length, cfg.seed) if cfg.pose_window else None
    # Retrieval drills: whole micro-batches, drawn per (seed, micro-batch), of notes in the text and a question.
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    drill_window = cfg.drill_window or cfg.pose_window or cfg.target_length
    drills = Drills(encode, cfg.drills, cfg.seed, drill_window, cfg.target_length) if cfg.drills else None
    # a drill's question must see its whole window: full attention, backward included (it recomputes the forward)
    full_attention = lambda model: contextlib.nullcontext()  # noqa: E731
    if drills and cfg.attention == "s2":
        from finetune.s2attn import full_attention
    stream = Stream(data.train, cfg.batch_size, cfg.seed, tokenizer.pad_token_id, d.rank, d.world, positions,
                    drills)
    step = restore(resume_from, model, optimizer, scheduler, stream) if resume_from else 0
    if d.main and resume_from:
        checkpoint.trim_metrics(run, step)
        checkpoint.record_resume(run, cfg, step)
    if d.main and not resume_from:
        start_run(run, cfg, base_dir, rope, model, data, bf16, d)
    window = f" in PoSE windows of {cfg.pose_window}" if cfg.pose_window else ""
    log(f"training {cfg.mode} at {cfg.target_length} tokens{window}, {cfg.attention} attention, "
        f"{'bf16' if bf16 else 'fp32'}, {d.world} process(es), from step {step}")

    with tqdm(total=cfg.max_steps, initial=step, disable=not d.main, unit="step", dynamic_ncols=True) as bar:
        model.train()
        while step < cfg.max_steps:
            started, loss_sum, tokens, drill_losses = time.time(), 0.0, 0, []
            for _ in range(cfg.grad_accum):
                drilling = stream.drilling()
                batch = {k: v.to(d.device) for k, v in stream.next().items()}
                with full_attention(model) if drilling else contextlib.nullcontext():
                    with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=bf16):
                        # mean loss of this micro-batch, scaled so the accumulated gradient is the step's mean
                        loss = loss_of(batch) / cfg.grad_accum
                    loss.backward()  # DDP all-reduces every micro-batch: simpler than no_sync, same gradient
                loss_sum += loss.item()
                if drilling:  # its loss is the answers' alone: logged apart from the text's
                    drill_losses.append(loss.item() * cfg.grad_accum)
                tokens += int(batch["attention_mask"].sum())
            grad_norm = clip(params, cfg.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]  # this step's rate; scheduler.step() sets the next one's
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            seconds = time.time() - started
            record = {"step": step, "loss": distributed.mean(loss_sum, d), "lr": lr,
                      "grad_norm": grad_norm, "tokens_per_s": distributed.mean(tokens, d) * d.world / seconds,
                      "seconds": seconds}
            if drill_losses:  # every process drills the same micro-batches; `loss` is over all of them
                record.update(drills=len(drill_losses), drill_loss=distributed.mean(sum(drill_losses), d) /
                              len(drill_losses))
            shown = {"drill": f"{record['drill_loss']:.3f}"} if drill_losses else {}
            bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}", **shown)
            bar.update(1)
            saving = step % cfg.save_every == 0 or step == cfg.max_steps
            if saving:
                record["eval_loss"] = evaluate(model, loss_of, data, tokenizer.pad_token_id, bf16, d)
            if d.main:  # metrics before the checkpoint: a resumed run trims what came after its checkpoint
                checkpoint.append_metrics(run, record)
            if saving:
                save(run, step, model, optimizer, scheduler, stream, tokenizer, d)
    return run


# ---------------------------------------------------------------- set-up


def base_model(cfg: TrainConfig, log) -> Path:
    """--model, or the embedded default model."""
    if cfg.model is None:
        from longctx.default_model import ensure_default_model

        return ensure_default_model(log)
    if not Path(cfg.model).is_dir():
        raise UsageError(f"--model {cfg.model} is not a folder")
    return Path(cfg.model)


def open_run(run: Path, cfg: TrainConfig, world: int = 1) -> Path | None:
    """The checkpoint to resume from, or None for a new run; refuses to mix two runs in one folder."""
    if cfg.resume:
        checkpoint.check_resumable(run, cfg, world)
        return checkpoint.checkpoint_at(run)
    if (run / "run.json").exists():
        raise UsageError(f"{run} already holds a run; add --resume to continue it, or choose another --out")
    return None


def load_data(cfg: TrainConfig, tokenizer, base_dir: Path, log) -> Dataset:
    """SFT records, or packed blocks of --data (default: the embedded corpus): --target-length tokens each,
    or --pose-window tokens under PoSE (held-out blocks too: evaluated with consecutive positions)."""
    if cfg.sft:
        return sft_data(cfg.sft, tokenizer, cfg.target_length, cfg.eval_fraction)
    from longctx.corpus import default_corpus_files, resolve_data

    paths = resolve_data(cfg.data, log) if cfg.data else default_corpus_files(log)
    length = cfg.pose_window or cfg.target_length
    return pretraining_data(paths, tokenizer, base_dir, length, cfg.eval_fraction, log)


def build_model(cfg: TrainConfig, base_dir: Path, resume_from: Path | None) -> torch.nn.Module:
    """Base model with extended RoPE, S²-Attn if asked, checkpointing, and `cfg.mode`'s trainables."""
    full_resume = resume_from is not None and cfg.mode == "full"
    model = load_extended(resume_from / "model" if full_resume else base_dir, cfg.rope, cfg.target_length)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:  # non-reentrant: works with frozen inputs, DDP and FSDP
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.attention == "s2":
        use_s2attn(model, cfg.group_ratio)
    if resume_from is not None and cfg.mode != "full":
        return load_adapter(model, resume_from / "adapter", trainable=True)
    return apply_mode(model, cfg.mode)


def sliding_window(config: dict) -> int | None:
    """The attention window of a config.json (Mistral's `sliding_window`; Qwen2 only with `use_sliding_window`)."""
    if not config.get("use_sliding_window", True):
        return None
    return config.get("sliding_window") or None


def check_attention(cfg: TrainConfig, config: dict) -> None:
    """Refuse what S²-Attn cannot train, before anything is written to the run folder."""
    window = sliding_window(config)
    if cfg.attention == "s2" and window is not None and window < cfg.target_length:
        raise UsageError(f"the model attends within a sliding window of {window} tokens (sliding_window in its "
                         f"config.json), shorter than --target-length {cfg.target_length}, and S2-Attn's groups "
                         f"cannot combine with it; train with --attention full (the window already bounds "
                         f"attention's cost)")


def use_s2attn(model: torch.nn.Module, group_ratio: float) -> None:
    """Switch the model instance to S²-Attn (train mode only); imported lazily as it is optional."""
    try:
        from finetune.s2attn import apply_s2attn, s2_attention
    except ImportError as e:
        if e.name != "finetune.s2attn":
            raise
        raise UsageError("--attention s2 needs finetune/s2attn.py, which this checkout lacks; "
                         "use --attention full") from None
    # Probe with this model's head counts, so an unsupported layout fails now, not at the first step.
    heads, kv_heads = model.config.num_attention_heads, model.config.num_key_value_heads
    try:
        s2_attention(torch.zeros(1, heads, 4, 1), torch.zeros(1, kv_heads, 4, 1), torch.zeros(1, kv_heads, 4, 1), 2)
    except ValueError as e:
        raise UsageError(f"{e}; use --attention full for this model") from None  # e.g. H not a multiple of H_kv
    apply_s2attn(model, group_ratio=group_ratio)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast where the hardware computes bf16 natively (on CPU: AVX512-BF16 or AMX; emulated bf16 is
    far slower than fp32, see longctx/hardware.py) or LONGCTX_DTYPE=bfloat16 asks; fp32 weights either way."""
    if precision != "auto":
        return precision == "bf16"
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return hardware.best_dtype(device.type == "cuda", cuda_bf16=cuda_bf16) == "bfloat16"


def start_run(run: Path, cfg: TrainConfig, base_dir: Path, extended: dict, model, data: Dataset, bf16: bool,
              d) -> None:
    """run.json: every setting, the base model, the RoPE it trains with, library versions."""
    run.mkdir(parents=True, exist_ok=True)
    trainable, total = trainable_count(model)
    checkpoint.write_json(run / "run.json", {
        "settings": checkpoint.settings(cfg), "base_model": str(base_dir.resolve()),
        "model_type": extended["model_type"], "rope_parameters": extended["rope_parameters"],
        "max_position_embeddings": extended["max_position_embeddings"], "longctx": extended["longctx"],
        "precision": "bf16" if bf16 else "fp32", "precision_chosen_by": precision_reason(cfg.precision),
        "cpu_flags": list(hardware.choose_dtype(False).cpu_flags), "world_size": d.world,
        "trainable_parameters": trainable,
        "pose": {"window": cfg.pose_window, "chunks": pose.CHUNKS} if cfg.pose_window else None,
        "total_parameters": total, "train_samples": len(data.train), "heldout_samples": len(data.heldout),
        "data": data.origin,
        "versions": checkpoint.versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def precision_reason(precision: str) -> str:
    """Why the run trains in its precision: the flag, or what `hardware.choose_dtype` went by."""
    return "--precision" if precision != "auto" else hardware.choose_dtype(hardware.cuda_available()).reason


# ---------------------------------------------------------------- steps


def clip(params: list[torch.Tensor], max_norm: float) -> float:
    """Clip the gradients' global norm (0: measure only) and return the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP2 returns a DTensor


@torch.no_grad()
def evaluate(model, loss_of: Callable, data: Dataset, pad_id: int, bf16: bool, d) -> float | None:
    """Mean loss on the first held-out samples, in eval mode (full attention, as the paper evaluates)."""
    if not data.heldout:
        return None
    model.eval()
    losses = []
    for sample in data.heldout[:EVAL_SAMPLES]:
        batch = {k: v.to(d.device) for k, v in collate([sample], pad_id).items()}
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=bf16):
            losses.append(loss_of(batch).item())
    model.train()
    return sum(losses) / len(losses)


def save(run: Path, step: int, model, optimizer, scheduler, stream: Stream, tokenizer, d) -> None:
    """Checkpoint `step` (rank 0 writes; every rank takes part in gathering sharded state)."""
    weights, optim_state = distributed.full_state(model, optimizer)
    if d.main:
        trainer = {"step": step, "optimizer": optim_state, "scheduler": scheduler.state_dict(),
                   "data": stream.state_dict()}
        checkpoint.save(run, step, distributed.unwrap(model), weights, trainer, tokenizer)
    distributed.barrier(d)


def restore(resume_from: Path, model, optimizer, scheduler, stream: Stream) -> int:
    """Load the trainer state of a checkpoint (its weights are already in the model); return its step."""
    state = checkpoint.load_trainer(resume_from)
    distributed.load_optimizer(model, optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    stream.load_state_dict(state["data"])
    checkpoint.set_rng_state(state["rng"])
    step = int(state["step"])
    for group, lr in zip(optimizer.param_groups, scheduler.base_lrs):  # a resume may change the schedule's end
        group["lr"] = lr * scheduler.lr_lambdas[0](step)
    return step


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based) over --lr: linear warm-up over --warmup-steps, constant,
    then over the last --decay-steps linear towards 0 (1/decay_steps at the last step), as warmup-stable-decay
    (Hägele et al. 2024, arXiv 2405.18392): the decay may branch from any checkpoint of the constant phase."""
    warm = min(1.0, (step + 1) / (cfg.warmup_steps + 1))
    return warm * (min(1.0, (cfg.max_steps - step) / cfg.decay_steps) if cfg.decay_steps else 1.0)
