"""Arrow arrays as runs of cells, and back: the plaintext bytes of each cell, with no per-cell Python.

The plaintext of a cell is the value's bytes exactly as Arrow stores them:

* string / binary (and large, and view types): the value's bytes (UTF-8 for strings);
* fixed-width types (integers, floats, half floats, dates, times, timestamps, durations,
  intervals, decimals, fixed-size binary): the value's ``bit_width / 8`` bytes, little-endian,
  as in the Arrow values buffer;
* boolean: one byte, ``0x00`` or ``0x01``;
* dictionary-encoded: the cell of the decoded value (the dictionary is not kept: a decoded
  column is re-encoded on decryption);
* null type: every cell is null.

Nested types (list, struct, map, union), extension types and run-end encoded arrays raise
:class:`~envcrypt.errors.UnsupportedTypeError`.  A null stays a null and is not encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import IntegrityError, UnsupportedTypeError

__all__ = ["Cells", "check_type", "to_cells", "from_cells", "validity", "binary_cells", "binary_array",
           "value_type"]


@dataclass
class Cells:
    """``n`` cells: cell ``i`` is ``data[offsets[i]:offsets[i+1]]``; ``valid[i]`` False for a null."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, n + 1
    valid: np.ndarray  # bool, n

    @property
    def n(self) -> int:
        return len(self.valid)


def value_type(t: pa.DataType) -> pa.DataType:
    """The type whose cells are encrypted for a column of type ``t`` (dictionaries decoded,
    view types as their large counterparts)."""
    if pa.types.is_dictionary(t):
        return value_type(t.value_type)
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    return t


def _is_var(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t))


def _width(t: pa.DataType) -> int | None:
    try:
        bits = int(t.bit_width)
    except ValueError:
        return None
    return bits // 8 if bits % 8 == 0 else None


def check_type(t: pa.DataType, column: str) -> None:
    """UnsupportedTypeError unless a column of type ``t`` can be encrypted cell by cell."""
    v = value_type(t)
    if pa.types.is_null(v) or pa.types.is_boolean(v) or _is_var(v):
        return
    nested = pa.types.is_nested(v) or isinstance(v, pa.BaseExtensionType) or pa.types.is_run_end_encoded(v)
    if not nested and _width(v) is not None:
        return
    raise UnsupportedTypeError(
        f"column {column!r} has type {t}, which envcrypt.columns cannot encrypt cell by cell "
        "(nested, extension and run-end encoded types are not supported; encrypt their leaf "
        "columns, or the whole file with the envcrypt:: filesystem)")


def validity(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0:
        return np.ones(len(arr), np.bool_)
    if pa.types.is_null(arr.type):
        return np.zeros(len(arr), np.bool_)
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), np.bool_)


def _buffer(buf: pa.Buffer | None) -> np.ndarray:
    return np.frombuffer(buf, np.uint8) if buf is not None and buf.size else np.zeros(0, np.uint8)


def _offsets(arr: pa.Array) -> np.ndarray:
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    raw = np.frombuffer(arr.buffers()[1], np.int64 if large else np.int32)
    return raw[arr.offset : arr.offset + len(arr) + 1].astype(np.int64)


def to_cells(arr: pa.Array) -> Cells:
    """The plaintext cells of ``arr`` (type checked by :func:`check_type`)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if t != value_type(t):
        arr = arr.cast(value_type(t))
        t = arr.type
    valid = validity(arr)
    n = len(arr)
    if pa.types.is_null(t):
        return Cells(np.zeros(0, np.uint8), np.zeros(n + 1, np.int64), valid)
    if pa.types.is_boolean(t):
        arr = arr.cast(pa.uint8())
        t = arr.type
    if _is_var(t):
        if n == 0:
            return Cells(np.zeros(0, np.uint8), np.zeros(1, np.int64), valid)
        return Cells(_buffer(arr.buffers()[2]), _offsets(arr), valid)
    w = _width(t)
    if w is None:  # pragma: no cover - check_type ran first
        raise UnsupportedTypeError(f"type {t} has no fixed byte width")
    data = _buffer(arr.buffers()[1])[arr.offset * w : (arr.offset + n) * w]
    return Cells(data, np.arange(n + 1, dtype=np.int64) * w, valid)


def fixed_width(t: pa.DataType) -> int | None:
    """The plaintext length of every non-null cell of a column of type ``t`` (None: variable)."""
    v = value_type(t)
    if pa.types.is_boolean(v):
        return 1
    if _is_var(v) or pa.types.is_null(v):
        return None
    return _width(v)


def _bitmap(valid: np.ndarray) -> tuple[pa.Buffer | None, int]:
    nulls = int(len(valid) - np.count_nonzero(valid))
    if nulls == 0:
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), nulls


def from_cells(t: pa.DataType, data: np.ndarray, offsets: np.ndarray, valid: np.ndarray) -> pa.Array:
    """An array of type ``t`` from decrypted cells (``offsets`` as :func:`plain_offsets` made them)."""
    n = len(valid)
    bitmap, nulls = _bitmap(valid)
    v = value_type(t)
    if pa.types.is_null(v):
        arr: pa.Array = pa.nulls(n)
    elif pa.types.is_boolean(v):
        raw = pa.Array.from_buffers(pa.uint8(), n, [bitmap, pa.py_buffer(data)], null_count=nulls)
        arr = pc.not_equal(raw, 0)
    elif _is_var(v):
        large = pa.types.is_large_string(v) or pa.types.is_large_binary(v)
        offs = offsets if large else offsets.astype(np.int32)
        arr = pa.Array.from_buffers(v, n, [bitmap, pa.py_buffer(offs), pa.py_buffer(data)], null_count=nulls)
        if (pa.types.is_string(v) or pa.types.is_large_string(v)) and not _all_utf8(data, offsets):
            raise IntegrityError("a decrypted string cell is not UTF-8")
    else:
        arr = pa.Array.from_buffers(v, n, [bitmap, pa.py_buffer(data)], null_count=nulls)
    if arr.type != t:
        arr = arr.cast(t)
    return arr


def _all_utf8(data: np.ndarray, offsets: np.ndarray) -> bool:
    """Whether every cell ``data[offsets[i]:offsets[i+1]]`` is UTF-8 (the cells pack ``data``).

    One pass of Arrow's validator over the whole buffer instead of one call per cell: every cell is
    UTF-8 exactly when their concatenation is and no non-empty cell starts with a continuation
    byte (0b10xxxxxx), i.e. every cell boundary is a character boundary."""
    if not len(data):
        return True
    whole = pa.Array.from_buffers(pa.large_string(), 1, [None, pa.py_buffer(np.array([0, len(data)], np.int64)),
                                                         pa.py_buffer(data)])
    try:
        whole.validate(full=True)
    except pa.ArrowInvalid:
        return False
    starts = offsets[:-1]
    starts = starts[starts < len(data)]
    return not np.any((data[starts] & 0xC0) == 0x80)


def plain_offsets(t: pa.DataType, lengths: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Where each decrypted cell goes: fixed-width types get their slot (nulls zero-filled),
    variable-width types are packed.  ``lengths`` are plaintext lengths (0 for nulls).
    IntegrityError when a fixed-width cell has another length."""
    n = len(valid)
    w = fixed_width(t)
    if w is not None:
        if np.any(lengths[valid] != w):
            raise IntegrityError()
        return np.arange(n + 1, dtype=np.int64) * w
    out = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def binary_cells(arr: pa.Array) -> Cells:
    """The stored (encrypted) cells of a binary or large_binary column."""
    if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        raise IntegrityError()
    valid = validity(arr)
    if len(arr) == 0:
        return Cells(np.zeros(0, np.uint8), np.zeros(1, np.int64), valid)
    return Cells(_buffer(arr.buffers()[2]), _offsets(arr), valid)


def binary_array(data: np.ndarray, offsets: np.ndarray, valid: np.ndarray) -> pa.Array:
    """A binary array (large_binary past 2 GiB) over ``data`` and ``offsets``, without copying."""
    bitmap, nulls = _bitmap(valid)
    if offsets[-1] < 2**31 - 1:
        return pa.Array.from_buffers(pa.binary(), len(valid), [bitmap, pa.py_buffer(offsets.astype(np.int32)),
                                                               pa.py_buffer(data)], null_count=nulls)
    return pa.Array.from_buffers(pa.large_binary(), len(valid), [bitmap, pa.py_buffer(offsets),
                                                                 pa.py_buffer(data)], null_count=nulls)
