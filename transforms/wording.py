"""Words the job's log lines, plots and report share."""

from __future__ import annotations

import decimal
import math
import shlex
import sys
import unicodedata
from collections.abc import Callable, Iterable

__all__ = [
    "count",
    "infinite",
    "percent",
    "printable",
    "probability",
    "score",
    "shell_command",
    "shell_word",
    "shortened",
    "wrapped",
]

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


def score(value: float) -> str:
    """A model's output (`target_score`) as the captions and the end-of-run table show
    a model of one output's rows, which have no class probability: '0.731'."""
    return f"{float(value):.3g}"


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


def _unprintable(char: str) -> bool:
    return unicodedata.category(char) in _UNPRINTABLE


def _shown(char: str) -> str:
    """One character as `printable` shows it: its Python escape where unprintable."""
    return repr(char)[1:-1] if _unprintable(char) else char


def printable(text: str, lines: bool = False) -> str:
    """`text` with its control and format characters as Python escapes ('a\\nb.png',
    'x\\x1b[2J', 'x\\u202egnp.exe'): a file name holding a newline, a terminal escape
    or a right-to-left override is shown on one line, as written in it, and cannot
    move or clear the terminal it is printed to, nor reorder what it shows. `lines`:
    a text of several lines (a log message), whose line breaks and tabs are kept."""
    if text.isprintable():  # the common case, at C speed
        return text
    kept = "\n\t" if lines else ""
    return "".join(c if c in kept else _shown(c) for c in text)


def shortened(text: str, width: int, keep: str = "start", size: Callable[[str], int] = len) -> str:
    """`text` as `printable` shows it, at most `width` long (in characters, or as `size`
    measures a piece of it: a terminal's columns), cut with an ellipsis where longer,
    never inside an escape: 'x\\u202egnp' is cut to 'x\\u202e…' or 'x…', not
    'x\\u20…'. `keep`: its "start" (a caption), its "end" (an image id, its file name
    last) or "both", cut in its middle (the summary's table)."""
    pieces = [_shown(c) for c in text]
    if sum(map(size, pieces)) <= width:
        return "".join(pieces)
    room = width - size("…")
    if keep == "start":
        return "".join(pieces[: _fitting(pieces, room, size)]) + "…"
    if keep == "end":
        return "…" + "".join(pieces[len(pieces) - _fitting(pieces[::-1], room, size) :])
    head = pieces[: _fitting(pieces, room // 2, size)]
    rest = pieces[len(head) :]
    tail = rest[len(rest) - _fitting(rest[::-1], room - sum(map(size, head)), size) :]
    return "".join(head) + "…" + "".join(tail)


def _fitting(pieces: list[str], room: int, size: Callable[[str], int]) -> int:
    """How many of `pieces`, from the first, take at most `room` together."""
    used = 0
    for i, piece in enumerate(pieces):
        used += size(piece)
        if used > room:
            return i
    return len(pieces)


def wrapped(text: str, width: int) -> list[str]:
    """`text`, one line, as `printable` shows it, in lines of at most `width`
    characters broken at its spaces, as `textwrap` breaks them, but for a word longer
    than a line (which fills the line it starts on), cut on whole escapes ('x…x\\u202e'
    then 'gnp', not 'x…x\\u2' then '02egnp', as `textwrap` cut it). An escape longer
    than a line is a line."""
    lines: list[str] = []
    line = ""
    for word in text.expandtabs().split(" "):
        pieces = [_shown(c) for c in word]
        shown = "".join(pieces)
        if line and (not shown or len(line) + 1 + len(shown) <= width):
            line += " " + shown  # a run of spaces kept, but at a line's end
            continue
        if line:  # a long word starts on the line, after a space; another on the next
            line = (
                line + " " if len(shown) > width and len(line) + 1 < width else _ended(lines, line)
            )
        while len(line) + len(shown) > width:
            fit = _fitting(pieces, width - len(line), len) or (0 if line else 1)
            _ended(lines, line + "".join(pieces[:fit]))
            line, pieces = "", pieces[fit:]
            shown = "".join(pieces)
        line += shown
    _ended(lines, line)
    return lines


def _ended(lines: list[str], line: str) -> str:
    """Adds `line` to `lines` without the spaces it ends in (before a word that did
    not fit, or the text's last); ''."""
    lines.append(line.rstrip(" "))
    return ""


# ANSI-C quoting's escapes of the characters Python writes so, and of its own two.
_ANSI_C = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", "'": "\\'"}


def shell_word(text: str, encoding: str | None = None) -> str:
    """`text` as one word of a command to paste into a shell: as `shlex.quote` gives
    it, or, where it holds a character `printable` escapes, in ANSI-C quotes (bash,
    zsh, ksh; POSIX sh since 2024): `$'x\\xe2\\x80\\xaegnp.exe'` is shown on one line,
    with nothing a terminal obeys, and pasted, is the name as it is. Such a character
    is written as the bytes the name holds (UTF-8; an undecodable byte, which Python
    holds as a lone surrogate, as that byte), not as `\\u202e`: bash reads `\\u` in
    its locale's character set, and in the C locale kept the six characters.

    So is a character the command's `encoding` cannot write (by default the terminal's,
    `_terminal_encodings`): on an ASCII stdout, Python writes `café` as `caf\\xe9`,
    which inside shell quotes names another folder; `$'caf\\xc3\\xa9'` names it."""
    unwritable = _unwritable(encoding)
    plain = text.isascii() and text.isprintable()  # the common case, at C speed
    if plain or not any(_as_bytes(c, unwritable) for c in text):
        return shlex.quote(text)
    return "$'" + "".join(_ansi_c(c, unwritable) for c in text) + "'"


def _terminal_encodings() -> list[str]:
    """The character sets of the streams the job prints to, stdout (its summary) and
    stderr (its error lines): a command either cannot write is written in bytes."""
    streams = (sys.stdout, sys.stderr)  # None without one (`>&-`)
    return [stream.encoding for stream in streams if getattr(stream, "encoding", None)]


def _unwritable(encoding: str | None) -> Callable[[str], bool]:
    """Whether a character is one that `encoding` (or the terminal's) cannot write."""
    encodings = [encoding] if encoding else _terminal_encodings()

    def unwritable(char: str) -> bool:
        try:
            for name in encodings:
                char.encode(name)
        except UnicodeEncodeError:
            return True
        return False

    return unwritable


def _as_bytes(char: str, unwritable: Callable[[str], bool]) -> bool:
    """Whether `shell_word` writes `char` as the bytes it is made of."""
    return _unprintable(char) or (not char.isascii() and unwritable(char))


def _ansi_c(char: str, unwritable: Callable[[str], bool]) -> str:
    if char in _ANSI_C:
        return _ANSI_C[char]
    if not _as_bytes(char, unwritable):
        return char
    try:
        data = char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no file name holds
        data = char.encode("utf-8", "surrogatepass")
    return "".join(f"\\x{byte:02x}" for byte in data)


def shell_command(words: Iterable[str], encoding: str | None = None) -> str:
    """`words` as a command line to paste (`shell_word` each, for `encoding`)."""
    return " ".join(shell_word(str(word), encoding) for word in words)
