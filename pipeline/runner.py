"""The runner a job's options name, and what it needs at launch.

Which runner runs the job (`--runner`: a DirectRunner's in-process FnApiRunner,
Dataflow, a Dataflow --dry_run or template) and whether its job runs on without the
launcher (`job_outlives_launcher`); the flags a runner would ignore or
take otherwise than meant, refused before --output is touched; and a Dataflow
job's launch checks, before the model loads: the paths its workers read and
write (gs://), its Google Cloud options as Beam would refuse them (project,
region, staging bucket), the way this package is shipped to its workers, its
GPUs and machine type, and the credentials a gs:// path needs.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    SetupOptions,
    SparkRunnerOptions,
    StandardOptions,
    TestOptions,
    WorkerOptions,
)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.runners.runner import PipelineRunner

from pipeline import logs
from pipeline.options import AuditOptions, ConfigError
from transforms import sources
from transforms.tf_model import model_reference

__all__ = [
    "check_credentials",
    "check_dataflow_launch",
    "check_dataflow_paths",
    "check_no_resume_template",
    "check_runner",
    "dataflow_job_logs",
    "is_dataflow",
    "is_dataflow_dry_run",
    "is_direct",
    "job_outlives_launcher",
    "LocalWorkers",
    "local_runner",
    "local_workers",
    "runner_name",
    "where_job_runs_on",
    "writes_template",
]


# Names of the Dataflow runner as `--runner` accepts them (lower case).
_DATAFLOW_RUNNERS = ("dataflowrunner", "dataflow", "testdataflowrunner")


def runner_name(options: PipelineOptions) -> str:
    runner = options.view_as(StandardOptions).runner
    if runner is None:
        return "directrunner"
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1].lower()


# The runners a job runs on Beam's FnApiRunner for (`local_runner`), by name without
# "Runner" (Beam takes `--runner direct` too): its DirectRunner, and the FnApiRunner.
_FN_API_RUNNERS = ("direct", "switchingdirect", "fnapi")


def _runs_on_fn_api(options: PipelineOptions) -> bool:
    return runner_name(options).removesuffix("runner") in _FN_API_RUNNERS


def is_direct(options: PipelineOptions) -> bool:
    """A DirectRunner, or the FnApiRunner a DirectRunner job runs on (`local_runner`):
    the job runs in this process (and its model loads here)."""
    return "direct" in runner_name(options) or _runs_on_fn_api(options)


@dataclasses.dataclass(frozen=True)
class LocalWorkers:
    """How a job that runs on this machine holds its model here.

    Attributes:
      processes: processes that each hold a model and TensorFlow's runtime: the
        launcher's (a DirectRunner's in-process workers share its model), and a
        multi_processing DirectRunner's worker processes, each loading its own.
      calls: gradient calls that may be live at once: one per DirectRunner worker
        (thread or process); one of another local runner's (the least it runs).
    """

    processes: int = 1
    calls: int = 1


def local_workers(options: PipelineOptions) -> LocalWorkers | None:
    """How the job holds its model on this machine; None where it runs elsewhere
    (Dataflow, a portable runner's job service or cluster apart from the launcher).
    A DirectRunner runs --direct_num_workers workers (0: one per CPU core, as Beam
    counts them); in Beam's default in_memory mode, as in multi_threading, they are
    threads of this process sharing its model. Prism and other local portable runners
    (a local Flink's, Spark's) run here too, as many at once as they choose."""
    if is_direct(options):
        direct = options.view_as(DirectOptions)
        workers = direct.direct_num_workers or 1  # Beam's default, unless 0
        if direct.direct_num_workers == 0:
            workers = os.cpu_count() or 1
        if direct.direct_running_mode == "multi_processing":
            return LocalWorkers(processes=1 + workers, calls=workers)
        return LocalWorkers(calls=workers)
    if is_dataflow(options) or where_job_runs_on(options) is not None:
        return None
    return LocalWorkers()


def local_runner(options: PipelineOptions) -> PipelineRunner | None:
    """The runner of a DirectRunner job: Beam's FnApiRunner, as the DirectRunner picks
    for a batch job when its Prism runner cannot start; None for other runners (Beam
    makes them from the options). Beam 2.77's DirectRunner first fetches Prism from
    GitHub and runs the job there: with network, another runner than the one this job
    is tested on (its in-process worker takes the launcher's model; progress, Ctrl-C),
    and a firewall that drops packets could hang the launch (Beam's download has no
    timeout). `--runner PrismRunner` asks for it; `--runner FnApiRunner` gets this one."""
    if not _runs_on_fn_api(options):
        return None
    from apache_beam.portability.api import beam_provision_api_pb2  # noqa: PLC0415
    from apache_beam.runners.portability.fn_api_runner import fn_runner  # noqa: PLC0415
    from apache_beam.runners.portability.portable_runner import JobServiceHandle  # noqa: PLC0415

    # The options the DirectRunner hands its FnApiRunner (for the SDK workers).
    encoded = JobServiceHandle.encode_pipeline_options(_for_the_workers(options))
    info = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(info))


#: The module each worker process of a multi-process DirectRunner imports as it starts,
#: before its first bundle (Beam's --beam_plugins; Beam's in-process workers import none).
_WORKER_PLUGIN = "pipeline.worker_plugin"


def _for_the_workers(options: PipelineOptions) -> dict[str, Any]:
    """The job's options as its SDK workers get them. A worker process also imports
    `_WORKER_PLUGIN` (its bundles that fail are answered, not printed), and logs a failing
    DoFn's traceback at the launcher's level of that logger (`logs.DOFN_TRACEBACKS`:
    not without --verbose), unless the options set one: each failed bundle printed pages
    of tracebacks above the run's one `error:` line, which could not fit in a log file
    under a size limit. The options themselves (the manifest's) are left as they are."""
    given = options.get_all_options()
    level = logging.getLogger(logs.DOFN_TRACEBACKS).getEffectiveLevel()
    return {
        **given,
        "beam_plugins": [*(given.get("beam_plugins") or []), _WORKER_PLUGIN],
        "sdk_harness_log_level_overrides": {
            logs.DOFN_TRACEBACKS: logging.getLevelName(level),
            **(given.get("sdk_harness_log_level_overrides") or {}),
        },
    }


def is_dataflow(options: PipelineOptions) -> bool:
    return runner_name(options) in _DATAFLOW_RUNNERS


def dataflow_job_logs(options: PipelineOptions, job_id: str | None) -> str:
    """Where a Dataflow job's logs are read, as messages name it: its page of the Cloud
    console (the address Beam logs), with --project when known."""
    region = options.view_as(GoogleCloudOptions).region
    if not (region and job_id):
        return "the Dataflow jobs page of the Cloud console"
    project = options.view_as(GoogleCloudOptions).project
    where = f"https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}"
    return where + (f"?project={project}" if project else "")


def _runner(options: PipelineOptions) -> PipelineRunner:
    """The runner `--runner` names (Beam's instance of it; no job server is started)."""
    from apache_beam.runners.runner import create_runner  # noqa: PLC0415

    runner = options.view_as(StandardOptions).runner
    return create_runner(runner) if isinstance(runner, str) else runner


def job_outlives_launcher(options: PipelineOptions) -> bool:
    """Whether the job runs on without this process, so that --output stays held for it
    once the launcher stops waiting (`output_lock.RunLock.hand_over`): `where_job_runs_on`
    names a place."""
    return where_job_runs_on(options) is not None


def where_job_runs_on(options: PipelineOptions) -> str | None:
    """Where a job that runs on without this process runs, as messages name it:
    "Dataflow"; for a portable runner's (PortableRunner, FlinkRunner, SparkRunner,
    PrismRunner) whose SDK workers are not this process (an environment other than
    LOOPBACK) and whose job service runs apart from it, that service or cluster
    (`_service_apart`). None for a job that ends with this process: a DirectRunner's
    (or FnApiRunner's), which runs in it; a LOOPBACK one, whose workers are this
    process; one of a job server Beam starts for the launch and stops as this process
    exits (Prism's, a local Flink's or Spark's; Spark's driver too).
    """
    if is_dataflow(options):
        return "Dataflow"
    if is_direct(options):
        return None
    from apache_beam.runners.portability.portable_runner import PortableRunner  # noqa: PLC0415

    runner = _runner(options)
    if not isinstance(runner, PortableRunner) or _workers_in_launcher(options, runner):
        return None
    return _service_apart(options, runner)


def _workers_in_launcher(options: PipelineOptions, runner: PipelineRunner) -> bool:
    """The job's environment is LOOPBACK (its SDK workers: threads of this process),
    given or the runner's default (Prism's; Flink's and Spark's with a local master),
    as Beam picks it."""
    from apache_beam.portability import python_urns  # noqa: PLC0415
    from apache_beam.transforms.environments import PythonLoopbackEnvironment  # noqa: PLC0415

    given = options.view_as(PortableOptions).environment_type
    if given:
        return given.upper() == "LOOPBACK" or given == python_urns.EMBEDDED_PYTHON_LOOPBACK
    probe = copy.deepcopy(options)  # the runner sets its default in the options it is given
    probe.view_as(SetupOptions).prebuild_sdk_container_engine = None  # no image built to look
    return isinstance(runner.default_environment(probe), PythonLoopbackEnvironment)


def _service_apart(options: PipelineOptions, runner: PipelineRunner) -> str | None:
    """The job service running apart from this process that runs the job: a
    --job_endpoint (`embed`, Beam's job server in this process, excepted), or a cluster
    Beam submits the job to (a Flink master other than `[local]`/`[auto]`; a Spark uber
    jar, sent to its REST URL). None without either: Beam starts a job server for the
    launch and stops it as this process exits, with the job (a Spark job's driver runs
    in it)."""
    from apache_beam.runners.portability import flink_runner, spark_runner  # noqa: PLC0415

    endpoint = options.view_as(PortableOptions).job_endpoint
    if endpoint:
        return f"the job service at {endpoint}" if endpoint != "embed" else None
    if isinstance(runner, flink_runner.FlinkRunner):
        master = options.view_as(FlinkRunnerOptions).flink_master.strip()
        return None if master in flink_runner.MAGIC_HOST_NAMES else f"the Flink cluster at {master}"
    if isinstance(runner, spark_runner.SparkRunner):
        spark = options.view_as(SparkRunnerOptions)
        if spark.spark_submit_uber_jar:
            return f"the Spark cluster at {spark.spark_rest_url}"
    return None


def is_dataflow_dry_run(options: PipelineOptions) -> bool:
    """DataflowRunner with --dry_run: the job is built, never submitted.

    Mirrors the runner's own test (any non-empty --dry_run value), so the launch
    checks skipped here are exactly those of a job that will not run.
    """
    return is_dataflow(options) and bool(options.view_as(TestOptions).dry_run)


def check_dataflow_paths(audit: AuditOptions, source: sources.DataSource) -> None:
    """Dataflow workers cannot see the launcher's disk: paths they read must be remote."""

    def remote(path: str) -> bool:
        return path.startswith(sources.REMOTE_FOLDER_SCHEMES)

    if not remote(audit.output):
        raise ConfigError(
            f"--output {audit.output!r} is not a gs:// folder; Dataflow workers write the "
            "results, so pass --output gs://<bucket>/<folder>."
        )
    dataset = audit.dataset
    if isinstance(source, sources.FolderSource) and not source.remote:
        raise ConfigError(
            f"--dataset {dataset!r} is a local folder that Dataflow workers cannot read; "
            "copy it to gs:// (gcloud storage cp -r) and pass the gs:// folder."
        )
    if isinstance(source, sources.TfdsSource) and source.data_dir is None:
        raise ConfigError(
            f"--dataset {dataset!r} on Dataflow needs --data_dir: the gs:// folder of the "
            f"prepared dataset, e.g. `tfds build {dataset} --data_dir gs://<bucket>/tfds`."
        )
    if audit.data_dir is not None and not remote(audit.data_dir):
        raise ConfigError(
            f"--data_dir {audit.data_dir!r} is local; on Dataflow the TFDS data folder must be "
            "gs://, e.g. prepared with `tfds build imagenet_a --data_dir gs://<bucket>/tfds`."
        )
    model = audit.model
    if model_reference(model).is_path and not remote(model):
        raise ConfigError(
            f"--model {model!r} is a local path that Dataflow workers cannot read; copy the "
            "model to gs:// and pass that path, or use a TF Hub handle or a bundled model."
        )


# The fix for each of Beam's refusals of a Dataflow job's options, by its wording.
_PROJECT_FIX = "pass --project <your Google Cloud project id, e.g. my-project>"
_REGION_FIX = "pass --region <a Dataflow region, e.g. us-central1>"
_BEAM_OPTION_FIXES = {
    "Missing required option: project": _PROJECT_FIX,
    "Invalid Project ID": _PROJECT_FIX,
    "Invalid Project number": _PROJECT_FIX,
    "Missing required option: region": _REGION_FIX,
}
_DATAFLOW_DOCS = "README.md, 'Scale: Dataflow, GPUs, parallel local runs'"
# The names Beam's stager takes for --setup_file.
_SETUP_FILES = ("setup.py", "pyproject.toml")


def check_dataflow_launch(options: PipelineOptions, audit: AuditOptions, dry_run: bool) -> None:
    """A Dataflow job's Google Cloud settings and its way of shipping this package,
    checked at launch: Beam checks the settings only when the pipeline is built
    (after the model, exit 1) and never the package (its workers fail to import it).
    The flags first: a launch without credentials named them alone, then each flag."""
    _check_staging_location(options)
    _check_region(options)
    _check_beam_options(options, cloud_only=True)  # project and region: no network
    _check_package_shipped(options)
    _check_gpu_image(options)
    _check_l4_machine(options)
    if not dry_run:  # Beam's whole validation below looks the staging bucket up (network)
        check_credentials(audit.output)
    if audit.class_names:  # read at launch, a dry run's too; a Dataflow job needs them anyway
        check_credentials(audit.class_names, "--class_names", "read")
    _check_beam_options(options)


def _check_staging_location(options: PipelineOptions) -> None:
    """A gs:// --temp_location (or --staging_location): without either, Beam looks for
    a default bucket in Cloud Storage, retrying for minutes where it cannot reach it."""
    cloud = options.view_as(GoogleCloudOptions)
    validator = PipelineOptionsValidator(options, None)
    reasons = [
        reason
        for flag in ("temp_location", "staging_location")
        for reason in validator.validate_gcs_path(cloud, flag)
    ]
    if len(reasons) == 2:  # Beam uses either for the other
        flag, value = next(
            ((f, v) for f in ("temp_location", "staging_location") if (v := getattr(cloud, f))),
            ("temp_location", None),
        )
        given = ": Dataflow needs a gs:// folder"
        if value:  # a path given that Beam refuses: a local one, a bucket name too short
            given = f" {value!r} is not a Cloud Storage folder Dataflow can use"
        raise ConfigError(
            f"--{flag}{given} for the job's staged and temporary files "
            f"({' '.join(reasons)}); pass --temp_location gs://<bucket>/tmp."
        )


def _check_region(options: PipelineOptions) -> None:
    """An empty --region (`--region "$REGION"` with REGION unset): Beam's validator takes
    only a missing one for none, and the job's files were staged before Dataflow refused it."""
    region = options.view_as(GoogleCloudOptions).region
    if region is not None and not region.strip():
        raise ConfigError(f"--region {region!r} is empty; {_REGION_FIX}.")


def _check_beam_options(options: PipelineOptions, cloud_only: bool = False) -> None:
    """What Beam would refuse when the pipeline is built, refused now with its reasons;
    `cloud_only`: its checks of the Google Cloud options alone (project, region, job
    name), which look nothing up in Cloud Storage."""
    runner = options.view_as(StandardOptions).runner
    validator = PipelineOptionsValidator(options, _runner(options))
    if cloud_only:
        reasons = validator.validate_cloud_options(options.view_as(GoogleCloudOptions))
    else:
        reasons = validator.validate()
    if not reasons:
        return
    text = " ".join(reasons)
    fixes = list(dict.fromkeys(fix for said, fix in _BEAM_OPTION_FIXES.items() if said in text))
    raise ConfigError(
        f"--runner {runner}: Beam refuses these options: {text} Fix: "
        f"{'; '.join(fixes) or 'correct the options it names'} ({_DATAFLOW_DOCS})."
    )


def _check_package_shipped(options: PipelineOptions) -> None:
    """Dataflow's workers import this package (`transforms`, `pipeline`): a launch that
    ships it neither staged (--setup_file, --extra_package, --requirements_file) nor in
    the worker image is refused; the workers would fail with ModuleNotFoundError."""
    setup, worker = options.view_as(SetupOptions), options.view_as(WorkerOptions)
    files = {"--setup_file": [setup.setup_file], "--requirements_file": [setup.requirements_file]}
    files["--extra_package"] = setup.extra_packages or []
    for flag, paths in files.items():
        for path in filter(None, paths):
            remote = flag == "--extra_package" and "://" in path  # Beam's stager fetches it
            if not remote and not os.path.isfile(path):
                raise ConfigError(f"{flag} {path!r} is not a file; pass an existing file.")
    _check_sdk_location(setup.sdk_location)
    if setup.setup_file and os.path.basename(setup.setup_file) not in _SETUP_FILES:
        raise ConfigError(  # Beam's stager refuses it, after the model loaded (exit 1)
            f"--setup_file {setup.setup_file!r} is not named setup.py or pyproject.toml, the "
            "build files Beam stages a package with; pass --setup_file ./setup.py."
        )
    image = worker.sdk_container_image or worker.worker_harness_container_image
    if setup.setup_file or image or _names_this_package(setup):
        return
    raise ConfigError(
        "--setup_file or --sdk_container_image is needed on Dataflow: no flag ships this "
        "package to the workers, which would fail with ModuleNotFoundError: No module named "
        "'transforms'; pass --setup_file ./setup.py, or --sdk_container_image with the worker "
        f"image built from the Dockerfile ({_DATAFLOW_DOCS})."
    )


def _check_sdk_location(sdk: str | None) -> None:
    """A local --sdk_location must be Beam's SDK tarball, or a folder holding it by the
    name Beam's stager looks for: it copied it after the model loaded (exit 1)."""
    if not sdk or sdk in ("default", "container") or "://" in sdk:
        return
    from apache_beam.runners.internal.names import STAGED_SDK_SOURCES_FILENAME  # noqa: PLC0415

    tarball = os.path.join(sdk, STAGED_SDK_SOURCES_FILENAME) if os.path.isdir(sdk) else sdk
    if not os.path.isfile(tarball):
        raise ConfigError(
            f"--sdk_location {sdk!r} is neither a file nor a folder holding "
            f"{STAGED_SDK_SOURCES_FILENAME}; pass Beam's SDK tarball, or leave --sdk_location out."
        )


def _gpu_request(options: PipelineOptions) -> str | None:
    """The flag that asks Dataflow for GPUs (worker_accelerator, an accelerator hint), or None."""
    requests = {
        "--dataflow_service_options": options.view_as(GoogleCloudOptions).dataflow_service_options,
        "--experiments": options.view_as(DebugOptions).experiments,
        "--resource_hints": options.view_as(StandardOptions).resource_hints,
    }
    for flag, values in requests.items():
        for value in values or []:
            if value.startswith(("worker_accelerator=", "accelerator=")):
                return f"{flag} {value}"
    return None


def _check_gpu_image(options: PipelineOptions) -> None:
    """GPU workers need the worker image: Dataflow's default image with --setup_file
    installs TensorFlow without CUDA, so the job would run on the CPUs of GPU workers."""
    worker = options.view_as(WorkerOptions)
    request = _gpu_request(options)
    if request is None or worker.sdk_container_image or worker.worker_harness_container_image:
        return
    raise ConfigError(
        f"{request} asks for GPUs, which need --sdk_container_image with the worker "
        "image built from the Dockerfile: Dataflow's default image (with --setup_file) "
        "gets TensorFlow without CUDA, and the job would run on the workers' CPUs "
        f"({_DATAFLOW_DOCS})."
    )


def _check_l4_machine(options: PipelineOptions) -> None:
    """NVIDIA L4 GPUs come only with G2 machine types (Dataflow's "Use L4 GPUs"); any
    other, Dataflow's default included, fails the job after its files were staged.
    A machine type may be named by its URL; Dataflow Prime picks the machine itself."""
    request = _gpu_request(options)
    machine = str(options.view_as(WorkerOptions).machine_type or "")
    services = options.view_as(GoogleCloudOptions).dataflow_service_options or []
    prime = "enable_prime" in [*services, *(options.view_as(DebugOptions).experiments or [])]
    if request is None or "type:nvidia-l4" not in request or prime:
        return
    if machine.rsplit("/", 1)[-1].startswith("g2-"):
        return
    given = f"--machine_type {machine!r}" if machine else "no --machine_type (Dataflow's default)"
    raise ConfigError(
        f"{request} asks for NVIDIA L4 GPUs, which Dataflow attaches only to G2 machine "
        f"types, and {given} is not one; pass --machine_type g2-standard-4 "
        f"({_DATAFLOW_DOCS})."
    )


def _names_this_package(setup: SetupOptions) -> bool:
    """An --extra_package file or a --requirements_file line names ig-audit (or ig_audit)."""
    names = [os.path.basename(path) for path in setup.extra_packages or []]
    if setup.requirements_file:
        try:
            lines = Path(setup.requirements_file).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"--requirements_file {setup.requirements_file!r} is not a UTF-8 text file "
                f"({e.reason}); pass a pip requirements file."
            ) from e
        names += [line for line in lines if not line.lstrip().startswith("#")]
    return any(re.search(r"\big[-_.]audit\b", name, re.IGNORECASE) for name in names)


def check_credentials(path: str, flag: str = "--output", use: str = "write") -> None:
    """Refuses a gs:// `path` without Google Cloud credentials before any call to it.

    Without them Beam connects anonymously, which can never write, and where
    Google Cloud cannot be reached it retries for minutes before failing.
    """
    if not path.startswith(sources.REMOTE_FOLDER_SCHEMES):
        return
    try:
        import google.auth  # noqa: PLC0415  (with apache-beam[gcp], which gs:// needs)
        from google.auth import exceptions  # noqa: PLC0415
    except ImportError as e:
        raise ConfigError(
            f"{flag} {path!r} needs Beam's Google Cloud support: pip install 'apache-beam[gcp]'."
        ) from e
    try:
        google.auth.default()
    except exceptions.DefaultCredentialsError as e:
        raise ConfigError(
            f"{flag} {path!r} needs Google Cloud credentials to {use}, and none were "
            "found; run `gcloud auth application-default login`, or set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key file."
        ) from e


def check_runner(options: PipelineOptions) -> None:
    """--runner names a Beam runner, --direct_num_workers is >= 0, and no flag asks another
    runner for a Dataflow job that is built, not run: checked before --output is
    touched (an --overwrite deleted the earlier run, then failed)."""
    from apache_beam.runners.runner import create_runner  # noqa: PLC0415

    runner = options.view_as(StandardOptions).runner
    if isinstance(runner, str) and not runner.strip():  # an unset "$RUNNER"
        raise ConfigError(
            "--runner is empty; pass a Beam runner (DirectRunner, DataflowRunner, ...), or "
            "leave --runner out (DirectRunner)."
        )
    if isinstance(runner, str):
        try:
            create_runner(runner)
        except (ValueError, ImportError) as e:
            raise ConfigError(
                f"--runner {runner!r} is not a Beam runner ({e}); use DirectRunner, "
                "DataflowRunner or another runner's full name."
            ) from e
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:
        raise ConfigError(
            f"--direct_num_workers must be >= 0 (0: one per CPU core), got {workers}."
        )
    if is_dataflow(options):
        _check_dry_run_value(options)
    else:
        _check_no_dataflow_build(options)


def _check_dry_run_value(options: PipelineOptions) -> None:
    """A --dry_run value that reads as false: the DataflowRunner takes any value for
    true, so '--dry_run=False' built the job and submitted nothing. (Other runners
    ignore --dry_run: `_check_no_dataflow_build` refuses any value.)"""
    value = options.view_as(TestOptions).dry_run
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        raise ConfigError(
            f"--dry_run {value!r} is a dry run all the same (Beam takes any value for true): "
            "drop --dry_run to run the job, or pass --dry_run=True to build it only."
        )


def _check_no_dataflow_build(options: PipelineOptions) -> None:
    """--dry_run and --template_location make the DataflowRunner build the job and run
    nothing; other runners ignore them, and a user checking a job offline got a run."""
    for flag, value in (
        ("--dry_run", options.view_as(TestOptions).dry_run),
        ("--template_location", options.view_as(GoogleCloudOptions).template_location),
    ):
        if value:  # the DataflowRunner's test: any non-empty value
            runner = options.view_as(StandardOptions).runner
            name = runner if isinstance(runner, str) else type(runner).__name__
            raise ConfigError(
                f"{flag} {value!r} builds a Dataflow job without running it, and the "
                f"{name} ignores it: it would run the whole job. Pass --runner "
                f"DataflowRunner (and its flags), or drop {flag}."
            )


def check_no_resume_template(options: PipelineOptions, audit: AuditOptions) -> None:
    """Refuses a --resume built as a Dataflow template: the template runs later (maybe
    more than once), but a resume reads the earlier run's rows as it is built, and its
    workers read their ids from the build's `.tmp/`, which the next run deletes."""
    if audit.resume and writes_template(options):
        raise ConfigError(
            "--resume with --template_location: a template runs later, but a --resume "
            f"reads the earlier run's rows in {audit.output!r} as it is built, so its job "
            "would redo the images done in between, giving them a second row. Launch the "
            "--resume itself (drop --template_location), or build the template for a new "
            "--output."
        )


def writes_template(options: PipelineOptions) -> bool:
    """The job is written as a Dataflow template, not run."""
    return is_dataflow(options) and bool(options.view_as(GoogleCloudOptions).template_location)
