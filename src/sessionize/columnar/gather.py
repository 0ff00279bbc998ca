"""Arrow <-> numpy without copies, and gathers: the columnar plan's plumbing.

The kernel (:mod:`.kernel`) works on numpy arrays and hands Arrow tables back. These
helpers move fixed-width values between the two without a copy, and without
``pa.array``/``Array.to_numpy``, whose first call imports pandas to check the input's
type (0.2 s per process, a tenth of a 1M-event run; a run must not need pandas at all).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["TS", "arrow", "bools", "dictionary_codes", "numpy", "rows", "strings", "take",
           "to_numpy"]

TS = pa.timestamp("us", tz="UTC")


def arrow(values: np.ndarray, type: pa.DataType | None = None,
          mask: np.ndarray | None = None) -> pa.Array:
    """A numpy array as Arrow (fixed-width types without a copy), ``mask`` marking nulls."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
        type = type or pa.bool_()
    else:
        data = pa.py_buffer(values)
        type = type or pa.from_numpy_dtype(values.dtype)
    validity, nulls = None, 0
    if mask is not None and mask.any():
        validity = pa.py_buffer(np.packbits(~mask, bitorder="little"))
        nulls = int(mask.sum())
    return pa.Array.from_buffers(type, len(values), [validity, data], null_count=nulls)


def strings(values: list[str]) -> pa.Array:
    """A few Python strings as an Arrow string array."""
    encoded = [v.encode() for v in values]
    offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])


def to_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A fixed-width Arrow array without nulls as numpy (a view of one chunk; temporal
    types as their integer counts). Booleans and nulls take a copy (booleans without
    nulls unpacked here, without pandas)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_boolean(values.type) and not values.null_count:
        return bools(values)
    if values.null_count or pa.types.is_boolean(values.type):
        return values.to_numpy(zero_copy_only=False)
    dtype = _numpy_dtype(values.type)
    return np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values),
                         offset=values.offset * dtype.itemsize)


def bools(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean column as numpy, nulls as false: its bits unpacked (``to_numpy`` and
    ``fill_null(False)`` import pandas for booleans)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not len(values):
        return np.zeros(0, bool)
    validity, data = values.buffers()[:2]
    out = _bits(data, values.offset, len(values))
    if values.null_count:
        out &= _bits(validity, values.offset, len(values))
    return out


def dictionary_codes(indices: pa.Array) -> np.ndarray:
    """Dictionary indices as int64 numpy, nulls as -1 (``fill_null(-1)`` imports pandas)."""
    if not indices.null_count:
        return to_numpy(indices).astype(np.int64)
    dtype = _numpy_dtype(indices.type)
    out = np.frombuffer(indices.buffers()[1], dtype=dtype, count=len(indices),
                        offset=indices.offset * dtype.itemsize).astype(np.int64)
    out[~_bits(indices.buffers()[0], indices.offset, len(indices))] = -1
    return out


def _bits(buffer: pa.Buffer, offset: int, length: int) -> np.ndarray:
    """``length`` bits of an Arrow bitmap from bit ``offset``, as numpy booleans."""
    bits = np.frombuffer(buffer, np.uint8)
    return np.unpackbits(bits, count=offset + length, bitorder="little")[offset:].view(bool)


def numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An integer or timestamp column without nulls as int64 numpy."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return to_numpy(column.cast(pa.int64()))


def _numpy_dtype(type: pa.DataType) -> np.dtype:
    """The numpy type of a fixed-width Arrow type's values (temporal types: their integer
    counts). Not ``to_pandas_dtype``, which imports pandas on pyarrow before 18 or so."""
    width = type.bit_width // 8
    if pa.types.is_floating(type):
        return np.dtype(f"f{width}")
    if pa.types.is_unsigned_integer(type):
        return np.dtype(f"u{width}")
    if pa.types.is_integer(type) or pa.types.is_temporal(type):
        return np.dtype(f"i{width}")
    return np.dtype(type.to_pandas_dtype())


def take(values: pa.Array | pa.ChunkedArray, indices: np.ndarray) -> pa.Array | pa.ChunkedArray:
    """``values`` at ``indices`` (int64 numpy), by Arrow's take. A chunked column is
    joined into one array first where its offsets allow (strings over 2 GiB do not fit
    one ``string`` array): a take from one array is several times faster."""
    if isinstance(values, pa.ChunkedArray):
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowCapacityError):
            values = values.combine_chunks()
    return pc.take(values, arrow(indices))


def rows(table: pa.Table, positions: np.ndarray) -> pa.Table:
    """The rows of ``table`` at ``positions``. A few rows are sliced out one by one:
    ``take`` on a many-chunked table first joins each column's chunks."""
    if len(positions) > 4096:
        return table.take(arrow(positions))
    if not len(positions):
        return table.slice(0, 0)
    return pa.concat_tables([table.slice(int(p), 1) for p in positions]).combine_chunks()
