"""Faults under load against `python -m serve` (the default model unless --model): what a client and a
supervisor see. Three faults, each on a fresh server, results in benchmarks/results/faults.{md,json}:

  disconnect  N streaming clients hang up after their first token: the engine's running and waiting
              gauges must return to 0, and the next request must be served normally.
  burst       more concurrent long prompts than the KV cache holds: every request must end in an answer
              or a clear HTTP error (none lost, none hung), and the server must keep serving.
  kill        the engine core is killed (SIGKILL) while streams are in flight: every client must get an
              error within 30 s (never hang), and `python -m serve` must exit non-zero within 30 s with one
              line saying what died (so a supervisor restarts it).

    python benchmarks/faults.py                      # all three, about 10 min on 2 cores
    python benchmarks/faults.py --faults kill --clients 4

Plain threads and `requests`, not Locust: each fault needs to act at a precise moment of a request."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import PORT, REPO, URL, corpus_token_ids, machine_header, start_server  # noqa: E402
from benchmarks.common import check_positive  # noqa: E402
from loadtest.sse import DONE, parse_line  # noqa: E402
from longctx import cli  # noqa: E402
from longctx.home import longctx_home  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PROG = "python benchmarks/faults.py"
Fault = Literal["disconnect", "burst", "kill"]
FAULTS: tuple[str, ...] = get_args(Fault)
TIMEOUT_S = 30.0  # what "an error, never a hang" and "exits within" mean here


@dataclass
class Outcome:
    """What one client saw."""

    status: int | None = None
    tokens: int = 0
    done: bool = False
    """the stream ended with [DONE] and a finish reason"""
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Report:
    fault: str
    passed: bool
    facts: dict = field(default_factory=dict)
    clients: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------- client side


def stream(body: dict, outcome: Outcome, first_token: threading.Event | None = None, hang_up: bool = False,
           timeout: float = 600) -> None:
    """POST a streamed completion and record what came back; `hang_up` closes after the first token."""
    started = time.monotonic()
    try:
        with requests.post(f"{URL}/v1/completions", json={**body, "stream": True}, stream=True,
                           timeout=(10, timeout)) as resp:
            outcome.status = resp.status_code
            if resp.status_code != 200:
                outcome.error = f"HTTP {resp.status_code}: {resp.text[:120]}"
                return
            for line in resp.iter_lines():
                chunk = parse_line(line)  # the load tester's SSE reader
                if chunk is None:
                    continue
                if chunk == DONE:
                    outcome.done = outcome.error is None
                    break
                if "error" in chunk:
                    outcome.error = str(chunk["error"].get("message", chunk["error"]))[:120]
                    continue
                outcome.tokens += 1
                if first_token is not None:
                    first_token.set()
                if hang_up:
                    break  # leaving the `with` closes the connection mid-stream
    except requests.RequestException as e:
        outcome.error = f"{type(e).__name__}"
    finally:
        outcome.seconds = time.monotonic() - started
        if first_token is not None:
            first_token.set()


def run_clients(bodies: list[dict], **kw) -> tuple[list[Outcome], list[threading.Thread], list[threading.Event]]:
    outcomes = [Outcome() for _ in bodies]
    firsts = [threading.Event() for _ in bodies]
    threads = [threading.Thread(target=stream, args=(b, o, e), kwargs=kw, daemon=True)
               for b, o, e in zip(bodies, outcomes, firsts)]
    for t in threads:
        t.start()
    return outcomes, threads, firsts


def gauges() -> dict[str, float]:
    """vLLM's running and waiting request gauges from /metrics."""
    text = requests.get(f"{URL}/metrics", timeout=10).text
    found = {}
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:num_preemptions_total"):
        values = re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, flags=re.M)
        found[name] = sum(float(v) for v in values)
    return found


def served_normally(model: str) -> bool:
    """One short greedy request after the fault: 200 with a full answer."""
    o = Outcome()
    stream({"model": model, "prompt": "Once upon a time", "max_tokens": 8, "min_tokens": 8, "temperature": 0}, o,
           timeout=120)
    return o.status == 200 and o.done and o.tokens >= 1


# ---------------------------------------------------------------- the faults


def disconnect(model: str, prompts: list[list[int]], clients: int) -> Report:
    bodies = [{"model": model, "prompt": prompts[i % len(prompts)][:256], "max_tokens": 200, "temperature": 0}
              for i in range(clients)]
    outcomes, threads, _ = run_clients(bodies, hang_up=True)
    for t in threads:
        t.join(timeout=600)
    started, seen = time.monotonic(), []
    while time.monotonic() - started < 120:
        seen.append(gauges())
        if seen[-1]["vllm:num_requests_running"] == 0 and seen[-1]["vllm:num_requests_waiting"] == 0:
            break
        time.sleep(1)
    drained = seen[-1]["vllm:num_requests_running"] == 0 and seen[-1]["vllm:num_requests_waiting"] == 0
    after = served_normally(model)
    facts = {"clients that got a first token, then hung up": sum(o.tokens >= 1 for o in outcomes),
             "gauges back to 0": drained, "seconds until they were": round(time.monotonic() - started, 1),
             "next request served normally": after}
    return Report("disconnect", drained and after and all(o.tokens >= 1 for o in outcomes), facts,
                  [asdict(o) for o in outcomes])


def kv_cache_tokens(log: Path) -> int | None:
    """The KV cache's size in tokens, as vLLM logs it at start-up."""
    found = re.findall(r"KV cache size: ([\d,]+) tokens", log.read_text(errors="replace"))
    return int(found[-1].replace(",", "")) if found else None


def burst(model: str, prompts: list[list[int]], clients: int, prompt_tokens: int, log: Path) -> Report:
    before = gauges()
    bodies = [{"model": model, "prompt": prompts[i % len(prompts)][:prompt_tokens], "max_tokens": 32,
               "temperature": 0} for i in range(clients)]
    outcomes, threads, _ = run_clients(bodies, timeout=1800)
    most_waiting = 0.0
    while any(t.is_alive() for t in threads):
        most_waiting = max(most_waiting, gauges()["vllm:num_requests_waiting"])
        time.sleep(2)
    for t in threads:
        t.join(timeout=1900)
    hung = sum(t.is_alive() for t in threads)
    answered = sum(o.done for o in outcomes)
    clear_errors = sum(not o.done and o.error is not None for o in outcomes)
    after = served_normally(model)
    facts = {"requests": clients, "prompt tokens each": prompt_tokens,
             "KV cache (tokens, from vLLM's log)": kv_cache_tokens(log), "most requests waiting at once": most_waiting,
             "answered": answered,
             "clear errors": clear_errors, "lost or hung": clients - answered - clear_errors + hung,
             "preemptions during the burst": gauges()["vllm:num_preemptions_total"]
             - before["vllm:num_preemptions_total"],
             "slowest request (s)": round(max(o.seconds for o in outcomes), 1), "next request served normally": after}
    return Report("burst", facts["lost or hung"] == 0 and after, facts, [asdict(o) for o in outcomes])


def kill(model: str, prompts: list[list[int]], clients: int, server, log: Path) -> Report:
    from longctx.procs import descendants
    from serve.launch import ENGINE_TITLE

    bodies = [{"model": model, "prompt": prompts[i % len(prompts)][:256], "max_tokens": 400, "min_tokens": 400,
               "temperature": 0} for i in range(clients)]
    outcomes, threads, firsts = run_clients(bodies, timeout=300)
    for e in firsts:
        e.wait(timeout=600)
    engine = next(pid for pid, name in descendants(server.pid).items() if name == ENGINE_TITLE)
    os.kill(engine, signal.SIGKILL)
    killed = time.monotonic()
    for t in threads:
        t.join(timeout=max(0.1, killed + TIMEOUT_S - time.monotonic()))
    clients_ended = time.monotonic() - killed
    try:
        code = server.wait(timeout=max(0.1, killed + TIMEOUT_S - time.monotonic()))
    except Exception:  # noqa: BLE001 - a launcher still running after 30 s is the failure we report
        code = None
    exited = time.monotonic() - killed
    last = log.read_text(errors="replace").strip().splitlines()[-1] if log.exists() else ""
    hung = sum(t.is_alive() for t in threads)
    facts = {"streams in flight": clients, "clients that got an error": sum(o.error is not None or not o.done
                                                                             for o in outcomes),
             "clients still waiting after 30 s": hung, "seconds until every client ended": round(clients_ended, 1),
             "launcher exit code": code, "seconds until it exited": round(exited, 1), "its last line": last}
    ok = hung == 0 and code not in (None, 0) and exited < TIMEOUT_S and "engine core" in last
    return Report("kill", ok, facts, [asdict(o) for o in outcomes])


# ---------------------------------------------------------------- driver


def stop(server) -> None:
    """SIGTERM the launcher (it kills vLLM after its grace period) and wait until the port is free again,
    so the next fault's server is not answered by this one."""
    import socket

    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    for _ in range(120):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", PORT)) != 0:
                return
        time.sleep(1)
    raise SystemExit(f"port {PORT} is still answering after the server stopped: another server is running there")


def write(reports: list[Report], header: str, args: Settings, out: Path) -> None:
    """faults.{json,md}; faults not run this time keep their earlier reports (and say when they ran)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    earlier = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").exists() else {}
    ran = {r.fault for r in reports}
    kept = [Report(**r) for r in earlier.get("reports", []) if r["fault"] not in ran]
    for r in kept:
        then = {"measured in an earlier run": earlier.get("header", "").splitlines()[0].lstrip("- "),
                "server arguments then": " ".join(earlier.get("settings", {}).get("server_args", []))}
        r.facts = {**then, **r.facts} if "measured in an earlier run" not in r.facts else r.facts
    reports = sorted(kept + reports, key=lambda r: FAULTS.index(r.fault))
    out.with_suffix(".json").write_text(json.dumps({"header": header, "settings": asdict(args) | {"out": str(out)},
                                                    "reports": [asdict(r) for r in reports]}, indent=2,
                                                   default=str) + "\n")
    lines = ["# Faults under load", "", header, "",
             f"Server: `python -m serve {args.model or '(default model)'} --enforce-eager` plus "
             f"`{' '.join(args.server_args)}`, a fresh one per fault.", ""]
    for r in reports:
        lines += [f"## {r.fault}: {'passed' if r.passed else 'FAILED'}", "", "| what | measured |", "|---|---|"]
        lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in r.facts.items()] + [""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


@dataclass(frozen=True)
class Settings:
    """The faults to inject and the server they hit; every field is a flag."""

    model: Path | None = None
    """checkpoint folder (default: the embedded SmolLM2-135M-Instruct)"""
    faults: tuple[Fault, ...] = FAULTS
    """the faults to inject, in order, each on a fresh server: disconnect, burst, kill"""
    clients: int = 50
    """disconnecting clients (kill: 8 streams, burst: 12)"""
    burst_tokens: int = 3000
    """prompt tokens of each burst request"""
    server_args: tuple[str, ...] = field(default=("--max-model-len", "4096", "--kv-cache-gib", "1", "--dtype",
                                                  "float32"), metadata={"split": False})  # passed on as they are
    """extra `python -m serve` arguments; by default a 1 GiB float32 KV cache, which holds fewer tokens than the
    burst (vLLM logs its size; the report quotes it); given with no value: none"""
    out: Path = RESULTS / "faults.md"
    """the report, with its .json beside it (default: benchmarks/results/faults.md)"""

    def __post_init__(self) -> None:
        check_positive(self, "clients", "burst_tokens")


def parse(argv: list[str] | None) -> Settings:
    """longctx.cli's flags, except that --server-args may be given with no value (no extra arguments)."""
    (s,) = cli.parse_many((Settings,), argv, PROG, __doc__, may_be_empty=("server_args",))
    return s


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: inject(parse(argv), argv))


def inject(args: Settings, argv: list[str] | None) -> int:
    from longctx.default_model import ensure_default_model
    from finetune.model import load_tokenizer

    model_dir = (args.model or ensure_default_model()).resolve()
    ids = corpus_token_ids(load_tokenizer(model_dir), 20 * args.burst_tokens)
    prompts = [ids[i * args.burst_tokens:(i + 1) * args.burst_tokens] for i in range(20)]
    header = machine_header(sys.argv if argv is None else [__file__, *argv])
    reports, home = [], longctx_home()
    for fault in args.faults:
        log = Path(f"/tmp/longctx-faults-{fault}.log")
        server, ready = start_server(model_dir, "latency", home, True, log, tuple(args.server_args))
        print(f"{fault}: server ready after {ready:.0f} s on port {PORT}", flush=True)
        try:
            if fault == "disconnect":
                reports.append(disconnect(model_dir.name, prompts, args.clients))
            elif fault == "burst":
                reports.append(burst(model_dir.name, prompts, 12, args.burst_tokens, log))
            else:
                reports.append(kill(model_dir.name, prompts, 8, server, log))
        finally:
            stop(server)
        write(reports, header, args, args.out)
    return 0 if all(r.passed for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
