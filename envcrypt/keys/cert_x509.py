"""X.509 for the vault's certificates, as pure functions over ``cryptography.x509``:
subjects and SANs from text, self-signed certificates and CSRs, issuer paths, PEM and
PKCS#12 bundles (the certificate must certify the bundle's key), validity and expiry.
No vault access here: vault_certs.py stores what these build and check.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..errors import KeyUsageError
from . import vault_crypto as vc

__all__ = ["parse_validity", "expiry_note", "subject_name", "parse_sans", "san_text", "spki", "private_kind",
           "public_kind", "pkcs8", "ordered_chain", "issued_by", "self_signed", "build_csr", "load_bundle",
           "EXPIRY_WARNING_DAYS"]

EXPIRY_WARNING_DAYS = 30
MAX_VALIDITY_DAYS = 100 * 366
#: certificates in one import or merge input (real chains have a handful)
MAX_BUNDLE_CERTS = 32
_SAN_TYPES = ("DNS", "IP", "URI", "EMAIL")


def _now() -> int:
    return int(time.time())


def parse_validity(text: str | int) -> int:
    """``365d``, ``52w``, ``2y`` or a number of days -> days (1 .. 100 years)."""
    if isinstance(text, int) and not isinstance(text, bool):
        days = text
    else:
        match = re.fullmatch(r"\s*([0-9]{1,6})\s*([dwy]?)\s*", str(text))
        if match is None:
            raise ValueError(f"validity is a number of days, or Nd / Nw / Ny: {text!r}")
        days = int(match.group(1)) * {"": 1, "d": 1, "w": 7, "y": 365}[match.group(2)]
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise ValueError(f"validity must be 1 .. {MAX_VALIDITY_DAYS} days")
    return days


def expiry_note(not_after: int, now: int | None = None) -> str | None:
    """``expired`` or ``expires in N days`` within :data:`EXPIRY_WARNING_DAYS`; None otherwise."""
    left = not_after - (_now() if now is None else now)
    if left <= 0:
        return "expired"
    if left <= EXPIRY_WARNING_DAYS * 86400:
        return f"expires in {max(1, left // 86400)} days"
    return None


def subject_name(text: str) -> x509.Name:
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError as exc:
        raise ValueError(f"not an RFC 4514 subject (\"CN=example.com,O=Example\"): {text!r}: {exc}") from None
    if not list(name):
        raise ValueError("the subject names nothing")
    return name


def parse_sans(items: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for item in items:
        kind, sep, value = item.partition(":")
        kind = kind.upper()
        if not sep or not value or kind not in _SAN_TYPES:
            raise ValueError(f"a SAN is TYPE:VALUE with TYPE one of {', '.join(_SAN_TYPES)}: {item!r}")
        if kind == "DNS":
            out.append(x509.DNSName(value))
        elif kind == "IP":
            out.append(x509.IPAddress(ipaddress.ip_address(value)))
        elif kind == "URI":
            out.append(x509.UniformResourceIdentifier(value))
        else:
            out.append(x509.RFC822Name(value))
    return out


def san_text(cert: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    prefix: dict[type, str] = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.UniformResourceIdentifier: "URI",
                               x509.RFC822Name: "EMAIL"}
    return [f"{prefix[type(n)]}:{n.value}" for n in ext if type(n) in prefix]


def spki(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def private_kind(key: Any) -> str:
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise KeyUsageError("a certificate's key is an RSA or EC P-256 private key")
    return public_kind(key.public_key())


def pkcs8(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def ordered_chain(leaf: x509.Certificate, others: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """``others`` as the issuer path of ``leaf`` (each certificate issued the one before it);
    KeyUsageError when one of them is not on that path."""
    if len(others) > MAX_BUNDLE_CERTS:  # the path search is quadratic: bound it before it starts
        raise KeyUsageError(f"{len(others)} certificates in the input: at most {MAX_BUNDLE_CERTS}")
    chain: list[x509.Certificate] = []
    pool = [c for c in others if c != leaf]
    current = leaf
    while pool:
        issuer = next((c for c in pool if issued_by(current, c)), None)
        if issuer is None:
            break
        chain.append(issuer)
        pool.remove(issuer)
        current = issuer
    if pool:
        raise KeyUsageError(f"{len(pool)} certificate(s) in the input are not on the issuer path of "
                            f"{leaf.subject.rfc4514_string()!r}")
    return chain


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject or cert == issuer:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def self_signed(key: Any, subject: x509.Name, sans: Sequence[x509.GeneralName], days: int) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256())

def build_csr(key: Any, subject: x509.Name, sans: Sequence[x509.GeneralName]) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256())

def public_kind(public: Any) -> str:
    if isinstance(public, rsa.RSAPublicKey):
        return vc.RSA
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return vc.EC_P256
    raise KeyUsageError("a certificate's key is an RSA or EC P-256 key")


def load_bundle(data: bytes, password: bytes | None) -> tuple[Any, x509.Certificate, list[x509.Certificate]]:
    """(private key, leaf, chain) from PEM or PKCS#12; the leaf is the certificate of the key."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            certs = x509.load_pem_x509_certificates(data)
            key: Any = serialization.load_pem_private_key(data, password)
            leaf_given: x509.Certificate | None = None
        else:
            bundle = pkcs12.load_pkcs12(data, password)
            key = bundle.key
            leaf_given = bundle.cert.certificate if bundle.cert is not None else None
            certs = ([leaf_given] if leaf_given is not None else []) + [c.certificate for c in bundle.additional_certs]
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyUsageError(f"not a PEM bundle or PKCS#12 file with a private key (or a wrong password): {exc}") \
            from None
    if key is None:
        raise KeyUsageError("the input holds no private key (import needs the certificate's key)")
    key_spki = spki(key.public_key())
    if leaf_given is not None and spki(leaf_given.public_key()) != key_spki:
        raise KeyUsageError("the PKCS#12 certificate does not certify its private key: refusing it")
    leaf = leaf_given or next((c for c in certs if spki(c.public_key()) == key_spki), None)
    if leaf is None:
        raise KeyUsageError("no certificate in the input certifies the private key: refusing it")
    return key, leaf, ordered_chain(leaf, certs)
