"""The whole pipeline on a tiny model, as a user runs it: `finetune train` (2 steps, LongLoRA with
S²-Attn at 4x the context) -> `finetune merge` -> `python -m serve` through the plugin -> a 15-second
`python -m loadtest` run whose summary shows zero transport failures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for
from tests.tiny import make_tiny_checkpoint, training_text

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
CONTEXT, TARGET = 128, 512


def run(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{args[:2]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_train_merge_serve_loadtest(tmp_path):
    env = {**os.environ, "LONGCTX_HOME": str(tmp_path / "home")}
    base = make_tiny_checkpoint(tmp_path / "base", context=CONTEXT)
    data = tmp_path / "data"
    data.mkdir()
    for i, text in enumerate(training_text()):
        (data / f"doc{i}.txt").write_text(text * 6)

    run("finetune", "train", "--model", str(base), "--target-length", str(TARGET), "--data", str(data),
        "--out", str(tmp_path / "run"), "--max-steps", "2", "--grad-accum", "1", "--warmup-steps", "1",
        "--lr", "1e-3", env=env)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([m for m in metrics if "loss" in m]) >= 2

    merged = tmp_path / "tiny-512"
    run("finetune", "merge", str(tmp_path / "run"), "--out", str(merged), env=env)
    config = json.loads((merged / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["rope_parameters"]["factor"] == TARGET / CONTEXT
    assert config["longctx"]["trained_context"] == TARGET

    port, log = free_port(), tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "serve", str(merged), "--port", str(port),
                                   "--api-key", "k", "--enforce-eager", "--kv-cache-gib", "1"],
                                  cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, "k", server, log)
        results = tmp_path / "results"
        run("loadtest", "--host", url, "--api-key", "k", "--scenario", "chat", "--users", "2",
            "--duration", "15s", "--buckets", "200,450", "--per-bucket", "2", "--out", str(results), env=env)
    finally:
        server.terminate()
        server.wait(timeout=60)
    records = [json.loads(line) for line in (results / "records.jsonl").read_text().splitlines()]
    assert records and not [r["failure"] for r in records if r["failure"]]
    assert "passkey accuracy" in (results / "summary.md").read_text()
