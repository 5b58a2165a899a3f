"""dask: each task builds pyarrow's PME objects from the picklable config, in its own process.

PME objects (CryptoFactory, configurations, file properties) do not pickle, so
``dd.to_parquet(..., encryption_properties=...)`` cannot reach a worker.  Here
the plain config dict travels with each task; the worker's first task builds
its CryptoFactory (cached per process, with PME's key caches in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from ._config import ConfigArg, PmeConfig
from ._io import Where, resolve

__all__ = ["dask_to_parquet", "dask_read_parquet"]


def _write_part(df: Any, path: str, config: dict[str, Any], fs: pafs.FileSystem, index: bool,
                kwargs: dict[str, Any]) -> str:
    from . import write_table

    write_table(pa.Table.from_pandas(df, preserve_index=index), path, config, fs, **kwargs)
    return path


def _read_part(path: str, config: dict[str, Any], columns: list[str] | None, fs: pafs.FileSystem) -> Any:
    from . import read_table

    return read_table(path, config, columns, fs).to_pandas()


def dask_to_parquet(ddf: Any, path: Where, encryption: ConfigArg, filesystem: Any = None, *,
                    write_index: bool = False, compute: bool = True, **kwargs: Any) -> Any:
    """Write each partition of a dask DataFrame as ``path/part.N.parquet``, PME-encrypted in the
    task that computes it (on the workers of a distributed cluster).  Returns the file paths
    (``compute=False``: the list of delayed writes)."""
    from dask.base import compute as dask_compute
    from dask.delayed import delayed

    cfg = PmeConfig.from_any(encryption)
    cfg.require_footer_key()
    fs, base = resolve(path, filesystem)
    fs.create_dir(base, recursive=True)
    plain = cfg.to_dict()
    writes = [delayed(_write_part)(part, f"{base}/part.{i}.parquet", plain, fs, write_index, kwargs)
              for i, part in enumerate(ddf.to_delayed())]
    if not compute:
        return writes
    return list(dask_compute(*writes))  # type: ignore[no-untyped-call]


def parquet_files(fs: pafs.FileSystem, base: str) -> list[str]:
    """The data files under ``base`` (``*.parquet``, no ``_``/``.`` names), sorted."""
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return sorted(i.path for i in infos if i.is_file and i.base_name.endswith(".parquet")
                  and not i.base_name.startswith(("_", ".")))


def dask_read_parquet(path: Where, decryption: ConfigArg, columns: Sequence[str] | None = None,
                      filesystem: Any = None) -> Any:
    """A dask DataFrame over the PME files under ``path``, one partition per file, each read
    (checked, decrypted, trust applied) in the task that loads it."""
    import dask.dataframe as dd

    from . import read_schema

    cfg = PmeConfig.from_any(decryption)
    fs, base = resolve(path, filesystem)
    files = parquet_files(fs, base)
    if not files:
        raise FileNotFoundError(f"no Parquet files under {base}")
    schema = read_schema(files[0], cfg, fs)
    cols = list(columns) if columns is not None else None
    meta = schema.empty_table().to_pandas()
    if cols is not None:
        meta = meta[cols]
    return dd.from_map(  # type: ignore[no-untyped-call]
        _read_part, files, config=cfg.to_dict(), columns=cols, fs=fs, meta=meta, enforce_metadata=False)
