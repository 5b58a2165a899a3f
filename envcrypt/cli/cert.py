"""``envcrypt cert ...``: certificates in the local vault (keys/vault_certs.py).

A certificate's private key stays in the vault (the key ``local:NAME``, sign/verify
only: ``envcrypt key sign NAME FILE``); commands print or export certificates and chains
only.  A PKCS#12 or encrypted PEM password comes from ``--password-env VAR`` (default
``$ENVCRYPT_CERT_PASSWORD``) or a prompt on a terminal, never from the command line.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from ..errors import KeyUsageError
from ..keys.vault_certs import CertificateStore
from ..keys.vault_crypto import EC_P256, RSA
from ._vault_common import arg, iso_time, open_vault, output, read_bytes, table, vault_options

PASSWORD_ENV = "ENVCRYPT_CERT_PASSWORD"

EXAMPLES = {
    "create": 'envcrypt cert create web --subject "CN=www.example.com" --san DNS:www.example.com --validity 365d',
    "merge": "envcrypt cert merge web signed.pem",
    "import": "ENVCRYPT_CERT_PASSWORD=... envcrypt cert import web web.p12",
    "renew": "envcrypt cert renew web",
    "show": "envcrypt cert show web",
    "list": "envcrypt cert list",
    "versions": "envcrypt cert versions web",
    "export": "envcrypt cert export web --out web.pem",
}


def _add(sub: Any, name: str, func: Any, helptext: str, *args: tuple[tuple[str, ...], dict[str, Any]]) -> None:
    p = sub.add_parser(name, help=helptext, description=helptext, epilog=f"example:\n  {EXAMPLES[name]}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    for names, kwargs in args:
        kwargs.setdefault("help", "certificate name (its key is local:NAME)" if names[0] == "name" else names[0])
        p.add_argument(*names, **kwargs)
    vault_options(p)
    p.set_defaults(func=func)


def register(sub: Any) -> None:
    cert = sub.add_parser("cert", help="certificates in the local vault").add_subparsers(
        dest="cert_command", metavar="ACTION", required=True)
    validity = arg("--validity", metavar="DAYS", help="validity: Nd, Nw, Ny or days (default 365d; renew: as before)")
    csr = arg("--csr", action="store_true", help="make a CSR to be signed elsewhere (then: cert merge)")
    out = arg("--out", metavar="FILE", help="write the PEM here instead of stdout")
    _add(cert, "create", _create, "create a certificate (self-signed, or a CSR with --csr)", arg("name"),
         arg("--subject", required=True, help='RFC 4514 subject, e.g. "CN=www.example.com,O=Example"'),
         arg("--san", action="append", default=[], metavar="TYPE:VALUE",
            help="subject alternative name: DNS:, IP:, URI: or EMAIL: (repeatable)"),
         arg("--validity", metavar="DAYS", default="365d", help="Nd, Nw, Ny or days (default 365d)"),
         arg("--kind", choices=(RSA, EC_P256), default=RSA, help="key kind (default rsa)"), csr, out)
    _add(cert, "merge", _merge, "complete a pending certificate with the signed certificate (PEM, then chain)",
         arg("name"), arg("file", help="PEM file: the signed certificate and its chain"))
    _add(cert, "import", _import, "import a certificate with its private key (PEM or PKCS#12)", arg("name"),
         arg("file", help="PEM bundle or PKCS#12 (.p12/.pfx) file"),
         arg("--password-env", metavar="VAR", help=f"read the file's password from $VAR (default ${PASSWORD_ENV})"))
    _add(cert, "renew", _renew, "add a new version with a new key", arg("name"), validity, csr, out)
    _add(cert, "show", _show, "show a certificate version", arg("name"),
         arg("--version", type=int, help="version (default: newest)"))
    _add(cert, "list", _list, "list certificates (with expiry warnings)")
    _add(cert, "versions", _versions, "list a certificate's versions", arg("name"))
    _add(cert, "export", _export, "export the certificate and chain (never the private key) as PEM", arg("name"),
         arg("--version", type=int, help="version (default: newest)"),
         arg("--no-chain", action="store_true", help="only the certificate"), out)


def _store(args: argparse.Namespace, create: bool = False) -> CertificateStore:
    return CertificateStore(open_vault(args, create=create))


def _write_pem(args: argparse.Namespace, pem: str) -> None:
    if getattr(args, "out", None):
        with open(args.out, "w", encoding="ascii") as f:  # certificates and CSRs are public
            f.write(pem)
    else:
        sys.stdout.write(pem)


def _warn(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row.get("warning"):
            print(f"envcrypt: warning: certificate {row['name']} version {row['version']} {row['warning']} "
                  f"(not after {iso_time(row['not_after'])})", file=sys.stderr)


def _text(row: dict[str, Any]) -> str:
    shown = {k: (iso_time(v) if k in ("created", "not_before", "not_after") else v) for k, v in row.items() if k != "csr"}
    width = max(len(k) for k in shown)
    lines = []
    for k, v in shown.items():
        if isinstance(v, list):
            v = ",".join(str(x) for x in v)
        lines.append(f"{k:{width}}  {'-' if v is None else v}")
    return "\n".join(lines)


def _issued(args: argparse.Namespace, row: dict[str, Any]) -> int:
    if row.get("csr") and not args.json:
        _write_pem(args, row["csr"])
        print(f"certificate {row['name']} version {row['version']} is pending: have the CSR signed, then "
              f"envcrypt cert merge {row['name']} signed.pem", file=sys.stderr)
        return 0
    _warn([row])
    return output(args, row, _text(row))


def _create(args: argparse.Namespace) -> int:
    row = _store(args, create=True).create(args.name, args.subject, args.san, args.validity, kind=args.kind,
                                           csr=args.csr)
    return _issued(args, row)


def _renew(args: argparse.Namespace) -> int:
    return _issued(args, _store(args).renew(args.name, args.validity, csr=args.csr))


def _merge(args: argparse.Namespace) -> int:
    return _issued(args, _store(args).merge(args.name, read_bytes(args.file)))


def _password(args: argparse.Namespace) -> bytes | None:
    variable = args.password_env or PASSWORD_ENV
    value = os.environ.get(variable)
    if value is not None:
        return value.encode("utf-8")
    if args.password_env:
        raise ValueError(f"--password-env {variable}: the variable is not set")
    return None


def _import(args: argparse.Namespace) -> int:
    data, password = read_bytes(args.file), _password(args)
    store = _store(args, create=True)
    try:
        row = store.import_certificate(args.name, data, password)
    except KeyUsageError:
        if password is not None or not sys.stdin.isatty():
            raise
        prompted = getpass.getpass(f"password for {args.file}: ").encode("utf-8")
        row = store.import_certificate(args.name, data, prompted)
    _warn([row])
    return output(args, row, _text(row))


def _show(args: argparse.Namespace) -> int:
    row = _store(args).show(args.name, args.version)
    _warn([row])
    return output(args, row, _text(row))


def _list(args: argparse.Namespace) -> int:
    rows = _store(args).list()
    _warn(rows)
    shown = [{**r, "not_after": iso_time(r.get("not_after")), "warning": r.get("warning") or ""} for r in rows]
    return output(args, rows, table(shown, ["name", "version", "status", "subject", "not_after", "warning"]))


def _versions(args: argparse.Namespace) -> int:
    rows = _store(args).versions(args.name)
    shown = [{**r, "not_after": iso_time(r.get("not_after"))} for r in rows]
    return output(args, rows, table(shown, ["version", "key", "status", "origin", "serial", "not_after"]))


def _export(args: argparse.Namespace) -> int:
    _write_pem(args, _store(args).export(args.name, args.version, chain=not args.no_chain))
    return 0
