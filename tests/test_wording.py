"""Words the log lines, plots and report share (`transforms.wording`), known answers.

The percent and probability forms the report and plots show are also tested where
they are shown (tests/test_cli.py, tests/test_plots.py).
"""

from transforms.wording import classes, count, percent, printable


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
