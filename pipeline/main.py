"""The job: read images, attribute them with IG inside RunInference, write Parquet.

`run(argv)` validates every flag and resolves the dataset and the model before
the pipeline starts, so bad configuration fails at once with a clear message.
Datasets are not read on the launching machine: image folders are listed and
read by the workers, TFDS datasets are read by shard with `ReadFromTFDS` (or, as
ArrayRecord files, by ranges of examples: `transforms.sources.ReadTfds`).

This module holds the job's course: `prepare` (the flags' own checks, from
`pipeline.options`, then --output claimed and readied), `build_pipeline`,
`launch` and `run` (waiting for the runner; --output handed over to a job that
runs on without the launcher, or to a Dataflow template). What it calls
lives one idea per module: `pipeline.job` (`AuditJob`, re-exported here),
`pipeline.runner` (which runner; Dataflow's launch checks), `pipeline.resolve`
(dataset, model, label space), `pipeline.output_folder` (--output's checks,
readying and tidy-up; its lock: `pipeline.output_lock`), `pipeline.resume`
(--resume) and `pipeline.stopping` (Ctrl-C, local worker processes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipeline import logs, output_lock
from pipeline.beam_reuse import (
    JobOptions,
    dofn_specs_kept,
    function_arguments_kept,
    in_process_state_cache_off,
)
from pipeline.job import AuditJob
from pipeline.options import (
    AuditOptions,
    ConfigError,
    attribution_config,
    batch_size,
    check_plain_values,
    check_schemes,
    checked_flags,
    command_as_typed,
    expand_home,
    parse_input_range,
    paths_as_opened,
)
from pipeline.output_folder import (
    check_a_run_to_resume,
    check_output_flags,
    check_output_free,
    delete_matching,
    local_output,
    make_folder,
    prepare_output,
)
from pipeline.progress import ReportProgress, heartbeat
from pipeline.resolve import (
    Dataset,
    check_dataset,
    check_imagenet_offset,
    check_known_model_classes,
    check_labels,
    check_labels_in_model,
    check_path_batch_memory,
    class_names_for,
    dataset_source,
    fit_to_model,
    in_model_label_space,
    label_names_for,
    resolve_dataset,
    resolve_model_spec,
    warn_of_other_label_space,
)
from pipeline.resume import check_resume_at_launch, log_resume, nothing_left, resume_state, skip_all
from pipeline.runner import (
    check_credentials,
    check_dataflow_launch,
    check_dataflow_paths,
    check_no_resume_template,
    check_runner,
    dataflow_job_logs,
    is_dataflow,
    is_dataflow_dry_run,
    is_direct,
    job_outlives_launcher,
    local_runner,
    local_workers,
    where_job_runs_on,
    writes_template,
)
from pipeline.stopping import (
    JobCancelled,
    ended_unfinished,
    failed_bundles_answered,
    interrupted,
    its_files_closed,
    stopped,
    tidied,
    unaccounted,
    workers_apart_from_ctrl_c,
    workers_import_this_job,
)
from transforms import labels, sources, wording
from transforms.attribution import ERRORS_TAG, IGModelHandler, ImageOutcome, Preprocess
from transforms.batch import forget_warnings
from transforms.config import AttributionConfig
from transforms.done_ids import load_done_ids, write_done_ids
from transforms.errors import error_reason, for_want_of_space
from transforms.manifest import ERRORS_DIR, MANIFEST_FILE
from transforms.schema import results_schema
from transforms.sinks import (
    WriteCheckpoints,
    WriteErrors,
    WriteManifest,
    WriteResults,
    write_json,
    write_schema_file,
)
from transforms.tf_model import (
    ModelHandoff,
    ModelReference,
    ModelSpec,
    model_reference,
    what_flags_set,
)

__all__ = ["AuditJob", "build_pipeline", "launch", "no_results_here", "prepare", "run"]

_LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def _as_config_errors() -> Iterator[None]:
    """Anything that goes wrong while checking the configuration is a ConfigError."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, OSError) as e:
        raise ConfigError(str(e)) from e


def _prepare(options: PipelineOptions, audit: AuditOptions) -> AuditJob:
    """The checks of `prepare`, cheapest first: flags, paths, --dataset, then --output,
    before any download or model. A --resume's --output holding no run is refused before
    --dataset is listed. --top_k and --class_names against the model's classes: a known
    model's (its table tells them) before --dataset; any other model's after --output's
    check, as for most models (a .keras file, a SavedModel, a TF Hub handle) only reading
    or loading the model tells them, which a held --output is refused before."""
    check_plain_values(audit)
    config = attribution_config(audit)
    input_range = parse_input_range(audit.input_range)
    batch = batch_size(audit)
    check_runner(options)
    check_no_resume_template(options, audit)
    on_dataflow, dry_run = is_dataflow(options), is_dataflow_dry_run(options)
    source = dataset_source(audit)
    if on_dataflow:
        check_dataflow_paths(audit, source)
        check_dataflow_launch(options, audit, dry_run)
    model = model_reference(audit.model)
    model.check_exists()  # a local path: before TensorFlow loads
    check_output_flags(audit)
    check_a_run_to_resume(audit)
    data, names_file = _dataset_then_output(audit, config, model, source, on_dataflow, dry_run)
    # Only a DirectRunner's workers run in this process and can take the launcher's model.
    handoff = ModelHandoff() if is_direct(options) else None
    spec = resolve_model_spec(audit, model, data, input_range, handoff)
    config = fit_to_model(audit, config, spec)
    check_path_batch_memory(config, spec, batch, local_workers(options), data.total)
    data = in_model_label_space(data, spec)
    check_imagenet_offset(audit, spec, data, names_file)
    check_labels_in_model(audit, config, spec, data)
    class_names = class_names_for(audit, spec, data, names_file)
    warn_of_other_label_space(data, spec, class_names, names_file)
    return AuditJob(
        output=audit.output,
        source=data.source,
        spec=spec,
        config=config,
        class_names=class_names,
        label_names=label_names_for(spec, data, class_names),
        batch_size=batch,
        jit_compile={"auto": None, "on": True, "off": False}[audit.jit_compile],
        start_time=datetime.datetime.now(datetime.UTC).isoformat(),
        total_inputs=data.total,
        input_ids=data.ids,
        show_progress=is_direct(options),
        progress_per_worker=options.view_as(DirectOptions).direct_running_mode
        == "multi_processing",
        model_handoff=handoff,
        verbose=audit.verbose,
    )


def _dataset_then_output(
    audit: AuditOptions,
    config: AttributionConfig,
    model: ModelReference,
    source: sources.DataSource,
    on_dataflow: bool,
    dry_run: bool,
) -> tuple[Dataset, tuple[str, ...] | None]:
    """--class_names read and, with --top_k, checked against a known model's classes
    (`check_known_model_classes`), and --dataset checked, then --output
    (`check_output_free`): a rerun with a typo on a folder holding a run is told of the
    typo, not to pass --overwrite first; with --resume, the earlier run's manifest is
    read, its files checked and its settings that no model sets compared
    (`check_resume_at_launch`).
    Nothing is written before --output's check but a TFDS download, which waits for
    it; the model, slower to load, comes after both (`_prepare`)."""
    names_file = None
    if audit.class_names:  # a gs:// file is read through Cloud Storage
        check_credentials(audit.class_names, "--class_names", "read")
        names_file = labels.read_class_names(audit.class_names)
    check_known_model_classes(audit, config, model, names_file)
    data = check_dataset(audit, source, on_dataflow, dry_run, names_file)
    if data is not None:
        check_labels(config, data)
    if not dry_run:
        check_output_free(audit)
        if audit.resume:  # the earlier run, and its settings that no model sets
            check_resume_at_launch(audit, config, data.source if data else source)
    if data is None:
        data = resolve_dataset(audit, source, on_dataflow, dry_run, names_file)
        check_labels(config, data)
    return data, names_file


def _as_in_a_fresh_process() -> None:
    """A run lists its folder and warns as it would in a fresh process, after other
    runs in this one (a notebook's): what the listing and the in-process worker keep
    once per process (folders holding another run, warnings given once) is forgotten."""
    sources.forget_other_runs()
    forget_warnings()


def prepare(argv: Sequence[str] | None = None) -> tuple[AuditJob, PipelineOptions]:
    """Parses and validates flags, resolves dataset and model. No pipeline yet.

    What is checked at launch, cheapest first: flag names and values (unknown
    flags are refused); on Dataflow, the Google Cloud options Beam needs (its
    validator), a flag that ships this package to the workers, and the worker
    image when GPUs are asked for; a local --model
    path exists; a --resume's local --output holds a run's manifest; --class_names
    read; --top_k and --class_names against a known model's classes (its table's: no
    model read); a local image folder (listed) or a
    gs:// one (credentials, its storage probed, one object looked up); a TFDS
    dataset's metadata and split (a prepared one's whole, an unprepared one's as far
    as its builder declares); then --output holds no earlier
    run (unless --overwrite or --resume) and, when local, can be written in, its run
    folders too (after the flags, so that a rerun with a typo is told of the typo,
    not to pass --overwrite); then an unprepared TFDS dataset is downloaded; the
    model's input size and outputs (a DirectRunner job loads it once, for its
    in-process worker; other runners' launchers read them from the known models'
    table or saved_model.pb when they can) and --top_k and --class_names against
    them; that --output is writable. A Dataflow --dry_run needs no Google Cloud
    access, so it skips the two checks that do (gs:// dataset folder and --output), and a
    --resume's reading of the earlier run, and logs that.

    Raises:
      ConfigError: bad configuration, before any work; the message names the
        bad value and the fix.
    """
    _as_in_a_fresh_process()
    with _as_config_errors():
        argv = checked_flags(argv)
        options = JobOptions(argv)
        standard = options.view_as(StandardOptions)
        if standard.runner is None:  # an empty one is refused (`check_runner`)
            standard.runner = "DirectRunner"  # Beam's default, said once here
        audit = options.view_as(AuditOptions)
        expand_home(audit)
        check_schemes(audit)
        paths_as_opened(audit)
        job = dataclasses.replace(_prepare(options, audit), command=command_as_typed(argv))
        if is_dataflow_dry_run(options):
            _log_dry_run(audit)
            return job, options
        return _claim_output(job, resume=audit.resume, overwrite=audit.overwrite), options


def _log_dry_run(audit: AuditOptions) -> None:
    """What a Dataflow --dry_run leaves undone: what needs Google Cloud access."""
    _LOG.info("Dry run: not checking that --output %s is free and writable.", audit.output)
    if audit.resume:
        _LOG.info(
            "Dry run: --resume reads no earlier run, so the job built skips no image. A real "
            "launch writes the ids of those it skips to a file in --output for the workers "
            "to read: the job's graph holds its path alone, whatever their number."
        )


def _claim_output(job: AuditJob, resume: bool, overwrite: bool) -> AuditJob:
    """Locks --output for this run, then readies it: a fresh, replaced or resumed run.

    Everything that reads or deletes an earlier run's files happens under the
    lock, so a second run can neither duplicate nor delete a live run's rows.
    The caller releases `job.lock` when the run ends.

    Raises:
      ValueError: the folder is in use (`OutputInUseError`, a ConfigError to the
        caller), holds another run, cannot be resumed, or cannot be written (a
        full disk); the lock is released then.
    """
    make_folder(job.output)
    try:
        lock = output_lock.acquire(job.output)
    except OSError as e:  # the lock is the first file written there
        raise ValueError(
            f"--output {job.output!r} is not writable: {e}; choose a folder you can write to."
        ) from e
    job = dataclasses.replace(job, lock=lock)
    try:
        return _ready_output(job, resume, overwrite)
    except KeyboardInterrupt:
        job.lock.release()
        raise KeyboardInterrupt(
            "interrupted while readying --output: it may hold part of the earlier run "
            "(an --overwrite deletes it first, a --resume moves its checkpoints). Run the "
            "command again."
        ) from None
    except OSError as e:  # a full disk or quota, an I/O error: the bare errno said too little
        job.lock.release()
        fix = "free some space" if for_want_of_space(e) else "fix the folder (its permissions)"
        raise ValueError(
            f"--output {job.output!r}: cannot write there while readying it for this run "
            f"({error_reason(e)}); {fix}, then run the same command again."
        ) from e
    except BaseException:
        job.lock.release()
        raise


def _ready_output(job: AuditJob, resume: bool, overwrite: bool) -> AuditJob:
    """Readies the locked --output for this run: an earlier run's rows read (resume)
    or its files removed (`prepare_output`), then this run's manifest and schema
    file written; the job with what a resume found."""
    if resume:
        done, prefix, earlier = resume_state(job)
        job = dataclasses.replace(
            job, done_before=done, results_prefix=prefix, earlier_runs=earlier
        )
        if nothing_left(job) is None:  # a pipeline runs: its workers read the ids from a file
            done_file = write_done_ids(local_output(job.output), job.lock.run_id, done)
            job = dataclasses.replace(job, done_file=done_file)
        log_resume(job, done)
    else:
        prepare_output(job.output, overwrite)
    # A manifest from the start: a run killed outright leaves status "running"; one that
    # fails or is stopped says so as it ends (`ended_unfinished`).
    write_json(FileSystems.join(job.output, MANIFEST_FILE), job.manifest_base())
    try:
        if resume:
            # The earlier run's errors are retried, so their records go; only now, so
            # that a kill never leaves its "complete" manifest counting missing records.
            delete_matching(FileSystems.join(job.output, ERRORS_DIR, "*"))
        # Then results/ readable with every column, even if the run dies before
        # Beam's sink finalizes (at its end); after the manifest, so that a kill
        # between the two never leaves results/ without the manifest of its run.
        write_schema_file(job.output, results_schema(job.config.attribution_dtype))
    except BaseException as e:
        # A delete that failed, a stop: the run ends before it started. (A schema file
        # that cannot be written is a warning, `write_schema_file`: the run goes on.)
        ended_unfinished(job, e)
        raise
    return job


def _release(job: AuditJob, error: BaseException | None = None) -> None:
    """Frees what the run held: the model handed to its in-process worker and --output's
    lock; of a run that `error` failed or stopped, once the files it left open are
    closed (`its_files_closed`), so that nothing of it writes there once it is free."""
    if error is not None:
        its_files_closed(error)
    if job.model_handoff is not None:
        job.model_handoff.release()  # taken by the local worker unless its runner made its own
    if job.lock is not None:
        job.lock.release()


def _split_outcomes(outcome: ImageOutcome):
    yield from outcome.rows
    for error in outcome.errors:
        yield beam.pvalue.TaggedOutput(ERRORS_TAG, error)


def _images_with(outcome: ImageOutcome) -> list[tuple[str, int]]:
    if outcome.errors:
        return [("images_with_errors", 1)]
    return [("images_with_rows", 1)] if outcome.rows else []


def _progress_clock(job: AuditJob) -> tuple[str, float]:
    """The key under which the job's progress steps and heartbeat share one count
    (`pipeline.progress`), and the job's start in seconds since the epoch."""
    start = datetime.datetime.fromisoformat(job.start_time).timestamp()
    return f"{job.output}@{job.start_time}", start


def _heartbeat(job: AuditJob) -> contextlib.AbstractContextManager:
    """Progress lines while the in-process DirectRunner runs (p.run() blocks there)."""
    if not job.show_progress or job.progress_per_worker:
        return contextlib.nullcontext()
    key, start = _progress_clock(job)
    return heartbeat(key, job.total_inputs, start)


def _progress(job: AuditJob, kind: str) -> ReportProgress:
    key, start = _progress_clock(job)
    return ReportProgress(
        kind,
        key=key,
        total=job.total_inputs,
        start=start,
        batch_size=job.batch_size,
        log_lines=job.show_progress,
        per_worker=job.progress_per_worker,
    )


def _handler(job: AuditJob) -> IGModelHandler:
    """The RunInference model handler of the job's model and settings."""
    return IGModelHandler(
        job.spec,
        job.config,
        job.class_names,
        batch_size=job.batch_size,
        jit_compile=job.jit_compile,
        handoff=job.model_handoff,
        log_progress=not job.show_progress,
        verbose=job.verbose,
        label_names=job.label_names,
    )


_DONE = "done_before"


class _SplitDone(beam.DoFn):
    """Inputs -> those to do, and those a --resume found done (`_DONE`, counted as
    skipped). The done ids are not in the job's graph (sent to Dataflow, which bounds
    its size: a million ids made it 14 MB, twice): the graph holds the path of the
    file the launcher wrote them to (`job.done_file`, in the run's checkpoint folder),
    loaded in `setup`, as an image folder's read does (`ReadImageFolder`'s
    `done_file`, which leaves their files unread); None, no resume: nothing done."""

    def __init__(self, done_file: str | None):
        self._done_file = done_file
        self._done = frozenset()  # the file's ids, from `setup`

    def setup(self) -> None:
        self._done = load_done_ids(self._done_file)

    def process(self, raw: sources.RawImage) -> Iterator[Any]:
        yield beam.pvalue.TaggedOutput(_DONE, raw) if raw.image_id in self._done else raw


def build_pipeline(p: beam.Pipeline, job: AuditJob) -> None:
    """Adds the job's transforms to `p`."""
    done = job.done_file
    output = local_output(job.output)
    read = job.source.read_transform(skip=output, verbose=job.verbose, done_file=done)
    raw = p | "ReadImages" >> read
    split = raw | "DoneBefore" >> beam.ParDo(_SplitDone(done)).with_outputs(_DONE, main="todo")
    skipped, todo = split[_DONE], split.todo
    prepared = todo | "Preprocess" >> beam.ParDo(
        Preprocess(job.spec.image_shape, job.spec.input_range)
    ).with_outputs(ERRORS_TAG, main="images")
    outcomes = prepared.images | "Attribute" >> RunInference(_handler(job))
    split = outcomes | "SplitOutcomes" >> beam.FlatMap(_split_outcomes).with_outputs(
        ERRORS_TAG, main="rows"
    )
    errors = (prepared[ERRORS_TAG], split[ERRORS_TAG]) | "AllErrors" >> beam.Flatten()
    # One progress step per source, not one behind a Flatten: a Flatten is a stage
    # boundary for the DirectRunner, whose later stage saw every image at the end.
    for kind, finished in (
        ("skipped", skipped),
        ("failed", prepared[ERRORS_TAG]),
        ("attributed", outcomes),
    ):
        _ = finished | f"Progress{kind.capitalize()}" >> beam.ParDo(_progress(job, kind))
    schema = results_schema(job.config.attribution_dtype)
    # The files go in place only while --output is still this run's (a template's job
    # runs later, as often as it is run, with no lock).
    run_id = job.lock.run_id if job.lock is not None else None
    written = split.rows | "WriteResults" >> WriteResults(
        job.output, schema, prefix=job.results_prefix, run_id=run_id
    )
    if job.lock is not None:  # a run that writes (not a Dataflow --dry_run)
        _ = outcomes | "Checkpoint" >> WriteCheckpoints(
            job.output, job.lock.run_id, schema, every=job.batch_size
        )
    errors_written = errors | "WriteErrors" >> WriteErrors(job.output, run_id)
    counts = (
        raw | "CountInputs" >> beam.Map(lambda _: ("inputs", 1)),
        skipped | "CountSkipped" >> beam.Map(lambda _: ("skipped_done_before", 1)),
        prepared[ERRORS_TAG]
        | "CountDecodeFailures" >> beam.Map(lambda _: ("images_with_errors", 1)),
        outcomes | "CountImages" >> beam.FlatMap(_images_with),
        split.rows | "CountRows" >> beam.Map(lambda _: ("rows", 1)),
        errors | "CountErrors" >> beam.Map(lambda _: ("errors", 1)),
    ) | "FlattenCounts" >> beam.Flatten()
    # Last: "complete" only once the results and errors are in place.
    _ = counts | "Manifest" >> WriteManifest(
        job.output, job.manifest_base(), after=(written, errors_written)
    )


def _fed(spec: ModelSpec, given: Sequence[str] = ()) -> str:
    """What the model is fed (the range a model does not say is the job's default),
    and what its flags set (`what_flags_set`): those `given` these images, the others
    other ones."""
    (height, width), (low, high) = spec.image_shape, spec.input_range
    fed = f"{height}x{width} pixels in [{low:g}, {high:g}]"
    flags = what_flags_set(spec.image_shape, spec.input_flags, given)
    return f"{fed}; {flags}" if flags else fed


def _input_flags_given(audit: AuditOptions) -> tuple[str, ...]:
    """Of --image_size and --input_range, those the command gave."""
    values = {"--image_size": audit.image_size, "--input_range": audit.input_range}
    return tuple(flag for flag, value in values.items() if value is not None)


def _start(
    argv: Sequence[str] | None, save_main_session: bool | None
) -> tuple[AuditJob, PipelineOptions, PipelineResult]:
    try:
        job, options = prepare(argv)
    except KeyboardInterrupt as e:  # --output not claimed: --resume would find no run
        raise KeyboardInterrupt(str(e) or logs.NOT_STARTED) from None
    if save_main_session is not None:
        options.view_as(SetupOptions).save_main_session = save_main_session
    what = f"{wording.count(job.total_inputs, 'image')} of " if job.total_inputs is not None else ""
    _LOG.info(
        "Auditing %s%s with %s (%s) into %s.",
        what,
        job.source.name,
        job.spec.reference,
        _fed(job.spec, _input_flags_given(options.view_as(AuditOptions))),
        job.output,
    )
    try:
        skipped = nothing_left(job)
        if skipped is not None:
            return job, options, skip_all(job, skipped)
        with dofn_specs_kept(), function_arguments_kept():
            p = beam.Pipeline(runner=local_runner(options), options=options)
            build_pipeline(p, job)
            with (
                logs.threads_watched(job.verbose),  # from Python too, as the command line does
                _heartbeat(job),
                failed_bundles_answered(),
                in_process_state_cache_off(),
                workers_import_this_job(options),
                workers_apart_from_ctrl_c(options),
            ):
                return job, options, p.run()
    except BaseException as e:
        try:
            if interrupted(e):
                raise stopped(job) from None
            raise
        finally:
            ended_unfinished(job, e)
            _release(job, e)


def launch(
    argv: Sequence[str] | None = None, save_main_session: bool | None = None
) -> tuple[AuditJob, PipelineResult]:
    """Validates, builds and starts the job; does not wait for it.

    Args:
      argv: the command line (the project's flags and Beam's).
      save_main_session: overrides --save_main_session when given; None keeps
        Beam's default. Nothing in the graph refers to `__main__`, so the job
        runs either way (the package is installed on the workers).

    Returns:
      The resolved job and the runner's result: a finished one for the
      DirectRunner, and for a --resume with nothing left to do (no pipeline
      runs); for a Dataflow --dry_run, one whose `job` is the Dataflow
      job that would have been submitted (`job.proto_pipeline`, `job.options`);
      for a Dataflow template, Beam's result of no job (--output is left to the
      job the template starts: `_leave_to_template`).
    """
    with _worker_ends_named():
        job, options, result = _start(argv, save_main_session)
    _leave_output(job, options, result, _known_state(result))
    return job, result


@contextlib.contextmanager
def _worker_ends_named() -> Iterator[None]:
    """A run (`launch`, `run`) from Python whose worker process ended, in a
    multi-process DirectRunner, raises a RuntimeError naming how it ended, as the
    command line's error line does: Beam's own error of it is of the channels it
    closed ('Channel closed prematurely.'). An earlier run's worker ends are forgotten."""
    logs.forget_worker_ends()
    try:
        yield
    except Exception as e:
        death = logs.worker_death()
        if death is None or logs.stop_is_requested():  # a stop's ends are no failure
            raise
        raise RuntimeError(f"The run failed: {death}. {logs.RESUME}") from e


def _leave_output(
    job: AuditJob, options: PipelineOptions, result: PipelineResult, state: str | None
) -> dict[str, Any] | None:
    """What becomes of --output when this launcher stops waiting for its job: the one
    decision of `launch` (at once) and `run` (once the job ended, or when it does not
    wait), by the job's last known `state`:
    - a Dataflow template was built ("DONE", but its job starts later): the folder is
      held for that job (`_leave_to_template`);
    - the job goes on without this process (a state not final, or none known:
      `_known_state`): held for it (`_hand_over`);
    - the job ended, or none was submitted (a Dataflow --dry_run): tidied up if it
      is DONE, else its manifest says it failed (`ended_unfinished`), then released.
    (A wait that failed or was stopped: `_wait`, then `ended_unfinished` and `_release`.)

    Returns:
      The manifest of the run it tidied up; None otherwise.
    """
    if writes_template(options):
        _leave_to_template(job, options)
        return None
    if not PipelineState.is_terminal(state):
        if _hand_over(job, options, result):  # a job that runs on keeps the folder
            _LOG.info(
                "%s is held for %s until it completes (if it fails or is cancelled, delete %s).",
                job.output,
                _job_named(options, result),
                _lock_path(job),
            )
        return None
    try:
        if state == PipelineState.DONE:
            return tidied(job)
        ended_unfinished(job, _ended_undone(job, options, result, state))
        return None
    finally:  # a library caller's process lives on: never hold the folder past the run
        _release(job)


def _ended_undone(
    job: AuditJob, options: PipelineOptions, result: PipelineResult, state: str | None
) -> RuntimeError:
    """The error of a job that ended in `state`, not DONE: what `run` raises, and its
    manifest's reason (`ended_unfinished`). One CANCELLED was stopped on its runner by
    a person (`JobCancelled`); one FAILED (or UPDATED, DRAINED) did not complete."""
    if state == PipelineState.CANCELLED:
        return _cancelled(options, result)
    return RuntimeError(f"The job ended in state {state}; {job.output} is incomplete.")


def _job_id(result: PipelineResult) -> str | None:
    """The runner's id of a job (a Dataflow result's `job_id()`; a portable runner's
    result keeps its job service's id, `_job_id`, unexposed), or None."""
    if callable(getattr(result, "job_id", None)):
        job_id = result.job_id()
    else:
        job_id = getattr(result, "_job_id", None)
    return str(job_id) if job_id else None


def _job_named(options: PipelineOptions, result: PipelineResult) -> str:
    """The job as messages name it: "Dataflow job <id>", "FlinkRunner job <id>"; one
    whose runner gave no id, "Dataflow job of unknown id" (it read "Dataflow job <job
    id>", a placeholder left in the sentence)."""
    runner = options.view_as(StandardOptions).runner
    name = runner if isinstance(runner, str) else type(runner).__name__
    job_id = _job_id(result)
    return f"{'Dataflow' if is_dataflow(options) else name} job " + (
        job_id if job_id else "of unknown id"
    )


def _cancelled(options: PipelineOptions, result: PipelineResult) -> JobCancelled:
    """The error of a job cancelled on its runner, named (`_job_named`); a Dataflow job of
    unknown id, with where it is listed (`dataflow_job_logs`)."""
    named = _job_named(options, result)
    if is_dataflow(options) and _job_id(result) is None:
        named += f": see {dataflow_job_logs(options, None)}"
    return JobCancelled(named)


def _lock_path(job: AuditJob) -> str:
    return FileSystems.join(job.output, output_lock.LOCK_NAME)


def _hand_over(job: AuditJob, options: PipelineOptions, result: PipelineResult) -> bool:
    """Leaves --output's lock to a job this launcher no longer waits for, where the job
    runs on without it (`job_outlives_launcher`: Dataflow's; a job service's apart from
    this process, as Flink's or Spark's): the folder stays held, with no process behind
    the lock, until the job's manifest says it completed (`output_lock.RunLock.hand_over`).
    A job that ends with this process (the DirectRunner's, a LOOPBACK one, one of a job
    server Beam started for this launch) keeps the launcher's pid in the lock.

    Returns:
      Whether the folder was handed over.
    """
    if job.lock is None or not job_outlives_launcher(options):
        return False
    job.lock.hand_over(_job_id(result))
    return True


def _wait(job: AuditJob, options: PipelineOptions, result: PipelineResult):
    """Waits for the runner. A Ctrl-C stops a local run; a Dataflow job runs on
    and keeps --output (`_left_running`), and the message says how to stop it; so
    does one the wait lost track of (`_lost_track`)."""
    try:
        return result.wait_until_finish()
    except KeyboardInterrupt:
        if not job_outlives_launcher(options):  # it ends with this process
            raise stopped(job) from None
        raise KeyboardInterrupt(_left_running(job, options, result)) from None
    except Exception as e:
        if interrupted(e):
            raise stopped(job) from None
        _lost_track(job, options, result)
        said = _wait_failed(e, options, result)
        if said is e:
            raise
        raise said from e


def _wait_failed(error: Exception, options: PipelineOptions, result: PipelineResult) -> Exception:
    """What a wait that raised `error` raises: for a job cancelled on its runner (Beam's
    Dataflow and portable waits raise then), `JobCancelled`; for a Dataflow job whose
    failure the service gave no message of (Beam's message then ends 'Error:' and a
    line 'None', which the `error:` line said as 'DataflowRuntimeException: None'),
    Beam's error naming the job, its state and where its logs are; else `error`."""
    from apache_beam.runners.dataflow.dataflow_runner import (  # noqa: PLC0415
        DataflowRuntimeException,  # Beam's Dataflow runner, loaded once a wait failed
    )

    state = _known_state(result)
    if state == PipelineState.CANCELLED:
        return _cancelled(options, result)
    if not isinstance(error, DataflowRuntimeException) or not str(error).endswith("\nNone"):
        return error
    where = dataflow_job_logs(options, _job_id(result))
    return DataflowRuntimeException(
        f"{_job_named(options, result)} ended in state {state or 'unknown'} and the "
        f"service gave no error message; its logs: {where}",
        error.result,
    )


def _lost_track(job: AuditJob, options: PipelineOptions, result: PipelineResult) -> None:
    """Hands --output over to a job that runs on without this launcher (a Dataflow
    job, a job service's apart from it) whose wait failed before the job ended: Beam's
    polls of the service failed (Dataflow's wait then raises an AssertionError; a job
    service's stream broke), and the job runs on and writes. A job that failed (Beam's
    DataflowRuntimeException; a job service's state FAILED) has ended: its folder is
    released."""
    if _ended(result) or not _hand_over(job, options, result):
        return
    _LOG.warning(
        "Lost track of %s, which may still run: %s is held for it until it completes "
        "(if it failed or was cancelled, delete %s).",
        _job_named(options, result),
        job.output,
        _lock_path(job),
    )


def _ended(result: PipelineResult) -> bool:
    """Whether the job is known to have ended (`_known_state`)."""
    return PipelineState.is_terminal(_known_state(result))


def _known_state(result: PipelineResult) -> str | None:
    """The job's state asked of the runner: a Dataflow job's of the service, which may
    be out of reach; None then (not known: the job may run on)."""
    try:
        return result.state
    except Exception:  # noqa: BLE001 - whatever the service's client raises: not known
        return None


def _left_running(job: AuditJob, options: PipelineOptions, result: PipelineResult) -> str:
    """Hands --output over to a job that runs on without this launcher
    (`job_outlives_launcher`), which stops waiting for it; what to say."""
    _hand_over(job, options, result)
    if not is_dataflow(options):
        return (
            f"interrupted; {_job_named(options, result)} keeps running on "
            f"{where_job_runs_on(options)} and holds {job.output} until it completes. To "
            f"stop it, cancel it there, then delete {_lock_path(job)}."
        )
    job_id = _job_id(result)
    region = options.view_as(GoogleCloudOptions).region
    cancel = (
        f": gcloud dataflow jobs cancel {job_id}" + (f" --region {region}" if region else "")
        if job_id
        else f", cancel it on {dataflow_job_logs(options, None)}"
    )
    return (
        f"interrupted; {_job_named(options, result)} keeps running and holds {job.output} "
        f"until it completes. To stop it{cancel}, then delete {_lock_path(job)}."
    )


def _leave_to_template(job: AuditJob, options: PipelineOptions) -> None:
    """Leaves --output, claimed by this build (its manifest and run id are baked into
    the template), to the job the template starts later: the folder stays held until
    that job's manifest says the run completed (`output_lock.RunLock.hand_over`).
    Released, the folder read as a killed run, and a --resume or --overwrite took it
    from under the job."""
    location = options.view_as(GoogleCloudOptions).template_location
    if job.lock is None:  # a --dry_run: nothing claimed, no template written
        return
    job.lock.hand_over(None, template=location)
    _LOG.info(
        "%s is held for the job of the template %s until that job completes.",
        job.output,
        location,
    )


def _not_run_here(
    options: PipelineOptions, result: PipelineResult
) -> tuple[str | None, str | None]:
    """Why `run` has no finished run to read, and the job's state then (asked of the
    runner once: a Dataflow job's, of the service); (None, None) when it has one."""
    if is_dataflow_dry_run(options):  # Beam's result of no job: "DONE"
        return "dry run: the Dataflow job was built, not submitted", result.state
    if writes_template(options):
        return "a Dataflow template was written; no job was started", result.state
    if options.view_as(StandardOptions).no_wait_until_finish:
        state = _known_state(result)
        if not PipelineState.is_terminal(state):
            return "--no_wait_until_finish: the job goes on without this process", state
    return None, None


def no_results_here(argv: Sequence[str]) -> str:
    """What `python -m pipeline` says when `run` returned None for its flags `argv`
    (a Dataflow --dry_run or template, or --no_wait_until_finish): why it has no
    results to show, and, for a job that runs on apart from it, where."""
    options = PipelineOptions(list(argv))
    if is_dataflow(options):
        return (
            "No results to show here: a Dataflow dry run or template builds the job without "
            "running it, and --no_wait_until_finish leaves it running (see the log)."
        )
    where = where_job_runs_on(options)
    if where is None:
        return "No results to show here: --no_wait_until_finish does not wait for the job (see the log)."
    output = options.view_as(AuditOptions).output
    return (
        f"No results to show here: --no_wait_until_finish leaves the job running on {where}; "
        f"it holds {wording.printable(output)} until it completes (see the log)."
    )


def run(
    argv: Sequence[str] | None = None, save_main_session: bool | None = None
) -> dict[str, Any] | None:
    """Runs the job to completion and returns its manifest.

    Waits for the runner as `with beam.Pipeline(...)` does. Returns None when
    no run completes here: a Dataflow --dry_run, a template, or
    --no_wait_until_finish on a remote runner. A run whose inputs all failed (or
    whose dataset gave none) returns its manifest too, `counts.rows` 0, where
    `python -m pipeline` exits 1: `transforms.results.read_errors` says why.

    Args:
      argv: the flags as on the command line, a list (`['--output', 'out',
        '--steps', '16']`; paths and numbers, NumPy's too, are taken as their
        text); None: this process's own, `sys.argv[1:]`.
      save_main_session: as for `launch`.

    Raises:
      ConfigError: bad flags, dataset, model or output folder (before any work).
      TypeError: argv is one string, or holds an item that is not a string, a path
        or a number (`pipeline.options.check_flags`).
      RuntimeError: the run did not finish, or finished without accounting for
        every input; where a worker process of a multi-process run ended, its
        message says how ('The run failed: a worker process ended, return code 137
        (SIGKILL, ...)', or, one that could not start, with its last line); a job
        cancelled on its runner (the Dataflow console, gcloud) raises
        `pipeline.stopping.JobCancelled`, a RuntimeError, its manifest "stopped".
      KeyboardInterrupt: a Ctrl-C (a notebook's interrupt) stopped it: before
        --output was claimed, nothing was written; while it ran, the rows of every
        batch it finished are kept for a --resume, as the message says; once its
        manifest said "complete", the run is tidied up and the message says so
        (a RuntimeError instead if that manifest fails the count checks, as without
        the stop).
    """
    logs.drop_beam_memory_warning()
    with _worker_ends_named():
        job, options, result = _start(argv, save_main_session)
        return _outcome(job, options, result)


def _outcome(
    job: AuditJob, options: PipelineOptions, result: PipelineResult
) -> dict[str, Any] | None:
    """What `run` returns for the job it started: the completed run's manifest, or
    None when no run completes here (`_not_run_here`)."""
    reason, state = _not_run_here(options, result)
    if reason is not None:
        _LOG.info("No results to read yet (%s); they go to %s.", reason, job.output)
        _leave_output(job, options, result, state)
        return None
    return _completed_manifest(job, options, result)


def _completed_manifest(
    job: AuditJob, options: PipelineOptions, result: PipelineResult
) -> dict[str, Any]:
    """Waits for the run, then leaves --output as `_leave_output` says for a job that
    ended (tidied up once done, released); the manifest of the completed run.

    Raises:
      RuntimeError: the run did not finish, or its manifest does not account for
        every input (`unaccounted`).
    """
    try:
        state = _wait(job, options, result)
    except BaseException as e:
        ended_unfinished(job, e)  # not for a Dataflow job that runs on: it has the lock
        _release(job, e)  # which stays
        raise
    # Beam's plain result, already final, says no state (a --resume with nothing left).
    done = state is None or state == PipelineState.DONE
    manifest = _leave_output(job, options, result, PipelineState.DONE if done else state)
    if not done:
        raise _ended_undone(job, options, result, state)
    why = unaccounted(manifest)
    if why is not None:
        raise RuntimeError(why)
    return manifest
