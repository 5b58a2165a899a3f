"""``cat_ranges`` on S3 reuses the last head this process cached for a path without asking
the store which version is current (its GETs carry ``If-Match`` on that head's ETag).  A
storage writer who replaces the object after the head was cached -- with a tampered copy, a
plaintext object, another genuine version -- or a store that ignores ``If-Match``, must get
what a read from a fresh head gets: a typed error, or every range from one genuine version;
never bytes judged against the stale head."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import envcrypt
from envcrypt.errors import IntegrityError, NotEncryptedError
from envcrypt.fs import EnvcryptFileSystem
from envcrypt.fs._heads import HEADS

s3fs = pytest.importorskip("s3fs")
pytestmark = pytest.mark.cloud

DATA = os.urandom(5 * 16384 + 777)
STARTS, ENDS = [0, 2 * 16384 + 5, len(DATA) - 30], [40, 2 * 16384 + 900, len(DATA)]


@pytest.fixture
def cached(moto_server: str) -> Iterator[tuple[EnvcryptFileSystem, Any, str]]:
    """A filesystem that has read ``DATA`` at a path once (its head cached), and the raw target."""
    import boto3

    bucket = f"p-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    target = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_server}, skip_instance_cache=True)
    fs = EnvcryptFileSystem(fs=target, skip_instance_cache=True)
    path = f"{bucket}/obj"
    fs.pipe_file(path, DATA)
    assert fs.cat_ranges([path] * 3, STARTS, ENDS) == [DATA[s:e] for s, e in zip(STARTS, ENDS, strict=True)]
    yield fs, target, path
    HEADS.clear()


def _ranges(fs: EnvcryptFileSystem, path: str) -> list[Any]:
    return fs.cat_ranges([path] * 3, STARTS, ENDS)


def test_a_tampered_replacement_fails_typed(cached: tuple[EnvcryptFileSystem, Any, str]) -> None:
    fs, target, path = cached
    stored = bytearray(target.cat_file(path))
    stored[-100] ^= 1  # inside the final chunk
    target.pipe_file(path, bytes(stored))
    got = _ranges(fs, path)
    assert got[:2] == [DATA[s:e] for s, e in zip(STARTS[:2], ENDS[:2], strict=True)]  # untouched chunks
    assert isinstance(got[2], IntegrityError)


def test_an_appended_chunk_is_judged_by_the_new_length(cached: tuple[EnvcryptFileSystem, Any, str]) -> None:
    fs, target, path = cached
    stored = target.cat_file(path)
    target.pipe_file(path, stored + stored[-16400:])  # a plausible longer object
    assert isinstance(_ranges(fs, path)[2], IntegrityError)  # the range to the end: the length fails


def test_a_plaintext_replacement_is_refused(cached: tuple[EnvcryptFileSystem, Any, str]) -> None:
    fs, target, path = cached
    target.pipe_file(path, DATA)
    assert all(isinstance(r, NotEncryptedError) for r in _ranges(fs, path))


@pytest.mark.parametrize("ignores_if_match", [False, True])
def test_another_version_is_read_whole_from_its_own_head(cached: tuple[EnvcryptFileSystem, Any, str],
                                                         ignores_if_match: bool) -> None:
    fs, target, path = cached
    other = bytes(reversed(DATA))
    target.pipe_file(path, envcrypt.encrypt(other))
    if ignores_if_match:  # a store that serves any version whatever the condition says
        real = target._call_s3

        async def lax(method: str, *args: Any, **kwargs: Any) -> Any:
            kwargs.pop("IfMatch", None)
            return await real(method, *args, **kwargs)

        target._call_s3 = lax
    assert _ranges(fs, path) == [other[s:e] for s, e in zip(STARTS, ENDS, strict=True)]
