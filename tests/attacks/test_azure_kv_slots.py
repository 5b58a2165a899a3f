"""A storage writer against azure-kv:// readers: forged key slots never make the reader call a
Key Vault it does not trust (counted at the loopback Key Vault), and a forged slot naming a
trusted key yields nothing the reader accepts, except the stated limit of an RSA key (its
public key makes slots it opens: trusting an RSA wrap key trusts every public-key holder)."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

import envcrypt
from envcrypt.chunked import new_message
from envcrypt.errors import UntrustedKeyError, WrongKeyError
from envcrypt.format import Header, KeySlot, parse_header
from envcrypt.keys.base import WRAP_AES256_KW, WRAP_RSA_OAEP_SHA256
from tests.azure_kv_server import (
    HSM_HOST,
    OAEP,
    OTHER_HOST,
    VAULT_HOST,
    LoopbackKeyVault,
)

pytestmark = pytest.mark.cloud


def _forged(slots: list[KeySlot], dek: bytes, plaintext: bytes) -> bytes:
    """An object made by hand around ``dek``, with the slots the attacker chose."""
    header = Header({}, tuple(slots))
    prefix, cipher = new_message(dek, header.immutable)
    body = bytearray(len(plaintext) + 16)
    cipher.seal(0, memoryview(plaintext), memoryview(body), True)
    return header.pack() + prefix + bytes(body)


def _name() -> str:
    return "k-" + uuid.uuid4().hex[:12]


@pytest.mark.parametrize("slot_uri", [
    f"azure-kv://{OTHER_HOST}/keys/NAME/" + "a" * 32,  # the attacker's vault (mapped: reachable)
    f"azure-kv://{VAULT_HOST}/keys/other/" + "a" * 32,  # another key of the trusted vault
    f"azure-kv://{VAULT_HOST}.evil.example/keys/NAME/" + "a" * 32,
    f"azure-kv://evil@{VAULT_HOST}/keys/NAME/" + "a" * 32,
    "azure-kv://127.0.0.1/keys/NAME/" + "a" * 32,
    f"azure-kv://{VAULT_HOST}/keys/NAME/../other/" + "a" * 32,
    f"azure-kv://{VAULT_HOST}/keys/NAME",  # no version: never written, never accepted
    f"azure-kv://{VAULT_HOST}:443/keys/NAME/" + "a" * 32,
])
def test_forged_slot_naming_an_untrusted_key_makes_no_key_vault_call(kv: LoopbackKeyVault, opts: dict[str, Any],
                                                                    slot_uri: str) -> None:
    name = _name()
    kv.create_key(name)
    dek = os.urandom(32)
    blob = _forged([KeySlot(slot_uri.replace("NAME", name), WRAP_RSA_OAEP_SHA256, os.urandom(256))], dek, b"evil")
    before, tokens = len(kv.api_calls()), kv.token_requests
    with pytest.raises(UntrustedKeyError):
        envcrypt.decrypt(blob, trusted_keys=f"azure-kv://{VAULT_HOST}/keys/{name}", **opts)
    assert kv.api_calls()[before:] == [] and kv.token_requests == tokens  # no request, no token


def test_only_the_trusted_slot_is_sent_to_key_vault(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    kv.create_key(name)
    good = envcrypt.encrypt(b"payload", f"azure-kv://{VAULT_HOST}/keys/{name}", dek_cache=False, **opts)
    (slot,) = envcrypt.inspect(good).key_slots
    decoy = KeySlot(f"azure-kv://{OTHER_HOST}/keys/beacon/" + "b" * 32, WRAP_RSA_OAEP_SHA256, os.urandom(256))
    header, size = parse_header(good)
    blob = Header(header.encryption_context, (decoy, slot)).pack() + good[size:]
    before = len(kv.api_calls())
    assert envcrypt.decrypt(blob, trusted_keys=f"azure-kv://{VAULT_HOST}/keys/{name}", dek_cache=False,
                            **opts) == b"payload"
    assert all("beacon" not in path for _, path in kv.api_calls()[before:])


def test_forged_a256kw_slot_under_a_trusted_hsm_key_is_a_wrong_key(kv: LoopbackKeyVault, opts: dict[str, Any]) -> None:
    name = _name()
    version = kv.create_key(name, "oct-HSM")
    uri = f"azure-kv://{HSM_HOST}/keys/{name}/{version}"
    for algorithm, wrapped in ((WRAP_AES256_KW, os.urandom(40)), (WRAP_RSA_OAEP_SHA256, os.urandom(256))):
        blob = _forged([KeySlot(uri, algorithm, wrapped)], os.urandom(32), b"evil")
        with pytest.raises(WrongKeyError):  # Key Vault answers 400: the bytes do not unwrap under its key
            envcrypt.decrypt(blob, trusted_keys=f"azure-kv://{HSM_HOST}/keys/{name}", dek_cache=False, **opts)


def test_the_stated_limit_an_rsa_keys_public_key_makes_slots_it_opens(kv: LoopbackKeyVault,
                                                                       opts: dict[str, Any]) -> None:
    """SECURITY.md: RSA-OAEP gives secrecy, not authenticity; trust RSA Key Vault keys only for
    producers that may write anything (an oct-HSM key in a Managed HSM has no public half)."""
    name = _name()
    version = kv.create_key(name)
    public = kv.keys[name][-1].material.public_key()  # what anyone with keys/get can read
    dek = os.urandom(32)
    slot = KeySlot(f"azure-kv://{VAULT_HOST}/keys/{name}/{version}", WRAP_RSA_OAEP_SHA256, public.encrypt(dek, OAEP))
    blob = _forged([slot], dek, b"made with the public key")
    assert envcrypt.decrypt(blob, trusted_keys=f"azure-kv://{VAULT_HOST}/keys/{name}", dek_cache=False,
                            **opts) == b"made with the public key"
