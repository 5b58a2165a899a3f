"""Readers pinned to the version of the object they opened.

A reader fetches sealed chunks with many ranged reads.  If the object is
replaced meanwhile, later chunks would come from another object: the AEAD
refuses them (another salt, another key), but as an ``IntegrityError`` that
looks like tampering.  On S3 every ranged GET carries ``If-Match: <ETag>``
of the version the reader opened, so the store itself answers 412 for a
replaced object, which becomes ``ObjectChangedError`` (the reader may then
follow a rewrap, which keeps the body, see ``EnvcryptReadFile``).

Other targets have no conditional read: there the AEAD is what stops a mix
of two objects (an ``IntegrityError``), never a short or mixed read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ObjectChangedError
from ._backend import object_changed

__all__ = ["etag_of", "pins", "pinned_cat", "pinned_ranges"]


def pins(target: Any) -> bool:
    """Whether reads of ``target`` can be pinned to a version (S3: ``If-Match``)."""
    protocol = target.protocol if isinstance(target.protocol, (tuple, list)) else (target.protocol,)
    return "s3" in protocol and hasattr(target, "_call_s3")


def etag_of(target: Any, info: Mapping[str, Any]) -> str | None:
    """The ETag to pin reads of an object to, for targets that honour ``If-Match`` (S3)."""
    if not pins(target):
        return None
    etag = info.get("ETag")
    return str(etag) if etag else None


async def _get_pinned(target: Any, path: str, start: int, end: int, etag: str) -> bytes:
    """One ranged GET of ``path`` with ``If-Match: etag``, through s3fs's own retrying call
    wrapper (a body cut mid-way is retried there, as for ``cat_file``); a 412 raises
    ``ObjectChangedError``."""
    from s3fs.core import _error_wrapper, version_id_kw  # s3fs internals: its retries and errors

    bucket, key, version = target.split_path(path)

    async def once() -> bytes:
        response = await target._call_s3(
            "get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", IfMatch=etag,
            **version_id_kw(version))
        try:
            return bytes(await response["Body"].read())
        finally:
            response["Body"].close()

    try:
        return bytes(await _error_wrapper(once, retries=target.retries))
    except OSError as exc:
        if object_changed(exc):
            raise ObjectChangedError(f"{path} was replaced while it was read") from exc
        raise


def pinned_cat(target: Any, path: str, start: int, end: int, etag: str | None) -> bytes:
    """Stored bytes ``[start, end)`` of ``path``, from the version ``etag`` names (when given)."""
    if etag is None or end <= start:
        return bytes(target.cat_file(path, start=start, end=end))
    from fsspec.asyn import sync

    return bytes(sync(target.loop, _get_pinned, target, path, start, end, etag))


def pinned_ranges(target: Any, requests: Sequence[tuple[str, int, int, str]], in_flight: int) -> list[Any]:
    """Stored bytes of ``(path, start, end, etag)`` spans of an S3 target, each from the version
    its ETag names, ``in_flight`` requests at a time: a buffer, or the exception of that span
    (``ObjectChangedError`` for a 412: the object is no longer that version)."""
    from fsspec.asyn import sync

    gate = asyncio.Semaphore(in_flight)

    async def one(path: str, start: int, end: int, etag: str) -> bytes:
        async with gate:
            return await _get_pinned(target, path, start, end, etag)

    async def run() -> list[Any]:
        return list(await asyncio.gather(*(one(*r) for r in requests), return_exceptions=True))

    return list(sync(target.loop, run)) if requests else []
