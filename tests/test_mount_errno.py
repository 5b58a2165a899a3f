"""The mount's errno mapping and killed-writer detection (no FUSE needed)."""

from __future__ import annotations

import errno
import logging
import os

import pytest

from envcrypt.errors import (
    IntegrityError,
    IsAPrefixError,
    KeyAccessDeniedError,
    MalformedHeaderError,
    NotEncryptedError,
    ResolverUnavailableError,
    UnsafePathError,
    UntrustedKeyError,
    WrongKeyError,
)
from envcrypt.mount import errno_of
from envcrypt.mount._errno import to_oserror
from envcrypt.mount.operations import _killed


@pytest.mark.parametrize(("exc", "number"), [
    (IntegrityError(), errno.EIO),
    (MalformedHeaderError("x"), errno.EIO),
    (NotEncryptedError("x"), errno.EIO),
    (ResolverUnavailableError("kms down"), errno.EIO),
    (UntrustedKeyError("x"), errno.EACCES),
    (WrongKeyError("x"), errno.EACCES),
    (KeyAccessDeniedError("x"), errno.EACCES),
    (UnsafePathError("x"), errno.EACCES),
    (FileNotFoundError("no errno, as fsspec raises it"), errno.ENOENT),
    (FileExistsError("x"), errno.EEXIST),
    (IsAPrefixError(errno.EISDIR, "is a prefix", "p"), errno.EISDIR),
    (OSError(errno.ENOSPC, "full"), errno.ENOSPC),
    (NotImplementedError(), errno.ENOTSUP),
    (RuntimeError("unexpected"), errno.EIO),
])
def test_errno_of(exc: BaseException, number: int) -> None:
    assert errno_of(exc) == number


def test_envcrypt_errors_are_logged_by_name(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="envcrypt.mount"):
        error = to_oserror("read", "/lake/x", IntegrityError())
    assert error.errno == errno.EIO
    assert "read /lake/x: IntegrityError: ciphertext failed authentication -> EIO" in caplog.text


def test_killed_is_false_for_a_live_process_or_none() -> None:
    # (True for a writer dying of kill -9: tests/test_mount_lifecycle.py, on a real mount)
    assert not _killed(os.getpid())
    assert not _killed(0) and not _killed(2**22 + 12345)
