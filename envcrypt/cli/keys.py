"""``envcrypt key ...``, ``envcrypt secret ...``, ``envcrypt audit ...``: the local vault.

Every command takes ``--vault DIR`` (default ``$ENVCRYPT_VAULT``) and ``--json``.
Passphrases (a passphrase-protected vault, a portable key backup) come from
environment variables, never from the command line.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..keys.byok import wrap_for_transfer
from ..keys.vault import LocalVault
from ..keys.vault_crypto import ALL_OPS, KINDS
from ..keys.vault_files import atomic_write

BACKUP_PASSPHRASE_ENV = "ENVCRYPT_BACKUP_PASSPHRASE"
KIND_HELP = ("aes256 (default: wraps data keys), ec-p256 (signs: manifest signers), rsa (signs, or wraps "
             "with --ops wrapKey,unwrapKey,encrypt,decrypt)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vault", metavar="DIR", help="vault directory (default $ENVCRYPT_VAULT, else "
                   "~/.local/share/envcrypt/vault); only key create/import/restore, secret set and vault init "
                   "create a missing vault")
    p.add_argument("--json", action="store_true", help="print JSON (machine fields: times in Unix seconds)")


def _add(sub: Any, name: str, func: Any, helptext: str, *args: tuple[tuple[str, ...], dict[str, Any]]) -> None:
    group = sub.dest.split("_")[0]  # key_command -> key
    example = EXAMPLES.get(f"{group} {name}", f"envcrypt {group} {name}")
    p = sub.add_parser(name, help=helptext, description=helptext, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    for names, kwargs in args:
        default_help = "secret name" if (group, names[0]) == ("secret", "name") else ARG_HELP.get(names[0], names[0])
        kwargs.setdefault("help", default_help)
        p.add_argument(*names, **kwargs)
    _common(p)
    p.set_defaults(func=func)


#: one example per command, shown by ``envcrypt GROUP ACTION -h``
EXAMPLES = {
    "key create": "envcrypt key create sales                # or: --kind ec-p256 for a manifest signer",
    "key list": "envcrypt key list --json",
    "key show": "envcrypt key show sales",
    "key rotate": "envcrypt key rotate sales",
    "key disable": "envcrypt key disable sales/1",
    "key enable": "envcrypt key enable sales/1",
    "key update": "envcrypt key update sales --ops wrapKey,unwrapKey --expires 2027-01-01",
    "key delete": "envcrypt key delete sales --retention-days 30",
    "key recover": "envcrypt key recover sales",
    "key purge": "envcrypt key purge sales --yes",
    "key purge-due": "envcrypt key purge-due",
    "key init": "envcrypt key init --vault /srv/vault   (the same as: envcrypt vault init)",
    "key import": "envcrypt key import legacy --file legacy.key",
    "key transfer-key": "envcrypt key transfer-key byok > transfer.pem",
    "key byok-pack": "envcrypt key byok-pack --public-key transfer.pem --file material.bin --out package.bin",
    "key backup": "ENVCRYPT_BACKUP_PASSPHRASE=... envcrypt key backup sales --out sales.backup",
    "key restore": "envcrypt key restore sales.backup",
    "key sign": "envcrypt key sign signer report.pdf > report.sig",
    "key verify": "envcrypt key verify signer report.pdf \"$(cat report.sig)\"",
    "secret set": "printf %s \"$DB_PASSWORD\" | envcrypt secret set db-password",
    "secret get": "envcrypt secret get db-password",
    "secret list": "envcrypt secret list",
    "secret versions": "envcrypt secret versions db-password",
    "secret delete": "envcrypt secret delete db-password",
    "audit verify": "envcrypt audit verify",
    "audit tail": "envcrypt audit tail -n 50",
    "vault init": "envcrypt vault init --vault /srv/vault --passphrase-stdin < passphrase.txt",
    "vault path": "envcrypt vault path --json",
}

#: help of positional arguments that need none spelled out at each use
ARG_HELP = {
    "name": "key name (NAME, or NAME/VERSION where a version is meant)",
    "file": "input file",
    "signature": "base64 signature (as printed by key sign)",
}


def _a(*names: str, **kwargs: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    return names, kwargs


def register(sub: Any) -> None:
    key = sub.add_parser("key", help="manage keys in the local vault").add_subparsers(
        dest="key_command", metavar="ACTION", required=True)
    validity = (_a("--not-before", metavar="TIME", help="ISO 8601 time or Unix seconds"),
                _a("--expires", metavar="TIME", help="ISO 8601 time or Unix seconds"))
    ops = _a("--ops", metavar="OP,OP", help=(
        f"permitted operations, from {','.join(ALL_OPS)}; default for aes256: wrapKey,unwrapKey,encrypt,decrypt; "
        "for rsa and ec-p256: sign,verify.  An rsa key either signs or encrypts: for RSA-OAEP key wrapping "
        "create it with --kind rsa --ops wrapKey,unwrapKey,encrypt,decrypt (a separate key from the signing one)"))
    _add(key, "create", _key_create, "create a key", _a("name"),
         _a("--kind", choices=KINDS, default="aes256", help=KIND_HELP), ops, *validity)
    _add(key, "list", _key_list, "list keys", _a("--all", action="store_true", help="include soft-deleted keys"))
    _add(key, "show", _key_show, "show a key's metadata and versions", _a("name"))
    _add(key, "rotate", _key_rotate, "add a new key version", _a("name"))
    _add(key, "disable", _key_disable, "disable a key or one version (NAME/V)", _a("name"))
    _add(key, "enable", _key_enable, "enable a key or one version (NAME/V)", _a("name"))
    _add(key, "update", _key_update, "change permitted operations or validity", _a("name"), ops, *validity,
         _a("--clear-validity", action="store_true", help="remove not-before and expiry"))
    _add(key, "delete", _key_delete, "soft-delete a key (recoverable)", _a("name"),
         _a("--retention-days", type=int, default=7, help="days before purge-due may purge it (default 7)"))
    _add(key, "recover", _key_recover, "recover a soft-deleted key", _a("name"))
    _add(key, "purge", _key_purge, "destroy a soft-deleted key (data under it becomes unreadable)",
         _a("name"), _a("--yes", action="store_true", required=True, help="confirm crypto-shredding"))
    _add(key, "purge-due", _key_purge_due, "purge soft-deleted keys whose retention period has ended")
    _add(key, "init", _key_init, "initialise a vault (a key file, or a passphrase from an environment variable)",
         _a("--passphrase-env", metavar="VAR", help="protect the master key with the passphrase in $VAR"),
         _a("--memory-mib", type=int, default=64, help="Argon2id memory (MiB)"),
         _a("--iterations", type=int, default=3, help="Argon2id iterations"),
         _a("--lanes", type=int, default=4, help="Argon2id lanes"))
    _add(key, "import", _key_import, "import key material (raw, PEM/DER, or a BYOK package)", _a("name"),
         _a("--file", required=True, help="material file (32 raw bytes, a private key, or a BYOK package)"),
         _a("--kind", choices=KINDS, default="aes256", help=KIND_HELP), ops,
         _a("--byok", metavar="TRANSFER_KEY", help="the file is a BYOK package for this transfer key"))
    _add(key, "transfer-key", _key_transfer, "create an RSA transfer key for BYOK; prints its public key",
         _a("name"))
    _add(key, "byok-pack", _key_byok_pack, "pack material for BYOK import (run by the key owner)",
         _a("--public-key", required=True, help="transfer public key PEM file"),
         _a("--file", required=True, help="material file"), _a("--out", required=True))
    _add(key, "backup", _key_backup, f"encrypted backup of one key (portable with ${BACKUP_PASSPHRASE_ENV})",
         _a("name"), _a("--out", required=True))
    _add(key, "restore", _key_restore, "restore a key from a backup", _a("file"),
         _a("--force", action="store_true",
            help="restore over a purged key (brings crypto-shredded material back)"))
    _add(key, "sign", _key_sign, "sign a file (base64 signature on stdout)", _a("name"), _a("file"))
    _add(key, "verify", _key_verify, "verify a base64 signature of a file", _a("name"), _a("file"),
         _a("signature"))

    secret = sub.add_parser("secret", help="the vault's secrets store").add_subparsers(
        dest="secret_command", metavar="ACTION", required=True)
    _add(secret, "set", _secret_set, "store a new version (value from --file or stdin)", _a("name"),
         _a("--file", help="read the value from a file (default: stdin)"))
    _add(secret, "get", _secret_get, "print a secret", _a("name"), _a("--version", type=int, help="a version (default the newest)"))
    _add(secret, "list", _secret_list, "list secrets (never values)")
    _add(secret, "versions", _secret_versions, "list a secret's versions", _a("name"))
    _add(secret, "delete", _secret_delete, "delete a secret and all its versions", _a("name"))

    vault = sub.add_parser("vault", help="create or locate the local vault").add_subparsers(
        dest="vault_command", metavar="ACTION", required=True)
    _add(vault, "init", _key_init, "create a vault (a 0600 key file, or a passphrase through Argon2id)",
         _a("--passphrase-stdin", action="store_true", help="read the passphrase from the first line of stdin"),
         _a("--passphrase-env", metavar="VAR", help="protect the master key with the passphrase in $VAR"),
         _a("--memory-mib", type=int, default=64, help="Argon2id memory (MiB)"),
         _a("--iterations", type=int, default=3, help="Argon2id iterations"),
         _a("--lanes", type=int, default=4, help="Argon2id lanes"))
    _add(vault, "path", _vault_path, "print the vault directory in use and whether it exists")

    audit = sub.add_parser("audit", help="the vault audit log").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True)
    _add(audit, "verify", _audit_verify, "check the hash chain (exit 1 when broken)")
    _add(audit, "tail", _audit_tail, "show the last entries", _a("-n", type=int, default=20, help="how many entries (default 20)"))


# ---------------------------------------------------------------- helpers


def _vault(args: argparse.Namespace, create: bool = False) -> LocalVault:
    """The vault of ``--vault`` / ``$ENVCRYPT_VAULT``; it must exist unless the command creates one
    (``key create``, ``key import``, ``vault init`` ...): a mistyped path is reported, not created."""
    vault = LocalVault(args.vault)
    if not create:
        vault.store.require()
    return vault


def _when(value: Any) -> Any:
    """Unix seconds as an ISO 8601 UTC time (text output; ``--json`` keeps the seconds)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return dt.datetime.fromtimestamp(value, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


TIME_FIELDS = ("created", "updated", "not_before", "expires", "deleted", "scheduled_purge")


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain aligned table (times in ISO 8601, lists joined by commas, None as -)."""
    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        if column in TIME_FIELDS:
            value = _when(value)
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        return "-" if value is None else str(value)

    cells = [[cell(r, c) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    return "\n".join(lines)


def _time(text: str | None) -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or Unix seconds: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


def _ops(text: str | None) -> list[str] | None:
    return None if text is None else [op.strip() for op in text.split(",") if op.strip()]


def _out(args: argparse.Namespace, data: Any, text: str | None = None) -> int:
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


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_private(path: str, data: bytes) -> None:
    """Write a 0600 file: a fresh temp file (mkstemp: O_CREAT|O_EXCL|O_NOFOLLOW, fchmod 0600)
    renamed over ``path``, so an existing file's mode is not kept and a symlink is not followed."""
    atomic_write(Path(os.path.abspath(path)), data)


def _backup_passphrase() -> bytes | None:
    value = os.environ.get(BACKUP_PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


# ---------------------------------------------------------------- key


def _key_create(args: argparse.Namespace) -> int:
    uri = _vault(args, create=True).create_key(args.name, args.kind, ops=_ops(args.ops),
                                  not_before=_time(args.not_before), expires=_time(args.expires))
    return _out(args, {"uri": uri}, uri)


def _key_list(args: argparse.Namespace) -> int:
    keys = _vault(args).list_keys(include_deleted=args.all)
    if args.json:
        return _out(args, keys)
    for k in keys:
        state = "deleted" if k["deleted"] else ("enabled" if k["enabled"] else "disabled")
        print(f"{k['uri']:32} {k['kind']:8} v{k['current_version']}  {state:8} {','.join(k['ops'])}")
    return 0


def _key_show(args: argparse.Namespace) -> int:
    shown = _vault(args).show_key(args.name)
    if args.json:
        return _out(args, shown)
    fields = [k for k in shown if k != "versions"]
    width = max(len(k) for k in fields)
    for k in fields:
        value = _when(shown[k]) if k in TIME_FIELDS else shown[k]
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        print(f"{k:{width}}  {'-' if value is None else value}")
    print()
    print(_table([{**v, "public": "yes" if v.get("public") else "no"} for v in shown.get("versions") or []],
                 ["version", "created", "enabled", "origin", "public"]))
    return 0


def _key_rotate(args: argparse.Namespace) -> int:
    uri = _vault(args).rotate_key(args.name)
    return _out(args, {"uri": uri}, uri)


def _key_disable(args: argparse.Namespace) -> int:
    _vault(args).disable_key(args.name)
    return _out(args, {"disabled": args.name}, f"disabled {args.name}")


def _key_enable(args: argparse.Namespace) -> int:
    _vault(args).enable_key(args.name)
    return _out(args, {"enabled": args.name}, f"enabled {args.name}")


def _key_update(args: argparse.Namespace) -> int:
    vault = _vault(args)
    if args.ops is not None:
        vault.set_ops(args.name, _ops(args.ops) or [])
    if args.clear_validity:
        vault.set_validity(args.name)
    elif args.not_before or args.expires:
        current = vault.show_key(args.name)
        vault.set_validity(
            args.name,
            not_before=_time(args.not_before) if args.not_before else current["not_before"],
            expires=_time(args.expires) if args.expires else current["expires"],
        )
    return _out(args, vault.show_key(args.name))


def _key_delete(args: argparse.Namespace) -> int:
    _vault(args).delete_key(args.name, args.retention_days)
    return _out(args, {"deleted": args.name}, f"deleted {args.name} (recoverable until purged)")


def _key_recover(args: argparse.Namespace) -> int:
    _vault(args).recover_key(args.name)
    return _out(args, {"recovered": args.name}, f"recovered {args.name}")


def _key_purge(args: argparse.Namespace) -> int:
    _vault(args).purge_key(args.name)
    return _out(args, {"purged": args.name}, f"purged {args.name}: data under it is unrecoverable")


def _key_purge_due(args: argparse.Namespace) -> int:
    purged = _vault(args).purge_due()
    return _out(args, {"purged": purged}, "purged: " + (", ".join(purged) or "nothing due"))


def _vault_path(args: argparse.Namespace) -> int:
    vault = LocalVault(args.vault)
    exists = vault.store.initialised()
    return _out(args, {"vault": str(vault.path), "exists": exists},
                f"{vault.path} ({'exists' if exists else 'not created yet: envcrypt vault init'})")


def _key_init(args: argparse.Namespace) -> int:
    passphrase = None
    if getattr(args, "passphrase_stdin", False):
        passphrase = sys.stdin.readline().rstrip("\r\n")
        if not passphrase:
            raise ValueError("--passphrase-stdin: stdin gave an empty passphrase")
    elif args.passphrase_env:
        passphrase = os.environ.get(args.passphrase_env)
        if not passphrase:
            raise ValueError(f"${args.passphrase_env} is not set")
    vault = _vault(args, create=True)
    vault.init(passphrase, memory_cost=args.memory_mib * 1024, iterations=args.iterations, lanes=args.lanes)
    mode = "argon2id passphrase" if passphrase else "key file"
    return _out(args, {"vault": str(vault.path), "master": mode}, f"initialised {vault.path} ({mode})")


def _key_import(args: argparse.Namespace) -> int:
    vault, data = _vault(args, create=True), _read(args.file)
    if args.byok:
        uri = vault.import_byok(args.name, args.byok, data, args.kind, ops=_ops(args.ops))
    else:
        uri = vault.import_key(args.name, data, args.kind, ops=_ops(args.ops))
    return _out(args, {"uri": uri}, uri)


def _key_transfer(args: argparse.Namespace) -> int:
    uri, pem = _vault(args, create=True).create_transfer_key(args.name)
    return _out(args, {"uri": uri, "public_key": pem}, pem.rstrip())


def _key_byok_pack(args: argparse.Namespace) -> int:
    package = wrap_for_transfer(_read(args.public_key), _read(args.file))
    _write_private(args.out, package)
    return _out(args, {"out": args.out, "size": len(package)}, f"wrote {args.out}")


def _key_backup(args: argparse.Namespace) -> int:
    passphrase = _backup_passphrase()
    _write_private(args.out, _vault(args).backup_key(args.name, passphrase))
    protection = "passphrase" if passphrase else "vault"
    return _out(args, {"out": args.out, "protection": protection}, f"wrote {args.out} ({protection}-protected)")


def _key_restore(args: argparse.Namespace) -> int:
    uri = _vault(args, create=True).restore_key(_read(args.file), _backup_passphrase(), force=args.force)
    return _out(args, {"uri": uri}, f"restored {uri}")


def _key_sign(args: argparse.Namespace) -> int:
    uri, signature = _vault(args).sign(args.name, _read(args.file))
    text = base64.b64encode(signature).decode("ascii")
    return _out(args, {"key_uri": uri, "signature": text}, text)


def _key_verify(args: argparse.Namespace) -> int:
    uri = _vault(args).verify(args.name, _read(args.file), base64.b64decode(args.signature, validate=True))
    return _out(args, {"valid": True, "key_uri": uri}, f"valid ({uri})")


# ---------------------------------------------------------------- secret


def _secret_set(args: argparse.Namespace) -> int:
    value = _read(args.file) if args.file else sys.stdin.buffer.read()
    version = _vault(args, create=True).secrets.set(args.name, value)
    return _out(args, {"name": args.name, "version": version}, f"{args.name} version {version}")


def _secret_get(args: argparse.Namespace) -> int:
    value = _vault(args).secrets.get(args.name, args.version)
    if args.json:
        try:
            shown: dict[str, Any] = {"name": args.name, "value": value.decode("utf-8")}
        except UnicodeDecodeError:
            shown = {"name": args.name, "value_base64": base64.b64encode(value).decode("ascii")}
        return _out(args, shown)
    sys.stdout.buffer.write(value)
    sys.stdout.flush()
    return 0


def _secret_list(args: argparse.Namespace) -> int:
    rows = _vault(args).secrets.list()
    return _out(args, rows, _table(rows, ["name", "versions", "updated"]))


def _secret_versions(args: argparse.Namespace) -> int:
    rows = _vault(args).secrets.versions(args.name)
    return _out(args, rows, _table(rows, ["version", "created"]))


def _secret_delete(args: argparse.Namespace) -> int:
    _vault(args).secrets.delete(args.name)
    return _out(args, {"deleted": args.name}, f"deleted {args.name}")


# ---------------------------------------------------------------- audit


def _audit_verify(args: argparse.Namespace) -> int:
    report = _vault(args).audit.verify()
    if args.json:
        _out(args, report.as_dict())
    elif report.ok:
        print(f"ok: {report.entries} entries, chain intact")
    else:
        where = f" at line {report.line}" if report.line else ""
        print(f"BROKEN{where}: {report.problem} ({report.entries} entries verified before it)")
    return 0 if report.ok else 1


def _audit_tail(args: argparse.Namespace) -> int:
    entries = _vault(args).audit.tail(args.n)
    if args.json:
        return _out(args, entries)
    for e in entries:
        version = f"/{e['version']}" if e.get("version") else ""
        print(f"{e['seq']:6} {e['time']} {e['who'].get('user')}@{e['who'].get('host')} "
              f"{e['op']:14} {e.get('key') or '-'}{version} {e['outcome']}")
    return 0
