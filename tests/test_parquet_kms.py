"""AWS KMS (a real moto server) as PME master keys: round trip, trust, and the KMS calls of a 100-file dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cloud

pa = pytest.importorskip("pyarrow")
boto3 = pytest.importorskip("boto3")

import envcrypt.parquet as ep  # noqa: E402
from envcrypt.errors import UntrustedKeyError  # noqa: E402
from envcrypt.keys.base import get_resolver  # noqa: E402


@pytest.fixture
def kms_keys(moto_server: str) -> Any:
    kms = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1")
    footer = kms.create_key()["KeyMetadata"]["Arn"]
    pii = kms.create_key()["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=f"alias/pii-{pii[-8:]}", TargetKeyId=pii)
    options = {"endpoint_url": moto_server, "region_name": "us-east-1"}
    ep.clear_factories()
    yield f"aws-kms://{footer}", f"aws-kms://alias/pii-{pii[-8:]}", options
    ep.clear_factories()


def _count(options: dict[str, Any]) -> Counter[str]:
    calls: Counter[str] = Counter()
    client = get_resolver("aws-kms", **options).client  # type: ignore[attr-defined]
    client.meta.events.register("before-call.kms", lambda model, **_: calls.update([model.name]))
    return calls


@pytest.mark.parametrize("double_wrapping", [True, False])
def test_kms_calls_for_a_100_file_dataset_with_2_encrypted_columns(tmp_path: Path, kms_keys: Any,
                                                                     double_wrapping: bool) -> None:
    footer, pii, options = kms_keys
    cfg = {"footer_key": footer, "column_keys": {pii: ["ssn", "email"]}, "resolver_options": options,
           "encryption_context": {"dataset": "customers"}, "double_wrapping": double_wrapping}
    calls = _count(options)
    table = pa.table({"id": range(20), "ssn": [f"{i:09d}" for i in range(20)], "email": ["x@y"] * 20})
    for i in range(100):
        ep.write_table(table, tmp_path / f"part.{i}.parquet", encryption=cfg)
    written = dict(calls)
    calls.clear()
    for i in range(100):
        assert ep.read_table(tmp_path / f"part.{i}.parquet", decryption=cfg).equals(table)
    read = dict(calls)
    print(f"\nKMS calls, double_wrapping={double_wrapping}: write 100 files {written}, read 100 files {read}")
    if double_wrapping:  # one KEK per master key per cache lifetime, one DescribeKey for the trusted alias
        assert written == {"Encrypt": 2}
        assert read == {"Decrypt": 2, "DescribeKey": 1}
    else:  # a DEK per file for the footer and per encrypted column, each wrapped by KMS
        assert written == {"Encrypt": 300}
        assert read == {"Decrypt": 300, "DescribeKey": 1}  # each wrapped DEK unwrapped once
    with pytest.raises(UntrustedKeyError):  # trusting the alias of another key does not open the footer
        ep.clear_factories()
        ep.read_table(tmp_path / "part.0.parquet",
                      decryption={"trusted_keys": [pii], "resolver_options": options})
