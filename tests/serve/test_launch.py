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


def test_descendants_are_found_with_their_names():
    from serve.launch import descendants

    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        import time

        for _ in range(50):  # the grandchild needs a moment to start
            if descendants(proc.pid):
                break
            time.sleep(0.1)
        found = descendants(proc.pid)
        assert len(found) == 1 and all(name.startswith("python") for name in found.values())
    finally:
        for pid in descendants(proc.pid):
            subprocess.run(["kill", str(pid)])
        proc.kill()
        proc.wait()


def test_a_server_that_stops_on_its_own_while_serving_is_a_failure():
    from serve.launch import watch_serving

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    with pytest.raises(LaunchError, match="exited on its own with code 0 while serving; restart it"):
        watch_serving(proc, stopping=[], poll=0.1)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    watch_serving(proc, stopping=[15], poll=0.1)  # we asked it to stop: no failure
