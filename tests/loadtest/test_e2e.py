"""End to end: `python -m loadtest` against the real tiny vLLM server (random weights: answers are
garbage, so wrong passkeys are expected; the transport must be clean). The server sends vLLM's
per-request metrics (`python -m serve --per-request-metrics`), so the summary splits TTFT."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def loadtest(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadtest", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_headless_run_writes_results(tiny_server, tmp_path):
    out = tmp_path / "run"
    done = loadtest("--host", tiny_server.base_url, "--api-key", tiny_server.api_key, "--scenario", "chat",
                    "--users", "2", "--duration", "20s", "--buckets", "300,450", "--per-bucket", "4",
                    "--out", str(out), "--slo-ttft-ms", "2000", "--chunk-tokens", "64", "--original-context", "128")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("locust_stats.csv", "locust_failures.csv", "locust_stats_history.csv", "locust.html",
                 "summary.md", "latency_by_length.png", "ttft_distribution.png", "timeline.png"):
        assert (out / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) >= 4
    assert not [r["failure"] for r in records if r["failure"]], (out / "summary.md").read_text()
    assert {r["prompt_tokens"] for r in records} <= {300, 450}
    stats = {(row["Type"], row["Name"]): row for row in csv.DictReader((out / "locust_stats.csv").open())}
    posts = [row for (kind, _), row in stats.items() if kind == "POST"]
    # Requests that finish while Locust shuts down are recorded after its final CSV was written (a fast
    # server finishes several in that window): Locust counts most, never more than were recorded.
    counted = sum(int(r["Request Count"]) for r in posts)
    assert 0 < counted <= len(records) and len(records) - counted <= max(2, len(records) // 10)
    assert all(int(r["Failure Count"]) == 0 for r in posts)  # no transport failures
    assert ("TTFT", "ttft@300") in stats and ("PASSKEY", "passkey@450") in stats
    summary = (out / "summary.md").read_text()
    assert "| TTFT |" in summary and "passkey accuracy" in summary and "mean TTFT (s)" in summary
    # how the run was started, the API key hidden
    assert "- command: `python -m loadtest --host" in summary and "--api-key '***'" in summary
    assert tiny_server.api_key not in summary
    # the baseline ran first, one request per planned prompt, and leads the summary beside the load
    plan = json.loads((out / "plan.json").read_text())
    baseline = [json.loads(line) for line in (out / "baseline.jsonl").read_text().splitlines()]
    assert len(baseline) == len(plan["prompts"]) and not [b for b in baseline if b["failure"]]
    assert {(p["bucket"], p["kind"]) for p in plan["prompts"]} == {
        (b, kind) for b in ("300", "450") for kind in ("spread", "chunk", "past-original")}
    assert summary.startswith("# chat") and summary.index("Effective context under load") < summary.index("| TTFT |")
    assert "Effective context one request at a time" in summary and "| 450 | past-original |" in summary
    assert {r["kind"] for r in records} <= {"spread", "chunk", "past-original"}
    assert "TTFT split by the server" in summary and any(r["queue"] is not None for r in records)


@pytest.mark.slow
def test_no_baseline(tiny_server, tmp_path):
    out = tmp_path / "run"
    done = loadtest("--host", tiny_server.base_url, "--api-key", tiny_server.api_key, "--scenario", "completions",
                    "--users", "1", "--duration", "5s", "--buckets", "300", "--per-bucket", "2", "--out", str(out),
                    "--no-baseline")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = (out / "summary.md").read_text()
    assert not (out / "baseline.jsonl").exists() and "| 300 | spread | not run |" in summary


@pytest.mark.slow
@pytest.mark.parametrize("args, says", [
    (["--api-key", "wrong-key"], "rejected the API key"),
    (["--buckets", "1k"], "exceeds the server's max_model_len"),
])
def test_bad_input_stops_before_the_run(tiny_server, tmp_path, args, says):
    done = loadtest("--host", tiny_server.base_url, "--api-key", tiny_server.api_key, "--out", str(tmp_path / "r"),
                    "--duration", "5s", *args, timeout=60)
    assert done.returncode == 2 and says in done.stdout
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_soak_samples_the_server_and_exits_3_on_a_broken_threshold(tiny_server, tmp_path):
    """The tiny server's random weights retrieve no passkey, so --min-accuracy 0.5 is broken for sure; the
    run is otherwise clean, so --max-failures 0 is met. The sampler finds the server from the port."""
    out = tmp_path / "soak"
    done = loadtest("--host", tiny_server.base_url, "--api-key", tiny_server.api_key, "--scenario", "soak",
                    "--users", "2", "--duration", "15s", "--per-bucket", "2", "--sample-every", "2", "--windows", "2",
                    "--min-accuracy", "0.5", "--max-failures", "0", "--out", str(out))
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    broken = [line for line in done.stdout.splitlines() if "threshold broken" in line]
    assert len(broken) == 1 and "passkey accuracy under load 0.0% < --min-accuracy 50%" in broken[0]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["buckets"][0] == "256" and len(plan["buckets"]) == 2  # 256 tokens, then the limit
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) >= 5
    for s in samples:  # vLLM's API server and engine core at least, with the model loaded
        assert s["processes"] >= 2 and 100 < s["pss_mib"] <= s["rss_mib"] and "running" in s and "waiting" in s
    summary = (out / "summary.md").read_text()
    assert "## Over time" in summary and "**Thresholds: broken**" in summary and "memory growth" in summary
    assert (out / "over_time.png").stat().st_size > 0
