"""Issue 7, items 1, 9, 10: a reader opens an object only through a slot naming a trusted key.

The attacker can write the storage and read public keys.  They build whole objects by
hand (tests/attacks/forge.py): a DEK of their own, a body sealed under it, and a key
slot that wraps that DEK under a vault RSA key's *public* key, under their own KMS key,
or under any scheme at all.  Every read path must refuse them before anything reaches
a key service, and say so with a typed error.
"""

from __future__ import annotations

import io
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
import pytest

import envcrypt
from envcrypt.errors import (
    EnvcryptError,
    KeyDeletedError,
    ResolverUnavailableError,
    UntrustedKeyError,
    WrongKeyError,
)
from envcrypt.format import KeySlot, parse_header
from envcrypt.keys import base
from envcrypt.keys.base import WRAP_AWS_KMS, get_resolver, register_resolver
from envcrypt.keys.vault import LocalVault
from envcrypt.slots import open_slots

from .forge import rsa_forgery, seal

WRAP_OPS = ["wrapKey", "unwrapKey", "encrypt", "decrypt"]
CSV = b"id,amount\n1,100\n2,250\n"
FORGED = b"id,amount\n1,999999\n"


@pytest.fixture
def vault(_isolated_vault: Path) -> LocalVault:
    v = LocalVault(_isolated_vault)
    v.create_key("sales")
    v.create_key("rsa-wrap", "rsa", ops=WRAP_OPS)  # a key made for RSA-OAEP wrapping, on purpose
    return v


def _reads(fs: Any, path: str) -> dict[str, Any]:
    """Every way a user reads an object through the filesystem."""
    def read_with_pandas() -> Any:
        pd = pytest.importorskip("pandas")  # last of the reads: the others have run without pandas
        with fs.open(path, "rb") as f:
            return pd.read_csv(f)

    return {
        "cat_file": lambda: fs.cat_file(path),
        "open.read": lambda: fs.open(path, "rb").read(),
        "range": lambda: fs.cat_file(path, 0, 5),
        "pandas": read_with_pandas,
    }


def test_rsa_slot_forged_with_a_public_key_is_refused_everywhere(vault: LocalVault, tmp_path: Path) -> None:
    public = vault.public_key_pem("rsa-wrap")
    context = {"dataset": "sales"}
    forged = rsa_forgery(public, "local:rsa-wrap/1", FORGED, context)
    unwraps_before = Counter(e["op"] for e in vault.audit.entries())["unwrapKey"]
    # the bytes API: the expected context passes, the untrusted slot does not
    with pytest.raises(UntrustedKeyError):
        envcrypt.decrypt(forged, trusted_keys="local:sales", encryption_context=context)
    with pytest.raises(UntrustedKeyError):
        envcrypt.open_reader(io.BytesIO(forged), trusted_keys="local:sales", encryption_context=context)
    with pytest.raises(UntrustedKeyError):  # no trusted keys given: the default key only
        envcrypt.decrypt(forged)
    # every fsspec read path, with the key the reader is configured for
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "sales.csv").write_bytes(forged)  # a storage write
    fs = fsspec.filesystem("envcrypt", target_protocol="file", key_uri="local:sales",
                           encryption_context=context, skip_instance_cache=True)
    for name, read in _reads(fs, str(tmp_path / "lake" / "sales.csv")).items():
        with pytest.raises(UntrustedKeyError):
            read()
            pytest.fail(name)
    pd = pytest.importorskip("pandas")
    with pytest.raises(UntrustedKeyError):
        pd.read_csv(f"envcrypt::file://{tmp_path}/lake/sales.csv",
                    storage_options={"envcrypt": {"key_uri": "local:sales", "skip_instance_cache": True}})
    # the vault was never asked to unwrap the forged slot
    assert Counter(e["op"] for e in vault.audit.entries())["unwrapKey"] == unwraps_before


def test_a_reader_that_trusts_an_rsa_wrap_key_accepts_what_its_public_key_made(vault: LocalVault) -> None:
    """The limit SECURITY.md states: trusting an asymmetric wrap key trusts every holder of its
    public key (RSA-OAEP gives secrecy, not authenticity)."""
    forged = rsa_forgery(vault.public_key_pem("rsa-wrap"), "local:rsa-wrap/1", FORGED)
    assert envcrypt.decrypt(forged, trusted_keys="local:rsa-wrap") == FORGED


def test_sign_keys_do_not_unwrap_even_when_trusted(vault: LocalVault) -> None:
    vault.create_key("signer", "rsa")  # default rsa ops: sign and verify only
    forged = rsa_forgery(vault.public_key_pem("signer"), "local:signer/1", FORGED)
    with pytest.raises(envcrypt.KeyAccessDeniedError):
        envcrypt.decrypt(forged, trusted_keys=["local:sales", "local:signer"])


def test_a_slot_from_the_trusted_key_with_a_forged_body_fails_the_commitment(vault: LocalVault) -> None:
    """The attacker copies a real slot of the trusted key into an object of their own: its DEK
    is not the one their body was sealed with."""
    real = envcrypt.encrypt(CSV, "local:sales")
    slot = parse_header(real)[0].key_slots[0]
    forged = seal(os.urandom(32), (slot,), FORGED)
    with pytest.raises(WrongKeyError, match="commitment"):
        envcrypt.decrypt(forged, trusted_keys="local:sales")


# ---------------------------------------------------------------- AWS KMS


@pytest.fixture
def kms(moto_server: str) -> dict[str, Any]:
    boto3 = pytest.importorskip("boto3")
    client = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")
    mine = client.create_key()["KeyMetadata"]["Arn"]
    theirs = client.create_key()["KeyMetadata"]["Arn"]  # the attacker's own key (their account in life)
    alias = f"alias/reader-{uuid.uuid4().hex[:8]}"
    client.create_alias(AliasName=alias, TargetKeyId=mine)
    options = {"endpoint_url": moto_server, "region_name": "us-east-1", "dek_cache": False}
    calls: Counter[str] = Counter()
    resolver: Any = get_resolver("aws-kms", endpoint_url=moto_server, region_name="us-east-1")
    resolver.client.meta.events.register("before-call.kms", lambda model, **_: calls.update([model.name]))
    return {"client": client, "mine": mine, "theirs": theirs, "alias": alias, "options": options,
            "calls": calls}


@pytest.mark.cloud
def test_an_object_under_the_attackers_kms_key_is_refused_without_a_kms_call(kms: dict[str, Any]) -> None:
    opts = kms["options"]
    forged = envcrypt.encrypt(FORGED, f"aws-kms://{kms['theirs']}", **opts)  # the attacker may use KMS
    kms["calls"].clear()
    for trusted in (f"aws-kms://{kms['mine']}", f"aws-kms://{kms['mine'].rsplit('/', 1)[1]}"):
        with pytest.raises(UntrustedKeyError):
            envcrypt.decrypt(forged, trusted_keys=trusted, **opts)
    assert kms["calls"]["Decrypt"] == 0  # the attacker's KeyId never reaches KMS
    with pytest.raises(UntrustedKeyError):  # by alias: KMS says which key it names (DescribeKey only)
        envcrypt.decrypt(forged, trusted_keys=f"aws-kms://{kms['alias']}", **opts)
    assert kms["calls"]["Decrypt"] == 0


@pytest.mark.cloud
def test_a_kms_slot_relabelled_with_the_trusted_arn_is_refused_by_kms(kms: dict[str, Any]) -> None:
    """The slot names the trusted key but holds a blob of the attacker's key: Decrypt is pinned
    to the trusted key (KeyId), so KMS (or the check of its answer) refuses it."""
    opts = kms["options"]
    forged = envcrypt.encrypt(FORGED, f"aws-kms://{kms['theirs']}", **opts)
    header, size = parse_header(forged)
    slot = header.key_slots[0]
    relabelled = header.with_slots((KeySlot(f"aws-kms://{kms['mine']}", WRAP_AWS_KMS, slot.wrapped_dek),))
    # KMS answers IncorrectKeyException (WrongKeyError); moto answers AccessDeniedException
    with pytest.raises((WrongKeyError, envcrypt.KeyAccessDeniedError)):
        envcrypt.decrypt(relabelled.pack() + forged[size:], trusted_keys=f"aws-kms://{kms['mine']}", **opts)


@pytest.mark.cloud
def test_kms_discovery_is_an_explicit_opt_in_with_an_account_filter(kms: dict[str, Any]) -> None:
    opts = kms["options"]
    blob = envcrypt.encrypt(CSV, f"aws-kms://{kms['mine']}", **opts)
    account = kms["mine"].split(":")[4]
    assert envcrypt.decrypt(blob, trusted_keys=f"aws-kms://discovery/aws/{account}", **opts) == CSV
    with pytest.raises(UntrustedKeyError):
        envcrypt.decrypt(blob, trusted_keys="aws-kms://discovery/aws/999999999999", **opts)
    with pytest.raises(envcrypt.errors.InvalidKeyUriError):  # no account filter: refused
        envcrypt.decrypt(blob, trusted_keys="aws-kms://discovery/aws/", **opts)


def test_a_local_only_reader_never_builds_a_kms_client(vault: LocalVault, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read beacon: the attacker's object names their KMS key and context; a reader that uses
    only local keys must not call KMS with its ambient AWS credentials."""
    from envcrypt.keys import aws_kms

    built: list[Any] = []
    monkeypatch.setattr(aws_kms.AwsKmsResolver, "__init__",
                        lambda self, **kw: built.append(kw) or pytest.fail("a KMS resolver was built"))
    beacon = seal(os.urandom(32), (KeySlot("aws-kms://arn:aws:kms:us-east-1:666666666666:key/beacon",
                                           WRAP_AWS_KMS, b"x" * 64),), FORGED, {"tracking": "id-123"})
    with pytest.raises(UntrustedKeyError):
        envcrypt.decrypt(beacon, trusted_keys="local:sales")
    fs = fsspec.filesystem("envcrypt", target_protocol="memory", key_uri="local:sales", skip_instance_cache=True)
    fs.target.pipe_file("/beacon.bin", beacon)
    with pytest.raises(UntrustedKeyError):
        fs.cat_file("/beacon.bin")
    assert built == [] and not any(k[0] == "aws-kms" for k in base._instances)


# ---------------------------------------------------------------- any scheme; typed errors


def test_a_slot_of_a_scheme_whose_resolver_needs_options_gives_a_typed_error(vault: LocalVault) -> None:
    def needy(*, vault_url: str) -> Any:  # a resolver with a required option
        raise AssertionError("never built without its option")

    register_resolver("needy", needy)
    try:
        forged = seal(os.urandom(32), (KeySlot("needy:key", 1, b"w" * 40),), FORGED)
        with pytest.raises(UntrustedKeyError):  # untrusted: the resolver is not even built
            envcrypt.decrypt(forged, trusted_keys="local:sales")
        with pytest.raises(ResolverUnavailableError, match="vault_url"):  # trusted, but cannot be set up
            envcrypt.decrypt(forged, trusted_keys="needy:key")
    finally:
        base._factories.pop("needy", None)


def test_when_no_slot_opens_one_error_lists_every_slot(vault: LocalVault) -> None:
    vault.create_key("eu")
    blob = envcrypt.encrypt(CSV, ["local:eu", "local:sales"])
    header, size = parse_header(blob)
    extra = KeySlot("aws-kms://arn:aws:kms:us-east-1:666666666666:key/x", WRAP_AWS_KMS, b"x" * 64)
    blob = header.with_slots((extra, *header.key_slots)).pack() + blob[size:]
    vault.delete_key("eu")
    vault.delete_key("sales")
    with pytest.raises(KeyDeletedError) as caught:  # the first trusted slot's reason decides the class
        envcrypt.decrypt(blob, trusted_keys=["local:eu", "local:sales"])
    text = str(caught.value)
    assert "local:eu/1" in text and "local:sales/1" in text and "not a trusted key" in text
    reasons = caught.value.reasons  # type: ignore[attr-defined]
    assert [type(e).__name__ for _, e in reasons] == ["UntrustedKeyError", "KeyDeletedError", "KeyDeletedError"]


def test_the_one_slot_trial_returns_only_a_committed_trusted_dek(vault: LocalVault) -> None:
    blob = envcrypt.encrypt(CSV, "local:sales")
    header, size = parse_header(blob)
    opened = open_slots(header, blob[size : size + 56], ["local:sales"], {})
    assert opened.slot.key_uri == "local:sales/1" and opened.trusted_slots == header.key_slots
    assert "dek" not in repr(opened).lower()
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(opened)
    with pytest.raises(EnvcryptError):
        open_slots(header, blob[size : size + 56], ["local:other"], {})
