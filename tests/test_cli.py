"""The command line: flags, --help, exit codes, the console summary, progress and quiet logs."""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import main as pipeline_main
from pipeline.__main__ import main
from pipeline.main import prepare
from pipeline.options import AuditOptions, overridden_flags
from pipeline.summary import error_summary, print_summary, summary_table
from tests.conftest import (
    SIZE,
    WNID_CAT,
    bash_words,
    cli_args,
    launched,
    make_image_folder,
    printed_summary,
    run_to_a_closed_stdout,
    write_image,
)
from transforms.config import AttributionConfig
from transforms.schema import ERROR_SCHEMA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(
    code: str, *args: str, verbose_env: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Runs Python code in a fresh interpreter, as a user's shell would (no log-level env);
    `env`: variables to set besides."""
    env = {**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, **(env or {})}
    env["PYTHONPATH"] = ROOT
    return subprocess.run(
        [sys.executable, *(["-c", code] if code else []), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _command(args: list[str]) -> subprocess.CompletedProcess:
    """`python -m pipeline ARGS` as typed, in a process of its own (`launched`): the
    finished process, its output captured."""
    return subprocess.run(
        launched([sys.executable, "-m", "pipeline", *args]),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _flags(image_folder, model, output, *extra):
    args = cli_args(
        runner="DirectRunner", dataset=image_folder["root"], model=model, output=output, steps=4
    )
    return [*args, *extra]


def _keras_wrap(model: str, takes: str, width: int = SIZE) -> str:
    """The Keras line a refusal prints to wrap `model` on RGB images [N, SIZE, width, 3],
    calling it on `takes` (an expression of the wrap's input x) and saving rgb.keras."""
    return (
        f"m = keras.saving.load_model({model!r}); x = keras.Input(({SIZE}, {width}, 3)); "
        f"keras.Model(x, m({takes})).save('rgb.keras')"
    )


def _float_clone(model: str, input_tensors: str) -> str:
    """The Keras line a refusal prints to clone a uint8 `model` on `input_tensors` (float32
    Inputs) with its weights, saving float_input.keras."""
    return (
        f"m = keras.saving.load_model({model!r}); f = keras.models.clone_model(m, "
        f"input_tensors={input_tensors}); f.set_weights(m.get_weights()); "
        "f.save('float_input.keras')"
    )


_UINT8_RANGE = " with --input_range 0,255 (its uint8 pixels' range)."


def _refused_with(image_folder, model, capsys, fix: str, saved: str, then: str = ".") -> str:
    """Runs the job on a model it refuses (exit 2) with one `error:` line ending in the
    Keras line `fix`, then 'pass `saved`' and `then`: returns that line."""
    assert main(_flags(image_folder, model, Path.cwd() / "refused")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.endswith(f": {fix}; pass {saved}{then}"), line
    return line


def _rows_of_printed_fix(image_folder, fix: str, saved: str, *extra: str) -> pd.DataFrame:
    """Runs a refusal's printed Keras line `fix` as a user would, in the working folder,
    then the job (no faithfulness, plus `extra` flags) on the model it saved into ./out:
    returns the rows read back, by image_id."""
    import keras

    exec(fix, {"keras": keras})
    output = Path.cwd() / "out"
    assert main(_flags(image_folder, saved, output, "--faithfulness", "none", *extra)) == 0
    return pd.read_parquet(output / "results").sort_values("image_id")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--stpes", "32"], "error: unknown flag --stpes; did you mean --steps?"),
        (["--tol", "0.1"], "error: unknown flag --tol; did you mean --tolerance?"),
        (["--runer=DirectRunner"], "error: unknown flag --runer; did you mean --runner?"),
        # Flags are lower-case: one typed in capitals got no suggestion at all.
        (["--STEPS", "8"], "error: unknown flag --STEPS; did you mean --steps?"),
        (["--DATA_DIR=x"], "error: unknown flag --DATA_DIR; did you mean --data_dir?"),
        # A Beam flag cut short means the flag it begins: it was "did you mean --resume?",
        # and --save_main got no suggestion.
        (["--direct_num", "2"], "error: unknown flag --direct_num; did you mean --direct_num_"),
        (["--save_main"], "error: unknown flag --save_main; did you mean --save_main_session?"),
        (["--overwrite", "yes"], "error: unexpected argument 'yes'"),
        (["--steps", "many"], "error: argument --steps: invalid int value: 'many'"),
        (["--batch_size", "0"], "error: --batch_size must be between 1 and 1024, got 0"),
        (["--batch_size", "1025"], "error: --batch_size must be between 1 and 1024, got 1025"),
        (["--input_range", "1,1"], "error: --input_range '1,1' needs low < high"),
        (["--input_range", "0,inf"], "error: --input_range '0,inf' must be finite numbers"),
        (["--input_range", "nan,1"], "error: --input_range 'nan,1' must be finite numbers"),
        (
            ["--input_range", "-1"],
            "error: --input_range '-1' must be two numbers 'low,high', e.g. --input_range 0,1 "
            "or --input_range -1,1.",
        ),
        (["--steps", "5000"], "error: --steps must be <= 4096, got 5000"),
        (["--top_k", "0"], "error: --top_k must be >= 1, got 0."),  # not the default's 5
        (["--image_size", "20000"], "error: --image_size must be between 8 and 4096, got 20000"),
        (["--max_steps", "20000"], "error: --max_steps must be <= 16384, got 20000"),
        (
            ["--max_steps", "3"],
            "error: --max_steps (3) must be >= --steps (4); pass --max_steps 4 or more, or "
            "fewer --steps.",
        ),
        (
            ["--path_batch_size", "many"],
            "error: --path_batch_size 'many' must be a whole number of points, e.g. "
            "--path_batch_size 16, or auto (8 or 16 on CPUs, timed; 32 on GPUs).",
        ),
        (["--path_batch_size", "0"], "error: --path_batch_size must be >= 1, got 0"),
        (["--tolerance", "inf"], "error: --tolerance must be a finite number >= 0"),
        (["--completeness_tolerance", "inf"], "error: --completeness_tolerance must be a finite"),
        # A percent typed for a fraction: 2 meant 2 %, and bounded no map (100 % is a 0 map).
        (
            ["--tolerance", "2"],
            "error: --tolerance 2 is above 1: it is a fraction, not a percent (0.02 is 2 %); "
            "pass a number from 0 to 1.",
        ),
        (["--completeness_tolerance", "5"], "error: --completeness_tolerance 5 is above 1: it"),
        (["--tolerance", "1.01"], "error: --tolerance 1.01 is above 1: it is a fraction"),
        # The same percent with its sign: argparse said 'invalid float value' and no fix.
        (
            ["--tolerance", "2%"],
            "error: --tolerance '2%' is a percent; pass it as a fraction: --tolerance 0.02.",
        ),
        (
            ["--completeness_tolerance=0.5%"],
            "error: --completeness_tolerance '0.5%' is a percent; pass it as a fraction: "
            "--completeness_tolerance 0.005.",
        ),
        # A percent out of 0-100 %: the fraction named (1.5, -0.02, nan) was refused in turn.
        (
            ["--tolerance", "150%"],
            "error: --tolerance '150%' is a percent, and outside 0 % to 100 %: pass a "
            "fraction from 0 to 1 (0.02 is 2 %).",
        ),
        (["--tolerance", "-2%"], "error: --tolerance '-2%' is a percent, and outside 0 % to"),
        (["--tolerance", "nan%"], "error: --tolerance 'nan%' is a percent, and outside 0 % to"),
        (["--input_range", "-1e308,1e308"], "error: --input_range '-1e308,1e308' must be finite"),
        (["--runner", "Bogus"], "error: --runner 'Bogus' is not a Beam runner"),
        # An unset "$RUNNER" meant for Dataflow: the whole dataset ran here, on the DirectRunner.
        (
            ["--runner="],
            "error: --runner is empty; pass a Beam runner (DirectRunner, DataflowRunner, ...), "
            "or leave --runner out (DirectRunner).",
        ),
        (["--runner", " "], "error: --runner is empty; pass a Beam runner"),
        (["--direct_num_workers", "-3"], "error: --direct_num_workers must be >= 0"),
        (["--dataset", ""], "error: --dataset is empty; pass a TFDS name"),
        (["--dataset", "  "], "error: --dataset is empty; pass a TFDS name"),  # "$DATA " unset
        (
            ["--baseline", "black,blur,black"],
            "error: --baseline 'black,blur,black' lists black twice; give each baseline once, "
            "e.g. --baseline black,blur.",
        ),
        # Everything after a '--' was dropped: the run went on with --steps 4.
        (
            ["--", "--steps", "8", "--seed", "1"],
            "error: '--' ends the flags: --steps 8 --seed 1 after it would be ignored; drop "
            "the '--'.",
        ),
        (["--"], "error: '--' ends the flags: nothing follows it here; drop the '--'."),
        # A percent after '--' is no flag: the '--' is what to drop, not the percent.
        (
            ["--", "--tolerance", "2%"],
            "error: '--' ends the flags: --tolerance 2% after it would be ignored; drop the '--'.",
        ),
        # A fraction flag with no value, last: argparse's own message, no percent read.
        (["--tolerance"], "error: argument --tolerance: expected one argument (see --help)."),
        # An empty path (an unset "$NAMES") was taken for none: no names, silently; an
        # empty --data_dir was the current folder, and the fix said `--data_dir ` with no path.
        (
            ["--class_names", ""],
            "error: --class_names is empty; pass a file of class names, or leave --class_names "
            "out (names: ImageNet's for 1000-class models, the TFDS dataset's own, else "
            "class indices).",
        ),
        (
            ["--data_dir=", "--dataset", "mnist"],
            "error: --data_dir is empty; pass a TFDS data folder, or leave --data_dir out "
            "(TFDS's own).",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_error_line_before_any_work(
    flags, message, image_folder, linear_keras, tmp_path, capsys
):
    code = main(_flags(image_folder, linear_keras, tmp_path / "out", *flags))
    err = capsys.readouterr().err
    assert code == 2
    assert len(_error_lines(err)) == 1 and _error_lines(err)[0].startswith(message), err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flag", "dataset", "message"),
    [
        ("output", None, "error: --output is empty; pass the folder for results/, errors/ and"),
        ("class_names", None, "error: --class_names is empty; pass a file of class names"),
        ("data_dir", "mnist", "error: --data_dir is empty; pass a TFDS data folder"),
    ],
)
def test_a_blank_path_flag_is_refused_as_empty_not_taken_for_a_folder_of_spaces(
    flag, dataset, message, image_folder, linear_keras, tmp_path, capsys, monkeypatch
):
    # "$OUT " with OUT unset: --output '  ' wrote its results/ and errors/ into a folder
    # named two spaces in the working folder, and --class_names '  ' said it could not
    # read a file of that name, as --dataset '  ' already did not.
    monkeypatch.chdir(tmp_path)
    flags = {"dataset": dataset or image_folder["root"], "model": linear_keras, "steps": 4}
    flags |= {"output": tmp_path / "out", flag: "  "}
    code = main(cli_args(**flags))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert len(_error_lines(err)) == 1 and _error_lines(err)[0].startswith(message), err
    assert sorted(os.listdir(tmp_path)) == ["images"]  # no folder of spaces, no out


def _mo_file(path: Path, translations: dict[str, str]) -> None:
    """A GNU gettext catalog (.mo) at `path`, UTF-8, as msgfmt writes one."""
    entries = sorted({"": "Content-Type: text/plain; charset=UTF-8\n", **translations}.items())
    keys = [k.encode() for k, _ in entries]
    values = [v.encode() for _, v in entries]
    start = 7 * 4 + 16 * len(entries)  # the header, then two tables of (length, offset)
    table, data = [], b""
    for text in keys + values:
        table.append((len(text), start + len(data)))
        data += text + b"\0"
    header = [0x950412DE, 0, len(entries), 28, 28 + 8 * len(entries), 0, 0]
    flat = [n for pair in table for n in pair]
    path.parent.mkdir(parents=True)
    path.write_bytes(np.array(header + flat, dtype="<u4").tobytes() + data)


# The job in a Python whose argparse speaks German (gettext's catalog for its messages,
# as a translated Python ships one): the locale folder is argv[1], the flags argv[2] and
# the typed flags of each launch argv[3] (JSON). One interpreter for all the launches
# (each a fresh one cost 2-3 s of imports); each exit code follows its stderr.
_IN_GERMAN = """
import gettext, json, sys
gettext.bindtextdomain("messages", sys.argv[1])
from pipeline.__main__ import main
for typed in json.loads(sys.argv[3]):
    code = main([*json.loads(sys.argv[2]), *typed])
    print(f"exit {code}", file=sys.stderr, flush=True)
"""


def test_a_percent_for_a_fraction_is_named_whatever_argparse_says(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    """The percent was recognised by argparse's English message ("argument --tolerance:
    invalid float value: '2%'"), which is argparse's, not the project's: in a Python
    whose argparse says it otherwise (translated, or reworded in a later version) the
    fix was lost. Found reading `_percent_for_fraction`."""
    _mo_file(
        tmp_path / "locale" / "de" / "LC_MESSAGES" / "messages.mo",
        {
            "invalid %(type)s value: %(value)r": "ungültiger %(type)s-Wert: %(value)r",
            "argument %(argument_name)s: %(message)s": "Argument %(argument_name)s: %(message)s",
        },
    )
    monkeypatch.setenv("LANGUAGE", "de")
    flags = [str(flag) for flag in _flags(image_folder, linear_keras, tmp_path / "out")]
    typed = [["--tolerance", "2%"], ["--completeness_tolerance=150%"], ["--steps", "x"]]
    done = _python(_IN_GERMAN, str(tmp_path / "locale"), json.dumps(flags), json.dumps(typed))
    assert done.returncode == 0, done.stderr[-2000:]
    launches = re.split(r"^exit (\d+)\n", done.stderr, flags=re.M)
    assert launches[1::2] == ["2", "2", "2"] and launches[-1] == "", done.stderr[-2000:]
    said = {}
    for flag, stderr in zip(typed, launches[:-1:2], strict=True):
        (said[flag[0]],) = _error_lines(stderr)
    assert said["--steps"] == "error: Argument --steps: ungültiger int-Wert: 'x' (see --help)."
    assert said["--tolerance"] == (
        "error: --tolerance '2%' is a percent; pass it as a fraction: --tolerance 0.02."
    )
    assert said["--completeness_tolerance=150%"] == (
        "error: --completeness_tolerance '150%' is a percent, and outside 0 % to 100 %: pass "
        "a fraction from 0 to 1 (0.02 is 2 %)."
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--dry_run", "True"),
        ("--template_location", "gs://b/templates/audit"),
        # Not "a dry run all the same" here, nor fixed by --dry_run=True, refused next.
        ("--dry_run", "False"),
    ],
)
def test_a_dataflow_flag_that_runs_nothing_exits_2_on_another_runner(
    flag, value, image_folder, linear_keras, tmp_path, capsys
):
    # The DirectRunner ignored them: a user checking the job offline got a whole run.
    code = main(_flags(image_folder, linear_keras, tmp_path / "out", f"{flag}={value}"))
    (line,) = _error_lines(capsys.readouterr().err)
    assert code == 2
    assert line == (
        f"error: {flag} {value!r} builds a Dataflow job without running it, and the "
        "DirectRunner ignores it: it would run the whole job. Pass --runner DataflowRunner "
        f"(and its flags), or drop {flag}."
    )
    assert not (tmp_path / "out").exists()


def test_direct_num_workers_0_is_one_worker_per_core_not_refused(
    image_folder, linear_keras, tmp_path
):
    from apache_beam.options.pipeline_options import DirectOptions

    # Beam's DirectRunner takes 0 for one worker per CPU core, as the refusal of -3 says.
    flags = _flags(image_folder, linear_keras, tmp_path / "out", "--direct_num_workers", "0")
    job, options = prepare(flags)
    job.lock.release()
    assert options.view_as(DirectOptions).direct_num_workers == 0


@pytest.mark.parametrize("dataset", ["folder", "sample"])
def test_a_label_offset_that_shifts_imagenet_labels_exits_2(
    dataset, image_folder, linear_keras, tmp_path, capsys
):
    # WordNet-id folders and the sample carry ImageNet's labels; the model has 1000 outputs.
    flags = _flags(image_folder, linear_keras, tmp_path / "out", "--label_offset", "1")
    if dataset == "sample":
        flags += ["--dataset", "sample"]
    assert main(flags) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith("error: --label_offset 1 does not fit --dataset ")
    assert line.endswith(
        f"whose labels are ImageNet's 1000 classes, on --model {linear_keras!r} with 1000 "
        "outputs: the offset that fits is 0; leave --label_offset out."
    )
    assert not (tmp_path / "out").exists()
    job, _ = prepare(_flags(image_folder, linear_keras, tmp_path / "ok", "--label_offset", "0"))
    job.lock.release()
    assert job.spec.label_offset == 0


@pytest.mark.parametrize(
    ("model", "offset", "fits"),
    [("efficientnet_lite0", 1, 0), ("inception_v1", 0, 1), ("custom", 1, 0)],
)
def test_a_label_offset_that_shifts_an_imagenet_model_on_unlabelled_images_exits_2(
    model, offset, fits, linear_keras, offline_hub, tmp_path, capsys
):
    # A plain folder of photos has no labels to check the offset against; the default
    # model with --label_offset 1 ran with every prediction one class off, unnamed, and
    # no word. A 1000- or 1001-output model is read as ImageNet's 1000 classes.
    write_image(tmp_path / "images" / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    folder = {"root": str(tmp_path / "images")}
    reference = linear_keras if model == "custom" else model
    outputs = 1001 if model == "inception_v1" else 1000
    assert main(_flags(folder, reference, tmp_path / "out", f"--label_offset={offset}")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    background = " after a background output" if fits else ""
    fix = "leave --label_offset out."
    if model == "custom":
        fix = (
            "leave --label_offset out, or, for a model of other classes, pass --class_names "
            "naming its 999 classes."
        )
    assert line == (
        f"error: --label_offset {offset} does not fit --model {reference!r} with {outputs} "
        f"outputs, ImageNet's 1000 classes{background}: the offset that fits is {fits}, and "
        f"{offset} would read every prediction one class off; {fix}"
    )
    assert not (tmp_path / "out").exists()
    # A model of other classes: --class_names names them, and the offset is honoured;
    # a known ImageNet model's classes are ImageNet's whatever the file says.
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {i}" for i in range(outputs - offset)))
    named = _flags(folder, reference, tmp_path / "ok", f"--label_offset={offset}")
    if model != "custom":
        assert main([*named, f"--class_names={names}"]) == 2
        return
    job, _ = prepare([*named, f"--class_names={names}"])
    job.lock.release()
    assert (job.spec.label_offset, job.class_names[0]) == (1, "class 0")


@pytest.mark.parametrize("offset", ["1000", "-1"])
def test_a_label_offset_outside_the_models_outputs_exits_2_naming_it(
    offset, linear_keras, tmp_path, capsys
):
    # Unlabelled images: no dataset's classes bound the offset, the model's 1000 outputs do.
    write_image(tmp_path / "images" / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    flags = _flags({"root": str(tmp_path / "images")}, linear_keras, tmp_path / "out")
    assert main([*flags, f"--label_offset={offset}"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (
        f"error: --label_offset {offset} does not fit --model {linear_keras!r} with 1000 "
        "outputs; use 0 (or 1 for a background class at index 0)."
    )
    assert not (tmp_path / "out").exists()


def test_a_multi_line_library_error_is_one_error_line(
    image_folder, quadratic_saved_model, tmp_path, capsys
):
    import shutil

    broken = tmp_path / "no_variables"
    shutil.copytree(quadratic_saved_model, broken)
    shutil.rmtree(broken / "variables")  # TensorFlow's message spans several lines
    assert main(_flags(image_folder, str(broken), tmp_path / "out")) == 2
    err = capsys.readouterr().err
    (line,) = _error_lines(err)
    assert str(broken) in line and "Traceback" not in err
    assert not [
        x for x in err.splitlines() if x.strip() and not x.startswith(("error:", "INFO", "WARNING"))
    ]


@pytest.mark.parametrize("form", [["--input_range", "-1,1"], ["--input_range=-1,1"]])
def test_negative_input_range_in_both_forms(form, image_folder, linear_keras, tmp_path):
    job, _ = prepare(_flags(image_folder, linear_keras, tmp_path / "out", *form))
    assert job.spec.input_range == (-1.0, 1.0)


def test_check_flags_joins_a_negative_value_but_not_a_flag_to_the_flag_before():
    from pipeline.options import check_flags  # noqa: PLC0415

    # '-.5,.5' is a value (argparse took it for a flag); '--steps' after a value-taking
    # flag is the next flag, the value forgotten.
    assert check_flags(["--input_range", "-.5,.5"]) == ["--input_range=-.5,.5"]
    with pytest.raises(ValueError, match="^argument --output: expected one argument"):
        check_flags(["--output", "--steps", "8"])


def test_a_stray_argument_after_a_flag_passed_to_a_job_server_is_refused():
    from pipeline.options import check_flags  # noqa: PLC0415

    # A flag unknown here goes to a portable runner's job server with its value, given
    # with '=' or as the next argument; an argument after `--flag=value` is no value.
    passed = ["--runner", "FlinkRunner", "--zz_server_option"]
    assert check_flags([*passed, "1"]) == [*passed, "1"]
    with pytest.raises(ValueError, match="^unexpected argument 'stray'"):
        check_flags(["--runner", "FlinkRunner", "--zz_server_option=1", "stray"])
    # A misspelt flag of the job's own is refused on these runners too, not passed on.
    with pytest.raises(ValueError, match="^unknown flag --stpes; did you mean --steps"):
        check_flags(["--runner", "FlinkRunner", "--stpes", "8"])


def test_tfds_only_flags_on_a_folder_or_the_sample_are_said_to_be_ignored(
    image_folder, linear_keras, tmp_path, caplog
):
    # --split was; --data_dir and --no_download vanished without a word.
    extra = ("--split", "train", "--data_dir", str(tmp_path / "tfds"), "--no_download")
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        prepare(_flags(image_folder, linear_keras, tmp_path / "out", *extra))
    text = caplog.text
    for flag in ("--split 'train'", "--data_dir", "--no_download"):
        assert flag in text and "TFDS datasets only" in text, flag


def test_an_output_inside_the_dataset_holding_images_says_they_are_not_inputs(
    image_folder, linear_keras, tmp_path, caplog
):
    """An --output inside the image folder is left out of the inputs: one that held
    images already (a class folder) took them out of the run without a word."""
    output = os.path.join(image_folder["root"], WNID_CAT)
    (Path(output) / ".DS_Store").write_bytes(b"")  # hidden: not an input anyway
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        job, _ = prepare(_flags(image_folder, linear_keras, output))
    job.lock.release()
    assert (
        f"--output {output!r} lies inside --dataset, whose files there are not inputs: "
        "the 2 files it holds (cat1.png, cat2.png) are left out of this run. To audit them, "
        "choose an --output outside --dataset (or a new sub-folder of it)."
    ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):  # a folder of its own
        job, _ = prepare(_flags(image_folder, linear_keras, f"{image_folder['root']}/audit"))
    job.lock.release()
    assert "lies inside --dataset" not in caplog.text


def test_an_output_linked_inside_the_dataset_to_a_folder_of_images_says_so(
    image_folder, linear_keras, tmp_path, caplog
):
    """An --output given inside the image folder as a link to a folder elsewhere: the
    listing skips the link (its real path is --output's), so the images there were left
    out without a word, the check comparing real paths only."""
    elsewhere = tmp_path / "elsewhere"
    write_image(elsewhere / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    output = os.path.join(image_folder["root"], "linked")
    os.symlink(elsewhere, output)
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        job, _ = prepare(_flags(image_folder, linear_keras, output))
    job.lock.release()
    assert (
        f"--output {output!r} lies inside --dataset, whose files there are not inputs: "
        "the 1 file it holds (a.png) is left out of this run."
    ) in caplog.text


def test_an_output_in_a_hidden_folder_of_the_dataset_says_nothing_of_its_files(
    image_folder, linear_keras, caplog
):
    """The files of a hidden folder (`.cache/`) are never inputs: an --output there was
    said to leave them out of the run, and that another --output would audit them."""
    output = Path(image_folder["root"], ".cache", "audit")
    write_image(output / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        job, _ = prepare(_flags(image_folder, linear_keras, output))
    job.lock.release()
    assert "lies inside --dataset" not in caplog.text


def test_a_folder_of_one_image_is_counted_as_one_file(linear_keras, tmp_path, caplog):
    write_image(tmp_path / "images" / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    flags = _flags({"root": str(tmp_path / "images")}, linear_keras, tmp_path / "out")
    with caplog.at_level(logging.INFO, logger="pipeline.resolve"):
        job, _ = prepare(flags)
    job.lock.release()
    assert f"1 file in {tmp_path / 'images'}; the pipeline lists" in caplog.text  # not '1 files'


def test_an_unprepared_tfds_dataset_is_one_error_line(shell_runs):
    # TFDS warned 'Variant folder <data_dir>/mnist/3.0.1 has no dataset_info.json' first,
    # of a folder that does not exist; the error line names it and says what to do.
    # The run of `shell_runs` in which TensorFlow starts, as in a process of its own.
    code, _, stderr = shell_runs["tfds_unprepared"]
    assert code == 2
    (line,) = stderr.strip().splitlines()
    data_dir = shell_runs["unprepared_data_dir"]
    assert line.startswith(f"error: TFDS dataset 'mnist' is not prepared in {data_dir}/mnist/")


# The command line, with the TFDS builders of tests/tfds_builders.py registered.
_MAIN_WITH_TEST_BUILDERS = (
    "import sys, tests.tfds_builders; from pipeline.__main__ import main; "
    "sys.exit(main(sys.argv[1:]))"
)


def _failed_in_process(args: list[str], capfd, caplog) -> str:
    """The command line's `main(args)` run in this process, exit 2 and no traceback: its
    stderr (file descriptor 2 and sys.stderr). The job's log records go to pytest's
    handlers here (the command's root handler writes them to stderr): they are read for
    a traceback too, logged from INFO up as the command logs them."""
    capfd.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert main(args) == 2
    stderr = capfd.readouterr().err
    assert "Traceback" not in stderr + caplog.text, stderr + caplog.text
    return stderr


@pytest.mark.parametrize("given", [True, False])
def test_a_tfds_dataset_that_cannot_be_downloaded_names_the_data_dir_looked_in(
    given, tmp_path, capfd, caplog, request
):
    # Offline, the error said "Without network, prepare it elsewhere and pass --data_dir."
    # to a user who had passed --data_dir: which folder was looked in, and what to do
    # with it, went unsaid (--no_download's message says both).
    if given:
        import tests.tfds_builders  # noqa: F401, PLC0415 - registers tiny_download

        data_dir = tmp_path / "tfds"
        data_dir.mkdir()
        flags = cli_args(dataset="tiny_download", output=tmp_path / "o", data_dir=data_dir)
        stderr = _failed_in_process(flags, capfd, caplog)
        output = tmp_path / "o"
    else:  # TFDS reads its own folder, $TFDS_DATA_DIR, once: as it is imported
        shell_runs = request.getfixturevalue("shell_runs")
        status, _, stderr = shell_runs["tfds_offline"]
        assert status == 2, stderr
        data_dir, output = shell_runs["tfds_data_dir"], shell_runs["outputs"]["tfds_offline"]
    (line,) = _error_lines(stderr)
    assert line.startswith(
        "error: Could not download and prepare TFDS dataset 'tiny_download' into "
        f"{data_dir}/tiny_download/1.0.0: the network is unreachable (tiny-download.invalid:443: "
    ), line
    if given:
        assert line.endswith(
            f"). It is not prepared in --data_dir {str(data_dir)!r}: prepare it there with "
            f"`tfds build tiny_download --data_dir {data_dir}` (needs network; or build it "
            "where there is network and copy it in), or pass --data_dir where it is prepared."
        ), line
    else:
        assert line.endswith(
            "). Without network, prepare it where there is network with `tfds build "
            "tiny_download` and pass --data_dir where it is prepared."
        ), line
    assert not output.exists()


@pytest.fixture
def served():
    """An HTTP server on 127.0.0.1 for the test's length: its URL of one file, and what
    it answers there (an HTTP status, or the bytes of the file), which the test sets."""
    with _serving() as found:
        yield found


@contextlib.contextmanager
def _serving():
    """`served`'s server, for as long as the `with` block lasts."""
    answers = {"/images.bin": 404}

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            answer = answers.get(self.path, 404)
            if isinstance(answer, int):
                self.send_error(answer)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):  # not the test's output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/images.bin", answers
    server.shutdown()
    server.server_close()


_SOURCE_FIX = (
    "Its source may have moved or changed the file since this tensorflow-datasets was "
    "released: a newer one may know (pip install -U tensorflow-datasets); or prepare it "
    "where it downloads, with `tfds build {name} --data_dir {data_dir}`, and pass --data_dir "
    "where it is prepared."
)
_BUILD_FIX = (
    "`tfds build {name} --data_dir {data_dir}` shows TFDS's whole error; or prepare it "
    "elsewhere and pass --data_dir where it is prepared."
)


@pytest.mark.parametrize(
    "split, said",
    [
        ("nosuchsplit", "--split 'nosuchsplit' is not valid for 'tiny_declared'; its splits"),
        # The split the spec names is the one suggested, not the first that holds some.
        (
            "test[:0]",
            "--split 'test[:0]' reads no example of 'tiny_declared' (train: 2 examples, test: "
            "1 example); pass a split or slice that holds some, e.g. --split test.",
        ),
    ],
)
def test_a_split_a_builder_declares_no_example_of_is_refused_before_any_download(
    split, said, tmp_path, capfd, caplog
):
    # The split was checked once the dataset was prepared: after its download (here one
    # that cannot succeed, so the network was blamed). A builder that declares its
    # splits' sizes (as TFDS's metadata restored from its bucket does) is checked first.
    import tests.tfds_builders  # noqa: F401, PLC0415 - registers tiny_declared

    data_dir = tmp_path / "tfds"
    args = cli_args(dataset="tiny_declared", data_dir=data_dir, split=split)
    (line,) = _error_lines(
        _failed_in_process([*args, *cli_args(output=tmp_path / "o")], capfd, caplog)
    )
    assert line.startswith(f"error: {said}"), line
    assert not (tmp_path / "o").exists() and not (data_dir / "downloads").exists()


@pytest.mark.parametrize(
    "config, answer, cause, fix",
    [
        ("fine", 404, "Failed to get url {url}. HTTP code: 404", _SOURCE_FIX),
        (
            "fine",
            b"another file",
            "the file downloaded from {url} is not the one its builder expects (12 bytes, not 17)",
            _SOURCE_FIX,
        ),
        (
            "fine",
            b"tiny SERVED bytes",
            "the file downloaded from {url} is not the one its builder expects (its checksum "
            "differs)",
            _SOURCE_FIX,
        ),
        ("failing", None, "ValueError: the served file holds no images", _BUILD_FIX),
    ],
    ids=["http_404", "other_size", "other_checksum", "builder_raises"],
)
def test_a_tfds_dataset_that_fails_to_download_or_prepare_online_says_why_and_how(
    config, answer, cause, fix, served, tmp_path, monkeypatch, capfd, caplog
):
    # With the network reachable, a 404, another file or a failing builder was said as
    # "...: Failed to get url U. HTTP code: 404.. It is not prepared in --data_dir D:
    # prepare it there with `tfds build` (needs network ...)", the network blamed; a
    # wrong checksum as TFDS's 700 characters of paths, reprs and hashes.
    from tests import tfds_builders

    url, answers = served
    answers["/images.bin"] = tfds_builders.TinyServed.SERVED if answer is None else answer
    name, data_dir = f"tiny_served/{config}", tmp_path / "tfds"
    args = cli_args(dataset=name, data_dir=data_dir, output=tmp_path / "o")
    expected = (
        f"error: Could not download and prepare TFDS dataset {name!r} into "
        f"{data_dir}/tiny_served/{config}/1.0.0: {cause.format(url=url)}. "
        + fix.format(name=name, data_dir=data_dir)
    )
    monkeypatch.setenv("TINY_SERVED_URL", url)
    assert _error_lines(_failed_in_process(args, capfd, caplog)) == [expected]
    # Run again: nothing it left is read as prepared, nor blocks a download that works.
    assert main([*args, "--no_download"]) == 2
    assert "is not prepared in" in _error_lines(capfd.readouterr().err)[0]
    assert main(args) == 2 and _error_lines(capfd.readouterr().err) == [expected]
    assert not (tmp_path / "o").exists()
    if config == "fine":
        answers["/images.bin"] = tfds_builders.TinyServed.SERVED
        builder = tfds_builders.tfds.builder(name, data_dir=str(data_dir))
        builder.download_and_prepare()
        assert len(list(builder.as_dataset(split="test"))) == 1


def test_a_page_long_tfds_preparation_error_is_said_in_its_first_300_characters(
    served, tmp_path, monkeypatch, capfd, caplog
):
    # A builder's error holding a whole HTTP body (a login page served for the file)
    # made an error line of 2,000 characters, most of them its markup.
    from tests import tfds_builders

    url, answers = served
    answers["/images.bin"] = tfds_builders.TinyServed.SERVED
    data_dir = tmp_path / "tfds"
    args = cli_args(dataset="tiny_served/page", data_dir=data_dir, output=tmp_path / "o")
    monkeypatch.setenv("TINY_SERVED_URL", url)
    stderr = _failed_in_process(args, capfd, caplog)
    text = "the served file is no archive; it reads: " + tfds_builders.TinyServed.PAGE
    cause = ("ValueError: " + " ".join(text.split()))[:299] + "…"
    assert _error_lines(stderr) == [
        f"error: Could not download and prepare TFDS dataset 'tiny_served/page' into "
        f"{data_dir}/tiny_served/page/1.0.0: {cause}. `tfds build tiny_served/page "
        f"--data_dir {data_dir}` shows TFDS's whole error; or prepare it elsewhere and pass "
        "--data_dir where it is prepared."
    ]


def _preparing(command: list[str], env: dict[str, str], data_dir: Path) -> subprocess.Popen:
    """`command` started, once TFDS prepares TinyServed's download in `data_dir` (into
    its incomplete.* folder, its examples waiting for $TINY_SERVED_WAIT)."""
    job = subprocess.Popen(
        launched(command, ctrl_c=True),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(1500):  # five minutes at most, if it never gets there
        if job.poll() is not None or list(data_dir.glob("downloads/tiny_served/*.INFO")):
            break
        time.sleep(0.2)
    if job.poll() is not None or not list(data_dir.glob("tiny_served/*/incomplete.*")):
        job.kill()
        raise AssertionError(f"not preparing: {job.communicate()[1]}")
    return job


@pytest.mark.parametrize(
    "signal_name, status, said",
    [("SIGKILL", -9, None), ("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "stopped by SIGTERM")],
)
def test_a_tfds_preparation_stopped_midway_is_not_read_as_prepared(
    signal_name, status, said, served, tmp_path, monkeypatch, capsys
):
    # A run killed (SIGKILL, `kill`, or Ctrl-C) while TFDS prepares: TFDS writes into
    # an incomplete.* folder beside the version's and renames it when done, so the next
    # run prepares again; a SIGKILL leaves that folder behind, unread.
    from tests import tfds_builders

    url, answers = served
    answers["/images.bin"] = tfds_builders.TinyServed.SERVED
    data_dir = tmp_path / "tfds"
    args = cli_args(dataset="tiny_served/fine", data_dir=data_dir, output=tmp_path / "o")
    command = [sys.executable, "-c", _MAIN_WITH_TEST_BUILDERS, *args]
    env = {**os.environ, "PYTHONPATH": ROOT, "TINY_SERVED_URL": url}
    env["TINY_SERVED_WAIT"] = str(tmp_path / "never")  # its examples wait till stopped
    job = _preparing(command, env, data_dir)
    try:
        job.send_signal(getattr(signal, signal_name))
        _, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    assert job.returncode == status and "Traceback" not in stderr, stderr
    if said:
        assert _error_lines(stderr) == [
            f"error: {said} before the run started; nothing was written. Run the command again."
        ]
    else:  # TFDS's unfinished folder stays, as it is never read
        assert list(data_dir.glob("tiny_served/fine/incomplete.*"))
    assert not (data_dir / "tiny_served" / "fine" / "1.0.0").exists()
    monkeypatch.setenv("TINY_SERVED_URL", url)
    assert main([*args, "--no_download"]) == 2
    assert "is not prepared in" in _error_lines(capsys.readouterr().err)[0]
    builder = tfds_builders.tfds.builder("tiny_served/fine", data_dir=str(data_dir))
    builder.download_and_prepare()  # again, without the wait
    assert len(list(builder.as_dataset(split="test"))) == 1
    assert not (tmp_path / "o").exists()


def test_a_tfds_dataset_another_run_prepared_meanwhile_is_read(
    served, linear_keras, tmp_path, monkeypatch
):
    # Two runs of one unprepared dataset at once (two models on its first use): TFDS
    # prepares each in an incomplete.* folder of its own and renames it, and the later
    # rename failed, "FileExistsError: Cannot rename .../incomplete.J0UT0Z_1.0.0.
    # Destination .../1.0.0 already exists.", exit 2, of a dataset then prepared.
    from tests import tfds_builders

    url, answers = served
    answers["/images.bin"] = tfds_builders.TinyServed.SERVED
    data_dir, output = tmp_path / "tfds", tmp_path / "o"
    args = cli_args(dataset="tiny_served/fine", data_dir=data_dir, model=linear_keras)
    args += cli_args(output=output, steps=2, faithfulness="none")
    env = {**os.environ, "PYTHONPATH": ROOT, "TINY_SERVED_URL": url}
    env["TINY_SERVED_WAIT"] = str(tmp_path / "go")
    job = _preparing([sys.executable, "-c", _MAIN_WITH_TEST_BUILDERS, *args], env, data_dir)
    try:  # the other run prepares it first
        monkeypatch.setenv("TINY_SERVED_URL", url)
        tfds_builders.tfds.builder(
            "tiny_served/fine", data_dir=str(data_dir)
        ).download_and_prepare()
        (tmp_path / "go").touch()
        _, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0 and not _error_lines(stderr), stderr
    assert len(pd.read_parquet(output / "results")) == 1
    assert not list(data_dir.glob("tiny_served/fine/incomplete.*"))


@pytest.fixture(scope="module")
def shell_runs(tmp_path_factory, linear_keras, printing_saved_model) -> dict:
    """Five runs of the command line that need a process of their own, in one process
    as a shell starts it (`_RUNS_IN_ONE_PROCESS` with tests/tfds_builders.py's builders,
    which import TFDS but not TensorFlow; a process each spent most of its time starting
    TensorFlow), TinyServed's file served and $TFDS_DATA_DIR set to `tfds_data_dir`
    (TFDS reads it as it is imported): first "tfds_unprepared", in which TensorFlow
    starts, mnist with --no_download and --data_dir `unprepared_data_dir`, empty;
    "printing", two images audited with `printing_saved_model` (its calls print 'batch
    of N' to file descriptor 1); "tfds", tiny_served/fine prepared, then audited;
    "tfds_failed", tiny_served/failing, whose builder raises, with --verbose;
    "tfds_offline", tiny_download without --data_dir (its host never resolves).
    `[name]` is that run's (exit status, stdout, stderr); `outputs[name]` its --output."""
    from tests import tfds_builders

    where = tmp_path_factory.mktemp("shell_runs")
    for i in range(2):
        write_image(where / "images" / f"{i}.png", np.full((SIZE, SIZE, 3), 60 * i, np.uint8))
    names = ("tfds_unprepared", "printing", "tfds", "tfds_failed", "tfds_offline")
    outputs = {name: where / name for name in names}
    (where / "tfds_env").mkdir()
    (where / "tfds_unprepared").mkdir()
    quick = cli_args(steps=2, faithfulness="none")
    runs = {
        "tfds_unprepared": [
            *cli_args(dataset="mnist", data_dir=where / "tfds_unprepared", no_download=True),
            *cli_args(output=outputs["tfds_unprepared"]),
        ],
        "printing": [
            *cli_args(dataset=where / "images", model=printing_saved_model),
            *cli_args(output=outputs["printing"]),
            *quick,
        ],
        "tfds": [
            *cli_args(dataset="tiny_served/fine", data_dir=where / "tfds", model=linear_keras),
            *cli_args(output=outputs["tfds"]),
            *quick,
        ],
        "tfds_failed": [
            *cli_args(dataset="tiny_served/failing", data_dir=where / "tfds_failed"),
            *cli_args(output=outputs["tfds_failed"]),
            "--verbose",
        ],
        "tfds_offline": cli_args(dataset="tiny_download", output=outputs["tfds_offline"]),
    }
    code = "import tests.tfds_builders\n" + _RUNS_IN_ONE_PROCESS
    with _serving() as (url, answers):
        answers["/images.bin"] = tfds_builders.TinyServed.SERVED
        env = {"TINY_SERVED_URL": url, "TFDS_DATA_DIR": str(where / "tfds_env")}
        done = _python(code, json.dumps(runs, default=str), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    outs = re.split(r"^run: .*\n", done.stdout, flags=re.M)[1:]
    errs = re.split(r"^run: .*\n", done.stderr, flags=re.M)[1:]
    assert len(outs) == len(errs) == len(runs), done.stderr[-3000:]
    found = {"outputs": outputs, "data_dir": where / "tfds", "tfds_data_dir": where / "tfds_env"}
    found["unprepared_data_dir"] = where / "tfds_unprepared"
    for name, out, err in zip(runs, outs, errs, strict=True):
        err, status = err.rsplit("ran: ", 1)
        found[name] = (int(status), out, err)
    return found


def test_a_tfds_preparation_says_its_lines_on_stderr_stdout_holds_the_summary_alone(shell_runs):
    # TFDS prints "Downloading and preparing dataset ..." and "Dataset ... downloaded
    # and prepared ..." on stdout: they were the first lines of a summary piped to a file.
    code, out, err = shell_runs["tfds"]
    assert code == 0, err
    assert out == printed_summary(shell_runs["outputs"]["tfds"])
    assert "Downloading and preparing dataset " in err
    assert f"Dataset tiny_served downloaded and prepared to {shell_runs['data_dir']}/" in err


def test_a_failed_tfds_preparation_leaves_stdout_empty_its_lines_on_stderr(shell_runs):
    # The run failed (exit 2, its error line on stderr) and still printed TFDS's
    # "Downloading and preparing dataset ..." on stdout; --verbose keeps it, on stderr.
    code, out, err = shell_runs["tfds_failed"]
    assert code == 2, err
    assert out == ""
    assert "Downloading and preparing dataset " in err
    (line,) = _error_lines(err)
    assert "ValueError: the served file holds no images" in line


def test_a_models_prints_to_stdout_go_to_stderr_stdout_holds_the_summary_alone(shell_runs):
    # A SavedModel's tf.print(..., output_stream=sys.stdout) is written by TensorFlow's
    # C++ to file descriptor 1, not through sys.stdout: 'batch of N' lines, one per
    # model call, came before the summary on the job's stdout (worker processes, which
    # inherit the job's descriptor 1, wrote theirs there too: tests/test_multiprocess.py).
    code, out, err = shell_runs["printing"]
    assert code == 0, err
    assert out == printed_summary(shell_runs["outputs"]["printing"])
    assert "batch of " in err


def test_a_tilde_in_path_flags_is_the_home_folder(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    # Quoted, or after '=', the shell leaves ~ alone; the job expands it.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    os.symlink(image_folder["root"], tmp_path / "home" / "images")
    os.symlink(linear_keras, tmp_path / "home" / "model.keras")
    job, _ = prepare(
        ["--dataset=~/images", "--model", "~/model.keras", "--output=~/audit", "--steps", "2"]
    )
    job.lock.release()
    assert job.output == str(tmp_path / "home" / "audit") and (tmp_path / "home" / "audit").is_dir()
    assert job.source.root == str(tmp_path / "home" / "images")
    assert job.spec.location == str(tmp_path / "home" / "model.keras")


@pytest.mark.parametrize("flag", ["--output", "--dataset", "--output="])
def test_a_path_flag_that_is_not_utf8_exits_2_naming_it(
    flag, image_folder, linear_keras, tmp_path, capsys
):
    # Beam passes every flag on as UTF-8 text: a folder named in Latin-1 bytes claimed
    # --output, then failed with "'utf-8' codec can't encode character '\\udce9'" (exit 1),
    # its manifest left "running".
    latin1 = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")
    if flag == "--dataset":
        os.rename(image_folder["root"], latin1)
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "out")
    given = [flag + latin1] if flag.endswith("=") else [flag, latin1]
    assert main([*args, *given]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    shown = os.fsencode(tmp_path).decode("utf-8") + "/caf\\xe9"
    assert line == (
        f"error: {flag.rstrip('=')} '{shown}' is not UTF-8 text (byte 0xe9): Beam passes "
        "every flag on as UTF-8; rename it, or link it under a UTF-8 name and pass the link."
    )
    assert not (tmp_path / "out").exists() and not os.path.exists(latin1 + "/manifest.json")


def test_a_flag_holding_a_lone_surrogate_exits_2_naming_it(linear_keras, tmp_path, capsys):
    # main() of a caller whose str holds a surrogate Python's decoding never makes
    # (not '\udc80'..'\udcff'): refused as the command line's are, not a traceback.
    output = f"{tmp_path}/out-\ud800"
    args = cli_args(dataset=tmp_path, model=linear_keras, output=output)
    assert main(args) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"error: --output {output!r} is not UTF-8 text: Beam passes every flag on as UTF-8; "
        "rename it, or link it under a UTF-8 name and pass the link."
    ]


def test_a_non_ascii_path_where_python_reads_the_command_line_as_ascii_says_the_fix(
    image_folder, linear_keras, tmp_path
):
    # A C locale with PYTHONUTF8=0: 'aus-ü' arrived as surrogates, and Beam failed as above.
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "aus-ü")
    env = {**os.environ, "PYTHONPATH": ROOT, "LC_ALL": "C", "PYTHONUTF8": "0"}
    env["PYTHONCOERCECLOCALE"] = "0"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=env, capture_output=True
    )
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and "Traceback" not in stderr, stderr
    assert _error_lines(stderr) == [
        f"error: --output '{tmp_path}/aus-\\xfc' reached Python as ascii text, not UTF-8 "
        "(a C locale with PYTHONUTF8=0): Beam passes every flag on as UTF-8; run with "
        "PYTHONUTF8=1, or in a UTF-8 locale (LC_ALL=C.UTF-8)."
    ]
    assert not (tmp_path / "aus-ü").exists()


def test_missing_and_empty_dataset_folders_exit_2(linear_keras, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "hidden" / ".thumbs").mkdir(parents=True)  # a user sees an empty folder
    (tmp_path / "hidden" / ".thumbs" / "a.png").write_bytes(b"")
    (tmp_path / "hidden" / ".DS_Store").write_bytes(b"")
    for folder, message in (
        (tmp_path / "empty", "No files found in image folder"),
        (tmp_path / "hidden", "(hidden entries, whose names start with '.', and sub-folders"),
        (tmp_path / "missing" / "x", ": no such folder; pass an existing folder of images"),
    ):
        code = main(cli_args(dataset=folder, model=linear_keras, output=tmp_path / "out"))
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert len(_error_lines(err)) == 1 and message in _error_lines(err)[0]
        assert str(folder) in _error_lines(err)[0]


def test_a_dataset_path_that_is_missing_or_a_file_says_which(
    linear_keras, tmp_path, monkeypatch, capsys
):
    # A typo in a folder's path and an image file given for its folder both said
    # "is not a folder of images; pass an existing folder", the first not saying that
    # nothing is there (nor where a relative path was looked for), the second not
    # that a file is no --dataset; an image file's bare name went to TFDS, whose
    # "Parsing builder name string cat.jpg failed" said nothing of files at all.
    write_image(tmp_path / "photos" / "cat.jpg", np.zeros((SIZE, SIZE, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    for dataset, expected in (
        (
            "./photoz",
            "error: --dataset './photoz': no such folder (read as "
            f"'{tmp_path}/photoz': a relative path starts at the working folder); "
            "pass an existing folder of images, a TFDS name (imagenet_a) or 'sample'.",
        ),
        (
            f"{tmp_path}/photoz",
            f"error: --dataset '{tmp_path}/photoz': no such folder; "
            "pass an existing folder of images, a TFDS name (imagenet_a) or 'sample'.",
        ),
        (
            "photos/cat.jpg",
            "error: --dataset 'photos/cat.jpg' is a file, not a folder: --dataset takes a "
            "folder, whose every file is an input; put the images to audit in a folder "
            "of their own and pass that folder.",
        ),
        (
            "cat.jpg",
            "error: --dataset 'cat.jpg': no such folder (read as "
            f"'{tmp_path}/cat.jpg': a relative path starts at the working folder); "
            "pass an existing folder of images, a TFDS name (imagenet_a) or 'sample'.",
        ),
    ):
        code = main(cli_args(dataset=dataset, model=linear_keras, output=tmp_path / "out"))
        assert (code, _error_lines(capsys.readouterr().err)) == (2, [expected])
    assert not (tmp_path / "out").exists()


@pytest.fixture
def no_gcloud_login(tmp_path, monkeypatch):
    """No Google Cloud credentials on this machine, whatever the developer's own are."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google.auth: not a Google Cloud VM


def test_a_gcs_output_without_credentials_exits_2_before_any_call_to_it(
    image_folder, linear_keras, no_gcloud_login, tmp_path, capsys, monkeypatch
):
    # Beam would connect anonymously, and offline retry for minutes.
    code = main(cli_args(dataset=image_folder["root"], model=linear_keras, output="gs://b/audit"))
    err = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: --output 'gs://b/audit' needs Google Cloud credentials")
    assert "gcloud auth application-default login" in err[0]
    # With credentials (an authorized user's, read without a call), the check passes.
    _log_in_to_gcloud(tmp_path, monkeypatch)
    from pipeline.runner import check_credentials

    check_credentials("gs://b/audit")


def _log_in_to_gcloud(tmp_path: Path, monkeypatch) -> None:
    """Google Cloud credentials of an authorized user, which google.auth reads without a
    call (a real login's; they would be refused by the servers, which are not asked)."""
    key = tmp_path / "adc.json"
    key.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "c",
                "client_secret": "s",
                "refresh_token": "r",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))


def test_a_gcs_dataset_without_credentials_or_storage_exits_2_naming_why(
    linear_keras, no_gcloud_login, unreachable_storage, tmp_path, capsys, monkeypatch
):
    # The launch looked the folder up through Beam with neither checked: anonymously and
    # offline, Beam retried for 120 s, then the error line was Beam's RetryError, no fix.
    args = cli_args(dataset="gs://b/images", model=linear_keras, output=tmp_path / "out")
    assert main(args) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert err[0].startswith("error: --dataset 'gs://b/images' needs Google Cloud credentials")
    assert "gcloud auth application-default login" in err[0]
    # Logged in, where storage does not answer: the probe's reason, not Beam's retries.
    _log_in_to_gcloud(tmp_path, monkeypatch)
    assert main(args) == 2
    err = _error_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert err[0].startswith("error: Cannot reach Google Cloud Storage (storage.invalid:4443: ")
    assert err[0].endswith(
        "to read 'gs://b/images'; reading a gs:// image folder needs network access."
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("again", [[], ["--resume"]])
def test_a_gcs_output_whose_storage_cannot_be_reached_exits_2_before_the_model_loads(
    again,
    image_folder,
    unloadable_keras,
    no_gcloud_login,
    unreachable_storage,
    tmp_path,
    monkeypatch,
):
    # A gs:// --output was first called as the run claimed it, once the model had loaded
    # (minutes for a large one); so was a --resume's earlier run. Where storage cannot be
    # reached, its probe's reason now, before the model loads, in a real process: a
    # model that cannot load would have said its own error.
    _log_in_to_gcloud(tmp_path, monkeypatch)
    args = cli_args(dataset=image_folder["root"], model=unloadable_keras, output="gs://b/audit")
    done = _command([*args, *again])
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = _error_lines(done.stderr)
    assert line.startswith("error: Cannot reach Google Cloud Storage (storage.invalid:4443: ")
    assert line.endswith(
        "to write 'gs://b/audit'; writing a run's --output needs network access."
    ), done.stderr[-3000:]


def test_a_resume_of_a_gcs_output_holding_no_run_exits_2_before_the_model_loads(
    image_folder, unloadable_keras, gcs_stub
):
    # Refused by the --output's listing or one look at its manifest (da6194d), untested
    # for want of a bucket offline: against the stub now, in a real process whose model
    # cannot load (a load would have said its own error). Nothing is written there: the
    # resume's read of the manifest (earlier_manifest) refuses it, the one look at it.
    args = cli_args(dataset=image_folder["root"], model=unloadable_keras, output="gs://bucket/run")
    done = _command([*args, "--resume"])
    assert done.returncode == 2, done.stderr[-3000:]
    assert _error_lines(done.stderr) == [
        "error: --resume: no earlier run in --output 'gs://bucket/run' (no manifest.json, "
        "which a run writes as it starts); run without --resume to start one."
    ]
    assert "Auditing" not in done.stderr
    asked = [r for r in gcs_stub.requests if r != "POST /token"]
    assert all(r.startswith("GET /storage/v1/b/bucket") for r in asked), asked  # no write
    manifest = [r for r in asked if "/o/run%2Fmanifest.json" in r]
    assert len(manifest) == 1 and "alt=media" not in manifest[0], manifest  # none to download


def test_a_resume_of_a_gcs_output_holding_no_run_is_refused_by_its_manifest_alone(
    image_folder, unloadable_keras, gcs_stub
):
    # Refused by a look of its own (_check_remote_run_to_resume) after the folder's
    # listing (12 requests), and again by the resume's read of the manifest: the read
    # alone now, before the folder is listed, and before a file of the user's in its
    # results/ is named (as a local --output's is, check_a_run_to_resume).
    gcs_stub.objects["run/results/notes.txt"] = b"mine"
    args = cli_args(dataset=image_folder["root"], model=unloadable_keras, output="gs://bucket/run")
    with pytest.raises(ValueError) as caught:
        prepare([*args, "--resume"])
    assert str(caught.value) == (
        "--resume: no earlier run in --output 'gs://bucket/run' (no manifest.json, which a "
        "run writes as it starts); run without --resume to start one."
    )
    asked = [r.split("?")[0] for r in gcs_stub.requests if r != "POST /token"]
    assert asked == [
        "GET /storage/v1/b/bucket/o/run%2F.lock",  # is a live run holding it?
        "GET /storage/v1/b/bucket/o/run%2Fmanifest.json",
    ]


def test_a_gcs_output_whose_credentials_google_refuses_is_refused_before_the_model_loads(
    image_folder, unloadable_keras, gcs_stub
):
    # A key Google no longer accepts (deleted, revoked): the look for a live run's lock
    # took the refusal for "no lock", the model loaded, then the run failed
    # ("the run failed: RefreshError: ('invalid_grant: ...', {...})", exit 1). A
    # --resume's read of the manifest said it, after this look.
    gcs_stub.token_refused = True
    args = cli_args(dataset=image_folder["root"], model=unloadable_keras, output="gs://bucket/run")
    with pytest.raises(ValueError) as caught:
        prepare(args)
    assert str(caught.value) == (
        "--output 'gs://bucket/run' cannot be read ([Errno 13] Permission denied (the Google "
        "Cloud credentials in use were refused: invalid_grant: Invalid JWT Signature): "
        "'gs://bucket/run/.lock'); renew the Google Cloud credentials in use (`gcloud auth "
        "application-default login`, or GOOGLE_APPLICATION_CREDENTIALS naming a key Google "
        "still accepts), then run the same command again."
    )


def test_a_gcs_output_the_credentials_may_not_read_is_refused_before_the_model_loads(
    image_folder, unloadable_keras, gcs_stub
):
    # Without storage.objects.get there (roles/storage.objectCreator), the look for a
    # live run's lock took Google's 403 for "no lock", the model loaded, then taking
    # the lock (its FileSystems.exists) failed with Google's "403 GET http://...". The
    # job reads there anyway: the lock, the manifest at its end, a resume's rows.
    gcs_stub.forbidden.add("run/.lock")
    args = cli_args(dataset=image_folder["root"], model=unloadable_keras, output="gs://bucket/run")
    with pytest.raises(ValueError) as caught:
        prepare(args)
    said = str(caught.value)
    assert said.startswith(
        "--output 'gs://bucket/run' cannot be read ([Errno 13] Permission denied (stub@stub.iam."
        "gserviceaccount.com does not have storage.objects.get access to the Google Cloud "
    ), said
    assert said.endswith(
        "'gs://bucket/run/.lock'); the Google Cloud credentials in use need read access to it "
        "(roles/storage.objectViewer on its bucket; `gcloud auth application-default login` or "
        "GOOGLE_APPLICATION_CREDENTIALS for others), then run the same command again."
    ), said


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_a_gcs_output_the_credentials_may_not_list_is_refused_before_the_model_loads(
    image_folder, unloadable_keras, gcs_stub, flags
):
    # earlier_run read a refused listing as no earlier run: the run then wrote beside
    # the run there (without a flag) or kept its files (--overwrite), the model loaded
    # first. In process: `prepare` refuses it before the model, which cannot load.
    gcs_stub.objects["run/manifest.json"] = b"{}"
    gcs_stub.objects["run/results/part-00000-of-00001.parquet"] = b"rows"
    gcs_stub.unlistable = True
    args = cli_args(dataset=image_folder["root"], model=unloadable_keras, output="gs://bucket/run")
    with pytest.raises(ValueError) as caught:
        prepare([*args, *flags])
    said = str(caught.value)
    assert said.startswith(
        "--output 'gs://bucket/run' cannot be listed ([Errno 13] Permission denied "
        "(stub@stub.iam.gserviceaccount.com does not have storage.objects.list access to the "
    ), said
    assert said.endswith(
        "'gs://bucket/run/results/'); the Google Cloud credentials in use need read access to "
        "it (roles/storage.objectViewer on its bucket; `gcloud auth application-default login` "
        "or GOOGLE_APPLICATION_CREDENTIALS for others), then run the same command again."
    ), said
    assert "http://" not in said and "\n" not in said
    assert not any(r.startswith(("POST /upload", "DELETE")) for r in gcs_stub.requests)


def test_a_gcs_dataset_the_credentials_may_not_list_exits_2_before_the_model_loads(
    tmp_path, unloadable_keras, gcs_stub
):
    # Cloud Storage's 403 to the listing at launch (check_folder_exists) was said as
    # "Cannot list image folder ...: Match operation failed with exceptions {...}",
    # Beam's nested reprs and the request's URL, no fix.
    gcs_stub.objects["img/a.png"] = b"png"
    gcs_stub.unlistable = True
    args = cli_args(dataset="gs://bucket/img", model=unloadable_keras, output=tmp_path / "out")
    done = _command(args)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = _error_lines(done.stderr)
    assert line.startswith(
        "error: --dataset 'gs://bucket/img' cannot be listed ([Errno 13] Permission denied "
        "(stub@stub.iam.gserviceaccount.com does not have storage.objects.list access to the "
    ), line
    assert line.endswith(
        "'gs://bucket/img/'); the Google Cloud credentials in use need read access to it "
        "(roles/storage.objectViewer on its bucket; `gcloud auth application-default login` "
        "or GOOGLE_APPLICATION_CREDENTIALS for others), then run the same command again."
    ), line
    assert "http://" not in line and not (tmp_path / "out").exists()


def test_a_summary_the_credentials_may_not_read_back_is_one_error_line(
    gcs_stub, folder_run, capsys
):
    # Credentials whose read access to a gs:// run ended while it ran (without it from
    # the start, the launch is refused: its lock cannot be read): the summary's read of its results (Beam's FileSystems.open) ended the finished run
    # in Google's Forbidden, a traceback. In process: the run's end (_finished) as is.
    from pipeline.__main__ import _finished

    output = Path(folder_run["output"])
    for path in filter(Path.is_file, output.rglob("*")):
        gcs_stub.objects[f"run/{path.relative_to(output)}"] = path.read_bytes()
    shard = sorted(n for n in gcs_stub.objects if n.startswith("run/results/"))[0]
    gcs_stub.forbidden.add(shard)
    manifest = {**json.loads((output / "manifest.json").read_text()), "output": "gs://bucket/run"}
    assert _finished(manifest) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        "error: the run finished, its results are in gs://bucket/run, but its summary cannot "
        "read them: [Errno 13] Permission denied (stub@stub.iam.gserviceaccount.com does not "
    ), line
    assert line.endswith(
        f"'gs://bucket/{shard}'; the Google Cloud credentials in use need read access to it "
        "(roles/storage.objectViewer on its bucket; `gcloud auth application-default login` or "
        "GOOGLE_APPLICATION_CREDENTIALS for others), then read them with python -m "
        "pipeline.report."
    ), line


def test_the_tolerance_line_a_gs_shard_refused_to_names_the_shard(gcs_stub, folder_run):
    # Its read (pd.read_parquet of gs://.../results, Arrow's own client) said Arrow's
    # whole status, about 700 characters, and named no file.
    from pipeline.summary import tolerance_summary

    output = Path(folder_run["output"])
    for path in filter(Path.is_file, output.rglob("*")):
        gcs_stub.objects[f"run/{path.relative_to(output)}"] = path.read_bytes()
    shard = sorted(n for n in gcs_stub.objects if n.startswith("run/results/"))[-1]
    config = json.loads((output / "manifest.json").read_text())["config"]
    said = tolerance_summary("gs://bucket/run", config)
    assert said.startswith("Not within the tolerance: 1 of 4 rows "), said
    assert said == tolerance_summary(str(output), config)
    gcs_stub.forbidden.add(shard)
    with pytest.raises(PermissionError) as caught:
        tolerance_summary("gs://bucket/run", config)
    assert caught.value.filename == f"gs://bucket/{shard}"
    assert "storage.objects.get" in str(caught.value) and len(str(caught.value)) < 400


def test_overridden_flags_are_the_ones_whose_last_value_counts():
    command = "--dataset sample --steps=12 --dataset /x --steps 8 --steps 9 --model m".split()
    assert overridden_flags(command) == ["--dataset", "--steps"]
    # By any of its names: Beam's --machine_type is --worker_machine_type.
    assert overridden_flags(["--worker_machine_type", "a", "--machine_type=b"]) == [
        "--worker_machine_type"
    ]
    # Flags that accumulate are not overridden: both values count.
    accumulate = "--experiments a --experiment=b --extra_package p --extra_package q"
    assert overridden_flags(accumulate.split()) == []
    assert overridden_flags(["--overwrite", "--overwrite", "--no_such", "--no_such"]) == [
        "--overwrite",
        "--no_such",
    ]


def test_help_lists_every_project_flag_with_defaults():
    done = _python("", "-m", "pipeline", "--help")
    assert done.returncode == 0, done.stderr
    parser = argparse.ArgumentParser()
    AuditOptions._add_argparse_args(parser)
    flags = [a.option_strings[0] for a in parser._actions if a.option_strings[0] != "-h"]
    assert len(flags) >= 25
    for flag in flags:
        assert flag in done.stdout, flag
    text = " ".join(done.stdout.split())
    defaults = AttributionConfig()
    for default in (
        f"(default: {defaults.steps})",
        "(default: riemann_trapezoid)",
        f"(default: {defaults.tolerance})",
    ):
        assert default in text
    assert "Beam's own flags pass through" in done.stdout and "--runner" in done.stdout
    # How to launch on Dataflow, and check it offline, is said where the flags are.
    assert "--runner DataflowRunner --project --region --temp_location gs://" in text
    assert "add --dry_run=True --no_auth to build the job offline" in text
    assert "2 bad configuration, 130 interrupted" in text
    assert not done.stderr.strip()  # no TensorFlow banner for --help


def test_help_loads_neither_beam_nor_tensorflow():
    # Beam alone took a second to import: the flags' text needs neither.
    code = (
        "import sys; from pipeline.__main__ import main; main(['--help']); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'apache_beam', 'tensorflow'}))"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["pipeline.report", "pipeline.sanity"])
@pytest.mark.parametrize("argv", [["--help"], ["--input", "x", "--image_rot", "y"]])
def test_the_reading_commands_help_and_flag_errors_load_neither_beam_nor_tensorflow(command, argv):
    # `pipeline.sanity --help` took 4.9 s and `pipeline.report --help` 2.7 s (their
    # imports); a misspelt flag as long before its one error line.
    done = _python("", "-X", "importtime", "-m", command, *argv)
    assert done.returncode == (0 if argv == ["--help"] else 2), done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not {m.split(".")[0] for m in imported} & {"apache_beam", "tensorflow", "matplotlib"}
    said = "usage: python -m " + command if argv == ["--help"] else "did you mean --image_root"
    assert said in done.stdout + done.stderr


def _help_entries(text: str) -> dict[str, str]:
    """`--help` text: flag -> its entry (usage and help), on one line."""
    section = text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    entries = re.split(r"\n(?=  -)", section)
    return {e.split()[0]: " ".join(e.split()) for e in entries if e.startswith("  --")}


def test_help_says_each_flags_default_as_the_readme_table_does():
    # README's table gives every flag a default ("off" for a switch); --help showed
    # none for --no_download, --overwrite, --resume and --verbose.
    from pipeline.options import help_text  # noqa: PLC0415

    entries = _help_entries(help_text())
    assert sorted(entries) == sorted(_readme_flag_table())
    no_default = [f for f, e in entries.items() if "default" not in e.lower() and f != "--output"]
    assert no_default == []
    for switch in ("--no_download", "--overwrite", "--resume", "--verbose"):
        assert entries[switch].endswith("(default: off)"), entries[switch]


def test_help_says_the_bounds_and_units_the_launch_and_the_report_hold_flags_to():
    # --image_size gave no unit, --faithfulness_steps not that the launch refuses more
    # steps than the input's pixels, and the report's --gallery not its bound of 100,
    # which README's flag table and Report section state.
    from pipeline.flags import REPORT_GALLERY_MAX  # noqa: PLC0415
    from pipeline.options import help_text  # noqa: PLC0415
    from transforms.plots import GRID_MAX_ROWS  # noqa: PLC0415

    entries = _help_entries(help_text())
    assert "Model input side in pixels, 8 to 4096" in entries["--image_size"]
    assert "2 to 1024 and at most the model input's pixels" in entries["--faithfulness_steps"]
    assert REPORT_GALLERY_MAX == GRID_MAX_ROWS
    done = _python("", "-m", "pipeline.report", "--help")
    assert f"0 (none) to {GRID_MAX_ROWS}; default 16" in _help_entries(done.stdout)["--gallery"]


def test_help_says_what_each_choice_of_a_flag_does():
    # The values DESIGN.md explains are explained where users look first, not only listed.
    from pipeline.options import help_text

    text = " ".join(help_text().split())
    for explained in (
        "top_k (one row per each of the --top_k classes)",
        "raw (the model's output, a logit for most models)",
        "softmax (the class probability)",
        "full (H x W x C), pixel (H x W, the channel sum) or none (metadata only)",
        "float16 halves the storage",
        "black (the range's low end), white (its high end), grey (its middle), "
        "blur (the image blurred) or noise (uniform, --seed)",
    ):
        assert explained in text, explained


# DESIGN.md's command line (its contract): each flag, and the values it names for it.
_DESIGN_FLAGS = (
    "--dataset --split --model --output --steps --method --baseline --target --score --top_k "
    "--tolerance --faithfulness --class_names --batch_size --image_size --input_range "
    "--label_offset --attributions --attribution_dtype"
).split()
_DESIGN_CHOICES = {
    "--method": "gausslegendre riemann_trapezoid riemann_left riemann_right riemann_middle",
    "--baseline": "black white grey blur noise black,blur",  # several are averaged
    "--target": "predicted label top_k",
    "--score": "raw softmax",
    "--attributions": "full pixel none",
    "--attribution_dtype": "float16 float32",
    "--faithfulness": "none",
    "--tolerance": "0",
}
_DESIGN_VALUES = [(flag, v) for flag, values in _DESIGN_CHOICES.items() for v in values.split()]


def _readme_flag_table() -> dict[str, list[str]]:
    """README's flag table ("Running it"): flag -> its cells (flag, meaning, default)."""
    section = Path(ROOT, "README.md").read_text().split("## Running it", 1)[1]
    section = section.split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        if line.startswith("| `--"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            table[cells[0].strip("`")] = cells
    return table


def test_the_flags_design_names_are_the_jobs_with_its_split_default():
    parser = argparse.ArgumentParser(add_help=False)
    AuditOptions._add_argparse_args(parser)
    declared = {a.option_strings[0]: a for a in parser._actions}
    assert [flag for flag in _DESIGN_FLAGS if flag not in declared] == []
    assert declared["--split"].default == "test"  # "TFDS split spec, default `test`"


@pytest.mark.parametrize("flag, value", _DESIGN_VALUES)
def test_every_value_design_names_for_a_flag_is_accepted_as_given(flag, value):
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from pipeline.options import attribution_config, check_flags  # noqa: PLC0415

    argv = check_flags([flag, value])
    config = attribution_config(PipelineOptions(argv).view_as(AuditOptions))
    if flag == "--baseline":
        assert ",".join(config.baselines) == value
    elif flag == "--tolerance":
        assert config.tolerance == float(value)
    else:
        assert getattr(config, flag[2:]) == value


def test_the_readme_flag_table_is_the_jobs_flags_with_their_defaults():
    # The table users read is the parser's: the same flags, each non-empty default in
    # its default cell (a switch's is "off"), and each accepted value of a flag with
    # a fixed set of them named in its meaning cell.
    from transforms.config import (  # noqa: PLC0415
        ATTRIBUTION_DTYPES,
        ATTRIBUTION_MODES,
        BASELINES,
        FAITHFULNESS_MODES,
        SCORES,
        TARGETS,
    )
    from transforms.ig import METHODS  # noqa: PLC0415

    parser = argparse.ArgumentParser(add_help=False)
    AuditOptions._add_argparse_args(parser)
    actions = {a.option_strings[0]: a for a in parser._actions}
    table = _readme_flag_table()
    assert sorted(table) == sorted(actions)
    for flag, action in actions.items():
        default = table[flag][2]
        if action.default is False:
            assert default == "off", flag
        elif action.default is not None:
            assert re.match(rf"`?{re.escape(str(action.default))}(`|\s|$)", default), flag
    choices = {
        "--method": METHODS,
        "--baseline": BASELINES,
        "--target": TARGETS,
        "--score": SCORES,
        "--attributions": ATTRIBUTION_MODES,
        "--attribution_dtype": ATTRIBUTION_DTYPES,
        "--faithfulness": FAITHFULNESS_MODES,
        "--jit_compile": actions["--jit_compile"].choices,
    }
    for flag, values in choices.items():
        assert [v for v in values if f"`{v}`" not in table[flag][1]] == [], flag


def test_a_baseline_given_twice_is_warned_of_naming_the_comma_form(
    image_folder, linear_keras, tmp_path, caplog
):
    # DESIGN: "several may be averaged". `--baseline black --baseline white` ran on
    # white alone without a word, as the last value of any flag counts.
    flags = _flags(image_folder, linear_keras, tmp_path / "out", "--faithfulness", "none")
    with caplog.at_level(logging.WARNING, logger="pipeline.options"):
        assert main([*flags, "--baseline", "black", "--baseline=white"]) == 0
    assert (
        "--baseline given 2 times (black, then white): the last counts, as for any flag; "
        "to average several baselines, give them in one, comma-separated: "
        "--baseline black,white." in caplog.messages
    )
    rows = pd.read_parquet(tmp_path / "out" / "results", columns=["baseline"])
    assert set(rows.baseline) == {"white"}


def test_a_baseline_given_twice_alike_is_not_warned_of(caplog):
    """`--baseline black --baseline black` was warned of ("the last counts") and offered
    `--baseline black` as the averaging form: nothing is lost when the values agree."""
    from pipeline.options import check_flags  # noqa: PLC0415

    with caplog.at_level(logging.WARNING, logger="pipeline.options"):
        check_flags(["--baseline", "black", "--baseline=black", "--baseline", " black"])
        assert not [m for m in caplog.messages if "--baseline given" in m]
        check_flags(["--baseline", "black,white", "--baseline", "black, white"])
        assert not [m for m in caplog.messages if "--baseline given" in m]
        check_flags(["--baseline", "black", "--baseline", "black", "--baseline", "white"])
    assert [m for m in caplog.messages if "--baseline given" in m] == [
        "--baseline given 3 times (black, then black, then white): the last counts, as for "
        "any flag; to average several baselines, give them in one, comma-separated: "
        "--baseline black,white."
    ]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_asked_of_run_from_python_says_where_the_help_is(flag):
    # It was 'unknown flag --help; did you mean --steps?'.
    with pytest.raises(pipeline_main.ConfigError, match=r"help_text\(\)\) lists the flags"):
        pipeline_main.run([flag])


def test_run_without_argv_in_a_notebook_names_the_arguments_it_read(monkeypatch):
    # A Jupyter kernel's own arguments: 'unknown flag -f' said nothing of where -f came from.
    kernel = ["ipykernel_launcher.py", "-f", "/tmp/kernel-1.json"]
    monkeypatch.setattr(sys, "argv", kernel)
    with pytest.raises(pipeline_main.ConfigError) as refused:
        pipeline_main.run()
    message = str(refused.value)
    assert message.startswith("unknown flag -f;")
    assert "sys.argv[1:] = ['-f', '/tmp/kernel-1.json']" in message
    assert "run(['--output'" in message


def test_a_missing_keras_file_is_named_as_read_from_the_working_folder_with_its_neighbours(
    tmp_path, monkeypatch, capsys
):
    """`--model models/missing.keras` said "no such .keras file" and no more: the error
    names the path it was read as, relative to the working folder, and the .keras files
    its folder holds (a typo shows), or that the folder itself is missing."""
    (tmp_path / "models").mkdir()
    for name in ("resnet.keras", "mobilenet.keras", "notes.txt"):
        (tmp_path / "models" / name).write_bytes(b"not read")
    monkeypatch.chdir(tmp_path)
    for model, found in [
        ("models/resnt.keras", f"'{tmp_path / 'models'}' holds mobilenet.keras, resnet.keras"),
        ("model/resnet.keras", f"its folder '{tmp_path / 'model'}' does not exist"),
    ]:
        assert main(["--output", str(tmp_path / "out"), "--model", model]) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert line.startswith(
            f"error: --model '{model}': no such .keras file (read as '{tmp_path / model}': a "
            "relative path starts at the working folder); "
        ), line
        assert line.endswith(f"{found}. Check the path."), line


@pytest.mark.parametrize("count", [5, 6])
def test_a_missing_keras_files_folder_of_more_than_five_is_counted_not_listed(
    count, tmp_path, capsys
):
    for i in range(count):
        (tmp_path / f"m{i}.keras").write_bytes(b"not read")
    assert main(["--output", str(tmp_path / "out"), "--model", str(tmp_path / "x.keras")]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    listed = ", ".join(f"m{i}.keras" for i in range(count))
    found = listed if count == 5 else "6 .keras files, none of this name"
    assert line.endswith(f"its folder '{tmp_path}' holds {found}. Check the path."), line


# `main` of each argument (a JSON list of flags) in turn, in one process (one each
# spent its time starting Python and Beam): before each, a `run:` line on stderr;
# after, a `ran:` line on stdout of its exit status and whether TensorFlow is loaded.
_MAIN_OF_EACH = (
    "import json, sys\n"
    "from pipeline.__main__ import main\n"
    "for argv in sys.argv[1:]:\n"
    "    print('run:', file=sys.stderr, flush=True)\n"
    "    code = main(json.loads(argv))\n"
    "    print('ran:', json.dumps([code, 'tensorflow' in sys.modules]), flush=True)\n"
)


def _tensorflow_imported_after(*argvs: list[str]) -> list[tuple[int, str, bool]]:
    """For each of `argvs`, run in turn by one process: `main`'s exit status, the
    stderr of that run, and whether TensorFlow had been imported by its end."""
    done = _python(_MAIN_OF_EACH, *[json.dumps(argv) for argv in argvs])
    assert done.returncode == 0, done.stderr
    ends = [json.loads(line[5:]) for line in done.stdout.splitlines() if line[:5] == "ran: "]
    errs = re.split(r"^run:\n", done.stderr, flags=re.M)[1:]
    assert len(ends) == len(errs) == len(argvs), done.stdout + done.stderr
    return [(code, err, loaded) for (code, loaded), err in zip(ends, errs, strict=True)]


def test_cheap_failures_come_before_any_model_load(tmp_path):
    keras_file = tmp_path / "file" / "m.keras"  # not in the missing one's folder
    keras_file.parent.mkdir()
    keras_file.write_bytes(b"not read")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text('{"model": {}, "config": {}}')
    held_run = {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    missing, slash, held, unknown, past_classes = _tensorflow_imported_after(
        ["--output", str(tmp_path / "a"), "--model", str(tmp_path / "missing.keras")],
        ["--output", str(tmp_path / "a"), "--model", f"{keras_file}/"],
        ["--output", str(tmp_path / "b")],
        ["--output", str(tmp_path / "c"), "--stpes", "3"],
        ["--output", str(tmp_path / "b"), "--top_k", "5000"],
    )
    # A missing model file: no TensorFlow, no model load.
    code, err, loaded = missing
    assert code == 2 and not loaded
    assert _error_lines(err) == [
        f"error: --model '{tmp_path / 'missing.keras'}': no such .keras file; its folder "
        f"'{tmp_path}' holds no .keras file. Check the path."
    ]
    # A .keras file named with a trailing '/': it was "no such file or folder".
    code, err, loaded = slash
    assert code == 2 and not loaded
    assert _error_lines(err) == [
        f"error: --model '{keras_file}/' ends in '/', a folder's name, but "
        f"'{keras_file}' is a file: drop the '/'."
    ]
    # An --output holding a run: refused before the bundled model is loaded (or converted).
    code, err, loaded = held
    assert code == 2 and not loaded
    assert "already holds a run (manifest.json)" in _error_lines(err)[0]
    # An unknown flag: refused before anything at all.
    code, err, loaded = unknown
    assert code == 2 and not loaded and not (tmp_path / "c").exists()
    # A --top_k past the bundled model's 1000 classes (the known models' table tells them,
    # without TensorFlow), on that folder holding a run: its own refusal, the folder as it was.
    code, err, loaded = past_classes
    assert code == 2 and not loaded
    assert _error_lines(err) == [
        "error: --top_k 5000 exceeds the model's 1000 classes; pass --top_k 1000 or less."
    ]
    assert {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()} == held_run


# The job run by `main` on each flag list of a JSON object {name: flags} (argv[1]) in
# turn, in one process as a shell starts it: each run's stdout and stderr follow a
# `run: NAME` line of their own, and its stderr ends in a `ran: STATUS` line.
_RUNS_IN_ONE_PROCESS = """
import json, sys
from pipeline.__main__ import main
for name, argv in json.loads(sys.argv[1]).items():
    print("run:", name, flush=True)
    print("run:", name, file=sys.stderr, flush=True)
    print("ran:", main(argv), file=sys.stderr, flush=True)
"""


# Beam's names for its DirectRunner, as `command_line_runs` gives them ("-": no --runner).
_DIRECT_RUNNERS = ("-", "direct", "SwitchingDirect")


@pytest.fixture(scope="module")
def command_line_runs(tmp_path_factory, linear_keras) -> dict:
    """Six runs of the job in one process (a process each spent most of its time
    starting TensorFlow), first "quiet", in which TensorFlow starts: `image_folder`'s
    images (--steps 4, no --runner) into `outputs["quiet"]`; "names": two images in
    folders named with a terminal escape and a line break (--steps 2, --faithfulness
    none); "fnapi": as "quiet", with --runner FnApiRunner; then, with --verbose and
    --steps 2, one run under each of Beam's names for its DirectRunner in
    `_DIRECT_RUNNERS` (no --runner, `direct`, `SwitchingDirect`). The process's
    $TMPDIR is `temp`, an empty folder. `[name]` is that run's (exit status, stdout,
    stderr); `stderr` the process's before the first --verbose run (the quiet runs'),
    `verbose_stderr` the rest; `root` the images'."""
    where = tmp_path_factory.mktemp("command_line_runs")
    root = make_image_folder(where / "images")["root"]
    rng = np.random.default_rng(0)
    names = where / "names"
    write_image(names / "cat\x1b[2J" / "a.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    write_image(names / "dog\nINFO x" / "b.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    outputs = {name: str(where / name / "out") for name in ("quiet", "names", "fnapi")}
    images = cli_args(dataset=root, model=linear_keras, steps=4)
    runs = {
        "quiet": [*images, "--output", outputs["quiet"]],
        "names": [
            *cli_args(dataset=names, model=linear_keras, output=outputs["names"], steps=2),
            *["--faithfulness", "none"],
        ],
        "fnapi": [*images, "--output", outputs["fnapi"], "--runner", "FnApiRunner"],
    }
    verbose = cli_args(dataset=root, model=linear_keras, steps=2, verbose=True)
    for runner in _DIRECT_RUNNERS:
        named = [] if runner == "-" else ["--runner", runner]
        runs[runner] = [*verbose, "--output", str(where / "direct" / runner), *named]
    (where / "temp").mkdir()
    done = _python(_RUNS_IN_ONE_PROCESS, json.dumps(runs), env={"TMPDIR": str(where / "temp")})
    assert done.returncode == 0, done.stderr[-3000:]
    outs = re.split(r"^run: .*\n", done.stdout, flags=re.M)[1:]
    errs = re.split(r"^run: .*\n", done.stderr, flags=re.M)[1:]
    assert len(outs) == len(errs) == len(runs), done.stderr[-3000:]
    quiet, verbose_stderr = done.stderr.split(f"run: {_DIRECT_RUNNERS[0]}\n", 1)
    found = {"stderr": quiet, "verbose_stderr": verbose_stderr, "root": root}
    found |= {"outputs": outputs, "temp": where / "temp"}
    for name, out, err in zip(runs, outs, errs, strict=True):
        err, status = err.rsplit("ran: ", 1)
        found[name] = (int(status), out, err)
    return found


def test_run_by_the_command_line_is_quiet_and_shows_progress(command_line_runs, linear_keras):
    # No --runner: the default DirectRunner, without Beam's note that it is one.
    code, out, err = command_line_runs["quiet"]
    assert code == 0, err
    noises = ("cuInit", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard")
    for noise in (*noises, "Missing pipeline option (runner)"):  # in any run's lines
        assert noise not in command_line_runs["stderr"], command_line_runs["stderr"]
    # What the model is fed, as the job decided it.
    root = command_line_runs["root"]
    assert f"Auditing 5 images of {root} with {linear_keras} (16x16 pixels" in err
    # Its Input fixes 16x16: --image_size is refused (exit 2), --input_range is not.
    assert "in [0, 1]; --input_range sets another) into" in err
    assert "progress: 5/5 images (100%)" in err and "images/s" in err
    # The follow-up commands name the interpreter that ran the job.
    output = command_line_runs["outputs"]["quiet"]
    assert f"{sys.executable} -m pipeline.report --input {output}" in out
    assert f'{sys.executable} -c "import pandas' in out


# `pipeline.run` from Python on the flags of argv[1] (JSON), then TF_CPP_MIN_LOG_LEVEL
# printed, then the command line's `main` on those of argv[2] (it sets the level for its
# whole process), each run's stdout and stderr after a `run: NAME` line of their own.
_RUN_THEN_MAIN = """
import json, os, sys
from pipeline import run
from pipeline.__main__ import main
for stream in (sys.stdout, sys.stderr):
    print("run: python", file=stream, flush=True)
run(json.loads(sys.argv[1]))
print(os.environ.get("TF_CPP_MIN_LOG_LEVEL"), flush=True)
for stream in (sys.stdout, sys.stderr):
    print("run: main", file=stream, flush=True)
sys.exit(main(json.loads(sys.argv[2])))
"""


@pytest.fixture(scope="module")
def python_then_ascii_run(tmp_path_factory, linear_keras) -> dict:
    """Two runs in one process as a shell starts it, without TF_CPP_MIN_LOG_LEVEL and
    with a stdout that takes ASCII alone (`PYTHONIOENCODING=ascii`, as a C locale
    without Python's UTF-8 mode gives, or a CI's setting); a process each spent most of
    its time starting TensorFlow. First "python", in which TensorFlow starts: a
    notebook's `pipeline.run` of `image_folder`'s images (--steps 2) into
    `outputs["python"]`; then "main": the command line's on those images with loose.png
    renamed café.png (--steps 2) into `outputs["main"]` (a folder named café). `status`:
    the process's exit status (main's); `[name]`: that run's (stdout, stderr)."""
    where = tmp_path_factory.mktemp("python_then_ascii_run")
    outputs = {"python": where / "out", "main": where / "café"}
    plain = make_image_folder(where / "images")["root"]
    accented = make_image_folder(where / "accented")["root"]
    shutil.move(Path(accented, "loose.png"), Path(accented, "café.png"))
    flags = {
        name: [*cli_args(dataset=root, model=linear_keras, output=outputs[name]), "--steps", "2"]
        for name, root in (("python", plain), ("main", accented))
    }
    argv = [json.dumps(f) for f in flags.values()]
    done = _python(_RUN_THEN_MAIN, *argv, env={"PYTHONIOENCODING": "ascii"})
    outs = re.split(r"^run: .*\n", done.stdout, flags=re.M)[1:]
    errs = re.split(r"^run: .*\n", done.stderr, flags=re.M)[1:]
    assert len(outs) == len(errs) == 2, done.stderr[-3000:]
    found = {"status": done.returncode, "outputs": outputs}
    return found | {name: (out, err) for name, out, err in zip(flags, outs, errs, strict=True)}


def test_a_run_from_python_is_quiet_and_leaves_no_log_level_to_later_processes(
    python_then_ascii_run,
):
    """A notebook's `run(...)` kept TF_CPP_MIN_LOG_LEVEL=3 in its process: every process
    it started later (a training script) inherited it, TensorFlow's errors hidden."""
    out, stderr = python_then_ascii_run["python"]
    assert "Traceback" not in stderr, stderr
    assert out.splitlines() == ["None"]
    for noise in ("cuInit", "cudart_stub", "absl::InitializeLog", "cpu_feature_guard"):
        assert noise not in stderr, stderr
    assert len(pd.read_parquet(python_then_ascii_run["outputs"]["python"] / "results")) == 4


def test_a_reader_that_stops_reading_stdout_fails_neither_help_nor_a_finished_run(
    image_folder, linear_keras, tmp_path
):
    for none in (False, True):  # `| head -0`, or no stdout at all (`>&-`)
        done = run_to_a_closed_stdout("pipeline", "--help", none=none)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "out")
    done = run_to_a_closed_stdout("pipeline", *args, "--steps", "2")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert len(pd.read_parquet(tmp_path / "out" / "results", columns=["image_id"])) == 4


def test_a_finished_run_prints_its_summary_to_an_ascii_stdout(python_then_ascii_run):
    """Names the stdout cannot encode (a C locale without UTF-8 mode, PYTHONIOENCODING=ascii)
    are escaped, as on stderr: the summary of a finished run was a UnicodeEncodeError
    traceback and exit 1. In a command to paste, such a name is written as its bytes
    (`$'caf\\xc3\\xa9'`): escaped by the stream inside shell quotes ('caf\\xe9'), it
    named another folder."""
    output = python_then_ascii_run["outputs"]["main"]
    printed, stderr = python_then_ascii_run["main"]
    assert python_then_ascii_run["status"] == 0 and "Traceback" not in stderr, stderr
    printed.encode("ascii")  # nothing but ASCII reached the stdout
    assert "caf\\xe9.png" in printed, printed  # prose: escaped as on stderr
    command = printed.splitlines()[-1].split(" -m pipeline.report ", 1)[1]
    assert bash_words(command, "C") == [
        b"--input",
        os.fsencode(output),
        b"--output",
        os.fsencode(output / "report.html"),
    ]


def _deprecated_call() -> None:
    """A call of a function TensorFlow marks deprecated: its notice is logged."""
    from tensorflow.python.util import deprecation

    @deprecation.deprecated(None, "Use something else.")
    def old_function():
        return 1

    old_function()


def _retracing_warning() -> None:
    """TensorFlow's own words, as its frequent-tracing detector logs them."""
    from tensorflow.python.platform import tf_logging

    tf_logging.warning(
        "5 out of the last 5 calls to <function f> triggered tf.function retracing. "
        "Tracing is expensive and ..."
    )


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize(
    "notice, words",
    [
        (_deprecated_call, "is deprecated and will be removed"),
        (_retracing_warning, "triggered tf.function retracing"),
    ],
    ids=["deprecation", "retracing"],
)
def test_tensorflows_notices_show_with_verbose_only(notice, words, verbose, caplog):
    from pipeline import logs

    tf_logger = logging.getLogger("tensorflow")
    filters, level = list(tf_logger.filters), tf_logger.level
    try:
        logs.configure_logging(not verbose)  # an earlier run in this process: replaced
        logs.configure_logging(verbose)
        with caplog.at_level(logging.WARNING):
            notice()
    finally:
        tf_logger.filters[:], tf_logger.level = filters, level
    assert (words in caplog.text) == verbose


def test_tensorflows_retracing_warning_of_a_keras_grouped_convolution_is_not_shown(
    image_folder, tmp_path, caplog
):
    """Keras runs a grouped convolution (ConvNeXt's, ResNeXt's) called eagerly through a
    tf.function it makes anew on each call: the launch's calls of a model of two such
    layers on its probe images logged TensorFlow's '5 out of the last 5 calls to
    <function conv.<locals>._conv_xla> triggered tf.function retracing' twice, a
    paragraph of advice on tf.functions the user did not write and cannot change.
    (TensorFlow warns twice per function and process: no other test here runs one.)"""
    import keras

    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.Conv2D(4, 3, groups=2)(layers.Conv2D(4, 3, groups=2)(layers.Conv2D(4, 3)(inputs)))
    model = str(tmp_path / "grouped.keras")
    keras.Model(inputs, layers.Dense(4)(layers.GlobalAveragePooling2D()(x))).save(model)
    assert main(_flags(image_folder, model, tmp_path / "out", "--faithfulness", "none")) == 0
    assert "triggered tf.function retracing" not in caplog.text


@pytest.mark.parametrize("verbose", [False, True])
def test_tfds_probes_of_version_folders_show_with_verbose_only(verbose, caplog):
    from pipeline import logs

    absl_logger = logging.getLogger("absl")
    filters = list(absl_logger.filters)
    try:
        logs.configure_logging(not verbose)  # an earlier run in this process: replaced
        logs.configure_logging(verbose)
        with caplog.at_level(logging.WARNING):
            absl_logger.warning("Variant folder %s has no dataset_info.json", "/d/mnist/3.0.1")
            absl_logger.warning("Another absl warning")
    finally:
        absl_logger.filters[:] = filters
    assert ("Variant folder /d/mnist/3.0.1" in caplog.text) == verbose
    assert "Another absl warning" in caplog.text


@pytest.mark.parametrize("verbose", [False, True])
def test_beams_runner_errors_show_their_traceback_with_verbose_only(verbose, caplog, monkeypatch):
    # A runner thread that lost a worker process logs pages of gRPC frames, from a
    # logger of Beam's runners: one line, its exception's first, unless --verbose.
    import threading  # noqa: PLC0415

    from pipeline import logs  # noqa: PLC0415

    monkeypatch.setattr(threading, "excepthook", threading.excepthook)  # set by logs
    beam, root = logging.getLogger("apache_beam"), logging.getLogger()
    level, handlers = beam.level, list(root.handlers)
    try:
        logs.configure_logging(verbose)
        try:
            raise RuntimeError("Socket closed\nmore detail")
        except RuntimeError:
            logging.getLogger("apache_beam.runners.worker.data_plane").exception("Failed to read")
    finally:
        beam.setLevel(level)
        root.handlers[:] = handlers
        for handler in handlers:
            logs._set_filter(handler, logs._BeamWithoutTraceback, False)
    assert ("Traceback" in caplog.text) == verbose, caplog.text
    if not verbose:
        assert caplog.messages == ["Failed to read (RuntimeError: Socket closed)"]


def test_progress_counts_each_batch_when_it_is_done(image_folder, linear_keras, tmp_path, caplog):
    # The progress step runs with RunInference, batch by batch: behind a Flatten
    # (a stage boundary for the DirectRunner) it saw every image only at the end.
    from pipeline import run  # noqa: PLC0415

    caplog.set_level(logging.DEBUG, logger="transforms.attribution")
    caplog.set_level(logging.DEBUG, logger="pipeline.progress")
    args = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path / "out")
    run([*args, "--steps", "4", "--batch_size", "1"], save_main_session=False)
    events = [
        "batch" if "attributed a batch" in r.getMessage() else "counted"
        for r in caplog.records
        if "attributed a batch" in r.getMessage() or "image (attributed)" in r.getMessage()
    ]
    assert events == ["batch", "counted"] * 4
    # The launcher logs the job's progress; the worker's own line would repeat it.
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert not any("in this worker" in line for line in lines)
    assert "progress: 5/5 images (100%)" in " ".join(lines)


def test_every_input_failing_exits_1_with_errors_by_stage(linear_keras, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg too")
    (folder / "notes.txt").write_text("not an image")
    code = main(cli_args(dataset=folder, model=linear_keras, output=tmp_path / "out"))
    out, err = capsys.readouterr()
    assert code == 1
    assert _error_lines(err) == [
        "error: no input gave a row: all 3 inputs failed (errors by stage above)."
    ]
    assert "Errors by stage (3" in out and "  decode: 3" in out
    # No row to read or render: no hint says how to.
    assert "Read them with pandas" not in out and "pipeline.report" not in out
    assert "x cannot decode" in out or "broken" in out or "x " in out
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert len(errors) == 3
    for name in ("b.jpg", "notes.txt"):
        (folder / name).unlink()
    code = main(cli_args(dataset=folder, model=linear_keras, output=tmp_path / "one"))
    assert code == 1 and _error_lines(capsys.readouterr().err) == [
        "error: no input gave a row: the 1 input failed (errors by stage above)."
    ]


@pytest.mark.parametrize("name", ["it's my run", "-a run"])  # a space, a quote, a dash
def test_the_printed_commands_work_as_printed_in_odd_folder_names(
    image_folder, linear_keras, tmp_path, capsys, monkeypatch, name
):
    monkeypatch.chdir(tmp_path)  # a relative --output, as typed
    args = cli_args(dataset=image_folder["root"], model=linear_keras, steps=2)
    assert main([*args, f"--output={name}"]) == 0
    out = capsys.readouterr().out.splitlines()
    reader, report = [out[i + 1].strip() for i, line in enumerate(out) if line.endswith(":")][-2:]
    done = subprocess.run(reader, shell=True, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "attribution_error" in done.stdout and "cat1.png" in done.stdout
    done = subprocess.run(report, shell=True, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / name / "report.html").is_file()


def test_the_printed_report_command_joins_a_dash_folder_to_its_flag(tmp_path, capsys, monkeypatch):
    # An --output of '-out' printed as '--input -out' is taken by argparse for two flags
    # (the test above names '-a run', whose space argparse takes for a value anyway).
    import shlex  # noqa: PLC0415

    from pipeline.flags import report_parser  # noqa: PLC0415
    from tests.known_rows import make_row, write_output  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    write_output(Path("-out"), [[make_row("a.png", 281, 281, 0.8, 0.001)]], dataset=".")
    print_summary(json.loads(Path("-out", "manifest.json").read_text()))
    (line,) = [line for line in capsys.readouterr().out.splitlines() if "pipeline.report" in line]
    words = shlex.split(line)
    assert words[words.index("pipeline.report") + 1 :] == [
        "--input=-out",
        "--output=-out/report.html",
    ]
    args = report_parser().parse_args(words[words.index("pipeline.report") + 1 :])
    assert (args.input, args.output) == ("-out", "-out/report.html")


def _good_and_broken(tmp_path, model) -> tuple[Path, list[str]]:
    """A folder of one good image and one broken, and the flags of a run on it."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_image(folder / "good.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return folder, cli_args(dataset=folder, model=model, output=tmp_path / "out", steps=2)


def test_resuming_a_finished_run_whose_only_failure_fails_again_exits_0(
    linear_keras, tmp_path, capsys
):
    _, args = _good_and_broken(tmp_path, linear_keras)
    assert main(args) == 0
    assert not (tmp_path / "out" / ".tmp").exists()  # the sinks' temp folder, left empty
    assert "results (1 row), errors in " in capsys.readouterr().out
    assert main([*args, "--resume"]) == 0  # the output still holds good.png's row
    out, err = capsys.readouterr()
    assert _error_lines(err) == []
    assert "(1 row, 0 of them from this run)" in out
    assert "2 inputs; 1 of them done before, their rows kept." in out
    assert pd.read_parquet(tmp_path / "out" / "results").image_id.tolist() == ["good.png"]
    # The resume wrote no row, and no empty results file beside the first run's.
    files = [f.name for f in (tmp_path / "out" / "results").iterdir()]
    assert len(files) == 1 and not files[0].startswith("part-resume")


def test_a_resume_whose_kept_rows_are_of_images_no_longer_in_the_folder_exits_0(
    linear_keras, tmp_path, capsys
):
    # The output still holds good.png's row (kept, with a warning), though no input of
    # the resume was done before and its one input failed again: not 'no input gave a row'.
    folder, args = _good_and_broken(tmp_path, linear_keras)
    assert main(args) == 0
    (folder / "good.png").unlink()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    out, err = capsys.readouterr()
    assert _error_lines(err) == []
    assert "results (1 row, 0 of them from this run)" in out
    assert pd.read_parquet(tmp_path / "out" / "results").image_id.tolist() == ["good.png"]


def test_the_end_of_run_table_tells_images_of_the_same_file_name_apart(linear_keras, tmp_path):
    for folder in (WNID_CAT, "n01440764"):
        write_image(tmp_path / "images" / folder / "x0.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    write_image(tmp_path / "images" / "only.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    args = cli_args(dataset=tmp_path / "images", model=linear_keras, output=tmp_path / "out")
    assert main([*args, "--steps", "2"]) == 0
    files = summary_table(str(tmp_path / "out"))["file"].tolist()
    assert sorted(files) == sorted([f"{WNID_CAT}/x0.png", "n01440764/x0.png", "only.png"])


def test_a_failure_while_running_exits_1_not_2(image_folder, linear_keras, tmp_path, capsys):
    output = tmp_path / "out"
    # A folder where the sink puts its one results file: the run fails as it ends. (A
    # file named results is refused at launch, exit 2.)
    (output / "results" / "part-00000-of-00001.parquet").mkdir(parents=True)
    code = main(_flags(image_folder, linear_keras, output))
    err = capsys.readouterr().err
    assert code == 1, err
    lines = _error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: the run failed: ")
    assert "--verbose" in lines[0]
    assert "Traceback" not in err  # Beam's own traceback log is for --verbose


def _saved_model(path, fn, batch=None) -> str:
    import tensorflow as tf

    weights = np.random.default_rng(0).normal(size=(SIZE * SIZE * 3, 4)).astype(np.float32)

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(weights)

        @tf.function(input_signature=[tf.TensorSpec([batch, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return fn(tf.reshape(x, [-1, SIZE * SIZE * 3]) @ self.w)

    tf.saved_model.save(Model(), str(path))
    return str(path)


def test_models_the_job_cannot_audit_are_refused_at_launch(image_folder, tmp_path, capsys, caplog):
    import tensorflow as tf

    cases = {
        "int": (lambda s: tf.cast(s * 100, tf.int32), None, "returns int32 scores"),
        "no_gradient": (tf.stop_gradient, None, "has no gradient with respect to its input"),
        "one_hot_argmax": (
            lambda s: tf.one_hot(tf.argmax(s, axis=1), 4),
            None,
            "has no gradient with respect to its input",
        ),
        "batch_of_1": (tf.identity, 1, "takes batches of exactly 1 image (1, 16, 16, 3)"),
        "drops_rows": (lambda s: s[:1], None, "returns shape (1, 4) for a batch of 2 images"),
        # A dict is read by name (test_a_call_returning_a_dict_...); a tuple is not.
        "tuple": (lambda s: (s, s), None, "returns a tuple, not one tensor"),
    }
    for name, (fn, batch, message) in cases.items():
        model = _saved_model(tmp_path / name, fn, batch)
        assert main(_flags(image_folder, model, tmp_path / "out")) == 2, name
        err = capsys.readouterr().err
        (line,) = _error_lines(err)
        assert line.startswith(f"error: --model '{model}' {message}"), line
        assert "Traceback" not in err
        # No advice on reading the outputs of a model that is refused (one-hot rows sum to 1).
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], name
    assert not (tmp_path / "out").exists()


def _training_mode_export(path, *layers) -> str:
    """A SavedModel of a Keras model of `layers` (between a convolution and its scores)
    exported calling it with training=True, as a hand-written export can."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(64, 3, activation="relu")(inputs)
    for layer in layers:
        x = layer(x)
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x)))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda x: model(x, training=True),
        input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)],
    )
    archive.write_out(str(path), verbose=False)
    return str(path)


def _augmented_export(path) -> str:
    """A Keras model as its image tutorials build it, random augmentation layers
    first, exported by Keras 3's own `model.export`, which keeps them on at serving."""
    import keras

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            layers.RandomFlip(),
            layers.RandomRotation(0.1),
            layers.Conv2D(4, 3, activation="relu", bias_initializer="glorot_uniform"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(5, bias_initializer="glorot_uniform"),
        ]
    )
    model.export(str(path), verbose=False)
    model.save(f"{path}.keras")  # the fix the refusal names: the job calls it in inference mode
    return str(path)


def test_a_model_scoring_an_image_at_random_or_by_its_batch_is_refused_at_launch(
    image_folder, tmp_path, capsys
):
    """A model exported calling Keras with training=True: its Dropout drops units at
    random on each call, its BatchNormalization normalises by the batch's statistics, so
    an image's score moved between calls and with the images beside it. It ran, and
    every row's map was noise, flagged with an attribution_error of 16000 % to 47000 %
    and nothing saying why. So did Keras 3's own export of a model with augmentation
    layers (RandomFlip, RandomRotation), which stay on: they flip and turn each image at
    random, which the launch's plain probe images did not show (a plain image's flip is
    itself) and which moved a small net's scores by less than 1 %."""
    import keras

    layers = keras.layers
    again = "gives other scores for the same images on each call"
    cases = {
        "dropout": (lambda path: _training_mode_export(path, layers.Dropout(0.5)), again),
        "augmentation": (_augmented_export, again),
    }
    for name, (export, says) in cases.items():
        model = export(tmp_path / name)
        assert main(_flags(image_folder, model, tmp_path / "out")) == 2, name
        err = capsys.readouterr().err
        (line,) = _error_lines(err)
        assert line.startswith(f"error: --model '{model}' {says} ("), line
        assert line.endswith(
            "Integrated Gradients needs an image's scores to depend on it alone, as a "
            "model's do in inference mode: export it calling the model with training=False, "
            "without its augmentation layers (Keras 3's model.export keeps them on), or save "
            "a Keras model as a .keras file (model.save('model.keras')) and pass that: the "
            "job calls it in inference mode."
        ), line
        assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    # That .keras file of the augmented model runs, its scores those of inference mode.
    saved = f"{tmp_path / 'augmentation'}.keras"
    assert main(_flags(image_folder, saved, tmp_path / "out", "--faithfulness", "none")) == 0


def _fused_batch_norm_module(path) -> str:
    """A tf.Module whose __call__ runs tf.nn.fused_batch_norm in training mode (its
    graph's FusedBatchNormV3, is_training at its default, true) between a convolution and
    its scores, saved as TensorFlow saves it."""
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]))
            self.dense = tf.Variable(tf.random.stateless_normal([4, 5], seed=[1, 3]))

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            h = tf.nn.conv2d(x, self.kernel, 1, "SAME")
            h, _, _ = tf.compat.v1.nn.fused_batch_norm(h, tf.ones([4]), tf.zeros([4]))
            return tf.reduce_mean(tf.nn.relu(h), [1, 2]) @ self.dense

    tf.saved_model.save(Model(), str(path))
    return str(path)


def _tf_keras_training_batch_norm(path) -> str:
    """A Keras 2 (tf_keras) model whose BatchNormalization is called with training=True
    as it is built, saved in the TF format: every trace of its call normalises by the
    batch (a fused BatchNormalization, in a function of its own)."""
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input((SIZE, SIZE, 3))
    x = layers.BatchNormalization()(layers.Conv2D(4, 3)(inputs), training=True)
    model = tf_keras.Model(inputs, layers.Dense(5)(layers.GlobalAveragePooling2D()(x)))
    model.save(str(path), save_format="tf")
    return str(path)


def _keras_training_batch_norm_export(path) -> str:
    """Keras 3's own model.export of a model whose BatchNormalization is called with
    training=True as it is built: the export's call keeps it (tf.nn.moments over the batch)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs), training=True)
    x = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, x).export(str(path), verbose=False)
    return str(path)


def test_a_saved_model_normalising_by_its_batch_is_refused_at_launch_naming_its_op(
    image_folder, tmp_path, capsys
):
    """A SavedModel whose called function runs a BatchNormalization in training mode
    scores an image by the other images of its call: the same image's scores moved with
    the images beside it. A remote job's launcher read its signature from the proto and
    passed it (nothing there draws random numbers), so its maps were wrong or its
    workers failed; a local one refused it only by the probe's behaviour, naming no op.
    Now its graph refuses it at launch, either way, naming the op and the export that fits:
    a fused op in training mode (a tf.Module's, a tf_keras layer's function) or
    tf.nn.moments over the batch (Keras 3's own export, an export calling training=True)."""
    import keras
    import tensorflow as tf

    from transforms import tf_model

    # Keras numbers its layers' names by how many it built in this process.
    moments = re.compile(r"its op '\w+/batch_normalization[_\d]*/moments/mean' \(Mean\)")
    cases = {
        "keras_export_archive": (
            lambda path: _training_mode_export(path, keras.layers.BatchNormalization()),
            moments,
        ),
        "keras_model_export": (_keras_training_batch_norm_export, moments),
        "fused_module": (
            _fused_batch_norm_module,
            re.compile(r"its op 'FusedBatchNormV3' \(FusedBatchNormV3 of function '__inference"),
        ),
        "tf_keras": (
            _tf_keras_training_batch_norm,
            re.compile(r"\(FusedBatchNormV3 of function '__inference_batch_normalization(_\d+)?_"),
        ),
    }
    images = tf.constant(np.random.default_rng(0).uniform(size=(3, SIZE, SIZE, 3)), tf.float32)
    for name, (export, op) in cases.items():
        model = export(tmp_path / name)
        loaded = tf.saved_model.load(model)
        call = getattr(loaded, "serve", None) or loaded.signatures["serving_default"]
        scores = [call(tf.gather(images, pair)) for pair in ([0, 1], [0, 2])]
        scores = [next(iter(s.values())) if isinstance(s, dict) else s for s in scores]
        assert np.abs(scores[0][0] - scores[1][0]).max() > 1e-3, name  # image 0's scores moved
        assert main(_flags(image_folder, model, tmp_path / "out")) == 2, name
        err = capsys.readouterr().err
        (line,) = _error_lines(err)
        assert line.startswith(
            f"error: --model '{model}' scores an image by the other images of its batch: its op "
        ), line
        assert op.search(line), line
        assert line.endswith(
            "normalises by the batch's own statistics, as a BatchNormalization in training "
            "mode does; Integrated Gradients needs an image's scores to depend on it alone: "
            "export it calling the model with training=False (in inference mode)."
        ), line
        assert "Traceback" not in err
        with pytest.MonkeyPatch.context() as patch:  # a remote job's launcher: no load
            patch.setattr(tf_model, "_load", lambda m: pytest.fail(f"{m} was loaded"))
            with pytest.raises(ValueError, match="its op .* normalises by the batch"):
                tf_model.resolve_model(model, load=False)
    assert not (tmp_path / "out").exists()


def test_a_call_returning_a_tuple_is_refused_naming_its_items_and_the_dict_that_runs(tmp_path):
    """A __call__ returning (logits, probabilities) was refused with 'returns a tuple,
    not one tensor; a classifier returning scores [batch, classes] is needed': no word
    of what it holds or of the dict by name the job reads (as a signature's)."""
    import tensorflow as tf

    from transforms.tf_model import resolve_model

    model = _saved_model(tmp_path / "tuple", lambda s: (s, tf.nn.softmax(s)))
    with pytest.raises(ValueError) as refused:
        resolve_model(model)
    assert str(refused.value) == (
        f"--model '{model}' returns a tuple, not one tensor (its 2 items: [2, 4] float32, "
        "[2, 4] float32); a classifier returning scores [batch, classes] is needed: save its "
        "__call__ returning the scores alone, or a dict of named outputs "
        "(return {'logits': ..., 'probabilities': ...}), of which the job audits the one "
        "named logits."
    )
    named = _saved_model(tmp_path / "dict", lambda s: {"logits": s, "probabilities": s})
    assert resolve_model(named).num_outputs == 4


def test_scores_with_extra_axes_of_size_1_are_refused_naming_the_reshape(
    image_folder, tmp_path, capsys
):
    """A fully convolutional head's [N, 1, 1, classes] (or [N, classes, 1]), or one score
    per image [N], was refused with 'a classifier returning [batch, classes] is needed'
    alone: the fix is one reshape."""
    cases = {
        "conv_head": (lambda s: s[:, None, None, :], "(2, 1, 1, 4)", 4),
        "column": (lambda s: s[:, :, None], "(2, 4, 1)", 4),
        "one_score": (lambda s: s[:, 0], "(2,)", 1),
    }
    for name, (fn, shape, classes) in cases.items():
        model = _saved_model(tmp_path / name, fn)
        assert main(_flags(image_folder, model, tmp_path / "out")) == 2, name
        (line,) = _error_lines(capsys.readouterr().err)
        assert line == (
            f"error: --model '{model}' returns shape {shape} for a batch of 2 images; a "
            "classifier returning [batch, classes] is needed: export it with its scores "
            f"reshaped to [batch, {classes}] inside it (tf.reshape(scores, [-1, {classes}]))."
        ), line
    assert not (tmp_path / "out").exists()


def test_a_keras_conv_head_of_extra_axes_is_told_the_keras_reshape_that_runs(
    image_folder, tmp_path, capsys
):
    """A .keras model of a fully convolutional head [N, 1, 1, K] was told to reshape its
    scores with tf.reshape inside it: in a .keras model that takes a Lambda layer, which
    the job refuses to load. It is told the Keras Reshape re-wrap, which runs."""
    import keras

    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.GlobalAveragePooling2D(keepdims=True)(layers.Conv2D(4, 3)(inputs))
    model = str(tmp_path / "conv_head.keras")
    keras.Model(inputs, layers.Conv2D(5, 1)(x)).save(model)
    assert main(_flags(image_folder, model, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.endswith(
        "returns shape (2, 1, 1, 5) for a batch of 2 images; a classifier returning [batch, "
        "classes] is needed: save it with its scores reshaped to [batch, 5]: m = "
        f"keras.saving.load_model({model!r}); keras.Model(m.inputs, keras.layers.Reshape("
        "(5,))(m.output)).save('scores.keras'); pass scores.keras."
    ), line
    m = keras.saving.load_model(model)
    scores = str(tmp_path / "scores.keras")
    keras.Model(m.inputs, keras.layers.Reshape((5,))(m.output)).save(scores)
    assert main([*_flags(image_folder, scores, tmp_path / "out"), "--faithfulness", "none"]) == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["model"]["num_outputs"] == 5


def test_a_keras_model_of_one_named_input_in_a_dict_is_called_with_one(
    image_folder, tmp_path, capsys
):
    """keras.Model({'image': inputs}, ...) was called with a bare tensor: right scores,
    but Keras' 'UserWarning: The structure of `inputs` doesn't match the expected
    structure' printed on stderr three times a run (launch, worker load, compile)."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(inputs))
    model = str(tmp_path / "named.keras")
    keras.Model({"image": inputs}, outputs).save(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*_flags(image_folder, model, tmp_path / "out"), "--faithfulness", "none"]) == 0
    assert not [w for w in caught if "expected structure" in str(w.message)]
    assert "expected structure" not in capsys.readouterr().err
    rows = pd.read_parquet(tmp_path / "out" / "results").sort_values("image_id")
    pixels = np.stack([image_folder["pixels"][i] for i in rows.image_id]) / np.float32(255)
    m = keras.saving.load_model(model)
    scores = np.asarray(m({"image": pixels}, training=False))
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-5)


def test_a_keras_model_of_several_inputs_is_refused_naming_them(image_folder, tmp_path, capsys):
    """A model taking the image and a second input failed on the launch's probe with Keras'
    advice, 'Pass inputs as a dict', which a user of the job cannot follow."""
    import keras

    image, meta = keras.Input((SIZE, SIZE, 3), name="pixels"), keras.Input((4,), name="meta")
    pooled = keras.layers.GlobalAveragePooling2D()(image)
    joined = keras.layers.Concatenate()([pooled, meta])
    model = str(tmp_path / "two_inputs.keras")
    keras.Model([image, meta], keras.layers.Dense(4)(joined)).save(model)
    assert main(_flags(image_folder, model, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (
        f"error: --model '{model}' takes 2 inputs (pixels, meta); the job calls it with the "
        "images [N, H, W, 3] alone: save a model of the images only (any other input fixed "
        "inside it)."
    ), line
    assert not (tmp_path / "out").exists()


def test_a_saved_model_signature_of_several_inputs_is_refused_naming_them(
    image_folder, tmp_path, capsys
):
    """The same model exported (model.export) was refused saying only that its
    serving_default signature 'takes several inputs', not which, where a .keras file's
    and a __call__'s refusals name them and the fix. Found exporting a two-input Keras
    model and running it through the job."""
    import keras

    image, meta = keras.Input((SIZE, SIZE, 3), name="pixels"), keras.Input((4,), name="meta")
    pooled = keras.layers.GlobalAveragePooling2D()(image)
    joined = keras.layers.Concatenate()([pooled, meta])
    model = str(tmp_path / "two_inputs")
    keras.Model({"pixels": image, "meta": meta}, keras.layers.Dense(4)(joined)).export(model)
    assert main(_flags(image_folder, model, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (
        f"error: --model '{model}': its serving_default signature takes 2 inputs (meta [N, 4] "
        "float32, pixels [N, 16, 16, 3] float32); the job calls it with the images "
        "[N, H, W, 3] alone: export a function of the images only (any other input fixed "
        "inside it)."
    ), line
    assert not (tmp_path / "out").exists()


def test_a_damaged_saved_model_pb_names_the_fix(image_folder, tmp_path, capsys):
    good = _saved_model(tmp_path / "good", lambda s: s, None)
    cases = {
        # TF's own words were "requires a `tags=` argument ... there are 0 MetaGraphs".
        "empty": (b"", "its saved_model.pb holds no model (empty or cut short); save or"),
        "garbage": (b"\xff" * 64, "could not be loaded: Cannot parse file"),
    }
    for name, (data, message) in cases.items():
        model = tmp_path / name
        shutil.copytree(good, model)
        (model / "saved_model.pb").write_bytes(data)
        assert main(_flags(image_folder, str(model), tmp_path / "out")) == 2, name
        (line,) = _error_lines(capsys.readouterr().err)
        assert line.startswith(f"error: --model '{model}'"), line
        assert message in line and "tags=" not in line and not line.endswith(".."), line
    assert not (tmp_path / "out").exists()


def _typed_input_models(path, dtype) -> tuple[str, str]:
    """A SavedModel whose `__call__`, and one whose serving signature, takes `dtype`
    images: logits = mean(x) @ w, computed in float32."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32))
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], dtype, name="x")

    @tf.function(input_signature=[spec])
    def scores(x):
        return tf.reduce_mean(tf.cast(x, tf.float32), [1, 2]) @ module.w

    @tf.function(input_signature=[spec])
    def serve(x):
        return {"logits": scores(x)}

    callable_model, signature_model = (str(path / f"{dtype.name}_{k}") for k in ("call", "sig"))
    tf.saved_model.save(module, signature_model, signatures={"serving_default": serve})
    module.__call__ = scores
    tf.saved_model.save(module, callable_model)
    return callable_model, signature_model


def test_a_model_taking_float16_images_is_fed_them_and_integer_images_are_refused(
    image_folder, tmp_path, capsys
):
    """The job's images are float32: a float16 input gets them cast (the gradient flows
    back through the cast); a uint8 one has no gradient, and says how to export it."""
    import tensorflow as tf

    for model in _typed_input_models(tmp_path, tf.float16):
        output = tmp_path / "out" / os.path.basename(model)
        assert main([*_flags(image_folder, model, output), "--faithfulness", "none"]) == 0
        rows = pd.read_parquet(output / "results")
        assert len(rows) == len(image_folder["pixels"]) and rows.relative_delta.max() < 0.01
    for model in _typed_input_models(tmp_path, tf.uint8):
        assert main(_flags(image_folder, model, tmp_path / "refused")) == 2, model
        err = capsys.readouterr().err
        (line,) = _error_lines(err)
        assert line.startswith(f"error: --model '{model}' takes uint8 images;"), line
        assert "export the model with a float32 input" in line and "Traceback" not in err
    assert not (tmp_path / "refused").exists()


def test_a_keras_model_taking_uint8_images_is_refused_without_a_word_on_its_pixel_range(
    image_folder, tmp_path, capsys, caplog
):
    """A .keras model of a uint8 Input that rescales its pixels (a Keras tutorial's
    first layer) is refused as the SavedModels above are; the launch said first that
    its images would be scaled to [0, 255], for a model it then refused."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    pixels = keras.layers.Rescaling(1 / 255)(inputs)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(pixels))
    model = str(tmp_path / "uint8.keras")
    keras.Model(inputs, outputs).save(model)
    caplog.set_level(logging.INFO)
    assert main(_flags(image_folder, model, tmp_path / "refused")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --model '{model}' takes uint8 images;"), line
    assert not [r.message for r in caplog.records if "rescales pixels" in r.message]


def test_a_keras_model_taking_uint8_images_is_told_the_float_clone_that_runs(
    image_folder, tmp_path, capsys, monkeypatch
):
    """Its refusal said to 'export the model with a float32 input, fed in where it turns
    its uint8 one into floats': no word of how, and a Keras model casts a float32 batch
    to its uint8 Input (no gradient). It names the clone on a float32 Input, which runs,
    and whose rows are the uint8 model's on the same pixels."""
    import keras

    keras.utils.set_random_seed(6)
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = layers.Conv2D(4, 3, activation="relu", bias_initializer="glorot_uniform")(
        layers.Rescaling(1 / 255)(inputs)
    )
    outputs = layers.Dense(5)(layers.GlobalAveragePooling2D()(x))
    model = str(tmp_path / "uint8.keras")
    keras.Model(inputs, outputs).save(model)
    monkeypatch.chdir(tmp_path)
    clone = _float_clone(model, f"keras.Input(({SIZE}, {SIZE}, 3))")
    line = _refused_with(image_folder, model, capsys, clone, "float_input.keras", _UINT8_RANGE)
    assert f"clone it on a float32 input: {clone}" in line, line
    rows = _rows_of_printed_fix(image_folder, clone, "float_input.keras", "--input_range", "0,255")
    rows = rows.set_index("image_id")
    ids = sorted(image_folder["pixels"])
    m = keras.saving.load_model(model)
    scores = np.asarray(m(np.stack([image_folder["pixels"][i] for i in ids]), training=False))
    assert rows.loc[ids, "predicted_class"].tolist() == scores.argmax(1).tolist()
    np.testing.assert_allclose(rows.loc[ids, "target_score"], scores.max(1), rtol=1e-4)


def test_a_keras_model_of_a_uint8_input_in_a_dict_is_told_the_clone_that_runs(
    image_folder, tmp_path, capsys, monkeypatch
):
    """A uint8 model of its one input in a dict (keras.Model({'image': x}, ...)) was told
    clone_model(m, input_tensors=keras.Input(...)), which Keras refuses: '`input_tensors`
    must have the same structure as model.input'. Found running the refusal's clone of
    such a model. It is told the clone on a dict of a float32 Input; run as printed, the
    clone's rows are the uint8 model's scores on the same pixels."""
    import keras

    image = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(image))
    model = str(tmp_path / "uint8.keras")
    keras.Model({"image": image}, keras.layers.Dense(5)(pooled)).save(model)
    monkeypatch.chdir(tmp_path)
    clone = _float_clone(model, f"{{'image': keras.Input(({SIZE}, {SIZE}, 3), name='image')}}")
    line = _refused_with(image_folder, model, capsys, clone, "float_input.keras", _UINT8_RANGE)
    assert f"clone it on a float32 input: {clone}" in line, line
    rows = _rows_of_printed_fix(image_folder, clone, "float_input.keras", "--input_range", "0,255")
    rows = rows.set_index("image_id")
    ids = sorted(image_folder["pixels"])
    pixels = np.stack([image_folder["pixels"][i] for i in ids])
    scores = np.asarray(keras.saving.load_model(model)({"image": pixels}, training=False))
    np.testing.assert_allclose(rows.loc[ids, "target_score"], scores.max(1), rtol=1e-4)


def test_a_grayscale_keras_model_of_a_uint8_input_is_told_its_float_clone_first(
    image_folder, tmp_path, capsys, monkeypatch
):
    """A grayscale model of a uint8 Input (an MNIST tutorial's) was told the grayscale
    wrap alone; its wrap, run, was refused as having 'no gradient with respect to its
    input images (a tf.stop_gradient, or an op that has none)', without a word of the
    uint8 input that cut it or the clone that mends it. Found running the refusal's wrap
    of such a model. The uint8 input is refused first, naming the clone; the clone is
    told the grayscale wrap; that wrap is audited, its rows the model's scores."""
    import keras

    image = keras.Input((SIZE, SIZE, 1), dtype="uint8")
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(image))
    model = str(tmp_path / "uint8.keras")
    keras.Model(image, keras.layers.Dense(5)(flat)).save(model)
    monkeypatch.chdir(tmp_path)
    clone = _float_clone(model, f"keras.Input(({SIZE}, {SIZE}, 1))")
    line = _refused_with(image_folder, model, capsys, clone, "float_input.keras", _UINT8_RANGE)
    assert "takes uint8 images; " in line, line
    exec(clone, {"keras": keras})
    wrap = _keras_wrap("float_input.keras", "keras.ops.image.rgb_to_grayscale(x)")
    _refused_with(image_folder, "float_input.keras", capsys, wrap, "rgb.keras")
    rows = _rows_of_printed_fix(image_folder, wrap, "rgb.keras")
    pixels = np.stack([image_folder["pixels"][i] for i in rows.image_id]).astype(np.float32)
    gray = np.asarray(keras.ops.image.rgb_to_grayscale(pixels))
    scores = np.asarray(keras.saving.load_model("float_input.keras")(gray))
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-4)
    same = np.asarray(keras.saving.load_model(model)(gray.astype(np.uint8)))  # whole pixels
    clone = np.asarray(keras.saving.load_model("float_input.keras")(gray.astype(np.uint8)))
    np.testing.assert_allclose(clone, same, rtol=1e-5)


def test_a_model_taking_encoded_images_is_refused_as_such(image_folder, tmp_path, capsys):
    """A TF Serving export that decodes JPEG bytes itself: its input is strings, not
    integers, and the fix is to export the function after the decoding."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.ones((3, 4), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(image_bytes):
        decode = lambda b: tf.cast(tf.io.decode_jpeg(b, 3), tf.float32)  # noqa: E731
        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.float32)
        return {"logits": tf.reduce_mean(images, [1, 2]) @ module.w}

    model = str(tmp_path / "bytes")
    tf.saved_model.save(module, model, signatures={"serving_default": serve})
    assert main(_flags(image_folder, model, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --model '{model}' takes strings: encoded images "), line
    assert "export the function after the decoding or parsing, taking float32 images" in line
    assert "integer" not in line and not (tmp_path / "out").exists()


def test_a_model_computing_in_16_bit_floats_is_warned_of(tmp_path, linear_keras, caplog):
    """Its scores round at 1e-3: completeness a float32 model shows, it cannot."""
    import keras
    import tensorflow as tf

    from transforms.tf_model import resolve_model

    mixed = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Conv2D(2, 3, dtype="mixed_float16"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(4, dtype="float32"),  # float32 scores, float16 inside
        ]
    )
    mixed.save(tmp_path / "mixed.keras")
    # The same as a SavedModel (float32 in and out: only its graph computes in float16),
    # and inside a float32 model (only the inner model's layer is mixed).
    mixed.export(tmp_path / "mixed_export", verbose=False)
    outer = keras.Sequential([keras.Input((SIZE, SIZE, 3)), mixed])
    outer.save(tmp_path / "nested.keras")
    models = {
        **dict.fromkeys(_typed_input_models(tmp_path, tf.float16), "float16"),
        str(tmp_path / "mixed.keras"): "float16",
        str(tmp_path / "mixed_export"): "float16",
        str(tmp_path / "nested.keras"): "float16",
        str(linear_keras): None,
        _saved_model(tmp_path / "float32", lambda s: s): None,
    }
    for model, dtype in models.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            resolve_model(model)
        warned = [r.getMessage() for r in caplog.records if "computes in" in r.getMessage()]
        if dtype is None:
            assert not warned, model
        else:
            (line,) = warned
            assert line.startswith(f"Model {model} computes in {dtype}: its scores"), line
            assert "cannot show completeness within --completeness_tolerance" in line


def _signature_model(path, outputs: tuple[str, ...], shape=(SIZE, SIZE)) -> str:
    """A SavedModel with only a serving_default signature returning `outputs`."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(1).normal(size=(3, 7)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, *shape, 3], tf.float32, name="image")])
    def serve(image):
        scores = tf.reduce_mean(image, [1, 2]) @ module.w
        return {key: scores[:, : 7 - i] for i, key in enumerate(outputs)}

    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return str(path)


def _signature_input(path, shape: tuple[int, ...]) -> str:
    """A SavedModel whose serving signature takes inputs [N, *shape] (a grayscale or
    channels-first one), returning 4 of their values."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.float32, name="image")])
    def serve(image):
        return {"scores": tf.reshape(image, [tf.shape(image)[0], -1])[:, :4]}

    tf.saved_model.save(tf.Module(), str(path), signatures={"serving_default": serve})
    return str(path)


def _keras_unbuilt(path) -> str:
    import keras

    layers = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)]
    with warnings.catch_warnings():  # Keras warns that it is not built: the case
        warnings.simplefilter("ignore")
        keras.Sequential(layers).save(str(path))
    return str(path)


def _keras_lambda(path) -> str:
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    scaled = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(scaled)
    keras.Model(inputs, keras.layers.Dense(10)(pooled)).save(str(path))
    return str(path)


def _keras_input(path, shape: tuple[int, ...], scale: float | None = None) -> str:
    """A .keras model taking inputs [N, *shape] (a grayscale or channels-first one);
    `scale`: its first layer a Rescaling by it (1 / 255: it takes 8-bit pixels)."""
    import keras

    inputs = keras.Input(shape)
    x = inputs if scale is None else keras.layers.Rescaling(scale)(inputs)
    keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(x))).save(str(path))
    return str(path)


def _keras_pooled(path, side: int) -> str:
    """A .keras model of 4 classes taking [N, side, side, 3] images, averaging them."""
    import keras

    inputs = keras.Input((side, side, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, keras.layers.Dense(4)(pooled)).save(str(path))
    return str(path)


def _predict_signature_only(path) -> str:
    """A SavedModel that is not callable, whose only signature is named 'predict'."""
    import tensorflow as tf

    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def predict(images):
        return tf.reduce_mean(images, [1, 2])

    tf.saved_model.save(module, str(path), signatures={"predict": predict})
    return str(path)


def test_signatures_and_shapes_the_job_cannot_use_are_refused_at_launch(
    image_folder, tmp_path, capsys
):
    models = {
        "has a serving_default signature (its signatures: predict); save it with the "
        "function that scores images as serving_default": (
            _predict_signature_only(tmp_path / "predict")
        ),
        "several outputs (aux, scores) and the job cannot tell which holds the class scores": (
            _signature_model(tmp_path / "two", ("scores", "aux"))
        ),
        "is a Keras model saved before it was built: it holds no weights": (
            _keras_unbuilt(tmp_path / "unbuilt.keras")
        ),
        "holds Python code (a Lambda layer), which the job does not run from a file (it "
        "loads .keras files with safe_mode=True): export the model as a SavedModel "
        "(model.export(folder)) and pass that folder with --input_range for the pixels it "
        "takes where its graph does not show them (a SavedModel whose first ops rescale "
        "8-bit pixels is fed 0,255, any other 0,1 unless given)": (
            _keras_lambda(tmp_path / "lambda.keras")
        ),
        f"takes inputs of shape (None, {SIZE}, {SIZE}, 1); this pipeline needs images [batch, "
        "height, width, 3]. It is fed RGB images (grayscale ones as 3 equal channels): export "
        "it taking [batch, height, width, 3] and making its 1 channel(s) of them inside": (
            _signature_input(tmp_path / "gray", (SIZE, SIZE, 1))
        ),
        "It takes channels first [batch, 3, height, width]: export it taking channels last": (
            _signature_input(tmp_path / "first", (3, SIZE, SIZE))
        ),
    }
    for message, model in models.items():
        assert main(_flags(image_folder, model, tmp_path / "out")) == 2, model
        (line,) = _error_lines(capsys.readouterr().err)
        assert line.startswith(f"error: --model '{model}'") and message in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "shape", "making"),
    [
        ("gray", (1, SIZE, SIZE), "its 1 channel of them inside (e.g. tf.image.rgb_to_grayscale"),
        (
            "rgba",
            (4, SIZE, 24),
            "its 4 channels of them inside (an opaque alpha channel if it is RGBA",
        ),
    ],
)
def test_a_channels_first_saved_model_is_told_so_not_to_make_its_width_channels(
    name, shape, making, image_folder, tmp_path, capsys
):
    """A SavedModel of grayscale or RGBA images channels first ([N, 1, H, W], [N, 4, H, W]:
    an ONNX or PyTorch conversion's) was told to make 'its 16 channel(s)' (or 24) of RGB
    images: its width taken for its channels. Found running such models through the job.
    It is told it takes channels first, and to make its 1 or 4 channels of them."""
    model = _signature_input(tmp_path / name, shape)
    assert main(_flags(image_folder, model, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.endswith(
        f"It takes channels first [batch, {shape[0]}, height, width]: export it taking RGB "
        f"images channels last [batch, height, width, 3] and making {making}, then transposed)."
    ), line
    assert not (tmp_path / "out").exists()


def test_a_four_channel_model_is_not_told_to_make_grayscale(image_folder, tmp_path, capsys):
    """An RGBA (or RGB + infrared) model was told to make its 4 channels with
    tf.image.rgb_to_grayscale, which makes 1: the example fits a 1-channel model alone."""
    for channels, example in ((1, True), (4, False)):
        model = _signature_input(tmp_path / f"c{channels}", (SIZE, SIZE, channels))
        assert main(_flags(image_folder, model, tmp_path / "out")) == 2, model
        (line,) = _error_lines(capsys.readouterr().err)
        assert f"making its {channels} channel(s) of them inside" in line, line
        assert ("tf.image.rgb_to_grayscale" in line) == example, line
    assert not (tmp_path / "out").exists()


_GRAY_WRAP = "keras.ops.image.rgb_to_grayscale(x)"


@pytest.mark.parametrize(
    "shape, takes, width",
    [
        ((SIZE, SIZE, 1), "keras.ops.image.rgb_to_grayscale(x)", SIZE),
        ((SIZE, SIZE), "keras.ops.squeeze(keras.ops.image.rgb_to_grayscale(x), -1)", SIZE),
        ((SIZE * SIZE * 3,), "keras.layers.Flatten()(x)", SIZE),
        ((SIZE * SIZE,), "keras.layers.Flatten()(keras.ops.image.rgb_to_grayscale(x))", SIZE),
        ((3, SIZE, SIZE), "keras.layers.Permute((3, 1, 2))(x)", SIZE),
        ((SIZE, 24, 1), "keras.ops.image.rgb_to_grayscale(x)", 24),
        ((SIZE, 24), "keras.ops.squeeze(keras.ops.image.rgb_to_grayscale(x), -1)", 24),
        ((3, SIZE, 24), "keras.layers.Permute((3, 1, 2))(x)", 24),
        ((1, SIZE, SIZE), f"keras.layers.Permute((3, 1, 2))({_GRAY_WRAP})", SIZE),
        ((1, SIZE, 24), f"keras.layers.Permute((3, 1, 2))({_GRAY_WRAP})", 24),
    ],
    ids=[
        "gray",
        "gray_2d",
        "flat_rgb",
        "flat_gray",
        "channels_first",
        "non_square_gray",
        "non_square_gray_2d",
        "non_square_channels_first",
        "channels_first_gray",
        "non_square_channels_first_gray",
    ],
)
def test_a_keras_model_of_other_image_inputs_is_told_the_wrap_that_runs(
    shape, takes, width, image_folder, tmp_path, capsys, monkeypatch
):
    """A .keras model of grayscale, flattened (an MNIST-style MLP) or channels-first
    input was told to export it 'making its 1 channel(s) of them inside (e.g.
    tf.image.rgb_to_grayscale)', or nothing at all for a flat input: in a Keras 3 model a
    tf.image op fails on its symbolic inputs. The refusal names a Keras wrap on RGB
    images [N, 16, 16, 3]; run as printed, its model gives the wrapped one's scores.
    A non-square one (16 x 24) was told no wrap at all: it is told the wrap on RGB
    images [N, 16, 24, 3], which the job audits (rows read back at 16 x 24)."""
    import keras

    from transforms.results import input_images

    model = _keras_input(tmp_path / "other.keras", shape)
    monkeypatch.chdir(tmp_path)
    wrap = _keras_wrap(model, takes, width)
    _refused_with(image_folder, model, capsys, wrap, "rgb.keras")
    rows = _rows_of_printed_fix(image_folder, wrap, "rgb.keras")
    seen = input_images(str(tmp_path / "out"), rows.image_id)
    fed = np.stack([seen[i] for i in rows.image_id])
    assert fed.shape[1:] == (SIZE, width, 3)
    if width == SIZE:  # a square image folder's images are fed as they are
        np.testing.assert_array_equal(fed, [image_folder["pixels"][i] for i in rows.image_id])
    pixels = fed / np.float32(255)
    scores = np.asarray(keras.saving.load_model("rgb.keras")(pixels))
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-4)


@pytest.mark.parametrize(
    "shape, takes",
    [
        ((SIZE * SIZE * 3,), "keras.layers.Flatten()(x)"),
        ((SIZE * SIZE,), "keras.layers.Flatten()(keras.ops.image.rgb_to_grayscale(x))"),
        ((3, SIZE, SIZE), "keras.layers.Permute((3, 1, 2))(x)"),
    ],
    ids=["flat_rgb", "flat_gray", "channels_first"],
)
def test_the_wrap_of_a_keras_model_that_rescales_8_bit_pixels_gets_them(
    shape, takes, image_folder, tmp_path, capsys, monkeypatch
):
    """A flattened or channels-first .keras model whose first layer rescales 8-bit
    pixels (Rescaling(1/255), as an MNIST tutorial's MLP), wrapped as its refusal says,
    was fed [0, 1] pixels, every score silently that of a nearly black image: the
    wrap's Flatten or Permute layer, which moves pixels without changing them, hid the
    Rescaling behind it. Found running the refusal's wrap of such a model: the launch
    said '16x16 pixels in [0, 1]'. It is fed [0, 255], and its rows are its scores."""
    import keras

    model = _keras_input(tmp_path / "other.keras", shape, scale=1 / 255)
    monkeypatch.chdir(tmp_path)
    wrap = _keras_wrap(model, takes)
    _refused_with(image_folder, model, capsys, wrap, "rgb.keras")
    rows = _rows_of_printed_fix(image_folder, wrap, "rgb.keras")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["input_range"] == [0.0, 255.0]
    pixels = np.stack([image_folder["pixels"][i] for i in rows.image_id]).astype(np.float32)
    scores = np.asarray(keras.saving.load_model("rgb.keras")(pixels))
    assert rows.predicted_class.tolist() == scores.argmax(1).tolist()
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-4)


def test_a_reshape_before_a_rescaling_of_8_bit_pixels_leaves_them_seen(tmp_path):
    """Reshape moves pixels without changing them, so a Rescaling of 8-bit pixels after
    it is the model's first (05eed33 let it pass as Flatten and Permute do), but no test
    built a model with one: taking Reshape out of the pass-through layers failed
    nothing (checked by hand). A model reshaping its images into a vector for an MLP,
    then rescaling them, is fed 8-bit pixels; without the Rescaling, [0, 1]."""
    import keras

    from transforms.tf_model import resolve_model

    for scale, pixels in ((1 / 255, (0.0, 255.0)), (None, (0.0, 1.0))):
        inputs = keras.Input((SIZE, SIZE, 3))
        x = keras.layers.Reshape((SIZE * SIZE * 3,))(inputs)
        x = x if scale is None else keras.layers.Rescaling(scale)(x)
        path = str(tmp_path / f"reshaped_{scale is None}.keras")
        keras.Model(inputs, keras.layers.Dense(4)(x)).save(path)
        assert resolve_model(path).input_range == pixels, scale


@pytest.mark.parametrize("scale, opaque", [(None, 1), (1 / 255, 255)], ids=["unit", "8_bit"])
def test_an_rgba_keras_model_is_told_the_wrap_that_gives_it_an_opaque_alpha(
    scale, opaque, image_folder, tmp_path, capsys, monkeypatch
):
    """A .keras model of RGBA input [N, H, W, 4] was told to 'export it taking [batch,
    height, width, 3] and making its 4 channel(s) of them inside', a SavedModel's
    advice with no line to run, where a grayscale, flat or channels-first .keras model
    is told its Keras wrap. Found running an RGBA model through the job. It is told the
    wrap that adds an opaque alpha channel (the job composites transparent pixels onto
    black), at the top of the pixels it takes (255 for a model rescaling 8-bit pixels);
    run as printed, the wrap is audited, its rows the RGBA model's scores."""
    import keras

    model = _keras_input(tmp_path / "rgba.keras", (SIZE, SIZE, 4), scale=scale)
    monkeypatch.chdir(tmp_path)
    alpha = f"keras.ops.full_like(x[..., :1], {opaque})"
    wrap = _keras_wrap(model, f"keras.ops.concatenate([x, {alpha}], -1)")
    line = _refused_with(image_folder, model, capsys, wrap, "rgb.keras")
    assert "if its 4th channel is alpha (RGBA)" in line, line
    rows = _rows_of_printed_fix(image_folder, wrap, "rgb.keras")
    pixels = np.stack([image_folder["pixels"][i] for i in rows.image_id]).astype(np.float32)
    pixels = pixels / np.float32(255 // opaque)  # the range the wrap is fed
    rgba = np.concatenate([pixels, np.full((*pixels.shape[:3], 1), opaque, np.float32)], -1)
    scores = np.asarray(keras.saving.load_model(model)(rgba))
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-4)


def test_a_channels_first_rgba_keras_model_is_told_the_wrap_that_runs(
    image_folder, tmp_path, capsys, monkeypatch
):
    """A .keras model of RGBA images channels first [N, 4, 16, 24] was told to make
    'its 24 channel(s)' of RGB images, with no wrap, where a channels-last RGBA one is
    told its wrap. Found running such a model through the job. It is told the wrap
    adding an opaque alpha channel, then channels first; run as printed, its rows are
    the model's scores on those RGBA images."""
    import keras

    from transforms.results import input_images

    model = _keras_input(tmp_path / "rgba.keras", (4, SIZE, 24))
    monkeypatch.chdir(tmp_path)
    rgba = "keras.ops.concatenate([x, keras.ops.full_like(x[..., :1], 1)], -1)"
    wrap = _keras_wrap(model, f"keras.layers.Permute((3, 1, 2))({rgba})", 24)
    line = _refused_with(image_folder, model, capsys, wrap, "rgb.keras")
    assert "It takes 4 channels first [batch, 4, height, width]" in line, line
    rows = _rows_of_printed_fix(image_folder, wrap, "rgb.keras")
    seen = input_images(str(tmp_path / "out"), rows.image_id)
    pixels = np.stack([seen[i] for i in rows.image_id]) / np.float32(255)
    alpha = np.ones((*pixels.shape[:3], 1), np.float32)
    first = np.transpose(np.concatenate([pixels, alpha], -1), (0, 3, 1, 2))
    scores = np.asarray(keras.saving.load_model(model)(first))
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-4)


@pytest.mark.parametrize("height", [1, 4])
def test_an_rgb_keras_model_one_or_four_pixels_high_is_audited_not_taken_for_channels_first(
    height, image_folder, tmp_path
):
    """A .keras model of RGB images channels last [N, 1, 24, 3] (a line-scan camera's
    rows) or [N, 4, 24, 3] was refused as channels first ('It takes channels first
    [batch, 1, height, width]', 'It takes 4 channels first'), told a wrap feeding it
    [N, 24, 3, 3] images: its first side, 1 or 4, read as channels although its last is
    3, the job's own layout. Found running such models through the job. It is audited
    as it is, each row the model's score of the image it was fed."""
    import keras

    from transforms.results import attributions_of, input_images, read_results

    model = _keras_input(tmp_path / "rows.keras", (height, 24, 3))
    output = tmp_path / "out"
    assert main(_flags(image_folder, model, output, "--faithfulness", "none")) == 0
    rows = read_results(str(output), with_arrays=True)
    assert len(rows) == len(image_folder["pixels"])
    seen = input_images(str(output), rows.image_id)
    pixels = np.stack([seen[i] for i in rows.image_id]).astype(np.float32) / np.float32(255)
    assert pixels.shape[1:] == (height, 24, 3)
    scores = np.asarray(keras.saving.load_model(model)(pixels))
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-4)
    assert attributions_of(rows.iloc[0]).shape == (height, 24, 3)


def test_the_wrap_of_a_grayscale_keras_model_of_a_dict_input_feeds_it_the_dict(
    image_folder, tmp_path, capsys, monkeypatch
):
    """A grayscale model of one input in a dict (keras.Model({'gray': x}, ...)) was told
    the wrap m(keras.ops.image.rgb_to_grayscale(x)): a bare tensor, which Keras takes with
    a multi-line UserWarning ('The structure of `inputs` doesn't match the expected
    structure') when the wrap is built and on every call the job traces (three in a
    run's output). Found running the refusal's wrap of such a model. The wrap passes
    the dict; built and run, it warns nothing, and its rows are its scores."""
    import keras

    gray = keras.Input((SIZE, SIZE, 1), name="gray")
    model = str(tmp_path / "gray.keras")
    keras.Model({"gray": gray}, keras.layers.Dense(4)(keras.layers.Flatten()(gray))).save(model)
    monkeypatch.chdir(tmp_path)
    wrap = _keras_wrap(model, "{'gray': keras.ops.image.rgb_to_grayscale(x)}")
    _refused_with(image_folder, model, capsys, wrap, "rgb.keras")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "The structure of `inputs` doesn't match")
        rows = _rows_of_printed_fix(image_folder, wrap, "rgb.keras")
    pixels = np.stack([image_folder["pixels"][i] for i in rows.image_id]) / np.float32(255)
    scores = np.asarray(keras.saving.load_model("rgb.keras")(pixels))
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-4)


@pytest.mark.parametrize("kind", ["keras", "saved_model"])
def test_a_model_fixing_an_input_side_above_the_bound_is_refused_before_any_image(tmp_path, kind):
    """A model declaring a 20000x20000 input was probed with two such images at launch
    (4.8 GB each): the process grew to 22 GB and was killed, with no message. Its side
    is bounded as --image_size is, before the model runs (loaded or not)."""
    from pipeline.flags import MAX_IMAGE_SIZE
    from transforms.tf_model import resolve_model

    side = MAX_IMAGE_SIZE + 1  # a probe of this side is 0.4 GB: bearable if it ran
    if kind == "keras":
        model = _keras_pooled(tmp_path / "huge.keras", side)
    else:
        model = _signature_model(tmp_path / "huge", ("scores",), shape=(side, side))
    message = (
        f"--model '{model}' takes {side}x{side} images; the job feeds at most "
        f"{MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE} (IG holds tens of such images per path): export "
        "it with a smaller input, or an open size (None, None) and pass --image_size."
    )
    for load in (True, False):
        with pytest.raises(ValueError) as refused:
            resolve_model(model, load=load)
        assert str(refused.value) == message
    if kind != "keras":  # the bound itself is taken, as --image_size 4096 is
        largest = _signature_model(tmp_path / "largest", ("scores",), shape=(side - 1, side - 1))
        assert resolve_model(largest, load=False).image_size == MAX_IMAGE_SIZE


@pytest.mark.parametrize("shape", [(None, SIZE), (SIZE, None)])
def test_a_model_fixing_one_side_of_its_input_is_fed_squares_of_that_side(
    image_folder, tmp_path, shape
):
    """Its fixed width is its size as a fixed height is: the width alone was taken for
    an open size, 224 fed, and the launch failed on the model's [N, None, 16, 3]."""
    from transforms.tf_model import resolve_model

    model = _signature_model(tmp_path / "half", ("scores",), shape=shape)
    assert main([*_flags(image_folder, model, tmp_path / "out"), "--faithfulness", "none"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["image_size"] == SIZE
    assert resolve_model(model, load=False).image_size == SIZE
    with pytest.raises(ValueError, match=f"--image_size 24 does not fit .* set it to {SIZE}"):
        resolve_model(model, image_size=24)


def test_one_decision_says_whether_an_input_shape_fixes_the_size_it_is_fed(tmp_path):
    """`open_size` (look for the size a model takes itself) and `fixes_size` (refuse
    another --image_size) read alike and both held for (None, 16): one side fixes both
    (16 x 16), so the size a model takes itself was looked for and never used. One
    function decides now; a shape that is no image batch fixes nothing (refused by name
    later), where `fixes_size` failed to unpack it."""
    from transforms.model.inputs import fixes_size
    from transforms.tf_model import resolve_model

    shapes = {
        None: False,
        (None, None, None, 3): False,
        (None, None, 16, 3): True,
        (None, 16, None, 3): True,
        (None, 24, 40, 3): True,
        (None, 16, 3): False,
        (None, 12): False,
    }
    assert {shape: fixes_size(shape) for shape in shapes} == shapes
    # Its Input fixes the width alone and its first layer resizes to 12 x 20: fed
    # squares of its width, refusing another --image_size, as any model fixing one side.
    model = _keras_resizing(tmp_path / "half.keras", (12, 20), sides=(None, SIZE))
    spec = resolve_model(model)
    assert (spec.image_shape, spec.fixed_size, spec.input_flags) == (
        (SIZE, SIZE),
        True,
        ("--input_range",),
    )
    with pytest.raises(ValueError, match=f"--image_size 24 does not fit .* set it to {SIZE}"):
        resolve_model(model, image_size=24)


def test_only_the_flags_a_model_takes_are_named_as_setting_other_images(tmp_path):
    """The launch line said "--image_size and --input_range set others" of every model,
    but a model fixing its size (one side fixes both) refuses --image_size, and a known
    model of its own range (the default efficientnet_lite0) --input_range (exit 2)."""
    from transforms.tf_model import resolve_model

    for shape in [(SIZE, SIZE), (None, SIZE), (SIZE, 2 * SIZE)]:
        model = _signature_model(tmp_path / f"fixed_{shape[0]}_{shape[1]}", ("s",), shape=shape)
        for load in (True, False):
            assert resolve_model(model, load=load).input_flags == ("--input_range",)
    model = _signature_model(tmp_path / "open", ("s",), shape=(None, None))
    assert resolve_model(model, image_size=SIZE).input_flags == ("--image_size", "--input_range")
    assert resolve_model("efficientnet_lite0", load=False).input_flags == ()


def test_a_model_fixing_a_non_square_input_refuses_image_size_naming_its_height_and_width(
    image_folder, tmp_path, capsys
):
    """--image_size sets a square; a model fixing 16 x 24 (height x width) is fed that,
    as a model fixing a square is fed its side, so any --image_size is refused, before
    any image, by one line naming the model's size. Without it the job runs."""
    model = _signature_model(tmp_path / "wide", ("scores",), shape=(SIZE, 24))
    for size in (SIZE, 24, 32):
        assert main(_flags(image_folder, model, tmp_path / "out", "--image_size", size)) == 2
        assert _error_lines(capsys.readouterr().err) == [
            f"error: --image_size {size} does not fit --model '{model}', whose input is "
            "16x24 (height x width); drop --image_size."
        ]
    assert not (tmp_path / "out").exists()
    assert main(_flags(image_folder, model, tmp_path / "out", "--faithfulness", "none")) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["model"]["image_size"], manifest["model"]["image_width"]) == (SIZE, 24)


def _keras_resizing(
    path, side: int | tuple[int, int], before: tuple = (), sides: tuple = (None, None)
) -> str:
    """A .keras model of an open input size (or of input `sides`) whose first layers
    (after `before`) resize the images to side x side (or height x width) and rescale
    8-bit pixels, as Keras' tutorials build them."""
    import keras

    keras.utils.set_random_seed(5)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((*sides, 3)),
            *before,
            layers.Resizing(*(side if isinstance(side, tuple) else (side, side)), name="resize"),
            layers.Rescaling(1 / 255),
            layers.Conv2D(4, 3, activation="relu", bias_initializer="glorot_uniform"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(5, bias_initializer="glorot_uniform"),
        ]
    )
    model.save(str(path))
    return str(path)


def test_an_open_size_keras_model_that_resizes_first_is_fed_its_resizing_size(
    image_folder, tmp_path, caplog
):
    """Its input is (None, None, 3) and its first layer Resizing(12, 12): it was fed
    224x224 images (with a warning to set --image_size), 300 times the pixels it sees and
    a map of the padding and resampling it undoes. --image_size still decides."""
    import keras

    from transforms.results import input_images
    from transforms.tf_model import resolve_model

    model = _keras_resizing(tmp_path / "resizing.keras", 12)
    with caplog.at_level(logging.INFO):
        assert main([*_flags(image_folder, model, tmp_path / "out"), "--faithfulness", "none"]) == 0
    assert (
        f"Model {model} does not fix its input size; its layer 'resize' (Resizing), the first "
        "to change their size, resizes images to 12x12: using 12 (--image_size sets another)."
    ) in caplog.text
    assert "using 224" not in caplog.text
    assert "(12x12 pixels in [0, 255]; --image_size and --input_range set others)" in caplog.text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["image_size"] == 12
    rows = pd.read_parquet(tmp_path / "out" / "results").set_index("image_id")
    images = input_images(str(tmp_path / "out"), rows.index)
    pixels = np.stack([images[i] for i in rows.index]).astype(np.float32)
    assert pixels.shape[1:] == (12, 12, 3)
    scores = np.asarray(keras.saving.load_model(model)(pixels, training=False))
    assert rows["predicted_class"].tolist() == scores.argmax(1).tolist()
    np.testing.assert_allclose(rows["target_score"], scores.max(1), rtol=1e-4)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert resolve_model(model, image_size=SIZE).image_size == SIZE
    assert f"resizes images to 12x12, and --image_size {SIZE} feeds it" in (caplog.text)
    flipped = _keras_resizing(tmp_path / "flip.keras", 12, (keras.layers.RandomFlip(),))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert resolve_model(flipped).image_size == 12
    # Its RandomFlip comes first: the line names the layer that resizes.
    assert (
        f"Model {flipped} does not fix its input size; its layer 'resize' (Resizing), the "
        "first to change their size, resizes images to 12x12: using 12"
    ) in caplog.text


def test_an_open_size_keras_model_that_resizes_to_a_non_square_is_fed_that_size(
    image_folder, tmp_path, caplog
):
    """Its input is (None, None, 3) and its first layer Resizing(12, 20): it was fed
    224x224 squares (a warning said to set --image_size, which sets only a square), that
    its Resizing squeezed into 12 x 20, the photo's aspect and padding distorted. It is
    fed 12 x 20 images, as the model fixing that input is. The launch line said
    "--image_size and --input_range set others", as if --image_size could set another
    height x width: it says --image_size sets a square, which it does."""
    import keras

    from transforms.results import input_images
    from transforms.tf_model import resolve_model

    model = _keras_resizing(tmp_path / "resizing.keras", (12, 20))
    with caplog.at_level(logging.INFO):
        assert main([*_flags(image_folder, model, tmp_path / "out"), "--faithfulness", "none"]) == 0
    assert (
        f"Model {model} does not fix its input size; its layer 'resize' (Resizing), the first "
        "to change their size, resizes images to 12x20: using 12x20 (--image_size sets a square)."
    ) in caplog.text
    assert "using 224" not in caplog.text
    line = "(12x20 pixels in [0, 255]; --image_size sets a square and --input_range another)"
    assert line in caplog.text
    assert resolve_model(model, image_size=SIZE).image_shape == (SIZE, SIZE)
    assert resolve_model(model, input_range=(0.0, 1.0)).input_range == (0.0, 1.0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["model"]["image_size"], manifest["model"]["image_width"]) == (12, 20)
    rows = pd.read_parquet(tmp_path / "out" / "results").set_index("image_id")
    assert all(list(shape) == [12, 20, 3] for shape in rows.attribution_shape)
    images = input_images(str(tmp_path / "out"), rows.index)
    pixels = np.stack([images[i] for i in rows.index]).astype(np.float32)
    scores = np.asarray(keras.saving.load_model(model)(pixels, training=False))
    np.testing.assert_allclose(rows["target_score"], scores.max(1), rtol=1e-4)


def test_a_keras_2_file_is_refused_as_such_with_the_export_that_runs(
    image_folder, tmp_path, capsys
):
    """A .keras file saved by tf_keras (Keras 2) was refused as using 'the custom class
    'Functional'' with the advice to 'rebuild it from Keras' own layers', which it is
    built from: Keras 3 does not read Keras 2's files. Its export is audited."""
    import tf_keras

    inputs = tf_keras.Input((SIZE, SIZE, 3))
    pooled = tf_keras.layers.GlobalAveragePooling2D()(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(4)(pooled))
    path = str(tmp_path / "keras2.keras")
    model.save(path)
    model.export(str(tmp_path / "exported"))
    assert main(_flags(image_folder, path, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (
        f"error: --model '{path}' was saved by Keras {tf_keras.__version__} (tf_keras), whose "
        ".keras files Keras 3 does not read: load it with tf_keras (tf_keras.models.load_model) "
        "and export it as a SavedModel (model.export(folder)), then pass that folder with "
        "--input_range for the pixels it takes where its graph does not show them (a "
        "SavedModel whose first ops rescale 8-bit pixels is fed 0,255, any other 0,1 unless "
        "given)."
    )
    assert not (tmp_path / "out").exists()
    exported = _flags(image_folder, str(tmp_path / "exported"), tmp_path / "out")
    assert main([*exported, "--faithfulness", "none"]) == 0


def test_one_function_words_what_image_size_sets_in_the_model_line_and_the_launch_line(
    tmp_path, caplog
):
    """ "--image_size sets another" (a square) or "sets a square" (any other height x
    width) was chosen twice: in the line naming the size an open model takes itself and
    in the launch line's `_fed`. `what_flags_set` chooses; both print its result."""
    from pipeline.main import _fed
    from transforms.tf_model import resolve_model, what_flags_set

    said = {
        ((12, 12), ("--image_size",)): "--image_size sets another",
        ((12, 12), ("--image_size", "--input_range")): "--image_size and --input_range set others",
        ((12, 20), ("--image_size",)): "--image_size sets a square",
        ((12, 20), ("--image_size", "--input_range")): (
            "--image_size sets a square and --input_range another"
        ),
        ((12, 20), ("--input_range",)): "--input_range sets another",
        ((12, 20), ()): "",
    }
    assert {key: what_flags_set(*key) for key in said} == said
    for sides, shown in (((12, 12), "12"), ((12, 20), "12x20")):
        model = _keras_resizing(tmp_path / f"{sides[1]}.keras", sides)
        caplog.clear()
        with caplog.at_level(logging.INFO):
            spec = resolve_model(model)
        assert f": using {shown} ({said[sides, ('--image_size',)]})." in caplog.text
        fed = f"{sides[0]}x{sides[1]} pixels in [0, 255]"
        assert _fed(spec) == f"{fed}; {said[sides, ('--image_size', '--input_range')]}"
    assert _fed(resolve_model("efficientnet_lite0", load=False)) == "224x224 pixels in [0, 1]"


def test_the_launch_line_says_a_flag_given_set_what_the_model_is_fed(
    image_folder, tmp_path, caplog
):
    """The launch line said "--input_range sets another" (and "--image_size sets
    another") of a flag the command gave: the range shown was the one it set, not one it
    could change to. A flag given is said to be as given; one not given still sets another."""
    from pipeline.main import _fed
    from transforms.tf_model import resolve_model, what_flags_set

    both = ("--image_size", "--input_range")
    said = {
        ((12, 12), both, both): "--image_size and --input_range as given",
        ((12, 12), both, ("--input_range",)): "--input_range as given, --image_size sets another",
        ((12, 12), both, ("--image_size",)): "--image_size as given, --input_range sets another",
        ((12, 20), both, ("--input_range",)): "--input_range as given, --image_size sets a square",
        ((12, 20), ("--input_range",), ("--input_range",)): "--input_range as given",
        ((12, 12), both, ()): "--image_size and --input_range set others",
    }
    assert {key: what_flags_set(*key) for key in said} == said
    model = _signature_model(tmp_path / "open", ("s",), shape=(None, None))
    spec = resolve_model(model, image_size=SIZE, input_range=(-1.0, 1.0), load=False)
    fed = f"{SIZE}x{SIZE} pixels in [-1, 1]"
    assert (
        _fed(spec, ("--input_range",))
        == f"{fed}; --input_range as given, --image_size sets another"
    )
    assert _fed(spec) == f"{fed}; --image_size and --input_range set others"
    flags = _flags(image_folder, model, tmp_path / "out", "--faithfulness", "none")
    with caplog.at_level(logging.INFO):
        assert main([*flags, "--image_size", SIZE, "--input_range", "-1,1"]) == 0
    assert f"with {model} ({fed}; --image_size and --input_range as given) into" in caplog.text


def test_the_rescaling_line_words_what_input_range_sets_as_the_others_do(tmp_path, caplog):
    """The line naming the range a .keras model's Rescaling takes said "(--input_range
    sets another)" in words of its own; `what_flags_set` words it, as for the size."""
    from transforms.tf_model import resolve_model, what_flags_set

    model = _keras_rescaling(tmp_path / "tutorial.keras", 1 / 255, 0.0)
    with caplog.at_level(logging.INFO):
        resolve_model(model)
    assert what_flags_set(None, ("--input_range",)) == "--input_range sets another"
    assert (
        f"Model {model} rescales pixels in [0, 255] in its layer 'rescale' (Rescaling), the "
        "first to change their values: its images are scaled to that range (--input_range "
        "sets another)."
    ) in caplog.messages


def test_a_model_whose_input_has_no_known_rank_is_fed_images_of_image_size(image_folder, tmp_path):
    """A signature or __call__ of tf.TensorSpec(None) (any shape) takes the images as
    one of [None, None, None, None] does; the launch exited 2 with TF's own words alone,
    'error: Cannot iterate over a shape with unknown rank.', naming neither model nor fix."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32))
    scores = tf.function(
        lambda x: tf.reduce_mean(x, [1, 2]) @ module.w,
        input_signature=[tf.TensorSpec(None, tf.float32, name="x")],
    )
    tf.saved_model.save(module, str(tmp_path / "sig"), signatures={"serving_default": scores})
    module.__call__ = scores
    tf.saved_model.save(module, str(tmp_path / "call"))
    for name in ("sig", "call"):
        output = tmp_path / "out" / name
        flags = _flags(image_folder, str(tmp_path / name), output, "--image_size", str(SIZE))
        assert main([*flags, "--faithfulness", "none"]) == 0, name
        rows = pd.read_parquet(output / "results").sort_values("image_id")
        pixels = np.stack([image_folder["pixels"][i] for i in rows.image_id]) / np.float32(255)
        expected = (pixels.mean(axis=(1, 2)) @ module.w.numpy()).max(axis=1)
        np.testing.assert_allclose(rows.target_score, expected, rtol=1e-5)


def test_a_keras_file_with_a_custom_class_is_refused_with_the_export_that_runs(
    image_folder, tmp_path, capsys
):
    """Keras' own advice (register the class) needs the user's code, which the job
    cannot import; the SavedModel export it advises instead is audited."""
    import keras

    class Doubling(keras.layers.Layer):  # not registered: only its name is saved
        def call(self, x):
            return 2.0 * x

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(Doubling()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4)(pooled))
    model.save(str(tmp_path / "custom.keras"))
    model.export(str(tmp_path / "exported"), verbose=False)
    flags = _flags(image_folder, str(tmp_path / "custom.keras"), tmp_path / "out")
    assert main(flags) == 2
    err = capsys.readouterr().err
    (line,) = _error_lines(err)
    assert line == (
        f"error: --model '{tmp_path / 'custom.keras'}' uses the custom class 'Doubling', whose "
        "code a .keras file does not hold and the job cannot import: export the model as a "
        "SavedModel (model.export(folder)) and pass that folder with --input_range for the "
        "pixels it takes where its graph does not show them (a SavedModel whose first ops "
        "rescale 8-bit pixels is fed 0,255, any other 0,1 unless given), or rebuild it from "
        "Keras' own layers."
    )
    assert "Full object config" not in err and not (tmp_path / "out").exists()
    exported = _flags(image_folder, str(tmp_path / "exported"), tmp_path / "out")
    assert main([*exported, "--faithfulness", "none"]) == 0


def test_a_signature_with_logits_among_its_outputs_is_audited_on_them(
    image_folder, tmp_path, caplog
):
    """Its outputs come back in another order in each process: the choice is by name,
    the same whether the launch loads the model (local) or reads its proto (Dataflow).
    Each run says once which output it audits (the worker takes the model the launch
    loaded and said it of)."""
    from transforms.tf_model import resolve_model

    model = _signature_model(tmp_path / "logits", ("probabilities", "Logits"))
    with caplog.at_level(logging.INFO, logger="transforms.model.calls"):
        for out in ("out", "again"):  # a second run in this process (a notebook) says it too
            assert (
                main([*_flags(image_folder, model, tmp_path / out), "--faithfulness", "none"]) == 0
            )
    said = [r.getMessage() for r in caplog.records if "auditing its output" in r.getMessage()]
    assert said == 2 * [
        f"Model {model}: auditing its output 'Logits' of ['Logits', 'probabilities']."
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["num_outputs"] == 6  # "Logits": the second, 6 of the 7 scores
    assert resolve_model(model, load=False).num_outputs == 6
    ambiguous = _signature_model(tmp_path / "two_logits", ("main_logits", "aux_Logits"))
    for load in (True, False):
        with pytest.raises(ValueError, match=r"several outputs \(aux_Logits, main_logits\)"):
            resolve_model(ambiguous, load=load)


def _probabilities_and_classes(path) -> str:
    """A SavedModel serving {"probabilities": [N, 7] float, "classes": [N] int64}, as
    TF Serving examples export a classifier."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(1).normal(size=(3, 7)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def serve(images):
        scores = tf.reduce_mean(images, [1, 2]) @ module.w
        return {"probabilities": tf.nn.softmax(scores), "classes": tf.argmax(scores, 1)}

    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    return str(path)


def test_outputs_that_cannot_be_the_scores_leave_the_logits_or_the_only_float_one(
    image_folder, tmp_path
):
    """`logits` beside `pre_logits` (ViT, BiT exports) or `aux_logits` is the class
    scores, and so is the only float output beside integer `classes`; the launch that
    loads the model and the one that reads its proto agree."""
    import tensorflow as tf

    from transforms.tf_model import resolve_model

    served = _probabilities_and_classes(tmp_path / "classes")
    assert main([*_flags(image_folder, served, tmp_path / "out"), "--faithfulness", "none"]) == 0
    rows = pd.read_parquet(tmp_path / "out" / "results").set_index("image_id")
    ids = sorted(image_folder["pixels"])
    images = np.stack([image_folder["pixels"][i] for i in ids]).astype(np.float32) / 255
    serve = tf.saved_model.load(served).signatures["serving_default"]
    probabilities = serve(images=tf.constant(images))["probabilities"].numpy()
    assert rows.loc[ids, "predicted_class"].tolist() == probabilities.argmax(1).tolist()
    np.testing.assert_allclose(rows.loc[ids, "target_score"], probabilities.max(1), rtol=1e-5)
    pre = _signature_model(tmp_path / "pre", ("pre_logits", "logits"))  # logits: 6 wide
    keras_heads = _keras_two_heads(tmp_path / "heads.keras", ("aux_logits", "logits"), False)
    widths = {served: 7, pre: 6, keras_heads: 6}
    for model, width in widths.items():
        for load in (True, False):
            assert resolve_model(model, load=load).num_outputs == width, (model, load)
    ambiguous = _signature_model(tmp_path / "two", ("Logits", "logits"))
    with pytest.raises(ValueError, match=r"several outputs \(Logits, logits\)"):
        resolve_model(ambiguous)


def _dict_call_model(path, outputs: tuple[str, ...]) -> str:
    """A SavedModel whose __call__ returns a dict: output i holds 7 - i scores."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(2).normal(size=(3, 7)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def call(images):
        scores = tf.reduce_mean(images, [1, 2]) @ module.w
        return {key: scores[:, : 7 - i] for i, key in enumerate(outputs)}

    module.__call__ = call
    tf.saved_model.save(module, str(path))
    return str(path)


def test_a_call_returning_a_dict_is_audited_on_its_logits_as_a_signature_is(
    image_folder, tmp_path, capsys
):
    model = _dict_call_model(tmp_path / "logits", ("probabilities", "logits"))
    assert main([*_flags(image_folder, model, tmp_path / "out"), "--faithfulness", "none"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["num_outputs"] == 6  # "logits": the second, 6 of the 7 scores
    ambiguous = _dict_call_model(tmp_path / "two", ("scores", "aux"))
    assert main(_flags(image_folder, ambiguous, tmp_path / "out2")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "its __call__ returns several outputs (aux, scores)" in line, line


def test_a_call_saved_without_a_traced_function_is_refused_naming_the_input_signature(
    image_folder, tmp_path, capsys, caplog
):
    """A tf.Module whose __call__ is a tf.function of no input_signature, not called
    before saving, holds no function a loaded SavedModel can run: the launch warned it
    would feed 224x224 images, then exited with TensorFlow's 'Found zero restored
    functions for caller function.' The refusal names the input_signature, which runs."""
    import tensorflow as tf

    def scores_of(module):
        return lambda images: tf.reduce_mean(images, [1, 2]) @ module.w

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32))
    module.__call__ = tf.function(scores_of(module))
    tf.saved_model.save(module, str(tmp_path / "untraced"))
    model = str(tmp_path / "untraced")
    assert main(_flags(image_folder, model, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (
        f"error: --model '{model}': its __call__ was saved without a traced function (a "
        "tf.function of no input_signature, not called before tf.saved_model.save), and a "
        "loaded SavedModel runs only the functions traced when it was saved: save it with "
        "tf.function(..., input_signature=[tf.TensorSpec([None, None, None, 3], "
        "tf.float32)]) (a fixed height and width in place of None, None if it has them)."
    ), line
    assert "using 224" not in caplog.text
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    module.__call__ = tf.function(scores_of(module), input_signature=[spec])
    tf.saved_model.save(module, str(tmp_path / "traced"))
    flags = _flags(image_folder, str(tmp_path / "traced"), tmp_path / "out", "--image_size", "16")
    assert main([*flags, "--faithfulness", "none"]) == 0


def test_a_call_taking_a_dict_of_the_images_is_fed_them_so(image_folder, tmp_path):
    """A __call__ whose input_signature is [{'image': TensorSpec([None, 16, 16, 3])}] (the
    features dict of a Keras or Estimator-style model): the launch took no input shape
    from it, fed 224x224 images as a bare tensor and exited 2 with TensorFlow's cut-off
    'Binding inputs to tf.function failed due to `Can not cast <tf.Tensor: ... numpy='.
    A dict of the images and another tensor is refused naming both, as two arguments are."""
    import tensorflow as tf

    from transforms.tf_model import resolve_model

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32))
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)
    module.__call__ = tf.function(
        lambda features: tf.reduce_mean(features["image"] ** 2, [1, 2]) @ module.w,
        input_signature=[{"image": spec}],
    )
    model = str(tmp_path / "dict_input")
    tf.saved_model.save(module, model)
    assert main([*_flags(image_folder, model, tmp_path / "out"), "--faithfulness", "none"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["image_size"] == SIZE
    rows = pd.read_parquet(tmp_path / "out" / "results").sort_values("image_id")
    pixels = np.stack([image_folder["pixels"][i] for i in rows.image_id]) / np.float32(255)
    scores = tf.saved_model.load(model)({"image": tf.constant(pixels, tf.float32)}).numpy()
    assert rows.predicted_class.tolist() == scores.argmax(1).tolist()
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-5)
    module.__call__ = tf.function(
        lambda features: tf.reduce_mean(features["image"], [1, 2]) @ module.w + features["bias"],
        input_signature=[{"image": spec, "bias": tf.TensorSpec([None, 5], tf.float32)}],
    )
    tf.saved_model.save(module, str(tmp_path / "two"))
    with pytest.raises(ValueError, match=r"its __call__ takes 2 tensors \(\w*bias, \w*image\)"):
        resolve_model(str(tmp_path / "two"))


@pytest.mark.parametrize("kind", ["signature", "call"])
def test_a_saved_model_of_undecided_outputs_is_told_the_resave_that_runs(
    kind, image_folder, tmp_path, capsys
):
    """A signature returning a tuple (TF names its outputs output_0, output_1), or a
    __call__ returning a dict of such names, was told to 'export a model or signature
    that returns only them': no way to do so from the SavedModel alone. The refusal
    names a re-save of the output chosen (KEY), each output with its shape; run as
    printed, it is audited."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(np.random.default_rng(5).normal(size=(3, 5)).astype(np.float32))
    spec = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")

    def scores(images):
        logits = tf.reduce_mean(images, [1, 2]) @ module.w
        return logits, tf.nn.sigmoid(logits)[:, :4]

    model = str(tmp_path / "two")
    if kind == "signature":
        tf.saved_model.save(module, model, signatures=tf.function(scores, input_signature=[spec]))
        called = "m.signatures['serving_default'](images=x)"
    else:
        module.__call__ = tf.function(
            lambda images: dict(zip(("output_0", "output_1"), scores(images), strict=True)),
            input_signature=[spec],
        )
        tf.saved_model.save(module, model)
        called = "m(x)"
    assert main(_flags(image_folder, model, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    resave = (
        f"m = tf.saved_model.load({model!r}); n = tf.Module(); n.m = m; n.__call__ = "
        f"tf.function(lambda x: {called}[KEY], input_signature=[tf.TensorSpec([None, {SIZE}, "
        f"{SIZE}, 3], tf.float32)]); tf.saved_model.save(n, new_folder)"
    )
    assert line.endswith(
        f"several outputs (output_0, output_1) and the job cannot tell which holds the class "
        f"scores; save a model of them alone: {resave} with KEY that of the scores "
        "('output_0' [N, 5], 'output_1' [N, 4]); pass new_folder."
    ), line
    new_folder = str(tmp_path / "resaved")
    exec(resave, {"tf": tf, "KEY": "output_0", "new_folder": new_folder})
    flags = _flags(image_folder, new_folder, tmp_path / "out")
    assert main([*flags, "--faithfulness", "none"]) == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["model"]["num_outputs"] == 5


def test_a_call_taking_more_than_the_images_is_refused_by_every_launch(tmp_path):
    """A local launch loads the model, a Dataflow launch reads its saved_model.pb: both
    refuse a __call__ that also needs a `training` tensor (workers would fail on it)."""
    import tensorflow as tf

    from transforms.tf_model import resolve_model

    module = tf.Module()
    module.w = tf.Variable(np.ones((3, 4), np.float32))
    images = tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")

    @tf.function(input_signature=[images, tf.TensorSpec([], tf.bool, name="training")])
    def call(images, training):
        return tf.reduce_mean(images, [1, 2]) @ module.w

    module.__call__ = call
    tf.saved_model.save(module, str(tmp_path / "training"))
    for load in (True, False):
        with pytest.raises(ValueError, match=r"its __call__ takes 2 tensors \(images, training\)"):
            resolve_model(str(tmp_path / "training"), load=load)


def _keras_two_heads(path, names: tuple[str, str], as_dict: bool) -> str:
    """A .keras model with outputs `names` (a list, or a dict keyed by them): the first
    7 scores wide, the second 6."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    heads = [keras.layers.Dense(7 - i, name=name)(pooled) for i, name in enumerate(names)]
    keras.Model(inputs, dict(zip(names, heads, strict=True)) if as_dict else heads).save(path)
    return str(path)


@pytest.mark.parametrize("as_dict", [False, True], ids=["list", "dict"])
def test_a_keras_model_with_several_outputs_is_audited_on_its_logits(
    as_dict, image_folder, tmp_path, capsys
):
    model = _keras_two_heads(tmp_path / "heads.keras", ("probabilities", "logits"), as_dict)
    assert main([*_flags(image_folder, model, tmp_path / "out"), "--faithfulness", "none"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["num_outputs"] == 6  # "logits": the second, 6 scores
    ambiguous = _keras_two_heads(tmp_path / "two.keras", ("scores", "aux"), as_dict)
    assert main(_flags(image_folder, ambiguous, tmp_path / "out2")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "the Keras model returns several outputs (aux, scores)" in line, line


def _keras_unnamed_heads(path, as_dict: bool) -> str:
    """A .keras model of two outputs of Keras' own names (dense, dense_1) or a dict's
    keys (a, b): 5 scores wide, then 3."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    heads = [keras.layers.Dense(width)(pooled) for width in (5, 3)]
    keras.Model(inputs, {"a": heads[0], "b": heads[1]} if as_dict else heads).save(path)
    return str(path)


@pytest.mark.parametrize("as_dict", [False, True], ids=["list", "dict"])
def test_a_keras_model_of_two_unnamed_outputs_is_refused_with_the_rewrap_that_runs(
    as_dict, image_folder, tmp_path, capsys
):
    """Its refusal said to 'export a model or signature that returns only them', not how
    a .keras user does: the error line names the model of one output saved again, each
    output by how Keras reaches it and its width; that re-wrap, as written, is audited."""
    import keras

    model = _keras_unnamed_heads(tmp_path / "two.keras", as_dict)
    assert main(_flags(image_folder, model, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    m = keras.saving.load_model(model)
    first, second = m.output_names  # Keras' own: dense, dense_1 in a fresh process
    name, pick, outputs = (
        ("KEY", "m.output[KEY]", "m.output['a'] [N, 5], m.output['b'] [N, 3]")
        if as_dict
        else ("I", "m.outputs[I]", f"m.outputs[0] {first} [N, 5], m.outputs[1] {second} [N, 3]")
    )
    assert line.endswith(
        f"export a model that returns only them, [N, classes]: m = keras.saving.load_model("
        f"{model!r}); keras.Model(m.inputs, {pick}).save('scores.keras') with {name} that "
        f"of the scores ({outputs}); pass scores.keras."
    ), line
    assert not (tmp_path / "out").exists()
    scores = str(tmp_path / "scores.keras")
    keras.Model(m.inputs, m.output["b"] if as_dict else m.outputs[1]).save(scores)
    assert main([*_flags(image_folder, scores, tmp_path / "out"), "--faithfulness", "none"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["num_outputs"] == 3


def test_a_keras_model_with_nested_outputs_is_audited_on_its_logits(tmp_path):
    """Outputs [logits, [aux, aux2]]: named by the flattened output_names; it was
    'zip() argument 2 is shorter than argument 1'."""
    import keras

    from transforms.tf_model import resolve_model

    layers = keras.layers
    images = keras.Input((SIZE, SIZE, 3))
    x = layers.GlobalAveragePooling2D()(images)
    aux = [layers.Dense(2, name="aux")(x), layers.Dense(1, name="aux2")(x)]
    keras.Model(images, [layers.Dense(3, name="logits")(x), aux]).save(tmp_path / "n.keras")
    assert resolve_model(str(tmp_path / "n.keras")).num_outputs == 3  # the logits' classes


def _keras_rescaling(path, scale: float | list, offset: float | list) -> str:
    """A .keras model as Keras' image tutorials build it: augmentation, then a
    Rescaling of the pixels (named "rescale"), then a small convolution net with biases."""
    import keras

    keras.utils.set_random_seed(4)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.Sequential([layers.RandomFlip(), layers.RandomRotation(0.1)]),
            layers.Rescaling(scale, offset=offset, name="rescale"),
            layers.Conv2D(4, 3, activation="relu", bias_initializer="glorot_uniform"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(5, bias_initializer="glorot_uniform"),
        ]
    )
    model.save(str(path))
    return str(path)


def test_a_keras_model_that_rescales_8_bit_pixels_gets_them(image_folder, tmp_path, caplog):
    """Its first layer scales [0, 255] to [0, 1] (or [-1, 1]), or normalises by means
    of 8-bit pixels: fed [0, 1] pixels, its every prediction would be wrong, silently;
    --input_range still decides."""
    import keras

    from transforms.tf_model import resolve_model

    model = _keras_rescaling(tmp_path / "tutorial.keras", 1 / 255, 0.0)
    with caplog.at_level(logging.INFO):
        assert main([*_flags(image_folder, model, tmp_path / "out"), "--faithfulness", "none"]) == 0
    assert (
        "rescales pixels in [0, 255] in its layer 'rescale' (Rescaling), the first" in caplog.text
    )
    assert "(16x16 pixels in [0, 255]; --input_range sets another)" in caplog.text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["input_range"] == [0.0, 255.0]
    rows = pd.read_parquet(tmp_path / "out" / "results").set_index("image_id")
    ids = sorted(image_folder["pixels"])
    pixels = np.stack([image_folder["pixels"][i] for i in ids]).astype(np.float32)
    scores = np.asarray(keras.saving.load_model(model)(pixels, training=False))
    assert rows.loc[ids, "predicted_class"].tolist() == scores.argmax(1).tolist()
    np.testing.assert_allclose(rows.loc[ids, "target_score"], scores.max(1), rtol=1e-4)
    assert resolve_model(model, input_range=(0.0, 1.0)).input_range == (0.0, 1.0)
    signed = _keras_rescaling(tmp_path / "signed.keras", 1 / 127.5, -1.0)
    assert resolve_model(signed).input_range == (0.0, 255.0)
    unit = _keras_rescaling(tmp_path / "unit.keras", 2.0, -1.0)  # takes [0, 1] pixels
    assert resolve_model(unit).input_range == (0.0, 1.0)
    cases = [(0.45, False, (0.0, 1.0)), (0.45 * 255, False, (0.0, 255.0))]  # ConvNeXt's
    cases.append((0.45 * 255, True, (0.0, 1.0)))  # invert: it maps to 8-bit pixels, not from
    for mean, invert, pixels in cases:
        inputs = keras.Input((SIZE, SIZE, 3))
        variance = (mean / 2) ** 2
        normalized = keras.layers.Normalization(mean=mean, variance=variance, invert=invert)(inputs)
        pooled = keras.layers.GlobalAveragePooling2D()(normalized)
        keras.Model(inputs, keras.layers.Dense(3)(pooled)).save(tmp_path / "normalized.keras")
        assert resolve_model(str(tmp_path / "normalized.keras")).input_range == pixels, mean


def test_an_input_range_other_than_the_models_rescaling_takes_is_warned_of(tmp_path, caplog):
    """A model that rescales 8-bit pixels to [-1, 1] itself, launched with --input_range
    -1,1 (the range its first layer gives, not the one it takes): the flag decides, but
    every image reaches it nearly black, so the launch says so; its own range is quiet."""
    from transforms.tf_model import resolve_model

    model = _keras_rescaling(tmp_path / "signed.keras", 1 / 127.5, -1.0)
    with caplog.at_level(logging.WARNING, logger="transforms.model.inputs"):
        assert resolve_model(model, input_range=(-1.0, 1.0)).input_range == (-1.0, 1.0)
    assert (
        "rescales pixels in [0, 255] in its layer 'rescale' (Rescaling), the first to change "
        "their values, but --input_range -1,1 feeds it pixels in [-1, 1]" in caplog.text
    )
    assert "drop --input_range" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="transforms.model.inputs"):
        assert resolve_model(model, input_range=(0.0, 255.0)).input_range == (0.0, 255.0)
    assert "rescales pixels" not in caplog.text


def test_the_rescaling_line_names_the_layer_that_rescales_after_layers_before_it(tmp_path, caplog):
    """A .keras model whose RandomFlip and Resizing come before its Rescaling was said to
    rescale 8-bit pixels "in its first layer", which they are; the line (and the warning
    of another --input_range) names the layer that does, the first to change pixel values."""
    import keras

    from transforms.tf_model import resolve_model

    layers = keras.layers
    flip = layers.RandomFlip(name="flip")
    resize = layers.Resizing(SIZE, SIZE, name="resize")
    rescale = layers.Rescaling(1 / 255, name="to_unit")
    body = [layers.GlobalAveragePooling2D(), layers.Dense(3)]
    model = str(tmp_path / "augmented.keras")
    keras.Sequential([keras.Input((SIZE, SIZE, 3)), flip, resize, rescale, *body]).save(model)
    with caplog.at_level(logging.INFO, logger="transforms.model.inputs"):
        assert resolve_model(model).input_range == (0.0, 255.0)
        assert resolve_model(model, input_range=(0.0, 1.0)).input_range == (0.0, 1.0)
    said = f"Model {model} rescales pixels in [0, 255] in its layer 'to_unit' (Rescaling), "
    first = "the first to change their values"
    assert caplog.messages[0] == (
        f"{said}{first}: its images are scaled to that range (--input_range sets another)."
    )
    assert caplog.messages[1].startswith(f"{said}{first}, but --input_range 0,1 feeds it")


def test_a_keras_model_that_normalises_8_bit_pixels_per_channel_gets_them(tmp_path):
    """A Rescaling by ImageNet's means and deviations of 8-bit pixels (torchvision's
    preprocessing in one layer) maps them onto about [-2.1, 2.6], not [0, 1] or [-1, 1]:
    it was fed [0, 1] pixels, every prediction silently wrong."""
    from transforms.tf_model import resolve_model

    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    model = _keras_rescaling(tmp_path / "imagenet.keras", list(1 / (255 * std)), list(-mean / std))
    assert resolve_model(model).input_range == (0.0, 255.0)
    unit = _keras_rescaling(tmp_path / "unit.keras", list(1 / std), list(-mean / std))
    assert resolve_model(unit).input_range == (0.0, 1.0)  # it takes [0, 1] pixels


def _keras_export(path, first=None) -> str:
    """A Keras model of 5 classes exported as a SavedModel (`model.export`, as Keras
    saves one for serving): `first` (a Rescaling), then a small convolution net with
    biases."""
    import keras

    keras.utils.set_random_seed(4)
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs if first is None else first(inputs)
    x = layers.Conv2D(4, 3, activation="relu", bias_initializer="glorot_uniform")(x)
    x = layers.Dense(5, bias_initializer="glorot_uniform")(layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, x).export(str(path), verbose=False)
    return str(path)


# The line naming the ops of a SavedModel's graph that rescale 8-bit pixels (a Keras
# Rescaling's Mul and AddV2, named by Keras).
_GRAPH_RESCALES = (
    r"Model {} rescales pixels in \[0, 255\] in its graph's ops '[\w/]+/mul' \(Mul\) and "
    r"'[\w/]+/add' \(AddV2\), the first to change their values"
)


@pytest.mark.parametrize("scale, offset", [(1 / 255, 0.0), (1 / 127.5, -1.0)])
def test_a_keras_export_that_rescales_8_bit_pixels_gets_them(
    scale, offset, image_folder, tmp_path, caplog
):
    """A Keras model whose Rescaling takes 8-bit pixels (Keras' tutorials', and
    keras.applications' MobileNetV3 and EfficientNet by default) exported with
    model.export was fed [0, 1] pixels: the launch said "pixels in [0, 1]" and every
    row was the score of a near-black image, with no warning, while its .keras file was
    fed [0, 255]. Found running such an export through the job. Its graph tells it as
    its layer does: it is fed [0, 255], each row the model's own score of its image."""
    import keras
    import tensorflow as tf

    from transforms.results import input_images, read_results

    rescale = keras.layers.Rescaling(scale, offset=offset, name="rescale")
    model = _keras_export(tmp_path / "exported", rescale)
    output = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert main([*_flags(image_folder, model, output), "--faithfulness", "none"]) == 0
    said = re.escape(f"{SIZE}x{SIZE} pixels in [0, 255]; --input_range sets another) into")
    assert re.search(f"with {re.escape(model)} \\({said}", caplog.text)
    rescales = _GRAPH_RESCALES.format(re.escape(model))
    assert re.search(f"{rescales}: its images are scaled to that range", caplog.text)
    assert json.loads((output / "manifest.json").read_text())["model"]["input_range"] == [0, 255]
    rows = read_results(str(output))
    seen = input_images(str(output), rows.image_id)
    pixels = np.stack([seen[i] for i in rows.image_id]).astype(np.float32)
    exported = tf.saved_model.load(model)  # held: its functions need its variables
    scores = exported.serve(pixels).numpy()
    np.testing.assert_allclose(rows.target_score, scores.max(1), rtol=1e-4)


@pytest.mark.parametrize("load", [True, False])
def test_a_saved_model_whose_graph_does_not_rescale_8_bit_pixels_gets_0_to_1(
    load, tmp_path, caplog
):
    """Only a graph that first maps [0, 255] onto about [0, 1] or [-1, 1] by constants
    takes 8-bit pixels: one with no rescaling, one doubling its pixels (a model of
    [0, 1] pixels onto [0, 2]), one normalising by a mean and variance it learnt on
    [0, 1] pixels (Keras' export holds them as constants), one normalising [0, 1]
    pixels by ImageNet's means and deviations are fed [0, 1], loaded (a local run) or
    not (a remote run's launcher); --input_range still decides, with a warning where it
    differs from the range the graph takes."""
    import keras
    import tensorflow as tf

    from transforms.tf_model import resolve_model

    class Doubling(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return tf.reduce_mean(2.0 * x, [1, 2])

    tf.saved_model.save(Doubling(), str(tmp_path / "doubling"))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # of [0, 1]
    adapted = keras.layers.Normalization()
    adapted.adapt(np.random.default_rng(5).uniform(0, 1, (4, SIZE, SIZE, 3)))
    models = {
        "plain": _keras_export(tmp_path / "plain"),
        "doubling": str(tmp_path / "doubling"),
        "adapted": _keras_export(tmp_path / "adapted", adapted),
        "unit": _keras_export(
            tmp_path / "unit", keras.layers.Rescaling(list(1 / std), -mean / std)
        ),
    }
    with caplog.at_level(logging.INFO, logger="transforms.model.inputs"):
        for name, model in models.items():
            assert resolve_model(model, load=load).input_range == (0.0, 1.0), name
    assert "rescales pixels" not in caplog.text
    rescaling = _keras_export(tmp_path / "rescaling", keras.layers.Rescaling(1 / 255))
    with caplog.at_level(logging.WARNING, logger="transforms.model.inputs"):
        assert resolve_model(rescaling, input_range=(0.0, 1.0), load=load).input_range == (0.0, 1.0)
        assert resolve_model(rescaling, load=load).input_range == (0.0, 255.0)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    rescales = _GRAPH_RESCALES.format(re.escape(rescaling))
    assert re.fullmatch(
        f"{rescales}, but --input_range 0,1 feeds it pixels in \\[0, 1\\]: unless it was "
        "trained on those, its predictions and maps are those of images it never saw; drop "
        r"--input_range to feed it \[0, 255\].",
        warning,
    )


def test_saved_models_that_rescale_8_bit_pixels_otherwise_get_them(tmp_path):
    """A tf.Module whose __call__ divides its pixels by 127.5 and subtracts 1 (the
    function the job calls of a callable SavedModel, before any signature), a Keras
    export of a Rescaling by ImageNet's means and deviations of 8-bit pixels (per
    channel) and keras.applications' MobileNetV3Small exported with its preprocessing
    (a Rescaling to [-1, 1]) take 8-bit pixels: their graphs say so, loaded or not."""
    import keras
    import tensorflow as tf

    from transforms.tf_model import resolve_model

    class Signed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return tf.reduce_mean(x / 127.5 - 1.0, [1, 2])

    tf.saved_model.save(Signed(), str(tmp_path / "signed"))
    mobilenet = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, include_preprocessing=True, classes=4
    )
    mobilenet.export(str(tmp_path / "mobilenet"), verbose=False)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    imagenet = keras.layers.Rescaling(list(1 / (255 * std)), offset=list(-mean / std))
    _keras_export(tmp_path / "imagenet", imagenet)
    for model in ("signed", "imagenet", "mobilenet"):
        for load in (True, False):
            spec = resolve_model(str(tmp_path / model), load=load)
            assert spec.input_range == (0.0, 255.0), (model, load)


def test_the_reason_of_a_tensorflow_error_is_its_telling_line():
    import tensorflow as tf

    from transforms.errors import error_reason

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def checked(x):
        return tf.debugging.check_numerics(x, "scores")

    with pytest.raises(tf.errors.InvalidArgumentError) as caught:  # at run time
        checked(tf.constant([1.0, float("nan")]))
    assert str(caught.value).splitlines()[0] == "Graph execution error:"
    reason = error_reason(caught.value)
    assert reason.startswith("scores : Tensor had NaN values"), reason

    with pytest.raises(ValueError) as caught:  # at tracing time
        tf.function(lambda x: tf.reshape(x, [3]))(tf.zeros([2]))
    assert str(caught.value).splitlines()[0] == "in user code:"
    reason = error_reason(caught.value)
    assert reason.startswith("ValueError: Cannot reshape a tensor with 2 elements"), reason
    assert error_reason(ValueError("plain message\nmore")) == "plain message"

    @tf.function
    def fails(x):
        raise ValueError("my own reason\nsecond detail line")

    with pytest.raises(ValueError) as caught:
        fails(tf.zeros([2]))
    assert error_reason(caught.value) == "ValueError: my own reason"
    # Keras's header over a layer's reason, in bold, nested in a model's call.
    keras_error = ValueError(
        "Exception encountered when calling Sequential.call().\n\n\x1b[1mException "
        "encountered when calling Dense.call().\n\n\x1b[1mwrong axis\x1b[0m\n\nArguments "
        "received by Dense.call():\n  • inputs=tf.Tensor(shape=(2, 5))\x1b[0m\n\nArguments "
        "received by Sequential.call():\n  • inputs=tf.Tensor(shape=(2, 5))"
    )
    assert error_reason(keras_error) == "Dense: wrong axis"
    assert error_reason(ValueError("Exception encountered when calling X.call().")) == (
        "Exception encountered when calling X.call()."  # no reason under it: the header
    )
    # A layer's reason that is a header itself: its telling line, not Keras's arguments.
    graph_error = ValueError(
        "Exception encountered when calling Lambda.call().\n\nGraph execution error:\n\n"
        'Detected at node checked defined at (most recent call last):\n  File "m.py", '
        "line 3\nscores : Tensor had NaN values\n\nArguments received by Lambda.call():\n"
        "  • x=tf.Tensor(shape=(2, 5))"
    )
    assert error_reason(graph_error) == "Lambda: scores : Tensor had NaN values"


def test_a_keras_layer_that_fails_is_named_with_its_own_reason(image_folder, tmp_path, capsys):
    # A model that declares any input size but was built for 16 pixels: Keras wraps
    # the layer's reason in a header, and the error line said only the header,
    # "Exception encountered when calling Reshape.call().", not what went wrong.
    import keras

    inputs = keras.Input((None, None, 3))
    hidden = keras.layers.Conv2D(2, 3)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Reshape((14 * 14 * 2,))(hidden))
    keras.Model(inputs, outputs).save(str(tmp_path / "sized.keras"))
    flags = _flags(image_folder, str(tmp_path / "sized.keras"), tmp_path / "out")
    assert main([*flags, "--image_size", "20"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (
        f"error: --model '{tmp_path / 'sized.keras'}' fails on a batch of 2 images "
        "[2, 20, 20, 3]: Reshape: The total size of the tensor must be unchanged. "
        "Received: input_shape=(18, 18, 2), target_shape=(392,)"
    ), line
    assert not (tmp_path / "out").exists()


def test_a_non_square_model_that_fails_is_named_with_the_images_it_was_fed(
    image_folder, tmp_path, capsys
):
    """A model fixing a 24 x 16 (height x width) input that fails on the launch's probe:
    the refusal said it failed on '[2, 24, 24, 3]' images, a square it was never fed."""
    import tensorflow as tf

    class Checked(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 24, 16, 3], tf.float32)])
        def __call__(self, x):
            tf.debugging.assert_less_equal(tf.reduce_max(x), 0.5, message="too bright")
            return tf.reduce_mean(x, [1, 2])

    tf.saved_model.save(Checked(), str(tmp_path / "tall"))
    flags = _flags(image_folder, str(tmp_path / "tall"), tmp_path / "out")
    assert main([*flags, "--faithfulness", "none"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(
        f"error: --model '{tmp_path / 'tall'}' fails on a batch of 2 images [2, 24, 16, 3]: "
    ), line
    assert "too bright" in line


def test_a_keras_input_batch_size_is_a_hint_not_a_limit(image_folder, tmp_path):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), batch_size=1)
    outputs = keras.layers.Dense(4)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(str(tmp_path / "hinted.keras"))
    assert main(_flags(image_folder, str(tmp_path / "hinted.keras"), tmp_path / "out")) == 0
    assert len(pd.read_parquet(tmp_path / "out" / "results")) == 4


def _tiny_classifier(path, classes: int) -> str:
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    outputs = keras.layers.Dense(classes)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(str(path))
    return str(path)


def test_an_overwrite_with_a_bad_runner_keeps_the_earlier_run(
    image_folder, linear_keras, tmp_path, capsys
):
    assert main(_flags(image_folder, linear_keras, tmp_path / "out")) == 0
    before = sorted(p.name for p in (tmp_path / "out" / "results").iterdir())
    capsys.readouterr()
    assert (
        main(
            _flags(image_folder, linear_keras, tmp_path / "out", "--overwrite", "--runner", "Bogus")
        )
        == 2
    )
    assert _error_lines(capsys.readouterr().err)[0].startswith("error: --runner 'Bogus'")
    assert sorted(p.name for p in (tmp_path / "out" / "results").iterdir()) == before
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete"


def test_a_resume_of_a_folder_with_no_run_makes_no_folder(
    image_folder, linear_keras, tmp_path, capsys
):
    """A --resume whose --output holds no run (a typo, a first run started with it)
    exits 2 with one line and leaves the file system as it was: it made the folder
    (and its missing parents) before it found no manifest there, and only after the
    image folder was listed and the model loaded."""
    output = tmp_path / "typo" / "run"
    assert main(_flags(image_folder, linear_keras, output, "--resume")) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"error: --resume: no earlier run in --output {str(output)!r} (no manifest.json, "
        "which a run writes as it starts); run without --resume to start one."
    ]
    assert not (tmp_path / "typo").exists()


def test_a_resume_onto_a_file_says_the_file_is_no_folder(
    image_folder, linear_keras, tmp_path, capsys
):
    """--resume's look for the earlier run's manifest, before the images are listed,
    leaves an --output it cannot look in to --output's own checks: a file given as
    --output is said to be a file, not that it holds no run."""
    output = tmp_path / "notes.txt"
    output.write_text("mine")
    assert main(_flags(image_folder, linear_keras, output, "--resume")) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"error: --output {str(output)!r} is not writable: {str(output)!r} is a file, not a "
        "folder; choose a folder you can write to."
    ]
    assert output.read_text() == "mine"


def test_a_keras_weights_file_is_refused_with_the_fix_that_runs(
    image_folder, linear_keras, tmp_path, capsys
):
    """A model's weights saved alone (model.save_weights('model.weights.h5')) were
    refused as 'a Keras HDF5 file': 'load it in Keras (keras.saving.load_model) and save
    it as a .keras file', which fails on such a file ('No model config found in the
    file'). Found passing a real weights file. It is told the file holds weights alone:
    the model built in its code loads them, and is saved as a .keras file."""
    import keras

    weights = str(tmp_path / "model.weights.h5")
    keras.saving.load_model(linear_keras).save_weights(weights)
    assert main(_flags(image_folder, weights, tmp_path / "out")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (
        f"error: --model '{weights}' holds a Keras model's weights alone "
        "(model.save_weights), not the model: build the model in its code, load them "
        f"(model.load_weights('{weights}')), save it as a .keras file "
        "(model.save('model.keras')), then pass that file."
    ), line
    with pytest.raises(ValueError, match="No model config found"):  # the old advice
        keras.saving.load_model(weights)
    assert not (tmp_path / "out").exists()


def test_a_model_folder_holding_its_model_one_level_down_names_the_path_to_pass(
    image_folder, linear_keras, quadratic_saved_model, tmp_path, capsys
):
    """A --model folder without saved_model.pb was refused with the kinds of model the
    job takes, though it held the model one level down: TF Serving's version folders
    (`serving/1/saved_model.pb`, as `model.export('serving/1')` writes them), or a
    .keras file. The line names what it holds and the path to pass (the highest
    version, the one TF Serving serves), and that path runs."""
    serving = tmp_path / "serving"
    for version in ("1", "2", "10"):
        shutil.copytree(quadratic_saved_model, serving / version)
    (serving / "notes").mkdir()  # a sub-folder without a model is not named
    keras_folder = tmp_path / "keras_folder"
    keras_folder.mkdir()
    shutil.copy(linear_keras, keras_folder / "model.keras")
    expected = {
        serving: "it holds 10/saved_model.pb, 2/saved_model.pb, 1/saved_model.pb: pass one of "
        f"them, e.g. --model '{serving / '10'}'.",
        keras_folder: f"it holds model.keras: pass --model '{keras_folder / 'model.keras'}'.",
        serving / "notes": "pass a SavedModel folder, a .keras file, a TF Hub handle, or one "
        "of: efficientnet_lite0, inception_v1.",
    }
    for folder, fix in expected.items():
        assert main(_flags(image_folder, folder, tmp_path / "out")) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert line == f"error: --model '{folder}' is a folder without saved_model.pb; {fix}"
    assert not (tmp_path / "out").exists()
    assert (
        main(_flags(image_folder, serving / "10", tmp_path / "out", "--faithfulness", "none")) == 0
    )


def _as_text_proto(folder) -> None:
    """Replaces a SavedModel folder's saved_model.pb by saved_model.pbtxt, the same proto
    in text form (text_format), which tf.saved_model.load reads as well."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
    (folder / "saved_model.pbtxt").write_text(text_format.MessageToString(proto))
    (folder / "saved_model.pb").unlink()


def test_a_saved_model_folder_of_a_text_proto_is_audited_as_tensorflow_loads_it(
    quadratic_saved_model, tmp_path, caplog
):
    """A SavedModel folder holding saved_model.pbtxt (the text form of its proto, which
    tf.saved_model.load reads) was refused as "a folder without saved_model.pb", by a
    local launch and a Dataflow one alike. It is audited, its signature read without
    loading it as a saved_model.pb's is; a folder holding it one level down names it, and
    an empty one is said to be that file, not a saved_model.pb."""
    import tensorflow as tf

    from transforms.results import input_images
    from transforms.tf_model import resolve_model

    model = tmp_path / "serving" / "1"
    shutil.copytree(quadratic_saved_model, model)
    _as_text_proto(model)
    with caplog.at_level(logging.INFO):
        assert resolve_model(str(model), load=False).num_outputs == 1000
    assert f"Signature of {model} read without loading it: input (None, 16, 16, 3)" in caplog.text
    root = tmp_path / "images"
    rng = np.random.default_rng(7)
    for name in ("a.png", "b.png"):
        write_image(root / name, rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    out = tmp_path / "out"
    flags = cli_args(dataset=root, model=model, output=out, steps=4, faithfulness="none")
    assert main(flags) == 0
    rows = pd.read_parquet(out / "results").set_index("image_id").sort_index()
    assert rows.index.tolist() == ["a.png", "b.png"]
    images = input_images(str(out), rows.index)
    pixels = np.stack([images[i] for i in rows.index]).astype(np.float32) / 255  # [0, 1]
    scores = tf.saved_model.load(quadratic_saved_model)(pixels).numpy()
    assert rows["predicted_class"].tolist() == scores.argmax(1).tolist()
    np.testing.assert_allclose(rows["target_score"], scores.max(1), rtol=1e-4)
    with pytest.raises(ValueError, match=r"it holds 1/saved_model.pbtxt: pass --model"):
        resolve_model(str(model.parent))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "saved_model.pbtxt").write_text("")
    with pytest.raises(ValueError, match=r"its saved_model.pbtxt holds no model \(empty or cut"):
        resolve_model(str(tmp_path / "empty"))


def test_launch_refuses_what_would_fail_every_input(image_folder, linear_keras, tmp_path, capsys):
    root = image_folder["root"]
    loose = tmp_path / "loose"  # no WordNet-id sub-folder: no label anywhere
    write_image(loose / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    one_output = _tiny_classifier(tmp_path / "one.keras", 1)
    cases = [
        (
            cli_args(dataset=root, model=linear_keras, output=root),
            f"error: --output '{root}' is the --dataset folder",
        ),
        (
            cli_args(dataset=loose, model=linear_keras, output=tmp_path / "o", target="label"),
            f"error: --target label: none of the 1 files of '{loose}' has a label",
        ),
        (
            cli_args(dataset=loose, model=one_output, output=tmp_path / "o", score="softmax"),
            "error: --score softmax of a model with 1 output is 1 everywhere",
        ),
        (  # 16x16 = 256 pixels: K = 512 steps cannot each switch a pixel
            cli_args(
                dataset=loose, model=linear_keras, output=tmp_path / "o", faithfulness_steps=512
            ),
            "error: --faithfulness_steps 512 exceeds the 16x16 model input's 256 pixels",
        ),
    ]
    not_zip = tmp_path / "notes.keras"
    not_zip.write_text("not a zip archive")
    cases.append(
        (
            cli_args(dataset=loose, model=not_zip, output=tmp_path / "o"),
            f"error: --model '{not_zip}' is not a .keras file: a .keras file is a zip archive",
        )
    )
    saved = tmp_path / "saved"  # files a user may pass for a model folder or a .keras file
    saved.mkdir()
    files = {
        "saved_model.pb": "is the saved_model.pb file of a SavedModel; pass its folder, "
        f"--model '{saved}'.",
        "model.h5": "is a Keras HDF5 file, which the job does not load: load it in Keras",
        "weights.bin": "is a file, but not a .keras file",
    }
    for name, message in files.items():
        (saved / name).write_bytes(b"\x89HDF")
        model = saved / name
        cases.append(
            (
                cli_args(dataset=loose, model=model, output=tmp_path / "o"),
                f"error: --model '{model}' {message}",
            )
        )
    earlier = tmp_path / "earlier"  # a finished run's folder
    (earlier / "results").mkdir(parents=True)
    (earlier / "manifest.json").write_text("{}")
    nested = earlier / "results" / "o"
    for inside in (nested, earlier / "results"):
        cases.append(
            (
                cli_args(dataset=loose, model=linear_keras, output=inside),
                f"error: --output '{inside}' lies inside '{earlier / 'results'}', the results of",
            )
        )
    for args, message in cases:
        assert main(args) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert line.startswith(message), line
    assert not (tmp_path / "o").exists() and not (Path(root) / "manifest.json").exists()
    assert not nested.exists()


@pytest.mark.parametrize("dataset", ["folder", "sample"])
def test_target_label_with_no_label_among_the_models_classes_exits_2(dataset, tmp_path, capsys):
    # Cats (ImageNet 281) and an unlabelled image, or the sample (281, 967 and six
    # unlabelled): a 3-class model can attribute none of their labels.
    root = tmp_path / "images"
    write_image(root / WNID_CAT / "cat.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    write_image(root / "loose.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    model = _tiny_classifier(tmp_path / "three.keras", 3)
    data = str(root) if dataset == "folder" else "sample"
    args = cli_args(dataset=data, model=model, output=tmp_path / "o", target="label")
    assert main(args) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --target label: no image of {data!r} has a label among ")
    assert "--model's 3 classes" in line and "--target predicted or top_k" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("dataset", "shown"), [("sample", "281, 967"), ("tench", "0"), ("tench_and_cat", "0, 281")]
)
def test_target_label_on_a_one_output_model_exits_2_without_its_1_class(
    dataset, shown, tmp_path, capsys
):
    # The sample's labels (ImageNet 281, 967) on a single logit: the error said "no image
    # of 'sample' has a label among --model's 1 class" and to use "a model of those classes".
    # A folder of tench (ImageNet 0) was not refused at all: label 0 < 1 passed for one
    # of the model's classes, though a one-output model has none (found by review r120).
    model = _tiny_classifier(tmp_path / "one.keras", 1)
    data = "sample"
    if dataset != "sample":
        data = str(tmp_path / "images")
        write_image(Path(data) / "n01440764" / "tench.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    if dataset == "tench_and_cat":
        write_image(Path(data) / WNID_CAT / "cat.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    assert main(cli_args(dataset=data, model=model, output=tmp_path / "o", target="label")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == (
        f"error: --target label: --model {model!r} has one output, a score and no classes, "
        f"and the labels of {data!r} are ImageNet classes ({shown}), not outputs of the "
        "model. Use --target predicted, which attributes that output."
    )
    assert not (tmp_path / "o").exists()


def test_the_samples_labels_outside_the_model_are_warned_of_without_sub_folders(tmp_path, caplog):
    # The sample (ImageNet 281 and 967, no sub-folders) on a 300-class model: 967 is
    # outside. The warning said its images were 'in WordNet-id sub-folders'.
    model = _tiny_classifier(tmp_path / "three_hundred.keras", 300)
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        prepare(cli_args(dataset="sample", model=model, output=tmp_path / "o"))
    (warned,) = [r.getMessage() for r in caplog.records if "by ImageNet class" in r.getMessage()]
    assert warned.startswith("2 images of sample are labelled by ImageNet class (the sample's own)")
    assert (
        "1 of them has a label past the model's last class (n07920052 = 967): it can never "
        "be predicted"
    ) in warned
    assert "sub-folder" not in warned


def test_a_label_one_past_the_models_last_class_is_outside_it(tmp_path, capsys, caplog):
    # The cat's folder is ImageNet class 281; a model of 281 classes ends at class 280.
    root = tmp_path / "images"
    write_image(root / WNID_CAT / "cat.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    model = _tiny_classifier(tmp_path / "k.keras", 281)
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        job, _ = prepare(cli_args(dataset=root, model=model, output=tmp_path / "o"))
    job.lock.release()
    # One image: "--target label makes it errors" read wrong.
    assert (
        "1 image of " + str(root) + " is labelled by ImageNet class (WordNet-id folders) and "
        f"--model {model} has 281 classes"
    ) in caplog.text
    assert (
        "Its label is past the model's last class (n02123045 = 281): it can never be "
        "predicted, and --target label makes that image an error."
    ) in caplog.text
    args = cli_args(dataset=root, model=model, output=tmp_path / "o2", target="label")
    assert main(args) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(
        f"error: --target label: no image of '{root}' has a label among --model's 281 classes "
        "(its labels are ImageNet classes: 281), so every image would be an error."
    ), line


@pytest.mark.parametrize("named", [False, True])
def test_wordnet_folders_on_a_model_of_other_classes_are_one_warning(
    named, image_folder, tmp_path, caplog
):
    # Two overlapping warnings said it (the labels outside the model's classes, then
    # that every label is ImageNet's): one says what became of the labels and what to do.
    model = _tiny_classifier(tmp_path / "three.keras", 3)
    flags = _flags(image_folder, model, tmp_path / "o")
    names = tmp_path / "names.txt"
    names.write_text("apple\npear\nplum\n")
    if named:
        flags += cli_args(class_names=names)
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        job, _ = prepare(flags)
    job.lock.release()
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.resolve"]
    named_as = ", and label_name names them as the model does ('apple' for ImageNet's n01440764)"
    fix = "pass --class_names and name each sub-folder as its class (cat/, dog/)"
    if named:
        fix = "name each sub-folder as its class is named in --class_names (apple/ for class 0)"
    assert [message for message in said if "label" in message] == [
        f"3 images of {image_folder['root']} are labelled by ImageNet class (WordNet-id "
        f"folders) and --model {model} has 3 classes, not ImageNet's 1000: label holds "
        "ImageNet's class indices, read as the model's classes of those indices"
        f"{named_as if named else ''}. 2 of them have a label past the model's last class "
        f"({WNID_CAT} = 281): they can never be predicted, and --target label makes those "
        "images errors. Unless the model's classes are ImageNet's first 3, label, label_name "
        f"and --target label mean nothing here; to label the images by the model's own "
        f"classes, {fix}."
    ]


def test_imagenet_folder_labels_on_a_model_of_other_classes_are_warned_of(tmp_path, caplog):
    """A WordNet-id folder's labels are ImageNet's classes: on a 4-class model, tench
    (ImageNet 0) is named as the model's class 0 is ("apple"), which the launch says."""
    root = tmp_path / "images"
    write_image(root / "n01440764" / "tench.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    model = _tiny_classifier(tmp_path / "four.keras", 4)
    names = tmp_path / "names.txt"
    names.write_text("apple\npear\nplum\nfig\n")
    flags = cli_args(dataset=root, model=model, output=tmp_path / "o", class_names=names)
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        prepare(flags)
    (warned,) = [r.getMessage() for r in caplog.records if "by ImageNet class" in r.getMessage()]
    said = f"1 image of {root} is labelled by ImageNet class (WordNet-id folders) and --model"
    assert warned.startswith(said), warned
    assert "label_name names them as the model does ('apple' for ImageNet's n01440764)" in warned
    assert f"--model {model} has 4 classes, not ImageNet's 1000: label holds" in warned
    assert "past the model's last class" not in warned  # tench is class 0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        prepare(
            cli_args(
                dataset=root,
                model=_tiny_classifier(tmp_path / "k.keras", 1000),
                output=tmp_path / "o2",
            )
        )
    assert "by ImageNet class" not in caplog.text
    # A model of more classes (ImageNet-21k's, say): its classes are not ImageNet's
    # "first 1002"; the labels mean something where its first 1000 are ImageNet's.
    model = _tiny_classifier(tmp_path / "more.keras", 1002)
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        prepare(cli_args(dataset=root, model=model, output=tmp_path / "o3"))
    (warned,) = [r.getMessage() for r in caplog.records if "by ImageNet class" in r.getMessage()]
    assert f"--model {model} has 1002 classes, not ImageNet's 1000" in warned
    assert "Unless the model's first 1000 classes are ImageNet's, in its order, label" in warned


def test_top_k_defaults_to_the_classes_of_a_smaller_model(image_folder, tmp_path, capsys):
    model = _tiny_classifier(tmp_path / "three.keras", 3)
    assert main(_flags(image_folder, model, tmp_path / "out")) == 0
    rows = pd.read_parquet(tmp_path / "out" / "results")
    assert {len(classes) for classes in rows.top_k_classes} == {3}
    assert main(_flags(image_folder, model, tmp_path / "o2", "--top_k", "5")) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line == "error: --top_k 5 exceeds the model's 3 classes; pass --top_k 3 or less."


def test_the_bounds_a_model_sets_are_taken_at_their_value(image_folder, tmp_path):
    # --top_k of every class of a 3-class model, and one --faithfulness_steps per pixel
    # of a 16x16 input (each step switches one pixel): the largest values that fit.
    model = _tiny_classifier(tmp_path / "three.keras", 3)
    at_bounds = ("--top_k", "3", "--faithfulness_steps", str(SIZE * SIZE))
    job, _ = prepare(_flags(image_folder, model, tmp_path / "out", *at_bounds))
    job.lock.release()
    assert (job.config.top_k, job.config.faithfulness_steps) == (3, SIZE * SIZE)


def test_a_one_output_model_gets_no_faithfulness_checks(image_folder, tmp_path, caplog):
    # A softmax over one output is 1 everywhere: the curves would be all 1, every AUC
    # 1, and every row would tie with its control and be counted no better than chance.
    model = _tiny_classifier(tmp_path / "one.keras", 1)
    with caplog.at_level(logging.WARNING):
        assert main(_flags(image_folder, model, tmp_path / "out")) == 0
    assert "the faithfulness checks follow the target's softmax" in caplog.text
    # The folder's ImageNet labels on a model of one output: "its 1 classes" read wrong,
    # and so did "--model's 1 class" (the model scores no classes: said once, so).
    assert "has one output, a score and no classes to compare them with" in caplog.text
    assert "1 classes" not in caplog.text and "1 class " not in caplog.text
    rows = pd.read_parquet(tmp_path / "out" / "results")
    assert len(rows) == 4
    faithfulness = ["deletion_auc", "insertion_auc", "deletion_auc_random"]
    faithfulness += ["insertion_auc_random", "deletion_curve", "insertion_curve"]
    assert rows[faithfulness].isna().all().all()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["faithfulness"] == "none"


def test_the_end_of_run_table_of_a_one_output_model_shows_its_score(image_folder, tmp_path, capsys):
    # A single sigmoid's run printed "prediction 0, confidence >99.99%" for every image:
    # a softmax over one output, which the launch had just said means nothing, while
    # the report and the figures caption such rows by their score (target_score).
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    score = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))
    model = str(tmp_path / "one.keras")
    keras.Model(inputs, score).save(model)
    assert main(_flags(image_folder, model, tmp_path / "out")) == 0
    printed = capsys.readouterr().out
    rows = pd.read_parquet(tmp_path / "out" / "results").set_index("file_name")
    table = printed.split("\n\n")[1].splitlines()  # after the line saying where
    assert table[0].split() == ["file", "label", "score", "relative_delta", "attribution_error"]
    shown = {line.split()[0]: line.split()[2] for line in table[1:]}
    assert shown == {name: f"{rows.target_score[name]:.3g}" for name in rows.index}
    assert "columns=['file_name', 'target_score', 'attribution_error']" in printed


@pytest.mark.parametrize("dataset", ["sample", "folder"])
def test_imagenet_labels_on_a_one_output_model_are_one_warning_saying_what_is_true(
    dataset, tmp_path, caplog
):
    # A single sigmoid (or logit) on the sample or a WordNet-id folder: the launch said
    # "labels outside --model's 1 class" and "Unless the model's classes are ImageNet's
    # first 1, ...", two warnings reading oddly of a model that scores no classes.
    import keras

    root = tmp_path / "images"
    write_image(root / WNID_CAT / "cat.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    inputs = keras.Input((SIZE, SIZE, 3))
    score = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(inputs))
    model = str(tmp_path / "one.keras")
    keras.Model(inputs, score).save(model)
    data = "sample" if dataset == "sample" else root
    kind = "the sample's own" if dataset == "sample" else "WordNet-id folders"
    with caplog.at_level(logging.WARNING, logger="pipeline.resolve"):
        job, _ = prepare(cli_args(dataset=data, model=model, output=tmp_path / "o"))
    job.lock.release()
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.resolve"]
    assert [message for message in said if "label" in message] == [
        f"The images of {data} are labelled by ImageNet class ({kind}) and --model {model} "
        "has one output, a score and no classes "
        "to compare them with: label and label_name hold ImageNet's classes, and they, "
        "--target label and the report's accuracy mean nothing here."
    ]


def test_class_names_for_a_custom_model(image_folder, tmp_path, capsys, caplog):
    model = _tiny_classifier(tmp_path / "four.keras", 4)
    names = tmp_path / "names.json"
    names.write_text(json.dumps({"0": "apple", "1": "pear", "2": "plum", "3": "fig"}))
    named = cli_args(top_k=2, class_names=names)
    code = main(_flags(image_folder, model, tmp_path / "out", *named))
    assert code == 0
    rows = pd.read_parquet(tmp_path / "out" / "results")
    assert set(rows.predicted_name) <= {"apple", "pear", "plum", "fig"}
    assert rows.predicted_name.notna().all()
    assert all(set(n) <= {"apple", "pear", "plum", "fig"} for n in rows.top_k_names)
    # The cats' folder is ImageNet class 281: outside the model's 4 classes, said at launch.
    (warned,) = [r.getMessage() for r in caplog.records if "by ImageNet class" in r.getMessage()]
    assert (
        f"2 of them have a label past the model's last class ({WNID_CAT} = 281): they can "
        "never be predicted, and --target label makes those images errors."
    ) in warned

    lines = tmp_path / "names.txt"
    lines.write_text("apple\npear\nplum\n")
    named = cli_args(top_k=2, class_names=lines)
    code = main(_flags(image_folder, model, tmp_path / "out2", *named))
    err = capsys.readouterr().err
    assert code == 2
    assert _error_lines(err) == [
        f"error: --class_names '{lines}' holds 3 names but --model '{model}' has 4 classes "
        "(4 outputs, --label_offset 0); give one name per class."
    ]
    assert not (tmp_path / "out2").exists()
    # A file naming every output, its background first (TF Hub's ImageNetLabels.txt),
    # for a model whose classes start after it: says which lines to drop.
    lines.write_text("background\napple\npear\nplum\n")
    offset = cli_args(class_names=lines, label_offset=1)
    assert main(_flags(image_folder, model, tmp_path / "out3", *offset)) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"error: --class_names '{lines}' holds 4 names but --model '{model}' has 3 classes "
        "(4 outputs, --label_offset 1); it names every output, the 1 before the classes too "
        "(first 'background'): drop its first line."
    ]


@pytest.mark.parametrize(
    "text, said",
    [
        # A list pasted from a notebook is one name: it was refused as 'holds 1 names'
        # (sic), with no word of the commas, while the launch's warning listed that one
        # name as if it were four.
        (
            "apple, pear, plum, fig\n",
            " holds 1 name but --model '{model}' has 4 classes (4 outputs, --label_offset 0); "
            "its one line holds 4 comma-separated names: give one name per line, or a JSON "
            'list (["apple", "pear", ...]).',
        ),
        # A label file as model zoos ship them ran with the numbers in every name
        # ('0 apple'), said only by a warning.
        (
            "0 apple\n1 pear\n2 plum\n3 fig\n",
            ": every line begins with its class's number (line 1: '0 apple'), which would be "
            "read as part of the names; a line's class is its place in the file, counted "
            'from 0: drop the numbers, or give a JSON object keyed from 0 ({{"0": "apple", '
            '"1": "pear", ...}}).',
        ),
    ],
    ids=["comma-separated on one line", "numbered line by line"],
)
def test_class_names_written_as_another_format_are_refused_saying_so(
    image_folder, tmp_path, capsys, text, said
):
    model = _tiny_classifier(tmp_path / "four.keras", 4)
    names = tmp_path / "names.txt"
    names.write_text(text)
    code = main(_flags(image_folder, model, tmp_path / "out", *cli_args(class_names=names)))
    assert code == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"error: --class_names '{names}'" + said.format(model=model)
    ]
    assert not (tmp_path / "out").exists()


def test_top_k_summary_shows_targets_cuts_and_errors(
    image_folder, quadratic_saved_model, tmp_path, capsys
):
    top_3 = cli_args(target="top_k", top_k=3, attributions="none")
    code = main(_flags(image_folder, quadratic_saved_model, tmp_path / "out", *top_3))
    assert code == 0
    capsys.readouterr()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    print_summary(manifest, limit=5)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "relative_delta" in line)
    assert header.split() == [
        "file",
        "label",
        "prediction",
        "confidence",
        "target",
        "relative_delta",
        "attribution_error",
    ]
    assert "... and 7 more rows" in out  # 4 images x 3 targets, 5 shown
    print_summary(manifest, limit=11)
    assert "... and 1 more row (read" in capsys.readouterr().out  # not '1 more rows'
    rows = pd.read_parquet(tmp_path / "out" / "results")
    first = rows[rows.file_name == "cat1.png"]
    shown = [line for line in out.splitlines() if line.strip().startswith("cat1.png")]
    # cat1's rows: its three targets in rank order (the prediction repeated on each).
    names = [str(n) for n in np.asarray(first.top_k_names.iloc[0])]
    assert len(shown) == 3
    for line, name in zip(shown, names, strict=True):
        assert line.split("%")[1].strip().rsplit(" ", 1)[0].strip() == name, line
    assert "Errors by stage (1;" in out and "  decode: 1" in out and "(e.g. broken.jpg)" in out
    # The printed pandas one-liner names each row's target, or an image's k rows look alike.
    assert "columns=['file_name', 'predicted_name', 'target_name', 'attribution_error']" in out


def test_ig_audit_console_command_is_declared_and_runs():
    # In its own process, as the installed `ig-audit` script calls it: the command
    # ends its process (`pipeline.commands.exit_with`), its caller's with it.
    import ast

    tree = ast.parse(open(os.path.join(ROOT, "setup.py")).read())
    (entry_points,) = [
        k.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        for k in n.keywords
        if k.arg == "entry_points"
    ]
    scripts = ast.literal_eval(entry_points)["console_scripts"]
    (script,) = [s for s in scripts if s.startswith("ig-audit=")]
    module, function = script.split("=", 1)[1].split(":")
    code = (
        f"import sys; from {module} import {function}; "
        f"sys.argv = ['/usr/local/bin/ig-audit', '--help']; {function}()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ig-audit ")


@pytest.mark.parametrize(
    "args, overwrite",
    [
        ([], True),  # the default ./output/sample is replaced
        (["--steps", "4"], True),
        (["--output", "./output/sample/"], True),
        (["--output", "/data/audits/mine"], False),  # an earlier audit there is kept
        (["--output=./output/other"], False),
        (["--resume"], False),  # --resume and --overwrite exclude each other
    ],
)
def test_run_local_overwrites_only_the_default_output(args, overwrite, tmp_path):
    # The real script in a copy of the layout, with a bootstrap and a python that record.
    (tmp_path / "scripts").mkdir()
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / "scripts" / "bootstrap.sh").write_text("#!/usr/bin/env bash\n")
    python = tmp_path / ".venv" / "bin" / "python"
    python.write_text('#!/usr/bin/env bash\necho "$PWD"\nprintf "%s\\n" "$@"\n')
    script = tmp_path / "run_local.sh"
    script.write_text(open(os.path.join(ROOT, "run_local.sh")).read())
    for path in (script, python, tmp_path / "scripts" / "bootstrap.sh"):
        path.chmod(0o755)
    caller = tmp_path / "elsewhere"  # relative paths are the caller's, not the repo's
    caller.mkdir()
    done = subprocess.run(
        [str(script), *args], capture_output=True, text=True, check=True, cwd=caller
    )
    cwd, *argv = done.stdout.splitlines()
    assert cwd == str(caller) and argv[:3] == ["-P", "-m", "pipeline"]
    assert argv[len(argv) - len(args) :] == args  # the user's flags last: they win
    assert ("--overwrite" in argv) == overwrite


def test_run_local_runs_its_own_job_from_a_folder_with_a_pipeline_package(tmp_path):
    # A caller's project with its own `pipeline` package: `python -m pipeline` in its
    # folder would run that one. The real script, package and interpreter.
    for name in ("pipeline", "transforms"):
        (tmp_path / name).symlink_to(os.path.join(ROOT, name))
    (tmp_path / ".venv").symlink_to(os.path.dirname(os.path.dirname(sys.executable)))
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "bootstrap.sh").write_text("#!/usr/bin/env bash\n")
    script = tmp_path / "run_local.sh"
    script.write_text(open(os.path.join(ROOT, "run_local.sh")).read())
    for path in (script, tmp_path / "scripts" / "bootstrap.sh"):
        path.chmod(0o755)
    caller = tmp_path / "project"
    (caller / "pipeline").mkdir(parents=True)
    (caller / "pipeline" / "__init__.py").write_text("")
    (caller / "pipeline" / "__main__.py").write_text("print('the caller s own pipeline')")
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, cwd=caller, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "Integrated Gradients audit" in done.stdout


def test_a_coarse_fixed_rule_gets_a_warning(caplog):
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from pipeline.options import attribution_config  # noqa: PLC0415

    def warnings(*argv):
        caplog.clear()
        attribution_config(PipelineOptions(list(argv)).view_as(AuditOptions))
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    (warning,) = warnings("--tolerance", "0", "--steps", "16")
    assert warning.startswith("--tolerance 0 with --steps 16: a fixed rule this coarse")
    assert "Use --steps 64 or more, or a --tolerance." in warning
    assert warnings("--tolerance", "0", "--steps", "64") == []
    assert warnings("--steps", "16") == []  # refined to --tolerance: no warning
    ignored = ["--max_steps", "300", "--completeness_tolerance", "0.1"]
    assert warnings("--tolerance", "0", "--steps", "64", *ignored) == [
        "--tolerance 0 (no refinement) ignores --max_steps and --completeness_tolerance."
    ]
    # A flag another flag's `none` turns off: warned of, and only when it is given.
    assert warnings("--attributions", "none", "--attribution_dtype", "float16") == [
        "--attributions none ignores --attribution_dtype: no row changes with it."
    ]
    assert warnings("--faithfulness", "none", "--faithfulness_steps", "8") == [
        "--faithfulness none ignores --faithfulness_steps: no row changes with it."
    ]
    assert warnings("--attributions", "none", "--faithfulness", "none") == []
    assert warnings("--attribution_dtype", "float16", "--faithfulness_steps", "8") == []
    # Adaptive rules whose panels lack a node at an edge: a looser estimate.
    for method in ("gausslegendre", "riemann_middle", "riemann_left", "riemann_right"):
        (warning,) = warnings("--method", method)
        assert warning.startswith(f"--method {method} with --tolerance > 0: its panels lack a")
        assert "can understate the map's error" in warning
        assert warnings("--method", method, "--tolerance", "0", "--steps", "64") == []
    assert warnings("--method", "gausslobatto") == warnings("--method", "riemann_trapezoid") == []


def test_progress_lines_say_done_total_rate_and_eta():
    from pipeline.progress import progress_line, worker_line

    assert (
        progress_line(16, 200, 32.0)
        == "progress: 16/200 images (8%), 0.50 images/s, ETA 6 min 08 s"
    )
    assert progress_line(8, 8, 26.4) == "progress: 8/8 images (100%), 0.30 images/s, done in 26 s"
    assert (
        progress_line(0, 8, 15.0) == "progress: 0/8 images yet, 15 s elapsed (first batch running)"
    )
    assert progress_line(10, None, 20.0) == "progress: 10 images, 0.50 images/s, 20 s elapsed"
    assert progress_line(1, 10, 800.0) == (  # an ETA of 2 h: hours and minutes
        "progress: 1/10 images (10%), 0.00 images/s, ETA 2 h 00 min"
    )
    assert progress_line(1, None, 20.0) == "progress: 1 image, 0.05 images/s, 20 s elapsed"
    assert worker_line(1, 10.0) == "progress (this worker): 1 image done, 0.10 images/s"
    assert worker_line(8, 10.0) == "progress (this worker): 8 images done, 0.80 images/s"
    assert progress_line(10, None, 20.0, {"gradient": 1208, "forward": 0}) == (
        "progress: 10 images, 0.50 images/s, 20 s elapsed (running: 1,208 gradient "
        "evaluations so far)"
    )
    assert progress_line(0, 8, 15.0, {"gradient": 0, "forward": 8}) == (
        "progress: 0/8 images yet, 15 s elapsed (first batch running: 0 gradient evaluations "
        "and 8 forward passes so far)"
    )
    assert progress_line(8, 8, 26.4, {"gradient": 9}) == progress_line(8, 8, 26.4)  # done
    # Files added to --dataset after the launch listed it: '10/8 images (125%), done in'.
    assert progress_line(10, 8, 20.0) == (
        "progress: 10 images (2 more than the 8 listed at launch), 0.50 images/s, 20 s elapsed"
    )


def test_a_resumed_runs_rate_and_eta_count_only_the_images_it_processed(caplog):
    # A --resume counts the images done before as done at once: in the rate they
    # made 152 done of 500 look like 40 images/s and the ETA a fraction of the time.
    import time

    from pipeline.progress import ReportProgress, progress_line, worker_line

    assert progress_line(216, 500, 16.0, skipped=152) == (
        "progress: 216/500 images (43%, 152 done before), 4.00 images/s, ETA 1 min 11 s"
    )
    assert worker_line(250, 20.0, skipped=110) == (
        "progress (this worker): 250 images done (110 of them done before), 7.00 images/s"
    )
    key, start = f"resume-test-{time.time()}", time.time() - 100
    steps = {
        kind: ReportProgress(kind, key, 5, start, batch_size=2, log_lines=True, every_seconds=0)
        for kind in ("skipped", "attributed")
    }
    with caplog.at_level("INFO", logger="pipeline.progress"):
        for kind in ["skipped"] * 3 + ["attributed"] * 2:
            steps[kind].setup()
            steps[kind].process(f"{kind} image")
    last = caplog.records[-1].getMessage()
    assert last.startswith("progress: 5/5 images (100%, 3 done before), 0.02 images/s, done in")


def test_a_workers_bundle_end_logs_its_count_only_when_no_line_said_it(caplog):
    # A worker logs its count at a bundle's end for the images no line counted yet;
    # a count its batch's line already said is not said again.
    import time

    from pipeline.progress import ReportProgress

    key, start = f"worker-test-{time.time()}", time.time() - 10
    step = ReportProgress(
        "attributed", key, None, start, 2, log_lines=True, every_seconds=0, per_worker=True
    )
    step.setup()
    with caplog.at_level("INFO", logger="pipeline.progress"):
        step.process("a")
        step.process("b")  # the batch's end: its line
        step.finish_bundle()  # nothing since
        step.process("c")
        step.finish_bundle()  # the third image, said at the bundle's end
    lines = [r.getMessage().split(",")[0] for r in caplog.records if r.levelname == "INFO"]
    assert lines == [
        "progress (this worker): 2 images done",
        "progress (this worker): 3 images done",
    ]


def test_the_rate_and_eta_count_from_the_runs_first_model_call(caplog):
    # A run's first line counted its rate from the launch: listing, a resume's
    # salvage and the model's load made it look slow ("ETA 8 min 35 s" for a
    # resume that ended 16 s later). The heartbeat notes the first model call.
    import time

    from pipeline import progress
    from pipeline.progress import ReportProgress, progress_line

    assert progress_line(8, 72, 60.0, busy=4.0) == (
        "progress: 8/72 images (11%), 2.00 images/s, ETA 32 s"
    )
    assert progress_line(72, 72, 60.0, busy=36.0) == (
        "progress: 72/72 images (100%), 2.00 images/s, done in 1 min 00 s"
    )
    assert progress_line(8, 72, 60.0, busy=None) == progress_line(8, 72, 60.0)
    assert progress_line(80, 72, 60.0, busy=4.0) == (  # files added since the listing
        "progress: 80 images (8 more than the 72 listed at launch), 20.00 images/s, "
        "1 min 00 s elapsed"
    )
    key, start = f"busy-test-{time.time()}", time.time() - 100
    progress._COUNTS[key] = progress._Count(last_log=start, working_since=time.time() - 4)
    step = ReportProgress("attributed", key, 72, start, batch_size=8, log_lines=True)
    step.setup()
    with caplog.at_level("INFO", logger="pipeline.progress"):
        for _ in range(8):
            step.process("image")
    line = caplog.records[-1].getMessage()
    assert line.startswith("progress: 8/72 images (11%), 2.00 images/s, ETA 3")  # 32 s, not 13 min


def test_a_model_time_shorter_than_the_heartbeats_second_counts_as_a_second():
    # The heartbeat looks once a second, so the model's first call is known to that
    # second only. A small .keras model's one batch of 7 images took milliseconds from
    # the last look, and the same run said "7/7 images (100%), 996.95 images/s, done in
    # 3 s", or 7.44, 69.90 or 50.77 images/s on reruns, as the look fell.
    from pipeline.progress import progress_line

    assert progress_line(7, 7, 3.2, busy=0.007) == (
        "progress: 7/7 images (100%), 7.00 images/s, done in 3 s"
    )
    assert progress_line(8, 72, 60.0, busy=0.01) == (
        "progress: 8/72 images (11%), 8.00 images/s, ETA 8 s"
    )
    assert progress_line(8, 72, 60.0, busy=2.0) == (  # a measured second or more: as before
        "progress: 8/72 images (11%), 4.00 images/s, ETA 16 s"
    )


def test_a_line_before_the_heartbeat_saw_the_model_counts_from_when_it_last_saw_it_idle(caplog):
    # The heartbeat notes the model's first call once a second: a fast model's first
    # batch ended before that, and its line counted the rate from the launch. A resume
    # that salvaged 4,000 checkpoints said "4003/5000 images (80%, 4002 done before),
    # 0.13 images/s, ETA 2 h 03 min", and ended 8 s later. The model cannot have
    # started before the heartbeat last saw it idle.
    import re
    import time

    from pipeline import progress
    from pipeline.progress import ReportProgress

    key, start = f"first-line-test-{time.time()}", time.time() - 100  # a long launch
    with caplog.at_level("INFO", logger="pipeline.progress"):
        with progress.heartbeat(key, 72, start, every_seconds=1000.0):
            step = ReportProgress("attributed", key, 72, start, batch_size=8, log_lines=True)
            step.setup()
            for _ in range(8):  # a batch done at once, before the heartbeat's next second
                step.process("image")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("progress: 8/72 images (11%), "), line
    # 8 images over the seconds since the heartbeat started, not the 100 s of the launch.
    assert float(re.search(r", ([0-9.]+) images/s", line)[1]) > 8 / 50, line


def test_the_heartbeat_says_running_and_the_gradient_evaluations_so_far(caplog, linear_keras):
    import re
    import time

    from pipeline import progress
    from transforms.tf_model import Classifier, resolve_model

    model = Classifier(resolve_model(linear_keras))  # loaded before the run starts
    points = np.ones((5, SIZE, SIZE, 3), np.float32)
    key, start = f"heartbeat-test-{time.time()}", time.time() - 1000  # a long listing

    def wait_for_a_line(starting: str) -> None:
        # The heartbeat's thread logs once a second; a loaded machine delays it.
        deadline = time.monotonic() + 60
        while not any(r.getMessage().startswith(starting) for r in caplog.records):
            assert time.monotonic() < deadline, f"no line {starting!r} within 60 s"
            time.sleep(0.05)

    with caplog.at_level("INFO", logger="pipeline.progress"):
        with progress.heartbeat(key, 8, start, every_seconds=0.0):
            wait_for_a_line("progress: 0/8")  # a line before any image is done
            calling = time.time()
            model.score_grad_fn("raw")(points, 0 * points, np.ones(5), np.arange(5))
            model.logits(points[:2])
            progress._COUNTS[key].done = 3
            wait_for_a_line("progress: 3/8")  # and one while the next batch runs
            # The rate counts from the first model call (the heartbeat's first second
            # seeing it), which later seconds of work leave as it is.
            noted, lines = progress._COUNTS[key].working_since, len(caplog.records)
            while len(caplog.records) < lines + 2:  # a beat wholly after `noted` was read
                time.sleep(0.05)
            assert progress._COUNTS[key].working_since == noted
    assert calling <= noted <= time.time()
    first, *_, last = [r.getMessage() for r in caplog.records]
    # 3 images over the seconds since that call, not over the 1,000 s since the launch.
    assert float(re.search(r", ([0-9.]+) images/s", last)[1]) > 0.05, last
    assert first.endswith("elapsed (first batch running: 0 gradient evaluations so far)")
    assert last.startswith("progress: 3/8 images")
    assert last.endswith("(running: 5 gradient evaluations and 2 forward passes so far)")


def test_a_tolerance_of_1_is_a_fraction_taken_as_given():
    # The bounds are fractions from 0 to 1: 1 itself (100 %) is accepted, above it refused.
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from pipeline.options import attribution_config  # noqa: PLC0415

    argv = ["--tolerance", "1", "--completeness_tolerance", "1"]
    config = attribution_config(PipelineOptions(argv).view_as(AuditOptions))
    assert config.tolerance == config.completeness_tolerance == 1.0


def test_image_size_and_input_range_are_taken_at_their_bounds():
    # The refusals name the ranges "between 8 and 4096" and "within +-1e+06": both ends
    # included.
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from pipeline.flags import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE  # noqa: PLC0415
    from pipeline.options import check_plain_values, parse_input_range  # noqa: PLC0415

    for size in (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE):
        argv = ["--output", "out", "--image_size", str(size)]
        check_plain_values(PipelineOptions(argv).view_as(AuditOptions))
    assert parse_input_range("-1e6,1e6") == (-1e6, 1e6)


def test_the_tolerance_bounds_completeness_too_unless_completeness_tolerance_is_given():
    # DESIGN: --tolerance bounds each row's per-pixel error "and its completeness".
    # --completeness_tolerance (default 0.5 %) is tighter at the default --tolerance;
    # below 0.5 % the --tolerance bounds completeness too, unless the flag is given.
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from pipeline.options import attribution_config  # noqa: PLC0415

    def bound(*argv):
        return attribution_config(PipelineOptions(list(argv)).view_as(AuditOptions))

    assert bound().completeness_tolerance == AttributionConfig().completeness_tolerance == 0.005
    assert bound("--tolerance", "0.05").completeness_tolerance == 0.005
    assert bound("--tolerance", "0.002").completeness_tolerance == 0.002
    assert AttributionConfig(tolerance=0.002).completeness_tolerance == 0.002
    given = ("--tolerance", "0.002", "--completeness_tolerance", "0.004")
    assert bound(*given).completeness_tolerance == 0.004  # as given: the user's choice
    assert (
        AttributionConfig(tolerance=0.002, completeness_tolerance=0.004).completeness_tolerance
        == 0.004
    )
    # The rows' within_tolerance follows it: a map within 0.2 % whose sum is 0.3 % off is not.
    from transforms.batch import _within  # noqa: PLC0415

    assert _within(bound("--tolerance", "0.002"), 0.001, 0.003) is False
    assert _within(bound(*given), 0.001, 0.003) is True


def test_max_steps_and_batch_size_defaults_are_those_of_their_one_home():
    import inspect

    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.options import attribution_config, batch_size
    from transforms.attribution import DEFAULT_BATCH_SIZE, IGModelHandler

    def flags(*argv):
        return PipelineOptions(list(argv)).view_as(AuditOptions)

    # --max_steps unset: max(256, --steps), as README.md documents, from the config.
    assert attribution_config(flags()).max_steps == AttributionConfig().max_steps == 256
    assert attribution_config(flags("--steps", "300")).max_steps == 300
    assert AttributionConfig(steps=300).max_steps == 300
    assert attribution_config(flags("--steps", "300", "--max_steps", "400")).max_steps == 400
    # --batch_size unset: the model handler's own default, 8.
    assert batch_size(flags()) == DEFAULT_BATCH_SIZE == 8
    assert inspect.signature(IGModelHandler).parameters["batch_size"].default == 8


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": "25"}, "--steps must be an integer, got '25'"),  # was a bare TypeError
        ({"tolerance": "0.01"}, "--tolerance must be a number, got '0.01'"),
        (
            {"completeness_tolerance": "0.01"},
            "--completeness_tolerance must be a number, got '0.01'",
        ),
        ({"top_k": 2.5}, "--top_k must be an integer, got 2.5"),  # failed in the first batch
        ({"seed": "1"}, "--seed must be an integer, got '1'"),
    ],
)
def test_an_attribution_config_from_python_names_a_value_of_the_wrong_type(kwargs, message):
    from transforms.config import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match=message):
        AttributionConfig(**kwargs)


def test_an_attribution_config_from_python_takes_baselines_as_the_flag_does():
    # One string was read letter by letter: "--baseline 'b' is not supported".
    assert AttributionConfig(baselines="black").baselines == ("black",)
    assert AttributionConfig(baselines="black,blur").baselines == ("black", "blur")
    assert AttributionConfig(baselines=["grey"]).baselines == ("grey",)


@pytest.mark.parametrize(
    "baselines", ["black, blur", " black ,blur ", ["black", " blur"], ("black ", "blur")]
)
def test_an_attribution_config_from_python_strips_baseline_names_as_the_flag_does(baselines):
    # --baseline 'black, blur' is black and blur; from Python it was refused:
    # "--baseline ' blur' is not supported".
    assert AttributionConfig(baselines=baselines).baselines == ("black", "blur")


@pytest.mark.parametrize(
    "baselines, message",
    [
        ("black,,blur", "--baseline 'black,,blur' has an empty name; give names separated"),
        ("", "--baseline '' has an empty name"),
        (["black", ""], "--baseline 'black,' has an empty name"),
        (None, "--baseline must be names of baselines .a string or a sequence., got None"),
        (["black", 1], "--baseline must be names of baselines .a string or a sequence., got"),
    ],
)
def test_an_attribution_config_from_python_refuses_baselines_as_the_flag_does(baselines, message):
    # Was "--baseline '' is not supported" (the flag names the empty name), and for
    # None a bare TypeError ("'NoneType' object is not iterable").
    from transforms.config import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match=message):
        AttributionConfig(baselines=baselines)


def test_an_attribution_config_from_python_takes_path_batch_size_auto_as_the_flag_does():
    # --path_batch_size auto is the flag's default; from Python it was refused:
    # "--path_batch_size must be an integer, got 'auto'".
    assert AttributionConfig(path_batch_size="auto").path_batch_size is None
    assert AttributionConfig(path_batch_size=16).path_batch_size == 16


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, linear_keras):
    """`image_folder`'s images and a finished run of them (`--steps 2`), made once a
    module for the tests that change a run's folder: `flags(output)` are its flags with
    `output`, `copy(output)` puts a copy of the run there; `code` is its exit status."""
    where = tmp_path_factory.mktemp("finished_run")
    folder = make_image_folder(where / "images")

    def flags(output) -> list[str]:
        return cli_args(dataset=folder["root"], model=linear_keras, output=output, steps=2)

    code = main(flags(where / "run"))

    def copy(output) -> None:
        shutil.copytree(where / "run", output)

    return {**folder, "flags": flags, "copy": copy, "code": code}


def test_a_runs_output_folder_as_dataset_exits_2_naming_the_folder_it_read(
    finished_run, linear_keras, tmp_path, capsys
):
    """--dataset given a run's --output (its results, where the image folder goes)
    audited its Parquet and JSON files as images: every input an error record, exit 1,
    a new --output written."""
    finished_run["copy"](tmp_path / "run")
    flags = cli_args(dataset=tmp_path / "run", model=linear_keras, output=tmp_path / "out")
    assert main(flags) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert lines == [
        f"error: --dataset {str(tmp_path / 'run')!r} is the --output folder of a run of this "
        "job (its manifest.json): its files are results, not images. Pass a folder of "
        f"images (that run audited --dataset {finished_run['root']!r})."
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "inside, entry, held",
    [
        ("results", "results", "its files are that run's result rows, not images"),
        ("results/", "results", "its files are that run's result rows, not images"),
        ("errors", "errors", "its files are that run's error records, not images"),
        (
            "sanity",
            "sanity",
            "the sanity check writes its files there, and an --overwrite or --resume of "
            "the run deletes them",
        ),
        (  # a killed run's checkpoints
            ".tmp/checkpoints/1f2e",
            ".tmp",
            "that run's partial files and checkpoints, which the next run there deletes",
        ),
    ],
)
def test_a_folder_a_run_wrote_as_dataset_exits_2_naming_the_run(
    finished_run, linear_keras, tmp_path, capsys, inside, entry, held
):
    """--dataset given a folder inside a run (its results/, where the run itself was
    refused) read its Parquet files as images: each an error record, exit 1, and "no
    input gave a row"; a checkpoint folder the same. Found by running the job on
    <run>/results and <run>/errors."""
    run = tmp_path / "run"
    finished_run["copy"](run)
    (run / inside).mkdir(parents=True, exist_ok=True)
    for parquet in (run / "results").glob("*.parquet"):  # a sanity or checkpoint file's like
        shutil.copy(parquet, run / inside / f"copy-{parquet.name}")
    dataset = f"{run}/{inside}"
    flags = cli_args(dataset=dataset, model=linear_keras, output=tmp_path / "out")
    assert main(flags) == 2
    assert _error_lines(capsys.readouterr().err) == [
        f"error: --dataset {dataset!r} lies in {entry}/ of the run in {str(run)!r}: {held}. "
        f"Pass a folder of images outside it (that run audited --dataset "
        f"{finished_run['root']!r})."
    ]
    assert not (tmp_path / "out").exists()


def test_a_folder_a_run_wrote_reached_through_a_link_is_refused_as_dataset(
    finished_run, linear_keras, tmp_path, capsys
):
    finished_run["copy"](tmp_path / "run")
    (tmp_path / "latest").symlink_to(tmp_path / "run" / "results")
    flags = cli_args(dataset=tmp_path / "latest", model=linear_keras, output=tmp_path / "out")
    assert main(flags) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"lies in results/ of the run in {str(tmp_path / 'run')!r}" in line


def test_a_folder_of_images_kept_in_a_runs_folder_is_still_a_dataset(
    finished_run, linear_keras, tmp_path
):
    """Only the folders a run writes are refused: images the user keeps beside them
    (an --output that is their project folder) are read."""
    finished_run["copy"](tmp_path / "run")
    shutil.copytree(finished_run["root"], tmp_path / "run" / "images")
    flags = cli_args(
        dataset=tmp_path / "run" / "images", model=linear_keras, output=tmp_path / "out"
    )
    job, _ = prepare(flags)
    assert job is not None


def test_overwrite_deletes_only_a_run_of_this_job_never_other_files(
    finished_run, linear_keras, tmp_path, capsys
):
    # A project folder whose results/ holds the images themselves, and documents.
    project = tmp_path / "project"
    for name, pixels in list(finished_run["pixels"].items())[:2]:
        write_image(project / "results" / Path(name).name, pixels)
    (project / "errors").mkdir()
    (project / "errors" / "notes.csv").write_text("mine")
    (project / "report.html").write_text("<p>my own report</p>")
    before = _tree(project)
    for dataset in (project / "results", finished_run["root"]):
        flags = cli_args(dataset=dataset, model=linear_keras, output=project, steps=2)
        assert main([*flags, "--overwrite"]) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert line == (
            f"error: --output '{project}' holds errors, report.html, results but no "
            "manifest.json of a run of this job, and --overwrite deletes only such a run. "
            "Move those files, or choose another folder."
        )
    assert _tree(project) == before  # nothing deleted
    # A run's folder whose sanity/ holds the --dataset: never deleted with the run.
    run_dir = tmp_path / "run"
    finished_run["copy"](run_dir)
    photos = run_dir / "sanity" / "photos"
    write_image(photos / "a.png", next(iter(finished_run["pixels"].values())))
    capsys.readouterr()
    flags = cli_args(dataset=photos, model=linear_keras, output=run_dir, steps=2)
    assert main([*flags, "--overwrite"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"--dataset '{photos}' lies in sanity/ of the run in '{run_dir}': " in line
    assert "an --overwrite or --resume of the run deletes them" in line
    # Through a symbolic link to the run's folder too.
    os.symlink(run_dir, tmp_path / "alias")
    flags = cli_args(dataset=photos, model=linear_keras, output=tmp_path / "alias", steps=2)
    assert main([*flags, "--overwrite"]) == 2
    assert "lies in sanity/ of the run in" in _error_lines(capsys.readouterr().err)[0]
    assert (photos / "a.png").is_file()
    # Nor may another run live in this run's temp folder: the next run would delete it.
    flags = cli_args(dataset=finished_run["root"], model=linear_keras, output=run_dir / ".tmp")
    assert main(flags) == 2
    assert "lies inside" in _error_lines(capsys.readouterr().err)[0]


def _bad_configuration(case: str, root: str, where: Path) -> tuple[dict, str]:
    """Flags a run refuses by themselves, whatever --output holds, and the start of
    their own error line (`where`: a folder for the files they name)."""
    if case.startswith("TFDS"):
        from tests import tfds_builders  # registers the tiny builders, prepared offline

        unlabelled = {"dataset": "tiny_unlabelled", "data_dir": where / "tfds"}
        tfds_builders.prepared("tiny_unlabelled", where)
        return {
            "TFDS unprepared": (
                {"dataset": "tiny_shades", "data_dir": where / "tfds", "no_download": True},
                "error: TFDS dataset 'tiny_shades' is not prepared in",
            ),
            "TFDS split": (
                {**unlabelled, "split": "trian"},
                "error: --split 'trian' is not valid for 'tiny_unlabelled'; its splits are test",
            ),
            "TFDS label": (
                {**unlabelled, "target": "label"},
                "error: --target label: TFDS dataset 'tiny_unlabelled' has no label feature",
            ),
        }[case]
    numbered, three = where / "numbered.txt", where / "three.txt"
    numbered.write_text("0 red\n1 green\n2 blue\n")
    three.write_text("red\ngreen\nblue\n")
    return {
        "misspelt folder": ({"dataset": f"{root}s"}, f"error: --dataset '{root}s'"),
        "misspelt name": ({"dataset": "imagess"}, "error: --dataset 'imagess'"),
        "unreadable names": (
            {"class_names": where / "missing.txt"},
            f"error: --class_names '{where / 'missing.txt'}' cannot be read",
        ),
        "numbered names": ({"class_names": numbered}, f"error: --class_names '{numbered}'"),
        # The known models' classes are told by their table, no load: checked before --output.
        "top_k past a known model": (
            {"model": "efficientnet_lite0", "top_k": 5000},
            "error: --top_k 5000 exceeds the model's 1000 classes; pass --top_k 1000 or less.",
        ),
        "names of other classes": (
            {"model": "efficientnet_lite0", "class_names": three},
            f"error: --class_names '{three}' holds 3 names but --model 'efficientnet_lite0' "
            "has 1000 classes",
        ),
    }[case]


_BAD_CONFIGURATIONS = [
    "misspelt folder",
    "misspelt name",
    "unreadable names",
    "numbered names",
    "top_k past a known model",
    "names of other classes",
    "TFDS unprepared",
    "TFDS split",
    "TFDS label",
]


@pytest.mark.parametrize("case", _BAD_CONFIGURATIONS)
def test_a_bad_flag_on_a_folder_holding_a_run_is_refused_by_its_own_line_first(
    case, finished_run, linear_keras, tmp_path, capsys
):
    """A rerun with a typo on an --output holding a run was told to pass --overwrite
    (the folder's refusal came first), then, with it, that --dataset was misspelt: each
    flag's own refusal comes first now, with or without --overwrite, the earlier run
    untouched."""
    run_dir = tmp_path / "run"
    finished_run["copy"](run_dir)
    before = _tree(run_dir)
    bad, said = _bad_configuration(case, finished_run["root"], tmp_path)
    run = {"dataset": finished_run["root"], "model": linear_keras, "output": run_dir}
    for again in ({}, {"overwrite": True}):
        assert main(cli_args(**{**run, **bad, **again})) == 2, again
        (line,) = _error_lines(capsys.readouterr().err)
        assert line.startswith(said) and "already holds a run" not in line, line
        assert _tree(run_dir) == before
    # The flags right, the folder's own refusal (before any model load:
    # `test_cheap_failures_come_before_any_model_load`).
    assert main(cli_args(**run)) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --output '{run_dir}' already holds a run ("), line
    assert _tree(run_dir) == before


def test_a_tfds_dataset_is_downloaded_only_once_the_folder_holding_a_run_is_refused(
    finished_run, linear_keras, tmp_path, capsys
):
    """The dataset's checks come before --output's, but not its download: a rerun on a
    folder holding a run is told so before a download of minutes (or hours)."""
    from tests import tfds_builders  # noqa: F401 - registers the tiny builders

    run_dir, data_dir = tmp_path / "run", tmp_path / "tfds"
    finished_run["copy"](run_dir)
    before = _tree(run_dir)
    args = cli_args(dataset="tiny_shades", data_dir=data_dir, model=linear_keras, output=run_dir)
    assert main(args) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: --output '{run_dir}' already holds a run ("), line
    assert not data_dir.exists() and _tree(run_dir) == before


def test_overwrite_never_deletes_a_dataset_a_runs_linked_results_folder_holds(
    finished_run, linear_keras, tmp_path, capsys
):
    # A run whose results/ was moved to a bigger disk and linked back, to a folder
    # that holds the --dataset too: --overwrite deleted the images with the rows.
    run_dir = tmp_path / "run"
    finished_run["copy"](run_dir)
    disk = tmp_path / "disk"
    shutil.move(run_dir / "results", disk)
    os.symlink(disk, run_dir / "results")
    photos = disk / "photos"
    write_image(photos / "a.png", next(iter(finished_run["pixels"].values())))
    capsys.readouterr()
    flags = cli_args(dataset=photos, model=linear_keras, output=run_dir, steps=2)
    assert main([*flags, "--overwrite"]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert f"--dataset '{photos}' lies inside '{disk}', which --overwrite" in line
    assert (photos / "a.png").is_file()


def test_overwrite_and_resume_never_delete_other_files_in_a_runs_folders(
    finished_run, tmp_path, capsys
):
    # A run whose results/ was moved to a bigger disk and linked back, to a folder
    # that holds other files too: --overwrite deleted them with the run's rows.
    run_dir = tmp_path / "run"
    flags = finished_run["flags"](run_dir)
    assert finished_run["code"] == 0
    finished_run["copy"](run_dir)
    disk = tmp_path / "disk"
    shutil.move(run_dir / "results", disk)
    os.symlink(disk, run_dir / "results")
    (disk / "notes.txt").write_text("mine")
    (disk / "2025").mkdir()
    (disk / "2025" / "part-00000-of-00001.parquet").write_bytes(b"an older table of mine")
    (run_dir / "sanity").mkdir()
    (run_dir / "sanity" / "todo.md").write_text("mine")
    (run_dir / "errors" / "triage.csv").write_text("mine")
    before = _tree(disk), _tree(run_dir)
    capsys.readouterr()
    for again in ("--overwrite", "--resume"):
        assert main([*flags, again]) == 2
        (line,) = _error_lines(capsys.readouterr().err)
        assert line == (
            f"error: --output '{run_dir}' holds files this job did not write in its run "
            "folders: errors/triage.csv, results/2025/part-00000-of-00001.parquet, "
            f"results/notes.txt, sanity/todo.md; {again} would delete or mix them with the "
            "run's. Move them out, or choose another folder."
        )
        assert (_tree(disk), _tree(run_dir)) == before  # nothing deleted
    # Moved out, the same --overwrite replaces the run.
    for name in ("notes.txt", "2025"):
        shutil.move(disk / name, tmp_path / name)
    (run_dir / "sanity" / "todo.md").unlink()
    (run_dir / "errors" / "triage.csv").unlink()
    # Finder's view settings, and the temp folder of a run of an older version killed
    # before its sink finished (Beam's, in results/ itself then), are no one's files.
    (disk / ".DS_Store").write_bytes(b"Bud1")
    (disk / "beam-temp-part-0123" / "shard").mkdir(parents=True)
    (disk / "beam-temp-part-0123" / "shard" / "x.parquet").write_bytes(b"half a shard")
    assert main([*flags, "--overwrite"]) == 0
    assert not (disk / ".DS_Store").exists()
    assert not [p for p in (disk / "beam-temp-part-0123").rglob("*") if p.is_file()]
    assert main([*flags, "--resume"]) == 0


def test_overwrite_and_resume_take_what_a_killed_sanity_check_left(finished_run, tmp_path):
    # A sanity check killed as it wrote leaves its hidden partial picture and its JSON's
    # temp file (`files.write_whole`, `write_json`): files of the job, not the user's.
    from pipeline import sanity

    run_dir = tmp_path / "run"
    flags = finished_run["flags"](run_dir)
    assert finished_run["code"] == 0
    finished_run["copy"](run_dir)
    check = ["--input", str(run_dir), "--images", "1", "--stages", "1"]
    left = [".sanity.png.0123456789abcdef0123456789abcdef.partial", "sanity.json.tmp"]
    for again in ("--resume", "--overwrite"):
        assert sanity.main(check) == 0
        for name in left:
            (run_dir / "sanity" / name).write_bytes(b"cut short")
        assert main([*flags, again]) == 0, again
        assert not (run_dir / "sanity").exists()  # the check of the run before goes


@pytest.mark.parametrize("again", ["--overwrite", "--resume"])
def test_files_put_in_a_runs_folders_after_the_launch_check_are_refused_under_the_lock(
    again, finished_run, tmp_path
):
    # The launch check passes, then a file of the user's lands in results/ while the
    # model loads: taking the lock, the run looks again and refuses, deleting nothing.
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms.config import ConfigError

    run_dir = tmp_path / "run"
    flags = finished_run["flags"](run_dir)
    assert finished_run["code"] == 0
    finished_run["copy"](run_dir)
    options = PipelineOptions([*flags, again])
    late = pipeline_main._prepare(options, options.view_as(AuditOptions))  # only the run's
    (run_dir / "results" / "notes.txt").write_text("mine")
    before = _tree(run_dir)
    with pytest.raises(ConfigError, match=r"did not write in its run folders: results/notes\.txt;"):
        pipeline_main._claim_output(late, again == "--resume", again == "--overwrite")
    assert _tree(run_dir) == before  # nothing deleted, no lock left


def test_errors_by_stage_count_one_cause_over_many_files_once(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.summary import error_summary
    from transforms.schema import ERROR_SCHEMA

    records = [
        {
            "image_id": f"m{i:03d}.png",
            "file_name": f"m{i:03d}.png",
            "stage": "read",
            "error": f"cannot read file: [Errno 2] No such file or directory: '/d/m{i:03d}.png'",
        }
        for i in range(5)
    ] + [
        # Inside a folder, a name no other input has: the example is the file name.
        {"image_id": "d/x.jpg", "file_name": "x.jpg", "stage": "decode", "error": "broken"},
        # An id short enough to occur in any message is left in it, not replaced.
        {"image_id": "a", "file_name": "a", "stage": "decode", "error": "not an image"},
    ]
    (tmp_path / "errors").mkdir()
    pq.write_table(pa.Table.from_pylist(records, ERROR_SCHEMA), tmp_path / "errors" / "p.parquet")
    assert error_summary(str(tmp_path)) == [
        "  read: 5",
        "    5 x cannot read file: [Errno 2] No such file or directory: '/d/<file>' (e.g. m000.png)",
        "  decode: 2",
        "    1 x broken (e.g. x.jpg)",
        "    1 x not an image (e.g. a)",
    ]


def test_an_error_example_whose_file_name_several_inputs_share_is_its_image_id(
    image_folder, linear_keras, tmp_path
):
    """Two links named `loop` in two folders: the summary said "2 x symbolic link loop
    ... (e.g. loop)", which loop unsaid; the rows table shows such a name as its
    image_id, and so do the examples of the summary and the report's causes."""
    from pipeline import run
    from pipeline.report import build_report
    from transforms.results import error_causes, read_errors

    root = Path(image_folder["root"])
    for folder in ("x", "y"):
        (root / folder).mkdir()
        (root / folder / "loop").symlink_to("..")
    flags = _flags(image_folder, linear_keras, str(tmp_path / "out"), "--faithfulness", "none")
    run(flags, save_main_session=False)
    causes = error_causes(read_errors(str(tmp_path / "out")))
    loops = causes[causes.reason.str.startswith("symbolic link loop")]
    assert list(loops.inputs) == [2] and list(loops.example) == ["x/loop"]
    lines = [line for line in error_summary(str(tmp_path / "out")) if "link loop" in line]
    assert len(lines) == 1 and lines[0].endswith("(e.g. x/loop)"), lines
    # A name no other input has stays a file name (broken.jpg in the fixture's folder).
    assert "broken.jpg" in set(causes.example)
    assert '<td class="mono">x/loop</td>' in build_report(str(tmp_path / "out"))


def test_errors_by_stage_count_a_cause_of_files_with_short_names_once(
    image_folder, linear_keras, tmp_path
):
    """Three links pointing at each other, `ab`, `ba` and `cyc` (a link to itself): one
    cause (ELOOP on stat) shown as three, since a name of 3 characters or fewer stayed in
    its reason (it could stand in any word), and it pushed a fourth cause of that stage
    into '... and 1 other reason'. A short name ending the path an OS error quotes is
    the file's own, whatever its length."""
    from pipeline import run

    root = Path(image_folder["root"])
    (root / "ab").symlink_to("ba")
    (root / "ba").symlink_to("ab")
    (root / "cyc").symlink_to("cyc")
    (root / "x").mkdir()
    (root / "x" / "loop").symlink_to("..")
    flags = _flags(image_folder, linear_keras, str(tmp_path / "out"), "--faithfulness", "none")
    run(flags, save_main_session=False)
    path = f"{root}/<file>"
    assert error_summary(str(tmp_path / "out"))[:3] == [
        "  read: 4",
        f"    3 x cannot stat: [Errno 40] Too many levels of symbolic links: '{path}' (e.g. ab)",
        f"    1 x symbolic link loop: leads back to '{os.path.realpath(root)}' (e.g. loop)",
    ]


def test_errors_by_stage_count_reasons_that_differ_only_by_a_number_once(tmp_path):
    # A folder of 60 files that are not images, each of its own size, was 60
    # causes: 3 shown and '... and 57 other reasons', the same reason unseen.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.summary import error_summary
    from transforms.schema import ERROR_SCHEMA

    def record(name: str, error: str) -> dict[str, str]:
        return {"image_id": name, "file_name": name, "stage": "decode", "error": error}

    records = [record(f"g{n}.png", f"not an image Pillow can read ({n} bytes)") for n in range(6)]
    records += [record(f"e{i}.jpg", "empty file (0 bytes)") for i in range(2)]
    records += [record("float16.png", "has 3 float16 NaN pixels")]
    (tmp_path / "errors").mkdir()
    pq.write_table(pa.Table.from_pylist(records, ERROR_SCHEMA), tmp_path / "errors" / "p.parquet")
    assert error_summary(str(tmp_path)) == [
        "  decode: 9",
        "    6 x not an image Pillow can read (N bytes) (e.g. g0.png)",
        "    2 x empty file (0 bytes) (e.g. e0.jpg)",  # one number: shown as it is
        "    1 x has 3 float16 NaN pixels (e.g. float16.png)",
    ]


def test_errors_by_stage_say_how_many_other_reasons_in_words(tmp_path):
    # Four reasons in one stage, three shown: it read '... and 1 other reasons'.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.summary import error_summary
    from transforms.schema import ERROR_SCHEMA

    reasons = ["broken", "not an image", "empty file (0 bytes)", "truncated"]
    records = [
        {"image_id": f"{i}.png", "file_name": f"{i}.png", "stage": "decode", "error": reason}
        for i, reason in enumerate(reasons)
    ]
    (tmp_path / "errors").mkdir()
    pq.write_table(pa.Table.from_pylist(records, ERROR_SCHEMA), tmp_path / "errors" / "p.parquet")
    assert error_summary(str(tmp_path))[-1] == "    ... and 1 other reason"
    assert error_summary(str(tmp_path), reasons=2)[-1] == "    ... and 2 other reasons"


def test_an_error_reason_is_cut_to_160_shown_characters_on_whole_escapes(tmp_path):
    # Cut at 160 characters before its escapes were written out, a reason of 78 holding
    # 60 ESC characters was shown 258 characters long (each ESC is `\x1b`), uncut.
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.summary import error_summary
    from transforms.schema import ERROR_SCHEMA

    errors = {"e.png": "cannot decode: " + "\x1b" * 60 + "end", "l.png": "x" * 200}
    records = [
        {"image_id": name, "file_name": name, "stage": "decode", "error": error}
        for name, error in errors.items()
    ]
    (tmp_path / "errors").mkdir()
    pq.write_table(pa.Table.from_pylist(records, ERROR_SCHEMA), tmp_path / "errors" / "p.parquet")
    assert error_summary(str(tmp_path))[1:] == [
        "    1 x cannot decode: " + "\\x1b" * 36 + "… (e.g. e.png)",  # 15 + 144 + 1
        "    1 x " + "x" * 159 + "… (e.g. l.png)",
    ]


def test_the_end_of_run_table_orders_an_images_targets_by_rank_and_shows_top_1_confidence(
    tmp_path,
):
    from tests.known_rows import make_row, write_output

    # --target top_k rows of one image, in the files in another order than their rank
    # (top_k_classes 281, 282, 283), and a target outside the top k (last).
    rows = [
        [make_row("n/c.png", 281, 281, 0.8, 0.0, target=t) for t in (283, 7)],
        [make_row("n/c.png", 281, 281, 0.8, 0.0, target=t) for t in (282, 281)],
        [make_row("a.png", None, 5, 0.625, 0.0)],
    ]
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path))
    table = summary_table(output, target=True)
    assert table["file"].tolist() == ["a.png"] + ["c.png"] * 4
    assert table["target"].tolist() == ["class 5", "class 281", "class 282", "class 283", "class 7"]
    # The confidence is the prediction's (top 1), on every row of the image.
    assert table["confidence"].tolist() == ["62.5%"] + ["80.0%"] * 4
    assert table["label"].tolist() == ["-"] + ["class 281"] * 4


def test_the_end_of_run_table_never_rounds_a_confidence_to_certainty(tmp_path):
    from tests.known_rows import make_row, write_output

    # '100.0%' of a prediction at 99.96 % read as if the model were certain, and so did
    # that of a float32 1, which any probability above 1 - 3e-8 is stored as.
    rows = [[make_row(f"{p}.png", None, 5, p, 0.0) for p in (0.9996, 0.999996, 1.0)]]
    table = summary_table(write_output(tmp_path / "out", rows, dataset=str(tmp_path)))
    assert table["confidence"].tolist() == ["99.96%", ">99.99%", ">99.99%"]


@pytest.mark.parametrize(
    "target, shown", [("predicted", False), (None, False), ("label", True), ("top_k", True)]
)
def test_the_end_of_run_summary_shows_the_target_unless_it_is_the_prediction(
    tmp_path, capsys, target, shown
):
    from tests.known_rows import make_row, write_output

    output = write_output(tmp_path / "out", [[make_row("a.png", 3, 5, 0.6, 0.0, target=3)]], "d")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    manifest["config"]["target"] = target
    if target is None:  # a manifest without the key: the default, the prediction
        del manifest["config"]["target"]
    manifest["output"] = output
    print_summary(manifest)
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "relative_delta" in line)
    assert ("target" in header.split()) is shown
    assert ("'target_name'" in out) is shown  # in the pandas one-liner's columns


# Root without the capabilities that bypass file permissions: a folder's mode applies
# to it, and it still reads the code it owns (a setuid user could not import lazily).
_WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
_WITHOUT_DAC += ["--inh-caps=-dac_override,-dac_read_search"]


def _run_locked(
    command: list, locked: list[Path], mode: int, restore: int, check: bool = False
) -> subprocess.CompletedProcess:
    """`command` run in a real process that file permissions bind (root without its DAC
    capabilities: `_WITHOUT_DAC`), `locked` set to `mode` while it runs, then `restore`."""
    prefix = _WITHOUT_DAC if os.geteuid() == 0 else []
    for path in locked:
        path.chmod(mode)
    try:
        return subprocess.run(
            [*prefix, *command], cwd=ROOT, capture_output=True, text=True, timeout=600, check=check
        )
    finally:
        for path in locked:
            path.chmod(restore)


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv"
)
@pytest.mark.parametrize(
    "mode, says",
    [(0o000, "is a folder that cannot be listed"), (0o444, "is a folder whose files cannot")],
)
def test_a_dataset_folder_this_user_may_not_list_exits_2_before_any_model_load(
    linear_keras, tmp_path, mode, says
):
    """Its error records (one `cannot list folder`, or one `cannot stat` per file)
    were the whole run, after the model loaded: refused at launch instead, naming
    the folder."""
    images = tmp_path / "images"
    write_image(images / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    argv = cli_args(dataset=images, model=linear_keras, output=tmp_path / "out")
    done = _run_locked([sys.executable, "-m", "pipeline", *argv], [images], mode, 0o755)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = _error_lines(done.stderr)
    assert len(lines) == 1 and f"--dataset '{images}' {says}" in lines[0]
    assert "(Permission denied" in lines[0] and "Loaded" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv"
)
def test_a_report_of_results_this_user_may_not_list_is_one_line_naming_the_folder(
    folder_run, tmp_path
):
    """A results/ this user may not list (results._parquet_files lets the local
    PermissionError through): one line naming the folder and the local fix, not
    "Cannot list ...; pass the --output folder of a finished run"."""
    output = tmp_path / "run"
    shutil.copytree(folder_run["output"], output)
    page = tmp_path / "r.html"
    command = [sys.executable, "-m", "pipeline.report", "--input", str(output)]
    done = _run_locked([*command, "--output", str(page)], [output / "results"], 0o000, 0o755)
    assert done.returncode == 2, done.stderr[-2000:]
    assert _error_lines(done.stderr) == [
        f"error: cannot read --input {str(output)!r}: [Errno 13] Permission denied: "
        f"{str(output / 'results')!r}; make it readable to this user (its permissions, and "
        "its folders'), then run this again."
    ]
    assert not page.exists()


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv"
)
def test_a_resume_of_a_folder_with_no_run_is_refused_before_the_images_are_listed(
    linear_keras, tmp_path, capsys
):
    """A --resume whose --output holds no run listed --dataset first (minutes for a huge
    folder), and was refused for what that listing found: a folder this user may not list
    (the previous test's refusal), or none there. The missing run is refused first, its
    one line; nothing is made."""
    images, output = tmp_path / "images", tmp_path / "out"
    write_image(images / "a.png", np.zeros((SIZE, SIZE, 3), np.uint8))
    said = [
        f"error: --resume: no earlier run in --output {str(output)!r} (no manifest.json, "
        "which a run writes as it starts); run without --resume to start one."
    ]
    argv = cli_args(dataset=images, model=linear_keras, output=output, resume=True)
    done = _run_locked([sys.executable, "-m", "pipeline", *argv], [images], 0o000, 0o755)
    assert done.returncode == 2, done.stderr[-2000:]
    assert _error_lines(done.stderr) == said and "cannot be listed" not in done.stderr
    missing = cli_args(dataset=tmp_path / "none", model=linear_keras, output=output, resume=True)
    assert main(missing) == 2
    assert _error_lines(capsys.readouterr().err) == said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv"
)
def test_a_file_this_user_may_not_read_is_an_error_record_and_a_resume_reads_it_later(
    linear_keras, tmp_path
):
    """As docs/inputs.md says (it said nothing of such a file): one `read` error record naming
    the permission, the other files' rows; once readable, a --resume gives its row."""
    from pipeline import run

    images = tmp_path / "images"
    for name in ("a.png", "locked.png"):
        write_image(images / name, np.zeros((SIZE, SIZE, 3), np.uint8))
    argv = cli_args(dataset=images, model=linear_keras, output=tmp_path / "out", steps=4)
    command = [sys.executable, "-m", "pipeline", *argv, "--faithfulness", "none"]
    done = _run_locked(command, [images / "locked.png"], 0o000, 0o644)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = pd.read_parquet(tmp_path / "out" / "errors")
    assert list(errors.image_id) == ["locked.png"] and list(errors.stage) == ["read"]
    reason = f"cannot read file: [Errno 13] Permission denied: '{images / 'locked.png'}'"
    assert list(errors.error) == [reason]
    assert list(pd.read_parquet(tmp_path / "out" / "results").image_id) == ["a.png"]
    run([*argv, "--faithfulness", "none", "--resume"], save_main_session=False)
    rows = pd.read_parquet(tmp_path / "out" / "results", columns=["image_id"])
    assert sorted(rows.image_id) == ["a.png", "locked.png"]


_LISTED_ERRORS = """
import sys
from transforms import sources
from transforms.preprocess import error_record
for f in sources.list_image_folder(sys.argv[1]):
    if f.error is not None:  # as the job's ReadImages and Decode steps record it
        print(repr(error_record(f.image_id, f.image_id.rsplit("/", 1)[-1], "read", f.error)))
"""


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("setpriv") is None, reason="root needs setpriv"
)
def test_the_errors_by_stage_name_a_folder_that_cannot_be_listed_a_folder(tmp_path):
    """An input's own name in its reason is replaced by what the input is, so that one
    cause over many inputs counts once: a sub-folder that cannot be listed was named
    `<file>`, which it is not. The records are the job's own, from a real listing
    without the permission to list."""
    root = tmp_path / "images"
    write_image(root / "a.png", np.zeros((2, 2, 3), np.uint8))
    for name in ("locked", "shut"):
        write_image(root / name / "b.png", np.zeros((2, 2, 3), np.uint8))
    locked = [root / "locked", root / "shut"]
    listed = _run_locked([sys.executable, "-c", _LISTED_ERRORS, root], locked, 0o000, 0o755, True)
    records = [eval(line) for line in listed.stdout.splitlines()]  # noqa: S307 - our own reprs
    (tmp_path / "out" / "errors").mkdir(parents=True)
    table = pa.Table.from_pylist(records, ERROR_SCHEMA)
    pq.write_table(table, tmp_path / "out" / "errors" / "part-0.parquet")
    assert error_summary(str(tmp_path / "out")) == [
        "  read: 2",
        f"    2 x cannot list folder: [Errno 13] Permission denied: '{root}/<folder>' (e.g. locked)",
    ]


def test_the_summary_names_an_output_given_with_a_trailing_slash_without_doubling_it(
    folder_run, capsys
):
    # `--output gs://bucket/audit/` writes gs://bucket/audit/results; a printed
    # 'gs://bucket/audit//results' names other objects, and its one-liners read nothing.
    manifest = json.loads(Path(folder_run["output"], "manifest.json").read_text())
    manifest["output"] = folder_run["output"] + "/"
    print_summary(manifest)
    out = capsys.readouterr().out
    assert "//" not in out.replace("://", ""), out
    assert f"Results in {folder_run['output']}/results (" in out
    assert f"pd.read_parquet('{folder_run['output']}/results'" in out
    assert f"--input {folder_run['output']} --output {folder_run['output']}/report.html" in out
    from pipeline.report import build_report

    page = build_report(folder_run["output"] + "/", gallery=0)  # its query example
    assert f"{folder_run['output']}/results" in page and "//results" not in page


def test_the_printed_report_command_works_from_a_folder_with_a_pipeline_package(
    folder_run, capsys, tmp_path, monkeypatch
):
    # A caller's project with its own `pipeline` package: `python -m pipeline.report`
    # run there would import that one. The printed command is run as printed.
    caller = tmp_path / "project"
    (caller / "pipeline").mkdir(parents=True)
    (caller / "pipeline" / "__init__.py").write_text("raise ImportError('the caller s own')")
    monkeypatch.chdir(caller)
    print_summary(json.loads(Path(folder_run["output"], "manifest.json").read_text()))
    out = capsys.readouterr().out
    (command,) = [line.strip() for line in out.splitlines() if "-m pipeline.report" in line]
    assert f"{sys.executable} -P -m pipeline.report" in command
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(folder_run["output"], "report.html").is_file()


def test_a_summary_that_shows_every_row_says_no_more_rows(folder_run, capsys):
    # folder_run holds 4 rows: a table of 4 shows them all (it said '... and 0 more rows').
    manifest = json.loads(Path(folder_run["output"], "manifest.json").read_text())
    print_summary(manifest, limit=4)
    out = capsys.readouterr().out
    assert "more row" not in out
    assert sum(line.split()[0].endswith(".png") for line in out.splitlines() if line.strip()) == 4
    print_summary(manifest, limit=3)
    assert "... and 1 more row (read them with pandas below)" in capsys.readouterr().out


def test_the_summary_shows_an_overflowed_error_as_infinite_not_inf_percent(folder_run):
    # A float16 map that overflowed has attribution_error inf: '∞', as the report says.
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    path = sorted(Path(folder_run["output"], "results").glob("*.parquet"))[0]
    table = pq.read_table(path)
    errors = table.column("attribution_error").to_pylist()
    errors[0] = float("inf")
    column = table.schema.get_field_index("attribution_error")
    pq.write_table(table.set_column(column, "attribution_error", pa.array(errors)), path)
    shown = summary_table(folder_run["output"])["attribution_error"].tolist()
    assert "∞" in shown and not any("inf" in value for value in shown)


def test_dataset_sample_with_a_folder_named_sample_here_says_which_is_read(
    tmp_path, monkeypatch, caplog
):
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from pipeline import resolve  # noqa: PLC0415
    from transforms import sources  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    audit = PipelineOptions(["--output", str(tmp_path / "out")]).view_as(AuditOptions)
    assert isinstance(resolve.dataset_source(audit), sources.SampleSource)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    (tmp_path / "sample").mkdir()
    assert isinstance(resolve.dataset_source(audit), sources.SampleSource)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == (
        "--dataset sample is the bundled sample; the folder 'sample' here is not read "
        "(pass --dataset ./sample to audit it)."
    )
    audit = PipelineOptions(["--output", "o", "--dataset", "./sample"]).view_as(AuditOptions)
    assert isinstance(resolve.dataset_source(audit), sources.FolderSource)


def test_the_summary_counts_the_rows_not_within_the_tolerance(folder_run, capsys):
    # A run whose rows missed the tolerance printed a clean table: its errors alone,
    # not a word of within_tolerance. The shark's row (5 %) is above the bounds.
    manifest = json.loads(Path(folder_run["output"], "manifest.json").read_text())
    print_summary(manifest)
    out = capsys.readouterr().out
    assert (
        "Not within the tolerance: 1 of 4 rows (within_tolerance false: estimated per-pixel "
        "error above 0.01 or relative completeness error above 0.01, after refinement up to "
        "--max_steps 512)." in out
    )
    assert out.index("Not within the tolerance") < out.index("Read them with pandas")
    manifest["config"]["tolerance"] = 0  # the fixed rule: no row is judged
    print_summary(manifest)
    assert "within the tolerance" not in capsys.readouterr().out


def _run_of(tmp_path, images: int) -> str:
    """An output of `images` rows (no arrays), in two files, each in reverse name order."""
    from tests.known_rows import make_row, write_output  # noqa: PLC0415

    rows = [make_row(f"n/{i:05d}.png", 281, 281, 0.8, 0.001, mode="none") for i in range(images)]
    files = [rows[1::2][::-1], rows[::2][::-1]]
    return write_output(tmp_path / f"out{images}", files, dataset=str(tmp_path))


def _python_peak(function) -> int:
    """The most memory Python objects held while `function` ran (pandas' strings and
    lists are Python objects), in bytes."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_end_of_run_table_holds_its_own_rows_not_every_row_of_the_run(tmp_path):
    # It shows 20 rows, but read ten columns of every row into pandas to sort them:
    # about 3.3 KB a row, so the job's peak memory grew with its rows at its very end
    # (+124 MB for 30,000 images; a million would add 3 GB).
    small, large = _run_of(tmp_path, 100), _run_of(tmp_path, 6000)
    table = summary_table(large)
    assert table["file"].tolist() == [f"{i:05d}.png" for i in range(20)]
    assert _python_peak(lambda: summary_table(large)) < 2 * _python_peak(
        lambda: summary_table(small)
    )


def test_the_end_of_run_table_shortens_a_long_name_in_its_middle(tmp_path):
    # One 200-character file name made every line of the table 290 characters wide:
    # on a terminal each row wrapped over three lines. Its start and end are kept.
    from tests.known_rows import make_row, write_output  # noqa: PLC0415

    long = "scan_" + "x" * 190 + "_0042.png"
    rows = [make_row(f"n/{name}", 281, 281, 0.8, 0.001) for name in (long, "short.png")]
    table = summary_table(write_output(tmp_path / "out", [rows], dataset=str(tmp_path)))
    shown = table["file"].tolist()
    assert shown[1] == "short.png"
    # 19 columns of its start, "…" and 20 of its end, as docs/output.md shows it.
    assert shown[0] == "scan_xxxxxxxxxxxxxx…xxxxxxxxxxx_0042.png"
    assert max(map(len, table.to_string(index=False).splitlines())) < 120


def _columns_end(line: str) -> list[int]:
    """Where each word of a table line ends on a terminal: CJK characters take two columns."""
    import unicodedata  # noqa: PLC0415

    ends, column = [], 0
    for i, char in enumerate(line):
        column += 2 if unicodedata.east_asian_width(char) in "WF" else 1
        if char != " " and (i + 1 == len(line) or line[i + 1] == " "):
            ends.append(column)
    return ends


def test_the_end_of_run_table_aligns_names_in_cjk_characters(tmp_path, capsys):
    # Padded by characters, a row naming 写真.png, ネコ or 虎猫 (two columns each
    # character on a terminal) stuck out of its columns by one per character.
    from tests.known_rows import make_row, write_output  # noqa: PLC0415

    rows = [
        {**make_row(name, 281, 282, 0.8, 0.001), "label_name": label, "predicted_name": predicted}
        for name, label, predicted in (
            ("写真.png", "ネコ", "虎猫"),
            ("plain.png", "cat", "tiger_cat"),
            ("長い名前の写真です.png", "ネコ", "tabby"),
        )
    ]
    output = write_output(tmp_path / "out", [rows], dataset=str(tmp_path))
    print_summary(json.loads(Path(output, "manifest.json").read_text()))
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["file"])
    table = lines[start : start + 4]
    assert [line.split()[0] for line in table[1:]] == [
        "plain.png",
        "写真.png",
        "長い名前の写真です.png",
    ]
    assert [_columns_end(line) for line in table] == [_columns_end(table[0])] * 4, "\n".join(table)


def test_the_end_of_run_table_shortens_a_long_cjk_name_to_its_columns(tmp_path):
    # 30 CJK characters take 60 columns on a terminal: cut to 40 columns, not 40 characters.
    from tests.known_rows import make_row, write_output  # noqa: PLC0415

    long = "写" * 15 + "真" * 15 + ".png"
    table = summary_table(write_output(tmp_path / "out", [[make_row(long, 1, 1, 0.8, 0.001)]], "."))
    (shown,) = table["file"].tolist()
    assert 38 <= _columns_end(shown)[0] <= 40 and "…" in shown
    assert shown.startswith("写写") and shown.endswith("真.png")


def test_the_summary_shows_an_error_too_small_for_its_decimals_not_as_0(folder_run):
    # A fixed rule on a smooth model is 1e-6 off: the table said 0.000% and 0.00%.
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    path = sorted(Path(folder_run["output"], "results").glob("*.parquet"))[0]
    table = pq.read_table(path)
    for name, value in (("relative_delta", 7.8e-7), ("attribution_error", 1.8e-6)):
        column = pa.array([value] * len(table), pa.float64())
        table = table.set_column(table.schema.get_field_index(name), name, column)
    pq.write_table(table, path)
    shown = summary_table(folder_run["output"])
    assert "0.000078%" in shown["relative_delta"].tolist()
    assert "0.00018%" in shown["attribution_error"].tolist()


def test_an_error_at_float_rounding_is_shown_in_powers_of_ten_not_twenty_zeros():
    # An exact map's attribution_error of 1.5e-17 was "0.0000000000000015%".
    from transforms.wording import percent  # noqa: PLC0415

    assert percent(1.5e-17) == "1.5e-15%"
    assert percent(7.8e-9) == "7.8e-07%"
    assert percent(7.8e-7) == "0.000078%"  # a few zeros: still read as written
    assert percent(0.0123) == "1.2%" and percent(0.0) == "0.0%"


def test_two_threads_importing_tensorflow_at_once_leave_stderr_working():
    """Two threads past `import_tensorflow`'s check at once: the later one saved the
    first's /dev/null as "the real stderr" and, putting it back last, left the process
    writing nothing to stderr ever after. The barrier holds each thread just past the
    check and lets the other go first; the later one's flush before it puts its saved
    stderr back waits, so that it is the last to put one back."""
    code = (
        "import sys, threading, time\n"
        "from transforms import quiet\n"
        "barrier, later = threading.Barrier(2, timeout=1), threading.local()\n"
        "real = quiet.quiet_environment\n"
        "def held(verbose):\n"
        "    try:\n"
        "        later.flushes = 0 if barrier.wait() == 0 else None\n"
        "    except threading.BrokenBarrierError:  # the other waits for this import\n"
        "        later.flushes = None\n"
        "    if later.flushes == 0:\n"
        "        time.sleep(0.5)\n"
        "    real(verbose)\n"
        "class Stderr:\n"
        "    def __getattr__(self, name):\n"
        "        return getattr(sys.__stderr__, name)\n"
        "    def flush(self):\n"
        "        sys.__stderr__.flush()\n"
        "        if getattr(later, 'flushes', None) is not None:\n"
        "            later.flushes += 1\n"
        "            time.sleep(0.5 if later.flushes == 2 else 0)\n"
        "quiet.quiet_environment, sys.stderr = held, Stderr()\n"
        "threads = [threading.Thread(target=quiet.import_tensorflow, args=(False,))\n"
        "           for _ in range(2)]\n"
        "for t in threads: t.start()\n"
        "for t in threads: t.join()\n"
        "print('stderr still works', file=sys.__stderr__, flush=True)\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "stderr still works" in done.stderr


def test_the_end_of_run_summary_shows_control_and_format_characters_in_names_escaped(
    linear_keras, tmp_path, capsys
):
    # A file name may hold a newline or a terminal escape: the table showed 'a\nb.png'
    # (pandas escapes a newline), but the errors by stage printed it raw, so the line
    # broke in two, and either let an escape sequence (ESC[2J clears a terminal) through.
    # A format character went through raw in both: a right-to-left override (U+202E)
    # showed 'x\u202egnp.exe' as 'xexe.png', a zero-width space (U+200B) not at all.
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    write_image(root / "clear\x1b[2J.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    picture = rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
    write_image(root / "x\u202egnp.exe", picture, format="PNG")
    (root / "bad\nname.jpg").write_bytes(b"not an image")
    (root / "zero\u200bwidth.jpg").write_bytes(b"")  # another reason: empty
    flags = cli_args(dataset=root, model=linear_keras, output=tmp_path / "out", steps=4)
    assert main([*flags, "--faithfulness", "none"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "clear\\x1b[2J.png" in out
    assert "(e.g. bad\\nname.jpg)" in out
    assert not any(line.startswith("name.jpg") for line in out.splitlines())
    assert "\u202e" not in out and "\u200b" not in out
    assert any(line.split()[0] == "x\\u202egnp.exe" for line in out.splitlines() if line)
    assert "(e.g. zero\\u200bwidth.jpg)" in out


def test_the_end_of_run_summary_shows_control_characters_in_class_names_escaped(
    linear_keras, tmp_path, capsys
):
    # Class names come from a file (--class_names): the label, prediction and target
    # columns show them as the file column does, with an escape (ESC[2J) or a C1 control
    # character (U+009B, a one-character CSI) written out, not sent to the terminal.
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    write_image(root / WNID_CAT / "a.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    names = tmp_path / "names.txt"
    names.write_text("".join(f"c{i}\x1b[2J\x9b\n" for i in range(1000)), encoding="utf-8")
    flags = cli_args(dataset=root, model=linear_keras, output=tmp_path / "out", steps=4)
    flags += cli_args(class_names=names, target="label", faithfulness="none")
    assert main(flags) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x9b" not in out
    row = next(line for line in out.splitlines() if line.startswith("a.png"))
    assert row.count("\\x1b[2J\\x9b") == 3, row  # label, prediction, target
    assert row.split()[1] == "c281\\x1b[2J\\x9b" == row.split()[4]


def test_the_errors_by_stage_show_control_characters_in_reasons_escaped(tmp_path):
    # An error's reason may quote text the job did not write (a library's message
    # naming a folder): its control characters are written out as in the file names.
    (tmp_path / "errors").mkdir()
    error = "ValueError: cannot read 'x\x1b[2J\x9b/y': no such folder"
    rows = {"image_id": ["a.png"], "file_name": ["a.png"], "stage": ["read"], "error": [error]}
    pq.write_table(pa.table(rows, schema=ERROR_SCHEMA), tmp_path / "errors" / "part-0.parquet")
    lines = error_summary(str(tmp_path))
    assert "\x1b" not in "".join(lines) and "\x9b" not in "".join(lines)
    assert "cannot read 'x\\x1b[2J\\x9b/y'" in lines[1], lines


def test_log_lines_show_control_characters_in_names_escaped(command_line_runs):
    # The launch's warnings quote folder names: one holding a terminal escape (ESC[2J
    # clears the screen) reached the terminal raw, as the summary's table no longer does.
    # A name's line break is escaped too (the message's own line breaks are kept): it
    # broke the warning in two, the second line reading as a line of its own.
    code, _, err = command_line_runs["names"]
    assert code == 0, err
    assert "\x1b" not in command_line_runs["stderr"], err
    assert "(cat\\x1b[2J, dog\\nINFO x)" in err, err
    assert not any(line.startswith("INFO x") for line in err.splitlines())


def test_a_local_run_runs_on_beams_in_process_runner_without_trying_prism(command_line_runs):
    # Beam 2.77's DirectRunner first fetched its Prism runner from GitHub and ran the
    # job there when it could (here, offline, it logged the attempt and fell back): a
    # user with network got another runner than the one tested, and a firewall that
    # drops packets hung the launch; each run left 3 empty folders in $TMPDIR. A
    # DirectRunner job runs on the FnApiRunner, whichever of Beam's names for it is
    # given: `--runner direct` (as Beam spells its runners without "Runner") tried Prism.
    # The runs under each name are `command_line_runs`' --verbose ones.
    stderr = command_line_runs["stderr"] + command_line_runs["verbose_stderr"]
    assert "prism" not in stderr.lower(), stderr[-3000:]
    assert "Falling back" not in stderr
    for runner in _DIRECT_RUNNERS:
        code, _, err = command_line_runs[runner]
        assert code == 0, err[-3000:]
    # Nor the empty folders the attempt left in the temp folder (beam-temp*, tmp*).
    assert sorted(p.name for p in command_line_runs["temp"].iterdir()) == []


def test_a_run_given_beams_fnapirunner_is_the_local_run_it_is(command_line_runs):
    # A DirectRunner job runs on Beam's FnApiRunner; `--runner FnApiRunner` named the
    # same in-process runner but was taken for a remote one: no progress lines, the
    # model loaded again for the worker, and Beam's FnApiRunner handed its workers
    # none of the job's Beam options. It now runs as a DirectRunner job does.
    code, out, err = command_line_runs["fnapi"]
    assert code == 0, err
    assert "progress: 5/5 images (100%)" in err and "images/s" in err
    assert "Results in" in out and "(4 rows)" in out, out


def _memory() -> int:
    """This machine's memory in bytes as the job reads it: its container's limit where
    lower (in a container limited to less, the machine's memory failed both tests)."""
    from pipeline.resolve import _machine_memory  # noqa: PLC0415

    return _machine_memory()


# Bytes a path point of the bundled model's 224x224 input holds, as measured (28 MB),
# and those its process holds before any call (0.9 GB).
_BUNDLED_POINT = 224 * 224 * 3 * 186
_BUNDLED_PROCESS = 900_000_000


def test_a_path_batch_size_whose_calls_cannot_fit_in_memory_exits_2_with_one_that_fits(
    tmp_path, capfd, caplog
):
    # --path_batch_size had no upper bound: 100000 points of the bundled model's
    # 224x224 input (28 MB each) ran out of memory while running, exit 1 or a SIGKILL.
    # 64 images of 4096 points each give calls of the whole 100000.
    if _memory() >= 100000 * _BUNDLED_POINT:
        pytest.skip("this machine holds 2.8 TB")
    flags = cli_args(output=tmp_path / "o", path_batch_size=100000, steps=4096, tolerance=0)
    flags += cli_args(batch_size=64, faithfulness="none")
    (line,) = _error_lines(_failed_in_process(flags, capfd, caplog))
    assert line == (
        "error: --path_batch_size 100000: gradient calls of 100000 path points need about "
        "2799.8 GB (28.0 MB a point at the model's 224x224 input), and 1 process holding "
        "the model about 0.9 GB before any call: more than this machine's "
        f"{_memory() / 1e9:.1f} GB of memory; pass --path_batch_size "
        f"{(_memory() - _BUNDLED_PROCESS) // 2 // _BUNDLED_POINT} or less, or auto."
    )
    assert not (tmp_path / "o").exists()


def test_a_path_batch_size_refusal_counts_the_workers_that_hold_calls_at_once(
    tmp_path, capfd, caplog
):
    # The check counted one call whatever the DirectRunner's workers: 2 threads of the
    # launcher (--direct_running_mode multi_threading) each hold a call at once, and its
    # process the model and TensorFlow's runtime before any. (The measured peaks the
    # rule is held under are in pipeline/resolve.py; the value it suggests passes the
    # check: test_a_path_batch_size_is_refused_only_where_the_calls_it_makes_cannot_fit.)
    workers = cli_args(direct_num_workers=2, direct_running_mode="multi_threading")
    flags = cli_args(path_batch_size=100000, steps=4096, batch_size=64) + workers
    base = cli_args(output=tmp_path / "o", tolerance=0, faithfulness="none")
    (line,) = _error_lines(_failed_in_process(base + flags, capfd, caplog))
    fits = (_memory() - _BUNDLED_PROCESS) // 2 // (2 * _BUNDLED_POINT)
    assert line.startswith(
        "error: --path_batch_size 100000: gradient calls of 100000 path points in each of 2 "
        "workers at once need about 5599.6 GB (28.0 MB a point at the model's 224x224 "
        "input), and 1 process holding the model about 0.9 GB before any call: "
    ) and line.endswith(f"; pass --path_batch_size {fits} or less, or auto.")
    assert not (tmp_path / "o").exists()


def test_a_path_batch_size_is_refused_only_where_the_calls_it_makes_cannot_fit():
    # A call holds at most a round of the batch's points (8 images of 16 here: 128),
    # whatever a larger --path_batch_size allows; a value that fits is never refused.
    # Each DirectRunner worker holds a call at once, and each of its processes the
    # model before any: the launcher's, and a multi_processing run's workers.
    from pipeline.resolve import check_path_batch_memory  # noqa: PLC0415
    from pipeline.runner import LocalWorkers  # noqa: PLC0415
    from transforms.tf_model import ModelSpec  # noqa: PLC0415

    def check(value, kind="bundled", steps=4096, batch=64, workers=None, images=None):
        workers = workers or LocalWorkers()
        spec = ModelSpec("m", kind, "m", 224, (0.0, 1.0), 1000, 0, "x")
        config = AttributionConfig(steps=steps, tolerance=0, path_batch_size=value)
        check_path_batch_memory(config, spec, batch, workers, images)

    def suggested(error) -> int:
        return int(re.search(r"pass --path_batch_size (\d+) or less", str(error.value))[1])

    room = _memory() - _BUNDLED_PROCESS
    most = room // _BUNDLED_POINT
    check(10**9, steps=16, batch=8)
    check((room // 2) // _BUNDLED_POINT)  # the value the refusal says fits
    check(most)
    with pytest.raises(pipeline_main.ConfigError, match=rf"--path_batch_size {most + 1}: "):
        check(most + 1)
    # Another model is held to what any model's point holds at least: its input, its
    # gradient and its contribution, 12 bytes a value (1.8 MB at 224x224).
    check(most + 1, kind="keras")
    # 4 worker processes, each holding the model and a call, and the launcher's model.
    four = LocalWorkers(processes=5, calls=4)
    most_of_four = (_memory() - 5 * _BUNDLED_PROCESS) // (4 * _BUNDLED_POINT)
    check(most_of_four, workers=four)
    with pytest.raises(pipeline_main.ConfigError, match="in each of 4 workers at once") as e:
        check(most_of_four + 1, workers=four)
    check(suggested(e), workers=four)
    # No more calls at once than images: 2 images keep 2 of the 4 workers busy.
    check(most_of_four + 1, workers=four, images=2)
    with pytest.raises(pipeline_main.ConfigError, match="pass fewer --direct_num_workers"):
        check(1, workers=LocalWorkers(processes=_memory() // _BUNDLED_PROCESS + 1))


def test_a_containers_memory_limit_is_read_from_cgroup_v1_and_v2(tmp_path):
    # Only cgroup v2's memory.max was read: a container of cgroup v1 (its
    # memory/memory.limit_in_bytes) limited to less than the machine was held to the
    # machine's memory. Either limit counts where lower; none (v2's "max", v1's
    # 2**63 rounded to pages) leaves the machine's.
    from pipeline.resolve import _CGROUP_LIMITS, _machine_memory  # noqa: PLC0415

    machine = _machine_memory(limits=())
    assert "/sys/fs/cgroup/memory/memory.limit_in_bytes" in _CGROUP_LIMITS
    v1, v2 = tmp_path / "memory.limit_in_bytes", tmp_path / "memory.max"
    v1.write_text("2147483648\n")
    v2.write_text("max\n")
    assert _machine_memory(limits=(str(v2), str(v1))) == min(machine, 2147483648)
    v1.write_text("9223372036854771712\n")
    assert _machine_memory(limits=(str(v2), str(v1), str(tmp_path / "none"))) == machine


def test_the_workers_a_local_job_runs_its_model_in_are_counted(tmp_path):
    # The check held any local job to one call, and ran for DirectRunner jobs alone:
    # --direct_num_workers (0: one per core) make calls at once, in processes of their
    # own with multi_processing; a Prism job runs on this machine too.
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from pipeline.runner import LocalWorkers, local_workers  # noqa: PLC0415

    def workers(*flags: str) -> LocalWorkers | None:
        return local_workers(PipelineOptions(list(flags)))

    cores = os.cpu_count()
    assert workers() == LocalWorkers(processes=1, calls=1)
    assert workers("--direct_num_workers", "3") == LocalWorkers(processes=1, calls=3)
    threads = ["--direct_running_mode", "multi_threading", "--direct_num_workers", "0"]
    assert workers(*threads) == LocalWorkers(processes=1, calls=cores)
    processes = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    assert workers(*processes) == LocalWorkers(processes=3, calls=2)
    assert workers("--runner", "PrismRunner") == LocalWorkers(processes=1, calls=1)
    assert workers("--runner", "DataflowRunner") is None
    apart = ["--runner", "PortableRunner", "--job_endpoint", "localhost:1"]
    assert workers(*apart) is None
    if _memory() >= 100000 * _BUNDLED_POINT:
        pytest.skip("this machine holds 2.8 TB")
    flags = cli_args(runner="PrismRunner", output=tmp_path / "o", path_batch_size=100000)
    flags += cli_args(steps=4096, tolerance=0, batch_size=64, faithfulness="none")
    refused = r"--path_batch_size 100000: gradient calls of 100000 path points need"
    with pytest.raises(pipeline_main.ConfigError, match=refused):
        prepare(flags)  # not main: were it not refused, no Prism job starts


def test_a_flag_given_twice_with_other_values_is_warned_of_naming_the_one_used(caplog):
    # `--steps 16 --steps 32` ran with 32 and said nothing of the 16 (argparse keeps the
    # last); only --baseline was warned of. The same value again, a switch given twice
    # and flags that accumulate lose nothing: no warning.
    from pipeline.options import check_flags  # noqa: PLC0415

    with caplog.at_level(logging.WARNING, logger="pipeline.options"):
        check_flags(["--steps", "16", "--output", "o", "--steps=32", "--method", "gausslegendre"])
        check_flags(["--steps", "16", "--steps=16", "--overwrite", "--overwrite"])
        check_flags(["--experiments", "a", "--experiments", "b"])
        check_flags(["--worker_machine_type", "a", "--machine_type=b"])  # one flag, two names
    assert caplog.messages == [
        "--steps given 2 times (16, then 32): the last counts: --steps 32 is used; give each "
        "flag once.",
        "--worker_machine_type given 2 times (a, then b): the last counts: "
        "--worker_machine_type b is used; give each flag once.",
    ]


def test_a_switch_and_its_negation_given_both_name_the_one_used(caplog):
    # A switch's value is its name: `--use_public_ips --no_use_public_ips` (Beam's pair,
    # one dest) was said to use "--use_public_ips --no_use_public_ips", a command of both.
    from pipeline.options import check_flags  # noqa: PLC0415

    with caplog.at_level(logging.WARNING, logger="pipeline.options"):
        check_flags(["--use_public_ips", "--no_use_public_ips"])
    assert caplog.messages == [
        "--use_public_ips given 2 times (--use_public_ips, then --no_use_public_ips): the "
        "last counts: --no_use_public_ips is used; give each flag once.",
    ]
