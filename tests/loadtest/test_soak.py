"""loadtest/soak.py: the sampler against a real local HTTP server (its memory from /proc, gauges from its
/metrics), the windows and the verdict on made-up runs, the soak's buckets, and the thresholds' flags."""

import json
import subprocess
import sys
import time

import pytest

from loadtest.plan import choose_buckets, soak_buckets
from loadtest.runner import RunConfig
from loadtest.server import ServerInfo
from loadtest.soak import Sampler, Thresholds, judge, section, server_pid, windows
from tests.conftest import free_port

METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
"""


def test_the_sampler_reads_the_servers_memory_and_gauges(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "metrics").write_text(METRICS)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(tmp_path / "www")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    host = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            if server_pid(host):
                break
            time.sleep(0.1)
        assert server_pid(host) == proc.pid and server_pid("http://example.com:8000") is None
        with Sampler(host, None, proc.pid, 0.2, tmp_path / "samples.jsonl") as sampler:
            time.sleep(1.0)
        rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
        assert len(rows) >= 4 and len(sampler.samples) == len(rows) + 1  # and one after the load
        for row in sampler.samples:
            assert (row["running"], row["waiting"], row["kv_cache"]) == (3.0, 1.0, 0.25)
            assert 5 < row["pss_mib"] <= row["rss_mib"] < 500 and row["processes"] == 1
    finally:
        proc.kill()
        proc.wait()


def _record(start, ttft, failure=None, ok=True, bucket="1k", itl=(0.1,)):
    return {"start": start, "e2e": 1.0, "ttft": ttft, "itl": list(itl), "failure": failure, "passkey_ok": ok,
            "bucket": bucket, "kind": "spread"}


def test_windows_cut_the_run_by_send_time():
    records = [_record(t, 0.5 + t / 100) for t in range(0, 100, 10)]  # sent at 0..90, last answer at 91
    samples = [{"t": t, "pss_mib": 100 + t, "running": t % 3} for t in range(0, 95, 5)]
    spans = windows(records, samples, 2)
    assert [(w.start_s, w.end_s) for w in spans] == [(0, 45.5), (45.5, 91)]
    assert [w.requests for w in spans] == [5, 5]
    assert spans[0].ttft_p95 == pytest.approx(0.5 + percentile_95([0, 10, 20, 30, 40]) / 100)
    assert spans[0].memory_mib == pytest.approx(100 + sum(range(0, 46, 5)) / 10)
    assert spans[1].running_max == 2 and windows([], samples, 2) == []


def percentile_95(xs):
    xs = sorted(xs)
    pos = (len(xs) - 1) * 0.95
    return xs[int(pos)] + (xs[-1] - xs[int(pos)]) * (pos - int(pos))


def test_the_verdict_and_the_thresholds_it_breaks():
    steady = [_record(t, 1.0) for t in range(0, 100, 5)]
    samples = [{"t": t, "pss_mib": 1000.0} for t in range(0, 101, 10)]
    strict = Thresholds(max_failures=0, max_memory_growth=0.1, max_p95_drift=0.2, min_accuracy=0.9,
                        no_accuracy_drop=True)
    v = judge(steady, windows(steady, samples, 4), steady, strict)
    assert v.broken == [] and v.memory_growth == 0 and v.ttft_drift == 0 and v.accuracy == 1.0

    # a leak, a slowdown, two failures and wrong answers late in the run
    leaky = [{"t": t, "pss_mib": 1000.0 + 5 * t} for t in range(0, 101, 10)]
    worse = [_record(t, 1.0 + (t >= 75), failure="http 500" if t in (80, 85) else None, ok=t < 50)
             for t in range(0, 100, 5)]
    v = judge(worse, windows(worse, leaky, 4), steady, strict)
    assert v.failures == 2 and v.memory_growth > 0.1 and v.ttft_drift == pytest.approx(1.0)
    said = " ".join(v.broken)
    for part in ("2 failed requests > --max-failures 0", "memory grew", "TTFT p95 drifted +100.0%",
                 "accuracy under load 50.0% < --min-accuracy 90%", "accuracy dropped under load"):
        assert part in said, said
    assert "ITL" not in said  # ITL did not move
    # thresholds not given are not checked; memory not sampled is named when its threshold is given
    assert judge(worse, windows(worse, [], 4), None, Thresholds()).broken == []
    assert judge(steady, windows(steady, [], 4), None, Thresholds(max_memory_growth=0.1)).broken == [
        "memory growth not measured (is the server on this machine? give --server-pid)"]
    text = "\n".join(section(worse, leaky, windows(worse, leaky, 4), v, strict))
    assert "the largest swing of any window against the first: TTFT +100.0%, ITL +0.0%" in text
    assert "**Thresholds: broken**" in text and "| 0-24 | 5 | 0 |" in text and "(http 500 2)" in text


def test_soak_buckets_run_from_256_tokens_to_the_limit():
    assert soak_buckets(8160) == ["256", "512", "1k", "2k", "4k", "8160"]
    assert soak_buckets(480) == ["256", "480"] and soak_buckets(None)[-1] == "8192"
    assert choose_buckets(None, ServerInfo("m", 8192), 32, False, soak=True) == soak_buckets(8160)
    assert choose_buckets(["300"], ServerInfo("m", 8192), 32, False, soak=True) == ["300"]


def test_threshold_flags(tmp_path):
    from loadtest.__main__ import parse_args

    cfg = parse_args(["--host", "http://h:1", "--out", str(tmp_path), "--scenario", "soak",
                                      "--max-failures", "0", "--max-memory-growth", "0.1", "--max-p95-drift", "0.2",
                                      "--min-accuracy", "0.9", "--fail-on-accuracy-drop", "--sample-every", "5"])
    assert cfg.thresholds == Thresholds(0, 0.1, 0.2, 0.9, True) and cfg.sample_every == 5.0
    assert not parse_args(["--host", "h", "--out", str(tmp_path)]).thresholds.given()
    for bad, says in ((dict(min_accuracy=1.5), "at most 1"), (dict(max_memory_growth=-0.1), "at least 0"),
                      (dict(windows=0), "--windows"), (dict(server_pid=2**22 + 1), "no such process")):
        with pytest.raises(ValueError, match=says):
            RunConfig(host="h", out=tmp_path, **bad)
