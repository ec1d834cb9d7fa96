"""utils.torch_checkpoint: legacy (pre-zip) PyTorch checkpoints read without torch.

The test checkpoints are written here in the legacy layout: five pickles (magic number, protocol version 1001,
sys info, the state dict with persistent storage ids and ``torch._utils._rebuild_tensor_v2`` references, the
storage keys), then each storage as an int64 element count and its raw little-endian bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from utils.torch_checkpoint import (_LEGACY_MAGIC_NUMBER, _LEGACY_PROTOCOL_VERSION, _CheckpointFormatError,
                                    _load_legacy_checkpoint)

_STORAGE_NAMES = {np.dtype("<f4"): "FloatStorage", np.dtype("<f8"): "DoubleStorage", np.dtype("<i8"): "LongStorage",
                  np.dtype("<i4"): "IntStorage", np.dtype("u1"): "ByteStorage", np.dtype("<f2"): "HalfStorage"}


class _Storage:
    def __init__(self, key: str, data: np.ndarray) -> None:
        self.key, self.data = key, np.ascontiguousarray(data).ravel()


class _Tensor:
    """A tensor as torch pickles it: ``_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)``."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return (sys.modules["torch._utils"]._rebuild_tensor_v2,
                (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


def tensor(array: np.ndarray, key: str) -> _Tensor:
    """A contiguous tensor holding ``array`` in its own storage."""
    array = np.asarray(array)
    return _Tensor(_Storage(key, array), 0, array.shape, tuple(s // array.itemsize for s in array.strides))


def tf_layout_tensor(array: np.ndarray, key: str) -> _Tensor:
    """A (out, in, kh, kw) tensor whose storage is in TF's (kh, kw, in, out) order: non-contiguous strides."""
    storage = np.ascontiguousarray(array.transpose(2, 3, 1, 0))  # (kh, kw, in, out)
    kh, kw, cin, cout = storage.shape
    stride = (1, cout, kw * cin * cout, cin * cout)  # element strides of (out, in, kh, kw) into that storage
    return _Tensor(_Storage(key, storage), 0, array.shape, stride)


def _fake_torch_modules() -> dict[str, types.ModuleType]:
    """Stand-ins for ``torch`` and ``torch._utils`` so pickle can write globals by those names."""
    torch = types.ModuleType("torch")
    for name in set(_STORAGE_NAMES.values()):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    return {"torch": torch, "torch._utils": utils}


def legacy_checkpoint_bytes(state: dict, sys_info: dict | None = None, magic: int = _LEGACY_MAGIC_NUMBER,
                            protocol: int = _LEGACY_PROTOCOL_VERSION) -> bytes:
    """``state`` (name -> _Tensor) serialized like ``torch.save(..., _use_new_zipfile_serialization=False)``."""
    with pytest.MonkeyPatch.context() as mp:
        modules = _fake_torch_modules()
        for name, module in modules.items():
            mp.setitem(sys.modules, name, module)
        f = io.BytesIO()
        pickle.dump(magic, f, protocol=2)
        pickle.dump(protocol, f, protocol=2)
        pickle.dump(sys_info or {"protocol_version": 1001, "little_endian": True,
                                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        storages: dict[str, _Storage] = {}

        def persistent_id(obj):
            if isinstance(obj, _Storage):
                storages[obj.key] = obj
                storage_type = getattr(modules["torch"], _STORAGE_NAMES[obj.data.dtype])
                return ("storage", storage_type, obj.key, "cpu", obj.data.size, None)
            return None

        pickler = pickle.Pickler(f, protocol=2)
        pickler.persistent_id = persistent_id
        pickler.dump(collections.OrderedDict(state))
        keys = sorted(storages)
        pickle.dump(keys, f, protocol=2)
        for key in keys:
            f.write(struct.pack("<q", storages[key].data.size))
            f.write(storages[key].data.astype(storages[key].data.dtype.newbyteorder("<")).tobytes())
        return f.getvalue()


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "bn.running_var": rng.random(4).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "fc.weight": rng.normal(size=(5, 4)).astype(np.float64),
        "embed.ids": np.arange(6, dtype=np.int32).reshape(2, 3),
        "mask": np.array([1, 0, 255], dtype=np.uint8),
        "half": rng.normal(size=3).astype(np.float16),
    }


def test_round_trip_values_shapes_dtypes(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    path = tmp_path / "model.pth"
    path.write_bytes(legacy_checkpoint_bytes({k: tensor(v, str(i)) for i, (k, v) in enumerate(arrays.items())}))
    state = _load_legacy_checkpoint(path)
    assert list(state) == list(arrays)
    for name, expected in arrays.items():
        assert state[name].shape == expected.shape and state[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(state[name], expected)


def test_non_contiguous_strides_shared_storage_and_offsets(tmp_path: Path) -> None:
    weight = np.arange(2 * 3 * 3 * 5, dtype=np.float32).reshape(5, 2, 3, 3) * 0.5 - 7  # (out, in, kh, kw)
    shared = _Storage("s", np.arange(20, dtype=np.float32))
    state = {
        "tf_layout": tf_layout_tensor(weight, "w"),
        "head": _Tensor(shared, 0, (2, 5), (5, 1)),
        "tail_transposed": _Tensor(shared, 10, (5, 2), (1, 5)),  # a .T view at an offset into the same storage
    }
    path = tmp_path / "strided.pth"
    path.write_bytes(legacy_checkpoint_bytes(state))
    loaded = _load_legacy_checkpoint(path)
    np.testing.assert_array_equal(loaded["tf_layout"], weight)
    np.testing.assert_array_equal(loaded["head"], np.arange(10, dtype=np.float32).reshape(2, 5))
    np.testing.assert_array_equal(loaded["tail_transposed"], np.arange(10, 20, dtype=np.float32).reshape(2, 5).T)
    # independent, writable arrays (not read-only views into the file's buffer)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in loaded.values())
    loaded["head"][0, 0] = 100.0
    assert loaded["tail_transposed"].min() == 10.0


@pytest.fixture
def good_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    return legacy_checkpoint_bytes({"w": tensor(arrays["conv.weight"], "0"), "b": tensor(arrays["fc.weight"], "1")})


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.8, 0.97, -9, -1])
def test_truncated_files_raise_format_error(tmp_path: Path, good_bytes: bytes, cut: float) -> None:
    """Cut in a header pickle, in the state dict, in a storage's count or in its data: always a clear error."""
    n = int(len(good_bytes) * cut) if cut > 0 else len(good_bytes) + int(cut)
    path = tmp_path / "cut.pth"
    path.write_bytes(good_bytes[:n])
    with pytest.raises(_CheckpointFormatError):
        _load_legacy_checkpoint(path)


def test_truncated_inside_a_storage_count(tmp_path: Path, good_bytes: bytes, arrays) -> None:
    # the last storage ("1", float64 5x4) is the file's tail: cut into its int64 element count
    tail = 8 + arrays["fc.weight"].nbytes
    path = tmp_path / "cut.pth"
    path.write_bytes(good_bytes[: len(good_bytes) - tail + 3])
    with pytest.raises(_CheckpointFormatError, match="truncated"):
        _load_legacy_checkpoint(path)


def test_zip_format_checkpoint_is_refused_with_reason(tmp_path: Path) -> None:
    path = tmp_path / "new.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(_CheckpointFormatError, match="zip"):
        _load_legacy_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"hello, not a pickle at all\n", b"\x00" * 64,
                                     pickle.dumps({"just": "a dict"}, protocol=2)])
def test_non_checkpoints_raise_format_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(_CheckpointFormatError):
        _load_legacy_checkpoint(path)


def test_wrong_magic_and_protocol(tmp_path: Path, arrays) -> None:
    state = {"w": tensor(arrays["mask"], "0")}
    path = tmp_path / "x.pth"
    path.write_bytes(legacy_checkpoint_bytes(state, magic=12345))
    with pytest.raises(_CheckpointFormatError, match="magic"):
        _load_legacy_checkpoint(path)
    path.write_bytes(legacy_checkpoint_bytes(state, protocol=1000))
    with pytest.raises(_CheckpointFormatError, match="protocol"):
        _load_legacy_checkpoint(path)
    path.write_bytes(legacy_checkpoint_bytes(state, sys_info={"little_endian": False}))
    with pytest.raises(_CheckpointFormatError, match="big-endian"):
        _load_legacy_checkpoint(path)


def test_tensor_larger_than_its_storage_is_refused(tmp_path: Path) -> None:
    """A corrupt size/stride must not read past the storage (as_strided would read stray memory)."""
    storage = _Storage("s", np.arange(4, dtype=np.float32))
    path = tmp_path / "x.pth"
    path.write_bytes(legacy_checkpoint_bytes({"w": _Tensor(storage, 2, (1000, 1000), (1000, 1))}))
    with pytest.raises(_CheckpointFormatError):
        _load_legacy_checkpoint(path)


def _system_call_pickle(marker: Path) -> bytes:
    """A protocol-2 pickle that, unrestricted, would run ``os.system('touch marker')``."""
    command = f"touch {marker}".encode()
    return b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R."


def test_disallowed_global_in_state_dict_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    f = io.BytesIO()
    for header in (_LEGACY_MAGIC_NUMBER, _LEGACY_PROTOCOL_VERSION, {"little_endian": True}):
        pickle.dump(header, f, protocol=2)
    f.write(_system_call_pickle(marker))
    pickle.dump([], f, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(f.getvalue())
    with pytest.raises(_CheckpointFormatError, match="os.system"):
        _load_legacy_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("position", [0, 2, 4])
def test_disallowed_global_in_any_header_pickle_is_refused(tmp_path: Path, position: int) -> None:
    """The magic number, sys info and storage-key pickles are untrusted too, not just the state dict."""
    marker = tmp_path / "pwned"
    parts = [pickle.dumps(_LEGACY_MAGIC_NUMBER, protocol=2), pickle.dumps(_LEGACY_PROTOCOL_VERSION, protocol=2),
             pickle.dumps({"little_endian": True}, protocol=2), pickle.dumps({}, protocol=2),
             pickle.dumps([], protocol=2)]
    parts[position] = _system_call_pickle(marker)
    path = tmp_path / "evil.pth"
    path.write_bytes(b"".join(parts))
    with pytest.raises(_CheckpointFormatError):
        _load_legacy_checkpoint(path)
    assert not marker.exists()


def test_real_efficientnet_lite0_checkpoint() -> None:
    from utils.backbones import _lite_checkpoint_path

    state = _load_legacy_checkpoint(_lite_checkpoint_path("efficientnet_lite0"))
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.bias"].shape == (1000,)
    assert all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f")
    assert state["_bn0.running_var"].min() >= 0 and state["_bn0.running_var"].max() > 1  # real statistics
