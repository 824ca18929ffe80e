"""Beam's plugin of this job in the worker processes of a multi-process DirectRunner.

Each worker process imports it as it starts, before its first bundle: Beam's
--beam_plugins, which `pipeline.runner` sets for the workers alone. Its import is its
act, for the life of the process: the worker answers a bundle that fails to the
launcher, its traceback the answer's error, not printed
(`pipeline.stopping.failed_bundles_answered`, as the launcher's own workers do on
threads). Each worker printed the traceback to its stderr, which the launcher copies
to its own, and logged it again (`Error processing instruction ...`): pages above the
run's one `error:` line, which a log file under a size limit lost. The launcher's
`error:` line says why, and --verbose prints the traceback there. It also says
once, not every half second, that the worker lost the launcher's log service
(`_said_once`). Nothing else imports this module.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
from collections.abc import Callable

from apache_beam.runners.worker import log_handler

from pipeline.stopping import failed_bundles_answered


def _said_once(say: Callable[..., None]) -> Callable[..., None]:
    """`say` for its first call alone. Beam's log handler of a worker prints 'Logging
    client failed: <gRPC's error, 5 lines>... resetting' each time it fails to reach
    the launcher's log service, every half second: a worker still at its bundle once
    the launcher had closed that service (the run failed as another worker was
    killed) printed it 77 times, 33.6 kB above the `error:` line, until its bundle
    ended. The first still says that the worker lost the launcher."""
    said = threading.Event()

    def once(*args: object, **kwargs: object) -> None:
        if not said.is_set():
            said.set()
            say(*args, **kwargs)

    return once


# Its one print: the module's own name, found before the builtin.
log_handler.print = _said_once(builtins.print)

# Held for the process's life: a context dropped would be closed, Beam's print back.
_FOR_THE_PROCESS = contextlib.ExitStack()
_FOR_THE_PROCESS.enter_context(failed_bundles_answered())
