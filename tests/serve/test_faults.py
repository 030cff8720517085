"""Faults while serving, with a real vLLM server of its own (it is killed here, so it is not shared):
the engine core dies mid-request -> the request in flight gets an error, never a hang, and
`python -m serve` exits non-zero within 30 s with one line saying what died."""

import os
import subprocess
import sys
import threading
import time

import pytest
import requests

from longctx.procs import descendants
from serve.launch import ENGINE_TITLE
from tests.conftest import API_KEY, free_port, make_served_checkpoint, wait_for

pytestmark = pytest.mark.slow


def test_engine_core_killed_mid_request(tmp_path):
    model = make_served_checkpoint(tmp_path / "tiny")
    port, log = free_port(), tmp_path / "server.log"
    cmd = [sys.executable, "-m", "serve", str(model), "--port", str(port), "--api-key", API_KEY,
           "--enforce-eager", "--kv-cache-gib", "1", "--dtype", "float32"]
    with open(log, "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, "LONGCTX_HOME": str(tmp_path)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(url, API_KEY, proc, log)
        # the launcher watches the engine once it has seen the server ready (its banner); a kill before that
        # would race the launcher's own readiness poll, and the API server would then exit 0 on its own
        deadline = time.monotonic() + 30
        while "(ready after" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        outcome, streaming = {"lines": []}, threading.Event()

        def ask():  # a long streamed answer, in flight when the engine dies
            try:
                with requests.post(f"{url}/v1/completions", timeout=60, stream=True,
                                   headers={"Authorization": f"Bearer {API_KEY}"},
                                   json={"model": model.name, "prompt": "The pass key is", "max_tokens": 500,
                                         "min_tokens": 500, "temperature": 0, "stream": True}) as resp:
                    for line in resp.iter_lines():
                        outcome["lines"].append(line)
                        streaming.set()
            except requests.RequestException as e:
                outcome["error"] = type(e).__name__
            streaming.set()

        client = threading.Thread(target=ask)
        client.start()
        assert streaming.wait(timeout=60)
        engine = next(pid for pid, name in descendants(proc.pid).items() if name == ENGINE_TITLE)
        os.kill(engine, 9)
        killed = time.monotonic()
        code = proc.wait(timeout=30)
        assert code != 0 and time.monotonic() - killed < 30
        client.join(timeout=30)
        assert not client.is_alive()  # no hang
        # an error, never a complete answer: a broken connection, an error event, or a stream cut short
        text = b"\n".join(outcome["lines"])
        assert "error" in outcome or b'"error"' in text or b'"finish_reason":"length"' not in text, text[-500:]
        last = (tmp_path / "stderr").read_text().strip().splitlines()[-1]
        assert last.startswith("longctx serve: error: vLLM: its engine core (pid ") and "died" in last
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
