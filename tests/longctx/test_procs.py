"""longctx/procs.py against real processes: a tree found with its names, zombies counted as dead, the
process behind a listening port, and the memory of a tree (a child's allocation shows in the sum)."""

import os
import signal
import subprocess
import sys
import time

from longctx.procs import descendants, listening_pid, running, tree_memory
from tests.conftest import free_port


def _wait(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_descendants_are_found_with_their_names():
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        found = _wait(lambda: descendants(proc.pid))
        assert len(found) == 1 and all(name.startswith("python") for name in found.values())
    finally:
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_a_zombie_is_not_running():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    assert running(os.getpid())
    _wait(lambda: not running(proc.pid))  # exited, not yet reaped: /proc still has it
    assert os.path.exists(f"/proc/{proc.pid}")
    proc.wait()
    assert not running(proc.pid) and not running(2**22 + 1)


def test_the_process_listening_on_a_port_is_found():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait(lambda: listening_pid(port)) == proc.pid
        assert listening_pid(free_port()) is None
    finally:
        proc.kill()
        proc.wait()


def test_tree_memory_counts_the_children():
    """A child that holds 300 MiB raises the tree's PSS and RSS by about that; the parent's own is far less."""
    child = "import time; x = b'x' * (300 * 2**20); time.sleep(30)"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        mem = _wait(lambda: (m := tree_memory(proc.pid)) and m.processes == 2 and m.rss > 300 * 2**20 and m)
        kid = next(iter(descendants(proc.pid)))
        alone = tree_memory(kid)
        assert 300 * 2**20 < alone.pss <= alone.rss < 400 * 2**20
        assert mem.pss - alone.pss < 100 * 2**20  # the parent: an interpreter, not another 300 MiB
        assert mem.processes == 2 and alone.processes == 1
    finally:
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
    assert tree_memory(proc.pid) is None


def test_terminate_kills_what_ignores_sigterm():
    from longctx.procs import terminate

    polite = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    assert terminate(polite, grace=10) == -signal.SIGTERM
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
                                 "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    stubborn.stdout.readline()  # its handler is in place
    start = time.monotonic()
    assert terminate(stubborn, grace=1) == -signal.SIGKILL and time.monotonic() - start < 10
