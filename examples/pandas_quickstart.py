"""pandas quick start: put ``envcrypt::`` in front of a path and the file is encrypted at rest.

Run:  python examples/pandas_quickstart.py
Uses a throwaway vault and directory (delete nothing of yours).
"""

from __future__ import annotations

import os
import tempfile

import pandas as pd

work = tempfile.mkdtemp(prefix="envcrypt-quickstart-")
os.environ["ENVCRYPT_VAULT"] = os.path.join(work, "vault")  # a throwaway local vault

import fsspec  # noqa: E402  (after the vault is chosen)

df = pd.DataFrame({
    "customer": [f"user{i}@example.com" for i in range(1000)],
    "card_last4": [f"{i % 10000:04d}" for i in range(1000)],
    "amount_eur": [round(i * 1.37, 2) for i in range(1000)],
})

csv_url = f"envcrypt::file://{work}/customers.csv"
parquet_url = f"envcrypt::file://{work}/customers.parquet"
df.to_csv(csv_url, index=False)
df.to_parquet(parquet_url)

back = pd.read_csv(csv_url, dtype={"card_last4": str})
assert back.equals(df), "CSV round trip"
assert pd.read_parquet(parquet_url, columns=["amount_eur"])["amount_eur"].equals(df["amount_eur"])

stored = open(f"{work}/customers.csv", "rb").read()
assert stored.startswith(b"ENVCRYPT") and b"@example.com" not in stored
fs, path = fsspec.core.url_to_fs(csv_url)
info = fs.info(path)
print(f"customers.csv  plaintext {info['size']:,} bytes, stored {info['stored_size']:,} bytes (ciphertext)")
print(f"first stored bytes: {stored[:24]!r}...")
print(f"read back {len(back)} rows; parquet column read ok")
print("ok")
