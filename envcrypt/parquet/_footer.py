"""What a Parquet file's tail says about its encryption, read without any key.

A minimal reader of the Thrift compact protocol (the Parquet footer encoding)
pulls out only the fields PME defines: the footer mode (``PARE``: encrypted
footer, whose plaintext ``FileCryptoMetaData`` names the footer key; ``PAR1``
with ``encryption_algorithm``: plaintext, signed footer), the footer key
metadata, and, in a plaintext footer, each column chunk's crypto metadata
(which columns use which key).  Key metadata is PME key material (JSON naming
the master key id and holding wrapped keys) or, with external key material, a
reference into the ``_KEY_MATERIAL_FOR_<file>.json`` file beside the data.
Nothing here decrypts; every length is bounded by the bytes at hand.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

from ..errors import MalformedHeaderError

__all__ = ["FooterInfo", "parse_tail", "TAIL_SIZE", "key_material_path"]

TAIL_SIZE = 8
MAX_FOOTER = 256 * 1024 * 1024
_MAX_DEPTH = 32
_U32 = struct.Struct("<I")
KEY_MATERIAL_PREFIX = "_KEY_MATERIAL_FOR_"


def key_material_path(parquet_path: str) -> str:
    """Where PME keeps the external key material of ``parquet_path`` (the same directory)."""
    head, sep, name = parquet_path.rpartition("/")
    return f"{head}{sep}{KEY_MATERIAL_PREFIX}{name}.json"


class _Compact:
    """Thrift compact protocol values as nested dicts {field id: value}."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def _byte(self) -> int:
        if self.pos >= len(self.data):
            raise MalformedHeaderError("Parquet footer: truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def _varint(self) -> int:
        shift = result = 0
        while True:
            b = self._byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise MalformedHeaderError("Parquet footer: bad varint")

    def _zigzag(self) -> int:
        n = self._varint()
        return (n >> 1) ^ -(n & 1)

    def _binary(self) -> bytes:
        n = self._varint()
        if n > len(self.data) - self.pos:
            raise MalformedHeaderError("Parquet footer: a length is out of bounds")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def value(self, kind: int, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise MalformedHeaderError("Parquet footer: nested too deep")
        if kind in (1, 2):
            return kind == 1
        if kind == 3:
            return self._byte()
        if kind in (4, 5, 6):
            return self._zigzag()
        if kind == 7:
            self.pos += 8
            return None
        if kind == 8:
            return self._binary()
        if kind in (9, 10):
            head = self._byte()
            size, elem = head >> 4, head & 0x0F
            if size == 15:
                size = self._varint()
            if size > len(self.data) - self.pos:
                raise MalformedHeaderError("Parquet footer: a list size is out of bounds")
            if elem in (1, 2):
                return [self._byte() == 1 for _ in range(size)]
            return [self.value(elem, depth + 1) for _ in range(size)]
        if kind == 11:
            size = self._varint()
            if size == 0:
                return {}
            if size > len(self.data) - self.pos:
                raise MalformedHeaderError("Parquet footer: a map size is out of bounds")
            kinds = self._byte()
            return {self.value(kinds >> 4, depth + 1): self.value(kinds & 0x0F, depth + 1) for _ in range(size)}
        if kind == 12:
            return self.struct(depth + 1)
        raise MalformedHeaderError(f"Parquet footer: unknown Thrift type {kind}")

    def struct(self, depth: int = 0) -> dict[int, Any]:
        out: dict[int, Any] = {}
        last = 0
        while True:
            head = self._byte()
            if head == 0:
                return out
            delta, kind = head >> 4, head & 0x0F
            fid = last + delta if delta else self._zigzag()
            out[fid] = self.value(kind, depth)
            last = fid


@dataclass
class FooterInfo:
    """The encryption a file's tail declares (no key needed, nothing decrypted)."""

    encrypted: bool
    footer: str  # "encrypted", "plaintext (signed)" or "plaintext"
    algorithm: str | None = None
    footer_key_metadata: bytes | None = None
    #: column path -> key metadata (b"" for the footer key); plaintext footers only
    columns: dict[str, bytes] = field(default_factory=dict)
    plaintext_columns: list[str] = field(default_factory=list)


_ALGORITHMS = {1: "AES_GCM_V1", 2: "AES_GCM_CTR_V1"}


def _algorithm(union: Any) -> str | None:
    if isinstance(union, dict) and union:
        return _ALGORITHMS.get(min(union), f"unknown ({min(union)})")
    return None


def footer_length(tail: bytes) -> tuple[bytes, int]:
    """``(magic, footer length)`` from a file's last 8 bytes."""
    if len(tail) != TAIL_SIZE:
        raise MalformedHeaderError("not a Parquet file (too short)")
    magic = tail[4:]
    if magic not in (b"PAR1", b"PARE"):
        raise MalformedHeaderError("not a Parquet file (no PAR1/PARE magic at the end)")
    (length,) = _U32.unpack(tail[:4])
    if not 0 < length <= MAX_FOOTER:
        raise MalformedHeaderError("Parquet footer length out of bounds")
    return magic, length


def parse_tail(magic: bytes, footer: bytes) -> FooterInfo:
    """The encryption declared by a footer (``footer``: the bytes before the last 8)."""
    reader = _Compact(footer)
    if magic == b"PARE":
        crypto = reader.struct()  # FileCryptoMetaData
        return FooterInfo(True, "encrypted", _algorithm(crypto.get(1)), crypto.get(2))
    meta = reader.struct()  # FileMetaData
    algorithm = _algorithm(meta.get(8))
    info = FooterInfo(algorithm is not None, "plaintext (signed)" if algorithm else "plaintext",
                      algorithm, meta.get(9))
    for row_group in meta.get(4) or []:
        for chunk in row_group.get(1) or []:
            crypto = chunk.get(8)
            path = _path(chunk)
            if not crypto:
                if path and path not in info.plaintext_columns:
                    info.plaintext_columns.append(path)
            elif 2 in crypto:
                col = crypto[2]
                info.columns.setdefault(".".join(p.decode("utf-8", "replace") for p in col.get(1) or []),
                                        col.get(2) or b"")
            elif path:
                info.columns.setdefault(path, b"")
        break  # every row group encrypts the same columns
    return info


def _path(chunk: dict[int, Any]) -> str:
    meta = chunk.get(3)
    if isinstance(meta, dict) and meta.get(3):
        return ".".join(p.decode("utf-8", "replace") for p in meta[3])
    return ""


def key_material(metadata: bytes | None) -> dict[str, Any]:
    """PME key metadata as a dict (key material, or ``{"keyReference": ...}`` for external material)."""
    if not metadata:
        return {}
    try:
        value = json.loads(metadata)
    except ValueError as exc:
        raise MalformedHeaderError("PME key metadata is not JSON") from exc
    if not isinstance(value, dict):
        raise MalformedHeaderError("PME key metadata is not a JSON object")
    return value
