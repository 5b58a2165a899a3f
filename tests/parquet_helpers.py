"""Shared pieces of the PME tests: a table with every common type, and a test-only KmsClient
that wraps with raw key bytes (what an independent PME implementation would do)."""

from __future__ import annotations

import base64
import datetime
import decimal
import struct

import pyarrow as pa
import pyarrow.parquet.encryption as pe
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding, aes_key_wrap_with_padding

from envcrypt.keys.base import WRAP_AES256_KWP


def typed_table(n: int = 50) -> pa.Table:
    utc = datetime.UTC
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "small": pa.array([i % 100 for i in range(n)], pa.int8()),
        "score": pa.array([i / 3 for i in range(n)], pa.float64()),
        "ratio": pa.array([i / 7 for i in range(n)], pa.float32()),
        "name": [f"name-{i}" for i in range(n)],
        "ssn": [f"{i:03d}-00-{i:04d}" for i in range(n)],
        "email": [None if i % 5 == 0 else f"user{i}@example.com" for i in range(n)],
        "seen": pa.array([datetime.datetime(2026, 1, 1, tzinfo=utc) + datetime.timedelta(seconds=i)
                          for i in range(n)], pa.timestamp("us", tz="Europe/Paris")),
        "amount": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
        "tags": pa.array([[f"t{i}", "x"] if i % 3 else [] for i in range(n)], pa.list_(pa.string())),
        "address": pa.array([{"city": f"c{i}", "zip": i} for i in range(n)],
                            pa.struct([("city", pa.string()), ("zip", pa.int32())])),
        "raw": pa.array([bytes([i % 256]) * 4 for i in range(n)], pa.binary()),
    })


class RawKeyKmsClient(pe.KmsClient):  # type: ignore[misc]
    """Independent of envcrypt: AES-KWP under raw 32-byte master keys, in envcrypt's documented
    wrapped-key string (b"EPK1" | u16 uri | uri | u16 alg | u16 len | wrapped, base64)."""

    def __init__(self, keys: dict[str, tuple[str, bytes]]) -> None:
        super().__init__()
        self.keys = keys  # PME master key id -> (exact key URI, raw key bytes)

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        uri, raw = self.keys[master_key_identifier]
        wrapped = aes_key_wrap_with_padding(raw, bytes(key_bytes))
        u = uri.encode()
        blob = b"EPK1" + struct.pack(">H", len(u)) + u + struct.pack(">HH", WRAP_AES256_KWP, len(wrapped)) + wrapped
        return base64.b64encode(blob).decode()

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        blob = base64.b64decode(wrapped_key)
        assert blob[:4] == b"EPK1"
        n = struct.unpack(">H", blob[4:6])[0]
        uri = blob[6:6 + n].decode()
        alg, m = struct.unpack(">HH", blob[6 + n:10 + n])
        assert alg == WRAP_AES256_KWP and self.keys[master_key_identifier][0] == uri
        return aes_key_unwrap_with_padding(self.keys[master_key_identifier][1], blob[10 + n:10 + n + m])
