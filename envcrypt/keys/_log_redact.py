"""Keep data keys out of botocore's DEBUG logs.

botocore logs every request it makes ("Making request for ... with params: {... 'body': ...}")
and every response body ("Response body: ...") at DEBUG.  For KMS ``Encrypt`` the request body
carries the DEK as ``"Plaintext"``; ``Decrypt`` and ``GenerateDataKey`` answer with it.  An
application that turns DEBUG on to chase a network problem would write every data key into its
logs.  A library must not change another library's logging behind its user, so this is the
user's choice: ``envcrypt.keys.aws_kms.redact_debug_logs()`` adds one filter to exactly those two
botocore loggers; the filter rewrites a record only when it holds a JSON ``"Plaintext"`` field,
replacing the value with ``<redacted>``; everything else passes untouched, and nothing is
evaluated unless DEBUG is on for them.  No handler, level or other logger is changed.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

__all__ = ["install_kms_redaction"]

#: the loggers whose DEBUG records carry KMS request and response bodies
LOGGERS = ("botocore.endpoint", "botocore.parsers")
_PLAINTEXT = re.compile(r'("Plaintext"\s*:\s*")[^"]*(")')
_PLAINTEXT_BYTES = re.compile(rb'("Plaintext"\s*:\s*")[^"]*(")')
_lock = threading.Lock()
_installed = False


def _redact(value: Any) -> Any:
    if isinstance(value, bytes):
        return _PLAINTEXT_BYTES.sub(rb"\1<redacted>\2", value) if b'"Plaintext"' in value else value
    if isinstance(value, str):
        return _PLAINTEXT.sub(r"\1<redacted>\2", value) if '"Plaintext"' in value else value
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    text = str(value)  # a request dict: its body is inside
    return _PLAINTEXT.sub(r"\1<redacted>\2", text) if '"Plaintext"' in text else value


class _PlaintextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact(v) for k, v in record.args.items()}
        if isinstance(record.msg, (str, bytes)):
            record.msg = _redact(record.msg)
        return True


def install_kms_redaction() -> None:
    """Add the redacting filter to botocore's request and response loggers (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        for name in LOGGERS:
            logging.getLogger(name).addFilter(_PlaintextFilter())
        _installed = True
