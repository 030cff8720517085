"""Our server against the baseline a user would otherwise pick, side by side in one run: the same Locust
workload (scenario chat, 4 users, 4k-token prompts, 64 output tokens) against `python -m serve` (once per
chunked-prefill preset) and against `benchmarks/hf_server.py` (HF transformers `generate`, one request at a
time) on one checkpoint, both in this CPU's auto dtype (bfloat16 where native, else float32).

    python benchmarks/serving_baseline.py                         # default model, 3 minutes per server
    python benchmarks/serving_baseline.py --duration 6m --eager --profiles latency

Per server: output tokens/s and TTFT p50 under load, then the prefill rate of one request alone (a 1-token
completion of an 8160-token planned prompt, nothing else in flight) as a share of this CPU's matmul FLOP/s
in that dtype, measured here first. Writes benchmarks/results/serving.{md,json}; each Locust folder goes to
benchmarks/results/serving-<server>/."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from longctx import cli  # noqa: E402
from serve.config import ProfileName  # noqa: E402
from longctx.procs import terminate  # noqa: E402
from benchmarks.common import PORT, URL, forward_flops, machine_header, start_server, wait_ready  # noqa: E402
from benchmarks.common import check_duration, check_positive  # noqa: E402

RESULTS = Path("benchmarks/results")
PROG = "python benchmarks/serving_baseline.py"
HF_PORT = 8766
TARGETS = {"throughput": 3.0, "ttft": 0.5}  # the project's targets: at least 3x the tokens/s, at most half the TTFT p50


@dataclass(frozen=True)
class Settings:
    """The checkpoint, the Locust workload and the servers; every field is a flag."""

    model: Path | None = None
    """checkpoint (default: the embedded default model)"""
    users: int = 4
    """concurrent Locust users, as `python -m loadtest --users`"""
    duration: str = "3m"
    """Locust run time per server: 30s, 3m, 1h30m"""
    bucket: str = "4k"
    """prompt length in tokens (4k = 4096), as `python -m loadtest --buckets`"""
    max_tokens: int = 64
    """output tokens per request (exactly: --ignore-eos)"""
    per_bucket: int = 8
    """distinct prompts planned (users cycle through them)"""
    profiles: tuple[ProfileName, ...] = ("latency", "throughput")
    """`python -m serve --profile` values to run, one vLLM server each (`python -m serve` alone: latency)"""
    probe_bucket: str = "8160"
    """prompt length of the prefill probe (one request alone), e.g. 8160 (fits 8192 with 1 token)"""
    eager: bool = False
    """`python -m serve --enforce-eager` (starts faster)"""
    port_patience: float = 1800
    """seconds to wait for port 8765 to be free"""

    def __post_init__(self) -> None:
        check_positive(self, "users", "max_tokens", "per_bucket")
        check_positive(self, "port_patience", minimum=0)
        check_duration(self.duration)


def matmul_gflops(dtype: str = "float32", n: int = 2048, seconds: float = 5.0) -> float:
    """Median GFLOP/s of an n x n matmul in `dtype` on every usable core, repeated for about `seconds`."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    a, b = (torch.randn(n, n, dtype=getattr(torch, dtype)) for _ in range(2))
    a @ b  # warm-up: thread pool and allocator
    rates, end = [], time.monotonic() + seconds
    while time.monotonic() < end or len(rates) < 3:
        t = time.perf_counter()
        a @ b
        rates.append(2 * n**3 / (time.perf_counter() - t) / 1e9)
    return sorted(rates)[len(rates) // 2]


def prefill_flops(config: dict, tokens: int) -> float:
    """Matmul FLOPs of one causal prefill of `tokens` tokens (the LM head runs at one position: left out)."""
    return forward_flops(config, tokens, lm_head=False)


def digest(records: list[dict]) -> dict:
    """Completed requests, output tokens/s, TTFT and E2E p50, passkey accuracy, failures of one run."""
    from loadtest.summary import Slo, percentile, throughput, values

    ok = [r for r in records if not r["failure"]]
    return {"requests": len(ok), "output_tokens": sum(r["output_tokens"] for r in ok),
            "output_tok_s": throughput(records, Slo())["output tokens/s"],
            "ttft_p50": percentile(values(records, "ttft"), 50), "e2e_p50": percentile(values(records, "e2e"), 50),
            "passkey_ok": sum(r["passkey_ok"] for r in ok), "transport_failures": len(records) - len(ok)}


def ratios(ours: dict, base: dict) -> dict:
    """Ours over the baseline: throughput (higher is better) and TTFT p50 (lower is better)."""
    tput = ours["output_tok_s"] / base["output_tok_s"] if base["output_tok_s"] else None
    ttft = ours["ttft_p50"] / base["ttft_p50"] if ours["ttft_p50"] and base["ttft_p50"] else None
    return {"throughput": tput, "ttft": ttft,
            "throughput_met": tput is not None and tput >= TARGETS["throughput"],
            "ttft_met": ttft is not None and ttft <= TARGETS["ttft"]}


def prefill_probe(url: str, bucket: str) -> dict:
    """Seconds for a 1-token, non-streamed completion of one planned prompt, nothing else in flight;
    a fresh cache_salt keeps vLLM's prefix cache out of it (the HF server ignores the field)."""
    import requests

    from loadtest.plan import make_plan

    plan = make_plan(url, None, "chat", [bucket], per_bucket=1, max_tokens=1, seed=1)
    prompt = plan["prompts"][0]
    body = {"model": plan["model"], "messages": [{"role": "user", "content": prompt["text"]}], "max_tokens": 1,
            "temperature": 0.0, "cache_salt": os.urandom(8).hex()}
    t = time.perf_counter()
    resp = requests.post(f"{url}/v1/chat/completions", json=body, timeout=3600)
    seconds = time.perf_counter() - t
    resp.raise_for_status()
    tokens = resp.json()["usage"]["prompt_tokens"]
    return {"prompt_tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for_port(port: int, patience_s: float) -> None:
    """Other benchmarks share port 8765; wait for theirs to end rather than measure their server."""
    end = time.monotonic() + patience_s
    while not port_free(port):
        if time.monotonic() > end:
            raise SystemExit(f"port {port} still busy after {patience_s:.0f} s: another benchmark is serving there")
        print(f"port {port} busy; waiting", flush=True)
        time.sleep(30)


def start_hf_server(model: Path, port: int, log: Path) -> tuple[subprocess.Popen, float]:
    """`benchmarks/hf_server.py` on `port`; returns the process and the seconds until /v1/models answered."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("hf_server.py")), str(model),
                             "--port", str(port)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    return proc, wait_ready(proc, f"http://127.0.0.1:{port}", log, start)


def loadtest_command(url: str, args: Settings, out: Path) -> list[str]:
    return [sys.executable, "-m", "loadtest", "--host", url, "--scenario", "chat", "--users", str(args.users),
            "--duration", args.duration, "--buckets", args.bucket, "--max-tokens", str(args.max_tokens),
            "--per-bucket", str(args.per_bucket), "--ignore-eos", "--out", str(out)]


def measure(name: str, url: str, proc: subprocess.Popen, args: Settings) -> dict:
    """The prefill probe, then the Locust run, against a server that is up; stops it afterwards.
    The probe goes first: after the run, the HF server is still busy with requests Locust dropped."""
    out = RESULTS / f"serving-{name}"
    cmd = loadtest_command(url, args, out)
    try:
        if proc.poll() is not None:
            raise SystemExit(f"{name} server died before the run")
        probe = prefill_probe(url, args.probe_bucket)
        if proc.poll() is not None:  # 8765 is shared: another benchmark's server may have answered instead
            raise SystemExit(f"{name} server exited during the probe; see its log")
        print(f"[{name}] prefill alone: {json.dumps(probe)}; running: {' '.join(cmd[1:])}", flush=True)
        load_before = os.getloadavg()
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode not in (0, 1):
            raise SystemExit(f"loadtest failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
    finally:
        terminate(proc)  # SIGKILL after 60 s: uvicorn's graceful stop waits for the HF server's dropped generations
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines() if line.strip()]
    return {"command": " ".join(cmd[1:]), "load_before": load_before, "load_after": os.getloadavg(),
            **digest(records), "probe": probe}


def main(argv: list[str] | None = None) -> int:
    return cli.run(PROG, lambda: compare(cli.parse(Settings, argv, PROG, __doc__)))


def compare(args: Settings) -> None:
    from longctx.default_model import ensure_default_model
    from longctx.home import longctx_home

    from longctx.hardware import choose_dtype

    model = (args.model or ensure_default_model()).resolve()
    dtype = choose_dtype(False).dtype  # what both servers load the model in on this machine
    gflops = matmul_gflops(dtype)
    print(f"{dtype} matmul: {gflops:.1f} GFLOP/s", flush=True)
    runs = {}
    # the baseline first: it needs no shared port, so it can run while 8765 is still taken
    hf_port = HF_PORT if port_free(HF_PORT) else PORT + 2
    proc, ready = start_hf_server(model, hf_port, Path("/tmp/longctx-bench-hf.log"))
    runs["hf-generate"] = {"startup_s": ready, **measure("hf-generate", f"http://127.0.0.1:{hf_port}", proc, args)}
    print(f"[hf-generate] {json.dumps(runs['hf-generate'])}", flush=True)
    for profile in args.profiles:
        wait_for_port(PORT, args.port_patience)
        proc, ready = start_server(model, profile, longctx_home(), args.eager, Path(f"/tmp/longctx-bench-{profile}.log"))
        name = f"vllm-{profile}"
        runs[name] = {"startup_s": ready, **measure(name, URL, proc, args)}
        print(f"[{name}] {json.dumps(runs[name])}", flush=True)
        Path("/tmp/longctx-serving-runs.json").write_text(json.dumps(runs))  # raw figures, should rendering fail
    write(runs, model, gflops, dtype, args)


def write(runs: dict, model: Path, gflops: float, dtype: str, args: Settings) -> None:
    config = json.loads((model / "config.json").read_text())
    for r in runs.values():
        p = r["probe"]
        p["gflop_s"] = prefill_flops(config, p["prompt_tokens"]) / p["seconds"] / 1e9
        p["share_of_matmul"] = p["gflop_s"] / gflops
    vs = {name: ratios(r, runs["hf-generate"]) for name, r in runs.items() if name != "hf-generate"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps({"dtype": dtype, "matmul_gflop_s": gflops, "runs": runs,
                                                      "ratios": vs, "targets": TARGETS}, indent=2))
    (RESULTS / "serving.md").write_text(render(runs, vs, model, gflops, dtype, args))
    print((RESULTS / "serving.md").read_text())


def _f(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def render(runs: dict, vs: dict, model: Path, gflops: float, dtype: str, args: Settings) -> str:
    eager = ", --enforce-eager" if args.eager else ""
    lines = [f"# Serving against the HF `generate` baseline: {model.name}", "", machine_header(), "",
             f"Locust scenario `chat`, {args.users} users, {args.bucket}-token prompts (a passkey hidden in "
             f"Shakespeare), exactly {args.max_tokens} output tokens (greedy, `--ignore-eos`: both servers "
             f"generate past the end-of-sequence token, so they are compared on equal output), "
             f"{args.duration} per server, one server at a time, both in {dtype} (this CPU's auto dtype). Ours: "
             f"`python -m serve --profile P{eager}` (vLLM, port 8765) for P in {','.join(args.profiles)}. Baseline: `benchmarks/hf_server.py` (transformers `generate`, "
             "one request at a time behind a lock, `TextIteratorStreamer`). Output tokens/s: completed "
             "requests' output tokens over the span from the first send to the last answer (loadtest's "
             "summary); requests still running when Locust stops are not counted.", "",
             "| server | start-up (s) | completed requests | output tokens | output tok/s | TTFT p50 (s) "
             "| E2E p50 (s) | passkeys right | transport failures | load avg 1 min before / after |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        lines.append(f"| {name} | {r['startup_s']:.0f} | {r['requests']} | {r['output_tokens']} | "
                     f"{_f(r['output_tok_s'], '.3f')} | {_f(r['ttft_p50'])} | {_f(r['e2e_p50'])} | "
                     f"{r['passkey_ok']} / {r['requests']} | {r['transport_failures']} | "
                     f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f} |")
    lines.append("")
    for name, v in vs.items():
        lines += [f"- {name}: throughput against HF **{_f(v['throughput'])}x** (target at least "
                  f"{TARGETS['throughput']:g}x: {'met' if v['throughput_met'] else 'not met'}); TTFT p50 against HF "
                  f"**{_f(v['ttft'])}x** (target at most {TARGETS['ttft']:g}x: {'met' if v['ttft_met'] else 'not met'})"]
    lines += ["", f"Prefill alone: one 1-token completion of a {args.probe_bucket}-token prompt before the load run, "
              f"nothing else in flight. FLOPs counted as 2 per weight per token plus causal attention; this CPU's "
              f"{dtype} matmul (2048x2048, all cores, median, measured in this run): **{gflops:.1f} GFLOP/s** "
              f"(target: prefill at least 50% of it).", "",
              "| server | prompt tokens | seconds | prompt tok/s | GFLOP/s | share of matmul |", "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        p = r["probe"]
        lines.append(f"| {name} | {p['prompt_tokens']} | {p['seconds']:.1f} | {p['tok_s']:.1f} | "
                     f"{p['gflop_s']:.1f} | {p['share_of_matmul']:.0%} |")
    lines += ["", "Commands (Locust results, summary.md and plots in benchmarks/results/serving-<server>/):", ""]
    lines += [f"- {name}: `python {r['command']}`" for name, r in runs.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
