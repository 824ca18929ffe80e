"""A run's manifest: `<output>/manifest.json`, read back without Beam.

`transforms.sinks.WriteManifest` writes it at the end of a run; readers (the
read-back API, the report, `--resume`) read it here. The names of a run's temp
and checkpoint folders live here too, so that the report finds a killed run's
checkpoints without importing Beam's sinks.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from typing import Any

from transforms import files, wording

__all__ = [
    "CHECKPOINT_DIR",
    "ENDED_UNFINISHED",
    "ERRORS_DIR",
    "FAITHFULNESS_PIXELS",
    "FAITHFULNESS_TIES",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "ManifestNotAFile",
    "REPORT_FILE",
    "RESULTS_DIR",
    "SANITY_DIR",
    "SANITY_FIGURE",
    "SANITY_JSON",
    "SHARD_PREFIX",
    "TEMP_DIR",
    "UnreadableManifest",
    "absolute_path",
    "awaited_template",
    "checkpoints_root",
    "completeness_bound",
    "enclosing_run",
    "estimate_bound",
    "faithfulness_pixels",
    "faithfulness_ties",
    "has_one_output",
    "how_it_ended",
    "image_shape",
    "is_run",
    "read_manifest",
    "run_checkpoints",
    "shows_targets",
    "typed_flag",
    "typed_path",
    "unfinished_status",
]

#: The statuses of a run that ended without completing, which its launcher wrote as it
#: ended, with its "end_time" and "reason": "failed" (an error ended it; "reason" as the
#: command's `error: the run failed: ...` line says it) and "stopped" (a Ctrl-C or a
#: SIGTERM; "reason" "interrupted" or "stopped by SIGTERM"). A run killed outright
#: (SIGKILL, the system out of memory, a lost machine) leaves "running", as does one
#: still running.
ENDED_UNFINISHED = ("failed", "stopped")

#: The manifest's name in a run's --output folder.
MANIFEST_FILE = "manifest.json"
#: The lock file a run holds its --output folder with (`pipeline.output_lock`).
LOCK_FILE = ".lock"
#: The folders of a run's result rows and error records in its --output folder.
RESULTS_DIR = "results"
ERRORS_DIR = "errors"
#: Every Parquet file of those folders is named `<SHARD_PREFIX>-...parquet`: Beam's
#: shards, a resume's, its salvaged checkpoints, the schema file.
SHARD_PREFIX = "part"
#: The folder and files `python -m pipeline.sanity` writes in a run's --output folder.
SANITY_DIR = "sanity"
SANITY_FIGURE = "sanity.png"
SANITY_JSON = "sanity.json"
#: Where `python -m pipeline.report` writes a run's page by default, in its --output
#: folder (an --overwrite of the run removes it).
REPORT_FILE = "report.html"
#: Where Beam's sinks write files before they are complete: `<output>/.tmp/`, next to,
#: never inside, the folders readers read (`results/`, `errors/`). A killed run leaves
#: its partial files there, and the next run on the folder deletes them.
TEMP_DIR = ".tmp"
#: Under TEMP_DIR: the checkpoint files of each run (`transforms.sinks.WriteCheckpoints`).
CHECKPOINT_DIR = "checkpoints"


def checkpoints_root(output: str) -> str:
    """`<output>/.tmp/checkpoints/`, the folder of every run's checkpoint folder
    (`run_checkpoints`)."""
    return files.join(output, TEMP_DIR, CHECKPOINT_DIR)


def run_checkpoints(output: str, run_id: str | None) -> str | None:
    """The folder of the checkpoints of run `run_id` in its --output folder `output`
    (`<output>/.tmp/checkpoints/<run_id>/`): those a --resume of it salvages
    (`transforms.sinks.salvage_checkpoints`) and its report counts, not another run's
    there (a Dataflow template's job that lost the folder to it left its own).

    None for no run id (a manifest of a version before run ids): that run has no
    checkpoints, as the versions that wrote no run id wrote none (run ids came with
    the lock, before them); every checkpoint there is another run's."""
    if run_id is None:
        return None
    return files.join(checkpoints_root(output), run_id)


class UnreadableManifest(ValueError):
    """A manifest.json whose content is no manifest of this job: not UTF-8 JSON, or
    JSON that is no object. The message names the file, quoted as the job quotes paths
    (a newline in its name cannot cut the message's first line short)."""


class ManifestNotAFile(OSError):
    """A manifest.json that is no regular file (a FIFO, never waited on; a folder).
    The message names the file, quoted as `UnreadableManifest`'s."""


def read_manifest(output: str) -> dict[str, Any]:
    """The manifest of a run in `output` (running, or ended).

    Raises:
      FileNotFoundError: `output` holds no manifest (its `filename` is the
        manifest's path): not a run's --output folder (a run writes its manifest
        as it starts, status "running", and again as it ends).
      ManifestNotAFile: its manifest.json is no regular file (a FIFO, never waited on;
        a folder).
      UnreadableManifest: its manifest.json is no JSON object.
      OSError: it could not be read (its permissions, Cloud Storage's errors).
    """
    path = files.join(str(output), MANIFEST_FILE)
    try:  # as an input file is read: a FIFO of that name is refused, not waited on
        data = files.read_input_file(path)
    except (FileNotFoundError, NotADirectoryError):  # the latter: `output` is a file
        raise FileNotFoundError(
            errno.ENOENT,
            f"{str(output)!r} holds no {MANIFEST_FILE}: it is not the --output folder of a "
            "run of this job (a run writes one as it starts)",
            path,
        ) from None
    except OSError as e:  # a FIFO or a directory of that name: named, as what it is
        if e.filename or files.is_remote(path):  # named already; Cloud Storage's own
            raise
        raise ManifestNotAFile(f"{path!r}: {e}") from e
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError: edited, or no manifest
        raise UnreadableManifest(f"{path!r}: not JSON ({e})") from e
    if not isinstance(manifest, dict):
        raise UnreadableManifest(f"{path!r}: JSON of a {type(manifest).__name__}, not an object")
    return manifest


def unreadable_manifest_message(flag: str, folder: str, error: Exception) -> str:
    """The one-line error of a command whose `flag` folder's manifest.json is none
    (`UnreadableManifest`, `ManifestNotAFile`)."""
    return (
        f"{flag} {folder!r}: its {MANIFEST_FILE} is no manifest this job wrote ({error}); "
        "pass the --output folder of a run of this job (or rerun the audit)."
    )


def missing_run_message(flag: str, folder: str, error: FileNotFoundError) -> str:
    """The one-line error of a command given a folder that holds no run (`--input`):
    one inside a run (its results/, a file of it) names the run; a local path that
    does not exist, or is a file, says so."""
    if not str(getattr(error, "filename", "") or "").endswith(MANIFEST_FILE):
        return f"{flag} {folder!r}: {error}"
    run = enclosing_run(folder)
    if run is not None:
        return (
            f"{flag} {folder!r} is inside the run {run!r}; pass {flag} {wording.shell_word(run)}."
        )
    if not files.is_remote(folder) and not os.path.lexists(folder):
        return (
            f"{flag} {folder!r} does not exist; pass the --output folder of a run of this "
            "job (e.g. ./output/sample)."
        )
    if not files.is_remote(folder) and os.path.isfile(folder):
        return (
            f"{flag} {folder!r} is a file, not the --output folder of a run of this job; "
            "pass that folder (e.g. ./output/sample)."
        )
    return (
        f"{flag} {folder!r} holds no {MANIFEST_FILE}: it is not the --output folder of a "
        "run of this job; pass that folder (e.g. ./output/sample)."
    )


def enclosing_run(path: str) -> str | None:
    """The local run folder `path` lies in, one or two levels down (`<run>/results`,
    `<run>/results/part-0.parquet`, `<run>/manifest.json`): the folder above holding a
    manifest.json file, the working folder's full path for `results` given in it. None
    for gs:// paths and paths in no run."""
    local = os.fspath(path)
    if files.is_remote(local):
        return None
    parent = os.path.dirname(local.rstrip("/"))
    for folder in (parent, os.path.dirname(parent)):
        if not folder and not os.path.isabs(local):  # `results`: the working folder
            folder = os.getcwd()
        if folder and os.path.isfile(os.path.join(folder, MANIFEST_FILE)):
            return folder
    return None


def is_run(folder: str) -> bool:
    """Whether `folder` holds a run of this job: a readable manifest.json with its
    model and configuration, each a JSON object (other folders holding such a name
    are not runs: another tool's manifest.json may name a "model" and a "config" file)."""
    try:
        manifest = read_manifest(folder)
    except Exception:  # missing, unreadable, or not JSON
        return False
    return all(isinstance(manifest.get(key), dict) for key in ("model", "config"))


def image_shape(model: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of the images a run fed its model, from its manifest's "model":
    `image_size` (a square's side, the height of a non-square input) and `image_width`
    (a non-square input's width; null or absent, before it was recorded: a square)."""
    height = int(model["image_size"])
    return height, int(model.get("image_width") or height)


def estimate_bound(config: dict[str, Any]) -> float | None:
    """The bound a run's --tolerance set on `attribution_error`, from its manifest's
    "config": its `estimate_bound`; a run of a version before the estimate's margin
    has none, and its --tolerance bounded the estimate itself."""
    return config.get("estimate_bound", config.get("tolerance"))


def completeness_bound(config: dict[str, Any]) -> float | None:
    """The bound a run held `relative_delta` to, from its manifest's "config": its
    `completeness_tolerance`; a run of a version before that flag had --tolerance
    bound it. None without a --tolerance (no bound)."""
    if not config.get("tolerance"):
        return None
    return config.get("completeness_tolerance", config["tolerance"])


def has_one_output(manifest: dict[str, Any]) -> bool:
    """Whether a run's model has one output (a single logit or sigmoid): it scores no
    classes, every row's predicted_class is 0 at probability 1, and accuracy,
    misclassifications and per-class accuracy mean nothing. False for a manifest
    without num_outputs (a run of an older version)."""
    return (manifest.get("model") or {}).get("num_outputs") == 1


#: The manifest's "faithfulness_pixels": deletion and insertion rank and switch a
#: padded image's own pixels, not its padding (`transforms.faithfulness`).
FAITHFULNESS_PIXELS = "own"


def faithfulness_pixels(config: dict[str, Any]) -> str:
    """The pixels a run's deletion and insertion ranked, from its manifest's "config":
    a version before `FAITHFULNESS_PIXELS` ranked all, the padding too."""
    return config.get("faithfulness_pixels", "all")


#: The manifest's "faithfulness_ties": deletion and insertion order a map's equal
#: values as the row's random control orders them (`transforms.faithfulness`).
FAITHFULNESS_TIES = "control"


def faithfulness_ties(config: dict[str, Any]) -> str:
    """How a run's deletion and insertion ordered a map's equal values, from its
    manifest's "config": a version before `FAITHFULNESS_TIES` ordered them row-major."""
    return config.get("faithfulness_ties", "row_major")


def unfinished_status(manifest: dict[str, Any]) -> str | None:
    """A run's manifest status when the run has not finished ("running": still going or
    killed; "failed", "stopped": it ended without completing, `ENDED_UNFINISHED`;
    "replacing": an --overwrite deleting it), else None; a manifest written
    before runs recorded a status is of a finished run."""
    status = manifest.get("status", "complete")
    return None if status == "complete" else status


def how_it_ended(manifest: dict[str, Any]) -> str | None:
    """How a run that ended without completing ended (`ENDED_UNFINISHED`), as the readers
    of its folder say it after its status: "it failed: OSError: ..." or "it was
    interrupted" ("it was stopped by SIGTERM"); None for any other run (complete,
    running or killed, replacing)."""
    status, reason = manifest.get("status"), manifest.get("reason")
    if status not in ENDED_UNFINISHED:
        return None
    reason = str(reason).rstrip(".") if reason else None  # said inside a sentence
    if status == "failed":
        return f"it failed: {reason}" if reason else "it failed"
    return f"it was {reason}" if reason else "it was stopped"


def awaited_template(output: str, manifest: dict[str, Any]) -> str | None:
    """The Dataflow template (its --template_location) whose job the unfinished run in
    `output` waits for: a template's build leaves the folder's lock (`LOCK_FILE`) to the
    job the template starts later, naming it, under the run id its manifest has. None
    for any other run (killed, still running, replacing), or a lock that cannot be read."""
    if unfinished_status(manifest) != "running":
        return None
    try:
        held = json.loads(files.read_input_file(files.join(str(output), LOCK_FILE)))
    except (OSError, ValueError):  # no lock (a killed run), or one being replaced
        return None
    if not isinstance(held, dict) or held.get("run_id") != manifest.get("run_id"):
        return None
    template = held.get("template")
    return template if isinstance(template, str) else None


def shows_targets(config: dict[str, Any]) -> bool:
    """Whether a run's rows need their `target_name` beside the prediction to be
    told apart: its --target is not `predicted` (`top_k`, `label`)."""
    return config.get("target", "predicted") != "predicted"


def typed_flag(command: list[str], name: str) -> str | None:
    """The last value typed for --name (`--name v` or `--name=v`) in a manifest's
    "command", or None."""
    value = None
    for i, arg in enumerate(command):
        if arg == f"--{name}" and i + 1 < len(command):
            value = command[i + 1]
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def absolute_path(path: str | None, working_folder: str | None) -> str | None:
    """A local path typed relative to the run's working folder, made absolute, so that
    the command runs from any folder; remote paths, paths from the home folder (`~/x`,
    which the job expands) and manifests without a working folder as they are."""
    if not path or not working_folder or "://" in path:
        return path
    if path.startswith("~") or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(working_folder, path))


def typed_path(manifest: Mapping[str, Any], name: str) -> str | None:
    """The path a run's command gave --name (`--class_names`, `--data_dir`: files the
    manifest names by their content, or not at all), absolute; None where none was."""
    typed = typed_flag(manifest.get("command") or [], name)
    return absolute_path(typed, manifest.get("working_folder"))
