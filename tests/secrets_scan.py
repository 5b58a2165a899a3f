"""Opt-in DEBUG log scan for key bytes (``ENVCRYPT_SECRETS_SCAN=REPORT_PATH``, see conftest).

When on, every 32-byte ``os.urandom`` result of the session (data keys, column keys, vault
keys and master keys all come from there) is remembered, the root logger is set to DEBUG
with a handler that formats every record (message, arguments, traceback), and each record is
searched for any remembered key as hex, base64 (standard or URL-safe) or inside a ``b'...'``
literal.  Findings go to REPORT_PATH as JSON lines as they happen; at exit one ``summary`` line
counts records, keys and findings.  ``tests/test_secrets_hygiene.py`` runs a representative
part of the suite this way in a subprocess and reads the report; set it yourself to scan
the whole suite: ``ENVCRYPT_SECRETS_SCAN=/tmp/scan.jsonl pytest -p no:randomly``.
"""

from __future__ import annotations

import ast
import atexit
import base64
import json
import logging
import os
import re
import threading
from typing import Any

ENV = "ENVCRYPT_SECRETS_SCAN"
KEY_SIZE = 32

_HEX = re.compile(r"[0-9a-fA-F]{64,}")
_B64 = re.compile(r"[A-Za-z0-9+/_-]{43,}={0,2}")
_BYTES = re.compile(r"b'(?:[^'\\]|\\.){32,}'|b\"(?:[^\"\\]|\\.){32,}\"")


class Scanner(logging.Handler):
    def __init__(self, report: str) -> None:
        super().__init__(level=logging.DEBUG)
        self.report = report
        self.keys: set[bytes] = set()
        self.records = 0
        self.findings = 0
        self.lock_ = threading.Lock()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def remember(self, key: bytes) -> None:
        self.keys.add(bytes(key))

    def _found(self, text: str) -> list[str]:
        hits = []
        for run in _HEX.findall(text):
            for i in range(0, len(run) - 63, 2):
                if bytes.fromhex(run[i : i + 64]) in self.keys:
                    hits.append("hex")
        for run in _B64.findall(text):
            for i in range(0, len(run) - 42, 4):
                piece = run[i : i + 44]
                for decode in (base64.b64decode, base64.urlsafe_b64decode):
                    try:
                        raw = decode(piece + "=" * (-len(piece) % 4))
                    except ValueError:
                        continue
                    if raw[:KEY_SIZE] in self.keys:
                        hits.append("base64")
        for literal in _BYTES.findall(text):
            try:
                raw = ast.literal_eval(literal)
            except (ValueError, SyntaxError):
                continue
            if any(raw[i : i + KEY_SIZE] in self.keys for i in range(len(raw) - KEY_SIZE + 1)):
                hits.append("bytes literal")
        return hits

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record that cannot format is not ours to judge
            return
        with self.lock_:
            self.records += 1
            hits = self._found(text)
            if hits:
                self.findings += 1
                with open(self.report, "a") as f:
                    f.write(json.dumps({"logger": record.name, "how": sorted(set(hits)),
                                        "where": f"{record.pathname}:{record.lineno}"}) + "\n")

    def summary(self) -> None:
        with open(self.report, "a") as f:
            f.write(json.dumps({"summary": {"records": self.records, "keys": len(self.keys),
                                            "findings": self.findings}}) + "\n")


def install() -> Scanner:
    report = os.environ[ENV]
    scanner = Scanner(report)
    real = os.urandom

    def urandom(n: int) -> bytes:
        out = real(n)
        if n == KEY_SIZE:
            scanner.remember(out)
        return out

    os.urandom = urandom
    # botocore logs KMS bodies (data keys) at DEBUG; an application that runs at DEBUG opts in to
    # envcrypt's redaction (the library never touches another library's logging by itself)
    try:
        from envcrypt.keys.aws_kms import redact_debug_logs
    except ImportError:  # pragma: no cover - without the aws extra
        pass
    else:
        redact_debug_logs()
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    root.addHandler(scanner)
    atexit.register(scanner.summary)
    return scanner


def read_report(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    lines = [json.loads(line) for line in open(path)]
    summary = next(x["summary"] for x in lines if "summary" in x)
    return summary, [x for x in lines if "summary" not in x]
