"""The --output folder of a run, apart from its lock (`pipeline.output_lock`).

Checked at launch, before the model loads: --output's flags, whether it can be
written (a local folder: made and removed in its nearest existing folder), that
it lies inside no other run, that its `.tmp`, `results` and `errors` are no
files and, as folders, can be written in, and what it holds: an earlier run of
this job (its files by name, `_RUN_FOLDERS`), which only --overwrite replaces and
--resume continues, and never files this job did not write (`check_own_files`).
Readied under the lock (`prepare_output`): an earlier run's files deleted for
--overwrite, its manifest marked "replacing" first; a killed run's partial files
in `.tmp/` cleared, and those a killed write left beside them (`clear_temp`).
Tidied after a finished run (`tidy_finished`): its checkpoints, empty temp
folders, a resume's empty results files and the schema file go.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shlex
import tempfile
from pathlib import Path
from typing import Any

from apache_beam.io.filesystems import FileSystems

from pipeline import output_lock
from pipeline.job import AuditJob
from pipeline.options import AuditOptions, ConfigError
from pipeline.runner import check_credentials
from transforms.datasource import REMOTE_FOLDER_SCHEMES
from transforms.files import (
    as_opened,
    check_reachable,
    dangling_link_on,
    is_partial_of,
    match,
    no_delete_flag,
    read_access_fix,
)
from transforms.manifest import (
    ERRORS_DIR,
    MANIFEST_FILE,
    REPORT_FILE,
    RESULTS_DIR,
    SANITY_DIR,
    SANITY_FIGURE,
    SANITY_JSON,
    SHARD_PREFIX,
    is_run,
)
from transforms.sinks import (
    BEAM_TEMP,
    SCHEMA_FILE,
    TEMP_DIR,
    checkpoint_folder,
    is_partial_file,
    json_temp,
    read_manifest,
    results_files,
    write_json,
)

__all__ = [
    "check_a_run_to_resume",
    "check_files_to_resume",
    "check_output_flags",
    "check_output_free",
    "check_own_files",
    "clear_temp",
    "delete_matching",
    "drop_empty_run_folders",
    "earlier_run",
    "files_only",
    "local_output",
    "make_folder",
    "matched_files",
    "no_earlier_run",
    "prepare_output",
    "tidy_finished",
]

_LOG = logging.getLogger(__name__)


def local_output(output: str) -> str:
    """--output as the absolute path a folder listing compares with, naming the folder
    the system opens for it (`as_opened`: a `link/..` in it); gs:// unchanged."""
    return (
        output if output.startswith(REMOTE_FOLDER_SCHEMES) else os.path.abspath(as_opened(output))
    )


# The folders of a run in its --output, which --overwrite deletes with it: its rows,
# its errors, and the check `python -m pipeline.sanity` writes there (it describes
# the run). `earlier_run` lists them; nothing else may lie inside them.
_RUN_FOLDERS = (RESULTS_DIR, ERRORS_DIR, SANITY_DIR)


def earlier_run(output: str) -> list[str]:
    """Files of an earlier run in `output`, by file: on gs:// a folder is only a prefix.

    Raises:
      ConfigError: Cloud Storage refused the listing (`files.match`'s PermissionError):
        read as no run, a run there was written beside or, with --overwrite, kept.
    """
    patterns = [FileSystems.join(output, folder, "**") for folder in _RUN_FOLDERS]
    # And its manifest, and the page `python -m pipeline.report` writes there.
    patterns += [FileSystems.join(output, name) for name in (MANIFEST_FILE, REPORT_FILE)]
    try:
        return _matching(patterns)
    except PermissionError as e:
        raise ConfigError(
            f"--output {output!r} cannot be listed ({e}); {read_access_fix(output, e)}, "
            "then run the same command again."
        ) from e
    except Exception:  # unlistable locally: the writability probe below says why
        return []


def _matching(patterns: list[str]) -> list[str]:
    """The paths Beam's file systems match for `patterns` (local or gs://), in order;
    a gs:// listing Cloud Storage refused raises PermissionError (`files.match`)."""
    matches = match(patterns)
    return [meta.path for match in matches for meta in match.metadata_list]


def matched_files(patterns: list[str]) -> list[str]:
    """The files Beam's file systems match for `patterns`, to delete: never a local
    folder (`files_only`)."""
    return files_only(_matching(patterns))


def files_only(paths: list[str]) -> list[str]:
    """`paths` bar local folders: a name such as `report.html` matches a folder of that
    name too, which Beam's delete removes with everything in it (a user's files)."""
    return [p for p in paths if p.startswith(REMOTE_FOLDER_SCHEMES) or not os.path.isdir(p)]


def _temp_files(output: str) -> list[str]:
    """Partial files a killed run left in `<output>/.tmp/`: Beam's `beam-temp-*`
    folders, the checkpoints and the job's own `<uuid>.partial` files, only these
    (other files there are not ours)."""
    temp = FileSystems.join(output, TEMP_DIR)
    patterns = [
        FileSystems.join(temp, f"{BEAM_TEMP}*", "**"),
        FileSystems.join(checkpoint_folder(output), "**"),
        FileSystems.join(temp, "*.partial"),
    ]
    try:
        paths = _matching(patterns)
    except Exception:  # no temp folder
        return []
    return [
        p for p in paths if not p.endswith(".partial") or is_partial_file(FileSystems.split(p)[1])
    ]


def _drop_empty_temp(output: str) -> None:
    """Removes the empty folders a finished run leaves in a local `<output>/.tmp/`
    (its own, and those of an earlier run's deleted partial files), then the
    folder itself if empty. Object stores such as gs:// have no folders."""
    temp = os.path.join(output, TEMP_DIR)
    for folder, _, _ in os.walk(temp, topdown=False):  # inner folders first
        try:
            os.rmdir(folder)
        except OSError:  # not empty, or gone
            pass


def tidy_finished(job: AuditJob) -> dict[str, Any] | None:
    """After a finished run: its checkpoints go (its rows are in results/), then
    the empty temp folders, a resume's empty results files and the schema file
    (`_drop_schema_file`). Returns the run's manifest; None for a job that wrote
    nothing (a Dataflow --dry_run)."""
    if job.lock is None:
        return None
    manifest = read_manifest(job.output)
    _drop_checkpoints(job.output, job.lock.run_id)
    _drop_empty_temp(job.output)
    _drop_empty_resume(job, manifest)
    _drop_schema_file(job.output)
    return manifest


def _drop_checkpoints(output: str, run_id: str) -> None:
    """Deletes a finished run's checkpoint files: its rows are in results/ now."""
    delete_matching(FileSystems.join(checkpoint_folder(output, run_id), "*"))


def _drop_empty_resume(job: AuditJob, manifest: dict[str, Any]) -> None:
    """Deletes the results files of a resumed run that wrote no row: empty Parquet
    files beside the earlier runs' files, which give the schema (kept where they
    are the only ones: an earlier run killed before it wrote any)."""
    if job.results_prefix == SHARD_PREFIX or manifest["counts"]["rows"]:  # not a resume, or rows
        return
    files = _results_files(job.output)
    own = [path for name, path in files.items() if name.startswith(f"{job.results_prefix}-")]
    if own and len(own) < len(files):
        FileSystems.delete(own)


def _drop_schema_file(output: str) -> None:
    """Deletes the zero-row `SCHEMA_FILE` of a finished run whose results/ holds
    other files: they give the schema now. Kept when it is the only one."""
    files = _results_files(output)
    if SCHEMA_FILE in files and len(files) > 1:
        FileSystems.delete([files[SCHEMA_FILE]])


def _results_files(output: str) -> dict[str, str]:
    """The Parquet files in `output`'s results/ (local or gs://), by name."""
    return {FileSystems.split(path)[1]: path for path in results_files(output)}


def delete_matching(pattern: str) -> None:
    """Deletes the files `pattern` matches (local or gs://), if any."""
    files = _matching([pattern])
    if files:
        FileSystems.delete(files)


# The file `prepare_output` writes and deletes in --output to see that it can write there.
_WRITE_PROBE = ".write_probe"


def _is_partial_beside(name: str) -> bool:
    """Whether `name`, a file in --output itself, is one a write cut short left there:
    the manifest's temp file (`json_temp`), the report page's hidden partial ones
    (`is_partial_of`), the write probe. Other files there are not ours."""
    temp_names = (json_temp(MANIFEST_FILE), _WRITE_PROBE)
    return name in temp_names or is_partial_of(name, REPORT_FILE)


def _partial_files_beside(output: str) -> list[str]:
    """The files a killed write left in `output` itself, beside the run's folders (a
    report killed as it wrote its page left the whole page there, hidden, for good)."""
    patterns = [FileSystems.join(output, pattern) for pattern in (".*", "*.tmp")]
    try:
        paths = files_only(_matching(patterns))
    except Exception:  # unlistable: the writability probe says why
        return []
    return [p for p in paths if _is_partial_beside(FileSystems.split(p)[1])]


def clear_temp(output: str) -> None:
    """Deletes the partial files a dead run, or a report or manifest write cut short,
    left in `output` (`_temp_files`, `_partial_files_beside`); called with the
    folder's lock held."""
    leftovers = _temp_files(output) + _partial_files_beside(output)
    if leftovers:
        _LOG.info("Deleting %d partial files an earlier run left in %s.", len(leftovers), output)
        FileSystems.delete(leftovers)


def make_folder(output: str) -> None:
    try:
        FileSystems.mkdirs(output)
    except OSError:
        pass  # exists already


def _mark_replacing(output: str) -> None:
    """Before --overwrite deletes an earlier run file by file: its manifest says
    "replacing", no longer "complete". A kill or Ctrl-C midway left a complete
    manifest over part of its rows (a report showed them as the whole run); the
    manifest keeps its model and config, so a new --overwrite still replaces it."""
    try:
        manifest = read_manifest(output)
    except Exception:  # no manifest (report.html or sanity/ alone): nothing claims complete
        return
    if isinstance(manifest, dict) and manifest.get("status") != "replacing":
        write_json(FileSystems.join(output, MANIFEST_FILE), {**manifest, "status": "replacing"})


def drop_empty_run_folders(output: str) -> None:
    """Removes the run folders of a local `output` that deleting an earlier run's
    files left empty: an empty `sanity/` would look like a check of the new run.
    Object stores such as gs:// have no folders."""
    if output.startswith(REMOTE_FOLDER_SCHEMES):
        return
    for name in _RUN_FOLDERS:
        try:
            os.rmdir(os.path.join(output, name))
        except OSError:  # not empty, or gone
            pass


def _delete_run(output: str, existing: list[str]) -> None:
    """Deletes an earlier run's files (`earlier_run`; never a folder, `files_only`), its
    manifest last, alone: stopped midway, the folder still holds the manifest
    `_mark_replacing` wrote, a run the next --overwrite replaces (a report.html left
    without it was refused as no run's)."""
    manifest, files = FileSystems.join(output, MANIFEST_FILE), files_only(existing)
    rest = [path for path in files if path != manifest]
    if rest:
        FileSystems.delete(rest)
    if len(rest) < len(files):
        FileSystems.delete([manifest])


def prepare_output(output: str, overwrite: bool) -> None:
    """Refuses to mix two runs: an earlier run's output is kept unless --overwrite."""
    existing = earlier_run(output)
    if existing and not overwrite:
        raise holds_a_run(output, "written by another launch after this one's checks")
    if existing:
        check_own_files(output, existing, "--overwrite")  # again, under the lock
        _mark_replacing(output)
        _delete_run(output, existing)
        drop_empty_run_folders(output)
    clear_temp(output)
    probe = FileSystems.join(output, _WRITE_PROBE)
    try:
        with FileSystems.create(probe) as f:
            f.write(b"ok")
        FileSystems.delete([probe])
    except Exception as e:
        raise ConfigError(
            f"--output {output!r} is not writable: {e}; choose a folder you can write to."
        ) from e


def _check_not_inside_a_run(output: str) -> None:
    """A local --output inside another run's results/ or errors/ would put its files
    among that run's Parquet files (`pd.read_parquet` of them then fails); inside its
    sanity/ or .tmp/, the next --overwrite or --resume of that run deletes it."""
    if output.startswith(REMOTE_FOLDER_SCHEMES):
        return
    path = Path(output).resolve()  # through symbolic links
    for folder in (path, *path.parents):
        if folder.name in (*_RUN_FOLDERS, TEMP_DIR) and (folder.parent / MANIFEST_FILE).is_file():
            raise ConfigError(
                f"--output {output!r} lies inside {str(folder)!r}, the {folder.name} of the "
                f"run in {str(folder.parent)!r}; choose a folder outside it."
            )


# The folders a run writes in its --output, by what it keeps there.
_WRITTEN_FOLDERS = {
    TEMP_DIR: "partial files",
    RESULTS_DIR: "result rows",
    ERRORS_DIR: "error records",
}


def _check_written_folders(output: str) -> None:
    """A local --output whose `.tmp`, `results` or `errors` is no folder (a file of the
    user's), or a folder no file can be made in (read-only, immutable), fails a run
    only once Beam's sinks write there (at its very end, for results/, every image
    done), an --overwrite having deleted the earlier run by then: refused at launch.
    (On gs:// an object and a prefix of one name do not clash.)"""
    if output.startswith(REMOTE_FOLDER_SCHEMES):
        return
    for name, what in _WRITTEN_FOLDERS.items():
        path = Path(local_output(output)) / name
        if path.is_dir():
            _check_can_make_in(output, path, name, what)
        if path.is_symlink() and not path.exists():  # not a file: a link to nothing
            raise ConfigError(
                f"--output {output!r} holds a symbolic link named {name} to "
                f"{os.readlink(path)!r}, which does not exist, where the job keeps its "
                f"{what} (a folder): create it, delete the link, or choose another folder."
            )
        if os.path.lexists(path) and not path.is_dir():
            raise ConfigError(
                f"--output {output!r} holds a file named {name}, where the job keeps its "
                f"{what} (a folder): move it, or choose another folder."
            )


def _check_local_writable(output: str) -> None:
    """A local --output that cannot be made or written is refused before the model
    loads: its nearest existing folder must be a folder this user may write in.
    (The write probe under the lock stays the final word.)"""
    if output.startswith(REMOTE_FOLDER_SCHEMES):
        return
    path = Path(local_output(output))
    try:
        _check_no_dangling_link(output, path)
        existing = next(p for p in (path, *path.parents) if p.exists())
    except PermissionError as e:  # a folder on the way that this user may not enter
        raise ConfigError(
            f"--output {output!r} is not writable: a folder on its path may not be entered "
            f"({e.strerror}); choose a folder you can write to."
        ) from e
    if not existing.is_dir():
        raise ConfigError(
            f"--output {output!r} is not writable: {str(existing)!r} is a file, not a "
            "folder; choose a folder you can write to."
        )
    _probe_folder(output, existing)


def _check_no_dangling_link(output: str, path: Path) -> None:
    """A symbolic link on `path` whose target is gone (an unmounted disk) cannot be
    made into a folder: refused naming it, where the lock's write said only "No such
    file or directory" of a file in it."""
    folder = dangling_link_on(str(path))
    if folder is not None:
        raise ConfigError(
            f"--output {output!r} is not writable: {folder!r} is a symbolic link "
            f"to {os.readlink(folder)!r}, which does not exist; create it or choose "
            "another folder."
        )


def _made_and_removed_in(folder: Path) -> OSError | None:
    """Makes and removes a folder in `folder`; the error that stopped it, or None:
    permissions alone do not say it can be written (root passes every permission
    check, yet cannot write in /proc, on a read-only mount or in an immutable folder).
    An append-only folder is not probed (the probe could not be removed): files can be
    made in it, none deleted."""
    if _is_append_only(folder):
        return OSError(errno.EPERM, "append-only: files can be made in it, none deleted")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ig_audit_probe_", dir=folder))
    except OSError as e:
        return e
    return None


def _probe_folder(output: str, existing: Path) -> None:
    """Refuses --output when no folder can be made in `existing`, its nearest existing
    folder (`_made_and_removed_in`)."""
    e = _made_and_removed_in(existing)
    if e is None:
        return
    why = (
        f"no permission to write in {str(existing)!r}"
        if e.errno == errno.EACCES
        else f"no folder can be made in {str(existing)!r} ({e.strerror})"
    )
    raise ConfigError(
        f"--output {output!r} is not writable: {why}; choose a folder you can write to."
    ) from e


def _is_append_only(folder: Path) -> bool:
    flag = no_delete_flag(str(folder))
    return flag is not None and flag[0] == "append-only"


def _check_can_make_in(output: str, folder: Path, name: str, what: str) -> None:
    """Refuses --output when no file can be made in `folder`, its run folder `name`
    (`_made_and_removed_in`), where the job keeps its `what`, or none deleted (an
    append-only folder: the job deletes files there, a run its schema file and temp
    files at its end, an --overwrite or --resume the earlier run's)."""
    if _is_append_only(folder):
        raise _cannot_delete(output, "the job", str(folder), "files in ")
    e = _made_and_removed_in(folder)
    if e is not None:
        raise ConfigError(
            f"--output {output!r}: no file can be made in its {name} folder, where the job "
            f"keeps its {what} ({e.strerror}): make it writable, or choose another folder."
        ) from e


def _readying_deletes(output: str, existing: list[str], resume: bool) -> list[str]:
    """The files readying --output for a run deletes or replaces, under its lock once the
    model has loaded: of the earlier run (`existing`), all for --overwrite
    (`prepare_output`), all but its rows for --resume (its error records, retried; its
    report and sanity check; its manifest, replaced: `pipeline.resume`); and the partial
    files a killed run or write left (`clear_temp`), for any run."""
    files = files_only(existing)
    if resume:  # its rows stay
        files = [p for p in files if not _inside(output, [p])[0].startswith(f"{RESULTS_DIR}/")]
    return files + _temp_files(output) + _partial_files_beside(output)


def _check_deletable(output: str, existing: list[str], resume: bool) -> None:
    """Refuses a local --output whose readying could not delete what it deletes
    (`_readying_deletes`): a file flagged immutable or append-only, or in a folder so
    flagged (`no_delete_flag`: no one may delete it, root neither; a folder no file can
    be made in, read-only, was refused by the probes before). Asked before the model
    loads, deleting nothing: the delete failed only after the load, and left the
    earlier run "replacing" or under a "failed" manifest. The deletes under the lock
    stay the final word (a flag set since; a sticky folder, not looked at here)."""
    if output.startswith(REMOTE_FOLDER_SCHEMES):
        return
    doing = "--resume" if resume else "--overwrite" if existing else "the job"
    files = _readying_deletes(output, existing, resume)
    folders = sorted({os.path.dirname(path) for path in files})
    for path, what in [*((f, "files in ") for f in folders), *((f, "") for f in files)]:
        if no_delete_flag(path) is not None:
            raise _cannot_delete(output, doing, path, what)


def _cannot_delete(output: str, doing: str, path: str, what: str) -> ConfigError:
    """The refusal of an --output where `doing` deletes `path` (`what` ""), or files in
    it ("files in "), which its flag (`no_delete_flag`) forbids, and the command that
    clears the flag."""
    word, undo = no_delete_flag(path)
    whom = "a file in it" if what else "it"
    return ConfigError(
        f"--output {output!r}: {doing} deletes {what}{path!r}, which is {word} (no one "
        f"may delete {whom}, root neither); clear the flag ({undo} {shlex.quote(path)}), "
        "or choose another folder."
    )


def check_output_flags(audit: AuditOptions) -> None:
    """--output and its --resume / --overwrite as given: no file system is read, so a
    Dataflow --dry_run checks them too."""
    if audit.resume and audit.overwrite:
        raise ConfigError(
            "--resume continues an earlier run and --overwrite replaces it: pick one."
        )
    if any(char in audit.output for char in "*?["):
        raise ConfigError(
            f"--output {audit.output!r} holds a glob character (*, ? or [), which Beam's "
            "file sinks read as a pattern when they move their files into place; "
            "choose a folder name without them."
        )


def check_output_free(audit: AuditOptions) -> None:
    """Refuses an --output in use or holding a run before anything slow (no download,
    no model load), after the checks of the other flags (`pipeline.main`). A --resume's
    earlier run is checked next, its manifest first (`pipeline.resume`, which says when
    there is none, as `check_a_run_to_resume` said of a local one before them), then its
    files (`check_files_to_resume`)."""
    check_credentials(audit.output)
    check_reachable(audit.output, "write", "a run's --output")  # in seconds, not minutes
    _check_local_writable(audit.output)
    _check_not_inside_a_run(audit.output)
    _check_written_folders(audit.output)
    _check_free(audit.output)
    if audit.resume:
        return
    existing = earlier_run(audit.output)
    if existing:
        _check_a_run(audit.output, existing)
        if not audit.overwrite:
            raise holds_a_run(audit.output, _top_names(audit.output, existing))
        _check_dataset_kept(audit.output, audit.dataset)  # the more precise message first
        check_own_files(audit.output, existing, "--overwrite")
    _check_deletable(audit.output, existing, resume=False)


def _check_free(output: str) -> None:
    """No live run holds `output`, whatever the flags (`output_lock.check_free`): its
    lock is the first object a launch reads there, so gs:// credentials that may not
    read it (a run takes the lock, and reads its manifest, only if they may), or that
    Google refuses (a deleted or revoked key), are said here, before the model loads,
    not once the run takes its lock."""
    try:
        output_lock.check_free(output)
    except PermissionError as e:
        raise ConfigError(
            f"--output {output!r} cannot be read ({e}); {read_access_fix(output, e)}, then "
            "run the same command again."
        ) from e


def check_files_to_resume(output: str) -> None:
    """The files of the run a --resume continues in `output`, once its manifest is read
    (`pipeline.resume`): only files this job writes in its run folders
    (`check_own_files`), and, locally, none the resume's readying could not delete
    (`_check_deletable`)."""
    existing = earlier_run(output)
    check_own_files(output, existing, "--resume")
    _check_deletable(output, existing, resume=True)


def holds_a_run(output: str, why: str) -> ConfigError:
    """The refusal of an --output that holds a run, at launch or when the job claims it
    (`prepare_output`: another launch got there between the two), and its three ways out."""
    return ConfigError(
        f"--output {output!r} already holds a run ({why}). "
        "Pass --overwrite to replace it, --resume to continue it, or choose another folder."
    )


def no_earlier_run(output: str) -> ConfigError:
    """--resume's refusal of an --output that holds no run's manifest."""
    return ConfigError(
        f"--resume: no earlier run in --output {output!r} (no manifest.json, which a run "
        "writes as it starts); run without --resume to start one."
    )


def check_a_run_to_resume(audit: AuditOptions) -> None:
    """A --resume's local --output with no manifest is refused before --dataset is
    listed (minutes for a huge folder), the model loaded or the folder made (a typo'd
    --output was left behind, empty). One that cannot be looked in (a file, a folder on
    its path that may not be entered) is left to `check_output_free`, which says why, as
    is a gs:// one, which a look needs credentials and storage for: the resume's read
    of its manifest at launch refuses it (`pipeline.resume.earlier_manifest`)."""
    if not audit.resume or audit.output.startswith(REMOTE_FOLDER_SCHEMES):
        return
    try:
        os.lstat(os.path.join(audit.output, MANIFEST_FILE))
    except FileNotFoundError:
        raise no_earlier_run(audit.output) from None
    except OSError:
        return


def _inside(output: str, paths: list[str]) -> list[str]:
    """`paths` relative to `output`, with "/": `results/part-00000-of-00001.parquet`."""
    if output.startswith(REMOTE_FOLDER_SCHEMES):
        prefix = output.rstrip("/") + "/"
        return [p[len(prefix) :] for p in paths if p.startswith(prefix)]
    # Beam lists a relative folder's files relative, an absolute one's absolute
    return [os.path.relpath(p, output).replace(os.sep, "/") for p in paths]


def _top_names(output: str, paths: list[str]) -> str:
    """The entries of `output` that `paths` lie in: `results, manifest.json`."""
    return ", ".join(sorted({p.split("/")[0] for p in _inside(output, paths)}))


# Files any folder may hold that nobody minds deleting: the view settings macOS's
# Finder leaves, and the empty object a Cloud Storage console makes for a folder
# (its name is the folder's, so none here).
_CLUTTER = (".DS_Store", "")


def _is_own_file(folder: str, name: str) -> bool:
    """Whether `name`, a path in the run folder `folder`, is a file the job writes there:
    a shard (`SHARD_PREFIX-...parquet`: Beam's, a resume's, salvaged checkpoints, the
    schema file; or an older version's Beam temp folder), the sanity check's files and
    the partial ones a write cut short leaves (`is_partial_of`, `json_temp`); or clutter."""
    if name in _CLUTTER:
        return True
    if folder == SANITY_DIR:
        partial = any(is_partial_of(name, own) for own in (SANITY_FIGURE, SANITY_JSON))
        return partial or name in (SANITY_FIGURE, SANITY_JSON, json_temp(SANITY_JSON))
    shard = re.fullmatch(rf"{SHARD_PREFIX}-[^/]*\.parquet", name) is not None
    return shard or name.startswith(BEAM_TEMP)  # in results/ itself in older versions


def check_own_files(output: str, existing: list[str], flag: str) -> None:
    """--overwrite deletes a run's folders, --resume its errors/ and sanity/, and its
    rows join results/: other files there (a results/ linked to a folder of the user's)
    would be deleted or mixed with the run's, so the run is refused, naming them."""
    foreign = []
    for path in _inside(output, existing):
        folder, _, name = path.partition("/")
        if folder in _RUN_FOLDERS and not _is_own_file(folder, name):
            foreign.append(path)
    if foreign:
        raise ConfigError(
            f"--output {output!r} holds files this job did not write in its run folders: "
            f"{', '.join(sorted(foreign))}; {flag} would delete or mix them with the run's. "
            "Move them out, or choose another folder."
        )


def _check_a_run(output: str, existing: list[str]) -> None:
    """Files where a run's go (results/, errors/, report.html, sanity/) without the
    manifest of a run of this job are someone else's: --overwrite never deletes them."""
    if not is_run(output):
        raise ConfigError(
            f"--output {output!r} holds {_top_names(output, existing)} but no manifest.json "
            "of a run of this job, and --overwrite deletes only such a run. Move those "
            "files, or choose another folder."
        )


def _check_dataset_kept(output: str, dataset: str) -> None:
    """--overwrite never deletes the --dataset folder with the earlier run."""
    if dataset.startswith(REMOTE_FOLDER_SCHEMES) or output.startswith(REMOTE_FOLDER_SCHEMES):
        return
    data = Path(dataset).resolve()  # through symbolic links, as the files are
    for name in _RUN_FOLDERS:
        folder = (Path(output) / name).resolve()  # a linked results/ is deleted in its target
        if data == folder or folder in data.parents:
            raise ConfigError(
                f"--dataset {dataset!r} lies inside {str(folder)!r}, which --overwrite "
                "would delete with the earlier run; move the images, or choose another "
                "--output."
            )
