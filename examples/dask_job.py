"""A dask job on a local cluster (2 worker processes) reading and writing encrypted Parquet.

Run:  python examples/dask_job.py
The workers receive the filesystem by pickle: key URIs and the vault path, never a key.
"""

from __future__ import annotations

import os
import tempfile

import pandas as pd

work = tempfile.mkdtemp(prefix="envcrypt-dask-")
vault = os.path.join(work, "vault")
os.environ["ENVCRYPT_VAULT"] = vault

import dask.dataframe as dd  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402


def main() -> None:
    so = {"envcrypt": {"resolver_options": {"vault": vault}}}
    events = pd.DataFrame({"user": [f"u{i % 50}" for i in range(20_000)], "ms": [i % 700 for i in range(20_000)]})
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster):
        dd.from_pandas(events, npartitions=4).to_parquet(f"envcrypt::file://{work}/events", storage_options=so)
        df = dd.read_parquet(f"envcrypt::file://{work}/events", storage_options=so)
        slowest = df.groupby("user")["ms"].mean().nlargest(3).compute()
        dd.from_pandas(slowest.reset_index(), npartitions=1).to_parquet(
            f"envcrypt::file://{work}/report", storage_options=so)
    print(slowest)
    for name in sorted(os.listdir(f"{work}/events")):
        with open(f"{work}/events/{name}", "rb") as f:
            assert f.read(8) == b"ENVCRYPT", name
    print(f"{len(os.listdir(f'{work}/events'))} encrypted part files in {work}/events")
    print("ok")


if __name__ == "__main__":  # LocalCluster starts processes: keep the guard
    main()
