"""AWS KMS resolver: round trips on a real moto server, error mapping on a loopback KMS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import envcrypt
from envcrypt.errors import (
    KeyAccessDeniedError,
    KeyDeletedError,
    KeyDisabledError,
    KeyNotFoundError,
    ResolverUnavailableError,
    WrongKeyError,
)
from envcrypt.format import KeySlot
from envcrypt.keys.aws_kms import AwsKmsResolver
from envcrypt.keys.base import WRAP_AWS_KMS
from tests.fault_servers import FaultyKms

boto3 = pytest.importorskip("boto3")  # every test here talks to KMS through boto3

pytestmark = pytest.mark.cloud
CTX = {"tenant": "acme", "dataset": "orders"}


@pytest.fixture(scope="module")
def kms_key(moto_server: str) -> tuple[str, str]:
    kms = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")
    meta = kms.create_key(Description="envcrypt test")["KeyMetadata"]
    kms.create_alias(AliasName="alias/envcrypt-test", TargetKeyId=meta["KeyId"])
    return meta["KeyId"], meta["Arn"]


@pytest.fixture
def resolver(moto_server: str) -> AwsKmsResolver:
    return AwsKmsResolver(region_name="us-east-1", endpoint_url=moto_server)


def test_roundtrip_through_envelope_by_alias(moto_server: str, kms_key: tuple[str, str]) -> None:
    _, arn = kms_key
    blob = envcrypt.encrypt(b"data" * 100, "aws-kms://alias/envcrypt-test", encryption_context=CTX,
                            endpoint_url=moto_server, region_name="us-east-1", dek_cache=False)
    info = envcrypt.inspect(blob)
    assert info.key_uris == [f"aws-kms://{arn}"]  # the slot names the exact key
    assert info.key_slots[0].wrap_algorithm == WRAP_AWS_KMS
    for trusted in ("aws-kms://alias/envcrypt-test", f"aws-kms://{arn}", f"aws-kms://{arn.rsplit('/', 1)[1]}",
                    "aws-kms://discovery/aws/123456789012"):
        assert envcrypt.decrypt(blob, trusted_keys=trusted, endpoint_url=moto_server, region_name="us-east-1",
                                dek_cache=False) == b"data" * 100


def test_encryption_context_is_bound_to_the_slot(resolver: AwsKmsResolver, kms_key: tuple[str, str]) -> None:
    key_id, arn = kms_key
    dek = bytes(range(32))
    slot = resolver.wrap(f"aws-kms://{key_id}", dek, CTX)
    assert slot.key_uri == f"aws-kms://{arn}"
    assert resolver.unwrap(slot, CTX) == dek
    with pytest.raises(WrongKeyError):
        resolver.unwrap(slot, {**CTX, "tenant": "evil"})
    with pytest.raises(WrongKeyError):
        resolver.unwrap(slot, {})


def test_identity_names_the_key_arn(resolver: AwsKmsResolver, kms_key: tuple[str, str]) -> None:
    _, arn = kms_key
    assert resolver.identity("aws-kms://alias/envcrypt-test") == f"aws-kms://{arn}"


def test_not_found_on_moto(resolver: AwsKmsResolver, kms_key: tuple[str, str]) -> None:
    with pytest.raises(KeyNotFoundError):
        resolver.wrap("aws-kms://alias/missing", bytes(32), {})


def test_local_and_kms_slots_any_one_opens(moto_server: str, kms_key: tuple[str, str]) -> None:
    from envcrypt.keys.vault import LocalVault

    vault = LocalVault()
    vault.create_key("eu")
    opts: dict[str, Any] = {"endpoint_url": moto_server, "region_name": "us-east-1"}
    blob = envcrypt.encrypt(b"both", ["local:eu", "aws-kms://alias/envcrypt-test"], **opts)
    vault.delete_key("eu")
    # the KMS slot opens it; the error of the local slot is kept only when nothing opens
    assert envcrypt.decrypt(blob, trusted_keys=["local:eu", "aws-kms://alias/envcrypt-test"], **opts) == b"both"


def test_resolver_pickles_without_a_client(resolver: AwsKmsResolver) -> None:
    import pickle

    clone = pickle.loads(pickle.dumps(resolver))
    assert clone.endpoint_url == resolver.endpoint_url and clone._client is None


# ---------------------------------------------------------------- loopback KMS with real error bodies


@pytest.fixture(scope="module")
def fake_kms(aws_env: None) -> Iterator[FaultyKms]:
    fake = FaultyKms()  # answers every KMS call with one configured error, counting the requests
    yield fake
    fake.close()


ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


@pytest.mark.parametrize(("status", "code", "error"), [
    (400, "DisabledException", KeyDisabledError),
    (400, "KMSInvalidStateException", KeyDeletedError),
    (400, "NotFoundException", KeyNotFoundError),
    (400, "AccessDeniedException", KeyAccessDeniedError),
    (400, "InvalidCiphertextException", WrongKeyError),
    (400, "IncorrectKeyException", WrongKeyError),
])
def test_kms_error_mapping(fake_kms: FaultyKms, status: int, code: str, error: type[Exception]) -> None:
    fake_kms.fault = ("error", status, code)
    resolver = AwsKmsResolver(region_name="us-east-1", endpoint_url=fake_kms.url, max_attempts=3)
    before = fake_kms.requests
    with pytest.raises(error) as info:
        resolver.unwrap(KeySlot(f"aws-kms://{ARN}", WRAP_AWS_KMS, b"\x01" * 64), CTX)
    assert code in str(info.value)
    assert fake_kms.requests - before == 1  # client errors are not retried
    with pytest.raises(error):
        resolver.wrap(f"aws-kms://{ARN}", bytes(32), CTX)


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
def test_throttling_after_botocore_retries(fake_kms: FaultyKms, mode: str) -> None:
    fake_kms.fault = ("error", 400, "ThrottlingException")
    resolver = AwsKmsResolver(region_name="us-east-1", endpoint_url=fake_kms.url,
                              retry_mode=mode, max_attempts=2)
    before = fake_kms.requests
    with pytest.raises(ResolverUnavailableError, match="ThrottlingException"):
        resolver.unwrap(KeySlot(f"aws-kms://{ARN}", WRAP_AWS_KMS, b"\x01" * 64), CTX)
    assert fake_kms.requests - before == 2  # botocore retried once, then gave up


def test_internal_error_is_unavailable(fake_kms: FaultyKms) -> None:
    fake_kms.fault = ("error", 500, "KMSInternalException")
    resolver = AwsKmsResolver(region_name="us-east-1", endpoint_url=fake_kms.url, max_attempts=1)
    with pytest.raises(ResolverUnavailableError):
        resolver.wrap(f"aws-kms://{ARN}", bytes(32), CTX)


def test_unreachable_endpoint(aws_env: None) -> None:
    from tests.conftest import free_port

    resolver = AwsKmsResolver(region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}",
                              max_attempts=1, connect_timeout=1)
    with pytest.raises(ResolverUnavailableError):
        resolver.wrap(f"aws-kms://{ARN}", bytes(32), CTX)
