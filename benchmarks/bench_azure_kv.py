"""Azure Key Vault resolver benchmark: Key Vault requests and time for many small objects.

    .venv/bin/python benchmarks/bench_azure_kv.py [--objects 1000] [--repeat 3]

Starts the loopback Key Vault of the test suite (tests/azure_kv_server.py: HTTPS on
127.0.0.1, the bearer challenge, a managed-identity token, real RSA-OAEP-256) and drives
it through the real azure-keyvault-keys client: write N small objects under an
``azure-kv://`` RSA key and read them back, with and without the DEK cache, against the
same writes and reads under a ``local:`` vault key (no network) measured in the same run.
Key Vault requests are counted at the server.  Figures are medians of ``--repeat`` runs;
the loopback answers in well under a millisecond, so a real vault (tens of ms per request)
widens the gap the cache closes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envcrypt
from envcrypt.keys.base import clear_resolver_cache
from envcrypt.keys.cache import DekCache
from envcrypt.keys.vault import LocalVault
from tests.azure_kv_server import VAULT_HOST, LoopbackKeyVault


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-azure-kv-"))
    kv = LoopbackKeyVault(work).start()
    os.environ.update(IDENTITY_ENDPOINT=kv.url + "/msi/token", IDENTITY_HEADER=kv.identity_header,
                      REQUESTS_CA_BUNDLE=str(kv.cert_path), ENVCRYPT_VAULT=str(work / "vault"))
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        os.environ.pop(name, None)
    LocalVault().create_key("bench")
    kv.create_key("bench")
    opts: dict[str, Any] = {"azure_kv_endpoints": {VAULT_HOST: kv.url}}
    azure_key = f"azure-kv://{VAULT_HOST}/keys/bench"
    payloads = [b"row %08d," % i * 8 for i in range(args.objects)]
    rows = []
    for label, key, cache in (("local:bench, no cache", "local:bench", False),
                              ("azure-kv, DEK cache", azure_key, True),
                              ("azure-kv, no cache", azure_key, False)):
        writes, reads, requests = [], [], []
        for _ in range(args.repeat):
            clear_resolver_cache()
            setting: Any = DekCache() if cache else False
            before = len(kv.api_calls())
            start = time.perf_counter()
            blobs = [envcrypt.encrypt(p, key, dek_cache=setting, **opts) for p in payloads]
            writes.append(time.perf_counter() - start)
            start = time.perf_counter()
            for blob in blobs:
                envcrypt.decrypt(blob, trusted_keys=key, dek_cache=setting, **opts)
            reads.append(time.perf_counter() - start)
            requests.append(len(kv.api_calls()) - before)
        rows.append((label, statistics.median(writes), statistics.median(reads), statistics.median(requests)))
    kv.stop()
    base_w, base_r = rows[0][1], rows[0][2]
    print(f"{args.objects} objects, median of {args.repeat}")
    print(f"{'configuration':24} {'write s':>8} {'x local':>8} {'read s':>8} {'x local':>8} {'KV requests':>12}")
    for label, w, r, n in rows:
        print(f"{label:24} {w:8.3f} {w / base_w:8.2f} {r:8.3f} {r / base_r:8.2f} {n:12.0f}")


if __name__ == "__main__":
    main()
