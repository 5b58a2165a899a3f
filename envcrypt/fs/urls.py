"""Turning user URLs into filesystems: ``envcrypt::`` is added where a command means encrypted data.

Storage options are always keyed by protocol (``{"envcrypt": {...}, "s3": {...}}``),
as fsspec's chained URLs expect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import split_protocol

from .filesystem import EnvcryptFileSystem

__all__ = ["encrypted_fs", "plain_fs", "PREFIX"]

PREFIX = "envcrypt::"


def encrypted_fs(
    url: str, storage_options: Mapping[str, Any] | None = None, **envcrypt_options: Any
) -> tuple[EnvcryptFileSystem, str]:
    """The envcrypt filesystem and path for ``url`` (``envcrypt::`` is implied when missing)."""
    if not url.startswith(PREFIX):
        url = PREFIX + url
    options = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (storage_options or {}).items()}
    options.setdefault("envcrypt", {}).update({k: v for k, v in envcrypt_options.items() if v is not None})
    fs, path = fsspec.core.url_to_fs(url, **options)
    if not isinstance(fs, EnvcryptFileSystem):
        raise ValueError(f"not an envcrypt URL: {url!r}")
    return fs, path


def plain_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The filesystem and path of a plain (not envcrypt) URL, with its protocol's options only."""
    if url.startswith(PREFIX):
        raise ValueError(f"expected a plain URL, not an envcrypt one: {url!r}")
    protocol = split_protocol(url)[0] or "file"
    options = dict((storage_options or {}).get(protocol) or {})
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path
