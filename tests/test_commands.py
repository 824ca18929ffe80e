"""The commands that read a run (`pipeline.report`, `pipeline.sanity`): their flag
errors read as the job's (`pipeline.commands.CommandParser`)."""

import pytest

from pipeline import report, sanity


@pytest.mark.parametrize(
    "command, args, expected",
    [
        (report, ["--outptu", "r.html"], "error: unknown flag --outptu; did you mean --output?"),
        (report, ["--output", "r.html", "--gallery", "abc"], "error: argument --gallery: invalid"),
        (report, ["--output", "r.html", "--out", "x.html"], "error: unknown flag --out; did you"),
        (report, [], "error: the following arguments are required: --output"),
        (sanity, ["--images", "two"], "error: argument --images: invalid int"),
        (sanity, ["--imag", "2"], "error: unknown flag --imag; did you mean --images?"),
    ],
)
def test_flag_errors_are_one_error_line_as_the_jobs_are(command, args, expected, tmp_path, capsys):
    # Like `python -m pipeline`: exit 2, one `error:` line naming the flag, no usage
    # block; a flag cut short (--out, --imag) or misspelt is refused, never guessed.
    with pytest.raises(SystemExit) as exit_:
        command.main(["--input", str(tmp_path), *args])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(expected) and line.endswith("(see --help).")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    "command, args, expected",
    [
        (
            report,
            ["--input", "x", "--outptu", "r"],
            "unknown flag --outptu; did you mean --output?",
        ),
        (sanity, ["--inptu", "x"], "unknown flag --inptu; did you mean --input?"),
        (sanity, [], "the following arguments are required: --input"),
    ],
)
def test_an_unknown_flag_is_named_before_the_required_one_it_misspells(
    command, args, expected, capsys
):
    with pytest.raises(SystemExit):
        command.main(args)
    assert capsys.readouterr().err == f"error: {expected} (see --help).\n"


@pytest.mark.parametrize(
    "command, usage",
    [
        (report, "python -m pipeline.report [-h] --input INPUT --output OUTPUT [--examples"),
        (sanity, "python -m pipeline.sanity [-h] --input INPUT [--images"),
    ],
)
def test_help_shows_the_required_flags_as_required(command, usage, capsys):
    with pytest.raises(SystemExit) as exit_:
        command.main(["--help"])
    assert exit_.value.code == 0
    first = " ".join(capsys.readouterr().out.split("\n\n")[0].split())
    assert first.startswith(f"usage: {usage}")
