"""Session fixtures: one real vLLM server on a tiny checkpoint, shared by every end-to-end test
(a cold start takes about a minute on 2 cores, so it starts once), in float32 whatever the CPU, so
numbers can be compared with transformers'; and a bfloat16 one for the bf16 path's own tests, started
only where bf16 is native (or LONGCTX_DTYPE=bfloat16 forces it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from longctx import hardware
from longctx.procs import terminate
from serve.launch import LaunchError, wait_until_ready
from tests.tiny import make_tiny_checkpoint

TINY_CONTEXT, TINY_FACTOR = 128, 4  # original context and linear RoPE factor of the served checkpoint
API_KEY = "test-key-123"

# The auto dtype on this machine (LONGCTX_DTYPE first, then the CPU's flags): the bf16 path's tests run
# where it is bfloat16, and say why they skip elsewhere.
AUTO = hardware.choose_dtype(False)
needs_bf16 = pytest.mark.skipif(
    AUTO.dtype != "bfloat16",
    reason=f"bfloat16 is not this machine's dtype ({AUTO.dtype}, chosen by {AUTO.reason}): without "
           f"avx512_bf16/amx_bf16 it is emulated; LONGCTX_DTYPE=bfloat16 runs these tests anyway")


@dataclass(frozen=True)
class Server:
    base_url: str  # http://127.0.0.1:PORT
    api_key: str
    model_dir: Path
    max_model_len: int
    log: Path

    @property
    def name(self) -> str:
        return self.model_dir.name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_served_checkpoint(out: Path) -> Path:
    """The tiny checkpoint as `finetune merge` writes one: linear RoPE x4, our architecture, metadata."""
    from longctx.default_model import mark_as_longctx

    rope = {"rope_type": "linear", "factor": float(TINY_FACTOR), "rope_theta": 10000.0}
    make_tiny_checkpoint(out, context=TINY_CONTEXT, rope=rope)
    mark_as_longctx(out, original=TINY_CONTEXT, trained=TINY_CONTEXT * TINY_FACTOR, method="linear",
                    factor=float(TINY_FACTOR))
    return out


def wait_for(url: str, api_key: str, proc: subprocess.Popen, log: Path, timeout: float = 900) -> None:
    """The launcher's own readiness wait, with the server's log in the failure."""
    try:
        wait_until_ready(proc, f"{url}/v1", api_key, timeout)
    except LaunchError as e:
        raise RuntimeError(f"{e}:\n{log.read_text()[-4000:]}") from None


def serve_tiny(root: Path, dtype: str, *flags: str):
    """`python -m serve` on the tiny checkpoint in `dtype`; yields a Server, stops it afterwards."""
    model = make_served_checkpoint(root / "tiny-linear-x4")
    port, log = free_port(), root / "server.log"
    env = {**os.environ, "LONGCTX_HOME": str(root / "home")}
    cmd = [sys.executable, "-m", "serve", str(model), "--port", str(port), "--api-key", API_KEY,
           "--enforce-eager", "--kv-cache-gib", "1", "--per-request-metrics", "--dtype", dtype, *flags]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, API_KEY, proc, log)
        yield Server(url, API_KEY, model, TINY_CONTEXT * TINY_FACTOR, log)
    finally:
        terminate(proc)


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory) -> Server:
    """float32 on every machine: the numeric parity tests compare it with transformers in float32."""
    yield from serve_tiny(tmp_path_factory.mktemp("server"), "float32")


@pytest.fixture(scope="session")
def tiny_server_bf16(tmp_path_factory) -> Server:
    """bfloat16, for the bf16 path's own tests (mark them `needs_bf16`)."""
    yield from serve_tiny(tmp_path_factory.mktemp("server-bf16"), "bfloat16")


@pytest.fixture(scope="session")
def tiny_server_tp2(tmp_path_factory) -> Server:
    """float32, tensor-parallel over 2 vLLM ranks (one core each on a 2-core machine)."""
    yield from serve_tiny(tmp_path_factory.mktemp("server-tp2"), "float32", "--tensor-parallel-size", "2")
