"""A loopback Azure Key Vault for tests: the part of the Key Vault REST API that
``azure-keyvault-keys`` calls for envcrypt, over TLS on 127.0.0.1.

There is no official Key Vault emulator, so this speaks the protocol itself:

* the bearer-token challenge flow (a request without a valid token gets 401 with
  ``WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/TENANT",
  resource="https://vault.azure.net"``, as Key Vault answers);
* a managed-identity token endpoint (``GET /msi/token``, the App Service protocol that
  ``DefaultAzureCredential`` uses when ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` are set);
* ``GET /keys/NAME[/VERSION]``, ``POST /keys/NAME/VERSION/{wrapkey,unwrapkey,sign,verify}``,
  ``GET /deletedkeys/NAME``, with real RSA-OAEP-256, A256KW, RS256/PS256 done by
  ``cryptography``;
* Key Vault's error bodies and status codes (``KeyNotFound`` 404, ``Forbidden`` 403 with
  ``AccessDenied``/``KeyDisabled`` inner codes, ``Throttled`` 429 with ``Retry-After``,
  ``BadParameter`` 400 when a wrapped key does not open).

Keys are managed from Python (``create_key``, ``rotate``, ``set_enabled``, ``delete``,
``deny``, ``throttle``); ``requests`` records every Key Vault API call.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cryptography.x509.oid import NameOID

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
RESOURCE = "https://vault.azure.net"
OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_NOT_FOUND = ("A key with (name/id) {name} was not found in this key vault. If you recently deleted this key "
              "you may be able to recover it using the correct recovery command. For help resolving this "
              "issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files in ``directory``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopback key vault")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "kv-cert.pem", directory / "kv-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class _Version:
    version: str
    kty: str
    material: Any  # an RSA private key, or AES key bytes
    ops: list[str]
    enabled: bool = True
    created: int = field(default_factory=lambda: int(time.time()))
    expires: int | None = None


class KeyVaultError(Exception):
    def __init__(self, status: int, code: str, message: str, inner: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.inner = status, code, message, inner
        self.headers = headers or {}

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return json.dumps({"error": error}).encode()


class LoopbackKeyVault:
    """The vault state and the HTTPS server (start with :meth:`start`, stop with :meth:`stop`)."""

    def __init__(self, tls_dir: Path) -> None:
        self.cert_path, key_path = make_tls_files(tls_dir)
        self.keys: dict[str, list[_Version]] = {}
        self.deleted: dict[str, list[_Version]] = {}
        self.denied: set[str] = set()  # operations the caller's principal may not do
        self.requests: list[tuple[str, str]] = []  # (method, path) of every Key Vault API call
        self.token_requests = 0
        self.identity_header = b64url(os.urandom(16))
        self._tokens: set[str] = set()
        self._throttle: list[str] = []  # Retry-After values of the next 429 answers
        self._lock = threading.Lock()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_path, key_path)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> LoopbackKeyVault:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    # ------------------------------------------------------------ management (from Python)

    def create_key(self, name: str, kty: str = "RSA", ops: list[str] | None = None) -> str:
        """Create a key (or a new version of it); its version id."""
        if kty in ("RSA", "RSA-HSM"):
            material: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            default_ops = ["encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify"]
        elif kty in ("oct", "oct-HSM"):
            material = os.urandom(32)
            default_ops = ["wrapKey", "unwrapKey", "encrypt", "decrypt"]
        else:
            raise ValueError(kty)
        version = os.urandom(16).hex()
        with self._lock:
            self.keys.setdefault(name.lower(), []).append(
                _Version(version, kty, material, list(ops or default_ops)))
        return version

    def rotate(self, name: str) -> str:
        current = self.keys[name.lower()][-1]
        return self.create_key(name, current.kty, current.ops)

    def set_enabled(self, name: str, enabled: bool, version: str | None = None) -> None:
        for entry in self.keys[name.lower()]:
            if version is None or entry.version == version:
                entry.enabled = enabled

    def set_expires(self, name: str, expires: int | None) -> None:
        self.keys[name.lower()][-1].expires = expires

    def delete(self, name: str) -> None:
        """Soft-delete a key (GET answers 404 KeyNotFound; /deletedkeys/NAME finds it)."""
        with self._lock:
            self.deleted[name.lower()] = self.keys.pop(name.lower())

    def recover(self, name: str) -> None:
        with self._lock:
            self.keys[name.lower()] = self.deleted.pop(name.lower())

    def deny(self, *operations: str) -> None:
        """The caller's principal loses these permissions (``get``, ``wrapKey``, ``unwrapKey``...)."""
        self.denied.update(operations)

    def throttle(self, count: int, retry_after: str = "0") -> None:
        """The next ``count`` Key Vault calls are answered 429 Throttled with ``Retry-After``."""
        with self._lock:
            self._throttle.extend([retry_after] * count)

    def api_calls(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self.requests)

    # ------------------------------------------------------------ protocol

    def _issue_token(self, resource: str) -> dict[str, Any]:
        token = b64url(os.urandom(24))
        with self._lock:
            self._tokens.add(token)
            self.token_requests += 1
        return {"access_token": token, "expires_on": str(int(time.time()) + 3600), "resource": resource,
                "token_type": "Bearer", "client_id": "00000000-0000-0000-0000-000000000001"}

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        with self._lock:
            return header[len("Bearer "):] in self._tokens

    def _version(self, name: str, version: str | None) -> _Version:
        versions = self.keys.get(name.lower())
        if not versions:
            raise KeyVaultError(404, "KeyNotFound", _NOT_FOUND.format(name=name))
        if not version:
            return versions[-1]
        for entry in versions:
            if entry.version == version.lower():
                return entry
        raise KeyVaultError(404, "KeyNotFound", _NOT_FOUND.format(name=f"{name}/{version}"))

    def _check_permission(self, op: str) -> None:
        if op in self.denied:
            raise KeyVaultError(
                403, "Forbidden",
                f"The user, group or application 'appid=00000000-0000-0000-0000-000000000001;"
                f"oid=11111111-1111-1111-1111-111111111111;iss=https://sts.windows.net/{TENANT}/' does not "
                f"have keys {op} permission on key vault 'loopback;location=westeurope'. For help resolving "
                "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287", "AccessDenied")

    def bundle(self, name: str, entry: _Version, base: str) -> dict[str, Any]:
        jwk: dict[str, Any] = {"kid": f"{base}/keys/{name}/{entry.version}", "kty": entry.kty,
                               "key_ops": entry.ops}
        if entry.kty.startswith("RSA"):
            numbers = entry.material.public_key().public_numbers()
            jwk["n"] = b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big"))
            jwk["e"] = b64url(numbers.e.to_bytes(3, "big"))
        attributes: dict[str, Any] = {"enabled": entry.enabled, "created": entry.created,
                                      "updated": entry.created, "recoveryLevel": "Recoverable+Purgeable",
                                      "recoverableDays": 90}
        if entry.expires is not None:
            attributes["exp"] = entry.expires
        return {"key": jwk, "attributes": attributes}

    def operate(self, name: str, version: str, op: str, body: dict[str, Any], base: str) -> dict[str, Any]:
        entry = self._version(name, version)
        kid = f"{base}/keys/{name}/{entry.version}"
        self._check_permission(op)
        if op not in entry.ops:
            raise KeyVaultError(403, "Forbidden", f"Operation {op} is not permitted on this key.", "KeyOperationForbidden")
        # wrapKey, encrypt and verify are allowed on a disabled key (the public half); the rest is not
        if not entry.enabled and op in ("unwrapKey", "decrypt", "sign"):
            raise KeyVaultError(403, "Forbidden", f"Operation {op} is not allowed on a disabled key.", "KeyDisabled")
        alg, value = body.get("alg"), unb64url(str(body.get("value", "")))
        if op == "wrapKey":
            if alg == "RSA-OAEP-256" and entry.kty.startswith("RSA"):
                return {"kid": kid, "value": b64url(entry.material.public_key().encrypt(value, OAEP))}
            if alg == "A256KW" and entry.kty.startswith("oct"):
                return {"kid": kid, "value": b64url(aes_key_wrap(entry.material, value))}
        elif op == "unwrapKey":
            try:
                if alg == "RSA-OAEP-256" and entry.kty.startswith("RSA"):
                    return {"kid": kid, "value": b64url(entry.material.decrypt(value, OAEP))}
                if alg == "A256KW" and entry.kty.startswith("oct"):
                    return {"kid": kid, "value": b64url(aes_key_unwrap(entry.material, value))}
            except (ValueError, InvalidUnwrap):
                raise KeyVaultError(400, "BadParameter", "Error occurred while unwrapping key.") from None
        elif op in ("sign", "verify") and entry.kty.startswith("RSA") and alg in ("RS256", "PS256"):
            pad = (padding.PKCS1v15() if alg == "RS256"
                   else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32))
            from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
            if op == "sign":
                return {"kid": kid, "value": b64url(entry.material.sign(value, pad, Prehashed(hashes.SHA256())))}
            try:
                entry.material.public_key().verify(value, unb64url(str(body.get("digest", ""))), pad,
                                                   Prehashed(hashes.SHA256()))
            except InvalidSignature:
                return {"value": False}
            return {"value": True}
        raise KeyVaultError(400, "BadParameter", f"Invalid algorithm {alg!r} for key type {entry.kty}.")

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """One HTTP exchange: (status, headers, body)."""
        parsed = urlparse(path)
        parts = [p for p in parsed.path.split("/") if p]
        if parts[:2] == ["msi", "token"]:
            if headers.get("X-IDENTITY-HEADER") != self.identity_header:
                return 401, {}, b'{"error": "unauthorized"}'
            resource = parse_qs(parsed.query).get("resource", [""])[0]
            return 200, {"Content-Type": "application/json"}, json.dumps(self._issue_token(resource)).encode()
        base = f"https://{headers.get('Host')}"
        with self._lock:
            self.requests.append((method, parsed.path))
        if not self._authorized(headers.get("Authorization")):
            challenge = f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="{RESOURCE}"'
            return 401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, json.dumps(
                {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP "
                           "token."}}).encode()
        try:
            with self._lock:
                retry_after = self._throttle.pop(0) if self._throttle else None
            if retry_after is not None:
                raise KeyVaultError(429, "Throttled", "Request was not processed because too many requests "
                                    "were received. Reason: A1", headers={"Retry-After": retry_after})
            if method == "GET" and parts and parts[0] == "keys" and len(parts) in (2, 3):
                self._check_permission("get")
                entry = self._version(parts[1], parts[2] if len(parts) == 3 else None)
                return 200, {"Content-Type": "application/json"}, json.dumps(self.bundle(parts[1], entry, base)).encode()
            if method == "GET" and parts and parts[0] == "deletedkeys" and len(parts) == 2:
                self._check_permission("get")
                versions = self.deleted.get(parts[1].lower())
                if not versions:
                    raise KeyVaultError(404, "KeyNotFound", f"Deleted Key not found: {parts[1]}")
                out = self.bundle(parts[1], versions[-1], base)
                out.update(recoveryId=f"{base}/deletedkeys/{parts[1]}", deletedDate=int(time.time()),
                           scheduledPurgeDate=int(time.time()) + 90 * 86400)
                return 200, {"Content-Type": "application/json"}, json.dumps(out).encode()
            if method == "POST" and len(parts) == 4 and parts[0] == "keys":
                op = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey", "sign": "sign", "verify": "verify"}.get(
                    parts[3].lower())
                if op is not None:
                    result = self.operate(parts[1], parts[2], op, json.loads(body or b"{}"), base)
                    return 200, {"Content-Type": "application/json"}, json.dumps(result).encode()
            raise KeyVaultError(400, "BadParameter", f"Unsupported request {method} {parsed.path}")
        except KeyVaultError as exc:
            return exc.status, {"Content-Type": "application/json", **exc.headers}, exc.body()


def _handler(vault: LoopbackKeyVault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, payload = vault.handle(self.command, self.path, self.headers, body)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# ---------------------------------------------------------------- pytest helpers

VAULT_HOST = "acme.vault.azure.net"
HSM_HOST = "acme-hsm.managedhsm.azure.net"
OTHER_HOST = "evil.vault.azure.net"
_ENV_CLEARED = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH",
                "AZURE_USERNAME", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_TOKEN_CREDENTIALS", "MSI_ENDPOINT",
                "ENVCRYPT_AZURE_KV_ENDPOINTS")


def use_loopback(vault: LoopbackKeyVault, monkeypatch: Any) -> dict[str, Any]:
    """Point ``DefaultAzureCredential`` (managed identity, App Service protocol) and TLS trust at
    the loopback vault; the resolver options that map the test hosts to it (fast retries)."""
    for name in _ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", vault.url + "/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", vault.identity_header)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(vault.cert_path))
    endpoints = {VAULT_HOST: vault.url, HSM_HOST: vault.url, OTHER_HOST: vault.url}
    return {"azure_kv_endpoints": endpoints, "azure_kv_retry_backoff_factor": 0.01,
            "azure_kv_retry_backoff_max": 0.05}
