"""A run's files, local or remote, for readers: read-back, plots and the report.

Local paths go through `os` and `open`; remote URIs (`gs://...`: anything with
`://`) through Beam's `FileSystems`, imported on the first remote call. Reading a
local run back (a notebook importing `transforms.results`) so never loads Beam,
which takes seconds; remote reads behave as they do inside the pipeline.
"""

from __future__ import annotations

import array
import errno
import os
import re
import socket
import stat
import struct
import threading
import urllib.parse
import uuid
from concurrent import futures
from pathlib import Path
from typing import IO, Any

__all__ = [
    "MAX_FILE_BYTES",
    "RemoteUnreachable",
    "as_opened",
    "check_reachable",
    "connect_once",
    "create",
    "entry_kind",
    "exists",
    "first_hop",
    "is_partial_of",
    "is_remote",
    "join",
    "dangling_link_on",
    "links_into_no_folder",
    "list_folder",
    "no_answer",
    "no_delete_flag",
    "open_read",
    "open_with_beam",
    "match",
    "CredentialsRefused",
    "read_access_fix",
    "read_bounded",
    "read_input_file",
    "write_whole",
]

#: Seconds a host (or the proxy to it) may take to answer (its DNS lookup, then a
#: TCP connection) before the first gs:// call or a TFDS download: unreachable,
#: Beam's credential lookup and the storage client retry for over two minutes
#: before they fail, and TFDS's downloads for minutes.
PROBE_TIMEOUT_S = 5.0
_GCS_URL = "https://storage.googleapis.com/"
_REACHED: set[tuple[str, int, bool]] = set()
#: Largest input file read, in bytes (1 GiB): twice what the largest image decoded
#: (`images.MAX_PIXELS`, 4 channels of 16 bits) takes uncompressed. A larger file
#: is an error record before it is read, not a worker out of memory.
MAX_FILE_BYTES = 1 << 30
# Bytes per read of a file's contents (`read_bounded`).
_READ_CHUNK = 8 << 20


class RemoteUnreachable(ConnectionError):
    """The storage of a gs:// path cannot be reached (no network); the message says why."""


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` is a URI (gs://...) read through Beam's file systems."""
    return "://" in os.fspath(path)


def as_opened(path: str) -> str:
    """A local `path` naming the file or folder the system opens for it, whether it
    exists or not: `os.path.abspath` and Beam's sinks drop `link/..` as text, so
    `link/../out` (the sibling of the link's target, as `ls` and `mkdir -p` read it)
    became an `out` beside the link, missing or another one. Such a path is taken as
    its real path; any other (and a remote one) keeps its spelling, links unresolved."""
    if is_remote(path) or os.path.realpath(os.path.abspath(path)) == os.path.realpath(path):
        return path
    return os.path.realpath(path)


def _beam(path: str | None = None, use: str = "read") -> Any:
    """Beam's `FileSystems`: imported here only, and only for remote paths; with a
    `path` to `use` (read or write), once its storage is known to answer."""
    if path is not None:
        check_reachable(path, use)
    from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415 - slow; remote only

    return FileSystems


def connect_once(host: str, port: int, timeout: float) -> None:
    """Opens and closes one TCP connection; DNS and connect both bounded by `timeout`
    (the resolver has no timeout of its own, so it runs in a daemon thread left
    behind: a pool's thread is joined at exit, which then waited for the resolver).

    Raises:
      OSError or concurrent.futures.TimeoutError (empty message): no connection.
    """
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout).close()
        except OSError as e:
            outcome.append(e)
        else:
            outcome.append(None)

    thread = threading.Thread(target=attempt, name=f"connect {host}:{port}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise futures.TimeoutError()
    if outcome[0] is not None:
        raise outcome[0]


def _host_port(url: str, name: str | None = None) -> tuple[str, int] | None:
    """`url`'s host and port (the scheme's default port: 443 for https, else 80);
    None when it names no host. A bare `host:port` is read as http.

    Raises:
      ValueError: its port is no number from 0 to 65535; the message names `url`, as
        the environment variable `name` when it comes from one.
    """
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError as e:  # urllib's, which names neither the URL nor its source
        fix = f"; correct it or unset {name}" if name else ""
        raise ValueError(
            f"{f'{name} ' if name else ''}{url!r} names no valid port: {e}{fix}"
        ) from None
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def first_hop(url: str) -> tuple[str, int, bool] | None:
    """Where a client's connection for `url` goes first: (host, port, through a
    proxy). That is the proxy `requests` picks for it (the storage client's and TFDS's
    downloads' HTTP library) from the environment: `https_proxy` and the like, else
    `all_proxy`, unless `no_proxy` exempts the host (by name, `host:port` or an IPv4
    CIDR block); else the url's own host. None when it names no host.

    Raises:
      ValueError: `url`, or the proxy's, names no valid port (`_host_port`).
    """
    target = _host_port(url)
    if target is None:
        return None
    import requests.utils  # noqa: PLC0415 - its rules, read when a probe runs

    proxies = requests.utils.get_environ_proxies(url)
    proxy = requests.utils.select_proxy(url, proxies)
    if not proxy:
        return (*target, False)
    scheme = urllib.parse.urlsplit(url).scheme
    name = f"{scheme}_proxy" if proxies.get(scheme) == proxy else "all_proxy"
    hop = _host_port(proxy, name)
    return (*hop, True) if hop else (*target, False)


def no_answer(url: str, timeout: float | None = None) -> str | None:
    """Why the first hop of `url` (its host, or the proxy it goes through) did not
    answer within `timeout` seconds, as 'host:port: reason' ('proxy host:port:
    reason'), or names no valid port; None when it answered or `url` names no host.
    `timeout`: by default PROBE_TIMEOUT_S."""
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    try:
        hop = first_hop(url)
    except ValueError as e:  # not a place to connect to: the client fails too
        return str(e)
    if hop is None:
        return None
    host, port, proxied = hop
    try:
        connect_once(host, port, timeout)
    except (OSError, futures.TimeoutError) as e:
        reason = str(e) or f"no answer within {timeout:g} s"
        return f"{'proxy ' if proxied else ''}{host}:{port}: {reason}"
    return None


def _storage_url() -> str:
    """Where gs:// calls go: Google Cloud Storage, or the emulator that
    STORAGE_EMULATOR_HOST names (the storage client's own setting)."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if not emulator:
        return _GCS_URL
    return emulator if "://" in emulator else f"http://{emulator}"


def check_reachable(path: str, use: str = "read", what: str = "a gs:// run") -> None:
    """Fails in seconds where a gs:// `path`'s storage host (or the proxy its calls go
    through) does not answer, instead of after minutes of retries; once it has
    answered, it is not asked again. `what`: what `path` is, as the message names it.

    Raises:
      RemoteUnreachable: the storage host or its proxy did not answer.
    """
    if not path.startswith("gs://"):
        return
    url = _storage_url()
    try:
        hop = first_hop(url)
    except ValueError:  # then `no_answer` says why
        hop = None
    if hop in _REACHED:
        return
    reason = no_answer(url)
    if reason is not None:
        raise RemoteUnreachable(
            f"Cannot reach Google Cloud Storage ({reason}) to {use} {path!r}; "
            f"{'reading' if use == 'read' else 'writing'} {what} needs network access."
        )
    if hop is not None:
        _REACHED.add(hop)


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base` (a string or a `pathlib.Path`) and `parts` joined as the file system of
    `base` joins them."""
    base = os.fspath(base)
    if is_remote(base):
        return _beam().join(base, *parts)
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    """Whether the file or folder `path` exists."""
    if is_remote(path):
        return _beam(path).exists(path)
    return os.path.exists(path)


def open_read(path: str) -> IO[bytes]:
    """The file `path` opened for reading its bytes as stored (never decompressed).

    Raises:
      FileNotFoundError: no such file; remote, no such object or bucket (Cloud
        Storage's NotFound, its `__cause__`), as a local path says it.
      PermissionError: no permission to read it; remote, Cloud Storage's Forbidden
        or Unauthorized (its `__cause__`; the credentials in use: `read_access_fix`),
        or credentials Google refused (`CredentialsRefused`).
      OSError (local) or Beam's and the storage client's errors (remote): no network.
    """
    if not is_remote(path):
        return open(path, "rb")
    _beam(path)
    return open_with_beam(path, "uncompressed")


def open_with_beam(path: str, compression_type: str = "auto") -> IO[bytes]:
    """`path`, local or remote, opened for reading through Beam's `FileSystems`, as
    the job reads (`compression_type` Beam's: "auto" decompresses by the name's
    extension); a gs:// object's errors as `open_read` raises them. No probe of the
    storage host (`check_reachable`): a worker's read relies on Beam's retries."""
    try:
        return _beam().open(path, compression_type=compression_type)
    except Exception as e:
        said = _as_os_error(e, path) if path.startswith("gs://") else None
        if said is None:
            raise
        raise said from e


def match(patterns: list[str], limits: list[int] | None = None) -> list[Any]:
    """Beam's `FileSystems.match` of `patterns` (local or remote), whose gs:// listing
    Cloud Storage refused (Forbidden, Unauthorized, credentials refused) or found no
    bucket for raises as `open_read` does, naming the folder listed.

    Raises:
      PermissionError, FileNotFoundError: as above (Beam's BeamIOError its `__cause__`).
      BeamIOError: any other failure to list.
    """
    try:
        return _beam().match(patterns, limits)
    except Exception as e:
        path, cause = _innermost(e)
        said = _as_os_error(cause, path) if path and path.startswith("gs://") else None
        if said is None:
            raise
        raise said from e


def _innermost(error: Exception) -> tuple[str | None, Exception]:
    """The path and error at the bottom of Beam's BeamIOErrors (`exception_details`:
    {pattern: error}, a match's over a listing's): the first of each level."""
    path = None
    while isinstance(getattr(error, "exception_details", None), dict) and error.exception_details:
        path, error = next(iter(error.exception_details.items()))
    return path, error


class CredentialsRefused(PermissionError):
    """Google refused the credentials in use a token (a deleted or revoked key, an
    expired login): no gs:// call can succeed with them."""


def _as_os_error(error: Exception, path: str) -> OSError | None:
    """The OSError a local read of `path` raises for what the storage client's `error`
    says (it raises none): no such object, or no access to it (Google's own words, no
    request URL), or credentials Google refused (`CredentialsRefused`); None for any
    other error, which stays Google's."""
    from google.api_core import exceptions  # noqa: PLC0415 - as Beam's, remote only
    from google.auth import exceptions as auth  # noqa: PLC0415

    if isinstance(error, exceptions.NotFound):  # read as "no such file", not "cannot read"
        return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    if isinstance(error, auth.RefreshError):  # args: (Google's reason, its answer)
        reason = str(error.args[0] if error.args else error).rstrip(".")
        refused = f"the Google Cloud credentials in use were refused: {reason}"
        return CredentialsRefused(errno.EACCES, f"{os.strerror(errno.EACCES)} ({refused})", path)
    if not isinstance(error, (exceptions.Forbidden, exceptions.Unauthorized)):
        return None
    words = error.message
    request = getattr(error.response, "request", None)
    if request is not None:  # "GET http://...: <Cloud Storage's words>"
        words = words.removeprefix(f"{request.method} {request.url}: ")
    denied = f"{os.strerror(errno.EACCES)} ({words.rstrip('.')})"
    return PermissionError(errno.EACCES, denied, path)


def read_access_fix(path: str, error: BaseException | None = None) -> str:
    """What gives this process read access to `path`, which it was refused (`error`,
    when known: the end of an error line, "...; FIX, then run ... again")."""
    if not is_remote(path):
        return "make it readable to this user (its permissions, and its folders')"
    if isinstance(error, CredentialsRefused):
        return (
            "renew the Google Cloud credentials in use (`gcloud auth application-default "
            "login`, or GOOGLE_APPLICATION_CREDENTIALS naming a key Google still accepts)"
        )
    return (
        "the Google Cloud credentials in use need read access to it (roles/storage."
        "objectViewer on its bucket; `gcloud auth application-default login` or "
        "GOOGLE_APPLICATION_CREDENTIALS for others)"
    )


def entry_kind(mode: int) -> str:
    """What a file of `os.stat` mode `mode` that is no regular file is, in words."""
    kinds = {
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISDIR: "a directory",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def read_input_file(path: str) -> bytes:
    """An input file's bytes (an image's, as the job and the read-back read them).

    Raises:
      OSError: `path` is not a regular file (a FIFO is refused, not waited on; a device
        not read), or holds more than MAX_FILE_BYTES (a local file's size is checked
        before any read); a read failed. MemoryError: no memory for the file.
    """
    if is_remote(path):
        with open_read(path) as f:
            return read_bounded(f)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:  # before fdopen, which refuses a folder naming the descriptor ("Is a directory: 3")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{entry_kind(info.st_mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        if info.st_size > MAX_FILE_BYTES:
            raise _too_large(str(info.st_size))
        try:
            return read_bounded(f)
        except MemoryError as e:
            raise MemoryError(f"out of memory for its {info.st_size >> 20} MiB") from e


def _too_large(size: str) -> OSError:
    return OSError(
        f"file of {size} bytes, more than any image the job decodes "
        f"({MAX_FILE_BYTES >> 20} MiB, transforms.files.MAX_FILE_BYTES)"
    )


def read_bounded(f: IO[bytes]) -> bytes:
    """At most MAX_FILE_BYTES of an open file; OSError when there is more (its
    size is then unknown: the read stopped one byte past the limit). Read in
    chunks: one read of MAX_FILE_BYTES + 1 takes a buffer of that size whatever
    the file's, which a limit on the address space (`ulimit -v`) refused."""
    chunks, size = [], 0
    while size <= MAX_FILE_BYTES:
        chunk = f.read(min(_READ_CHUNK, MAX_FILE_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_FILE_BYTES:
        raise _too_large(f"more than {MAX_FILE_BYTES}")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def create(path: str, mime_type: str = "application/octet-stream") -> IO[bytes]:
    """The file `path` opened for writing bytes, its local parent folders made.

    `mime_type` is the remote object's content type (ignored locally).
    """
    if is_remote(path):
        return _beam(path, "write").create(path, mime_type=mime_type)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    return open(path, "wb")


def write_whole(path: str, data: bytes, mime_type: str = "application/octet-stream") -> None:
    """Writes `data` as the file `path`, whole or not at all, its local parent folders made.

    A local file (a symbolic link's target) is written under a hidden name beside it,
    then renamed over it: a write that fails midway (a full disk or quota) or is
    stopped (Ctrl-C, SIGTERM) leaves the earlier file as it was, and no partial one. A remote object is
    uploaded in one call (`mime_type` its content type).
    """
    if is_remote(path):
        with create(path, mime_type=mime_type) as f:
            f.write(data)
        return
    folder, name = os.path.split(os.path.realpath(path))  # a link's file, not the link
    partial = os.path.join(folder, f".{name}.{uuid.uuid4().hex}{_PARTIAL}")
    try:
        with create(partial) as f:
            f.write(data)
        os.replace(partial, os.path.join(folder, name))
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


def dangling_link_on(path: str) -> str | None:
    """The first of a local `path` and the folders above it that is a symbolic link
    whose target does not exist (an unmounted disk, a moved folder, a loop): no folder
    can be made through it. None when there is none, or for a remote path."""
    if is_remote(path):
        return None
    for folder in (path, *map(str, Path(path).parents)):
        if os.path.islink(folder) and not os.path.exists(folder):
            return folder
    return None


def links_into_no_folder(path: str) -> bool:
    """Whether a local `path` is a symbolic link to a file in a folder that does not
    exist (a moved folder, an unmounted disk): `write_whole`, which writes a link's
    file, would make that folder at the link's target. A link to a file yet to be made
    in a folder is written, as the file of any link is."""
    if is_remote(path) or not os.path.islink(path) or os.path.exists(path):
        return False
    return not os.path.isdir(os.path.dirname(os.path.realpath(path)))


# Linux's inode flags that forbid deleting a file (or, on a folder, deleting anything in
# it), whoever asks, root too (linux/fs.h: FS_IMMUTABLE_FL, FS_APPEND_FL), with the
# command that clears each; read with FS_IOC_GETFLAGS, _IOR('f', 1, long).
_LINUX_NO_DELETE = {0x10: ("immutable", "chattr -i"), 0x20: ("append-only", "chattr -a")}
_FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1
# BSD's and macOS's, in `os.stat`'s st_flags: the user's, then the system's.
_BSD_NO_DELETE = {
    "UF_IMMUTABLE": ("immutable", "chflags nouchg"),
    "UF_APPEND": ("append-only", "chflags nouappnd"),
    "SF_IMMUTABLE": ("immutable", "chflags noschg"),
    "SF_APPEND": ("append-only", "chflags nosappnd"),
}


def no_delete_flag(path: str) -> tuple[str, str] | None:
    """The flag of a local file or folder `path` that forbids deleting it (or, a folder,
    anything in it) whatever the permissions, root's too: ("immutable", "chattr -i"),
    ("append-only", "chattr -a"), the flag and the command that clears it; None where
    it has none, or where its flags cannot be read (no such file, one this user may not
    open, a file system without them, a symbolic link: not followed)."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if hasattr(info, "st_flags"):  # BSD, macOS
        flags = ((getattr(stat, n, 0), said) for n, said in _BSD_NO_DELETE.items())
        return next((said for bit, said in flags if info.st_flags & bit), None)
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return None
    try:
        import fcntl  # noqa: PLC0415 - POSIX only

        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (ImportError, OSError):
        return None
    try:
        held = array.array("i", [0])
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, held, True)
    except OSError:  # a file system without them (ENOTTY, EOPNOTSUPP)
        return None
    finally:
        os.close(fd)
    return next((said for bit, said in _LINUX_NO_DELETE.items() if held[0] & bit), None)


_PARTIAL = ".partial"


def is_partial_of(name: str, of: str) -> bool:
    """Whether `name` is the hidden file `write_whole` writes the file `of` under
    (`.<of>.<hex>.partial`), which a write that was killed leaves beside it."""
    return (
        re.fullmatch(rf"\.{re.escape(of)}\.[0-9a-f]{{32}}{re.escape(_PARTIAL)}", name) is not None
    )


def list_folder(folder: str, suffix: str) -> list[str]:
    """The paths of the files directly in `folder` whose names end in `suffix`, sorted.

    A local folder that does not exist (or is a file) holds none: [], as Beam
    lists it. Names are matched literally, so a folder named `runs [2024]` works.

    Raises:
      OSError (local, e.g. no permission) or Beam's BeamIOError (remote): the
        folder cannot be listed; remote, PermissionError as `match` raises it.
    """
    if is_remote(folder):
        pattern = _beam(folder).join(folder, "*" + suffix)
        return sorted(m.path for m in match([pattern])[0].metadata_list)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        os.path.join(folder, e.name) for e in entries if e.name.endswith(suffix) and e.is_file()
    )
