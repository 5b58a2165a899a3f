"""Issue 15: one translator of backend errors for "the object changed while it was rewritten"."""

from __future__ import annotations

import pytest

from envcrypt.fs._backend import ConcurrentModificationError, changed_while_rewritten, object_changed
from envcrypt.fs._sinks import ConcurrentModificationError as FromSinks

botocore_exceptions = pytest.importorskip("botocore.exceptions")
FileExpired = pytest.importorskip("s3fs.utils").FileExpired


def _client_error(code: str, status: int) -> botocore_exceptions.ClientError:
    return botocore_exceptions.ClientError(
        {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_a_412_anywhere_in_the_cause_chain_and_s3fs_file_expired_mean_changed() -> None:
    assert object_changed(_client_error("PreconditionFailed", 412))
    try:
        try:
            raise _client_error("Whatever", 412)
        except botocore_exceptions.ClientError as inner:
            raise OSError("s3fs wraps it") from inner
    except OSError as outer:
        assert object_changed(outer)
    assert object_changed(FileExpired("b/k", '"etag"'))
    assert not object_changed(_client_error("NoSuchKey", 404))
    assert not object_changed(OSError("disk full"))
    assert not object_changed(None)


def test_the_error_and_its_message_are_made_in_one_place() -> None:
    error = changed_while_rewritten("b/k")
    assert isinstance(error, ConcurrentModificationError) and FromSinks is ConcurrentModificationError
    assert str(error) == "b/k changed while it was rewritten; left as it is"
