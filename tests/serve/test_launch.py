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


def test_a_server_that_stops_on_its_own_while_serving_is_a_failure():
    from serve.launch import watch_serving

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    with pytest.raises(LaunchError, match="exited on its own with code 0 while serving; restart it"):
        watch_serving(proc, stopping=[], poll=0.1)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    watch_serving(proc, stopping=[15], poll=0.1)  # we asked it to stop: no failure


def test_a_server_that_ignores_sigterm_is_killed_with_its_children(tmp_path):
    """`python -m serve` under a supervisor's SIGTERM: vLLM gets it first, and is killed (children too)
    if it has not stopped after the grace period, so no server is left holding the port."""
    import os
    import signal
    import time

    import serve.launch as launch
    from longctx.procs import descendants
    from serve.launch import kill_tree

    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script])
    for _ in range(50):
        if descendants(proc.pid):
            break
        time.sleep(0.1)
    child = next(iter(descendants(proc.pid)))
    os.kill(proc.pid, signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # it ignored the signal
    kill_tree(proc)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    for _ in range(50):
        if not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the child outlived kill_tree")
    assert launch.STOP_GRACE_S <= 30


def test_an_engine_killed_but_not_reaped_counts_as_dead():
    """CI saw this race: vLLM's engine core SIGKILLed stays a zombie while its parent has not reaped it
    (and after, where PID 1 does not reap), so /proc/PID still exists. The launcher must still name the
    engine's death, not wait for the API server to exit 0 on its own."""
    import os
    import signal
    import time

    from longctx.procs import descendants, running
    from serve.launch import ENGINE_TITLE, watch_serving

    engine = ("import ctypes, time; ctypes.CDLL(None).prctl(15, b'" + ENGINE_TITLE + "'); time.sleep(60)")
    # the "API server": starts an engine it never reaps, and exits 0 on its own after 20 s
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {engine!r}]); time.sleep(20)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(100):
            if ENGINE_TITLE in descendants(proc.pid).values():
                break
            time.sleep(0.1)
        pid = next(p for p, name in descendants(proc.pid).items() if name == ENGINE_TITLE)
        assert running(pid) and running(os.getpid())
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert os.path.exists(f"/proc/{pid}") and not running(pid)  # a zombie: there, but dead
        start = time.monotonic()
        with pytest.raises(LaunchError, match=rf"engine core \(pid {pid}\) died while serving"):
            watch_serving(proc, stopping=[], poll=0.1)
        assert time.monotonic() - start < 10 and proc.poll() is not None  # stopped by us, not after 20 s
    finally:
        proc.kill()
        proc.wait()
