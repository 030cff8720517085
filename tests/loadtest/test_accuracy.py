"""Accuracy statistics against values worked out by hand from their definitions."""

import math

import pytest

from loadtest.accuracy import (Tally, bin_label, depth_bin, drop_p_value, dropped, effective_length, tally,
                               wilson)


def test_wilson_matches_closed_forms():
    z2 = 1.959964 ** 2
    lo, hi = wilson(Tally(0, 10))
    # at 0 successes the upper end is z²/(n+z²)
    assert lo == pytest.approx(0.0) and hi == pytest.approx(z2 / (10 + z2))
    lo, hi = wilson(Tally(10, 10))
    assert hi == pytest.approx(1.0) and lo == pytest.approx(10 / (10 + z2))
    lo, hi = wilson(Tally(8, 10))  # textbook value: [0.490, 0.943]
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)
    assert wilson(Tally(0, 0)) is None


def test_fisher_drop_matches_the_hypergeometric_tail():
    # base 10/10, load 3/10: 13 correct of 20; the only table as extreme is load=3, P = C(13,3)C(7,7)/C(20,10)
    assert drop_p_value(Tally(10, 10), Tally(3, 10)) == pytest.approx(math.comb(13, 3) / math.comb(20, 10))
    assert dropped(Tally(10, 10), Tally(3, 10))
    # base 9/10, load 8/10: P(X <= 8) with 17 correct of 20 = 1 - P(X = 9) - P(X = 10)
    p9 = math.comb(17, 9) * math.comb(3, 1) / math.comb(20, 10)
    p10 = math.comb(17, 10) * math.comb(3, 0) / math.comb(20, 10)
    assert drop_p_value(Tally(9, 10), Tally(8, 10)) == pytest.approx(1 - p9 - p10)
    assert not dropped(Tally(9, 10), Tally(8, 10))  # one answer fewer is sampling noise
    assert drop_p_value(Tally(5, 10), Tally(10, 10)) == pytest.approx(1.0)  # a rise is never a drop
    assert drop_p_value(Tally(0, 0), Tally(3, 10)) is None and not dropped(Tally(0, 0), Tally(3, 10))


def test_effective_length_is_the_last_length_before_the_first_failure():
    t = [(1024, Tally(10, 10)), (4096, Tally(9, 10)), (2048, Tally(10, 10)), (8192, Tally(8, 10))]
    assert effective_length(t) == 4096  # 8/10 = 80% < 85.6%
    assert effective_length([(1024, Tally(9, 10)), (2048, Tally(6, 10)), (4096, Tally(10, 10))]) == 1024
    assert effective_length([(1024, Tally(8, 10))]) is None
    assert effective_length([(1024, Tally(6, 7)), (2048, Tally(0, 0))]) == 1024  # 6/7 = 85.7%; no trials: skip
    assert effective_length([(1024, Tally(5, 6))]) is None  # 83.3%


def test_depth_bins_and_tally():
    assert [depth_bin(d) for d in (0.0, 0.19, 0.2, 0.99, 1.0)] == [0, 0, 1, 4, 4]
    assert [bin_label(i) for i in (0, 4)] == ["0-20%", "80-100%"]
    assert tally([{"passkey_ok": True}, {"passkey_ok": False}, {"passkey_ok": True}]) == Tally(2, 3)
