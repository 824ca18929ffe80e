"""Words the job's log lines, plots and report share."""

from __future__ import annotations

import decimal
import math
import unicodedata

__all__ = ["count", "infinite", "percent", "printable", "probability"]

# What a terminal must not get raw: control characters (a newline, ESC, C1's CSI),
# format characters (a right-to-left override reorders what follows it, a zero-width
# space hides in a name), line and paragraph separators, and lone surrogates.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def count(number: int, noun: str, plural: str | None = None) -> str:
    """`number` and `noun`, plural unless one: "1 image", "8 images" (`plural`, when
    not the noun and an s: "1 class", "3 classes")."""
    return f"{number} {noun}" if number == 1 else f"{number} {plural or noun + 's'}"


def classes(number: int) -> str:
    """ "1 class", "1000 classes"."""
    return count(number, "class", "classes")


def infinite(value: float) -> str | None:
    """'∞' or '−∞' for an infinite value (a float16 overflow's `attribution_error`), else None."""
    if not math.isinf(value):  # finite, or NaN (neither sign's infinity)
        return None
    return "∞" if value > 0 else "−∞"


def percent(value: float, digits: int = 1) -> str:
    """`value` as a percentage with `digits` decimals; '∞' where infinite, not 'inf%'.

    A value that is not 0 but rounds to 0 at `digits` decimals, or that rounding
    moves more than 5 % (its first digit in the last decimal place: 0.00085 % is not
    '0.001%'), keeps two significant digits ('0.000078%', not '0.000%'): an error
    that small is not none, and the worst of several such rows must be told apart;
    below 1e-6 % in powers of ten ('1.5e-15%', not fifteen zeros: an exact map's
    float rounding).
    """
    text = infinite(value) or f"{value:.{digits}%}"
    if value and math.isfinite(value) and _rounded_far(float(text[:-1]), value * 100):
        shown = f"{value * 100:.2g}"
        return f"{shown}%" if abs(value) < 1e-8 else f"{decimal.Decimal(shown):f}%"
    return text


def _rounded_far(shown: float, value: float) -> bool:
    """Whether `shown` is `value` rounded more than 5 % away from it: 0.00085 % shown
    as '0.001%' (a first digit in the last decimal place; 0 where it rounds to
    nothing), which two significant digits always keep within 5 %."""
    return abs(shown - value) > 0.05 * abs(value)


def probability(value: float, digits: int = 0) -> str:
    """A probability as a percentage with `digits` decimals ('62%'), but never rounded
    to certainty or to nothing: one decimal more where it would be (0.998 is '99.8%',
    not '100%'; 0.004 '0.4%'), and beyond that a bound ('>99.9%', '<0.1%'). Exactly 1
    and 0 are bounds too: a model's probabilities are stored as float32 (`top_k_probs`),
    in which any value above 1 - 3e-8 reads 1, so a 1 there is no certainty."""
    if math.isnan(value):
        return f"{value:%}"
    for shown in (f"{value:.{digits}%}", f"{value:.{digits + 1}%}"):
        if 0 < float(shown[:-1]) < 100:
            return shown
    step = 10.0 ** -(digits + 1)
    return f"<{step:.{digits + 1}f}%" if value < 0.5 else f">{100 - step:.{digits + 1}f}%"


def printable(text: str, lines: bool = False) -> str:
    """`text` with its control and format characters as Python escapes ('a\\nb.png',
    'x\\x1b[2J', 'x\\u202egnp.exe'): a file name holding a newline, a terminal escape
    or a right-to-left override is shown on one line, as written in it, and cannot
    move or clear the terminal it is printed to, nor reorder what it shows. `lines`:
    a text of several lines (a log message), whose line breaks and tabs are kept."""
    if text.isprintable():  # the common case, at C speed
        return text
    kept = "\n\t" if lines else ""
    return "".join(
        repr(c)[1:-1] if c not in kept and unicodedata.category(c) in _UNPRINTABLE else c
        for c in text
    )
