"""--resume: continuing an earlier run in --output.

What must match the earlier run's manifest (every setting that changes a row,
named by its flag: `_resume_mismatches`, and what to do when one differs; those no
model sets compared at launch too, `check_resume_at_launch`), the
image ids of its rows (each results file's columns checked), its checkpointed
rows salvaged and the runs before it recorded (`resume_state`, under the
lock); and a resume with nothing left to do, completed without a pipeline
(`nothing_left`, `skip_all`).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipeline.job import AuditJob, config_entry
from pipeline.options import AuditOptions, ConfigError
from pipeline.output_folder import (
    check_files_to_resume,
    check_own_files,
    clear_temp,
    drop_empty_run_folders,
    earlier_run,
    matched_files,
    no_earlier_run,
)
from pipeline.resolve import top_k_fitted
from transforms import datasource, files, sources, wording
from transforms.config import DEFAULT_COMPLETENESS_TOLERANCE, AttributionConfig
from transforms.errors import error_reason
from transforms.manifest import (
    REPORT_FILE,
    RESULTS_DIR,
    SANITY_DIR,
    SHARD_PREFIX,
    estimate_bound,
    faithfulness_pixels,
    faithfulness_ties,
    is_run,
    typed_path,
)
from transforms.schema import results_schema
from transforms.sinks import (
    read_manifest,
    results_files,
    salvage_checkpoints,
    write_manifest,
    write_no_errors,
)

__all__ = [
    "check_resume_at_launch",
    "earlier_manifest",
    "log_resume",
    "nothing_left",
    "resume_state",
    "skip_all",
]

_LOG = logging.getLogger(__name__)


# What must match for --resume to continue an earlier run: every setting that
# changes a row, named by its flag. Path batching changes the rows at float
# rounding only (tests/test_attribution.py), so it may differ.
_RESUME_MODEL_FLAGS = {
    "identity": "--model",
    "num_outputs": "--model",
    "image_size": "--image_size",  # with a non-square model's image_width (`_input_size`)
    "input_range": "--input_range",
    "label_offset": "--label_offset",
}
_CONFIG_FLAGS = {
    "baselines": "--baseline",
    "estimate_bound": "the bound on attribution_error at this --tolerance (a version of the job)",
    "faithfulness_pixels": (
        "the pixels deletion and insertion rank, a padded image's own or all (a version of the job)"
    ),
    "faithfulness_ties": (
        "how deletion and insertion order a map's equal values, as its random control or "
        "row-major (a version of the job)"
    ),
}
_ROW_NEUTRAL_CONFIG = frozenset({"path_batch_size"})
# Unused at --tolerance 0 (no estimate is bounded, so a run of a version before
# estimate_bound resumes too).
_REFINEMENT_CONFIG = frozenset({"max_steps", "completeness_tolerance", "estimate_bound"})


def _jsonable(value: Any) -> Any:
    """`value` as it reads back from manifest.json (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))


def _resume_mismatches(
    previous: dict[str, Any], now: dict[str, Any], unsure: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Each setting of this run (`now`, its manifest as `AuditJob.manifest_base` writes
    it) that differs from the earlier run's manifest: its flag (or what names it,
    `_CONFIG_FLAGS`), and it as flag (was/now). At launch, before the model loads
    (`check_resume_at_launch`), `now` has no "model" and its "config" is as the flags
    give it: the model's settings and the class names are not compared, nor the
    settings named in `unsure` (`_fitted_later`)."""
    pairs = _dataset_pairs(previous, now)
    loaded = "model" in now
    if loaded:
        pairs += _model_pairs(previous.get("model") or {}, now["model"])
    before_config, now_config = _config_as_now(previous), now["config"]
    neutral = _neutral_config(before_config, now_config)
    for key in sorted(set(before_config) | set(now_config)):
        if key not in neutral:
            flag = _config_flag(key, now_config)
            pairs.append((flag, before_config.get(key), now_config.get(key)))
    if loaded:  # last: the class names follow from the model and --label_offset named above
        pairs.append(("class names", *(_names_said(run) for run in (previous, now))))
    differing: dict[str, str] = {}
    for flag, before, current in pairs:
        if before != current and flag not in differing and flag not in unsure:
            as_read = flag in ("class names", "--image_size", "--model")  # "16x24", not quoted
            shown = (v if as_read else repr(v) for v in (before, current))
            differing[flag] = "{} (earlier run: {}, this run: {})".format(flag, *shown)
    return differing


def _dataset_pairs(previous: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The dataset's settings, as (flag, earlier run's, this run's)."""
    before_dataset = previous.get("dataset")
    if _one_folder(before_dataset, now["dataset"]):
        before_dataset = now["dataset"]  # e.g. through a symlink: the same files, the same ids
    pairs = [
        ("--dataset", before_dataset, now["dataset"]),
        ("--split", previous.get("split"), now["split"]),
    ]
    if "dataset_version" in previous:  # not written before TFDS versions were recorded
        pairs.append(("--dataset version", previous["dataset_version"], now.get("dataset_version")))
    return pairs


def _model_pairs(before: dict[str, Any], now: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The model's settings (manifests' "model"), as (flag, earlier run's, this run's)."""
    pairs = []
    if before.get("identity") != now.get("identity"):
        pairs.append(("--model", *(_model_said(m) for m in (before, now))))
    for key, flag in _RESUME_MODEL_FLAGS.items():
        pairs.append((flag, _input_size(before, key), _input_size(now, key)))
    return pairs


def _config_as_now(previous: dict[str, Any]) -> dict[str, Any]:
    """The earlier run's "config", with what an older version's lacks filled in as it was."""
    config = previous.get("config") or {}
    return {
        **config,
        "estimate_bound": estimate_bound(config),
        "faithfulness_pixels": faithfulness_pixels(config),
        "faithfulness_ties": faithfulness_ties(config),
    }


def _input_size(model: dict[str, Any], key: str) -> Any:
    """A manifest's "model" setting `key`; for "image_size", the input's size as the
    refusal shows it, a square's side or "HxW" (with `image_width`, null or absent for a
    square): a width alone differing was shown as "earlier run: 24, this run: None"."""
    value = model.get(key)
    width = model.get("image_width") if key == "image_size" else None
    return f"{value}x{width}" if width and width != value else value


def _config_flag(key: str, now_config: dict[str, Any]) -> str:
    """What names the setting `key` of a manifest's "config" in a refusal: its flag
    (`_CONFIG_FLAGS`), or, for one this version does not have (a later version's),
    that, since no flag of this version sets it."""
    if key in _CONFIG_FLAGS or key in now_config:
        return _CONFIG_FLAGS.get(key, f"--{key}")
    return f"{key!r}, a setting this version of the job does not have"


def _resume_fix(previous: dict[str, Any], now: dict[str, Any], mismatches: dict[str, str]) -> str:
    """What to do about a --resume whose settings (`now`: `_resume_mismatches`) differ
    from the earlier run's."""
    if set(mismatches) & _unmatchable(previous, now["config"]):
        return "This version of the job cannot continue it: start over with --overwrite."
    config = previous.get("config") or {}
    tolerance = config.get("tolerance")
    if (
        "--completeness_tolerance" in mismatches
        and config.get("completeness_tolerance") == DEFAULT_COMPLETENESS_TOLERANCE
        and isinstance(tolerance, int | float)
        and 0 < tolerance < DEFAULT_COMPLETENESS_TOLERANCE
    ):  # the same flags, at a --tolerance whose default completeness bound changed
        bound = f"{DEFAULT_COMPLETENESS_TOLERANCE:g}"
        return (
            f"Resume with the same flags and --completeness_tolerance {bound} (the earlier "
            f"run's: versions before 2026-12-05 bounded completeness by {bound} at any "
            "--tolerance), or start over with --overwrite."
        )
    return "Resume with the same flags, or start over with --overwrite."


def _unmatchable(previous: dict[str, Any], now: dict[str, Any]) -> set[str]:
    """The settings no flag makes this version use as the earlier run did: how it ranks
    pixels, those the earlier run's version did not have (its manifest has none of
    them, as of --completeness_tolerance before that flag) and those this version does
    not have (a later version's); by flag, as mismatched. `now`: this run's "config"."""
    before = previous.get("config") or {}
    versioned = {"faithfulness_pixels", "faithfulness_ties"}  # no flag sets them
    derived = {"estimate_bound", *versioned}  # filled in from the older keys
    absent = set(now) - set(before) - derived
    unknown = set(before) - set(now)  # a later version's: no flag of this one sets them
    return {_config_flag(k, now) for k in absent | versioned | unknown}


def _one_folder(before: Any, now: Any) -> bool:
    """Two `--dataset` folder names as manifests record them of one folder: absolute
    local paths of one folder, or gs:// names alike but for a trailing '/' (recorded as
    typed; the objects listed and their image ids are the same)."""
    names = (before, now)
    if all(isinstance(n, str) and n.startswith(datasource.REMOTE_FOLDER_SCHEMES) for n in names):
        return before.rstrip("/") == now.rstrip("/")
    if not all(isinstance(n, str) and os.path.isabs(n) and os.path.isdir(n) for n in names):
        return False
    return os.path.samefile(before, now)


def _neutral_config(before: dict[str, Any], now: dict[str, Any]) -> frozenset[str]:
    """The settings of the manifests' "config" that change no row between these two."""
    neutral = _ROW_NEUTRAL_CONFIG
    if before.get("faithfulness") == "none":
        # Its rows hold no check: how one ranks pixels (a version's) or steps changes
        # none of them. A difference is --faithfulness's, which its none cures.
        neutral |= {"faithfulness_pixels", "faithfulness_ties", "faithfulness_steps"}
        if now["faithfulness"] == "none" and "noise" not in now["baselines"]:
            neutral |= {"seed"}  # --seed seeds nothing else
    if before.get("tolerance") == now["tolerance"] == 0:
        return neutral | _REFINEMENT_CONFIG  # the fixed rule: no refinement to bound
    if before["estimate_bound"] == now["estimate_bound"]:
        # --tolerance acts through its bound alone: an earlier version's 0.015 and
        # this one's 0.01875 hold the estimate within 1.5 % alike, the same rows.
        return neutral | {"tolerance"}
    if before.get("tolerance") != now["tolerance"]:
        return neutral | {"estimate_bound"}  # follows from --tolerance, named already
    return neutral


def _names_said(run: dict[str, Any]) -> str:
    """A run's class names as its manifest knows them, readable in a resume's refusal:
    by the --class_names file its command gave, where it gave one (the fix is to pass
    it), and the names' hash."""
    sha256 = run.get("class_names_sha256")
    if not sha256:
        return "none (class indices)"
    typed = typed_path(run, "class_names")
    if typed is None:
        return f"names with sha256 {sha256[:12]}"
    return f"those of --class_names {typed!r} (sha256 {sha256[:12]})"


def _model_said(model: dict[str, Any]) -> str:
    """A run's model in a resume's refusal: where it was read from and its identity,
    shortened (`'/models/m.keras' (sha256:ab3950d82336)`), so that a model retrained
    in place shows as the same path of other contents."""
    identity = str(model.get("identity"))
    if identity.startswith("sha256:"):
        identity = identity[: len("sha256:") + 12]
    where = model.get("location") or model.get("reference")
    return f"{where!r} ({identity})" if where else repr(identity)


def _done_ids(output: str) -> set[str]:
    """The image ids of the earlier run's rows, each results file opened once: its
    schema checked (`_check_columns`), then its `image_id` column read."""
    names = results_schema().names
    done = set()
    try:
        paths = results_files(output)
    except PermissionError as e:  # the credentials may not list the bucket, or were refused
        raise ConfigError(
            f"--resume: cannot list the results of the earlier run in --output {output!r} "
            f"({error_reason(e)}); {files.read_access_fix(output, e)}, then run the same "
            "command again."
        ) from e
    for path in paths:
        try:
            with files.open_with_beam(path) as f:
                held = pq.ParquetFile(f)
                _check_columns(output, names, held.schema_arrow.names)
                done.update(held.read(columns=["image_id"]).column(0).to_pylist())
        except ConfigError:
            raise
        except Exception as e:  # truncated or not Parquet (or not ours to read): rows unknown
            fix = (
                f"{files.read_access_fix(path, e)}, then run the same command again"
                if isinstance(e, PermissionError)
                else "move that file away to redo its images, or start over with --overwrite"
            )
            raise ConfigError(
                f"--resume: cannot read {path!r} of the earlier run ({error_reason(e)}); {fix}."
            ) from e
    return done


def _check_columns(output: str, names: list[str], held: list[str]) -> None:
    """Refuses a --resume whose earlier run's results files hold other columns (`held`)
    than this version writes (`names`; an older version's, before attribution_error or
    the faithfulness columns): its rows and this run's would not read as one table."""
    missing = [n for n in names if n not in held]
    extra = [n for n in held if n not in names]
    if missing or extra:
        lacks = f"have no {', '.join(map(repr, missing))}" if missing else ""
        more = f"hold {', '.join(map(repr, extra))}" if extra else ""
        which = "an older" if missing and not extra else "another"
        raise ConfigError(
            f"--resume: the results of the earlier run in {output!r} "
            f"{' and '.join(filter(None, (lacks, more)))}: {which} version of the job "
            "wrote them. This version of the job cannot add rows to them: start over "
            "with --overwrite."
        )


def _check_id_scheme(previous: dict[str, Any], done: set[str], output: str) -> None:
    """Refuses a --resume whose earlier run may have named a done file otherwise.

    Only ids holding a backslash changed between schemes (1: unescaped), so an
    earlier run without one resumes; with one, its file would be redone under a
    new id and have two rows.
    """
    scheme = previous.get("image_id_scheme", 1)
    if scheme == datasource.IMAGE_ID_SCHEME:
        return
    changed = sorted(i for i in done if "\\" in i)
    if changed or scheme > datasource.IMAGE_ID_SCHEME:
        example = f" (e.g. {changed[0]!r})" if changed else ""
        raise ConfigError(
            f"--resume: the earlier run in {output!r} named files by another scheme "
            f"(image_id_scheme {scheme}, this version {datasource.IMAGE_ID_SCHEME}){example}; "
            "resuming would give some files two rows. Start over with --overwrite."
        )


def _check_tfds_ids(source: datasource.DataSource, done: set[str], output: str) -> None:
    """Refuses a --resume over a TFDS split whose earlier rows name examples it does not
    hold: their ids name the shard files of a copy prepared in other shards (another
    --data_dir) than this one, so this copy's examples, the same images, would be
    audited again under other ids (`TfdsSource.not_held`)."""
    if not isinstance(source, datasource.TfdsSource):
        return
    stale = source.not_held(done)
    if stale:
        where = f" as it is prepared in {source.data_dir!r}" if source.data_dir else ""
        raise ConfigError(
            f"--resume: the earlier run in {output!r} has rows of examples that "
            f"{source.name!r} split {source.split!r} does not hold{where} "
            f"({wording.count(len(stale), 'image')}, e.g. {stale[0]!r}): the ids "
            "name the dataset's shard files, and this copy of it was prepared in other "
            "shards, so its examples would be audited again under other ids. Resume with "
            "the --data_dir the earlier run read, or start over with --overwrite."
        )


def _not_a_manifest(output: str, reason: str) -> ConfigError:
    return ConfigError(
        f"--resume: the manifest.json in --output {output!r} is not one this job wrote "
        f"({reason}), so the earlier run's settings are unknown; restore it, or choose "
        "another --output."
    )


# What may differ between a run and the runs it resumes, kept in its manifest's
# "earlier_runs": how each made its rows (the rest is checked equal).
_EARLIER_RUN_KEYS = (
    "run_id",
    "status",
    "start_time",
    "end_time",
    "reason",  # a run that failed or was stopped: why (`ENDED_UNFINISHED`)
    "command",
    "working_folder",
    "versions",
    "batch_size",
    "jit_compile",
    "results_prefix",
    "counts",
)


def _earlier_runs(previous: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The runs an earlier run's manifest records, then that run itself, oldest first
    (keys a manifest of an older version lacks are null; "results_prefix" is "part"
    for a run that resumed none)."""
    entry = {key: previous.get(key) for key in _EARLIER_RUN_KEYS}
    entry["path_batch_size"] = (previous.get("config") or {}).get("path_batch_size")
    if entry["results_prefix"] is None and not previous.get("resumed"):
        entry["results_prefix"] = SHARD_PREFIX
    return (*previous.get("earlier_runs", ()), entry)


# The fields of a manifest a resume reads besides its model and config, by the
# type the job writes them as (when there: an older version's has fewer).
_FIELD_TYPES = {
    "image_id_scheme": (int, "an int"),
    "class_names_sha256": ((str, type(None)), "a str"),
    "run_id": ((str, type(None)), "a str"),
}


def earlier_manifest(output: str) -> dict[str, Any]:
    """The manifest of the run a --resume continues, checked to be one this job wrote:
    its model and config (`is_run`) and the fields it reads, of the types written.
    Read at launch, before the model loads (none of this needs it:
    `check_resume_at_launch`), and again under the folder's lock (`resume_state`), the
    final word.

    Raises:
      ConfigError: no manifest, one that cannot be read, or not one this job wrote.
    """
    try:
        previous = read_manifest(output)
    except FileNotFoundError as e:  # its own message would say again what this one says
        raise no_earlier_run(output) from e
    except ValueError as e:  # there, but not JSON (or UTF-8): edited, as the job writes it whole
        raise _not_a_manifest(output, error_reason(e)) from e
    except Exception as e:  # there, but not readable now (its permissions, a network error)
        fix = (
            files.read_access_fix(output, e)
            if isinstance(e, PermissionError)
            else "make it readable"
        )
        raise ConfigError(
            f"--resume: cannot read the manifest.json in --output {output!r} "
            f"({error_reason(e)}); {fix}, then run the same command again."
        ) from e
    if not is_run(output):
        raise _not_a_manifest(output, "no model and config objects in it")
    for key, (types, written) in _FIELD_TYPES.items():
        value = previous.get(key)
        if key in previous and (not isinstance(value, types) or isinstance(value, bool)):
            raise _not_a_manifest(output, f"its {key!r} is {_a(value)}, not {written}")
    runs = previous.get("earlier_runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise _not_a_manifest(output, f"its 'earlier_runs' is {_a(runs)}, not a list of objects")
    return previous


def _a(value: Any) -> str:
    """The JSON value's Python type with its article: 'a str', 'an int' ('null')."""
    if value is None:
        return "null"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def check_resume_at_launch(
    audit: AuditOptions, config: AttributionConfig, source: datasource.DataSource
) -> None:
    """Checks a --resume at launch, before the model loads, once --output is known free
    (`check_output_free`): it holds a run of this job (`earlier_manifest`, the one home
    of "no earlier run" for a gs:// --output), its files only the job's
    (`check_files_to_resume`), made with the settings no model sets that this run's
    flags give (`config`, before the model fits it: --top_k's default as the earlier
    run's model fits it, `_earlier_classes`) and dataset (`source`, resolved or not
    yet). The model's settings, and all again, are checked under the folder's lock
    (`resume_state`), the final word.

    Raises:
      ConfigError: as `resume_state`, naming each of those settings that differs.
    """
    previous = earlier_manifest(audit.output)
    check_files_to_resume(audit.output)
    classes = _earlier_classes(previous)
    if audit.top_k is None and classes is not None:
        config = top_k_fitted(config, classes)
    now = {**source.manifest_entry(), "config": _jsonable(config_entry(config))}
    top_k_known = audit.top_k is not None or classes is not None
    unsure = _fitted_later(previous, now, top_k_known)
    if isinstance(source, datasource.TfdsSource) and source.version is None:
        unsure |= {"--dataset version"}  # known once the dataset is downloaded
    _check_settings(audit.output, previous, now, unsure)


def _earlier_classes(previous: dict[str, Any]) -> int | None:
    """The classes of the earlier run's model (its outputs bar its --label_offset), as
    its manifest records them: a resume's model has as many, or the resume is refused
    once it loads (another --model or --label_offset), so --top_k's default shrinks as
    it did. None where the manifest does not say."""
    model = previous.get("model") or {}
    outputs, offset = model.get("num_outputs"), model.get("label_offset")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (outputs, offset)):
        return None
    return outputs - offset if outputs > offset else None


def _fitted_later(
    previous: dict[str, Any], now: dict[str, Any], top_k_known: bool
) -> frozenset[str]:
    """The settings of a launch (`now`, its "config" as the flags give it) whose
    comparison with the earlier run's the model may change (`fit_to_model`), by flag:
    --top_k's default where the earlier run's model's classes are unknown (it shrinks
    to a model of fewer), and those compared otherwise once --faithfulness is off, as
    a model of 1 output turns it (it, and those its being off leaves uncompared)."""
    unsure = set() if top_k_known else {_config_flag("top_k", now["config"])}
    off = {**now, "config": {**now["config"], "faithfulness": "none"}}
    return frozenset(
        unsure | (set(_resume_mismatches(previous, now)) ^ set(_resume_mismatches(previous, off)))
    )


def _check_settings(
    output: str, previous: dict[str, Any], now: dict[str, Any], unsure: frozenset[str] = frozenset()
) -> None:
    """Refuses a --resume whose settings (`now`: `_resume_mismatches`) differ from
    those of the earlier run in `output` (`previous`, its manifest), naming each."""
    mismatches = _resume_mismatches(previous, now, unsure)
    if mismatches:
        fix = _resume_fix(previous, now, mismatches)
        said = "; ".join(mismatches.values())
        raise ConfigError(f"--resume: the earlier run in {output!r} differs in {said}. {fix}")


def resume_state(job: AuditJob) -> tuple[frozenset[str], str, tuple[dict[str, Any], ...]]:
    """Image ids with rows in an earlier run of the same configuration, a new file
    prefix, and the earlier runs (`_earlier_runs`).

    Raises:
      ConfigError: no earlier run, or one with other settings (mixing them would
        make one table of incomparable rows); the message names each flag.
    """
    output = job.output
    previous = earlier_manifest(output)
    _check_settings(output, previous, _jsonable(job.manifest_base()))
    check_own_files(output, earlier_run(output), "--resume")  # again, under the lock
    done = _done_ids(output)
    _check_id_scheme(previous, done, output)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    # A killed run's checkpointed rows join results/ before its temp files go.
    schema = results_schema(job.config.attribution_dtype)
    salvaged_file = FileSystems.join(output, RESULTS_DIR, f"{SHARD_PREFIX}-salvaged{stamp}.parquet")
    salvaged = salvage_checkpoints(
        output, frozenset(done), schema, salvaged_file, previous.get("run_id")
    )
    if salvaged:
        _LOG.info("Kept the rows of %d images the earlier run had finished.", len(salvaged))
    _check_tfds_ids(job.source, done | salvaged, output)
    clear_temp(output)
    _drop_views(output)
    return frozenset(done | salvaged), f"{SHARD_PREFIX}-resume{stamp}", _earlier_runs(previous)


def _drop_views(output: str) -> None:
    """Deletes the report page and sanity check of the run a resume continues: they
    describe its rows before the resume, and would be read as the new run's."""
    views = [FileSystems.join(output, REPORT_FILE), FileSystems.join(output, SANITY_DIR, "**")]
    found = matched_files(views)
    if found:
        FileSystems.delete(found)
        drop_empty_run_folders(output)
        _LOG.info(
            "Deleted the %s and sanity/ of the run before this resume: they describe its "
            "rows; render them again when it ends.",
            REPORT_FILE,
        )


def log_resume(job: AuditJob, done: frozenset[str]) -> None:
    """How many images a resume skips: those with rows still in a local --dataset
    folder (the manifest's `skipped_done_before`); the rows of images no longer in
    it stay, said once (they were counted as skipped too)."""
    gone = sorted(done - job.input_ids) if job.input_ids is not None else []
    skipped = len(done) - len(gone)
    have = "has" if skipped == 1 else "have"
    _LOG.info("Resuming: %s %s rows already; skipped.", wording.count(skipped, "image"), have)
    if gone:
        _LOG.warning(
            "%s with rows in %s %s no longer in --dataset (e.g. %r); their rows "
            "are kept. Start over with --overwrite to drop them.",
            wording.count(len(gone), "image"),
            FileSystems.join(job.output, RESULTS_DIR),
            "is" if len(gone) == 1 else "are",
            gone[0],
        )


def _input_ids(job: AuditJob) -> frozenset[str] | None:
    """Every input's image id, when known at launch without reading an image: a local
    folder's listing, the bundled sample's files. None for a gs:// folder (the job
    lists it) and a TFDS split (`_tfds_all_done`)."""
    if job.input_ids is not None:
        return job.input_ids
    if isinstance(job.source, sources.SampleSource):
        return frozenset(f.image_id for f in sources.sample_files())
    return None


def _tfds_all_done(job: AuditJob) -> int | None:
    """A TFDS split's examples, when the done ids are as many: its ids are known only as
    it is read, but every row a resume finds is of this split (each resume refuses
    another --dataset, --split or dataset version), so that many are all of them."""
    total = job.total_inputs
    prefix = f"{job.source.name}/"
    done = sum(1 for image_id in job.done_before if image_id.startswith(prefix))
    return total if total and done == total else None


def nothing_left(job: AuditJob) -> int | None:
    """The inputs of a --resume whose every input has rows already (`_input_ids`, a TFDS
    split's count), how many; None when some may be left. (A template is never a resume:
    `pipeline.runner.check_no_resume_template`.)"""
    if job.lock is None or not job.done_before:
        return None
    if isinstance(job.source, sources.TfdsSource):
        return _tfds_all_done(job)
    ids = _input_ids(job)
    return len(ids) if ids is not None and ids <= job.done_before else None


def skip_all(job: AuditJob, inputs: int) -> PipelineResult:
    """Completes a --resume with nothing left to do (`nothing_left`) at once: the
    errors file and manifest its pipeline wrote, which loaded the model in a worker
    and traced its gradients (on Dataflow, launched a job) to skip every input."""
    _LOG.info("Every input has rows already: nothing left to do.")
    write_no_errors(job.output)
    write_manifest(
        job.output, job.manifest_base(), {"inputs": inputs, "skipped_done_before": inputs}
    )
    return PipelineResult(PipelineState.DONE)
