"""The telling line of a long exception message (`transforms.errors`), known answers.

TensorFlow's own errors, raised for real, are in tests/test_cli.py; these are the
message shapes that one run does not produce.
"""

import pytest

from transforms.errors import error_reason


@pytest.mark.parametrize(
    "raised",
    [
        "TimeoutException: took too long",
        "tf.errors.ResourceExhaustedError: OOM when allocating",
        "SystemExit: 2",
        "KeyboardInterrupt: stopped",
    ],
)
def test_under_a_header_the_raised_line_is_the_reason_not_the_detail_after_it(raised):
    message = f'in user code:\n\n  File "m.py", line 3, in f\n{raised}\nsecond detail line'
    assert error_reason(ValueError(message)) == raised


def test_of_several_raised_lines_the_last_is_the_reason():
    # The innermost error: the one raised inside the tf.function.
    message = (
        "in user code:\n\nValueError: calling the model failed\n"
        '  File "m.py", line 3\nInvalidArgumentError: scores : Tensor had NaN values\nmore'
    )
    assert error_reason(ValueError(message)) == (
        "InvalidArgumentError: scores : Tensor had NaN values"
    )


@pytest.mark.parametrize(
    "last",
    [
        "  [[{{node CheckNumerics}}]]",
        '  File "m.py", line 3, in checked',
        "<stack traces unavailable>",
        "Detected at node CheckNumerics defined at (most recent call last):",
        "[while running 'Attribute/RunInference']",
    ],
)
def test_without_a_raised_line_the_reason_is_the_last_line_that_is_not_a_location(last):
    message = f"Graph execution error:\n\nscores : Tensor had NaN values\n{last}"
    assert error_reason(RuntimeError(message)) == "scores : Tensor had NaN values"


@pytest.mark.parametrize(
    "error, reason",
    [
        # Beam's Dataflow wait when the service gave no message: its header, not 'None'.
        (
            RuntimeError("Dataflow pipeline failed. State: FAILED, Error:\nNone"),
            "Dataflow pipeline failed. State: FAILED, Error:",
        ),
        (RuntimeError(None), "RuntimeError"),  # a None made the message: none said
        (MemoryError(), "MemoryError"),
    ],
)
def test_a_none_is_no_reason(error, reason):
    assert error_reason(error) == reason


@pytest.mark.parametrize(
    "error, said",
    [
        (MemoryError(), "MemoryError"),  # Python's own, out of memory: no message
        (AssertionError(), "AssertionError"),  # a bare assert in a library
        (RuntimeError(None), "RuntimeError"),
        (OSError("disk gone"), "OSError: disk gone"),
    ],
)
def test_the_run_failed_line_names_an_error_without_a_message_once(error, said):
    """The `error: the run failed:` line and a manifest's reason (`failure_reason`) of
    an error that says nothing: its type once, where it said 'MemoryError: MemoryError',
    'RuntimeError: None'."""
    from pipeline.logs import failure_reason

    assert failure_reason(error) == said


def test_the_run_failed_line_of_a_run_on_threads_names_its_error_once():
    """A run on threads (--direct_running_mode multi_threading) fails with Beam's
    RuntimeError whose message is its worker's traceback, the raised line last: its
    reason is that line, as a run in one thread says it, where it said 'RuntimeError:
    RuntimeError: OSError: ...'."""
    from pipeline.logs import failure_reason

    step = "[while running 'WriteResults/WriteResultsParquet/WriteImpl/WriteBundles']"
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "apache_beam/io/parquetio.py", line 852, in write_record\n'
        "OSError: [Errno 27] File too large\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n"
        '  File "apache_beam/runners/worker/sdk_worker.py", line 310, in _execute\n'
        f"RuntimeError: OSError: [Errno 27] File too large {step}\n"
    )
    said = f"RuntimeError: OSError: [Errno 27] File too large {step}"
    assert failure_reason(RuntimeError(traceback)) == said
    assert failure_reason(RuntimeError(f"OSError: [Errno 27] File too large {step}")) == said
