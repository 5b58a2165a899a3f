"""Exceptions of the filesystem -> the errno a FUSE operation returns, and the log line for it.

One table, most specific class first.  A key the reader may not use (untrusted,
refused by the key service, wrong, a path the key policy refuses) is ``EACCES``:
the file exists but this mount may not open it.  Anything that failed
authentication or cannot be an envcrypt object (integrity, malformed header,
unsupported version, a plaintext object where ciphertext is required) is ``EIO``:
the program gets no bytes, the log gets the envcrypt error's class and message
(which never carry key material).  Built-in ``OSError`` keeps its own errno.
"""

from __future__ import annotations

import errno
import logging

from ..errors import (
    ContextMismatchError,
    EnvcryptError,
    IntegrityError,
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    MalformedHeaderError,
    NotEncryptedError,
    UnsafePathError,
    UnsupportedVersionError,
    VaultError,
    WrongKeyError,
)

__all__ = ["errno_of", "LOG"]

LOG = logging.getLogger("envcrypt.mount")

#: envcrypt error class -> errno, most specific first
_TABLE: tuple[tuple[type[BaseException], int], ...] = (
    (IntegrityError, errno.EIO),
    (MalformedHeaderError, errno.EIO),
    (UnsupportedVersionError, errno.EIO),
    (NotEncryptedError, errno.EIO),
    (WrongKeyError, errno.EACCES),  # UntrustedKeyError too
    (KeyAccessDeniedError, errno.EACCES),
    (KeyDisabledError, errno.EACCES),
    (KeyDeletedError, errno.EACCES),
    (KeyNotFoundError, errno.EACCES),
    (VaultError, errno.EACCES),
    (ContextMismatchError, errno.EACCES),
    (UnsafePathError, errno.EACCES),
    (NotImplementedError, errno.ENOTSUP),
    (FileNotFoundError, errno.ENOENT),  # fsspec raises these without an errno
    (FileExistsError, errno.EEXIST),
    (IsADirectoryError, errno.EISDIR),
    (NotADirectoryError, errno.ENOTDIR),
    (PermissionError, errno.EACCES),
)

#: integrity-class errnos: a handle that got one keeps failing (see operations)
INTEGRITY = (IntegrityError, MalformedHeaderError, UnsupportedVersionError, NotEncryptedError)


def errno_of(exc: BaseException) -> int:
    """The errno for ``exc``: an OS error its own, envcrypt errors and errno-less OS errors by the table, else EIO."""
    if isinstance(exc, OSError) and isinstance(exc.errno, int) and exc.errno > 0:
        return exc.errno
    for cls, number in _TABLE:
        if isinstance(exc, cls):
            return number
    return errno.EIO  # any other envcrypt error, or a failure nobody expected


def to_oserror(operation: str, path: str, exc: BaseException) -> OSError:
    """``exc`` as the OSError the FUSE binding turns into ``-errno``; logged unless routine."""
    number = errno_of(exc)
    if isinstance(exc, EnvcryptError) or number == errno.EIO:
        # the program sees only EIO/EACCES: the log says which envcrypt error it was
        LOG.warning("%s %s: %s: %s -> %s", operation, path, type(exc).__name__, " ".join(str(exc).split()),
                    errno.errorcode.get(number, number))
    elif number not in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY):
        LOG.info("%s %s: %s -> %s", operation, path, exc, errno.errorcode.get(number, number))
    return OSError(number, f"{operation}: {errno.errorcode.get(number, number)}")
