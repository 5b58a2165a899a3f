"""Backend errors translated in one place: "the object changed while it was rewritten".

A conditional replacement (rewrap, migrate, a key rotation of Parquet or column
material) fails when another writer changed the object meanwhile.  Each store
says so its own way: S3 answers 412 ``PreconditionFailed`` to a conditional
PUT / CompleteMultipartUpload (``If-Match``), s3fs raises its ``FileExpired``
when an object read with ``If-Match`` changed under the reader, and the local
and memory sinks find the version moved before they publish.  Callers never
inspect class names or response dicts: they ask :func:`object_changed` and
raise :func:`changed_while_rewritten`, whose message is built here only.
"""

from __future__ import annotations

from ..errors import EnvcryptError

__all__ = ["ConcurrentModificationError", "changed_while_rewritten", "object_changed"]

#: how far down ``__cause__`` / ``__context__`` a store's error is looked for
_CHAIN_DEPTH = 8


class ConcurrentModificationError(EnvcryptError):
    """The object changed while it was being rewritten; it was left as the other writer made it."""


def changed_while_rewritten(path: str) -> ConcurrentModificationError:
    """The error for ``path`` replaced by someone else during a conditional rewrite."""
    return ConcurrentModificationError(f"{path} changed while it was rewritten; left as it is")


def _file_expired() -> tuple[type[BaseException], ...]:
    try:
        from s3fs.utils import FileExpired
    except ImportError:  # s3fs not installed: no such error can occur
        return ()
    return (FileExpired,)


def object_changed(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or an error that caused it) says the stored object changed under a
    conditional request: a 412 Precondition Failed, or s3fs's ``FileExpired``."""
    expired = _file_expired()
    seen = 0
    while exc is not None and seen < _CHAIN_DEPTH:
        if expired and isinstance(exc, expired):
            return True
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if error.get("Code") == "PreconditionFailed" or status == 412:
                return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False
