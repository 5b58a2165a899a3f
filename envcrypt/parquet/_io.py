"""Paths, filesystems, the footer check and the Arrow error boundary."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import EnvcryptError, IntegrityError, MalformedHeaderError, NotEncryptedError, UntrustedKeyError
from ._footer import TAIL_SIZE, FooterInfo, footer_length, parse_tail

__all__ = ["resolve", "read_footer", "require_pme", "arrow_errors"]

Where = str | os.PathLike[str]


def resolve(where: Where, filesystem: Any = None) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and a path in it, from a path or URL and an optional filesystem
    (a pyarrow FileSystem, or any fsspec filesystem, the ``envcrypt::`` one included)."""
    if isinstance(where, os.PathLike):
        where = os.fspath(where)
    if not isinstance(where, str):
        raise TypeError(f"a Parquet path is a str or os.PathLike, not {type(where).__name__}")
    if filesystem is None:
        if "://" in where:
            fs, path = pafs.FileSystem.from_uri(where)
            return fs, path
        return pafs.LocalFileSystem(), os.path.abspath(where)
    if isinstance(filesystem, pafs.FileSystem):
        return filesystem, where
    strip = getattr(filesystem, "_strip_protocol", None)
    path = str(strip(where)) if strip is not None else where
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path


def read_footer(fs: pafs.FileSystem, path: str) -> FooterInfo:
    """The encryption a Parquet file's footer declares (two small reads, no key)."""
    with fs.open_input_file(path) as f:
        size = f.size()
        if size < 12:
            raise MalformedHeaderError(f"{path}: not a Parquet file (too short)")
        f.seek(size - TAIL_SIZE)
        magic, length = footer_length(f.read(TAIL_SIZE))
        if length > size - 12:
            raise MalformedHeaderError(f"{path}: Parquet footer length out of bounds")
        f.seek(size - TAIL_SIZE - length)
        footer = f.read(length)
    return parse_tail(magic, footer)


def require_pme(fs: pafs.FileSystem, path: str) -> FooterInfo:
    """The footer info of a PME file; NotEncryptedError for a file that is not PME-encrypted.

    pyarrow reads a plaintext Parquet file even when decryption properties are given, so a
    storage writer could replace an encrypted file with a plaintext one of their own."""
    info = read_footer(fs, path)
    if not info.encrypted:
        raise NotEncryptedError(
            f"{path} is not a Parquet modular encryption file (a reader with decryption= accepts "
            "only files whose footer is encrypted or signed under a trusted key)")
    return info


#: Arrow message fragments -> the envcrypt error they mean (first match wins)
_MESSAGES: tuple[tuple[str, type[EnvcryptError]], ...] = (
    ("Applying decryption properties on plaintext file", NotEncryptedError),
    ("no decryption found", UntrustedKeyError),
    ("not setup correctly", UntrustedKeyError),
    ("encrypted column", UntrustedKeyError),
    ("Failed decryption", IntegrityError),
    ("decryption failed", IntegrityError),
    ("signature", IntegrityError),
    ("Signature", IntegrityError),
    ("Deserializing page header failed", IntegrityError),
    ("Couldn't deserialize thrift", IntegrityError),
    ("deserialize", IntegrityError),
    ("Corrupt", IntegrityError),
    ("corrupt", IntegrityError),
    ("Invalid", IntegrityError),
)

_EXPLAIN = {
    UntrustedKeyError: "the file is PME-encrypted and this read trusts no key for it: pass decryption=...",
    IntegrityError: "the Parquet file failed authentication or is corrupt",
    NotEncryptedError: "the file is not PME-encrypted",
}


def map_arrow_error(exc: BaseException, path: str) -> EnvcryptError | None:
    """The envcrypt error an Arrow error stands for on a PME read or write (None: not ours to map)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return None
    if not isinstance(exc, (OSError, pa.ArrowException)):
        return None
    message = str(exc)
    for fragment, cls in _MESSAGES:
        if fragment in message:
            return cls(f"{path}: {_EXPLAIN.get(cls, '')}".rstrip(": "))
    return None


@contextlib.contextmanager
def arrow_errors(path: str) -> Iterator[None]:
    """Typed envcrypt errors for what Arrow reports as OSError/ArrowException (``raise ... from``);
    envcrypt errors from the KMS bridge pass through unchanged."""
    try:
        yield
    except EnvcryptError:
        raise
    except Exception as exc:
        mapped = map_arrow_error(exc, path)
        if mapped is None:
            raise
        raise mapped from exc
