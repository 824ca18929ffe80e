"""Read a legacy (non-zip) PyTorch state-dict checkpoint into NumPy, without torch.

The legacy format, written by ``torch.save(..., _use_new_zipfile_serialization=False)``
and by every PyTorch before 1.6, is a concatenation of:

1. a pickle of the magic number ``0x1950A86A20F9469CFC6C``;
2. a pickle of the protocol version (``1001``);
3. a pickle of system info (``{"little_endian": True, "type_sizes": {...}, ...}``);
4. the main pickle: the state dict, whose tensors are rebuilt by
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and whose
   storages are persistent ids ``("storage", StorageType, key, location, numel[, view])``;
5. a pickle of the list of storage keys, in the order their data follows;
6. for each key: an 8-byte little-endian int64 element count, then the raw data.

Pickle can run arbitrary code, so every pickle here goes through an unpickler whose
``find_class`` accepts only the handful of globals a state dict needs and refuses
everything else with :class:`pickle.UnpicklingError`.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

__all__ = ["read_torch_legacy_state_dict"]

_log = logging.getLogger(__name__)

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_SIGNATURE = b"PK\x03\x04"

# torch.<Name>Storage -> NumPy dtype of its elements (always little-endian on disk).
# BFloat16Storage is absent on purpose: NumPy has no bfloat16, so it is refused.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for the class ``torch.<name>``; only its element dtype matters."""

    name: str
    dtype: np.dtype


@dataclass
class _Storage:
    """A flat typed buffer; ``data`` is filled in once the raw bytes are read."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass
class _StorageView:
    """A slice of another storage (legacy ``view_metadata``), resolved lazily."""

    root: _Storage
    offset: int
    numel: int

    @property
    def dtype(self) -> np.dtype:
        return self.root.dtype


@dataclass
class _LazyTensor:
    """What ``_rebuild_tensor_v2`` returns: a recipe, as storage data comes later."""

    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    extra: tuple[Any, ...] = field(default=())


class _RefusedGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside the whitelist (kept distinct so it is
    never mistaken for a truncated-file error below)."""


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    """A tensor's size or stride; anything but a tuple of ints is a malformed file."""
    if not isinstance(value, (tuple, list)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise pickle.UnpicklingError(f"tensor {what} {value!r} is not a tuple of integers")
    return tuple(value)


def _rebuild_tensor_v2(
    storage: _Storage | _StorageView,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *extra: Any,
) -> _LazyTensor:
    # extra = (requires_grad, backward_hooks[, metadata]): irrelevant for inference.
    if not isinstance(storage, (_Storage, _StorageView)):
        raise pickle.UnpicklingError(f"tensor storage is a {type(storage).__name__}")
    if not isinstance(storage_offset, int):
        raise pickle.UnpicklingError(f"tensor offset {storage_offset!r} is not an integer")
    return _LazyTensor(
        storage, storage_offset, _int_tuple(size, "size"), _int_tuple(stride, "stride"), extra
    )


def _rebuild_tensor(
    storage: _Storage | _StorageView,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
) -> _LazyTensor:
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data: _LazyTensor, requires_grad: bool, backward_hooks: Any) -> _LazyTensor:
    # An nn.Parameter saved directly (state_dict(keep_vars=True)) is just its data.
    return data


_ALLOWED_FUNCTIONS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only whitelisted globals and torch storage ids."""

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage] | None = None) -> None:
        super().__init__(file)
        # None: this pickle must not reference storages at all (header pickles).
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED_FUNCTIONS.get((module, name))
        if found is not None:
            return found
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise _RefusedGlobalError(
            f"refusing to load global '{module}.{name}': only a PyTorch state dict of "
            f"plain tensors can be read, and '{module}.{name}' is not on the whitelist "
            "(it could execute code)"
        )

    def persistent_load(self, pid: Any) -> _Storage | _StorageView:
        if self._storages is None:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r} in a header pickle")
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise pickle.UnpicklingError(
                f"unsupported persistent id {pid!r}: only tensor storages are supported"
            )
        _, storage_type, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"persistent id names no storage type: {pid!r}")
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"bad storage element count in {pid!r}")
        key = str(key)
        storage = self._storages.get(key)
        if storage is None:
            storage = _Storage(key, storage_type.dtype, numel)
            self._storages[key] = storage
        elif storage.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f"storage {key!r} is used with two dtypes")
        return storage if view is None else _storage_view(storage, view, numel, pid)


def _storage_view(storage: _Storage, view: Any, numel: int, pid: Any) -> _StorageView:
    """A checked view (key, offset, size) into `storage`, which holds `numel` elements."""
    if not isinstance(view, tuple) or len(view) != 3:
        raise pickle.UnpicklingError(f"bad storage view {view!r} in {pid!r}")
    view_key, view_offset, view_size = view
    if not isinstance(view_offset, int) or not isinstance(view_size, int):
        raise pickle.UnpicklingError(f"bad storage view {view!r} in {pid!r}")
    if view_offset < 0 or view_size < 0 or view_offset + view_size > numel:
        raise pickle.UnpicklingError(
            f"storage view {view_key!r} lies outside storage {storage.key!r}"
        )
    return _StorageView(storage, int(view_offset), int(view_size))


def _materialize(tensor: _LazyTensor, name: str) -> np.ndarray:
    """Copy a strided view of a storage into a fresh, contiguous array.

    Bounds are checked here because ``as_strided`` would otherwise read arbitrary
    memory for a malformed (or malicious) size/stride.
    """
    source = tensor.storage
    if isinstance(source, _StorageView):
        root_data = source.root.data
        if root_data is None:
            raise ValueError(f"tensor {name!r}: its storage has no data in the file")
        flat = root_data[source.offset : source.offset + source.numel]
    else:
        if source.data is None:
            raise ValueError(f"tensor {name!r}: its storage has no data in the file")
        flat = source.data
    size, stride, offset = tensor.size, tensor.stride, tensor.offset
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise ValueError(f"tensor {name!r}: invalid size {size} / stride {stride}")
    if 0 in size:
        return np.empty(size, dtype=flat.dtype.newbyteorder("="))
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if offset < 0 or last >= flat.size:
        raise ValueError(
            f"tensor {name!r}: size {size} / stride {stride} / offset {offset} "
            f"reaches element {last}, but its storage has {flat.size} elements"
        )
    count = math.prod(size)
    if count > flat.size:
        # A zero (or overlapping) stride lets a few stored elements stand for a huge
        # tensor: a 307-byte file asked for 13 GiB. State dicts hold no such views.
        raise ValueError(
            f"tensor {name!r}: size {size} / stride {stride} has {count} elements, more than "
            f"the {flat.size} its storage holds in the file"
        )
    view = np.lib.stride_tricks.as_strided(
        flat[offset:],
        shape=size,
        strides=[s * flat.itemsize for s in stride],
        writeable=False,
    )
    # Native byte order and C layout: what every consumer (TF, Keras) expects.
    # (np.ascontiguousarray would turn a 0-d tensor into shape (1,).)
    return np.array(view, dtype=flat.dtype.newbyteorder("="), order="C", copy=True)


def _read_exact(f: IO[bytes], n: int, path: str, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError(
            f"{path}: file is truncated: expected {n} bytes of {what}, got {len(data)}"
        )
    return data


def _load_pickle(
    f: IO[bytes], path: str, what: str, storages: dict[str, _Storage] | None = None
) -> Any:
    try:
        return _RestrictedUnpickler(f, storages).load()
    except _RefusedGlobalError:
        raise
    # A malformed pickle makes the unpickler call OrderedDict or the rebuilders with
    # odd arguments, index a short stack, or build huge ints: all bad values.
    except (
        EOFError,
        pickle.UnpicklingError,
        struct.error,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
    ) as e:
        raise ValueError(
            f"{path}: cannot read the {what}: the file is truncated or is not a legacy "
            f"PyTorch checkpoint ({type(e).__name__}: {e})"
        ) from e


def read_torch_legacy_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a legacy-format PyTorch state dict (``.pth``/``.pt``) without importing torch.

    Args:
        path: a file written by ``torch.save(state_dict, f,
            _use_new_zipfile_serialization=False)`` (or by PyTorch < 1.6).

    Returns:
        The state dict in file order: parameter name -> a new, C-contiguous NumPy
        array with the tensor's shape (torch layout, e.g. conv weights are
        ``(out, in / groups, kh, kw)``) and dtype (``float32`` for ``FloatStorage``,
        ``int64`` for ``LongStorage`` such as the 0-d ``num_batches_tracked``, ...).

    Raises:
        pickle.UnpicklingError: the file references a global outside the whitelist
            (anything but ``collections.OrderedDict``, the ``torch._utils`` tensor
            rebuilders and ``torch.*Storage`` types), e.g. ``os.system``.
        ValueError: the file is truncated, zip-format, big-endian, not a PyTorch
            file, or not a flat mapping of names to tensors; the message names the file.
    """
    path_str = os.fspath(path)
    with open(path_str, "rb") as f:
        head = f.read(4)
        if head == _ZIP_SIGNATURE or zipfile.is_zipfile(f):
            raise ValueError(
                f"{path_str}: this is a zip-format PyTorch checkpoint (the default of "
                "torch.save since PyTorch 1.6); zip-format checkpoints are not supported "
                "by this reader. Re-save it with torch.save(obj, f, "
                "_use_new_zipfile_serialization=False)."
            )
        f.seek(0)
        state = _read_stream(f, path_str)
    _log.info("read %d tensors from %s", len(state), path_str)
    return state


def _read_header(f: IO[bytes], path: str) -> None:
    """The legacy format's magic number, protocol version and byte order."""
    magic = _load_pickle(f, path, "magic number")
    if magic != _LEGACY_MAGIC_NUMBER:
        raise ValueError(f"{path}: not a legacy PyTorch checkpoint (bad magic number {magic!r})")
    protocol = _load_pickle(f, path, "protocol version")
    if protocol != _LEGACY_PROTOCOL_VERSION:
        raise ValueError(
            f"{path}: unsupported legacy protocol version {protocol!r} "
            f"(expected {_LEGACY_PROTOCOL_VERSION})"
        )
    sys_info = _load_pickle(f, path, "system info")
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
        raise ValueError(f"{path}: only little-endian checkpoints are supported ({sys_info!r})")


def _read_storages(f: IO[bytes], path: str, storages: dict[str, _Storage]) -> None:
    """Each storage's data, its size checked against the pickle and the file first."""
    file_size = os.fstat(f.fileno()).st_size
    keys = _load_pickle(f, path, "storage key list")
    # ValueError, not TypeError: a bad file is a bad value, whatever its pickled type.
    if not isinstance(keys, list):
        raise ValueError(f"{path}: storage key list is a {type(keys).__name__}, not a list")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise ValueError(f"{path}: storage {key!r} has data but no tensor uses it")
        (numel,) = struct.unpack("<q", _read_exact(f, 8, path, f"storage {key!r} header"))
        if numel != storage.numel:
            raise ValueError(
                f"{path}: storage {key!r} holds {numel} elements, the pickle says {storage.numel}"
            )
        nbytes = numel * storage.dtype.itemsize
        left = file_size - f.tell()
        if nbytes > left:  # checked before reading: f.read(n) would allocate n bytes
            raise ValueError(
                f"{path}: file is truncated: storage {key!r} needs {nbytes} bytes, {left} are left"
            )
        raw = _read_exact(f, nbytes, path, f"storage {key!r} data")
        storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _tensors(result: Any, path: str) -> dict[str, np.ndarray]:
    """The state dict's tensors, each copied out of its (checked) storage."""
    if not isinstance(result, dict):
        raise ValueError(f"{path}: expected a state dict (a mapping), got {type(result).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, value in result.items():
        if not isinstance(name, str) or not isinstance(value, _LazyTensor):
            raise ValueError(
                f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor; only flat "
                "state dicts (name -> tensor) are supported"
            )
        try:
            out[name] = _materialize(value, name)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e
    return out


def _read_stream(f: IO[bytes], path: str) -> dict[str, np.ndarray]:
    _read_header(f, path)
    storages: dict[str, _Storage] = {}
    result = _load_pickle(f, path, "state dict", storages)
    _read_storages(f, path, storages)
    return _tensors(result, path)
