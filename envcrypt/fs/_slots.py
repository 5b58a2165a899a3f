"""Rewriting an object's key slots (body copied byte for byte, never re-encrypted).

Used by ``rewrap`` (same path: a rotation) and by ``cp_file``/``mv`` into a
key-policy prefix with another key (new path: the copy gets the destination's
key).  The DEK is checked against the body's key commitment before it is
wrapped again (``envcrypt.rewrap.rewrap_header``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..envelope import read_header
from ..format import BODY_PREFIX_SIZE
from ..keys.base import resolver_for
from ..rewrap import rewrap_header
from ._sinks import ConcurrentModificationError, open_sink, version_of

if TYPE_CHECKING:
    from .filesystem import EnvcryptFileSystem

__all__ = ["target_identities", "rewrite_slots"]

COPY_BUFFER = 8 * 1024 * 1024


def target_identities(key_uris: Iterable[str], options: Mapping[str, Any]) -> list[str]:
    """The exact key versions new slots under ``key_uris`` would name."""
    return [resolver_for(uri, **dict(options)).identity(uri) for uri in key_uris]


def rewrite_slots(fs: EnvcryptFileSystem, src: str, dst: str, key_uris: Sequence[str],
                  identities: Sequence[str] | None = None, *, source: Any = None) -> bool:
    """Write at ``dst`` (on ``fs.target``) the object at ``src`` with slots for ``key_uris``.

    ``source`` is the filesystem ``src`` is on when it is another store (the
    copy then streams through ``dst``'s atomic sink).  Returns False (and
    writes nothing) when ``src`` is ``dst`` and the slots already name exactly
    ``identities``; a copy whose slots already fit is a plain ciphertext copy.
    When ``src`` is ``dst`` the replacement is conditional where the target
    allows it (see ``_sinks.version_of``): an object rewritten by someone else
    during the rewrap is not replaced (``ConcurrentModificationError``).
    """
    target = fs.target
    origin = target if source is None else source
    in_place = src == dst and origin is target
    identities = identities or target_identities(key_uris, fs.resolver_options)
    with origin.open(src, "rb") as f:
        header, _ = read_header(f)
        fits = [slot.key_uri for slot in header.key_slots] == list(identities)
    if fits and in_place:
        return False
    if fits and origin is target:
        target.cp_file(src, dst)
        fs._written(dst)
        return True
    expect = version_of(target, src) if in_place else None
    with origin.open(src, "rb") as f:
        header, _ = read_header(f)
        prefix = f.read(BODY_PREFIX_SIZE)
        if fits:
            f.seek(0)
            packed, prefix = b"", b""  # copied as it is
        else:
            # the DEK is checked against this body's key commitment before it is wrapped again
            packed = rewrap_header(header, list(key_uris), body_prefix=prefix, **dict(fs.resolver_options))
        sink = open_sink(target, dst, expect=expect)
        try:
            sink.raw.write(packed)
            sink.raw.write(prefix)
            shutil.copyfileobj(f, sink.raw, COPY_BUFFER)
            sink.commit()
        except BaseException as exc:
            sink.abort()
            if type(exc).__name__ == "FileExpired":  # s3fs: the object changed under the reader (If-Match)
                raise ConcurrentModificationError(f"{src} changed while it was rewritten; left as it is") from exc
            raise
    fs._written(dst)
    return True
