"""Read PyTorch ``.pth`` tensor state dicts into numpy arrays, without torch.

``torch.save`` files are pickles, and unpickling calls whatever callables the
file names, so ``pickle.load`` on a downloaded weight file is arbitrary code
execution.  We never do that: a restricted :class:`pickle.Unpickler` admits
only the handful of globals a tensor state dict needs, each mapped to our own
small numpy-side function, and refuses everything else with
:class:`pickle.UnpicklingError` before anything runs.  Only numpy is needed.

Both on-disk layouts written by ``torch.save`` are understood:

* zip (torch >= 1.6): ``<root>/data.pkl`` plus one raw little-endian (or
  ``<root>/byteorder``) storage per ``<root>/data/<key>`` entry;
* legacy (torch < 1.6, still common on PyPI/hubs): five pickles back to back
  (magic number, protocol version, sys_info, the object, the storage keys),
  then every storage as an int64 element count followed by its raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from os import PathLike
from typing import IO, Any

import numpy as np

__all__ = ["load_torch_state_dict"]

# Constants torch writes at the head of a legacy (non-zip) file.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch storage class name -> little-endian numpy dtype of one element.
# bfloat16 has no numpy dtype: it is read as uint16 and widened to float32.
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


@dataclass(frozen=True, slots=True)
class _StorageType:
    """Stand-in for ``torch.<X>Storage`` classes: only carries the dtype."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True, slots=True)
class _StorageRef:
    """A storage named by a persistent id; its bytes are read afterwards."""

    key: str
    stype: _StorageType
    numel: int
    view: tuple[int, int] | None  # legacy storage view: (offset, size) in elements


@dataclass(frozen=True, slots=True)
class _TensorRef:
    """What ``_rebuild_tensor_v2`` describes; materialised once storages are read."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _refuse_setstate(self: Any, state: Any) -> None:
    raise pickle.UnpicklingError(f"pickle tried to modify a {type(self).__name__} (BUILD)")


# Frozen slotted dataclasses get a generated __setstate__ that *does* rewrite
# fields, which a BUILD opcode would reach; replace it so the stand-ins (the
# storage types are shared module-level singletons) stay immutable.
for _cls in (_StorageType, _StorageRef, _TensorRef):
    _cls.__setstate__ = _refuse_setstate
del _cls


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _TensorRef:
    # Legacy files carry storages *after* the pickle, so rebuilding is deferred:
    # record the view now, cut it out of the bytes once they are known.
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuild got something that is not a storage")
    try:
        ref = _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size),
                         tuple(int(s) for s in stride))
    except (TypeError, ValueError) as exc:
        raise pickle.UnpicklingError(f"malformed tensor description: {exc}") from None
    if len(ref.size) != len(ref.stride):
        raise pickle.UnpicklingError("tensor size and stride have different lengths")
    return ref


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> _TensorRef:
    # nn.Parameter wrapper: the values are just the wrapped tensor's.
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("parameter rebuild got something that is not a tensor")
    return data


class _ReadOnlyCall:
    """Callable handed to the pickle in place of a function.

    Slotted and immutable, so a BUILD opcode cannot set attributes on it (a
    plain function would accept ``__defaults__`` etc.) and thereby tamper with
    module state that later loads share.
    """

    __slots__ = ("_fn",)

    def __init__(self, fn: Any) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        raise pickle.UnpicklingError("pickle tried to modify an allow-listed global")


# The complete allow-list: (module, name) -> our replacement.  Nothing else is
# ever looked up, so a pickle cannot reach os.system, eval, builtins, ...
# (collections.OrderedDict is an immutable builtin type, safe to hand out as is;
# the slotted dataclasses above have no __dict__ for BUILD to write to.)
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _ReadOnlyCall(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_parameter"): _ReadOnlyCall(_rebuild_parameter),
    **{("torch", name): _StorageType(name, np.dtype(dt)) for name, dt in _STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and storage ids."""

    def __init__(self, file: IO[bytes], *, allow_globals: bool,
                 storages: dict[str, _StorageRef] | None = None, legacy: bool = False):
        super().__init__(file)
        self._allow_globals = allow_globals
        self._storages = storages
        self._legacy = legacy

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name)) if self._allow_globals else None
        if target is None:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only plain tensor "
                "state dicts are supported (no arbitrary code is ever executed)")
        return target

    def persistent_load(self, pid: Any) -> _StorageRef:
        if self._storages is None:
            raise pickle.UnpicklingError("unexpected persistent id in this pickle")
        expected_len = 6 if self._legacy else 5
        if (not isinstance(pid, tuple) or len(pid) != expected_len or pid[0] != "storage"
                or not isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.200}")
        stype, key, numel = pid[1], str(pid[2]), int(pid[4])
        view = None
        if self._legacy and pid[5] is not None:
            # Legacy storage view: (view_key, offset, size) into the root storage.
            _, v_off, v_size = pid[5]
            view = (int(v_off), int(v_size))
        ref = _StorageRef(key, stype, numel, view)
        seen = self._storages.setdefault(f"{key}/{view}", ref)
        if seen.stype != stype:
            raise pickle.UnpicklingError(f"storage {key} used with two different dtypes")
        return seen


def load_torch_state_dict(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    """Load a tensor state dict saved by ``torch.save`` as ``{name: ndarray}``.

    Arrays are native-endian, C-contiguous copies with the tensor's shape and
    dtype (bfloat16 is widened to float32).  Raises ``pickle.UnpicklingError``
    if the pickle references anything but tensors/OrderedDict, and
    ``ValueError`` if the file is not a tensor state dict.
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK"):
        return _load_zip(path)
    return _load_legacy(path)


def _load_zip(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        # The archive root folder is "archive" for recent torch, the file stem for older.
        roots = [n[: -len("data.pkl")] for n in names
                 if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(roots) != 1:
            raise ValueError(f"{path}: not a torch zip checkpoint (no single */data.pkl)")
        root = roots[0]
        byteorder = "little"
        if f"{root}byteorder" in names:
            byteorder = zf.read(f"{root}byteorder").decode("ascii").strip()
        storages: dict[str, _StorageRef] = {}
        obj = _unpickle(_RestrictedUnpickler(io.BytesIO(zf.read(f"{root}data.pkl")),
                                             allow_globals=True, storages=storages))
        raw: dict[str, np.ndarray] = {}
        for ref in storages.values():
            if ref.key not in raw:
                try:
                    buf = zf.read(f"{root}data/{ref.key}")
                except KeyError:
                    raise ValueError(f"{path}: storage {ref.key} missing from archive") from None
                raw[ref.key] = _decode_storage(buf, ref.stype, byteorder)
    return _materialise(obj, raw, path)


def _load_legacy(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    with open(path, "rb") as fh:
        def header_pickle() -> Any:
            # Header pickles hold plain ints/dicts: no globals at all are allowed.
            return _RestrictedUnpickler(fh, allow_globals=False).load()

        try:
            magic = header_pickle()
        except pickle.UnpicklingError:
            raise
        except (EOFError, ValueError, TypeError, IndexError) as exc:  # not a pickle at all
            raise ValueError(f"{path}: not a torch checkpoint ({exc})") from None
        if magic != _LEGACY_MAGIC:
            raise ValueError(f"{path}: not a torch checkpoint (bad magic number)")
        if header_pickle() != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: unsupported legacy torch protocol version")
        sys_info = header_pickle()
        byteorder = "little" if not isinstance(sys_info, dict) or sys_info.get(
            "little_endian", True) else "big"

        storages: dict[str, _StorageRef] = {}
        obj = _unpickle(_RestrictedUnpickler(fh, allow_globals=True, storages=storages,
                                             legacy=True))
        keys = header_pickle()
        if not isinstance(keys, list):
            raise ValueError(f"{path}: malformed storage key list")
        dtypes = {ref.key: ref.stype for ref in storages.values()}
        raw: dict[str, np.ndarray] = {}
        count_fmt = "<q" if byteorder == "little" else ">q"
        for key in keys:
            key = str(key)
            if key not in dtypes:
                raise ValueError(f"{path}: storage {key} listed but never referenced")
            # Each storage: int64 element count, then count * itemsize bytes.
            (numel,) = struct.unpack(count_fmt, _read_exact(fh, 8, path))
            nbytes = numel * dtypes[key].dtype.itemsize
            raw[key] = _decode_storage(_read_exact(fh, nbytes, path), dtypes[key], byteorder)
        trailing = fh.read(1)
        if trailing:
            raise ValueError(f"{path}: unexpected data after the last storage")
    return _materialise(obj, raw, path)


def _unpickle(unpickler: _RestrictedUnpickler) -> Any:
    try:
        return unpickler.load()
    except pickle.UnpicklingError:
        raise
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, EOFError) as exc:
        # e.g. BUILD on a slotted stand-in, or calling a storage type: malformed/hostile.
        raise pickle.UnpicklingError(f"malformed torch checkpoint pickle: {exc!r}") from None


def _read_exact(fh: IO[bytes], n: int, path: Any) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise ValueError(f"{path}: truncated checkpoint")
    return data


def _decode_storage(buf: bytes, stype: _StorageType, byteorder: str) -> np.ndarray:
    dt = stype.dtype.newbyteorder("<" if byteorder == "little" else ">")
    if len(buf) % dt.itemsize:
        raise ValueError(f"storage of {stype.name} has a partial trailing element")
    arr = np.frombuffer(buf, dtype=dt)
    if stype.name == "BFloat16Storage":
        # bfloat16 is the high half of a float32.
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(dt.newbyteorder("="), copy=False)


def _materialise(obj: Any, raw: dict[str, np.ndarray], path: Any) -> dict[str, np.ndarray]:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for name, ref in obj.items():
        if not isinstance(name, str) or not isinstance(ref, _TensorRef):
            raise ValueError(f"{path}: entry {name!r} is not a tensor")
        if ref.storage.key not in raw:
            raise ValueError(f"{path}: tensor {name} uses storage {ref.storage.key}, "
                             "which the file does not contain")
        out[name] = _cut_tensor(raw[ref.storage.key], ref, name)
    return out


def _cut_tensor(base: np.ndarray, ref: _TensorRef, name: str) -> np.ndarray:
    if ref.storage.view is not None:
        v_off, v_size = ref.storage.view
        base = base[v_off: v_off + v_size]
    if any(s < 0 for s in ref.size) or any(s < 0 for s in ref.stride) or ref.offset < 0:
        raise ValueError(f"tensor {name}: negative size, stride or offset")
    if 0 in ref.size:
        return np.zeros(ref.size, dtype=base.dtype)
    # Bounds check before as_strided, which would otherwise read foreign memory.
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= base.shape[0]:
        raise ValueError(f"tensor {name}: view exceeds its storage ({last} >= {base.shape[0]})")
    view = np.lib.stride_tricks.as_strided(
        base[ref.offset:], shape=ref.size,
        strides=tuple(s * base.itemsize for s in ref.stride), writeable=False)
    return np.array(view, copy=True, order="C")  # own the memory, drop the file buffer
