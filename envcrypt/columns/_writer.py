"""Parquet writer settings for tables with encrypted columns.

An encrypted cell is random-looking binary, unique per cell: the Parquet writer's dictionary
attempt (it builds a dictionary until the page limit and then falls back), its min/max statistics
(useless on ciphertext) and a general-purpose codec mostly spend time on such columns.  Turning
the first two off for the encrypted columns only, and giving them a fast codec (LZ4: it still
reclaims the salt and nonce bytes that repeat from cell to cell), is what
``pq.write_table(table, path, **parquet_write_options(table))`` does; the other columns keep
pyarrow's defaults.  benchmarks/bench_columns.py measures the difference.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ._table import encrypted_columns

__all__ = ["parquet_write_options"]


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """The Parquet column paths of ``schema`` (nested fields have several), as the writer names them."""
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf)
    parquet_schema = pq.ParquetFile(io.BytesIO(buf.getvalue())).schema
    return [parquet_schema.column(i).path for i in range(len(parquet_schema))]


def parquet_write_options(table_or_schema: pa.Table | pa.Schema, *, compression: str = "snappy",
                          encrypted_compression: str = "lz4") -> dict[str, Any]:
    """Keyword arguments for ``pyarrow.parquet.write_table`` / ``ParquetWriter``: no dictionary and
    no statistics for the encrypted columns, ``encrypted_compression`` for them and ``compression``
    (pyarrow's default codec unless given) for every other column."""
    schema = table_or_schema.schema if isinstance(table_or_schema, pa.Table) else table_or_schema
    encrypted = set(encrypted_columns(schema))
    paths = _leaf_paths(schema)
    plain = [p for p in paths if p not in encrypted]
    return {
        "use_dictionary": plain,
        "write_statistics": plain,
        "compression": {p: encrypted_compression if p in encrypted else compression for p in paths},
    }
