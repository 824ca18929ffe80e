"""What Beam works out again each time it asks, worked out once for a run."""

import copy
import functools
import inspect
import pickle
import types

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)
from apache_beam.transforms import userstate
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec

from pipeline.beam_reuse import (
    JobOptions,
    dofn_specs_kept,
    function_arguments_kept,
    in_process_state_cache_off,
)
from pipeline.options import AuditOptions

_FLAGS = ["--runner", "DirectRunner", "--experiments", "a", "--model", "m.keras"]


def test_job_options_read_as_beams_each_view_made_once():
    options, beams = JobOptions(_FLAGS), PipelineOptions(_FLAGS)
    standard = options.view_as(StandardOptions)
    assert options.view_as(StandardOptions) is standard  # kept, not made again
    assert options.view_as(AuditOptions) is not options.view_as(DebugOptions)
    assert options.view_as(AuditOptions).model == beams.view_as(AuditOptions).model == "m.keras"
    assert options.get_all_options() == beams.get_all_options()
    # A value set through one view is every view's, as Beam's views share their values.
    options.view_as(SetupOptions).save_main_session = True
    standard.runner = "PrismRunner"
    assert options.get_all_options()["save_main_session"] is True
    assert options.view_as(StandardOptions).runner == "PrismRunner"


@pytest.mark.parametrize("copied", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))])
def test_a_copy_of_job_options_makes_views_of_its_own_values(copied):
    # Beam's Pipeline deep-copies its options; Dataflow pickles them.
    options = JobOptions(_FLAGS)
    experiments = options.view_as(DebugOptions).experiments
    copy_ = copied(options)
    assert "_views" not in copy_.__dict__
    assert copy_.get_all_options() == options.get_all_options()
    copy_.view_as(DebugOptions).add_experiment("b")
    copy_.view_as(StandardOptions).runner = "PrismRunner"
    assert copy_.view_as(DebugOptions).experiments == ["a", "b"]
    assert experiments == ["a"] and options.view_as(DebugOptions).experiments == ["a"]
    assert options.view_as(StandardOptions).runner == "DirectRunner"


_BAG = BagStateSpec("bag", VarIntCoder())
_TIMER = TimerSpec("timer", beam.TimeDomain.WATERMARK)
_BAG_PARAM, _TIMER_PARAM = beam.DoFn.StateParam(_BAG), beam.DoFn.TimerParam(_TIMER)


class _Stateful(beam.DoFn):
    def process(self, element, bag=_BAG_PARAM, timer=_TIMER_PARAM):
        yield element


class _Plain(beam.DoFn):
    def process(self, element):
        yield element


class _Twice(beam.DoFn):
    def process(self, element, a=_BAG_PARAM, b=_BAG_PARAM):
        yield element


@pytest.fixture
def beams_own(beams_own_dofn_specs):
    """Beam's own `get_dofn_specs`, the tests' session's block left (conftest):
    `dofn_specs_kept` blocks in the test are the outermost."""
    assert not hasattr(beams_own_dofn_specs, "beams")
    return beams_own_dofn_specs


def test_dofn_specs_are_beams_and_worked_out_once_per_dofn_in_the_block(beams_own):
    stateful, plain = _Stateful(), _Plain()
    beams = {dofn: beams_own(dofn) for dofn in (stateful, plain)}
    assert beams[stateful] == ({_BAG}, {_TIMER})
    with dofn_specs_kept():
        kept = userstate.get_dofn_specs
        assert kept is not beams_own and kept.beams is beams_own
        with dofn_specs_kept():  # an inner block: the outer one's answers serve
            assert userstate.get_dofn_specs is kept
        for dofn in (stateful, plain):
            assert userstate.get_dofn_specs(dofn) == beams[dofn]
            assert userstate.is_stateful_dofn(dofn) == (dofn is stateful)
        # The first answer stands for the same DoFn: a later change of its class is
        # not looked for again (a DoFn does not change within a run) ...
        _Plain.extra = lambda self, s=_BAG_PARAM: None
        try:
            assert userstate.get_dofn_specs(plain) == (set(), set())
            # ... but another DoFn is inspected, and an answer is a copy to change freely.
            assert userstate.get_dofn_specs(_Plain()) == ({_BAG}, set())
            userstate.get_dofn_specs(stateful)[0].clear()
            assert userstate.get_dofn_specs(stateful) == beams[stateful]
        finally:
            del _Plain.extra
        for _ in range(2):  # a DoFn Beam refuses is refused at each ask
            with pytest.raises(ValueError, match="duplicate process method parameters"):
                userstate.get_dofn_specs(_Twice())
    assert userstate.get_dofn_specs is beams_own  # Beam's again after the block


def test_a_dofn_that_ended_is_not_taken_for_a_later_one_of_its_address(beams_own):
    # CPython gives a freed object's memory to the next object of its size: a DoFn
    # made after one that ended often has its id, and must still be inspected.
    reused = 0
    with dofn_specs_kept():
        for _ in range(20):
            stateful = _Stateful()
            assert userstate.get_dofn_specs(stateful)[0] == {_BAG}
            freed = id(stateful)
            del stateful
            plain = _Plain()
            reused += id(plain) == freed
            assert userstate.get_dofn_specs(plain) == (set(), set())
            del plain
    assert reused  # the case this test is for happened


def _sizings(monkeypatch) -> list[int]:
    """The weights Beam's worker state cache works out, each entry it keeps (Beam's
    own sizing, called through)."""
    from apache_beam.runners.worker import statecache

    sized, beams = [], statecache.get_deep_size
    monkeypatch.setattr(
        statecache, "get_deep_size", lambda *o: sized.append(beams(*o)) or sized[-1]
    )
    return sized


def _side_input_sums_are(expected: list[int]) -> None:
    """A FnApiRunner (the DirectRunner's, in this process) run reading two side inputs."""
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.util import assert_that, equal_to

    with beam.Pipeline(runner=fn_runner.FnApiRunner()) as p:
        numbers = p | "Numbers" >> beam.Create([1, 2, 3])
        total = numbers | beam.CombineGlobally(sum)
        sums = numbers | beam.Map(
            lambda n, t, all_: n + t + sum(all_),
            beam.pvalue.AsSingleton(total),
            beam.pvalue.AsList(numbers),
        )
        assert_that(sums, equal_to(expected))


def test_the_in_process_workers_state_cache_is_off_while_a_run_lasts(monkeypatch):
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    sized = _sizings(monkeypatch)
    beams_size = worker_handlers.STATE_CACHE_SIZE_MB
    _side_input_sums_are([13, 14, 15])
    assert sized  # Beam's own: each side input read is sized as it is kept
    sized.clear()
    with in_process_state_cache_off():
        assert worker_handlers.STATE_CACHE_SIZE_MB == 0
        _side_input_sums_are([13, 14, 15])  # the same sums, side inputs read from the runner
    assert sized == []
    assert worker_handlers.STATE_CACHE_SIZE_MB == beams_size


def test_a_run_of_the_job_sizes_no_state_cache_entry(
    image_folder, linear_keras, tmp_path, monkeypatch
):
    # Each entry of a run's cache was sized (about 6 ms each with TensorFlow loaded) and
    # never read again: the FnApiRunner gives each bundle cache tokens of its own.
    from pipeline import run
    from tests.conftest import cli_args

    sized = _sizings(monkeypatch)
    flags = cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path, steps=4)
    manifest = run(flags, save_main_session=False)
    assert manifest["counts"]["rows"] == len(image_folder["pixels"])
    assert sized == []


class _Methods(beam.DoFn):
    def process(self, element, bag=_BAG_PARAM, n=3):
        yield element

    def start_bundle(self, *args):
        pass


def _wrapped(f):
    @functools.wraps(f)
    def inner(*args, **kwargs):
        return f(*args, **kwargs)

    return inner


def test_function_arguments_are_beams_and_worked_out_once_per_function(monkeypatch):
    from apache_beam.transforms import core

    beams, asked = core.get_function_args_defaults, []
    monkeypatch.setattr(core, "get_function_args_defaults", lambda f: asked.append(f) or beams(f))

    def plain(a, b=_TIMER_PARAM, *rest, c=1, **more):
        return a

    wrapped = _wrapped(plain)
    callables = [
        _Methods().process,
        _Methods().start_bundle,
        plain,
        wrapped,
        lambda x, y=2: x,
        str.upper,
        functools.partial(plain, 1),
    ]
    answers = [beams(f) for f in callables]
    assert answers[0] == (["element", "bag", "n"], [_BAG_PARAM, 3])
    with function_arguments_kept():
        for _ in range(2):  # each DoFn's own method, as Beam's workers unpickle copies
            found = [core.get_function_arguments(_Methods(), "process")]
            found += [core.get_function_args_defaults(f) for f in callables[1:]]
            assert found == answers
            assert found[0][1][0] is _BAG_PARAM  # Beam's own objects
        # Beam asked once for each Python function; each time of what follows
        # __wrapped__, or is not a Python function.
        assert [getattr(f, "__name__", None) for f in asked].count("process") == 1
        assert asked.count(wrapped) == asked.count(str.upper) == 2
        # The class's function, not bound: its own answer, self first.
        assert core.get_function_args_defaults(_Methods.process) == beams(_Methods.process)
        assert core.get_function_args_defaults(_Methods.process)[0][0] == "self"
        found[0][1].append("x")  # an answer is the caller's to change
        assert core.get_function_args_defaults(_Methods().process) == answers[0]
        plain.__defaults__ = (5,)  # a function changed is asked again
        assert core.get_function_args_defaults(plain) == beams(plain) == (["a", "b"], [5])
        plain.__signature__ = inspect.signature(lambda z: z)
        assert core.get_function_args_defaults(plain) == (["z"], [])


def test_the_kept_function_arguments_are_beams_for_every_method_of_the_jobs_dofns(
    image_folder, linear_keras, tmp_path
):
    # Beam's DoFns and the job's, of the read, RunInference and the sinks: each method
    # Beam inspects, asked of a copy as a worker unpickles it, answered as Beam does.
    from apache_beam.internal import pickler
    from apache_beam.transforms import core

    from tests.conftest import cli_args, job_dofns

    fns = job_dofns(*cli_args(dataset=image_folder["root"], model=linear_keras, output=tmp_path))
    assert len(fns) > 20, len(fns)
    copies = [c for fn in fns for c in (fn, pickler.loads(pickler.dumps(fn)))]
    methods = [
        (c, name)
        for c in copies
        for name in dir(c)
        if isinstance(getattr(c, name, None), types.MethodType)
    ]
    assert len(methods) > 1000, len(methods)
    beams = [core.get_function_arguments(c, name) for c, name in methods]
    with function_arguments_kept():
        assert [core.get_function_arguments(c, name) for c, name in methods] == beams
