"""The exact one-sided sign test behind the report's "X of N rows beat their control",
and the distribution-free interval of a median that goes with it.

Under the null that a map ranks pixels no better than a random ranking, a row is at
most as likely to beat its control as to lose to it, whatever the model and image:
the count of rows that beat it is then at most a Binomial(N, 1/2) draw, and
`binomial_tail` is the chance of a count as high. Pure Python (`math`): reading a
run back imports no SciPy for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["binomial_tail", "median_interval"]

# Up to this many trials the tail is summed in integers, exactly (up to a thousand
# binomial coefficients of up to 1000 bits: about a millisecond); beyond, in floats.
_EXACT_TRIALS = 1000

# Terms below this fraction of the running sum (relative to the largest possible rest
# of the tail) are left out: far below a float64's own rounding.
_NEGLIGIBLE = 2.0**-60


def binomial_tail(successes: int, trials: int) -> float:
    """P(X >= successes) for X ~ Binomial(trials, 1/2): the one-sided p-value of a
    sign test in which `successes` of `trials` went the tested way (8 of 8: 1/256).

    Exact (correctly rounded) up to 1000 trials; beyond, summed in floating point
    from the first term, itself from `math.lgamma`: a relative error of about 1e-11
    at ten thousand trials and 1e-9 at a million (the log of a binomial coefficient
    that large is known to a few units of its last place), where `math.comb` alone
    would take seconds. No trial (0 of 0) gives 1: nothing was shown.
    """
    if trials < 0:
        raise ValueError(f"trials must be 0 or more, not {trials}.")
    if successes <= 0:
        return 1.0
    if successes > trials:
        return 0.0
    if trials <= _EXACT_TRIALS:
        total = term = math.comb(trials, successes)
        for i in range(successes, trials):  # C(n, i + 1) = C(n, i) (n - i) / (i + 1)
            term = term * (trials - i) // (i + 1)
            total += term
        return total / (1 << trials)
    if 2 * successes <= trials:  # the tail holds the middle: 1 - the other tail
        return 1.0 - binomial_tail(trials - successes + 1, trials)
    log_first = (
        math.lgamma(trials + 1)
        - math.lgamma(successes + 1)
        - math.lgamma(trials - successes + 1)
        - trials * math.log(2.0)
    )
    # Past the middle each term is the last one times (n - i) / (i + 1) < 1, and the
    # rest of the tail is below the current term over (1 - that ratio) <= n of them.
    total, term = 0.0, 1.0
    for i in range(successes, trials + 1):
        total += term
        term *= (trials - i) / (i + 1)
        if term * trials < total * _NEGLIGIBLE:
            break
    return min(1.0, math.exp(log_first + math.log(total)))


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free confidence interval of the median of independent `values`:
    the j-th smallest and j-th largest, j the largest rank whose interval covers
    the median with probability >= `level` (1 - 2 P(X < j), X ~ Binomial(n, 1/2)).
    None under 6 values at 0.95 (the widest interval, smallest to largest, covers
    it with probability 1 - 2 / 2**n, 0.9375 at 5).
    """
    ordered = sorted(float(v) for v in values)
    n, alpha = len(ordered), 1.0 - level
    if not n or 2 * binomial_tail(n, n) > alpha:  # P(X < 1) = P(X >= n)
        return None
    # The largest j with 2 P(X <= j - 1) = 2 P(X >= n - j + 1) <= alpha: by bisection.
    low, high = 1, (n + 1) // 2
    while low < high:
        j = (low + high + 1) // 2
        if 2 * binomial_tail(n - j + 1, n) <= alpha:
            low = j
        else:
            high = j - 1
    return ordered[low - 1], ordered[n - low]
