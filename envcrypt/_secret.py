"""Key material that does not show itself: ``SecretBytes``.

A data key lives in ordinary local variables on its way from ``os.urandom`` or an unwrap to
the cipher.  ``traceback.TracebackException(..., capture_locals=True)`` (pytest's ``--showlocals``,
Sentry, rich tracebacks) prints every local with ``repr``, so a plain ``bytes`` DEK in a frame
of a failing call would be printed.  ``SecretBytes`` is a ``bytes`` (every API that takes
key bytes takes it) whose ``repr``/``str`` say only its length and which refuses to pickle.
Slices and copies (``bytes(x)``) are plain bytes again: keep those local to one expression.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["SecretBytes"]


class SecretBytes(bytes):
    __slots__ = ()

    def __repr__(self) -> str:
        return f"<secret: {len(self)} bytes>"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise TypeError("key material cannot be pickled")

    def __reduce__(self) -> NoReturn:
        raise TypeError("key material cannot be pickled")

    def __copy__(self) -> SecretBytes:
        return self

    def __deepcopy__(self, memo: object) -> SecretBytes:
        return self
