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

__all__ = ["rotate"]


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
