"""longctx/passkey.py's answer rule and longctx/stats.py's percentile: the shared definitions every
result file uses."""

import pytest

from longctx.passkey import first_number
from longctx.stats import percentile


def test_the_first_whole_number_is_the_answer():
    assert first_number(" 31415. Remember") == 31415
    assert first_number("key 12 then 31415") == 12  # the first, not the longest
    assert first_number("no idea") is None


def test_percentile_interpolates_like_numpy():
    xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    # numpy.percentile(xs, [0, 50, 95, 100]) with its default (linear) method
    assert [percentile(xs, q) for q in (0, 50, 95, 100)] == pytest.approx([1.0, 3.5, 7.95, 9.0])
    assert percentile([7.0], 95) == 7.0 and percentile([], 50) is None
