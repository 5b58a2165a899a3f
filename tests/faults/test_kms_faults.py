"""A KMS that throttles, fails with 5xx or stalls (a loopback server answering as AWS does):
botocore retries, then ``ResolverUnavailableError``; nothing is written, and a reader
gets the same error, never bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from envcrypt.errors import ResolverUnavailableError
from envcrypt.fs import EnvcryptFileSystem
from tests.fault_servers import FaultyKms

pytest.importorskip("boto3")
pytestmark = [pytest.mark.cloud, pytest.mark.timeout(60)]

ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


@pytest.fixture
def kms(aws_env: None) -> Iterator[FaultyKms]:
    server = FaultyKms()
    yield server
    server.close()


def _fs(kms: FaultyKms, **resolver: object) -> EnvcryptFileSystem:
    options = {"endpoint_url": kms.url, "region_name": "us-east-1", "max_attempts": 2,
               "connect_timeout": 0.5, "read_timeout": 0.5, **resolver}
    return EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri=f"aws-kms://{ARN}",
                              resolver_options=options, trusted_keys=[f"aws-kms://{ARN}"],
                              dek_cache=False, skip_instance_cache=True)


FAULTS = [
    pytest.param(("error", 400, "ThrottlingException"), "ThrottlingException", id="throttled"),
    pytest.param(("error", 500, "KMSInternalException"), "KMSInternalException", id="500"),
    pytest.param(("error", 503, "ServiceUnavailableException"), "ServiceUnavailable", id="503"),
    pytest.param(("stall", 1.5), "unreachable", id="timeout"),
]


@pytest.mark.parametrize(("fault", "said"), FAULTS)
def test_kms_faults_are_retried_then_unavailable_and_nothing_is_written(
        kms: FaultyKms, tmp_path: Path, fault: tuple[object, ...], said: str) -> None:
    """(botocore's adaptive mode under throttling: tests/test_keys_aws_kms.py)"""
    kms.fault = fault
    fs = _fs(kms)
    old = tmp_path / "old.bin"
    old.write_bytes(b"an object that was there before")
    with pytest.raises(ResolverUnavailableError, match=said):
        with fs.open(str(old), "wb") as f:  # over an existing object
            f.write(b"never stored" * 1000)
    with pytest.raises(ResolverUnavailableError, match=said):
        fs.pipe_file(str(tmp_path / "new.bin"), b"never stored")  # a new one
    assert kms.requests == 2 * 2  # two writes, each tried twice (botocore's retries), then given up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.bin"]  # no temp file, no new object
    assert old.read_bytes() == b"an object that was there before"


def test_a_reader_gets_the_typed_error_and_no_bytes(kms: FaultyKms, tmp_path: Path, moto_server: str) -> None:
    """An object sealed under a real (moto) KMS key, read while KMS throttles."""
    import boto3

    real = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")
    arn = real.create_key()["KeyMetadata"]["Arn"]
    options = {"endpoint_url": moto_server, "region_name": "us-east-1"}
    writer = EnvcryptFileSystem(fs=fsspec.filesystem("file"), key_uri=f"aws-kms://{arn}",
                                resolver_options=options, dek_cache=False, skip_instance_cache=True)
    path = str(tmp_path / "sealed.bin")
    writer.pipe_file(path, b"secret rows" * 100)
    kms.fault = ("error", 400, "ThrottlingException")
    reader = EnvcryptFileSystem(fs=fsspec.filesystem("file"), trusted_keys=[f"aws-kms://{arn}"],
                                resolver_options={**options, "endpoint_url": kms.url, "max_attempts": 2},
                                dek_cache=False, skip_instance_cache=True)
    with pytest.raises(ResolverUnavailableError, match="ThrottlingException"):
        reader.cat_file(path)
    assert kms.requests == 2 and all(t.endswith(".Decrypt") for t in kms.targets)
