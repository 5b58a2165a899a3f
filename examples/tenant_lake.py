"""A per-tenant data lake: one key per tenant by prefix, a key rotation, and crypto-shredding.

Run:  python examples/tenant_lake.py
1. writes go to tenants/<name>/ encrypted under that tenant's key (key_policy);
2. tenant "acme" rotates: only key slots are rewritten, bodies stay byte-identical;
3. tenant "globex" leaves: purging its key makes all of its data unreadable at once,
   while the other tenants' data is untouched.
"""

from __future__ import annotations

import os
import tempfile

work = tempfile.mkdtemp(prefix="envcrypt-tenants-")
os.environ["ENVCRYPT_VAULT"] = os.path.join(work, "vault")

import fsspec  # noqa: E402
import pandas as pd  # noqa: E402

from envcrypt import EnvcryptError, inspect  # noqa: E402
from envcrypt.fs import trees  # noqa: E402
from envcrypt.keys.vault import LocalVault  # noqa: E402

vault = LocalVault()
for tenant in ("acme", "globex"):
    vault.create_key(tenant)
lake = f"envcrypt::file://{work}/lake"
# on local disks policy prefixes are anchored at "/": name them as URLs (or absolute paths);
# on an object store "tenants/acme/" would be anchored at the bucket
policy = {f"file://{work}/lake/tenants/acme/": "local:acme", f"file://{work}/lake/tenants/globex/": "local:globex",
          "": "local:default"}
so = {"envcrypt": {"key_policy": policy}}
fs, root = fsspec.core.url_to_fs(lake, **so)
fs.makedirs(f"{root}/tenants/acme", exist_ok=True)
fs.makedirs(f"{root}/tenants/globex", exist_ok=True)

for tenant in ("acme", "globex"):
    sales = pd.DataFrame({"sku": range(100), "qty": [i % 7 for i in range(100)], "tenant": tenant})
    sales.to_parquet(f"{lake}/tenants/{tenant}/sales.parquet", storage_options=so)


def slots(rel: str) -> list[str]:
    with open(f"{work}/lake/{rel}", "rb") as f:
        return inspect(f).key_uris


print("acme   ", slots("tenants/acme/sales.parquet"))
print("globex ", slots("tenants/globex/sales.parquet"))

# rotation: a new version of acme's key, then rewrap the prefix (key slots only)
new_version = vault.rotate_key("acme")
before = open(f"{work}/lake/tenants/acme/sales.parquet", "rb").read()
report = trees.rewrap(f"{lake}/tenants/acme", new_version, recursive=True, progress=False)
after = open(f"{work}/lake/tenants/acme/sales.parquet", "rb").read()
old_h, new_h = inspect(before).header_size, inspect(after).header_size
assert before[old_h:] == after[new_h:], "bodies are copied byte for byte"
print(f"rotated acme to {new_version}: {len(report.done)} object(s) rewrapped, bodies untouched")

# crypto-shredding: globex leaves; purge its key
vault.delete_key("globex")
vault.purge_key("globex")
try:
    pd.read_parquet(f"{lake}/tenants/globex/sales.parquet", storage_options=so)
except EnvcryptError as exc:
    print(f"globex data after the purge: {type(exc).__name__} (shredded)")
else:
    raise SystemExit("globex data should be unreadable")
acme = pd.read_parquet(f"{lake}/tenants/acme/sales.parquet", storage_options=so)
print(f"acme still reads {len(acme)} rows")
print("ok")
