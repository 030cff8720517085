"""Processes on Linux, read from /proc: a process tree, whether a process still runs, who listens on a
port, and how much memory a tree holds. Elsewhere these find nothing (empty, None) rather than fail."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def _stat(pid: int | str) -> list[str]:
    """Fields of /proc/PID/stat after the command name (which may hold spaces): state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid`, with its name (its /proc/PID/comm, 15 characters at most)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int(_stat(entry.name)[1])
            names[int(entry.name)] = (entry / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found[child] = names.get(child, "?")
        todo += children.get(child, [])
    return found


def running(pid: int) -> bool:
    """Whether `pid` is a live process. A killed child stays in /proc as a zombie (state Z) until its parent
    reaps it, and for good when the parent exited first and PID 1 does not reap (as in many containers):
    that counts as dead."""
    try:
        return _stat(pid)[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def listening_pid(port: int) -> int | None:
    """The process listening on local TCP `port` (IPv4 or IPv6), None when none is visible to us.

    Where several hold the socket (a server that forked after binding), the topmost of them."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl local_address rem_address st ... inode (field 9)
            if len(fields) > 9 and fields[3] == LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                sockets.add(f"socket:[{fields[9]}]")
    holders = []
    for entry in Path("/proc").glob("[0-9]*") if sockets else ():
        try:
            if any(os.readlink(fd) in sockets for fd in (entry / "fd").iterdir()):
                holders.append(int(entry.name))
        except OSError:  # another user's process, or one that just exited
            continue
    for pid in sorted(holders):
        try:
            if int(_stat(pid)[1]) not in holders:
                return pid
        except (OSError, IndexError, ValueError):
            continue
    return None


@dataclass(frozen=True)
class TreeMemory:
    """Memory of a process and everything below it, in bytes."""

    pss: int
    """Proportional set size summed: shared pages split among their sharers, so the sum counts each once
    (RSS summed over a tree counts shared libraries and shared memory once per process)."""
    rss: int
    """Resident set size summed (overcounts what the processes share)."""
    processes: int


def _kib(path: Path, key: str) -> int | None:
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def tree_memory(pid: int) -> TreeMemory | None:
    """PSS and RSS of `pid` and its descendants; None when `pid` is gone or unreadable."""
    pss = rss = count = 0
    for p in [pid, *descendants(pid)]:
        try:
            r = _kib(Path(f"/proc/{p}/status"), "VmRSS")
            s = _kib(Path(f"/proc/{p}/smaps_rollup"), "Pss")
        except (OSError, ValueError):
            if p == pid:
                return None
            continue  # a child that exited between the listing and the read
        rss, pss, count = rss + (r or 0), pss + (s if s is not None else r or 0), count + 1
    return TreeMemory(pss=pss, rss=rss, processes=count)


def terminate(proc: subprocess.Popen, grace: float = 60.0) -> int:
    """SIGTERM a child, SIGKILL it if it has not exited after `grace` seconds; its exit code."""
    proc.terminate()
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
