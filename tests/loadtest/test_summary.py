"""Summary numbers, plots and server metrics on a small synthetic record set; runner and scenario helpers."""

import pytest

from loadtest.metrics import parse_prometheus, server_side
from loadtest.plots import write_plots
from loadtest.summary import Slo, failures, percentile, render, throughput, values


def rec(start, bucket, ttft, e2e, itl=(), tpot=None, out=4, failure=None, ok=True, tokens=None):
    return {"start": start, "user": "MixedUser", "bucket": bucket, "prompt_tokens": tokens or int(bucket),
            "failure": failure, "ttft": ttft, "itl": list(itl), "tpot": tpot, "e2e": e2e,
            "output_tokens": out, "passkey_ok": ok, "answer": ""}


RECORDS = [
    rec(0.0, "200", 0.1, 1.0, itl=(0.3, 0.3), tpot=0.3, out=4, ok=True),
    rec(1.0, "200", 0.3, 2.0, itl=(0.5,), tpot=0.5, out=4, ok=False),
    rec(2.0, "400", 0.5, 2.0, itl=(0.2, 0.4), tpot=0.5, out=4, ok=True),
    rec(3.0, "400", None, 0.1, out=0, failure="http 503", ok=False),
]


def test_percentile_matches_numpy_linear():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10
    assert percentile([0, 10], 90) == pytest.approx(9.0)
    assert percentile([], 50) is None


def test_values_skip_failures_and_flatten_itl():
    assert values(RECORDS, "ttft") == [0.1, 0.3, 0.5]
    assert values(RECORDS, "itl") == [0.3, 0.3, 0.5, 0.2, 0.4]


def test_throughput_and_goodput():
    t = throughput(RECORDS, Slo(ttft_ms=400))
    span = 4.0  # first send at 0.0, last answer at 2.0 + 2.0
    assert t["requests"] == 4 and t["requests/s"] == pytest.approx(4 / span)
    assert t["output tokens/s"] == pytest.approx(12 / span)
    assert t["goodput (share)"] == pytest.approx(2 / 4)  # ttft 0.1 and 0.3 pass; 0.5 too slow; 503 failed
    assert throughput(RECORDS, Slo(ttft_ms=400, tpot_ms=400))["goodput (share)"] == pytest.approx(1 / 4)


def test_failures_by_kind():
    assert failures(RECORDS) == {"http 503": 1, "wrong passkey": 1}


def test_render_and_plots(tmp_path):
    md = render(RECORDS, Slo(ttft_ms=400), "t", server={"mean TTFT (s)": 0.2, "preemptions": None})
    assert "| TTFT | 3 | 300.0 |" in md  # p50 of 0.1, 0.3, 0.5 s
    assert "| 200 | 200 | 2 |" in md and "50%" in md  # passkey accuracy of bucket 200
    assert "| http 503 | 1 |" in md and "mean TTFT (s)" in md
    paths = write_plots(RECORDS, tmp_path)
    assert [p.name for p in paths] == ["latency_by_length.png", "ttft_distribution.png", "timeline.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_prometheus_deltas():
    before = parse_prometheus('# HELP x\nvllm:time_to_first_token_seconds_sum{engine="0"} 1.0\n'
                              'vllm:time_to_first_token_seconds_count{engine="0"} 2\n'
                              'vllm:prefix_cache_hits_total{engine="0"} 0\nvllm:prefix_cache_queries_total 10\n')
    after = parse_prometheus('vllm:time_to_first_token_seconds_sum{engine="0"} 3.0\n'
                             'vllm:time_to_first_token_seconds_count{engine="0"} 6\n'
                             'vllm:prefix_cache_hits_total{engine="0"} 5\nvllm:prefix_cache_queries_total 30\n'
                             'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25\n')
    s = server_side(before, after)
    assert s["mean TTFT (s)"] == pytest.approx(0.5) and s["prefix-cache hit rate"] == pytest.approx(0.25)
    assert s["KV-cache use at end"] == 0.25 and s["mean queue time (s)"] is None


def trial(bucket, ok, depth=0.5, kind="spread"):
    return {"bucket": bucket, "kind": kind, "depth": depth, "passkey_ok": ok, "failure": None}


def test_summary_leads_with_accuracy_against_the_baseline():
    base = [trial("1k", True)] * 10 + [trial("8k", True, depth=0.9)] * 10 + [trial("8k", True, kind="chunk")] * 2
    load = ([rec(0.0, "1k", 0.1, 1.0, tokens=1024)] * 10
            + [rec(1.0, "8k", 0.1, 1.0, ok=i < 3, tokens=8192) | {"depth": 0.9} for i in range(10)])
    md = render(load, Slo(), "t", baseline=base)
    assert md.index("## Passkey accuracy") < md.index("## Latency")
    assert "**Effective context under load: 1k (1024 tokens)**" in md
    assert "Effective context one request at a time: 8k (8192 tokens)" in md
    assert "| 8k | spread | 10/10 = 100% [72%, 100%] | 3/10 = 30% [11%, 60%] | 0.00155 | **drop** |" in md
    assert "| 1k | spread | 10/10 = 100% [72%, 100%] | 10/10 = 100% [72%, 100%] | 1 |  |" in md
    assert "| 8k | chunk | 2/2 = 100% [34%, 100%] | - | - |  |" in md  # measured alone only
    assert "| 8k | - | - | - | - | 10/10 · 3/10 |" in md  # depth 0.9: the last bin


def test_summary_without_baseline_and_with_server_timing():
    load = [rec(0.0, "200", 0.1, 1.0) | {"queue": 0.02, "prefill": 0.05}, rec(1.0, "200", 0.3, 1.0, ok=False)]
    md = render(load, Slo(), "t")
    assert "**Effective context under load: below the shortest bucket**" in md  # 1/2 correct
    assert "one request at a time:" not in md and "| 200 | spread | not run | 1/2" in md
    assert "| 200 | 1 | 200.0 | 20.0 | 20.0 | 50.0 | 50.0 |" in md  # TTFT split: only the first has server timing
    assert "TTFT split" not in render(RECORDS, Slo(), "t")
