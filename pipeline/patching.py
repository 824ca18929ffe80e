"""What a run changes in Beam for its length, made once for all the runs that overlap.

A run changes a few of Beam's functions and settings while it lasts
(`beam_reuse`'s: the DoFn specs and function arguments kept, the in-process worker's
state cache off; `stopping`'s, of Beam's workers), the environment its worker processes start in, and
the process's thread hook (`logs.threads_watched`): attributes of a class or module,
and variables, that every thread of the process sees.
Runs may overlap in one process: a notebook or a test runner calling `pipeline.run`
from two threads. Each run put back, as it ended, what it had found as it began: run
B, begun inside run A, found A's change and put it back after A had put Beam's own
back, so that B ran its end without the change, and A's stayed for the life of the
process. `one_for_overlapping_runs` makes such a change one for all the runs that
overlap: the first to begin makes it, the last to end undoes it, once, whatever the
order in which they end; the runs between share it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["one_for_overlapping_runs"]


def one_for_overlapping_runs(
    change: Callable[..., Iterator[Any]],
) -> Callable[..., AbstractContextManager[Any]]:
    """A context manager of `change` (a generator of one yield, as for
    `contextlib.contextmanager`: it makes the change, yields, then undoes it), shared:
    a block entered while another is held (another run's, in any thread; or the same
    run's, nested) makes no change of its own, and gets what the held one yielded; the
    change is undone as the last block held ends, in its thread. The first block's
    arguments make the change; a later one's are not looked at. Whatever `change`
    keeps (its state for the runs, held in its closure) is the one of all the blocks
    that overlap: state of a run's own is keyed by what tells the runs apart. An
    error inside a block is that block's own: the change is undone as after any end."""
    made = contextlib.contextmanager(change)
    lock = threading.Lock()
    # While any block is held: [the context entered, what it yielded, the blocks held].
    held: list[Any] = []

    @contextlib.contextmanager
    @functools.wraps(change)
    def shared(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with lock:
            if not held:
                context = made(*args, **kwargs)
                held[:] = [context, context.__enter__(), 0]
            held[2] += 1
            yielded = held[1]
        try:
            yield yielded
        finally:
            with lock:
                held[2] -= 1
                context = held[0] if held[2] == 0 else None
                if context is not None:
                    held.clear()
                    context.__exit__(None, None, None)

    return shared
