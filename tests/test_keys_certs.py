"""Certificates in the local vault: create, sign/verify with the certificate's key, renew,
CSR + merge, PKCS#12 and PEM import (files made by the openssl CLI), export read back by
``openssl x509``, expiry warnings, the CLI and the audit log."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from envcrypt.cli import main
from envcrypt.errors import InvalidSignatureError, KeyNotFoundError, KeyStateError, KeyUsageError
from envcrypt.keys.vault import LocalVault
from envcrypt.keys.vault_certs import CertificateStore, expiry_note, parse_validity

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


@pytest.fixture
def vault(_isolated_vault: Path) -> LocalVault:
    v = LocalVault(_isolated_vault)
    v.init()
    return v


@pytest.fixture
def certs(vault: LocalVault) -> CertificateStore:
    return CertificateStore(vault)


def _openssl(*args: str, cwd: Path) -> str:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _public(pem: str) -> Any:
    return x509.load_pem_x509_certificates(pem.encode())[0].public_key()


def test_create_sign_verify_renew_and_the_old_version_still_verifies(vault: LocalVault,
                                                                     certs: CertificateStore) -> None:
    made = certs.create("web", "CN=www.example.com,O=Example", ["DNS:www.example.com", "IP:10.0.0.1"], "365d")
    assert made["key"] == "local:web/1" and made["status"] == "issued" and made["self_signed"]
    assert made["sans"] == ["DNS:www.example.com", "IP:10.0.0.1"] and made["warning"] is None
    v1_pem = certs.export("web")
    cert1 = x509.load_pem_x509_certificate(v1_pem.encode())
    cert1.verify_directly_issued_by(cert1)  # a real self-signature
    assert (cert1.not_valid_after_utc - cert1.not_valid_before_utc).days == 365

    uri, signature = vault.sign("web", b"release 1.0")
    assert uri == "local:web/1"
    _public(v1_pem).verify(signature, b"release 1.0", PSS, hashes.SHA256())  # the certificate's key signed it

    renewed = certs.renew("web")
    assert renewed["version"] == 2 and renewed["key"] == "local:web/2"
    assert renewed["subject"] == made["subject"] and renewed["sans"] == made["sans"]
    assert renewed["serial"] != made["serial"]
    v2_pem = certs.export("web")
    assert _public(v2_pem).public_numbers() != _public(v1_pem).public_numbers()  # a new key
    # the old version still verifies, through the vault and through the old certificate
    assert vault.verify("web", b"release 1.0", signature) == "local:web/1"
    _public(certs.export("web", 1)).verify(signature, b"release 1.0", PSS, hashes.SHA256())
    uri2, signature2 = vault.sign("web", b"release 2.0")
    assert uri2 == "local:web/2"
    _public(v2_pem).verify(signature2, b"release 2.0", PSS, hashes.SHA256())
    with pytest.raises(InvalidSignatureError):
        vault.verify("web/1", b"release 2.0", signature2)
    assert [v["version"] for v in certs.versions("web")] == [1, 2]
    assert certs.show("web")["versions"] == 2 and certs.show("web", 1)["serial"] == made["serial"]


def test_the_private_key_stays_in_the_vault(vault: LocalVault, certs: CertificateStore) -> None:
    certs.create("web", "CN=web", [], 30)
    exported = certs.export("web")
    assert "PRIVATE KEY" not in exported and exported.count("BEGIN CERTIFICATE") == 1
    assert vault.show_key("web")["ops"] == ["sign", "verify"]  # never wraps, never decrypts
    assert "PRIVATE" not in json.dumps(certs.show("web"))


@needs_openssl
def test_export_equals_what_openssl_x509_reads(certs: CertificateStore, tmp_path: Path) -> None:
    shown = certs.create("web", "CN=www.example.com", ["DNS:www.example.com"], "90d")
    (tmp_path / "web.pem").write_text(certs.export("web"))
    _openssl("x509", "-in", "web.pem", "-outform", "DER", "-out", "web.der", cwd=tmp_path)
    der = (tmp_path / "web.der").read_bytes()
    assert x509.load_pem_x509_certificate(certs.export("web").encode()).public_bytes(serialization.Encoding.DER) == der
    fingerprint = _openssl("x509", "-in", "web.pem", "-noout", "-fingerprint", "-sha256", cwd=tmp_path)
    assert fingerprint.strip().split("=", 1)[1].replace(":", "").lower() == shown["sha256"]
    serial = _openssl("x509", "-in", "web.pem", "-noout", "-serial", cwd=tmp_path)
    assert int(serial.strip().split("=", 1)[1], 16) == int(shown["serial"], 16)
    assert "www.example.com" in _openssl("x509", "-in", "web.pem", "-noout", "-ext", "subjectAltName", cwd=tmp_path)


def _ca(tmp_path: Path) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string("CN=Example Issuing CA")
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _sign_csr(csr_pem: str, ca_key: Any, ca: x509.Certificate, days: int = 200) -> x509.Certificate:
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(ca.subject)
               .public_key(csr.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=days)))
    for ext in csr.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    return builder.sign(ca_key, hashes.SHA256())


@needs_openssl
def test_csr_signed_elsewhere_then_merged_with_its_chain(vault: LocalVault, certs: CertificateStore,
                                                         tmp_path: Path) -> None:
    pending = certs.create("api", "CN=api.example.com", ["DNS:api.example.com"], kind="ec-p256", csr=True)
    assert pending["status"] == "pending" and pending["csr"].startswith("-----BEGIN CERTIFICATE REQUEST")
    with pytest.raises(KeyStateError, match="pending"):
        certs.export("api")
    ca_key, ca = _ca(tmp_path)
    signed = _sign_csr(pending["csr"], ca_key, ca)
    pem = (signed.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    merged = certs.merge("api", pem)
    assert merged["status"] == "issued" and merged["version"] == 1 and merged["chain_length"] == 1
    assert merged["issuer"] == "CN=Example Issuing CA" and not merged["self_signed"]
    (tmp_path / "api.pem").write_text(certs.export("api", chain=False))
    (tmp_path / "chain.pem").write_text(certs.export("api"))
    assert "api.pem: OK" in _openssl("verify", "-CAfile", "ca.pem", "api.pem", cwd=tmp_path)
    assert certs.export("api").count("BEGIN CERTIFICATE") == 2
    _, signature = vault.sign("api", b"m")
    signed.public_key().verify(signature, b"m", ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg, union-attr]
    with pytest.raises(KeyStateError, match="no pending version"):
        certs.merge("api", pem)


def test_merge_refuses_a_certificate_for_another_key(certs: CertificateStore, tmp_path: Path) -> None:
    pending = certs.create("api", "CN=api", kind="ec-p256", csr=True)
    other = CertificateStore(LocalVault(tmp_path / "other"))
    other.vault.init()
    foreign = other.create("api", "CN=api", kind="ec-p256", csr=True)
    ca_key, ca = _ca(tmp_path)
    wrong = _sign_csr(foreign["csr"], ca_key, ca)
    with pytest.raises(KeyUsageError, match="certifies the pending key"):
        certs.merge("api", wrong.public_bytes(serialization.Encoding.PEM))
    assert certs.show("api")["status"] == "pending" and pending["version"] == 1


@needs_openssl
def test_import_pkcs12_made_by_openssl(vault: LocalVault, certs: CertificateStore, tmp_path: Path) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
             "-subj", "/CN=imported.example.com", "-days", "400", cwd=tmp_path)
    _openssl("pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-out", "bundle.p12",
             "-passout", "pass:s3cret-pw", cwd=tmp_path)
    data = (tmp_path / "bundle.p12").read_bytes()
    with pytest.raises(KeyUsageError):
        certs.import_certificate("imp", data, "wrong password")
    shown = certs.import_certificate("imp", data, "s3cret-pw")
    assert shown["subject"] == "CN=imported.example.com" and shown["key"] == "local:imp/1"
    assert shown["origin"] == "imported"
    assert certs.export("imp") == (tmp_path / "cert.pem").read_text()  # the same certificate, byte for byte
    _, signature = vault.sign("imp", b"data")
    _public((tmp_path / "cert.pem").read_text()).verify(signature, b"data", PSS, hashes.SHA256())
    assert "s3cret" not in (vault.path / "audit.log").read_text()


@needs_openssl
def test_import_pem_bundle_adds_a_version(certs: CertificateStore, tmp_path: Path) -> None:
    certs.create("web", "CN=web", [], 30)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
             "key.pem", "-out", "cert.pem", "-subj", "/CN=web", "-days", "100", cwd=tmp_path)
    bundle = (tmp_path / "cert.pem").read_bytes() + (tmp_path / "key.pem").read_bytes()
    with pytest.raises(KeyStateError):  # the certificate's key is rsa: an ec key cannot be its next version
        certs.import_certificate("web", bundle)
    shown = certs.import_certificate("web-ec", bundle)
    assert shown["version"] == 1 and shown["key"] == "local:web-ec/1"


def test_expiry_warnings_in_cert_list_and_key_list(vault: LocalVault, certs: CertificateStore,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    certs.create("soon", "CN=soon", [], 10, kind="ec-p256")
    certs.create("later", "CN=later", [], 365, kind="ec-p256")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name.from_rfc4514_string("CN=old")
    now = datetime.datetime.now(datetime.UTC)
    expired = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(1).not_valid_before(now - datetime.timedelta(days=30))
               .not_valid_after(now - datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    certs.import_certificate("old", expired.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    warnings = {c["name"]: c["warning"] for c in certs.list()}
    assert warnings["soon"].startswith("expires in") and warnings["old"] == "expired" and warnings["later"] is None

    assert main(["cert", "list"]) == 0
    captured = capsys.readouterr()
    assert "certificate soon version 1 expires in" in captured.err and "certificate old version 1 expired" in captured.err
    assert "later" not in captured.err and "later" in captured.out
    assert main(["key", "list", "--json"]) == 0
    captured = capsys.readouterr()
    listing = {k["name"]: k for k in json.loads(captured.out)}
    assert listing["old"]["warning"] == "certificate expired" and "warning" not in listing["later"]
    assert "local:soon: certificate expires in" in captured.err
    vault.create_key("plain", expires=int(now.timestamp()) + 3 * 86400)
    assert main(["key", "list"]) == 0
    assert "local:plain" in capsys.readouterr().out.split("key expires in")[0]


def test_expiry_note_and_validity_parsing() -> None:
    assert expiry_note(1000 + 31 * 86400, now=1000) is None
    assert expiry_note(1000 + 30 * 86400, now=1000) == "expires in 30 days"
    assert expiry_note(1000, now=1000) == "expired"
    assert [parse_validity(v) for v in ("365d", "2w", "1y", "7", 30)] == [365, 14, 365, 7, 30]
    for bad in ("0d", "-1", "1.5d", "forever", "100000y"):
        with pytest.raises(ValueError):
            parse_validity(bad)


def test_bad_requests(vault: LocalVault, certs: CertificateStore) -> None:
    vault.create_key("taken", "ec-p256")
    with pytest.raises(KeyStateError, match="local:taken exists"):
        certs.create("taken", "CN=x")
    certs.create("web", "CN=web", kind="ec-p256")
    with pytest.raises(KeyStateError, match="already exists"):
        certs.create("web", "CN=web")
    for subject, sans in (("not a subject", []), ("CN=x", ["FTP:x"]), ("CN=x", ["IP:not-an-ip"])):
        with pytest.raises(ValueError):
            certs.create("bad", subject, sans)
    with pytest.raises(KeyNotFoundError):
        certs.show("missing")
    for bad_name in ("../web", "web\n", ""):
        with pytest.raises(ValueError, match="invalid certificate name"):
            certs.show(bad_name)
    with pytest.raises(KeyNotFoundError):
        certs.export("web", 7)


def test_cli_round_trip_and_audit(vault: LocalVault, capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["cert", "create", "site", "--subject", "CN=site.example", "--san", "DNS:site.example",
                 "--validity", "60d", "--kind", "ec-p256", "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["version"] == 1 and created["sans"] == ["DNS:site.example"]
    assert main(["cert", "export", "site", "--out", str(tmp_path / "site.pem")]) == 0
    assert (tmp_path / "site.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert main(["cert", "renew", "site", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    assert main(["cert", "versions", "site"]) == 0
    assert "local:site/1" in capsys.readouterr().out
    assert main(["cert", "create", "pend", "--subject", "CN=p", "--kind", "ec-p256", "--csr", "--out", str(tmp_path / "p.csr")]) == 0
    assert (tmp_path / "p.csr").read_text().startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert "cert merge pend" in capsys.readouterr().err
    assert main(["cert", "show", "missing"]) == 2
    assert "KeyNotFoundError" in capsys.readouterr().err
    # a PKCS#12 password comes from the environment, never from argv
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name.from_rfc4514_string("CN=p12")
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=90))
            .sign(key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
    (tmp_path / "b.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"p12", key, cert, None, BestAvailableEncryption(b"pw-from-env")))
    monkeypatch.setenv("P12_PW", "pw-from-env")
    assert main(["cert", "import", "p12", str(tmp_path / "b.p12"), "--password-env", "P12_PW", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["subject"] == "CN=p12"
    ops = [(e["op"], e["outcome"]) for e in vault.audit.tail(200) if e.get("kind") == "certificate"]
    assert ("cert-create", "ok") in ops and ("cert-renew", "ok") in ops and ("cert-export", "ok") in ops
    assert ("cert-import", "ok") in ops and ("cert-show", "KeyNotFoundError") in ops
    assert "pw-from-env" not in (vault.path / "audit.log").read_text()
    assert vault.audit.verify().ok
