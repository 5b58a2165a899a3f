"""Putting an object under other keys: new key slots, or a fresh DEK.

Used by ``rewrap`` (same path) and by ``cp_file``/``mv`` into a key-policy
prefix with another key (new path: the copy gets the destination's key).  A
rotation within the same keys rewrites the slots only (body copied byte for
byte); a move to another key re-encrypts under a fresh DEK, so that a DEK
shared by several objects (the DEK cache) never reaches a key that was not
given those objects.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..envelope import new_header, read_header, wrap_dek
from ..format import BODY_PREFIX_SIZE
from ..keys.base import resolver_for, split_key_uri
from ..keys.cache import CACHE_OPTION
from ..rewrap import holds_dek
from ..slots import open_slots
from ..streams import DecryptingReader, EncryptingWriter
from ._backend import changed_while_rewritten, object_changed
from ._sinks import open_sink, version_of

if TYPE_CHECKING:
    from .filesystem import EnvcryptFileSystem

__all__ = ["target_identities", "rewrite_slots"]

COPY_BUFFER = 8 * 1024 * 1024


def target_identities(key_uris: Iterable[str], options: Mapping[str, Any]) -> list[str]:
    """The exact key versions new slots under ``key_uris`` would name."""
    return [resolver_for(uri, **dict(options)).identity(uri) for uri in key_uris]


def rewrite_slots(fs: EnvcryptFileSystem, src: str, dst: str, key_uris: Sequence[str],
                  identities: Sequence[str] | None = None, *, source: Any = None,
                  trusted_keys: Sequence[str] | None = None) -> bool:
    """Write at ``dst`` (on ``fs.target``) the object at ``src`` under the keys ``key_uris``.

    ``source`` is the filesystem ``src`` is on when it is another store (the
    copy then streams through ``dst``'s atomic sink); ``trusted_keys`` are the
    keys a reader of ``src`` trusts (default: ``fs.trusted_for(src)``).
    Returns False (and writes nothing) when ``src`` is ``dst`` and the slots
    already name exactly ``identities``; a copy whose slots already fit is a
    plain ciphertext copy.  Otherwise the DEK is opened through a trusted slot
    and checked against the body's key commitment; when the new keys already
    hold it (a rotation) only the slots are rewritten and the body is copied
    byte for byte, else the object is re-encrypted under a fresh DEK (see
    ``envcrypt.rewrap``: a DEK is never handed to a key that did not hold it).
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
        fs.invalidate_written(dst)
        return True
    trusted = list(trusted_keys) if trusted_keys is not None else fs.trusted_for(src)
    new_schemes = [split_key_uri(u)[0] for u in key_uris]
    expect = version_of(target, src) if in_place else None
    with origin.open(src, "rb") as f:
        header, header_size = read_header(f)
        prefix = f.read(BODY_PREFIX_SIZE)
        if fits:
            f.seek(0)
            packed, prefix, reader = b"", b"", f  # copied as it is
        else:
            opened = open_slots(header, prefix, trusted, fs.resolver_options, also_in_play=new_schemes,
                                rewriting=True)
            if holds_dek(key_uris, opened.trusted_slots, fs.resolver_options):
                slots = wrap_dek(opened.dek, key_uris, header.encryption_context, fs.resolver_options)
                packed, reader = header.with_slots(slots).pack(), f
            else:
                packed = prefix = b""
                reader = DecryptingReader(f, header, header_size, opened.cipher)
        sink = open_sink(target, dst, expect=expect)
        try:
            if reader is f:
                sink.raw.write(packed)
                sink.raw.write(prefix)
                shutil.copyfileobj(f, sink.raw, COPY_BUFFER)
            else:  # re-encrypted under a fresh DEK for the new keys
                old_schemes = [split_key_uri(t)[0] for t in trusted]
                dek, fresh = new_header(list(key_uris), header.encryption_context,
                                        {**fs.resolver_options, CACHE_OPTION: False}, also_in_play=old_schemes)
                with EncryptingWriter(sink.raw, fresh, dek) as writer:
                    shutil.copyfileobj(reader, writer, COPY_BUFFER)
            sink.commit()
        except BaseException as exc:
            sink.abort()
            if object_changed(exc):  # e.g. s3fs: the object changed under the reader (If-Match)
                raise changed_while_rewritten(src) from exc
            raise
    fs.invalidate_written(dst)
    return True
