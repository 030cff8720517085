"""benchmarks/efficiency.py: the pure pieces (run order, ratios, FLOP bound)."""

import pytest

from benchmarks.efficiency import compare, per_token_growth, schedule


def test_schedule_alternates_which_attention_runs_first():
    assert schedule([512, 1024, 2048]) == [("s2", 512), ("full", 512), ("full", 1024), ("s2", 1024),
                                           ("s2", 2048), ("full", 2048)]


def test_ratios_and_growth():
    def row(attention, length, seconds, peak):
        return {"attention": attention, "length": length, "step_s": seconds, "peak_rss_gib": peak,
                "step_memory_gib": peak - 1}

    table = compare([row("s2", 2048, 1.0, 2.0), row("full", 2048, 2.0, 4.0),
                     row("full", 4096, 5.0, 9.0), row("s2", 4096, 2.4, 3.0)])
    assert [r["length"] for r in table] == [2048, 4096]
    assert table[0]["time_ratio"] == 0.5 and table[0]["memory_ratio"] == 0.5
    assert table[0]["step_memory_ratio"] == pytest.approx(1 / 3)
    assert per_token_growth(table) == pytest.approx(1.2)
    assert per_token_growth(table[:1]) is None


def test_flop_bound_falls_with_length_towards_the_group_ratio():
    from benchmarks.efficiency import LLAMA2_7B, flop_bound

    bounds = [flop_bound(LLAMA2_7B, n) for n in (2048, 8192, 65536, 10**9)]
    assert bounds == sorted(bounds, reverse=True) and 0.25 < bounds[-1] < 0.2501
    assert flop_bound(LLAMA2_7B, 8192) == pytest.approx(0.90, abs=0.01)


def test_one_cold_step_is_reported_once():
    """--repeats 0 measures a single cold step: listing it as warm-up and again as a step read as two."""
    from benchmarks.efficiency import _steps

    cold = {"warmup_s": 95.0, "steps_s": [95.0]}
    assert _steps(cold, repeats=0) == "95"
    assert _steps({"warmup_s": 99.0, "steps_s": [95.0, 96.0]}, repeats=2) == "99 / 95 / 96"
