"""The field metadata of an encrypted column, and the associated data of its cells.

An encrypted column is a ``binary`` (or ``large_binary``) field whose metadata
holds one entry, ``envcrypt.column``, a JSON object (FORMAT.md, "Encrypted columns")::

    {"format": 2, "mode": "randomized" | "deterministic",
     "suite": "AES-256-GCM" | "AES-256-SIV",
     "field": base64(Arrow IPC schema holding the original field),
     "key": base64(the wrapped column key: an envcrypt object),
     "mac": base64(HMAC-SHA256)}

``mac`` authenticates everything else (and the column's name and the key id) under a
key derived from the CEK, so an edited type, mode or key is an IntegrityError.  Nothing in it
depends on the batch (the batch salt is in each randomized cell), so every ``encrypt_table``
call under one column key gives the same metadata: tables concatenate, datasets of many files
keep the first file's metadata and still decrypt.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from ..errors import IntegrityError, MalformedHeaderError
from ._keys import ColumnKey, key_id_of

__all__ = ["META_KEY", "ColumnMeta", "associated_data", "RANDOMIZED", "DETERMINISTIC", "SUITES",
           "MAX_META_SIZE", "FORMAT"]

META_KEY = b"envcrypt.column"
FORMAT = 2
RANDOMIZED, DETERMINISTIC = "randomized", "deterministic"
SUITES = {RANDOMIZED: "AES-256-GCM", DETERMINISTIC: "AES-256-SIV"}
AD_PREFIX = b"envcrypt.columns/v2\x00"
MAX_META_SIZE = 1 << 20  # bounded before it is parsed
_FIELDS = {"format", "mode", "suite", "field", "key", "mac"}


def associated_data(key_id: bytes, column: str) -> bytes:
    """The AD of every cell: ``"envcrypt.columns/v2" || 0x00 || key_id(16) || UTF-8 column name``."""
    return AD_PREFIX + key_id + column.encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedHeaderError(f"encrypted column metadata: {what} is not a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise MalformedHeaderError(f"encrypted column metadata: {what} is not base64") from exc


def field_bytes(field: pa.Field) -> bytes:
    return bytes(pa.schema([field]).serialize())


@dataclass(frozen=True)
class ColumnMeta:
    mode: str
    field: pa.Field  # the original field (name, type, nullability, metadata)
    field_ipc: bytes
    key_blob: bytes
    mac: bytes

    @property
    def suite(self) -> str:
        return SUITES[self.mode]

    @property
    def key_id(self) -> bytes:
        return key_id_of(self.key_blob)

    @staticmethod
    def mac_message(column: str, mode: str, field_ipc: bytes, key_id: bytes) -> bytes:
        """The canonical bytes the MAC covers: sorted-key compact JSON of the column name, format,
        key id (hex), mode, suite and field (base64)."""
        return json.dumps({"column": column, "format": FORMAT, "key_id": key_id.hex(), "mode": mode,
                           "suite": SUITES[mode], "field": _b64(field_ipc)},
                          sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def make(cls, column: str, mode: str, field: pa.Field, key: ColumnKey) -> ColumnMeta:
        ipc_bytes = field_bytes(field)
        mac = key.mac(cls.mac_message(column, mode, ipc_bytes, key.key_id))
        return cls(mode, field, ipc_bytes, key.blob, mac)

    def check(self, column: str, key: ColumnKey) -> None:
        """IntegrityError unless the MAC verifies for this column name under ``key``."""
        if key.key_id != self.key_id:
            raise IntegrityError()
        expected = key.mac(self.mac_message(column, self.mode, self.field_ipc, key.key_id))
        if not hmac.compare_digest(expected, self.mac):
            raise IntegrityError()

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "mode": self.mode, "suite": self.suite,
                           "field": _b64(self.field_ipc), "key": _b64(self.key_blob),
                           "mac": _b64(self.mac)},
                          sort_keys=True, separators=(",", ":")).encode("ascii")

    def with_key(self, key_blob: bytes) -> ColumnMeta:
        """The same metadata with a rewrapped key (same CEK, so the MAC stays valid)."""
        return ColumnMeta(self.mode, self.field, self.field_ipc, key_blob, self.mac)

    @classmethod
    def parse(cls, raw: bytes, column: str) -> ColumnMeta:
        if len(raw) > MAX_META_SIZE:
            raise MalformedHeaderError(f"column {column!r}: encrypted column metadata over 1 MiB")
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedHeaderError(f"column {column!r}: encrypted column metadata is not JSON") from exc
        if not isinstance(value, dict) or set(value) != _FIELDS:
            raise MalformedHeaderError(f"column {column!r}: encrypted column metadata has other fields")
        if (value["format"] != FORMAT or not isinstance(value["mode"], str)  # a list would not hash
                or value["mode"] not in SUITES or value["suite"] != SUITES[value["mode"]]):
            raise MalformedHeaderError(f"column {column!r}: unknown encrypted column format, mode or suite")
        field_ipc = _unb64(value["field"], "field")
        try:
            schema = ipc.read_schema(pa.py_buffer(field_ipc))
        except (pa.ArrowException, ValueError, OSError) as exc:  # a bad flatbuffer is an OSError
            raise MalformedHeaderError(f"column {column!r}: the original field does not parse") from exc
        if len(schema) != 1:
            raise MalformedHeaderError(f"column {column!r}: the original field does not parse")
        return cls(value["mode"], schema.field(0), field_ipc, _unb64(value["key"], "key"),
                   _unb64(value["mac"], "mac"))


def meta_of(field: pa.Field) -> ColumnMeta | None:
    raw = (field.metadata or {}).get(META_KEY)
    return None if raw is None else ColumnMeta.parse(raw, field.name)
