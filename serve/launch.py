"""Start vLLM's OpenAI server as a child process, wait until it answers, tell the user how to call it."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from longctx.procs import descendants, running


class LaunchError(Exception):
    """A problem the user can fix; the message is one line."""


def read_checkpoint_config(model: Path) -> dict:
    if not model.is_dir():
        raise LaunchError(f"model folder {model} does not exist")
    path = model / "config.json"
    if not path.is_file():
        raise LaunchError(f"{model} has no config.json: not a Hugging Face checkpoint folder")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise LaunchError(f"{path} is not valid JSON: {err}") from None


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise LaunchError(f"cannot listen on {host}:{port} ({err.strerror}); "
                              f"stop what uses it or pick another --port") from None


def wait_until_ready(proc: subprocess.Popen, url: str, api_key: str | None, timeout: float) -> float:
    """Poll GET {url}/models (url ends in /v1) until it answers 200; returns the seconds it took.

    Also what the tests and benchmarks wait with, for vLLM and for the HF baseline server alike."""
    start = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise LaunchError(f"the server exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{url}/models", headers=headers), timeout=5):
                return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(1.0)
    raise LaunchError(f"the server did not answer at {url} within {timeout:.0f} s")


def usage_banner(url: str, name: str, max_len: int, api_key: str | None) -> str:
    auth = f" -H 'Authorization: Bearer {api_key}'" if api_key else ""
    key = f"'{api_key}'" if api_key else "'unused'"
    body = json.dumps({"model": name, "messages": [{"role": "user", "content": "Say hello in five words."}]})
    return "\n".join([
        f"longctx: serving {name} (up to {max_len} tokens) at {url}",
        "  curl:",
        f"    curl {url}/chat/completions -H 'Content-Type: application/json'{auth} -d '{body}'",
        "  python:",
        f"    from openai import OpenAI; client = OpenAI(base_url='{url}', api_key={key})",
        f"    print(client.chat.completions.create(model='{name}', messages=[{{'role': 'user', "
        f"'content': 'Say hello in five words.'}}]).choices[0].message.content)",
        "  Ctrl-C stops the server.",
    ])


def run_server(argv: list[str], env: dict[str, str], url: str, banner: str, api_key: str | None,
               ready_timeout: float = 900.0) -> int:
    """Run vLLM until it exits or we are interrupted; forward SIGINT/SIGTERM to it."""
    Path(env["VLLM_CACHE_ROOT"]).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(argv, env={**os.environ, **env}, preexec_fn=_die_with_parent)

    stopping: list[int] = []  # the signals we forwarded: vLLM exiting after one is no failure

    def stop(signum, _frame):
        stopping.append(signum)
        proc.send_signal(signum)
        # vLLM may ignore the signal while it starts (or stall shutting down): kill it after a grace period
        timer = threading.Timer(STOP_GRACE_S, kill_tree, args=(proc,))
        timer.daemon = True  # never keeps the launcher alive once vLLM has stopped
        timer.start()

    signal.signal(signal.SIGTERM, stop)
    try:
        seconds = wait_until_ready(proc, url, api_key, ready_timeout)
        print(f"\n{banner}\n  (ready after {seconds:.0f} s)\n", flush=True)
        watch_serving(proc, stopping)
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return _reap(proc)
    except LaunchError as e:
        _reap(proc)
        raise LaunchError(f"vLLM: {e} (its log is above)") from None


STOP_GRACE_S = 30.0  # how long vLLM may take to stop after SIGTERM before it is killed with its children


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process and everything below it, if it is still running."""
    if proc.poll() is not None:
        return
    for pid in descendants(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()


ENGINE_TITLE = "VLLM::EngineCor"  # vLLM's engine-core process title, as /proc/PID/comm keeps it (15 chars)


def watch_serving(proc: subprocess.Popen, stopping: list, poll: float = 1.0, grace: float = 15.0) -> None:
    """Return when vLLM exits because we asked it to; raise LaunchError naming what died when it (or its
    engine core) stops on its own, so a supervisor sees a non-zero exit and restarts it. vLLM's API server
    may outlive a dead engine core (and then exits 0): we stop it within `grace` seconds."""
    tree = descendants(proc.pid)
    engines = [pid for pid, name in tree.items() if name == ENGINE_TITLE]
    gone = lambda: [pid for pid in engines if not running(pid)]  # noqa: E731
    while proc.poll() is None and not gone():
        time.sleep(poll)
    if stopping:
        return
    tree.update(descendants(proc.pid))
    dead = gone()  # also when the API server exited first: the engine's death is the cause to name
    if dead:
        proc.send_signal(signal.SIGTERM)
        _reap(proc, grace)
    # vLLM's helpers (multiprocessing's resource tracker) print warnings as they exit: let them finish
    # first, so that our error is the last line a user or supervisor reads
    deadline = time.monotonic() + grace
    while any(running(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    if dead:
        raise LaunchError(f"its engine core (pid {dead[0]}) died while serving, so the server was stopped; "
                          f"restart it")
    raise LaunchError(f"the server exited on its own with code {proc.returncode} while serving; restart it")


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the launcher dies, even by SIGKILL, so no vLLM is left orphaned."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _reap(proc: subprocess.Popen, grace: float = 30.0) -> int:
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
    except KeyboardInterrupt:
        proc.kill()
        return proc.wait()
