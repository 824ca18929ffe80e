"""Beam's plugin of this job in the worker processes of a multi-process DirectRunner.

Each worker process imports it as it starts, before its first bundle: Beam's
--beam_plugins, which `pipeline.runner` sets for the workers alone. Its import is its
act, for the life of the process: the worker answers a bundle that fails to the
launcher, its traceback the answer's error, not printed
(`pipeline.stopping.failed_bundles_answered`, as the launcher's own workers do on
threads). Each worker printed the traceback to its stderr, which the launcher copies
to its own, and logged it again (`Error processing instruction ...`): pages above the
run's one `error:` line, which a log file under a size limit lost. The launcher's
`error:` line says why, and --verbose prints the traceback there. Nothing else
imports this module.
"""

from __future__ import annotations

import contextlib

from pipeline.stopping import failed_bundles_answered

# Held for the process's life: a context dropped would be closed, Beam's print back.
_FOR_THE_PROCESS = contextlib.ExitStack()
_FOR_THE_PROCESS.enter_context(failed_bundles_answered())
