"""Key rotation: rewrap each encrypted column's key under new master keys; the cells are untouched.

The column key is an envcrypt object (FORMAT.md), so rotation is ``envcrypt.rewrap`` of it: new
key slots (and, moving to another master key, a fresh DEK around the same CEK).  The CEK, the
key id and so the MAC, the salt and every cell stay byte for byte the same; only the field
metadata changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from ..slots import TrustedKeysArg, trusted_key_list
from ._keys import rotate_blob
from ._meta import META_KEY, meta_of
from ._table import encrypted_columns

__all__ = ["rotate", "rotate_file", "inspect_file", "describe"]


def rotate(table: pa.Table, to: str | Sequence[str], *, columns: Sequence[str] | None = None,
           trusted_keys: TrustedKeysArg = None, **resolver_options: Any) -> pa.Table:
    """``table`` with the column keys of ``columns`` (default: every encrypted column) rewrapped
    under ``to``.  ``trusted_keys`` opens the current keys (default: the names of ``to``, a
    rotation within a key; name the old key to move to another one)."""
    trusted = None if trusted_keys is None else trusted_key_list(trusted_keys)
    done: dict[bytes, bytes] = {}
    for name in columns if columns is not None else encrypted_columns(table):
        i = table.schema.get_field_index(name)
        field = table.schema.field(i)
        meta = meta_of(field)
        if meta is None:
            continue
        if meta.key_blob not in done:
            done[meta.key_blob] = rotate_blob(meta.key_blob, to, trusted, resolver_options)
        new = meta.with_key(done[meta.key_blob])
        table = table.set_column(i, field.with_metadata({META_KEY: new.to_json()}), table.column(i))
    return table


# ------------------------------------------------------------------ files (the CLI)

PARQUET_MAGIC, IPC_MAGIC = b"PAR1", b"ARROW1"


def _kind(f: Any) -> str:
    head = f.read(6)
    f.seek(0)
    if head[:4] == PARQUET_MAGIC:
        return "parquet"
    if head == IPC_MAGIC:
        return "arrow"
    from ..errors import UnsupportedTypeError

    raise UnsupportedTypeError("not a Parquet or Arrow IPC (Feather v2) file")


def _schema(f: Any) -> tuple[str, pa.Schema]:
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    kind = _kind(f)
    return kind, (pq.read_schema(f) if kind == "parquet" else ipc.open_file(f).schema)


def describe(schema: pa.Schema) -> dict[str, Any]:
    """What a schema says about its encrypted columns: mode, suite, original type, key id and the
    master key URIs of each column key's slots.  No key is opened, none is shown."""
    from ._keys import key_uris

    columns: dict[str, Any] = {}
    for field in schema:
        meta = meta_of(field)
        if meta is None:
            continue
        columns[field.name] = {"mode": meta.mode, "suite": meta.suite, "type": str(meta.field.type),
                               "key_id": meta.key_id.hex(), "master_keys": key_uris(meta.key_blob)}
    return {"encrypted_columns": columns, "plaintext_columns": [f.name for f in schema if f.name not in columns]}


def inspect_file(path: str, filesystem: Any) -> dict[str, Any]:
    """:func:`describe` of a Parquet or Arrow IPC file's schema (``path`` on the fsspec ``filesystem``)."""
    with filesystem.open(path, "rb") as f:
        kind, schema = _schema(f)
    return {"format": kind, **describe(schema)}


def rotated_schema(schema: pa.Schema, to: str | Sequence[str], trusted: Sequence[str] | None,
                   resolver_options: dict[str, Any]) -> tuple[pa.Schema, list[str]]:
    done: dict[bytes, bytes] = {}
    names: list[str] = []
    for i, field in enumerate(schema):
        meta = meta_of(field)
        if meta is None:
            continue
        if meta.key_blob not in done:
            done[meta.key_blob] = rotate_blob(meta.key_blob, to, trusted, resolver_options)
        schema = schema.set(i, field.with_metadata({**(field.metadata or {}),
                                                    META_KEY: meta.with_key(done[meta.key_blob]).to_json()}))
        names.append(field.name)
    return schema, names


def rotate_file(path: str, to: str | Sequence[str], filesystem: Any, *, trusted_keys: TrustedKeysArg = None,
                **resolver_options: Any) -> list[str]:
    """Rewrap the column keys of a Parquet or Arrow IPC file under ``to`` and replace the file.

    Every cell is copied byte for byte (row group by row group, or batch by batch); only the
    encrypted fields' metadata changes.  The replacement is atomic, and conditional where the
    filesystem allows it (local files, memory, S3 ETags): a file changed by someone else during
    the rotation is left as they made it (``ConcurrentModificationError``).  Returns the rotated
    columns (none: the file is not rewritten)."""
    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    from ..fs._sinks import open_sink, version_of

    trusted = None if trusted_keys is None else trusted_key_list(trusted_keys)
    expect = version_of(filesystem, path)
    with filesystem.open(path, "rb") as f:
        kind, schema = _schema(f)
        new, names = rotated_schema(schema, to, trusted, dict(resolver_options))
        if not names:
            return []
        sink = open_sink(filesystem, path, expect=expect)
        try:
            if kind == "parquet":
                source = pq.ParquetFile(f)
                with pq.ParquetWriter(sink.raw, new) as writer:
                    for g in range(source.num_row_groups):
                        group = source.read_row_group(g)
                        writer.write_table(pa.Table.from_arrays(group.columns, schema=new),
                                           row_group_size=max(group.num_rows, 1))
            else:
                reader = ipc.open_file(f)
                with ipc.new_file(sink.raw, new) as writer:
                    for b in range(reader.num_record_batches):
                        batch = reader.get_batch(b)
                        writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=new))
            sink.commit()
        except BaseException:
            sink.abort()
            raise
    return names
