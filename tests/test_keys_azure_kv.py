"""The azure-kv:// resolver through the real azure-keyvault-keys and azure-identity clients,
against a loopback Key Vault over TLS (tests/azure_kv_server.py: challenge flow, managed
identity token, real RSA-OAEP-256 / A256KW, Key Vault's error bodies)."""

from __future__ import annotations

import os
import pickle
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

import envcrypt
from envcrypt.errors import (
    InvalidKeyUriError,
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    ResolverUnavailableError,
    UntrustedKeyError,
    WrongKeyError,
)
from envcrypt.format import KeySlot
from envcrypt.keys.azure_kv import AzureKeyVaultResolver, parse_azure_kv_uri
from envcrypt.keys.base import WRAP_AES256_KW, WRAP_RSA_OAEP_SHA256, get_resolver
from envcrypt.keys.cache import DekCache
from tests.azure_kv_server import (
    HSM_HOST,
    OAEP,
    OTHER_HOST,
    VAULT_HOST,
    LoopbackKeyVault,
)

pytestmark = pytest.mark.cloud


def _name() -> str:
    return "k-" + uuid.uuid4().hex[:12]


def _uri(name: str, host: str = VAULT_HOST) -> str:
    return f"azure-kv://{host}/keys/{name}"


def test_roundtrip_pins_the_version_and_is_real_rsa_oaep_256(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    version = kv.create_key(name, "RSA")
    blob = envcrypt.encrypt(b"orders" * 100, _uri(name), dek_cache=False, **opts)
    (slot,) = envcrypt.inspect(blob).key_slots
    assert slot.key_uri == f"{_uri(name)}/{version}" and slot.wrap_algorithm == WRAP_RSA_OAEP_SHA256
    dek = kv.keys[name][-1].material.decrypt(slot.wrapped_dek, OAEP)  # what Key Vault's private key opens
    assert len(dek) == 32
    for trusted in (_uri(name), f"{_uri(name)}/{version}", _uri(name.upper())):
        assert envcrypt.decrypt(blob, trusted_keys=trusted, dek_cache=False, **opts) == b"orders" * 100


def test_managed_hsm_oct_key_wraps_with_a256kw(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name, "oct-HSM")
    blob = envcrypt.encrypt(b"hsm data", _uri(name, HSM_HOST), dek_cache=False, **opts)
    (slot,) = envcrypt.inspect(blob).key_slots
    assert slot.wrap_algorithm == WRAP_AES256_KW and slot.key_uri.startswith(f"azure-kv://{HSM_HOST}/keys/")
    assert len(aes_key_unwrap(kv.keys[name][-1].material, slot.wrapped_dek)) == 32  # RFC 3394 under the HSM key
    assert envcrypt.decrypt(blob, trusted_keys=_uri(name, HSM_HOST), dek_cache=False, **opts) == b"hsm data"
    # the wrap was done by the HSM (an oct key has no public half)
    assert ("POST", f"/keys/{name}/{kv.keys[name][-1].version}/wrapkey") in kv.api_calls()


def test_rotation_new_version_for_writes_old_versions_still_unwrap(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    v1 = kv.create_key(name)
    old = envcrypt.encrypt(b"old", _uri(name), dek_cache=False, **opts)
    v2 = kv.rotate(name)
    new = envcrypt.encrypt(b"new", _uri(name), dek_cache=False, **opts)
    assert envcrypt.inspect(old).key_uris == [f"{_uri(name)}/{v1}"]
    assert envcrypt.inspect(new).key_uris == [f"{_uri(name)}/{v2}"]
    resolver = get_resolver("azure-kv", **opts)
    assert resolver.identity(_uri(name)) == f"{_uri(name)}/{v2}"
    assert envcrypt.decrypt(old, trusted_keys=_uri(name), dek_cache=False, **opts) == b"old"
    assert envcrypt.decrypt(new, trusted_keys=_uri(name), dek_cache=False, **opts) == b"new"
    # trusting one version trusts only that one
    with pytest.raises(UntrustedKeyError):
        envcrypt.decrypt(old, trusted_keys=f"{_uri(name)}/{v2}", dek_cache=False, **opts)


def test_disabled_key_refuses_writes_and_reads(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name)
    blob = envcrypt.encrypt(b"x", _uri(name), dek_cache=False, **opts)
    kv.set_enabled(name, False)
    with pytest.raises(KeyDisabledError, match="disabled"):  # Key Vault would wrap: the resolver refuses
        envcrypt.encrypt(b"y", _uri(name), dek_cache=False, **opts)
    with pytest.raises(KeyDisabledError, match="not allowed on a disabled key"):  # 403 KeyDisabled
        envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=False, **opts)
    kv.set_enabled(name, True)
    assert envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=False, **opts) == b"x"


def test_soft_deleted_key_is_key_deleted_error_and_recovers(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name)
    blob = envcrypt.encrypt(b"x", _uri(name), dek_cache=False, **opts)
    kv.delete(name)
    with pytest.raises(KeyDeletedError, match="soft-deleted"):
        envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=False, **opts)
    with pytest.raises(KeyDeletedError):
        envcrypt.encrypt(b"y", _uri(name), dek_cache=False, **opts)
    kv.recover(name)
    assert envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=False, **opts) == b"x"


def test_missing_key_and_version_are_not_found(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    with pytest.raises(KeyNotFoundError, match="KeyNotFound"):
        envcrypt.encrypt(b"x", _uri(_name()), dek_cache=False, **opts)
    name = _name()
    kv.create_key(name)
    resolver = get_resolver("azure-kv", **opts)
    with pytest.raises(KeyNotFoundError):
        resolver.unwrap(KeySlot(f"{_uri(name)}/{'0' * 32}", WRAP_RSA_OAEP_SHA256, b"\0" * 256), {})


def test_forbidden_is_access_denied(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name)
    blob = envcrypt.encrypt(b"x", _uri(name), dek_cache=False, **opts)
    kv.deny("unwrapKey")
    try:
        with pytest.raises(KeyAccessDeniedError, match="does not have keys unwrapKey permission"):
            envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=False, **opts)
        kv.deny("get")
        with pytest.raises(KeyAccessDeniedError, match="403"):
            envcrypt.encrypt(b"x", _uri(name), dek_cache=False, **opts)
    finally:
        kv.denied.clear()


def test_key_without_wrap_permission_or_expired_refuses_writes(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    signer = _name()
    kv.create_key(signer, ops=["sign", "verify"])
    with pytest.raises(KeyAccessDeniedError, match="does not permit wrapKey"):
        envcrypt.encrypt(b"x", _uri(signer), dek_cache=False, **opts)
    name = _name()
    kv.create_key(name)
    blob = envcrypt.encrypt(b"x", _uri(name), dek_cache=False, **opts)
    kv.set_expires(name, int(time.time()) - 10)
    with pytest.raises(KeyDisabledError, match="expired"):
        envcrypt.encrypt(b"y", _uri(name), dek_cache=False, **opts)
    assert envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=False, **opts) == b"x"  # still opens


def test_throttled_then_success_through_the_sdk_retry_policy(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name)
    blob = envcrypt.encrypt(b"x", _uri(name), dek_cache=False, **opts)
    before = len(kv.api_calls())
    kv.throttle(2)  # two 429 Throttled answers, then Key Vault answers again
    assert envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=False, **opts) == b"x"
    assert len(kv.api_calls()) - before >= 3  # the retries happened
    started = time.monotonic()
    kv.throttle(1, retry_after="1")
    assert envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=False, **opts) == b"x"
    assert time.monotonic() - started >= 1.0  # Retry-After honoured, not the 10 ms backoff


def test_throttling_that_outlasts_the_retries_is_resolver_unavailable(kv: LoopbackKeyVault,
                                                                     opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name)
    blob = envcrypt.encrypt(b"x", _uri(name), dek_cache=False, **opts)
    kv.throttle(50)
    try:
        with pytest.raises(ResolverUnavailableError, match="429"):
            envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=False, **{**opts, "azure_kv_retry_total": 2})
    finally:
        kv._throttle.clear()


def test_a_slot_naming_an_untrusted_vault_makes_no_call(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name)
    blob = envcrypt.encrypt(b"x", _uri(name, OTHER_HOST), dek_cache=False, **opts)  # evil.vault.azure.net
    before = len(kv.api_calls())
    for trusted in (_uri(name), _uri("other"), f"azure-kv://{HSM_HOST}/keys/{name}"):
        with pytest.raises(UntrustedKeyError):
            envcrypt.decrypt(blob, trusted_keys=trusted, dek_cache=False, **opts)
    assert len(kv.api_calls()) == before  # the mapped endpoint was never contacted


def test_thousand_objects_with_the_dek_cache_take_few_key_vault_calls(kv: LoopbackKeyVault,
                                                                      opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name)
    cache = DekCache()
    before = len(kv.api_calls())
    blobs = [envcrypt.encrypt(b"row %d" % i, _uri(name), dek_cache=cache, **opts) for i in range(1000)]
    writes = len(kv.api_calls()) - before
    assert writes <= 10, kv.api_calls()[before:]
    before = len(kv.api_calls())
    for i, blob in enumerate(blobs):
        assert envcrypt.decrypt(blob, trusted_keys=_uri(name), dek_cache=cache, **opts) == b"row %d" % i
    reads = len(kv.api_calls()) - before
    assert reads <= 10
    print(f"\nKey Vault calls for 1,000 writes: {writes}, for 1,000 reads: {reads}")


def test_wrapped_dek_that_does_not_open_is_wrong_key(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name, "oct-HSM")
    resolver = get_resolver("azure-kv", **opts)
    slot = resolver.wrap(_uri(name, HSM_HOST), os.urandom(32), {})
    forged = KeySlot(slot.key_uri, slot.wrap_algorithm, bytes(40))
    with pytest.raises(WrongKeyError, match="400"):
        resolver.unwrap(forged, {})
    with pytest.raises(WrongKeyError, match="wrap algorithm"):
        resolver.unwrap(KeySlot(slot.key_uri, 16, slot.wrapped_dek), {})


@pytest.mark.parametrize(("trusted", "slot", "expected"), [
    ("azure-kv://acme.vault.azure.net/keys/k", "azure-kv://acme.vault.azure.net/keys/k/" + "a" * 32, True),
    ("azure-kv://acme.vault.azure.net/keys/k", "azure-kv://ACME.vault.azure.net/keys/K/" + "A" * 32, True),
    ("azure-kv://acme.vault.azure.net/keys/k/" + "a" * 32, "azure-kv://acme.vault.azure.net/keys/k/" + "b" * 32,
     False),
    ("azure-kv://acme.vault.azure.net/keys/k", "azure-kv://acme.vault.azure.net/keys/k", False),  # no version
    ("azure-kv://acme.vault.azure.net/keys/k", "azure-kv://acme.vault.azure.net/keys/k2/" + "a" * 32, False),
    ("azure-kv://acme.vault.azure.net/keys/k", "azure-kv://evil.vault.azure.net/keys/k/" + "a" * 32, False),
    ("azure-kv://acme.vault.azure.net/keys/k", "azure-kv://127.0.0.1/keys/k/" + "a" * 32, False),
    ("azure-kv://acme.vault.azure.net/keys/k", "azure-kv://acme.vault.azure.net.evil.com/keys/k/" + "a" * 32,
     False),
    ("azure-kv://acme.vault.azure.net/keys/k", "azure-kv://acme.vault.azure.net/keys/k/../x/" + "a" * 32, False),
])
def test_trusts_table(trusted: str, slot: str, expected: bool) -> None:
    assert AzureKeyVaultResolver().trusts(trusted, slot) is expected


@pytest.mark.parametrize("uri", [
    "azure-kv://evil.com/keys/k", "azure-kv://acme.vault.azure.net:8443/keys/k",
    "azure-kv://user@acme.vault.azure.net/keys/k", "azure-kv://acme.vault.azure.net/secrets/k",
    "azure-kv://acme.vault.azure.net/keys/k_1", "azure-kv://acme.vault.azure.net/keys/k/notaversion",
    "azure-kv:acme.vault.azure.net/keys/k", "azure-kv://acme.vault.azure.net/keys/k/" + "a" * 32 + "/x",
    "azure-kv://acme.vault.azure.net\n/keys/k", "azure-kv://acme.vault.azure.net/keys/k\n",
    "azure-kv://acme.vault.azure.net/keys/k/" + "a" * 32 + "\n",
])
def test_invalid_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidKeyUriError):
        parse_azure_kv_uri(uri)


def test_managed_hsm_and_sovereign_hosts_parse() -> None:
    for host in ("acme.managedhsm.azure.net", "acme.vault.azure.cn", "acme.vault.usgovcloudapi.net"):
        assert parse_azure_kv_uri(f"azure-kv://{host}/keys/k").host == host


def test_endpoint_map_is_https_and_key_vault_hosts_only(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="https"):
        AzureKeyVaultResolver({VAULT_HOST: "http://127.0.0.1:1"})
    with pytest.raises(ValueError, match="Key Vault hosts"):
        AzureKeyVaultResolver({"example.com": "https://127.0.0.1:1"})
    monkeypatch.setenv("ENVCRYPT_AZURE_KV_ENDPOINTS", f"{VAULT_HOST}=https://127.0.0.1:9/")
    assert AzureKeyVaultResolver().endpoints == {VAULT_HOST: "https://127.0.0.1:9"}


def test_resolver_pickles_without_clients_or_credentials(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name)
    resolver = AzureKeyVaultResolver(**opts)
    slot = resolver.wrap(_uri(name), os.urandom(32), {})
    copy = pickle.loads(pickle.dumps(resolver))
    assert copy.endpoints == resolver.endpoints and copy._credential is None
    assert len(copy.unwrap(slot, {})) == 32
    assert kv.identity_header not in repr(resolver)


def test_no_credential_is_resolver_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any credential source the resolver fails with ResolverUnavailableError (no network:
    the vault host is mapped to a closed loopback port, managed identity points nowhere)."""
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
                 "AZURE_CLIENT_SECRET", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "EnvironmentCredential")
    resolver = AzureKeyVaultResolver({VAULT_HOST: "https://127.0.0.1:9"}, azure_kv_retry_total=0)
    with pytest.raises(ResolverUnavailableError):
        resolver.wrap(_uri("k"), os.urandom(32), {})


def test_loopback_sign_verify_is_real_through_the_sdk(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    """The loopback's sign is checked by the SDK's own local verify (public key from GET)."""
    import hashlib

    from azure.keyvault.keys.crypto import SignatureAlgorithm

    name = _name()
    kv.create_key(name, ops=["sign", "verify"])
    resolver = AzureKeyVaultResolver(**opts)
    client = resolver._key_client(VAULT_HOST).get_cryptography_client(name)
    digest = hashlib.sha256(b"release").digest()
    for algorithm in (SignatureAlgorithm.rs256, SignatureAlgorithm.ps256):
        signed = client.sign(algorithm, digest)
        assert client.verify(algorithm, digest, signed.signature).is_valid
        assert not client.verify(algorithm, hashlib.sha256(b"other").digest(), signed.signature).is_valid
    assert ("POST", f"/keys/{name}/{kv.keys[name][-1].version}/sign") in kv.api_calls()


def test_cli_encrypt_and_decrypt_with_an_azure_key(kv: LoopbackKeyVault, opts: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from envcrypt.cli import main

    name = _name()
    kv.create_key(name)
    monkeypatch.setenv("ENVCRYPT_AZURE_KV_ENDPOINTS", f"{VAULT_HOST}={kv.url}")
    (tmp_path / "in.csv").write_bytes(b"id,card\n1,4111\n")
    assert main(["encrypt", str(tmp_path / "in.csv"), str(tmp_path / "out.envc"), "--key", _uri(name)]) == 0
    assert main(["decrypt", str(tmp_path / "out.envc"), str(tmp_path / "back.csv"), "--trust", _uri(name)]) == 0
    assert (tmp_path / "back.csv").read_bytes() == b"id,card\n1,4111\n"
    assert main(["decrypt", str(tmp_path / "out.envc"), str(tmp_path / "x.csv"), "--trust", _uri("other")]) == 2
    assert "UntrustedKeyError" in capsys.readouterr().err


def test_customer_managed_keys_per_prefix(kv: LoopbackKeyVault, opts: dict[str, Any], tmp_path: Path) -> None:
    """Each tenant's prefix under the tenant's own Key Vault key (key_policy): writes use it, reads of a
    prefix trust only it, and a tenant that disables its key cuts off its own data only."""
    from envcrypt.errors import KeyDisabledError as Disabled
    from envcrypt.fs import EnvcryptFileSystem

    acme, globex = _name(), _name()
    kv.create_key(acme)
    kv.create_key(globex, "oct-HSM")
    root = tmp_path / "lake"
    (root / "acme").mkdir(parents=True)
    (root / "globex").mkdir(parents=True)
    policy = {f"{root}/acme/": _uri(acme), f"{root}/globex/": _uri(globex, HSM_HOST)}
    fs = EnvcryptFileSystem(target_protocol="file", key_policy=policy, resolver_options=opts,
                            skip_instance_cache=True)
    fs.pipe_file(f"{root}/acme/orders.csv", b"acme rows")
    fs.pipe_file(f"{root}/globex/orders.csv", b"globex rows")
    assert envcrypt.inspect((root / "acme" / "orders.csv").read_bytes()).key_uris[0].startswith(_uri(acme) + "/")
    assert envcrypt.inspect((root / "globex" / "orders.csv").read_bytes()).key_slots[0].wrap_algorithm == 3
    # an acme object planted under globex's prefix does not open there
    (root / "globex" / "planted.csv").write_bytes((root / "acme" / "orders.csv").read_bytes())
    with pytest.raises(UntrustedKeyError):
        fs.cat_file(f"{root}/globex/planted.csv")
    kv.set_enabled(acme, False)
    try:
        reader = EnvcryptFileSystem(target_protocol="file", key_policy=policy,
                                    resolver_options={**opts, "dek_cache": False}, skip_instance_cache=True)
        with pytest.raises(Disabled):
            reader.cat_file(f"{root}/acme/orders.csv")
        assert reader.cat_file(f"{root}/globex/orders.csv") == b"globex rows"
    finally:
        kv.set_enabled(acme, True)


def test_why_hsm_wrapping_bypasses_cryptography_client(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    """The SDK hazard the resolver works around (azure_kv._hsm_operation): for an oct-HSM key,
    whose JWK carries no key bytes, CryptographyClient.wrap_key wraps locally under a random
    key, so the result does not unwrap under the HSM's key.  If this starts failing, the SDK
    was fixed and the workaround may go."""
    from azure.keyvault.keys.crypto import KeyWrapAlgorithm
    from cryptography.hazmat.primitives.keywrap import InvalidUnwrap

    name = _name()
    kv.create_key(name, "oct-HSM")
    resolver = AzureKeyVaultResolver(**opts)
    client = resolver._key_client(HSM_HOST).get_cryptography_client(name, key_version=kv.keys[name][-1].version)
    wrapped = client.wrap_key(KeyWrapAlgorithm.aes_256, os.urandom(32)).encrypted_key
    assert ("POST", f"/keys/{name}/{kv.keys[name][-1].version}/wrapkey") not in kv.api_calls()  # done locally
    with pytest.raises(InvalidUnwrap):
        aes_key_unwrap(kv.keys[name][-1].material, wrapped)  # ...under a key the HSM does not have
    slot = resolver.wrap(_uri(name, HSM_HOST), os.urandom(32), {})  # the resolver's path is right
    assert len(aes_key_unwrap(kv.keys[name][-1].material, slot.wrapped_dek)) == 32
