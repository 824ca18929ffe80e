"""The test suite's own order: two worker processes take the slowest files first."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_workers_take_the_slowest_file_first_not_the_one_of_most_tests(tmp_path):
    # pytest-xdist's --dist loadfile handed out the files with the most tests first
    # (its --loadscope-reorder, on by default): test_multiprocess.py, the longest file
    # but of few tests, came near the end of run_tests.sh's suite, one worker left on
    # it for minutes while the other had finished. A real pytest run on two workers,
    # as run_tests.sh starts it, over files named as this suite's, with its conftest.
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    for name, count in (("test_many", 4), ("test_more", 4), ("test_multiprocess", 1)):
        tests = "".join(f"def test_{i}():\n    pass\n\n\n" for i in range(count))
        (tmp_path / f"{name}.py").write_text(tests)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    flags = "-v -n 2 --dist loadfile -p no:cacheprovider".split()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *flags],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Each worker's results in the order it ran them: the slow file is one's first.
    firsts = {}
    for worker, file in re.findall(r"^\[(gw\d)\] .*?PASSED (\w+)\.py::", done.stdout, re.M):
        firsts.setdefault(worker, file)
    assert "test_multiprocess" in firsts.values(), done.stdout
