"""When a writer seals its final chunk: only on a close that is not part of a failure."""

from __future__ import annotations

import io

import pytest

import envcrypt
from envcrypt.errors import IntegrityError, UnpublishedWriteWarning


def test_wrapper_closing_an_unmanaged_writer_during_an_exception_seals_nothing() -> None:
    out = io.BytesIO()
    writer = envcrypt.open_writer(out)
    with pytest.raises(RuntimeError), pytest.warns(UnpublishedWriteWarning):
        with io.TextIOWrapper(writer, encoding="utf-8") as text:
            text.write("row 1\n" * 100)
            raise RuntimeError("producer failed")
    assert writer.closed
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(out.getvalue())


def test_finally_close_after_a_failure_seals_nothing() -> None:
    out = io.BytesIO()
    writer = envcrypt.open_writer(out)
    with pytest.raises(ValueError), pytest.warns(UnpublishedWriteWarning):
        try:
            writer.write(b"x" * 50_000)
            raise ValueError("producer failed")
        finally:
            writer.close()
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(out.getvalue())


def test_close_inside_a_handler_within_the_with_block_is_kept_until_the_block_ends() -> None:
    out = io.BytesIO()
    with envcrypt.open_writer(out) as writer:
        try:
            raise KeyError("handled")
        except KeyError:
            writer.write(b"fallback")
            writer.close()  # deferred: the block has not failed yet
        assert not writer.closed
    assert writer.closed
    assert envcrypt.decrypt(out.getvalue()) == b"fallback"


def test_writer_opened_while_handling_an_exception_seals_normally() -> None:
    out = io.BytesIO()
    try:
        raise KeyError("handled")
    except KeyError:
        writer = envcrypt.open_writer(out)
        with io.TextIOWrapper(writer, encoding="utf-8") as text:
            text.write("report of the failure\n")
    assert envcrypt.decrypt(out.getvalue()) == b"report of the failure\n"


def test_close_from_an_except_block_outside_with_warns_instead_of_losing_silently() -> None:
    out = io.BytesIO()
    writer = envcrypt.open_writer(out)
    writer.write(b"partial")
    try:
        raise ValueError("handled")
    except ValueError:
        with pytest.warns(UnpublishedWriteWarning):
            writer.close()
    with pytest.raises(IntegrityError):
        envcrypt.decrypt(out.getvalue())


def test_plain_close_seals() -> None:
    out = io.BytesIO()
    writer = envcrypt.open_writer(out)
    writer.write(b"abc")
    writer.close()
    assert envcrypt.decrypt(out.getvalue()) == b"abc"
