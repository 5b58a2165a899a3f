"""Parquet modular encryption (PME) with envcrypt master keys.

pyarrow does the encryption (its PME implementation: AES-GCM / AES-GCM-CTR
column and footer encryption, data keys, double wrapping, key material); this
module only bridges PME's key wrapping to envcrypt's key resolvers, so that
``local:`` vault keys, ``aws-kms://`` keys and any registered resolver serve as
PME master keys, under envcrypt's trust rule.

The configuration is a plain dict (or :class:`PmeConfig`), picklable, with no
secret in it; each process builds the pyarrow objects from it::

    cfg = {"footer_key": "local:footer", "column_keys": {"local:pii": ["ssn", "email"]}}
    envcrypt.parquet.write_table(table, "x.parquet", encryption=cfg)
    envcrypt.parquet.read_table("x.parquet", decryption=cfg, columns=["id", "ssn"])

**A reader accepts only what a trusted key wrote**: a read with ``decryption=``
trusts ``trusted_keys`` (default: the master keys the config names, any
version).  A file whose key material names another key is refused
(``UntrustedKeyError``, before any resolver is called), and so is a file that
is not PME-encrypted at all (``NotEncryptedError``: pyarrow itself would read a
plaintext file substituted for an encrypted one).  Tampered pages and footers
give ``IntegrityError``; a wrong key ``WrongKeyError``; never a bare OSError.

What PME does not protect: the pages of *plaintext* columns are not
authenticated (a storage writer can change them undetected); with a plaintext
footer, a reader without keys checks nothing.  The whole-object envelope
(``envcrypt::`` filesystem) protects every byte; see the README for when to
use which.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

from ._config import ConfigArg, PmeConfig, PmeConfigError
from ._io import Where, arrow_errors, require_pme, resolve
from ._kms import (
    EnvcryptKmsClient,
    clear_factories,
    connection_config,
    crypto_factory,
    decode_wrapped,
    decryption_configuration,
    encode_wrapped,
    encryption_configuration,
)

__all__ = [
    "PmeConfig", "PmeConfigError", "EnvcryptKmsClient",
    "write_table", "read_table", "read_schema", "write_pandas", "read_pandas",
    "encryption_properties", "decryption_properties",
    "write_dataset", "dataset", "read_dataset", "encryption_config", "decryption_config",
    "inspect", "rotate", "dask_to_parquet", "dask_read_parquet",
    "encode_wrapped", "decode_wrapped", "clear_factories",
]


def encryption_properties(encryption: ConfigArg, path: str | None = None,
                          filesystem: Any = None) -> pe.FileEncryptionProperties:
    """pyarrow ``FileEncryptionProperties`` for one file (``pq.write_table(...,
    encryption_properties=...)``, pandas ``df.to_parquet(..., encryption_properties=...)``).
    ``path`` (and ``filesystem``) only for external key material."""
    cfg = PmeConfig.from_any(encryption)
    factory, kms = crypto_factory(cfg), connection_config()
    if cfg.internal_key_material:
        return factory.file_encryption_properties(kms, encryption_configuration(cfg))
    if path is None:
        raise PmeConfigError("external key material (internal_key_material=False) needs the file's path")
    fs, where = resolve(path, filesystem)
    return factory.file_encryption_properties(kms, encryption_configuration(cfg), where, fs)


def decryption_properties(decryption: ConfigArg, path: str | None = None,
                          filesystem: Any = None) -> pe.FileDecryptionProperties:
    """pyarrow ``FileDecryptionProperties`` (``pq.read_table(..., decryption_properties=...)``).

    The trust rule holds here too (it lives in the KMS client); the check that the file is
    PME-encrypted at all is :func:`read_table`'s, so prefer it for reads."""
    cfg = PmeConfig.from_any(decryption)
    factory, kms = crypto_factory(cfg), connection_config()
    if path is None:
        return factory.file_decryption_properties(kms, decryption_configuration(cfg))
    fs, where = resolve(path, filesystem)
    return factory.file_decryption_properties(kms, decryption_configuration(cfg), where, fs)


def write_table(table: Any, where: Where, encryption: ConfigArg, filesystem: Any = None,
                **kwargs: Any) -> None:
    """Write ``table`` (a pyarrow Table, or a pandas DataFrame) as one PME-encrypted Parquet file.

    ``kwargs`` go to ``pyarrow.parquet.write_table`` (compression, row_group_size, ...)."""
    cfg = PmeConfig.from_any(encryption)
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=kwargs.pop("preserve_index", None))
    fs, path = resolve(where, filesystem)
    with arrow_errors(path):
        factory, kms = crypto_factory(cfg), connection_config()
        if cfg.internal_key_material:
            props = factory.file_encryption_properties(kms, encryption_configuration(cfg))
        else:
            props = factory.file_encryption_properties(kms, encryption_configuration(cfg), path, fs)
        pq.write_table(table, path, filesystem=fs, encryption_properties=props, **kwargs)


def read_table(where: Where, decryption: ConfigArg | None = None, columns: Sequence[str] | None = None,
               filesystem: Any = None, **kwargs: Any) -> pa.Table:
    """Read a Parquet file; with ``decryption=`` it must be PME-encrypted under trusted keys.

    Without ``decryption`` only the plaintext columns of a plaintext-footer PME file (or a
    plain file) can be read (``UntrustedKeyError`` for an encrypted column or footer)."""
    fs, path = resolve(where, filesystem)
    with arrow_errors(path):
        if decryption is None:
            return pq.read_table(path, columns=columns, filesystem=fs, **kwargs)
        props = _checked_decryption(PmeConfig.from_any(decryption), fs, path)
        return pq.read_table(path, columns=columns, filesystem=fs, decryption_properties=props, **kwargs)


def read_schema(where: Where, decryption: ConfigArg | None = None, filesystem: Any = None) -> pa.Schema:
    """The Arrow schema of a Parquet file (checked and decrypted as :func:`read_table` does)."""
    fs, path = resolve(where, filesystem)
    with arrow_errors(path):
        props = None if decryption is None else _checked_decryption(PmeConfig.from_any(decryption), fs, path)
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f, decryption_properties=props).schema_arrow


def _checked_decryption(cfg: PmeConfig, fs: Any, path: str) -> pe.FileDecryptionProperties:
    cfg.trusted()  # a reader trusts at least one key: said before any I/O
    require_pme(fs, path)
    factory, kms = crypto_factory(cfg), connection_config()
    return factory.file_decryption_properties(kms, decryption_configuration(cfg), path, fs)


def write_pandas(df: Any, where: Where, encryption: ConfigArg, filesystem: Any = None,
                 index: bool | None = None, **kwargs: Any) -> None:
    """``df.to_parquet`` with PME: ``write_pandas(df, "x.parquet", encryption=cfg)``."""
    write_table(pa.Table.from_pandas(df, preserve_index=index), where, encryption, filesystem, **kwargs)


def read_pandas(where: Where, decryption: ConfigArg | None = None, columns: Sequence[str] | None = None,
                filesystem: Any = None, **kwargs: Any) -> Any:
    """``pd.read_parquet`` with PME (a pandas DataFrame)."""
    return read_table(where, decryption, columns, filesystem, **kwargs).to_pandas()


# ------------------------------------------------------------------ pyarrow.dataset


def _dataset_only_internal(cfg: PmeConfig) -> None:
    if not cfg.internal_key_material:
        raise PmeConfigError(
            "pyarrow.dataset reads PME files only with internal key material; use write_table / "
            "dask_to_parquet (one file each) for external key material")


def encryption_config(encryption: ConfigArg) -> ds.ParquetEncryptionConfig:
    """A ``pyarrow.dataset.ParquetEncryptionConfig`` for ``ParquetFileFormat().make_write_options``."""
    cfg = PmeConfig.from_any(encryption)
    _dataset_only_internal(cfg)
    return ds.ParquetEncryptionConfig(crypto_factory(cfg), connection_config(), encryption_configuration(cfg))


def decryption_config(decryption: ConfigArg) -> ds.ParquetDecryptionConfig:
    """A ``pyarrow.dataset.ParquetDecryptionConfig`` for ``ParquetFragmentScanOptions``."""
    cfg = PmeConfig.from_any(decryption)
    return ds.ParquetDecryptionConfig(crypto_factory(cfg), connection_config(), decryption_configuration(cfg))


def write_dataset(data: Any, base_dir: Where, encryption: ConfigArg, filesystem: Any = None,
                  **kwargs: Any) -> None:
    """``pyarrow.dataset.write_dataset`` of PME files (``partitioning=`` etc. in ``kwargs``)."""
    fs, path = resolve(base_dir, filesystem)
    options = ds.ParquetFileFormat().make_write_options(encryption_config=encryption_config(encryption))
    with arrow_errors(path):
        ds.write_dataset(data, path, format="parquet", file_options=options, filesystem=fs, **kwargs)


def dataset(source: Where, decryption: ConfigArg, filesystem: Any = None, *, verify: bool = True,
            **kwargs: Any) -> ds.Dataset:
    """``pyarrow.dataset.dataset`` over PME files (``partitioning="hive"`` etc. in ``kwargs``).

    ``verify`` (default) reads each file's footer first and refuses a file that is not
    PME-encrypted (``NotEncryptedError``); the trust rule applies to every key unwrapped."""
    fs, path = resolve(source, filesystem)
    scan = ds.ParquetFragmentScanOptions(decryption_config=decryption_config(decryption))
    fmt = ds.ParquetFileFormat(default_fragment_scan_options=scan)
    with arrow_errors(path):
        result = ds.dataset(path, format=fmt, filesystem=fs, **kwargs)
        if verify:
            for file in result.files:
                require_pme(fs, file)
    return result


def read_dataset(source: Where, decryption: ConfigArg, columns: Sequence[str] | None = None,
                 filter: Any = None, filesystem: Any = None, **kwargs: Any) -> pa.Table:
    """A whole PME dataset as a table (typed envcrypt errors, as :func:`read_table`)."""
    d = dataset(source, decryption, filesystem, **kwargs)
    with arrow_errors(os.fspath(source)):
        return d.to_table(columns=list(columns) if columns is not None else None, filter=filter)


from ._dask import dask_read_parquet, dask_to_parquet  # noqa: E402
from ._inspect import inspect  # noqa: E402
from ._rotate import rotate  # noqa: E402
