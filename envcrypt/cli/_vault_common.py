"""Shared pieces of the vault command groups (``key``/``secret``/``audit`` and ``cert``):
the ``--vault``/``--json`` options, opening the vault, and text/JSON output."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from ..keys.vault import LocalVault


def vault_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vault", metavar="DIR", help="vault directory (default $ENVCRYPT_VAULT, else "
                   "~/.local/share/envcrypt/vault); only key create/import/restore, secret set and vault init "
                   "create a missing vault")
    p.add_argument("--json", action="store_true", help="print JSON (machine fields: times in Unix seconds)")


def arg(*names: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return names, kwargs


def open_vault(args: argparse.Namespace, create: bool = False) -> LocalVault:
    """The vault of ``--vault`` / ``$ENVCRYPT_VAULT``; it must exist unless the command creates one
    (``key create``, ``key import``, ``vault init`` ...): a mistyped path is reported, not created."""
    vault = LocalVault(args.vault)
    if not create:
        vault.store.require()
    return vault


def iso_time(value: Any) -> Any:
    """Unix seconds as an ISO 8601 UTC time (text output; ``--json`` keeps the seconds)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


TIME_FIELDS = ("created", "updated", "not_before", "expires", "deleted", "scheduled_purge")


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned table (times in ISO 8601, lists joined by commas, None as -)."""
    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        if column in TIME_FIELDS:
            value = iso_time(value)
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        return "-" if value is None else str(value)

    cells = [[cell(r, c) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    return "\n".join(lines)


def output(args: argparse.Namespace, data: Any, text: str | None = None) -> int:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
    elif text is not None:
        print(text)
    elif isinstance(data, list):
        for row in data:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    elif isinstance(data, dict):
        for k, v in data.items():
            print(f"{k:16} {v}")
    return 0


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
