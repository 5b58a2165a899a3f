"""``azure-kv://VAULT.vault.azure.net/keys/NAME[/VERSION]``: DEKs wrapped by Azure Key Vault.

Keys live in an Azure Key Vault (``*.vault.azure.net``) or a Managed HSM
(``*.managedhsm.azure.net``; the sovereign clouds' hosts too).  ``wrap`` asks Key Vault
for the key (``GET /keys/NAME``, or the named version), refuses a key that is disabled,
not yet valid, expired or not permitted to ``wrapKey`` (Key Vault itself still wraps under
a disabled key: the public half), and wraps the DEK with ``CryptographyClient.wrap_key``
under that exact version: **RSA-OAEP-256** for ``RSA``/``RSA-HSM`` keys (wrap id 2, the
same bytes as a vault RSA-OAEP-SHA256 slot; the SDK wraps with the public key it just
fetched) and **A256KW** (RFC 3394) for ``oct``/``oct-HSM`` keys (wrap id 3, done by the
HSM).  The slot names the version (``.../keys/NAME/VERSION``).  ``unwrap`` calls
``CryptographyClient.unwrap_key`` on the version the slot names, and only for slots that
name a trusted key (:meth:`AzureKeyVaultResolver.trusts`, envcrypt.slots).  Key Vault's
``wrapKey`` takes no associated data: the object's encryption context is bound by the
body (C2SP context), not by the wrapped key.

**Trusted keys**: ``azure-kv://HOST/keys/NAME`` trusts every version of that key,
``.../keys/NAME/VERSION`` only that version; names compare case-insensitively (as Key Vault
does), hosts exactly.  The comparison is pure: no call is made for a slot naming another
vault or key, whatever its URI says.  An RSA key is an asymmetric wrap key: everyone
holding its public key can make a slot it opens (SECURITY.md).

**Endpoints**: requests for ``HOST`` go to ``https://HOST`` unless the resolver option
``azure_kv_endpoints`` (or ``$ENVCRYPT_AZURE_KV_ENDPOINTS``, ``HOST=URL[,HOST=URL]``)
maps that host to another HTTPS base URL (a private endpoint, a proxy, a loopback Key Vault
in tests).  The map is configuration, never read from an object: a slot can only name a
Key Vault host, and only a trusted one is contacted.  A mapped host's 401 challenge may
name ``https://vault.azure.net`` as its resource although the request went elsewhere, so
the SDK's challenge-resource check is off for mapped hosts only.

**Credentials** come from ``azure-identity``'s ``DefaultAzureCredential`` (environment,
workload or managed identity, Azure CLI, ...), never from options.  Retries are the SDK's
(exponential backoff honouring ``Retry-After``), tuned by ``azure_kv_retry_total``,
``azure_kv_retry_backoff_factor``, ``azure_kv_retry_backoff_max`` and
``azure_kv_timeout``.  Key Vault errors map onto the envcrypt key errors
(:func:`map_azure_error`): 404 ``KeyNotFound`` is ``KeyNotFoundError``, or
``KeyDeletedError`` when ``/deletedkeys/NAME`` holds it (soft-deleted, recoverable); 403 is
``KeyDisabledError`` for a disabled key, else ``KeyAccessDeniedError``; 400 on unwrap is
``WrongKeyError``; throttling (429) that outlasts the retries, 5xx and connection failures
are ``ResolverUnavailableError``.  The DEK cache is on by default, as for AWS KMS.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from ..errors import (
    EnvcryptError,
    InvalidKeyUriError,
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    KeyUsageError,
    ResolverUnavailableError,
    WrongKeyError,
)
from ..format import KeySlot
from .base import WRAP_AES256_KW, WRAP_RSA_OAEP_SHA256, split_key_uri

__all__ = ["AzureKeyVaultResolver", "AzureKeyRef", "parse_azure_kv_uri", "map_azure_error", "ENDPOINTS_ENV"]

T = TypeVar("T")

SCHEME = "azure-kv"
ENDPOINTS_ENV = "ENVCRYPT_AZURE_KV_ENDPOINTS"
MISSING_SDK = ("azure-kv:// keys need azure-keyvault-keys and azure-identity, which are not installed: "
               "pip install 'envcrypt[azure]'")
#: Key Vault and Managed HSM DNS suffixes (public, China, US Government clouds)
HOST_SUFFIXES = ("vault.azure.net", "vault.azure.cn", "vault.usgovcloudapi.net",
                 "managedhsm.azure.net", "managedhsm.azure.cn", "managedhsm.usgovcloudapi.net")
# matched with fullmatch: "$" would accept a trailing newline
_HOST = re.compile(r"[a-z0-9][a-z0-9-]{1,22}[a-z0-9]\.(?:" + "|".join(map(re.escape, HOST_SUFFIXES)) + ")")
_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_VERSION = re.compile(r"[0-9A-Fa-f]{32}")
RSA_TYPES = frozenset({"RSA", "RSA-HSM"})
OCT_TYPES = frozenset({"oct", "oct-HSM"})
#: wrap id -> Key Vault algorithm name
ALGORITHMS = {WRAP_RSA_OAEP_SHA256: "RSA-OAEP-256", WRAP_AES256_KW: "A256KW"}
_CRYPTO_CLIENTS = 256  # cached CryptographyClients (one per key version)


@dataclass(frozen=True)
class AzureKeyRef:
    """A parsed ``azure-kv://`` key URI (host lower-cased, version lower-cased or None)."""

    host: str
    name: str
    version: str | None

    @property
    def uri(self) -> str:
        tail = f"/{self.version}" if self.version else ""
        return f"{SCHEME}://{self.host}/keys/{self.name}{tail}"

    def same_key(self, other: AzureKeyRef) -> bool:
        return self.host == other.host and self.name.lower() == other.name.lower()


def parse_azure_kv_uri(key_uri: str) -> AzureKeyRef:
    """``azure-kv://HOST/keys/NAME[/VERSION]`` -> :class:`AzureKeyRef`; InvalidKeyUriError otherwise."""
    scheme, rest = split_key_uri(key_uri)
    if scheme != SCHEME or not key_uri[len(scheme) + 1:].startswith("//"):
        raise InvalidKeyUriError(f"not an azure-kv:// key URI: {key_uri!r}")
    parts = rest.split("/")
    if len(parts) not in (3, 4) or parts[1] != "keys":
        raise InvalidKeyUriError(
            f"not an Azure Key Vault key URI: {key_uri!r} (azure-kv://VAULT.vault.azure.net/keys/NAME[/VERSION])")
    host, name = parts[0].lower(), parts[2]
    version = parts[3].lower() if len(parts) == 4 else None
    if not _HOST.fullmatch(host):
        raise InvalidKeyUriError(
            f"{parts[0]!r} is not a Key Vault or Managed HSM host (*.vault.azure.net, *.managedhsm.azure.net, "
            f"or a sovereign cloud's): {key_uri!r}")
    if not _NAME.fullmatch(name):
        raise InvalidKeyUriError(f"invalid Key Vault key name {name!r} in {key_uri!r}")
    if version is not None and not _VERSION.fullmatch(version):
        raise InvalidKeyUriError(f"invalid Key Vault key version {version!r} in {key_uri!r}")
    return AzureKeyRef(host, name, version)


def _error_body(exc: Any) -> tuple[str, str, str]:
    """(code, inner code, message) of a Key Vault error response."""
    text = ""
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            text = response.text()
        except Exception:
            text = ""
    try:
        error = json.loads(text).get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    inner = error.get("innererror") or error.get("innerError") or {}
    inner_code = str(inner.get("code", "")) if isinstance(inner, dict) else ""
    return str(error.get("code", "")), inner_code, str(error.get("message", ""))[:300]


def map_azure_error(exc: Exception, key: str, *, unwrapping: bool = False) -> EnvcryptError:
    """The envcrypt error for an Azure SDK exception (the caller raises it ``from exc``)."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

    status = getattr(exc, "status_code", None)
    if isinstance(exc, HttpResponseError) and status is not None:
        code, inner, message = _error_body(exc)
        said = " ".join(p for p in ("Azure Key Vault", str(status), code, "for", key) if p)
        said = f"{said}: {message}" if message else said
        if status == 404:
            return KeyNotFoundError(said)
        if status == 403:
            disabled = inner == "KeyDisabled" or "disabled key" in message.lower()
            return (KeyDisabledError if disabled else KeyAccessDeniedError)(said)
        if status == 401:
            return KeyAccessDeniedError(said)
        if status == 409 and "deleted" in message.lower():
            return KeyDeletedError(said)
        if status == 400:
            return WrongKeyError(said) if unwrapping else KeyUsageError(said)
        return ResolverUnavailableError(said)  # 429 after the retries, 5xx
    if isinstance(exc, ClientAuthenticationError):  # no response: the credential itself failed
        return ResolverUnavailableError(f"no Azure credential for {key}: {type(exc).__name__}: {str(exc)[:300]}")
    if isinstance(exc, AzureError):
        return ResolverUnavailableError(f"Azure Key Vault unreachable for {key}: {type(exc).__name__}")
    raise exc


def _text(value: Any) -> str:
    """An SDK enum member (``KeyType.rsa``) or a plain string, as the string Key Vault sent."""
    return str(getattr(value, "value", value))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _wrap_algorithm(wrap_id: int) -> Any:
    """The SDK's ``KeyWrapAlgorithm`` for a wrap id (the SDK's local wrap wants the enum)."""
    try:
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ResolverUnavailableError(MISSING_SDK) from exc
    return KeyWrapAlgorithm(ALGORITHMS[wrap_id])


def _endpoint_map(value: Mapping[str, str] | str | None) -> dict[str, str]:
    """``{KEY VAULT HOST: HTTPS BASE URL}`` from the option (a mapping or ``HOST=URL,...``)."""
    if value is None:
        value = os.environ.get(ENDPOINTS_ENV, "")
    if isinstance(value, str):
        pairs = [item.partition("=")[::2] for item in value.split(",") if item.strip()]
        value = {h.strip(): u.strip() for h, u in pairs}
    out: dict[str, str] = {}
    for host, url in dict(value).items():
        if not _HOST.fullmatch(host.lower()):
            raise ValueError(f"azure_kv_endpoints maps Key Vault hosts: {host!r} is not one")
        if not isinstance(url, str) or not url.startswith("https://"):
            raise ValueError(f"azure_kv_endpoints: the endpoint for {host!r} must be an https:// URL")
        out[host.lower()] = url.rstrip("/")
    return out


class AzureKeyVaultResolver:
    """The ``azure-kv`` key resolver (one KeyClient per vault host, thread-safe)."""

    scheme: ClassVar[str] = SCHEME
    options: ClassVar[frozenset[str]] = frozenset({
        "azure_kv_endpoints", "azure_kv_retry_total", "azure_kv_retry_backoff_factor",
        "azure_kv_retry_backoff_max", "azure_kv_timeout",
    })
    #: DEK caching is on by default (it saves a Key Vault round trip per object)
    cache_by_default: ClassVar[bool] = True

    def __init__(
        self,
        azure_kv_endpoints: Mapping[str, str] | str | None = None,
        azure_kv_retry_total: int = 4,
        azure_kv_retry_backoff_factor: float = 0.8,
        azure_kv_retry_backoff_max: float = 30.0,
        azure_kv_timeout: float = 30.0,
    ) -> None:
        self.endpoints = _endpoint_map(azure_kv_endpoints)
        self.retry_total, self.retry_backoff_factor = int(azure_kv_retry_total), float(azure_kv_retry_backoff_factor)
        self.retry_backoff_max, self.timeout = float(azure_kv_retry_backoff_max), float(azure_kv_timeout)
        self._lock = threading.Lock()
        self._credential: Any = None
        self._key_clients: dict[str, Any] = {}
        self._crypto: OrderedDict[tuple[str, str, str], Any] = OrderedDict()

    def __repr__(self) -> str:
        return f"AzureKeyVaultResolver(endpoints={sorted(self.endpoints)!r})"

    def __reduce__(self) -> Any:
        return (type(self), (dict(self.endpoints), self.retry_total, self.retry_backoff_factor,
                             self.retry_backoff_max, self.timeout))

    # ------------------------------------------------------------ clients

    def _key_client(self, host: str) -> Any:
        with self._lock:
            client = self._key_clients.get(host)
            if client is not None:
                return client
            try:
                from azure.identity import DefaultAzureCredential
                from azure.keyvault.keys import KeyClient
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ResolverUnavailableError(MISSING_SDK) from exc
            if self._credential is None:
                self._credential = DefaultAzureCredential()
            mapped = host in self.endpoints
            client = KeyClient(
                self.endpoints.get(host, f"https://{host}"), self._credential,
                verify_challenge_resource=not mapped,
                retry_total=self.retry_total, retry_backoff_factor=self.retry_backoff_factor,
                retry_backoff_max=self.retry_backoff_max, connection_timeout=min(self.timeout, 10.0),
                read_timeout=self.timeout,
            )
            self._key_clients[host] = client
            return client

    def _crypto_client(self, ref: AzureKeyRef) -> Any:
        if ref.version is None:
            raise InvalidKeyUriError(f"internal error: no version in {ref.uri}")
        cache_key = (ref.host, ref.name.lower(), ref.version)
        with self._lock:
            client = self._crypto.get(cache_key)
            if client is not None:
                self._crypto.move_to_end(cache_key)
                return client
        client = self._key_client(ref.host).get_cryptography_client(ref.name, key_version=ref.version)
        with self._lock:
            self._crypto[cache_key] = client
            while len(self._crypto) > _CRYPTO_CLIENTS:
                self._crypto.popitem(last=False)
        return client

    def _call(self, ref: AzureKeyRef, fn: Callable[[], T], *, unwrapping: bool = False) -> T:
        try:
            from azure.core.exceptions import AzureError
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ResolverUnavailableError(MISSING_SDK) from exc
        try:
            return fn()
        except AzureError as exc:
            error = map_azure_error(exc, ref.uri, unwrapping=unwrapping)
            if isinstance(error, KeyNotFoundError) and self._soft_deleted(ref):
                raise KeyDeletedError(f"{ref.uri} is soft-deleted in Key Vault (recoverable until purged)") from exc
            raise error from exc

    def _soft_deleted(self, ref: AzureKeyRef) -> bool:
        """Whether Key Vault holds the key as deleted (it answers 404 for a soft-deleted key)."""
        try:
            from azure.core.exceptions import AzureError
        except ImportError:  # pragma: no cover
            return False
        try:
            self._key_client(ref.host).get_deleted_key(ref.name)
        except AzureError:
            return False  # not deleted, purged, or no permission to list deleted keys: "not found" stands
        return True

    def _hsm_operation(self, ref: AzureKeyRef, operation: str, value: bytes) -> bytes:
        """A256KW ``wrapkey``/``unwrapkey`` done by Key Vault, through the KeyClient's pipeline
        (same challenge flow, credential and retry policy).

        Not ``CryptographyClient``: for an ``oct``/``oct-HSM`` key it builds a *local* AES
        provider from the key's JWK even though Key Vault never returns an HSM key's bytes
        (``k`` is absent), and that provider then holds a random key: ``wrap_key`` would
        wrap the DEK under a key nobody has (azure-keyvault-keys 4.11).
        """
        from azure.core.rest import HttpRequest

        request = HttpRequest("POST", f"/keys/{ref.name}/{ref.version}/{operation}",
                              json={"alg": "A256KW", "value": _b64url(value)})
        client = self._key_client(ref.host)

        def send() -> bytes:
            response = client.send_request(request)
            response.raise_for_status()
            try:
                return _unb64url(str(response.json()["value"]))
            except (ValueError, KeyError, TypeError):
                raise ResolverUnavailableError(f"Azure Key Vault sent a malformed {operation} answer for "
                                               f"{ref.uri}") from None

        return self._call(ref, send, unwrapping=operation == "unwrapkey")

    # ------------------------------------------------------------ the resolver protocol

    def trusts(self, trusted_uri: str, slot_uri: str) -> bool:
        """Whether a reader trusting ``trusted_uri`` accepts a slot naming ``slot_uri``: the same
        host and key name (any version, or the trusted version).  Pure: no network call."""
        want = parse_azure_kv_uri(trusted_uri)
        try:
            have = parse_azure_kv_uri(slot_uri)
        except InvalidKeyUriError:
            return False
        if have.version is None or not want.same_key(have):
            return False
        return want.version is None or want.version == have.version

    def _current(self, ref: AzureKeyRef, op: str) -> tuple[AzureKeyRef, Any]:
        """The key ``op`` would use now (exact version) and its Key Vault record, after the state checks
        Key Vault does not do itself for the public half of a key."""
        key = self._call(ref, lambda: self._key_client(ref.host).get_key(ref.name, version=ref.version))
        props = key.properties
        version = str(props.version or "").lower()
        if not _VERSION.fullmatch(version) or str(props.name or "").lower() != ref.name.lower():
            raise ResolverUnavailableError(f"Azure Key Vault answered for another key than {ref.uri}")
        exact = AzureKeyRef(ref.host, ref.name, version)
        now = datetime.datetime.now(datetime.UTC)
        if props.enabled is False:
            raise KeyDisabledError(f"{exact.uri} is disabled in Key Vault")
        if props.not_before is not None and now < props.not_before:
            raise KeyDisabledError(f"{exact.uri} is not valid yet")
        if props.expires_on is not None and now >= props.expires_on:
            raise KeyDisabledError(f"{exact.uri} has expired (it still unwraps existing data)")
        ops = [_text(o) for o in (key.key_operations or [])]
        if op not in ops:
            raise KeyAccessDeniedError(f"{exact.uri} does not permit {op} (key_ops: {', '.join(ops) or 'none'})")
        return exact, key

    def identity(self, key_uri: str) -> str:
        return self._current(parse_azure_kv_uri(key_uri), "wrapKey")[0].uri

    def wrap(self, key_uri: str, dek: bytes, encryption_context: Mapping[str, str]) -> KeySlot:
        exact, key = self._current(parse_azure_kv_uri(key_uri), "wrapKey")
        kty = _text(key.key_type)
        if kty in RSA_TYPES:
            wrap_id = WRAP_RSA_OAEP_SHA256
        elif kty in OCT_TYPES:
            wrap_id = WRAP_AES256_KW
        else:
            raise KeyAccessDeniedError(
                f"{exact.uri} is a {kty} key: wrapping needs an RSA, RSA-HSM or (Managed HSM) oct-HSM key")
        if wrap_id == WRAP_AES256_KW:
            return KeySlot(exact.uri, wrap_id, self._hsm_operation(exact, "wrapkey", dek))
        crypto = self._crypto_client(exact)
        algorithm = _wrap_algorithm(wrap_id)
        result = self._call(exact, lambda: crypto.wrap_key(algorithm, dek))
        return KeySlot(exact.uri, wrap_id, bytes(result.encrypted_key))

    def unwrap(self, slot: KeySlot, encryption_context: Mapping[str, str]) -> bytes:
        ref = parse_azure_kv_uri(slot.key_uri)
        if ref.version is None:
            raise InvalidKeyUriError(f"an azure-kv key slot names a key version: {slot.key_uri!r}")
        if slot.wrap_algorithm not in ALGORITHMS:
            raise WrongKeyError(f"azure-kv keys cannot open wrap algorithm {slot.wrap_algorithm}")
        if slot.wrap_algorithm == WRAP_AES256_KW:
            return self._hsm_operation(ref, "unwrapkey", slot.wrapped_dek)
        algorithm = _wrap_algorithm(slot.wrap_algorithm)
        crypto = self._crypto_client(ref)
        result = self._call(ref, lambda: crypto.unwrap_key(algorithm, slot.wrapped_dek), unwrapping=True)
        return bytes(result.key)
