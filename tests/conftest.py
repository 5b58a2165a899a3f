"""Shared fixtures: an isolated local vault for every test, and real local servers.

Cloud fixtures start real servers on 127.0.0.1 (a moto server for S3 and KMS);
nothing here mocks a client library.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from envcrypt.keys.base import clear_resolver_cache

VECTORS = Path(__file__).resolve().parent / "vectors" / "wycheproof"

if os.environ.get("ENVCRYPT_SECRETS_SCAN"):  # opt-in: DEBUG logs scanned for key bytes (tests/secrets_scan.py)
    from tests.secrets_scan import install as _install_secrets_scan

    _install_secrets_scan()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _isolated_vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own empty vault and default key settings."""
    vault = tmp_path / "vault"
    monkeypatch.setenv("ENVCRYPT_VAULT", str(vault))
    monkeypatch.delenv("ENVCRYPT_KEY_URI", raising=False)
    clear_resolver_cache()
    yield vault
    clear_resolver_cache()


@pytest.fixture(scope="session")
def aws_env() -> Iterator[None]:
    """Fake credentials and region so boto3 never looks for real ones."""
    saved = {k: os.environ.get(k) for k in _AWS_VARS}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing", AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
    )
    os.environ.pop("AWS_PROFILE", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


_AWS_VARS = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE",
)


@pytest.fixture(scope="session")
def moto_server(aws_env: None) -> Iterator[str]:
    """A real moto server (S3, KMS, ...) on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def dask_client(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A cheap distributed cluster for one test module (closed at its end: a live Client becomes
    every later dask computation's scheduler): 2 worker processes, 1 thread each, no dashboard,
    scratch space under pytest's temporary directory.  Workers start with the fake AWS
    environment; tests pass their vault by name (a path), never a key."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="1GiB",
        local_directory=str(tmp_path_factory.mktemp("dask-scratch")),
    )
    with distributed.Client(cluster) as client:
        yield client
    cluster.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Let pyarrow's I/O threads finish before the interpreter tears down.

    pyarrow can abort the process during interpreter teardown when one of its
    pool threads still runs a task that needs the GIL (apache/arrow#34314,
    #39862). Collecting garbage and pausing briefly lets such tasks end first.
    """
    import gc
    import time

    gc.collect()
    time.sleep(0.2)


@pytest.fixture(scope="module")
def kv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A loopback Azure Key Vault over TLS (tests/azure_kv_server.py), one per test module."""
    from tests.azure_kv_server import LoopbackKeyVault

    vault = LoopbackKeyVault(tmp_path_factory.mktemp("kv-tls")).start()
    yield vault
    vault.stop()


@pytest.fixture
def opts(kv: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Resolver options (and environment) that point azure-kv:// at the loopback vault."""
    from tests.azure_kv_server import use_loopback

    return use_loopback(kv, monkeypatch)


@pytest.fixture
def unwraps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every slot the local vault resolver is asked to unwrap (its key URI): a spy on the real resolver."""
    from envcrypt.keys.vault import LocalVaultResolver

    seen: list[str] = []
    real = LocalVaultResolver.unwrap

    def spy(self: Any, slot: Any, context: Any) -> bytes:
        seen.append(slot.key_uri)
        return real(self, slot, context)

    monkeypatch.setattr(LocalVaultResolver, "unwrap", spy)
    return seen


@pytest.fixture
def s3(moto_server: str) -> Iterator[dict[str, Any]]:
    """A fresh bucket on the moto server: its name, a boto3 client, fsspec storage options and the endpoint."""
    import uuid

    boto3 = pytest.importorskip("boto3")
    client = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    options = {"s3": {"client_kwargs": {"endpoint_url": moto_server}, "skip_instance_cache": True}}
    yield {"bucket": bucket, "client": client, "options": options, "endpoint": moto_server}
