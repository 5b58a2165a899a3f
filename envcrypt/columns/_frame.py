"""pandas and dask: encrypt and decrypt columns of a DataFrame, keeping the other columns as they are.

``encrypt_frame`` turns each named column into an ``object`` column of cells (``bytes``, ``None``
for a null) through :func:`~envcrypt.columns.encrypt_table`; the column's metadata (FORMAT.md,
"Encrypted columns") goes to ``df.attrs["envcrypt.columns"]`` (pandas keeps ``attrs`` through
pickling, copies and ``to_parquet``), and the column's pandas dtype into the original field's
metadata (``envcrypt.pandas_dtype``), so it is authenticated with the rest.  ``decrypt_frame``
gives the columns back with their dtypes.  The metadata can also come from ``schema=`` (an Arrow
schema holding the encrypted fields: ``pyarrow.parquet.read_schema(path)``, :func:`frame_schema`).

``dask_encrypt`` / ``dask_decrypt`` run these in the workers (``map_partitions``).  Every
partition shares one column key (a key URI in the policy is turned into one fresh column key on
the client, per call) and one pinned Arrow type per column, so every partition writes the same
metadata and the partitions of a dataset decrypt together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa

from ..errors import UnsupportedTypeError
from ..slots import TrustedKeysArg
from ._keys import TOKEN_PREFIX, new_key
from ._meta import META_KEY, meta_of
from ._policy import ColumnPolicy, ColumnPolicyError, PolicyArg
from ._table import decrypt_table, encrypt_table, policy_from_args

__all__ = ["encrypt_frame", "decrypt_frame", "frame_schema", "dask_encrypt", "dask_decrypt", "FRAME_ATTR",
           "PANDAS_DTYPE"]

FRAME_ATTR = "envcrypt.columns"
PANDAS_DTYPE = b"envcrypt.pandas_dtype"

TypesArg: TypeAlias = "pa.Schema | Mapping[str, pa.DataType] | None"


def _types(types: TypesArg) -> dict[str, pa.DataType]:
    if types is None:
        return {}
    if isinstance(types, pa.Schema):
        return {f.name: f.type for f in types}
    return dict(types)


def _arrow(series: Any, name: str, typ: pa.DataType | None) -> pa.Array:
    try:
        return pa.Array.from_pandas(series, type=typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise UnsupportedTypeError(f"column {name!r} (dtype {series.dtype}) does not convert to one Arrow "
                                   f"type: {exc}") from None


def encrypt_frame(df: Any, columns: PolicyArg | None = None, deterministic: Sequence[str] = (),
                  encryption_context: Mapping[str, str] | None = None, *, trusted_keys: TrustedKeysArg = None,
                  types: TypesArg = None, core: str | None = None, **resolver_options: Any) -> Any:
    """A copy of the pandas DataFrame ``df`` with the policy's columns encrypted into ``object``
    columns of cells (``bytes``; ``None`` for a null); the other columns, the index and ``attrs``
    are kept, and the columns' metadata is added to ``attrs["envcrypt.columns"]``.

    The policy is as for :func:`encrypt_table`.  ``types`` pins the Arrow type of a column
    (``{"n": pa.int32()}`` or a schema) where pandas' inference would depend on the data (an
    ``object`` column of all-None values).
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"encrypt_frame takes a pandas.DataFrame, not {type(df).__name__}")
    policy = policy_from_args(columns, deterministic, encryption_context, trusted_keys, resolver_options)
    pinned = _types(types)
    arrays, fields = [], []
    for name in policy.columns:
        if list(df.columns).count(name) != 1:
            raise ColumnPolicyError(f"column {name!r} is not (exactly once) in the frame")
        arr = _arrow(df[name], name, pinned.get(name))
        arrays.append(arr)
        fields.append(pa.field(name, arr.type, metadata={PANDAS_DTYPE: str(df[name].dtype).encode()}))
    enc = encrypt_table(pa.table(arrays, schema=pa.schema(fields)), policy, core=core)
    out = df.copy(deep=False)
    metas = dict(out.attrs.get(FRAME_ATTR, {}))
    for name in policy.columns:
        cells = enc.column(name).to_numpy(zero_copy_only=False)
        out[name] = pd.Series(cells, index=df.index, name=name, dtype=object)
        metas[name] = enc.schema.field(name).metadata[META_KEY].decode("ascii")
    out.attrs = {**out.attrs, FRAME_ATTR: metas}
    return out


def frame_schema(df: Any) -> pa.Schema:
    """The encrypted fields of a frame from :func:`encrypt_frame` (binary, with their metadata):
    for ``to_parquet(schema=...)`` and for ``decrypt_frame(schema=...)`` once ``attrs`` are lost."""
    metas = getattr(df, "attrs", {}).get(FRAME_ATTR, {})
    return pa.schema([pa.field(n, pa.binary(), metadata={META_KEY: m.encode("ascii")}) for n, m in metas.items()])


def _to_pandas(column: pa.ChunkedArray, field: pa.Field, index: Any) -> Any:
    import pandas as pd
    from pandas.api.types import pandas_dtype

    raw = (field.metadata or {}).get(PANDAS_DTYPE)
    dtype = pandas_dtype(raw.decode("utf-8")) if raw else None
    from_arrow = getattr(dtype, "__from_arrow__", None)
    if from_arrow is not None:
        return pd.Series(from_arrow(column), index=index, name=field.name)
    if isinstance(dtype, np.dtype) and dtype.kind == "O":  # None for nulls, as pandas keeps them in object columns
        return pd.Series(column.to_numpy(zero_copy_only=False), index=index, name=field.name, dtype=object)
    series = column.to_pandas()
    series.index = index
    if dtype is not None and series.dtype != dtype:
        series = series.astype(dtype)
    return series.rename(field.name)


def decrypt_frame(df: Any, columns: PolicyArg | Sequence[str] | None = None, *, trusted_keys: TrustedKeysArg = None,
                  encryption_context: Mapping[str, str] | None = None, schema: pa.Schema | None = None,
                  core: str | None = None, **resolver_options: Any) -> Any:
    """A copy of the pandas DataFrame ``df`` with its encrypted columns (all of them, or those
    named) decrypted back to their dtypes.  Trust, errors and ``columns`` are as for
    :func:`decrypt_table`; the metadata comes from ``schema`` when given, else from ``df.attrs``."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"decrypt_frame takes a pandas.DataFrame, not {type(df).__name__}")
    known: dict[str, bytes] = {n: m.encode("ascii") for n, m in df.attrs.get(FRAME_ATTR, {}).items()}
    if schema is not None:
        known = {f.name: f.metadata[META_KEY] for f in schema if f.metadata and META_KEY in f.metadata}
    if columns is None:
        names = [n for n in known if n in df.columns]
    elif isinstance(columns, (ColumnPolicy, Mapping)):
        names = list(ColumnPolicy.from_any(columns).columns)
    else:
        names = [columns] if isinstance(columns, str) else list(columns)
    arrays, fields = [], []
    for name in names:
        if list(df.columns).count(name) != 1:
            raise ColumnPolicyError(f"column {name!r} is not (exactly once) in the frame")
        arrays.append(_arrow(df[name], name, pa.binary()))
        fields.append(pa.field(name, pa.binary(), metadata={META_KEY: known[name]} if name in known else None))
    plain = decrypt_table(pa.table(arrays, schema=pa.schema(fields)), columns if columns is not None else names,
                          trusted_keys=trusted_keys, encryption_context=encryption_context, core=core,
                          **resolver_options)
    out = df.copy(deep=False)
    for name in names:
        out[name] = _to_pandas(plain.column(name), plain.schema.field(name), df.index)
    left = {n: m for n, m in df.attrs.get(FRAME_ATTR, {}).items() if n not in names}
    out.attrs = {k: v for k, v in out.attrs.items() if k != FRAME_ATTR}
    if left:
        out.attrs[FRAME_ATTR] = left
    return out


# ------------------------------------------------------------------ dask


def dask_encrypt(ddf: Any, columns: PolicyArg | None = None, deterministic: Sequence[str] = (),
                 encryption_context: Mapping[str, str] | None = None, *, trusted_keys: TrustedKeysArg = None,
                 types: TypesArg = None, **resolver_options: Any) -> Any:
    """A dask DataFrame whose partitions are :func:`encrypt_frame`-ed in the workers.

    A key URI in the policy becomes one fresh column key for this call, made here (so every
    partition shares it); each column's Arrow type is pinned from the frame's dtypes (or
    ``types``), so every partition writes the same metadata.  The result's ``attrs`` and
    :func:`frame_schema` hold that metadata (``to_parquet(..., schema=frame_schema(enc))``)."""
    policy = policy_from_args(columns, deterministic, encryption_context, trusted_keys, resolver_options)
    shared = {name: spec if spec.startswith(TOKEN_PREFIX)
              else new_key(spec, policy.encryption_context, policy.resolver_options).token
              for name, spec in policy.columns.items()}
    policy = ColumnPolicy(**{**policy.to_dict(), "columns": shared})
    pinned = _types(types)
    sample = ddf._meta_nonempty
    for name in policy.columns:
        if name not in pinned and name in sample.columns:
            pinned[name] = _arrow(sample[name], name, None).type
    meta = encrypt_frame(ddf._meta, policy, types=pinned)
    plain = policy.to_dict()
    return ddf.map_partitions(encrypt_frame, plain, types=pinned, meta=meta)


def dask_decrypt(ddf: Any, columns: PolicyArg | Sequence[str] | None = None, *, trusted_keys: TrustedKeysArg = None,
                 encryption_context: Mapping[str, str] | None = None, schema: pa.Schema | None = None,
                 **resolver_options: Any) -> Any:
    """A dask DataFrame whose partitions are :func:`decrypt_frame`-ed in the workers; the metadata
    comes from ``schema`` (``pyarrow.parquet.read_schema`` of a file, :func:`frame_schema`) or from
    the frame's ``attrs`` (a frame from :func:`dask_encrypt`)."""
    if schema is None:
        schema = frame_schema(ddf._meta)
    if not len(schema):
        raise ColumnPolicyError("no encrypted column metadata: pass schema= (pyarrow.parquet.read_schema(path) "
                                "or envcrypt.columns.frame_schema of the encrypted frame)")
    for f in schema:
        meta_of(f)  # malformed metadata fails here, on the client
    arg: Any = columns.to_dict() if isinstance(columns, ColumnPolicy) else columns
    kwargs = dict(trusted_keys=trusted_keys, encryption_context=encryption_context, schema=schema,
                  **resolver_options)
    meta = decrypt_frame(ddf._meta, arg, **kwargs)
    return ddf.map_partitions(decrypt_frame, arg, meta=meta, **kwargs)


