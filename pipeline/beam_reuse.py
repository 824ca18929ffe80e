"""What Beam works out again each time it asks, worked out once for a run.

A small run of this job costs about a second of CPU besides its images, most of it
Beam's, and much of that Beam recomputing what cannot change while the run lasts
(`python -m benchmarks.run_overhead`, docs/performance.md):
- the job's options: Beam reads them for each step it adds to the graph, each type
  check and each stage it runs (`view_as`, about 400 times in a small run), and each
  read made a new view, an argument parser of that view's options with every flag
  parsed again (`JobOptions` keeps one view per options class);
- a DoFn's state and timer specs: Beam finds them by inspecting the signature of
  every method of the DoFn (about 30 of ours), and asks for them several times for
  each DoFn of the graph as it builds, checks and translates it
  (`dofn_specs_kept`);
- a method's arguments: Beam takes its signature each time, for each DoFn new to it
  too (a worker's unpickled copy), whose methods are its class's functions
  (`function_arguments_kept`);
- the weight of each entry of the in-process worker's state cache, which no later
  bundle reads: Beam sizes each by walking its objects and every loaded module's
  globals (`in_process_state_cache_off`: the cache is off, as in Beam's worker
  processes).

None is a cache across runs: a copy of the options makes its own views, and the
specs and arguments are kept for the length of one run (of the runs that overlap in
threads of one process: `pipeline.patching`), for the DoFns and functions it holds.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Iterator

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import userstate

from pipeline.patching import one_for_overlapping_runs

__all__ = [
    "JobOptions",
    "dofn_specs_kept",
    "function_arguments_kept",
    "in_process_state_cache_off",
]


class JobOptions(PipelineOptions):
    """A job's Beam options, each view of them made once. A view holds nothing of its
    own: its values are the options' (`_all_options`, shared by every view), so the
    view kept for a class is the one Beam would make again. A copy (Beam's `Pipeline`
    deep-copies its options) keeps no view of the original: it makes its own."""

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})
        view = views.get(cls)
        if view is None or view._all_options is not self._all_options:  # noqa: SLF001
            view = views[cls] = super().view_as(cls)
        return view

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_views", None)
        return state


@one_for_overlapping_runs
def dofn_specs_kept() -> Iterator[None]:
    """Inside the block, Beam's `userstate.get_dofn_specs` works out each DoFn's state
    and timer specs once: later asks of the same DoFn (the same object, held by a weak
    reference whose end frees its entry) get copies of the sets found first. An error
    (a DoFn of duplicate parameters) is raised each time, as before; a DoFn that takes
    no weak reference is inspected each time. Blocks that overlap (the runs of threads
    of one process; a run inside the tests' block, kept for their whole session) share
    one, which Beam's own replaces as the last ends (`one_for_overlapping_runs`): their
    answers are kept by DoFn, each run's DoFns its own. Beam's own function is the
    `beams` attribute of the one that keeps its answers."""
    find = userstate.get_dofn_specs
    found: dict[int, tuple[weakref.ref, tuple[set, set]]] = {}

    def get_dofn_specs(dofn):
        key = id(dofn)
        kept = found.get(key)
        if kept is None or kept[0]() is not dofn:
            specs = find(dofn)
            try:
                ended = weakref.ref(dofn, lambda _, key=key: found.pop(key, None))
            except TypeError:  # __slots__ without __weakref__
                return specs
            kept = found[key] = (ended, specs)
        states, timers = kept[1]
        return set(states), set(timers)

    get_dofn_specs.beams = find
    userstate.get_dofn_specs = get_dofn_specs
    try:
        yield
    finally:
        userstate.get_dofn_specs = find


@one_for_overlapping_runs
def in_process_state_cache_off() -> Iterator[None]:
    """Inside the block, the state cache of the FnApiRunner's workers in this process
    (the DirectRunner's) is off, as Beam's worker processes have theirs by default
    (--max_cache_memory_usage_mb 0): their side inputs and user state are read from
    the runner, as those workers read them. The FnApiRunner hands each bundle cache
    tokens of its own, so no later bundle finds an entry (none in a run of this job);
    each entry kept was sized first by walking its objects, and the sizing walks
    every loaded module's globals too (about 6 ms an entry with TensorFlow loaded).
    Beam's size (`worker_handlers.STATE_CACHE_SIZE_MB`, 100 MB) is read as a worker
    starts; blocks that overlap share one change (`one_for_overlapping_runs`)."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers  # noqa: PLC0415

    beams = worker_handlers.STATE_CACHE_SIZE_MB
    worker_handlers.STATE_CACHE_SIZE_MB = 0
    try:
        yield
    finally:
        worker_handlers.STATE_CACHE_SIZE_MB = beams


#: What makes `inspect.signature` look past a function's own code and defaults.
_SIGNATURE_ELSEWHERE = ("__wrapped__", "__signature__", "_partialmethod", "__partialmethod__")


@one_for_overlapping_runs
def function_arguments_kept() -> Iterator[None]:
    """Inside the block, Beam's `core.get_function_args_defaults` (the positional
    arguments of a callable and their defaults, from its signature) works out a Python
    function's, or a method's of one, once: Beam asks it of each method of each DoFn
    it inspects, about 4,300 times in a small run, most for DoFns new to it (a
    worker's unpickled copies), whose methods are their class's functions. An answer
    stands while the function keeps its code and defaults and has nothing that
    `inspect.signature` would follow instead (`_SIGNATURE_ELSEWHERE`); others, and
    other callables, are asked of Beam each time. Each answer is a new pair of lists
    of Beam's own objects. Blocks that overlap share one (`one_for_overlapping_runs`)."""
    from apache_beam.transforms import core  # noqa: PLC0415

    find = core.get_function_args_defaults
    # A function: {bound?: (its code, its defaults, Beam's answer)}.
    found: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get_function_args_defaults(f):
        bound = isinstance(f, types.MethodType)
        func = f.__func__ if bound else f
        if type(func) is not types.FunctionType or any(
            name in func.__dict__ for name in _SIGNATURE_ELSEWHERE
        ):
            return find(f)
        kept = found.setdefault(func, {}).get(bound)
        if kept is None or kept[0] is not func.__code__ or kept[1] is not func.__defaults__:
            kept = found[func][bound] = (func.__code__, func.__defaults__, find(f))
        args, defaults = kept[2]
        return list(args), list(defaults)

    get_function_args_defaults.beams = find
    core.get_function_args_defaults = get_function_args_defaults
    try:
        yield
    finally:
        core.get_function_args_defaults = find
