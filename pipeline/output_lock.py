"""One live run per output folder: a lock file `<output>/.lock`.

Two runs writing one folder mix or delete each other's files: a `--resume`
started beside a live run wrote every row twice, an `--overwrite` deleted the
live run's results. A run holds the folder from its launch to its end with a
lock file naming it (run id, host, pid, start time); another run refuses to
start while it is there. A lock left by a run that died (same host, and its
pid no longer running, or running another process than the one that wrote
it: the pid was reused) is stale and taken over; on another host the pid
cannot be checked, and the message says how to remove the lock by hand. A
launcher that stops waiting for a job that runs on without it (a Dataflow job, or
one on a job service apart from the launcher, with --no_wait_until_finish or a
Ctrl-C: `pipeline.runner.job_outlives_launcher`) hands the lock over to the job: it
holds the folder until the folder's manifest says that run completed; so does the
build of a Dataflow template, for the job the template starts later.

Local folders get an atomic lock (`os.link` fails if the lock exists), and a
stale lock is taken over under an exclusive `flock` of the folder, checked
again there: two launchers that both found it stale cannot both take it. On
gs:// the check and the write are two calls, so two launches in the same
second may both pass: the lock there guards against the common mistake, not
a race.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import json
import logging
import os
import re
import socket
import uuid

from apache_beam.io.filesystems import FileSystems

from transforms import files
from transforms.manifest import LOCK_FILE, read_manifest

__all__ = ["LOCK_NAME", "OutputInUseError", "RunLock", "acquire", "check_free", "pid_running"]

_LOG = logging.getLogger(__name__)
LOCK_NAME = LOCK_FILE  # one name: the report and the read-back read it too


class OutputInUseError(ValueError):
    """Another live run holds the output folder (a configuration error: exit 2)."""


@dataclasses.dataclass(frozen=True)
class RunLock:
    """Who holds an output folder."""

    path: str
    run_id: str
    host: str
    pid: int
    start_time: str
    # Set when the launcher stopped waiting for a remote job that runs on: the
    # job holds the folder until its manifest says the run completed.
    job_id: str | None = None
    # The pid's process exactly (`_process_identity`): its boot and start tick.
    process: str | None = None
    # Set when a Dataflow template (this --template_location) was built: its job,
    # started later, holds the folder until its manifest says the run completed.
    template: str | None = None

    @property
    def handed_over(self) -> bool:
        """Held for a job that runs on without its launcher (a Dataflow job, a job
        service's, a template's), not this process."""
        return self.job_id is not None or self.template is not None

    def payload(self) -> bytes:
        fields = dataclasses.asdict(self)
        del fields["path"]
        if fields["template"] is None:  # as before templates kept the folder
            del fields["template"]
        return json.dumps(fields, sort_keys=True).encode("utf-8")

    def held_here(self) -> bool:
        """Whether the folder's lock is still this run's (never another run's) and held
        by this process: not handed over to a job that runs on without it (`hand_over`)."""
        try:
            held = _read(self.path)
        except Exception:  # gone, or unreadable: not held here
            return False
        return held is not None and held.run_id == self.run_id and not held.handed_over

    def release(self) -> None:
        """Deletes the lock if this process holds it (`held_here`)."""
        if self.held_here():
            FileSystems.delete([self.path])

    def hand_over(self, job_id: str | None, template: str | None = None) -> RunLock:
        """Keeps the folder for a remote job this launcher no longer waits for.

        The lock no longer depends on this process: it stays live until the
        folder's manifest.json says this run completed (the job writes it last),
        and `release` leaves it. A job that fails or is cancelled leaves it:
        the message of the next run says which file to delete. With `template`, the
        job is the one a Dataflow template built at that location starts later
        (`job_id` None: it has none yet).
        """
        try:
            held = _read(self.path)
        except Exception:  # gone: nothing to hand over
            return self
        if held is None or held.run_id != self.run_id:
            return self  # another run's lock now: never overwritten
        if template is not None:
            kept = dataclasses.replace(self, template=template)
        else:
            kept = dataclasses.replace(self, job_id=job_id or "unknown")
        if not files.is_remote(self.path):
            temp = f"{self.path}.{self.run_id}"
            with open(temp, "wb") as f:
                f.write(kept.payload())
            os.replace(temp, self.path)  # atomic: a reader sees one lock or the other
        else:
            with FileSystems.create(self.path) as f:
                f.write(kept.payload())
        return kept


def pid_running(pid: int) -> bool:
    """Whether process `pid` runs on this host (a zombie, killed but unreaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc (macOS): os.kill's answer stands
    return state not in (b"Z", b"X")


def _process_identity(pid: int) -> str | None:
    """Which process `pid` is, exactly: the kernel's boot id and the process's start
    tick since boot (no wall clock, so no clock step can change it); None where
    /proc does not say (macOS: the pid check alone)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
        with open(f"/proc/{pid}/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    return f"{boot}:{ticks}"


def _job_completed(held: RunLock) -> bool:
    """Whether the remote job `held` was handed to wrote its run's final manifest."""
    try:
        written = read_manifest(held.path.rsplit("/", 1)[0])
    except Exception:  # no manifest (yet), or unreadable: the job may still run
        return False
    return written.get("run_id") == held.run_id and written.get("status") == "complete"


def _holder_is_gone(held: RunLock) -> bool:
    """Whether the run that wrote `held` no longer runs: a remote job's completed;
    a launcher's process on this host ended (or its pid now runs another)."""
    if held.handed_over:
        return _job_completed(held)
    if held.host != socket.gethostname():
        return False  # its pid cannot be checked from here
    if not pid_running(held.pid):
        return True
    # The pid runs, but perhaps another process (a restarted container reuses pids).
    now = _process_identity(held.pid)
    return held.process is not None and now is not None and now != held.process


def _read(path: str) -> RunLock | None:
    """The lock at `path`, or None when it exists but cannot be parsed."""
    with files.open_with_beam(path, "uncompressed") as f:
        raw = f.read()
    try:
        fields = json.loads(raw.decode("utf-8"))
        return RunLock(path=path, **fields)
    except (ValueError, TypeError):
        return None


def _create(lock: RunLock) -> bool:
    """Writes the lock unless one exists; True when written."""
    if files.is_remote(lock.path):
        if FileSystems.exists(lock.path):
            return False
        with FileSystems.create(lock.path) as f:
            f.write(lock.payload())
        return True
    # Write the content first, then link it into place: the link is atomic and
    # fails when a lock exists, and a reader never sees a half-written lock.
    temp = f"{lock.path}.{lock.run_id}"
    with open(temp, "wb") as f:
        f.write(lock.payload())
    try:
        os.link(temp, lock.path)
    except FileExistsError:
        return False
    finally:
        os.unlink(temp)
    return True


def _drop_dead_temps(lock: RunLock) -> None:
    """Deletes the temp files `<output>/.lock.<run id>` (`_create`, `hand_over`) that a
    launcher killed between writing and removing one left behind: those whose writer
    is gone. Another live launcher's (racing for the lock) is its own to remove; an
    unreadable one may be one being written, and stays. Called holding the lock."""
    if files.is_remote(lock.path):
        return  # no temp files there
    for temp in glob.glob(glob.escape(lock.path) + ".*"):
        if temp == f"{lock.path}.{lock.run_id}" or not re.fullmatch(
            r"[0-9a-f]{12}", temp.rsplit(".", 1)[1]
        ):
            continue
        try:
            held = _read(temp)
        except OSError:  # removed meanwhile by its launcher
            continue
        if held is not None and _holder_is_gone(held):
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _in_use(output: str, held: RunLock | None, path: str) -> OutputInUseError:
    if held is not None and held.template is not None:
        return OutputInUseError(
            f"--output {output!r} is held for the job of the Dataflow template "
            f"{held.template} (run {held.run_id}, built on host {held.host} at "
            f"{held.start_time}), which has not completed; run the template, or choose "
            f"another folder (if it will not run, or its job failed or was cancelled, "
            f"delete {path})."
        )
    if held is None:
        who, dead = "another run (its lock file is unreadable)", "that run is dead"
    elif held.job_id is not None:
        who = (
            f"run {held.run_id}, job {held.job_id} (launched from host {held.host}, "
            f"started {held.start_time}), which has not completed"
        )
        dead = "that job failed or was cancelled"
    else:
        who = f"run {held.run_id} (host {held.host}, pid {held.pid}, started {held.start_time})"
        dead = "that run is dead"
    return OutputInUseError(
        f"--output {output!r} is in use by {who}; wait for it to end or choose another "
        f"folder (if {dead}, delete {path})."
    )


def _live_holder(path: str) -> tuple[bool, RunLock | None]:
    """(held, holder): whether a live run holds the lock at `path`; held is False when
    the lock is absent or stale (a dead pid on this host).

    Raises:
      PermissionError: a gs:// lock the credentials in use may not read (Cloud
        Storage's 403 or 401, `files.open_with_beam`), or credentials Google refused
        (`files.CredentialsRefused`): not "no lock", since the run could not take it.
    """
    try:
        held = _read(path)
    except PermissionError:
        if files.is_remote(path):
            raise
        return False, None
    except Exception:  # no lock (or deleted meanwhile)
        return False, None
    if held is not None and _holder_is_gone(held):
        return False, held
    return True, held


def _why_stale(held: RunLock) -> str:
    if held.template is not None:
        return f"the job of the template {held.template} completed"
    if held.job_id is not None:
        return f"its job {held.job_id} completed"
    return f"pid {held.pid} on {held.host} is no longer that run"


@contextlib.contextmanager
def _takeover_mutex(output: str):
    """Serializes stale-lock takeovers of a local folder (an exclusive flock of it,
    released by the kernel if this process dies); on gs:// nothing to hold."""
    try:
        import fcntl  # noqa: PLC0415  (POSIX)
    except ImportError:
        fcntl = None
    if files.is_remote(output) or fcntl is None:
        yield
        return
    fd = os.open(output, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # NFS emulates flock with write locks; some mounts lack it
            _LOG.warning(
                "Cannot flock %s (%s): taking over its stale lock unserialized.", output, e
            )
        yield
    finally:
        os.close(fd)  # releases the flock


def check_free(output: str) -> None:
    """Refuses early (before the model is loaded) when a live run holds `output`.

    Only a check: `acquire` takes the lock later, atomically.

    Raises:
      OutputInUseError: a live run (or one on another host) holds the folder.
      PermissionError: a gs:// lock the credentials may not read (`_live_holder`).
    """
    path = FileSystems.join(output, LOCK_NAME)
    held, holder = _live_holder(path)
    if held:
        raise _in_use(output, holder, path)


def acquire(output: str) -> RunLock:
    """Takes `<output>/.lock` for this run, taking over a stale lock of a dead run.

    Raises:
      OutputInUseError: a live run (or one on another host) holds the folder.
    """
    lock = RunLock(
        path=FileSystems.join(output, LOCK_NAME),
        run_id=uuid.uuid4().hex[:12],
        host=socket.gethostname(),
        pid=os.getpid(),
        start_time=datetime.datetime.now(datetime.UTC).isoformat(),
        process=_process_identity(os.getpid()),
    )
    for _ in range(3):  # a stale lock is removed, then the create is tried again
        if _create(lock):
            _drop_dead_temps(lock)
            return lock
        live, held = _live_holder(lock.path)
        if live:
            raise _in_use(output, held, lock.path)
        if held is None:
            continue  # deleted meanwhile: try again
        with _takeover_mutex(output):
            # Checked again under the mutex: another launcher may have taken it over.
            live, again = _live_holder(lock.path)
            if live or again is None or again.run_id != held.run_id:
                continue  # the next round refuses a live lock or creates ours
            level = logging.INFO if held.handed_over else logging.WARNING
            _LOG.log(level, "Taking over the lock of run %s: %s.", held.run_id, _why_stale(held))
            FileSystems.delete([lock.path])
            if _create(lock):
                _drop_dead_temps(lock)
                return lock
    raise _in_use(output, None, lock.path)
