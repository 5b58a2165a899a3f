"""What every CLI command that names a storage location shares: ``-o`` parsing and the
plain (not envcrypt) filesystem of a URL or a bare local path."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import StorageOptionsError
from ..fs.urls import check_storage_options, plain_fs

__all__ = ["parse_storage_options", "add_target_options", "plain_target"]

STORAGE_OPTIONS_HELP = ('fsspec storage options keyed by protocol, as JSON, e.g. '
                        '\'{"s3": {"endpoint_url": "http://127.0.0.1:9000"}}\'')


def parse_storage_options(text: str | None) -> dict[str, Any]:
    """``-o`` JSON, checked: an object keyed by protocol (one clear line otherwise)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StorageOptionsError(f"-o/--storage-options is not JSON ({exc}): {text!r}") from None
    return check_storage_options(value)


def add_target_options(p: argparse.ArgumentParser) -> None:
    """``-o`` and ``--json`` for a command on one plain (not envcrypt) file."""
    p.add_argument("-o", "--storage-options", default=None, metavar="JSON", help=STORAGE_OPTIONS_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON result instead of text")


def plain_target(args: argparse.Namespace) -> tuple[Any, str]:
    """The filesystem and path of ``args.url`` (a bare path is local) with its protocol's ``-o`` options."""
    return plain_fs(args.url, parse_storage_options(args.storage_options))
