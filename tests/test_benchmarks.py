"""The benchmark scripts' own checks (fast: no model, no job)."""

import pytest

from benchmarks import throughput


@pytest.mark.parametrize("copies", ["1", "0"])
def test_throughput_refuses_copies_below_two_before_any_work(copies, capsys):
    # One copy is the small set itself: the marginal rate would divide by 0 images
    # after minutes of runs.
    with pytest.raises(SystemExit) as exit_info:
        throughput._parse(["--copies", copies, "--path_batch_size", "8"])
    assert exit_info.value.code == 2
    assert "--copies must be 2 or more" in capsys.readouterr().err


def test_throughput_accepts_two_copies():
    assert throughput._parse(["--copies", "2", "--path_batch_size", "8"]).copies == 2
