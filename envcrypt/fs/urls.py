"""Turning user URLs into filesystems: ``envcrypt::`` is added where a command means encrypted data.

- A bare path (``raw``, ``data/x.csv``, ``/srv/lake``: no ``://`` and no ``::``) is a local
  path, made absolute; it is never read as an fsspec protocol name (fsspec would take
  ``data`` for its ``data:`` filesystem).
- Storage options are always keyed by protocol (``{"envcrypt": {...}, "s3": {...}}``),
  as fsspec's chained URLs expect; a top-level key that names no protocol is refused
  (``StorageOptionsError``) instead of being dropped silently.
- A protocol whose implementation is not installed raises ``MissingDependencyError``
  naming the extra to install (``pip install 'envcrypt[aws]'``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import split_protocol
from fsspec.registry import known_implementations, registry

from ..errors import MissingDependencyError, StorageOptionsError
from .filesystem import EnvcryptFileSystem

__all__ = ["encrypted_fs", "plain_fs", "local_or_url", "check_storage_options", "PREFIX"]

PREFIX = "envcrypt::"

#: protocol -> the envcrypt extra that installs its fsspec implementation
EXTRAS = {"s3": "aws", "s3a": "aws", "abfs": "azure", "abfss": "azure", "az": "azure", "adl": "azure"}


def local_or_url(url: str) -> str:
    """``url`` itself when it is an fsspec URL (``proto://...`` or a chain), else the bare
    path as an absolute ``file://`` URL (a trailing ``/`` is kept)."""
    if "://" in url or "::" in url:
        return url
    path = os.path.abspath(os.path.expanduser(url))
    if url.endswith("/") and not path.endswith("/"):
        path += "/"
    return "file://" + path


def check_storage_options(storage_options: Any) -> dict[str, dict[str, Any]]:
    """A copy of ``storage_options`` after checking it is ``{protocol: {option: value}}``."""
    if storage_options is None:
        return {}
    if not isinstance(storage_options, Mapping):
        raise StorageOptionsError(
            'storage options are an object keyed by protocol, e.g. {"s3": {"endpoint_url": "http://..."}}, '
            f"not a {type(storage_options).__name__}")
    known = set(known_implementations) | set(registry) | {"envcrypt"}
    out: dict[str, dict[str, Any]] = {}
    for key, value in storage_options.items():
        if key not in known:
            raise StorageOptionsError(
                f"storage option {key!r} is not a protocol name: options are keyed by protocol, "
                f'e.g. {{"s3": {{"{key}": ...}}}} or {{"envcrypt": {{"{key}": ...}}}}')
        if not isinstance(value, Mapping):
            raise StorageOptionsError(
                f"the options of protocol {key!r} are an object of option names, not {value!r}")
        out[key] = dict(value)
    return out


def _url_to_fs(url: str, options: Mapping[str, Any]) -> tuple[Any, str]:
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        protocols = [split_protocol(bit)[0] or "file" for bit in url.split("::")]
        missing = next((p for p in protocols if p in EXTRAS), None)
        hint = (f"pip install 'envcrypt[{EXTRAS[missing]}]'" if missing
                else f"install the fsspec implementation it names ({exc})")
        raise MissingDependencyError(
            f"{url}: the {missing or 'protocol'} filesystem is not installed: {hint}") from exc
    return fs, str(path)


def encrypted_fs(
    url: str, storage_options: Mapping[str, Any] | None = None, **envcrypt_options: Any
) -> tuple[EnvcryptFileSystem, str]:
    """The envcrypt filesystem and path for ``url`` (``envcrypt::`` is implied when missing)."""
    inner = url[len(PREFIX):] if url.startswith(PREFIX) else url
    url = PREFIX + local_or_url(inner)
    options: dict[str, Any] = check_storage_options(storage_options)
    options.setdefault("envcrypt", {}).update({k: v for k, v in envcrypt_options.items() if v is not None})
    fs, path = _url_to_fs(url, options)
    if not isinstance(fs, EnvcryptFileSystem):
        raise StorageOptionsError(f"not an envcrypt URL: {url!r}")
    return fs, path


def plain_fs(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The filesystem and path of a plain (not envcrypt) URL, with its protocol's options only."""
    if url.startswith(PREFIX):
        raise StorageOptionsError(f"expected a plain URL, not an envcrypt one: {url!r}")
    url = local_or_url(url)
    protocol = split_protocol(url)[0] or "file"
    options = check_storage_options(storage_options).get(protocol) or {}
    return _url_to_fs(url, options)
