"""envcrypt::abfs:// through adlfs against a real Azurite blob server (skipped when Azurite is absent)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

pytestmark = pytest.mark.cloud

pytest.importorskip("adlfs")
blob = pytest.importorskip("azure.storage.blob")
pd = pytest.importorskip("pandas")

AZURITE = Path(__file__).resolve().parents[1] / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's documented, public development account (not a secret)
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Azurite blob server on a free port; yields its connection string."""
    if not AZURITE.exists():
        pytest.skip("Azurite is not installed (./dev installs it into .cache/azurite)")
    port = _free_port()
    location = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location),
         "--skipApiVersionCheck", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("Azurite did not start")
                time.sleep(0.1)
        yield (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
               f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def container(azurite: str) -> Iterator[dict[str, Any]]:
    service = blob.BlobServiceClient.from_connection_string(azurite)
    name = f"c{uuid.uuid4().hex[:12]}"
    client = service.create_container(name)
    yield {"name": name, "client": client, "options": {"abfs": {"connection_string": azurite}}}
    client.delete_container()


def test_abfs_roundtrip_sizes_raw_bytes_and_atomic_abort(container: dict[str, Any]) -> None:
    fs, _ = fsspec.core.url_to_fs(f"envcrypt::abfs://{container['name']}", **container["options"])
    path = f"{container['name']}/d/secret.bin"
    data = b"iban=FR7630006000011234567890189;" * 4000
    fs.pipe_file(path, data)
    raw = container["client"].download_blob("d/secret.bin").readall()
    assert raw[:8] == b"ENVCRYPT" and b"FR7630006000011234567890189" not in raw
    assert fs.info(path)["size"] == len(data) and fs.info(path)["stored_size"] == len(raw)
    assert fs.ls(f"{container['name']}/d", detail=True)[0]["size"] == len(data)
    assert fs.cat_file(path, 100, 50_000) == data[100:50_000]
    with pytest.raises(RuntimeError):
        with fs.open(f"{container['name']}/d/never.bin", "wb", block_size=1024 * 1024) as f:
            f.write(os.urandom(3 * 1024 * 1024))  # blocks get staged
            raise RuntimeError("boom")
    names = [b.name for b in container["client"].list_blobs()]
    assert names == ["d/secret.bin"]  # staged blocks were never committed


def test_pandas_parquet_on_abfs(container: dict[str, Any]) -> None:
    df = pd.DataFrame({"id": range(500), "name": [f"n{i}" for i in range(500)]})
    url = f"envcrypt::abfs://{container['name']}/t.parquet"
    df.to_parquet(url, storage_options=container["options"])
    pd.testing.assert_frame_equal(pd.read_parquet(url, storage_options=container["options"]), df)
    raw = container["client"].download_blob("t.parquet").readall()
    assert raw[:8] == b"ENVCRYPT" and b"PAR1" not in raw[:64]
