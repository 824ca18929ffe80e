"""`python -m pipeline [flags]`: run the audit and print where the results are."""

from __future__ import annotations

import logging
import sys

from pipeline.main import run
from pipeline.summary import print_summary


class _WithoutBeamMemoryWarning(logging.Filter):
    """Drops RunInference's per-batch "Resource module is not available" warning.

    Beam 2.77 imports `resource` together with a module that needs PyTorch, so
    without PyTorch it repeats this (harmless) warning for every batch.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Resource module is not available")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # TensorFlow and absl are chatty at INFO; keep the user's terminal readable.
    for noisy in ("absl", "tensorflow", "apache_beam"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WithoutBeamMemoryWarning())
    try:
        manifest = run(argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if manifest is None:  # a Dataflow dry run or template, or --no_wait_until_finish
        print("No results to show: the job did not run to completion here (see the log).")
        return 0
    print_summary(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
