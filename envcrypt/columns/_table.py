"""encrypt_table / decrypt_table: whole columns through the batch AEAD, chunk by chunk."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..envelope import default_trusted_keys
from ..errors import IntegrityError, UnsupportedTypeError
from ..slots import TrustedKeysArg, trusted_key_list
from . import _cells, _engine
from ._keys import TOKEN_PREFIX, ColumnKey, blob_of, new_key, open_key, own_trust
from ._meta import DETERMINISTIC, META_KEY, RANDOMIZED, ColumnMeta, associated_data, meta_of
from ._policy import ColumnPolicy, ColumnPolicyError, PolicyArg

__all__ = ["encrypt_table", "decrypt_table", "encrypt_value", "load_column_key", "encrypted_columns",
           "policy_from_args"]

_OVERHEAD = {RANDOMIZED: _engine.SALTED_OVERHEAD, DETERMINISTIC: _engine.SIV_OVERHEAD}


def policy_from_args(columns: PolicyArg | None, deterministic: Sequence[str],
                     encryption_context: Mapping[str, str] | None, trusted_keys: TrustedKeysArg,
                     options: Mapping[str, Any]) -> ColumnPolicy:
    """The ColumnPolicy of encrypt_table/encrypt_frame's keyword arguments (they override the policy's)."""
    if columns is None:
        raise ColumnPolicyError("encrypt_table needs columns={column: key URI or column key token}")
    policy = ColumnPolicy.from_any(columns)
    extra: dict[str, Any] = {}
    if deterministic:
        extra["deterministic"] = tuple(dict.fromkeys((*policy.deterministic, *deterministic)))
    if encryption_context is not None:
        extra["encryption_context"] = dict(encryption_context)
    if trusted_keys is not None:
        extra["trusted_keys"] = trusted_key_list(trusted_keys)
    if options:
        extra["resolver_options"] = {**policy.resolver_options, **options}
    if extra:
        policy = ColumnPolicy(**{**policy.to_dict(), **extra})
    return policy


def encrypted_columns(table_or_schema: pa.Table | pa.Schema) -> list[str]:
    """The names of the encrypted columns of a table or schema (no key is used)."""
    schema = table_or_schema.schema if isinstance(table_or_schema, pa.Table) else table_or_schema
    return [f.name for f in schema if f.metadata and META_KEY in f.metadata]


def encrypt_table(table: pa.Table, columns: PolicyArg | None = None, deterministic: Sequence[str] = (),
                  encryption_context: Mapping[str, str] | None = None, *, trusted_keys: TrustedKeysArg = None,
                  core: str | None = None, **resolver_options: Any) -> pa.Table:
    """``table`` with the named columns encrypted cell by cell into binary columns.

    ``columns`` maps each column to a master key URI (``"local:pii"``: a fresh column key for this
    call, wrapped by that key) or to a column key token (:func:`new_column_key`: the same column
    key everywhere); or it is a whole :class:`ColumnPolicy` (or its dict).  ``deterministic``
    columns (token keys only) get equal cells for equal values (AES-SIV), the others random ones
    (AES-GCM).  ``trusted_keys`` is what a token is opened with (default: the keys its slots name).
    """
    if not isinstance(table, pa.Table):
        raise TypeError(f"encrypt_table takes a pyarrow.Table, not {type(table).__name__}")
    policy = policy_from_args(columns, deterministic, encryption_context, trusted_keys, resolver_options)
    names = table.schema.names
    for name in policy.columns:
        if names.count(name) != 1:
            raise ColumnPolicyError(f"column {name!r} is not (exactly once) in the table")
        f = table.schema.field(name)
        if f.metadata and META_KEY in f.metadata:
            raise ColumnPolicyError(f"column {name!r} is already encrypted")
        _cells.check_type(f.type, name)
        if name in policy.deterministic and pa.types.is_boolean(_cells.value_type(f.type)):
            raise UnsupportedTypeError(
                f"deterministic mode is refused for the boolean column {name!r}: with two possible values, "
                "anyone who knows one row's value reads the whole column; encrypt it randomized")
    keys: dict[str, ColumnKey] = {}
    for name, spec in policy.columns.items():
        if spec not in keys:
            keys[spec] = _writer_key(spec, policy)
        i = names.index(name)
        column, f = _encrypt_column(table.column(i), table.schema.field(i), keys[spec], policy.mode(name), core)
        table = table.set_column(i, f, column)
    return table


def _writer_key(spec: str, policy: ColumnPolicy) -> ColumnKey:
    options = policy.resolver_options
    if spec.startswith(TOKEN_PREFIX):
        blob = blob_of(spec)
        trusted = policy.trusted_keys or trusted_key_list(own_trust(blob))
        return open_key(blob, trusted, None, options)
    return new_key(spec, policy.encryption_context, options)


def _encrypt_column(column: pa.ChunkedArray, field: pa.Field, key: ColumnKey, mode: str,
                    core: str | None) -> tuple[pa.ChunkedArray, pa.Field]:
    salt = os.urandom(_engine.SALT_SIZE) if mode == RANDOMIZED else b""  # one batch: this call's column
    cipher_key = key.gcm_key(salt) if mode == RANDOMIZED else key.siv_key()
    ad = associated_data(key.key_id, field.name)
    overhead = _OVERHEAD[mode]
    chunks, row = [], 0
    for chunk in column.chunks:
        cells = _cells.to_cells(chunk)
        lengths = np.diff(cells.offsets)
        out_off = np.zeros(cells.n + 1, np.int64)
        np.cumsum(np.where(cells.valid, lengths + overhead, 0), out=out_off[1:])
        dst = np.empty(int(out_off[-1]), np.uint8)
        if mode == RANDOMIZED:
            _engine.seal_salted(cipher_key, salt, ad, cells.data, cells.offsets, cells.valid, dst, out_off, row,
                                use=core)
        else:
            _engine.seal("siv", cipher_key, ad, cells.data, cells.offsets, cells.valid, dst, out_off, use=core)
        row += cells.n
        chunks.append(_cells.binary_array(dst, out_off, cells.valid))
    kind = pa.large_binary() if any(pa.types.is_large_binary(c.type) for c in chunks) else pa.binary()
    chunks = [c.cast(kind) if c.type != kind else c for c in chunks]
    meta = ColumnMeta.make(field.name, mode, field, key)
    new_field = pa.field(field.name, kind, field.nullable, {META_KEY: meta.to_json()})
    return pa.chunked_array(chunks, kind), new_field


def decrypt_table(table: pa.Table, columns: PolicyArg | Sequence[str] | None = None, *,
                  trusted_keys: TrustedKeysArg = None, encryption_context: Mapping[str, str] | None = None,
                  schema: pa.Schema | None = None, core: str | None = None, **resolver_options: Any) -> pa.Table:
    """``table`` with its encrypted columns (all of them, or those named) decrypted to their
    original fields (name, type, nullability, metadata).

    A column opens only if its column key opens through a slot naming a trusted key:
    ``trusted_keys`` when given, else the keys a policy names (when ``columns`` is a policy or a
    mapping), else the default key only (as ``envcrypt.decrypt``).  Tampered, truncated or moved
    cells and edited metadata raise IntegrityError; an untrusted key UntrustedKeyError.
    ``schema`` supplies the encrypted fields' metadata when an engine dropped it (polars keeps
    the cells but not Arrow field metadata: pass ``pyarrow.parquet.read_schema(path)``).
    """
    if not isinstance(table, pa.Table):
        raise TypeError(f"decrypt_table takes a pyarrow.Table, not {type(table).__name__}")
    options: dict[str, Any] = dict(resolver_options)
    names: list[str]
    if schema is not None:
        for f in schema:
            i = table.schema.get_field_index(f.name)
            if i >= 0 and f.metadata and META_KEY in f.metadata and not table.schema.field(i).metadata:
                table = table.set_column(i, table.schema.field(i).with_metadata(f.metadata), table.column(i))
    if columns is None:
        names = encrypted_columns(table)
        trusted_default: Sequence[str] = default_trusted_keys()
    elif isinstance(columns, (ColumnPolicy, Mapping)):
        policy = ColumnPolicy.from_any(columns)
        names, trusted_default = list(policy.columns), policy.trusted()
        options = {**policy.resolver_options, **options}
        if encryption_context is None and policy.encryption_context:
            encryption_context = policy.encryption_context
    elif isinstance(columns, str):
        names, trusted_default = [columns], default_trusted_keys()
    else:
        names, trusted_default = list(columns), default_trusted_keys()
    trusted = trusted_key_list(trusted_keys, trusted_default)
    opened: dict[bytes, ColumnKey] = {}
    for name in names:
        if table.schema.names.count(name) != 1:
            raise ColumnPolicyError(f"column {name!r} is not (exactly once) in the table")
        i = table.schema.get_field_index(name)
        meta = meta_of(table.schema.field(i))
        if meta is None:
            raise ColumnPolicyError(f"column {name!r} is not an encrypted column (no {META_KEY.decode()} metadata)")
        if meta.key_blob not in opened:
            opened[meta.key_blob] = open_key(meta.key_blob, trusted, encryption_context, options)
        key = opened[meta.key_blob]
        meta.check(name, key)
        column = _decrypt_column(table.column(i), name, meta, key, core)
        table = table.set_column(i, meta.field.with_name(name), column)
    return table


def _decrypt_column(column: pa.ChunkedArray, name: str, meta: ColumnMeta, key: ColumnKey,
                    core: str | None) -> pa.ChunkedArray:
    ad = associated_data(key.key_id, name)
    batch_keys: dict[bytes, bytes] = {}

    def gcm_key(salt: bytes) -> bytes:
        if salt not in batch_keys:
            batch_keys[salt] = key.gcm_key(salt)
        return batch_keys[salt]
    overhead = _OVERHEAD[meta.mode]
    t = meta.field.type
    chunks = []
    for chunk in column.chunks:
        cells = _cells.binary_cells(chunk)
        lengths = np.diff(cells.offsets)
        if np.any(lengths[cells.valid] < overhead):
            raise IntegrityError()
        plain_len = np.where(cells.valid, lengths - overhead, 0)
        out_off = _cells.plain_offsets(t, plain_len, cells.valid)
        dst = np.zeros(int(out_off[-1]), np.uint8)
        if meta.mode == RANDOMIZED:
            try:
                _engine.open_salted(gcm_key, ad, cells.data, cells.offsets, cells.valid, dst, out_off, use=core)
            except IntegrityError:
                raise IntegrityError(
                    f"column {name!r}: a cell failed authentication (tampered, moved from another column, or "
                    "written under another column key: rows of several encrypt_table calls decrypt together "
                    "only when they share one column key, a token from new_column_key)") from None
        else:
            _engine.open_("siv", key.siv_key(), ad, cells.data, cells.offsets, cells.valid, dst, out_off,
                          use=core)
        chunks.append(_cells.from_cells(t, dst, out_off, cells.valid))
    return pa.chunked_array(chunks, t)


def load_column_key(key: str | ColumnKey, *, trusted_keys: TrustedKeysArg = None,
                    **resolver_options: Any) -> ColumnKey:
    """Open a column key token once (to call :func:`encrypt_value` many times without a key
    service call each); trusted keys default to those its slots name."""
    if isinstance(key, ColumnKey):
        return key
    blob = blob_of(key)
    return open_key(blob, trusted_key_list(trusted_keys, own_trust(blob)), None, resolver_options)


def encrypt_value(value: Any, key: str | ColumnKey, *, column: str, type: pa.DataType | None = None,
                  trusted_keys: TrustedKeysArg = None, **resolver_options: Any) -> bytes | None:
    """The deterministic cell of ``value`` in column ``column`` under a column key (token or
    :func:`load_column_key`): what ``col == encrypt_value(...)`` compares against in any engine.

    ``type`` is the column's original Arrow type when Python's inference would differ
    (``pa.int32()`` for an int32 column).  None for a null value.
    """
    opened = load_column_key(key, trusted_keys=trusted_keys, **resolver_options)
    arr = pa.array([value], type=type)
    if arr.null_count:
        return None
    _cells.check_type(arr.type, column)
    if pa.types.is_boolean(_cells.value_type(arr.type)):
        raise UnsupportedTypeError("deterministic mode is refused for booleans")
    cells = _cells.to_cells(arr)
    size = int(cells.offsets[1] - cells.offsets[0]) + _engine.SIV_OVERHEAD
    dst = np.empty(size, np.uint8)
    _engine.seal("siv", opened.siv_key(), associated_data(opened.key_id, column), cells.data, cells.offsets,
                 cells.valid, dst, np.array([0, size], np.int64))
    return dst.tobytes()
