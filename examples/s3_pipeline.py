"""An S3 pipeline against a local moto server: raw -> encrypted data lake -> report.

Run:  python examples/s3_pipeline.py            (starts moto on a free local port)
      python examples/s3_pipeline.py URL        (use a running S3-compatible endpoint)
Needs the ``aws`` and ``arrow`` extras and moto[server].
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile

import boto3
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

os.environ["ENVCRYPT_VAULT"] = os.path.join(tempfile.mkdtemp(prefix="envcrypt-s3-"), "vault")
for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}.items():
    os.environ.setdefault(name, value)

import fsspec  # noqa: E402


def local_moto() -> tuple[str, object]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return f"http://127.0.0.1:{port}", server


endpoint, server = (sys.argv[1], None) if len(sys.argv) > 1 else local_moto()
s3 = boto3.client("s3", endpoint_url=endpoint)
s3.create_bucket(Bucket="lake")
so = {"s3": {"client_kwargs": {"endpoint_url": endpoint}}}

# 1. ingest: a plain CSV lands in the raw zone; we write it encrypted into the lake
orders = pd.DataFrame({"order": range(5000), "country": ["FR", "DE", "NL", "US"] * 1250,
                       "email": [f"c{i}@example.com" for i in range(5000)], "total": [i % 97 for i in range(5000)]})
orders.to_csv("envcrypt::s3://lake/raw/orders.csv", index=False, storage_options=so)

# 2. transform: a partitioned Parquet dataset, every file encrypted
fs, _ = fsspec.core.url_to_fs("envcrypt::s3://lake", **so)
frame = pd.read_csv("envcrypt::s3://lake/raw/orders.csv", storage_options=so)
table = pa.Table.from_pandas(frame, preserve_index=False)
pq.write_to_dataset(table, "lake/curated/orders", partition_cols=["country"], filesystem=fs)

# 3. report: read one partition, one column
dataset = ds.dataset("lake/curated/orders", filesystem=fs, format="parquet", partitioning="hive")
fr = dataset.to_table(columns=["total"], filter=ds.field("country") == "FR")
print(f"FR orders: {fr.num_rows}, revenue {sum(fr.column('total').to_pylist())}")

# what S3 holds is ciphertext; what the filesystem reports is plaintext sizes
for obj in s3.list_objects_v2(Bucket="lake")["Contents"]:
    raw = s3.get_object(Bucket="lake", Key=obj["Key"])["Body"].read()
    assert raw.startswith(b"ENVCRYPT") and b"@example.com" not in raw
    print(f"{obj['Key']:50} stored {obj['Size']:>8,}  plaintext {fs.info('lake/' + obj['Key'])['size']:>8,}")
if server is not None:
    server.stop()  # type: ignore[attr-defined]
print("ok")
