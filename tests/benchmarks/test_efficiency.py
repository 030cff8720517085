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


def test_flop_growth_per_token_and_the_bound_share_one_flop_model():
    """SmolLM2-135M's shape: per token, the weights cost the same at any length and the scores grow with N,
    so full attention's FLOPs per token double by 16k from 4k and S²'s (a quarter of the scores) grow less."""
    from benchmarks.common import forward_flops
    from benchmarks.efficiency import flop_bound, flop_growth

    smol = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
            "intermediate_size": 1536, "vocab_size": 49152}
    weights = 2 * 576 * 9 * 64 + 2 * 576 * 3 * 64 + 3 * 576 * 1536  # per layer: q, o; k, v; gate, up, down
    per_token = lambda n, r: 2 * (30 * (weights + n * 9 * 64 * r) + 576 * 49152)  # noqa: E731
    assert forward_flops(smol, 4096) == pytest.approx(4096 * per_token(4096, 1.0))
    assert flop_growth(smol, 4096, 16384) == pytest.approx(per_token(16384, 1) / per_token(4096, 1))
    assert flop_growth(smol, 4096, 16384) == pytest.approx(2.03, abs=0.01)
    assert flop_growth(smol, 4096, 16384, 0.25) == pytest.approx(1.35, abs=0.01)
    assert flop_bound(smol, 8192) == pytest.approx(per_token(8192, 0.25) / per_token(8192, 1.0))
