"""The exact sign test's binomial tail and the median's interval: known answers."""

import math
from fractions import Fraction

import pytest

from transforms.sign_test import binomial_tail, median_interval


def _exact_tail(successes: int, trials: int) -> Fraction:
    """P(X >= successes), X ~ Binomial(trials, 1/2), as an exact fraction."""
    return _exact_tails(trials)[max(successes, 0)]


def _exact_tails(trials: int) -> list[Fraction]:
    """P(X >= k) for k = 0 .. trials + 1, exact."""
    tails, hits = [Fraction(0)], 0
    for i in range(trials, -1, -1):
        hits += math.comb(trials, i)
        tails.append(Fraction(hits, 2**trials))
    return tails[::-1]


@pytest.mark.parametrize(
    "successes, trials, p",
    [
        (8, 8, 1 / 256),  # every one of 8: one chance in 2 ** 8
        (7, 8, 9 / 256),  # 1 + 8 ways of 7 or more
        (6, 8, 37 / 256),  # 1 + 8 + 28
        (4, 8, 163 / 256),  # half: above 1/2, the middle term counted
        (5, 5, 1 / 32),  # the fewest rows all winning under 0.05
        (4, 4, 1 / 16),  # 4 of 4 is not (the report's 4-row runs)
        (2, 2, 1 / 4),
        (0, 8, 1.0),
        (0, 0, 1.0),  # no trial: nothing shown
        (9, 8, 0.0),
    ],
)
def test_binomial_tail_known_answers(successes, trials, p):
    assert binomial_tail(successes, trials) == p


def test_binomial_tail_is_exact_up_to_a_thousand_trials():
    for trials in (*range(1, 41), 999, 1000):
        for successes, exact in enumerate(_exact_tails(trials)):
            assert binomial_tail(successes, trials) == float(exact), (successes, trials)


@pytest.mark.parametrize("trials", [1001, 2500])
def test_binomial_tail_of_more_trials_is_within_1e_10_of_the_exact_sum(trials):
    # Beyond 1000 trials the tail is summed in floats from math.lgamma (math.comb of a
    # million trials takes seconds): every tail down to float64's range, both sides.
    tails = _exact_tails(trials)
    for successes in range(0, trials + 1, 7):
        exact = float(tails[successes])
        got = binomial_tail(successes, trials)
        if exact > 1e-300:
            assert got == pytest.approx(exact, rel=1e-10, abs=0), successes
        else:
            assert got < 1e-290, successes


def test_binomial_tail_of_a_million_trials_matches_the_normal_approximation():
    # 500,800 of a million: 1.6 standard deviations (500) above the middle, continuity-
    # corrected normal tail 0.0548; the exact tail differs from it by well under 1e-3.
    normal = 0.5 * math.erfc((500_800 - 0.5 - 500_000) / 500 / math.sqrt(2))
    assert binomial_tail(500_800, 1_000_000) == pytest.approx(normal, abs=1e-4)


def test_binomial_tail_refuses_a_negative_number_of_trials():
    with pytest.raises(ValueError, match="trials must be 0 or more, not -1"):
        binomial_tail(0, -1)


@pytest.mark.parametrize(
    "n, ranks",
    [
        (5, None),  # smallest to largest covers the median with 1 - 2/32 < 0.95
        (6, (1, 6)),  # 1 - 2/64 = 0.969
        (8, (1, 8)),  # 2nd to 7th: 1 - 2 * 9/256 = 0.93, not enough
        (20, (6, 15)),  # the tables' ranks: 1 - 2 * 21700 / 2**20 = 0.9586
        (100, (40, 61)),  # the tables' ranks at n = 100
    ],
)
def test_median_interval_takes_the_order_statistics_the_tables_give(n, ranks):
    values = [10.0 * v for v in range(n, 0, -1)]  # unsorted: sorted inside
    expected = None if ranks is None else (10.0 * ranks[0], 10.0 * ranks[1])
    assert median_interval(values) == expected
    if ranks is not None:  # its coverage, exactly
        j = ranks[0]
        assert 1 - 2 * _exact_tail(n - j + 1, n) >= Fraction(95, 100)
        assert 1 - 2 * _exact_tail(n - j, n) < Fraction(95, 100)


def test_median_interval_of_nothing_is_none():
    assert median_interval([]) is None
