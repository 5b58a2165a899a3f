"""Column-level encryption of Arrow tables, cell by cell (randomized or deterministic).

Some columns of a table are encrypted cell by cell into binary columns; the others stay
readable by any tool, and rows can be filtered, reordered, partitioned and joined without
decrypting.  The result is an ordinary Arrow table: write it as Parquet, Arrow IPC/Feather
or anything else Arrow writes, move it through pandas, polars, duckdb or dask::

    enc = envcrypt.columns.encrypt_table(table, columns={"ssn": "local:pii"})
    plain = envcrypt.columns.decrypt_table(enc, columns={"ssn": "local:pii"})

* randomized (default): AES-256-GCM, ``salt(16) || nonce(12) || ciphertext || tag(16)`` per cell
  (the salt names the batch key, so the tables of many calls under one column key concatenate);
* deterministic: AES-256-SIV (RFC 5297), ``siv(16) || ciphertext``: equal values give equal
  cells under one column key (a token from :func:`new_column_key`), for equality filters and
  joins (``col == encrypt_value("alice@x", token, column="email")``).

A column master key (a key URI) wraps each column encryption key through the key resolvers;
a reader opens a column only through a trusted key (``trusted_keys=``).  FORMAT.md,
"Encrypted columns", describes the cells, the metadata and the key hierarchy; SECURITY.md
what deterministic mode leaks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UnsupportedTypeError
from ._engine import compiled_available
from ._frame import FRAME_ATTR, dask_decrypt, dask_encrypt, decrypt_frame, encrypt_frame, frame_schema
from ._keys import ColumnKey
from ._policy import ColumnPolicy, ColumnPolicyError
from ._rotate import rotate
from ._table import decrypt_table, encrypt_table, encrypt_value, encrypted_columns, load_column_key
from ._writer import parquet_write_options

__all__ = [
    "encrypt_table", "decrypt_table", "encrypt_value", "load_column_key", "new_column_key",
    "encrypted_columns", "ColumnPolicy", "ColumnPolicyError", "ColumnKey", "UnsupportedTypeError",
    "compiled_available", "rotate", "encrypt_frame", "decrypt_frame", "frame_schema", "dask_encrypt",
    "dask_decrypt", "FRAME_ATTR", "parquet_write_options",
]


def new_column_key(key_uri: str | Sequence[str], *, encryption_context: Mapping[str, str] | None = None,
                   **resolver_options: Any) -> str:
    """A new column encryption key wrapped under ``key_uri``, as a token (``eck1....``): plain
    data, no secret; name it in a policy for every file and process that must share the key
    (deterministic columns, joins)."""
    from ._keys import new_key

    return new_key(key_uri, encryption_context, resolver_options).token
