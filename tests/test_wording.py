"""Words the log lines, plots and report share (`transforms.wording`), known answers.

The percent and probability forms the report and plots show are also tested where
they are shown (tests/test_cli.py, tests/test_plots.py).
"""

import os
import shlex
import unicodedata

import pytest

from tests.conftest import bash_words
from transforms.wording import (
    classes,
    count,
    percent,
    printable,
    shell_command,
    shell_word,
    shortened,
    wrapped,
)


def test_a_count_is_singular_for_one_alone():
    # "Resuming: 0 images ... skipped", never "0 image".
    assert [count(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]
    assert [classes(n) for n in (0, 1, 1000)] == ["0 classes", "1 class", "1000 classes"]


def test_a_tiny_negative_percent_is_shown_as_its_positive_one_is():
    # Two significant digits, as written down to 1e-6 %, in powers of ten below.
    for value, shown in ((7.8e-7, "0.000078%"), (7.8e-9, "7.8e-07%"), (1.5e-17, "1.5e-15%")):
        assert (percent(value), percent(-value)) == (shown, "-" + shown)


def test_a_percent_rounded_far_from_its_value_keeps_two_significant_digits():
    # 0.0085 % to 3 decimals is '0.009%' and 0.00085 % '0.001%': rounding moved them 6 %
    # and 18 %. Where it moves a value more than 5 %, two significant digits (within 5 %).
    assert [percent(v, 3) for v in (8.5e-6, 7.6e-6, 8.5e-5, 5e-5)] == [
        "0.00085%",
        "0.00076%",
        "0.0085%",
        "0.005%",  # exact at 3 decimals: as it was
    ]
    assert [percent(v, 1) for v in (0.0006, 0.0125, 0.05, 0.0104)] == [
        "0.06%",
        "1.2%",  # 1.25 % to one decimal: 4 % off, kept
        "5.0%",
        "1.0%",
    ]


def test_printable_escapes_control_characters_and_keeps_a_messages_lines():
    # A name shows on one line, as written; a log message keeps its line breaks and
    # tabs, its other control characters (a terminal escape, C1's CSI) escaped.
    text = "a\nb\tc\x1b[2J\x9b.png"
    assert printable(text) == "a\\nb\\tc\\x1b[2J\\x9b.png"
    assert printable(text, lines=True) == "a\nb\tc\\x1b[2J\\x9b.png"


def test_printable_escapes_format_characters_and_line_separators_as_control_ones():
    # A right-to-left override (U+202E) shows 'cod.exe\u202egnp.png' as 'cod.exepng.png'
    # reversed on a terminal, a zero-width space (U+200B) makes two names look alike and
    # a line separator (U+2028) breaks a line on some terminals: each is written out as
    # Python writes it, in a name and in a message of several lines alike. Letters of
    # any script, and spaces, stay as they are.
    text = "a\u202egnp.exe\u200b\u2028\ufeff\u00ad.png"
    escaped = "a\\u202egnp.exe\\u200b\\u2028\\ufeff\\xad.png"
    assert printable(text) == escaped
    assert printable(f"{text}\n\tb", lines=True) == f"{escaped}\n\tb"
    assert printable("写真 café\u00a0x.png") == "写真 café\u00a0x.png"


#: Names a printed command must paste as they are: a right-to-left override, a
#: newline, a terminal escape, the shell's own quote and backslash, an undecodable
#: byte (which Python holds as the lone surrogate U+DCE9), a zero-width space.
_SHELL_NAMES = (
    "out/run\u202egnp.exe",
    "a\nb\tc\x1b[2J",
    "it's a \\\\ back\\slash\r",
    os.fsdecode(b"caf\xe9/\xe5\x86\x99\xe7\x9c\x9f\xe2\x80\x8b"),
)


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_a_command_to_paste_shows_no_control_character_and_pastes_the_name_as_it_is(locale):
    # Escaped as the terminal shows names ('out/run\u202egnp.exe' in shlex's quotes),
    # a pasted command named another folder; raw, U+202E reordered the line and a
    # newline split it. In ANSI-C quotes, their bytes as \xHH (`\u202e` there is read
    # in the shell's locale: bash in the C locale kept the six characters).
    command = shell_command(["--input", *_SHELL_NAMES])
    assert command.isprintable() and all(c not in command for c in "\u202e\u200b"), command
    assert bash_words(command, locale) == [b"--input", *map(os.fsencode, _SHELL_NAMES)]
    assert shell_word(_SHELL_NAMES[0]) == "$'out/run\\xe2\\x80\\xaegnp.exe'"
    # A printable name is quoted as before: 'a b', and none where it needs none.
    for name in ("out/sample", "a b.png", "写真 café\u00a0.png", "$HOME"):
        assert shell_word(name) == shlex.quote(name)


def test_a_command_to_paste_writes_what_its_stream_cannot_as_bytes():
    # On an ASCII stdout, Python wrote 'café' in a printed command as 'caf\xe9' (its
    # backslashreplace), which, pasted inside shlex's quotes, named another folder.
    # A character the command's encoding cannot write is written as its bytes.
    name = "café/写真→"
    assert (
        shell_word(name, "ascii")
        == "$'caf\\xc3\\xa9/\\xe5\\x86\\x99\\xe7\\x9c\\x9f\\xe2\\x86\\x92'"
    )
    assert shell_word(name, "latin-1") == "$'café/\\xe5\\x86\\x99\\xe7\\x9c\\x9f\\xe2\\x86\\x92'"
    assert shell_word(name, "utf-8") == shlex.quote(name)  # a page's: as it is
    command = shell_command(["--input", name, "a b"], "ascii")
    assert command.isascii() and bash_words(command, "C") == [b"--input", os.fsencode(name), b"a b"]


def test_a_wrapped_line_is_broken_at_spaces_and_on_whole_escapes():
    # As textwrap breaks lines (a long word fills the line it starts on), but whole
    # escapes: textwrap's 'ab cd\\u' / '202eef'.
    assert wrapped("ab cd\u202eef  g", 6) == ["ab cd", "\\u202e", "ef  g"]
    assert wrapped("a\u202eb", 3) == ["a", "\\u202e", "b"]  # an escape wider: whole
    assert wrapped("", 5) == [""]


def _east_asian(piece: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in piece)


def test_a_shortened_name_is_cut_on_whole_escapes():
    # Escaped, then cut at 28 characters, 'x...x\u202egnp.exe' was 'x...x\u…': an
    # escape of no character. Cut on whole escapes, at its end, its start or middle.
    name = "x" * 25 + "\u202egnp.exe"
    assert shortened(name, 28) == "x" * 25 + "…"
    assert shortened(name, 33) == "x" * 25 + "\\u202eg…"
    assert shortened("a\u202e" + "x" * 25, 28, keep="end") == "…" + "x" * 25
    # Both ends, in a terminal's columns (two for 写): 20 in all, with the ellipsis.
    name = "abcdefgh\u202e" + "x" * 50 + "\u202e写真写"
    assert shortened(name, 20, keep="both", size=_east_asian) == "abcdefgh…写真写"
    assert shortened("a\u202eb", 9) == "a\\u202eb"  # fits: whole, as `printable` shows it
