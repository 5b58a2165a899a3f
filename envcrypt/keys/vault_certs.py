"""Certificates in the local vault, composed as Key Vault composes them: a certificate
``NAME`` is the vault key ``local:NAME`` (rsa or ec-p256, sign/verify only: the private key
never leaves the vault) plus the certificate documents in the vault secret ``cert.NAME``.

Each version of a certificate names the key version it certifies.  A document (JSON, one
secret version each) holds one certificate version's state: ``pending`` (a CSR waiting for
``merge``) or ``issued`` (the DER certificate and its chain); the newest document of a
version is its state.  The secrets store seals every document under the vault master key,
bound to ``secret:cert.NAME/N``, in a record that is MACed and carries a generation checked
against the vault index: a vault-directory writer cannot edit, swap, copy or replay a
certificate or its chain (VaultError).  On every read the certificate (or CSR) must also
certify the public key of the key version it names, and each chain certificate must have
issued the one before it.

Operations: :meth:`CertificateStore.create` (self-signed, or a CSR to have signed
elsewhere, then :meth:`merge`), :meth:`import_certificate` (PEM or PKCS#12 with its
private key), :meth:`renew` (a new version with a new key version), :meth:`show`,
:meth:`versions`, :meth:`list`, :meth:`export` (certificate and chain, never the key).
Signing with a certificate's key is the vault's ``sign``/``verify`` on ``local:NAME``;
old key versions keep verifying after a renewal.  Every call is audited (``cert-*`` lines).
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import KeyNotFoundError, KeyStateError, KeyUsageError, VaultError
from . import vault_crypto as vc
from .audit import outcome_of
from .cert_x509 import (
    EXPIRY_WARNING_DAYS,
    build_csr,
    expiry_note,
    issued_by,
    load_bundle,
    ordered_chain,
    parse_sans,
    parse_validity,
    pkcs8,
    private_kind,
    public_kind,
    san_text,
    self_signed,
    spki,
    subject_name,
)
from .vault import LocalVault
from .vault_secrets import MAX_SECRET_SIZE, SECRETS_DIR

__all__ = ["CertificateStore", "EXPIRY_WARNING_DAYS", "SECRET_PREFIX", "parse_validity", "expiry_note",
           "key_warnings"]

SECRET_PREFIX = "cert."
DOCUMENT_TYPE = "envcrypt-certificate"
DOCUMENT_FORMAT = 1
CERT_OPS = ("sign", "verify")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,122}")  # fullmatch: "$" would accept a trailing newline
T = TypeVar("T")


def _now() -> int:
    return int(time.time())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("not base64 text")
    return base64.b64decode(text, validate=True)


class CertificateStore:
    """The certificates of one :class:`LocalVault` (no state of its own beyond the vault)."""

    def __init__(self, vault: LocalVault) -> None:
        self.vault = vault

    def __repr__(self) -> str:
        return f"CertificateStore({str(self.vault.path)!r})"

    # ------------------------------------------------------------ plumbing

    def _audited(self, op: str, name: Any, fn: Callable[[], tuple[int | None, T]]) -> T:
        shown = name if isinstance(name, str) and _NAME.fullmatch(name) else (None if name is None else repr(name)[:128])
        try:
            if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
                raise ValueError(f"invalid certificate name: {name!r}")
            version, result = fn()
        except Exception as exc:
            self.vault.audit.record(op, shown, None, outcome_of(exc), kind="certificate")
            raise
        self.vault.audit.record(op, shown, version, "ok", kind="certificate")
        return result

    def _locked(self) -> Any:
        """Certificate changes span a key import and a secret write: one at a time per vault."""
        return self.vault.store.locked(".cert.lock")

    def _documents(self, name: str) -> dict[int, dict[str, Any]]:
        """Version -> newest document of that version (checked shape, oldest version first)."""
        secret = SECRET_PREFIX + name
        try:
            numbers = [v["version"] for v in self.vault.secrets.versions(secret)]
        except KeyNotFoundError:
            raise KeyNotFoundError(f"no certificate {name!r} in the vault") from None
        docs: dict[int, dict[str, Any]] = {}
        for number in numbers:
            raw = self.vault.secrets.get(secret, number)
            try:
                doc = json.loads(raw)
            except ValueError:
                raise VaultError(f"the vault secret {secret} is not a certificate document") from None
            docs[self._check_shape(name, doc)["version"]] = doc
        if not docs:
            raise KeyNotFoundError(f"no certificate {name!r} in the vault")
        return dict(sorted(docs.items()))

    @staticmethod
    def _check_shape(name: str, doc: Any) -> dict[str, Any]:
        def ok(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value >= 1

        if not isinstance(doc, dict) or doc.get("type") != DOCUMENT_TYPE or doc.get("format") != DOCUMENT_FORMAT:
            raise VaultError(f"the vault secret {SECRET_PREFIX}{name} is not a certificate document")
        if doc.get("name") != name or not ok(doc.get("version")) or not ok(doc.get("key_version")) \
                or doc.get("status") not in ("pending", "issued") or not isinstance(doc.get("chain"), list):
            raise VaultError(f"corrupt certificate document for {name!r}")
        return doc

    def _key_public(self, name: str, key_version: int) -> Any:
        pem = self.vault.public_key_pem(f"{name}/{key_version}")
        return serialization.load_pem_public_key(pem.encode("ascii"))

    def _verified(self, name: str, doc: dict[str, Any]) -> tuple[x509.Certificate | None, list[x509.Certificate],
                                                                   x509.CertificateSigningRequest | None]:
        """The document's certificate, chain and CSR after checking that they certify the key
        version it names and that the chain is an issuer path; VaultError otherwise."""
        where = f"certificate {name!r} version {doc['version']}"
        try:
            leaf = x509.load_der_x509_certificate(_unb64(doc["certificate"])) if doc["status"] == "issued" else None
            chain = [x509.load_der_x509_certificate(_unb64(c)) for c in doc["chain"]]
            csr = x509.load_pem_x509_csr(doc["csr"].encode("ascii")) if doc.get("csr") else None
        except (ValueError, TypeError, KeyError, AttributeError):
            raise VaultError(f"corrupt {where}") from None
        key = spki(self._key_public(name, doc["key_version"]))
        subject_key = leaf.public_key() if leaf is not None else (csr.public_key() if csr is not None else None)
        if subject_key is None or spki(subject_key) != key:
            raise VaultError(f"the {where} does not certify its key local:{name}/{doc['key_version']}: refusing it")
        current = leaf
        for issuer in chain:
            if current is None or not issued_by(current, issuer):
                raise VaultError(f"the chain of {where} is not an issuer path: refusing it")
            current = issuer
        return leaf, chain, csr

    def _summary(self, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        leaf, chain, csr = self._verified(name, doc)
        out: dict[str, Any] = {
            "name": name, "version": doc["version"], "key": f"local:{name}/{doc['key_version']}",
            "status": doc["status"], "origin": doc.get("origin"), "created": doc.get("created"),
            "chain_length": len(chain),
        }
        if leaf is not None:
            not_after = int(leaf.not_valid_after_utc.timestamp())
            out.update(
                subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
                serial=format(leaf.serial_number, "x"), not_before=int(leaf.not_valid_before_utc.timestamp()),
                not_after=not_after, sans=san_text(leaf), self_signed=leaf.issuer == leaf.subject,
                sha256=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
                warning=expiry_note(not_after),
            )
        elif csr is not None:
            out.update(subject=csr.subject.rfc4514_string(), sans=san_text(csr), warning=None)
        return out

    @staticmethod
    def _check_size(doc: dict[str, Any]) -> None:
        size = len(json.dumps(doc, sort_keys=True).encode("utf-8"))
        if size > MAX_SECRET_SIZE:
            raise KeyUsageError(f"the certificate and its chain take {size} bytes: at most {MAX_SECRET_SIZE}")

    def _save(self, name: str, doc: dict[str, Any]) -> None:
        self._check_size(doc)
        self.vault.secrets.set(SECRET_PREFIX + name, json.dumps(doc, sort_keys=True))

    def _exists(self, name: str) -> bool:
        try:
            self.vault.secrets.versions(SECRET_PREFIX + name)
        except KeyNotFoundError:
            return False
        return True

    @staticmethod
    def _document(name: str, version: int, key_uri: str, origin: str, leaf: x509.Certificate | None,
                  chain: Sequence[x509.Certificate] = (), csr: x509.CertificateSigningRequest | None = None,
                  ) -> dict[str, Any]:
        key_version = int(key_uri.rsplit("/", 1)[1])
        return {
            "type": DOCUMENT_TYPE, "format": DOCUMENT_FORMAT, "name": name, "version": version,
            "key_version": key_version, "status": "issued" if leaf is not None else "pending", "origin": origin,
            "created": _now(),
            "certificate": _b64(leaf.public_bytes(serialization.Encoding.DER)) if leaf is not None else None,
            "chain": [_b64(c.public_bytes(serialization.Encoding.DER)) for c in chain],
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode("ascii") if csr is not None else None,
        }

    # ------------------------------------------------------------ issuing

    def _issue(self, name: str, version: int, kind: str, subject: x509.Name, sans: Sequence[x509.GeneralName],
               days: int, csr: bool, origin: str) -> dict[str, Any]:
        """A new key version (generated here, imported into the vault: sign/verify only) and the
        certificate document of ``version`` for it; the caller holds the certificate lock."""
        material = vc.generate(kind)
        key = vc.load_private(kind, material)
        if csr:
            request = build_csr(key, subject, sans)
            key_uri = self.vault.import_key(name, material, kind, ops=CERT_OPS)
            doc = self._document(name, version, key_uri, origin + "+csr", None, csr=request)
        else:
            cert = self_signed(key, subject, sans, days)
            key_uri = self.vault.import_key(name, material, kind, ops=CERT_OPS)
            doc = self._document(name, version, key_uri, origin, cert)
        self._save(name, doc)
        return doc

    def create(self, name: str, subject: str, sans: Iterable[str] = (), validity: str | int = 365, *,
               kind: str = vc.RSA, csr: bool = False) -> dict[str, Any]:
        """A new certificate: self-signed, or (``csr=True``) a pending version whose CSR
        (``result["csr"]``, PEM) is signed elsewhere and brought back with :meth:`merge`."""
        def run() -> tuple[int, dict[str, Any]]:
            if kind not in (vc.RSA, vc.EC_P256):
                raise KeyUsageError("a certificate's key kind is rsa or ec-p256")
            parsed, alt, days = subject_name(subject), parse_sans(sans), parse_validity(validity)
            with self._locked():
                if self._exists(name):
                    raise KeyStateError(f"certificate {name!r} already exists (renew it, or import a new version)")
                if self.vault.key_exists(name):
                    raise KeyStateError(f"a key local:{name} exists: a certificate's key has the certificate's name")
                doc = self._issue(name, 1, kind, parsed, alt, days, csr, "self-signed")
            return 1, {**self._summary(name, doc), "csr": doc["csr"]}

        return self._audited("cert-create", name, run)

    def renew(self, name: str, validity: str | int | None = None, *, csr: bool = False) -> dict[str, Any]:
        """A new version with a new key version (same subject and SANs; self-signed, or a CSR).
        Older versions and their key versions stay: what they signed still verifies."""
        def run() -> tuple[int, dict[str, Any]]:
            with self._locked():
                docs = self._documents(name)
                base = next((d for d in reversed(docs.values()) if d["status"] == "issued"), None)
                if base is None:
                    raise KeyStateError(f"certificate {name!r} has no issued version to renew (merge it first)")
                leaf, _, _ = self._verified(name, base)
                if leaf is None:
                    raise VaultError(f"internal error: issued certificate {name!r} without a certificate")
                days = parse_validity(validity) if validity is not None else max(1, (
                    leaf.not_valid_after_utc - leaf.not_valid_before_utc).days)
                try:
                    alt = list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
                except x509.ExtensionNotFound:
                    alt = []
                kind = public_kind(leaf.public_key())
                version = max(docs) + 1
                doc = self._issue(name, version, kind, leaf.subject, alt, days, csr, "renewed")
            return version, {**self._summary(name, doc), "csr": doc["csr"]}

        return self._audited("cert-renew", name, run)

    def merge(self, name: str, pem: bytes) -> dict[str, Any]:
        """Complete the pending version with the certificate signed from its CSR (PEM: the
        certificate, then its chain)."""
        def run() -> tuple[int, dict[str, Any]]:
            try:
                certs = x509.load_pem_x509_certificates(bytes(pem))
            except ValueError:
                raise KeyUsageError("merge takes PEM certificates (the signed certificate, then its chain)") from None
            with self._locked():
                docs = self._documents(name)
                pending = docs[max(docs)]
                if pending["status"] != "pending":
                    raise KeyStateError(f"certificate {name!r} has no pending version (create or renew with --csr)")
                key = spki(self._key_public(name, pending["key_version"]))
                leaf = next((c for c in certs if spki(c.public_key()) == key), None)
                if leaf is None:
                    raise KeyUsageError(f"no certificate in the input certifies the pending key of {name!r}")
                chain = ordered_chain(leaf, certs)
                doc = self._document(name, pending["version"], f"local:{name}/{pending['key_version']}", "merged",
                                     leaf, chain)
                self._save(name, doc)
            return doc["version"], self._summary(name, doc)

        return self._audited("cert-merge", name, run)

    def import_certificate(self, name: str, data: bytes, password: bytes | str | None = None) -> dict[str, Any]:
        """Import a certificate with its private key: PEM (key and certificates) or PKCS#12.
        The key must be the one the certificate certifies; the other certificates must form
        its issuer path.  A new certificate, or a new version of an existing one."""
        if isinstance(password, str):
            password = password.encode("utf-8")

        def run() -> tuple[int, dict[str, Any]]:
            key, leaf, chain = load_bundle(bytes(data), password)
            kind = private_kind(key)
            with self._locked():
                docs = self._documents(name) if self._exists(name) else {}
                if not docs and self.vault.key_exists(name):
                    raise KeyStateError(f"a key local:{name} exists: a certificate's key has the certificate's name")
                version = max(docs, default=0) + 1
                # before the key is imported: a chain too large for the document leaves nothing behind
                self._check_size(self._document(name, version, f"local:{name}/999999999", "imported", leaf, chain))
                key_uri = self.vault.import_key(name, pkcs8(key), kind, ops=CERT_OPS)
                doc = self._document(name, version, key_uri, "imported", leaf, chain)
                self._save(name, doc)
            return version, self._summary(name, doc)

        return self._audited("cert-import", name, run)

    # ------------------------------------------------------------ reading

    def show(self, name: str, version: int | None = None) -> dict[str, Any]:
        def run() -> tuple[int, dict[str, Any]]:
            docs = self._documents(name)
            number = max(docs) if version is None else version
            if number not in docs:
                raise KeyNotFoundError(f"no version {version} of certificate {name!r}")
            return number, {**self._summary(name, docs[number]), "versions": len(docs)}

        return self._audited("cert-show", name, run)

    def versions(self, name: str) -> builtins.list[dict[str, Any]]:
        return self._audited("cert-versions", name, lambda: (None, [
            self._summary(name, d) for d in self._documents(name).values()]))

    def list(self) -> builtins.list[dict[str, Any]]:
        """The newest version of every certificate (with its expiry ``warning``)."""
        def run() -> tuple[None, builtins.list[dict[str, Any]]]:
            out = []
            for entry in self.vault.secrets.list():
                if entry["name"].startswith(SECRET_PREFIX):
                    name = entry["name"][len(SECRET_PREFIX):]
                    docs = self._documents(name)
                    out.append({**self._summary(name, docs[max(docs)]), "versions": len(docs)})
            return None, out

        return self._audited("cert-list", None, run)

    def export(self, name: str, version: int | None = None, *, chain: bool = True) -> str:
        """The certificate (and its chain) as PEM; never the private key."""
        def run() -> tuple[int, str]:
            docs = self._documents(name)
            number = max(docs) if version is None else version
            doc = docs.get(number)
            if doc is None:
                raise KeyNotFoundError(f"no version {version} of certificate {name!r}")
            leaf, certs, _ = self._verified(name, doc)
            if leaf is None:
                raise KeyStateError(f"certificate {name!r} version {number} is pending (merge the signed certificate)")
            parts = [leaf, *(certs if chain else [])]
            return number, "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in parts)

        return self._audited("cert-export", name, run)

    def expiry_warnings(self) -> dict[str, str]:
        """Key name -> warning, for certificates whose newest issued version expires within
        :data:`EXPIRY_WARNING_DAYS` days or has expired (for ``key list``)."""
        return {c["name"]: f"certificate {c['warning']}" for c in self.list() if c.get("warning")}


def key_warnings(vault: LocalVault, keys: Sequence[dict[str, Any]], now: int | None = None) -> dict[str, str]:
    """Key name -> warning for ``key list``: a key whose ``expires`` is within
    :data:`EXPIRY_WARNING_DAYS` days or past, and a certificate's key whose newest issued
    certificate is (certificates are read only when the vault has any)."""
    out: dict[str, str] = {}
    for key in keys:
        if key.get("expires"):
            note = expiry_note(int(key["expires"]), now)
            if note:
                out[key["name"]] = f"key {note}"
    has_secrets = (vault.path / SECRETS_DIR).is_dir()  # listing must not create the directory
    if has_secrets and any(s["name"].startswith(SECRET_PREFIX) for s in vault.secrets.list()):
        names = {k["name"] for k in keys}
        for name, note in CertificateStore(vault).expiry_warnings().items():
            if name in names:
                out[name] = f"{out[name]}; {note}" if name in out else note
    return out
