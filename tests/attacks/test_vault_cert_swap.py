"""A vault-directory writer (no master key) against certificates, and bad import files.

A certificate's documents live in the sealed, MACed secret record ``secrets/cert.NAME.json``
(generation checked against the index), its key in ``keys/NAME.json``: a swapped, edited or
replayed record is refused (VaultError).  Beyond the MAC, every read checks that the
certificate certifies the key version it names and that its chain is an issuer path, so
even a document written with the master key cannot pair a certificate with another key.
Imports refuse a PKCS#12 or PEM bundle whose certificate does not certify its key.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from envcrypt.errors import KeyUsageError, VaultError
from envcrypt.keys.vault import LocalVault
from envcrypt.keys.vault_certs import SECRET_PREFIX, CertificateStore


@pytest.fixture
def certs(_isolated_vault: Path) -> CertificateStore:
    vault = LocalVault(_isolated_vault)
    vault.init()
    return CertificateStore(vault)


def _put(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _record(certs: CertificateStore, name: str) -> Path:
    return certs.vault.path / "secrets" / f"{SECRET_PREFIX}{name}.json"


def _reads(certs: CertificateStore, name: str) -> list[Any]:
    return [lambda: certs.show(name), lambda: certs.export(name), lambda: certs.versions(name), certs.list]


def _self_signed(key: Any, cn: str, ca: bool = False) -> x509.Certificate:
    name = x509.Name.from_rfc4514_string(f"CN={cn}")
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True).sign(key, hashes.SHA256()))


def test_a_certificate_record_copied_over_another_is_refused(certs: CertificateStore) -> None:
    certs.create("a", "CN=a", kind="ec-p256")
    certs.create("b", "CN=b", kind="ec-p256")
    _put(_record(certs, "a"), _record(certs, "b").read_bytes())
    for read in _reads(certs, "a"):
        with pytest.raises(VaultError):
            read()


def test_a_replayed_certificate_record_is_refused(certs: CertificateStore) -> None:
    certs.create("a", "CN=a", kind="ec-p256")
    before_renewal = _record(certs, "a").read_bytes()
    certs.renew("a")
    _put(_record(certs, "a"), before_renewal)  # roll the certificate back to version 1
    for read in _reads(certs, "a"):
        with pytest.raises(VaultError, match="rollback|generation"):
            read()


def test_swapping_versions_or_chains_inside_the_record_is_refused(certs: CertificateStore) -> None:
    certs.create("a", "CN=a", kind="ec-p256")
    certs.renew("a")
    path = _record(certs, "a")
    record = json.loads(path.read_bytes())
    versions = record["versions"]
    versions[0]["value"], versions[1]["value"] = versions[1]["value"], versions[0]["value"]
    _put(path, json.dumps(record).encode())
    for read in _reads(certs, "a"):
        with pytest.raises(VaultError):
            read()


def test_a_key_record_swapped_under_a_certificate_is_refused(certs: CertificateStore) -> None:
    certs.create("a", "CN=a", kind="ec-p256")
    certs.create("b", "CN=b", kind="ec-p256")
    keys = certs.vault.path / "keys"
    _put(keys / "a.json", (keys / "b.json").read_bytes())
    with pytest.raises(VaultError):
        certs.show("a")
    with pytest.raises(VaultError):
        certs.vault.sign("a", b"m")


def test_even_a_master_key_holder_cannot_pair_a_certificate_with_another_key(certs: CertificateStore) -> None:
    """Documents written through the secrets store (sealed and MACed correctly) are still checked:
    the certificate must certify its key version, the chain must be an issuer path."""
    certs.create("a", "CN=a", kind="ec-p256")
    certs.create("b", "CN=b", kind="ec-p256")
    secret = SECRET_PREFIX + "a"
    doc_a = json.loads(certs.vault.secrets.get(secret))
    doc_b = json.loads(certs.vault.secrets.get(SECRET_PREFIX + "b"))
    certs.vault.secrets.set(secret, json.dumps({**doc_a, "certificate": doc_b["certificate"]}))
    with pytest.raises(VaultError, match="does not certify its key"):
        certs.export("a")
    unrelated = _self_signed(ec.generate_private_key(ec.SECP256R1()), "Unrelated CA", ca=True)
    chain = [base64.b64encode(unrelated.public_bytes(serialization.Encoding.DER)).decode()]
    certs.vault.secrets.set(secret, json.dumps({**doc_a, "chain": chain}))
    with pytest.raises(VaultError, match="issuer path"):
        certs.show("a")


def test_pkcs12_whose_certificate_is_not_its_keys_is_refused(certs: CertificateStore) -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    cert_of_other = _self_signed(other, "victim.example.com")
    # the key bag holds our key, the only certificate certifies someone else's key
    bundle = pkcs12.serialize_key_and_certificates(b"x", key, None, [cert_of_other], BestAvailableEncryption(b"pw"))
    with pytest.raises(KeyUsageError, match="certifies the private key"):
        certs.import_certificate("imp", bundle, b"pw")
    pem = cert_of_other.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(KeyUsageError, match="certifies the private key"):
        certs.import_certificate("imp", pem)
    assert not certs.vault.key_exists("imp") and certs.list() == []  # nothing was written


def test_an_unrelated_certificate_slipped_into_a_chain_is_refused(certs: CertificateStore) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    stranger = _self_signed(ec.generate_private_key(ec.SECP256R1()), "Stranger CA", ca=True)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (_self_signed(key, "leaf"), stranger))
    pem += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    with pytest.raises(KeyUsageError, match="issuer path"):
        certs.import_certificate("imp", pem)
    pending = certs.create("api", "CN=api", kind="ec-p256", csr=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _self_signed(ca_key, "Real CA", ca=True)
    csr = x509.load_pem_x509_csr(pending["csr"].encode())
    now = datetime.datetime.now(datetime.UTC)
    leaf = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject).public_key(csr.public_key())
            .serial_number(5).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=9))
            .sign(ca_key, hashes.SHA256()))
    with pytest.raises(KeyUsageError, match="issuer path"):  # a chain CA that did not issue the leaf
        certs.merge("api", leaf.public_bytes(serialization.Encoding.PEM) + stranger.public_bytes(
            serialization.Encoding.PEM))
    assert certs.show("api")["status"] == "pending"


def _path(count: int, sans: int = 0) -> bytes:
    """A PEM bundle: a leaf key and an issuer path of ``count`` certificates (each issued by the
    next, the last self-signed), each with ``sans`` long DNS names."""
    now = datetime.datetime.now(datetime.UTC)
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(count)]
    names = [x509.Name.from_rfc4514_string(f"CN=c{i}") for i in range(count)]
    last = count - 1
    alt = x509.SubjectAlternativeName([x509.DNSName(f"host-{j:04d}.{'x' * 40}.example") for j in range(sans)])
    path = []
    for i in range(count):
        builder = (x509.CertificateBuilder().subject_name(names[i]).issuer_name(names[min(i + 1, last)])
                   .public_key(keys[i].public_key()).serial_number(i + 1).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=9)))
        if sans:
            builder = builder.add_extension(alt, critical=False)
        path.append(builder.sign(keys[min(i + 1, last)], hashes.SHA256()))
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in path) + keys[0].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


@pytest.mark.parametrize(("count", "sans"), [(200, 0), (20, 60)])  # too many certificates; too many bytes
def test_an_oversized_input_is_refused_before_anything_is_written(certs: CertificateStore, count: int,
                                                                 sans: int) -> None:
    with pytest.raises(KeyUsageError, match="at most"):
        certs.import_certificate("big", _path(count, sans))
    assert not certs.vault.key_exists("big") and certs.list() == []
