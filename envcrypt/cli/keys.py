"""``envcrypt key ...``, ``envcrypt secret ...``, ``envcrypt audit ...``: the local vault.

Every command takes ``--vault DIR`` (default ``$ENVCRYPT_VAULT``) and ``--json``.
Passphrases (a passphrase-protected vault, a portable key backup) come from
environment variables, never from the command line.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..keys.byok import wrap_for_transfer
from ..keys.vault import LocalVault
from ..keys.vault_certs import key_warnings
from ..keys.vault_crypto import ALL_OPS, KINDS
from ..keys.vault_files import atomic_write
from ._vault_common import TIME_FIELDS, arg, iso_time, open_vault, output, read_bytes, table, vault_options

BACKUP_PASSPHRASE_ENV = "ENVCRYPT_BACKUP_PASSPHRASE"
KIND_HELP = ("aes256 (default: wraps data keys), ec-p256 (signs: manifest signers), rsa (signs, or wraps "
             "with --ops wrapKey,unwrapKey,encrypt,decrypt)")





def _add(sub: Any, name: str, func: Any, helptext: str, *args: tuple[tuple[str, ...], dict[str, Any]]) -> None:
    group = sub.dest.split("_")[0]  # key_command -> key
    example = EXAMPLES.get(f"{group} {name}", f"envcrypt {group} {name}")
    p = sub.add_parser(name, help=helptext, description=helptext, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    for names, kwargs in args:
        default_help = "secret name" if (group, names[0]) == ("secret", "name") else ARG_HELP.get(names[0], names[0])
        kwargs.setdefault("help", default_help)
        p.add_argument(*names, **kwargs)
    vault_options(p)
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


def register(sub: Any) -> None:
    key = sub.add_parser("key", help="manage keys in the local vault").add_subparsers(
        dest="key_command", metavar="ACTION", required=True)
    validity = (arg("--not-before", metavar="TIME", help="ISO 8601 time or Unix seconds"),
                arg("--expires", metavar="TIME", help="ISO 8601 time or Unix seconds"))
    ops = arg("--ops", metavar="OP,OP", help=(
        f"permitted operations, from {','.join(ALL_OPS)}; default for aes256: wrapKey,unwrapKey,encrypt,decrypt; "
        "for rsa and ec-p256: sign,verify.  An rsa key either signs or encrypts: for RSA-OAEP key wrapping "
        "create it with --kind rsa --ops wrapKey,unwrapKey,encrypt,decrypt (a separate key from the signing one)"))
    _add(key, "create", _key_create, "create a key", arg("name"),
         arg("--kind", choices=KINDS, default="aes256", help=KIND_HELP), ops, *validity)
    _add(key, "list", _key_list, "list keys", arg("--all", action="store_true", help="include soft-deleted keys"))
    _add(key, "show", _key_show, "show a key's metadata and versions", arg("name"))
    _add(key, "rotate", _key_rotate, "add a new key version", arg("name"))
    _add(key, "disable", _key_disable, "disable a key or one version (NAME/V)", arg("name"))
    _add(key, "enable", _key_enable, "enable a key or one version (NAME/V)", arg("name"))
    _add(key, "update", _key_update, "change permitted operations or validity", arg("name"), ops, *validity,
         arg("--clear-validity", action="store_true", help="remove not-before and expiry"))
    _add(key, "delete", _key_delete, "soft-delete a key (recoverable)", arg("name"),
         arg("--retention-days", type=int, default=7, help="days before purge-due may purge it (default 7)"))
    _add(key, "recover", _key_recover, "recover a soft-deleted key", arg("name"))
    _add(key, "purge", _key_purge, "destroy a soft-deleted key (data under it becomes unreadable)",
         arg("name"), arg("--yes", action="store_true", required=True, help="confirm crypto-shredding"))
    _add(key, "purge-due", _key_purge_due, "purge soft-deleted keys whose retention period has ended")
    _add(key, "init", _key_init, "initialise a vault (a key file, or a passphrase from an environment variable)",
         arg("--passphrase-env", metavar="VAR", help="protect the master key with the passphrase in $VAR"),
         arg("--memory-mib", type=int, default=64, help="Argon2id memory (MiB)"),
         arg("--iterations", type=int, default=3, help="Argon2id iterations"),
         arg("--lanes", type=int, default=4, help="Argon2id lanes"))
    _add(key, "import", _key_import, "import key material (raw, PEM/DER, or a BYOK package)", arg("name"),
         arg("--file", required=True, help="material file (32 raw bytes, a private key, or a BYOK package)"),
         arg("--kind", choices=KINDS, default="aes256", help=KIND_HELP), ops,
         arg("--byok", metavar="TRANSFER_KEY", help="the file is a BYOK package for this transfer key"))
    _add(key, "transfer-key", _key_transfer, "create an RSA transfer key for BYOK; prints its public key",
         arg("name"))
    _add(key, "byok-pack", _key_byok_pack, "pack material for BYOK import (run by the key owner)",
         arg("--public-key", required=True, help="transfer public key PEM file"),
         arg("--file", required=True, help="material file"), arg("--out", required=True))
    _add(key, "backup", _key_backup, f"encrypted backup of one key (portable with ${BACKUP_PASSPHRASE_ENV})",
         arg("name"), arg("--out", required=True))
    _add(key, "restore", _key_restore, "restore a key from a backup", arg("file"),
         arg("--force", action="store_true",
            help="restore over a purged key (brings crypto-shredded material back)"))
    _add(key, "sign", _key_sign, "sign a file (base64 signature on stdout)", arg("name"), arg("file"))
    _add(key, "verify", _key_verify, "verify a base64 signature of a file", arg("name"), arg("file"),
         arg("signature"))

    secret = sub.add_parser("secret", help="the vault's secrets store").add_subparsers(
        dest="secret_command", metavar="ACTION", required=True)
    _add(secret, "set", _secret_set, "store a new version (value from --file or stdin)", arg("name"),
         arg("--file", help="read the value from a file (default: stdin)"))
    _add(secret, "get", _secret_get, "print a secret", arg("name"), arg("--version", type=int, help="a version (default the newest)"))
    _add(secret, "list", _secret_list, "list secrets (never values)")
    _add(secret, "versions", _secret_versions, "list a secret's versions", arg("name"))
    _add(secret, "delete", _secret_delete, "delete a secret and all its versions", arg("name"))

    vault = sub.add_parser("vault", help="create or locate the local vault").add_subparsers(
        dest="vault_command", metavar="ACTION", required=True)
    _add(vault, "init", _key_init, "create a vault (a 0600 key file, or a passphrase through Argon2id)",
         arg("--passphrase-stdin", action="store_true", help="read the passphrase from the first line of stdin"),
         arg("--passphrase-env", metavar="VAR", help="protect the master key with the passphrase in $VAR"),
         arg("--memory-mib", type=int, default=64, help="Argon2id memory (MiB)"),
         arg("--iterations", type=int, default=3, help="Argon2id iterations"),
         arg("--lanes", type=int, default=4, help="Argon2id lanes"))
    _add(vault, "path", _vault_path, "print the vault directory in use and whether it exists")

    audit = sub.add_parser("audit", help="the vault audit log").add_subparsers(
        dest="audit_command", metavar="ACTION", required=True)
    _add(audit, "verify", _audit_verify, "check the hash chain (exit 1 when broken)")
    _add(audit, "tail", _audit_tail, "show the last entries", arg("-n", type=int, default=20, help="how many entries (default 20)"))


# ---------------------------------------------------------------- helpers


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


def _write_private(path: str, data: bytes) -> None:
    """Write a 0600 file: a fresh temp file (mkstemp: O_CREAT|O_EXCL|O_NOFOLLOW, fchmod 0600)
    renamed over ``path``, so an existing file's mode is not kept and a symlink is not followed."""
    atomic_write(Path(os.path.abspath(path)), data)


def _backup_passphrase() -> bytes | None:
    value = os.environ.get(BACKUP_PASSPHRASE_ENV)
    return value.encode("utf-8") if value else None


# ---------------------------------------------------------------- key


def _key_create(args: argparse.Namespace) -> int:
    uri = open_vault(args, create=True).create_key(args.name, args.kind, ops=_ops(args.ops),
                                  not_before=_time(args.not_before), expires=_time(args.expires))
    return output(args, {"uri": uri}, uri)


def _key_list(args: argparse.Namespace) -> int:
    vault = open_vault(args)
    keys = vault.list_keys(include_deleted=args.all)
    warnings = key_warnings(vault, keys)  # keys and certificates expiring within 30 days, or expired
    for k in keys:
        if k["name"] in warnings:
            k["warning"] = warnings[k["name"]]
            print(f"envcrypt: warning: {k['uri']}: {k['warning']}", file=sys.stderr)
    if args.json:
        return output(args, keys)
    for k in keys:
        state = "deleted" if k["deleted"] else ("enabled" if k["enabled"] else "disabled")
        note = f"  ! {k['warning']}" if k.get("warning") else ""
        print(f"{k['uri']:32} {k['kind']:8} v{k['current_version']}  {state:8} {','.join(k['ops'])}{note}")
    return 0


def _key_show(args: argparse.Namespace) -> int:
    shown = open_vault(args).show_key(args.name)
    if args.json:
        return output(args, shown)
    fields = [k for k in shown if k != "versions"]
    width = max(len(k) for k in fields)
    for k in fields:
        value = iso_time(shown[k]) if k in TIME_FIELDS else shown[k]
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        print(f"{k:{width}}  {'-' if value is None else value}")
    print()
    print(table([{**v, "public": "yes" if v.get("public") else "no"} for v in shown.get("versions") or []],
                 ["version", "created", "enabled", "origin", "public"]))
    return 0


def _key_rotate(args: argparse.Namespace) -> int:
    uri = open_vault(args).rotate_key(args.name)
    return output(args, {"uri": uri}, uri)


def _key_update(args: argparse.Namespace) -> int:
    vault = open_vault(args)
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
    return output(args, vault.show_key(args.name))


def _state_change(method: str, done: str, note: str = "") -> Callable[[argparse.Namespace], int]:
    """A command that calls ``LocalVault.<method>(NAME)`` and reports ``{done: NAME}``."""
    def run(args: argparse.Namespace) -> int:
        getattr(open_vault(args), method)(args.name)
        return output(args, {done: args.name}, f"{done} {args.name}{note}")
    return run


_key_disable = _state_change("disable_key", "disabled")
_key_enable = _state_change("enable_key", "enabled")
_key_recover = _state_change("recover_key", "recovered")
_key_purge = _state_change("purge_key", "purged", ": data under it is unrecoverable")


def _key_delete(args: argparse.Namespace) -> int:
    open_vault(args).delete_key(args.name, args.retention_days)
    return output(args, {"deleted": args.name}, f"deleted {args.name} (recoverable until purged)")


def _key_purge_due(args: argparse.Namespace) -> int:
    purged = open_vault(args).purge_due()
    return output(args, {"purged": purged}, "purged: " + (", ".join(purged) or "nothing due"))


def _vault_path(args: argparse.Namespace) -> int:
    vault = LocalVault(args.vault)
    exists = vault.store.initialised()
    return output(args, {"vault": str(vault.path), "exists": exists},
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
    vault = open_vault(args, create=True)
    vault.init(passphrase, memory_cost=args.memory_mib * 1024, iterations=args.iterations, lanes=args.lanes)
    mode = "argon2id passphrase" if passphrase else "key file"
    return output(args, {"vault": str(vault.path), "master": mode}, f"initialised {vault.path} ({mode})")


def _key_import(args: argparse.Namespace) -> int:
    vault, data = open_vault(args, create=True), read_bytes(args.file)
    if args.byok:
        uri = vault.import_byok(args.name, args.byok, data, args.kind, ops=_ops(args.ops))
    else:
        uri = vault.import_key(args.name, data, args.kind, ops=_ops(args.ops))
    return output(args, {"uri": uri}, uri)


def _key_transfer(args: argparse.Namespace) -> int:
    uri, pem = open_vault(args, create=True).create_transfer_key(args.name)
    return output(args, {"uri": uri, "public_key": pem}, pem.rstrip())


def _key_byok_pack(args: argparse.Namespace) -> int:
    package = wrap_for_transfer(read_bytes(args.public_key), read_bytes(args.file))
    _write_private(args.out, package)
    return output(args, {"out": args.out, "size": len(package)}, f"wrote {args.out}")


def _key_backup(args: argparse.Namespace) -> int:
    passphrase = _backup_passphrase()
    _write_private(args.out, open_vault(args).backup_key(args.name, passphrase))
    protection = "passphrase" if passphrase else "vault"
    return output(args, {"out": args.out, "protection": protection}, f"wrote {args.out} ({protection}-protected)")


def _key_restore(args: argparse.Namespace) -> int:
    uri = open_vault(args, create=True).restore_key(read_bytes(args.file), _backup_passphrase(), force=args.force)
    return output(args, {"uri": uri}, f"restored {uri}")


def _key_sign(args: argparse.Namespace) -> int:
    uri, signature = open_vault(args).sign(args.name, read_bytes(args.file))
    text = base64.b64encode(signature).decode("ascii")
    return output(args, {"key_uri": uri, "signature": text}, text)


def _key_verify(args: argparse.Namespace) -> int:
    uri = open_vault(args).verify(args.name, read_bytes(args.file), base64.b64decode(args.signature, validate=True))
    return output(args, {"valid": True, "key_uri": uri}, f"valid ({uri})")


# ---------------------------------------------------------------- secret


def _secret_set(args: argparse.Namespace) -> int:
    value = read_bytes(args.file) if args.file else sys.stdin.buffer.read()
    version = open_vault(args, create=True).secrets.set(args.name, value)
    return output(args, {"name": args.name, "version": version}, f"{args.name} version {version}")


def _secret_get(args: argparse.Namespace) -> int:
    value = open_vault(args).secrets.get(args.name, args.version)
    if args.json:
        try:
            shown: dict[str, Any] = {"name": args.name, "value": value.decode("utf-8")}
        except UnicodeDecodeError:
            shown = {"name": args.name, "value_base64": base64.b64encode(value).decode("ascii")}
        return output(args, shown)
    sys.stdout.buffer.write(value)
    sys.stdout.flush()
    return 0


def _secret_list(args: argparse.Namespace) -> int:
    rows = open_vault(args).secrets.list()
    return output(args, rows, table(rows, ["name", "versions", "updated"]))


def _secret_versions(args: argparse.Namespace) -> int:
    rows = open_vault(args).secrets.versions(args.name)
    return output(args, rows, table(rows, ["version", "created"]))


def _secret_delete(args: argparse.Namespace) -> int:
    open_vault(args).secrets.delete(args.name)
    return output(args, {"deleted": args.name}, f"deleted {args.name}")


# ---------------------------------------------------------------- audit


def _audit_verify(args: argparse.Namespace) -> int:
    report = open_vault(args).audit.verify()
    if args.json:
        output(args, report.as_dict())
    elif report.ok:
        print(f"ok: {report.entries} entries, chain intact")
    else:
        where = f" at line {report.line}" if report.line else ""
        print(f"BROKEN{where}: {report.problem} ({report.entries} entries verified before it)")
    return 0 if report.ok else 1


def _audit_tail(args: argparse.Namespace) -> int:
    entries = open_vault(args).audit.tail(args.n)
    if args.json:
        return output(args, entries)
    for e in entries:
        version = f"/{e['version']}" if e.get("version") else ""
        print(f"{e['seq']:6} {e['time']} {e['who'].get('user')}@{e['who'].get('host')} "
              f"{e['op']:14} {e.get('key') or '-'}{version} {e['outcome']}")
    return 0
