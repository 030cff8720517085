"""serve/launch.py's readiness wait, which the tests and benchmarks share: it returns once /v1/models
answers, and fails fast, with the exit code, when the server dies first."""

import subprocess
import sys

import pytest

from serve.launch import LaunchError, wait_until_ready
from tests.conftest import free_port


def test_ready_once_models_answers(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text('{"data": []}')
    port = free_port()
    # a real HTTP server whose only route is the file v1/models; it needs a moment to bind
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert 0 <= wait_until_ready(proc, f"http://127.0.0.1:{port}/v1", None, timeout=60) < 60
    finally:
        proc.terminate()
        proc.wait()


def test_a_server_that_dies_fails_fast_with_its_code():
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    with pytest.raises(LaunchError, match="exited with code 3"):
        wait_until_ready(proc, f"http://127.0.0.1:{free_port()}/v1", None, timeout=60)


def test_no_answer_within_the_timeout():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(LaunchError, match="did not answer"):
            wait_until_ready(proc, f"http://127.0.0.1:{free_port()}/v1", None, timeout=2)
    finally:
        proc.kill()
        proc.wait()
