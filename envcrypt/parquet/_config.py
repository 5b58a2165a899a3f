"""The plain, picklable PME configuration: one dict (or :class:`PmeConfig`) for writers and readers.

Every process (a dask worker, a thread pool, the CLI) builds pyarrow's
CryptoFactory, EncryptionConfiguration and DecryptionConfiguration from it;
the pyarrow objects themselves never travel (they do not pickle).  Nothing in
it is a secret: key URIs, column names, flags, resolver options that name
things (a vault directory, an endpoint).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import EnvcryptError
from ..keys.base import split_key_uri
from ..slots import key_name, trusted_key_list

__all__ = ["PmeConfig", "PmeConfigError", "ConfigArg"]

ALGORITHMS = ("AES_GCM_V1", "AES_GCM_CTR_V1")
KEY_LENGTHS = (128, 192, 256)


class PmeConfigError(EnvcryptError, ValueError):
    """A PME configuration that cannot be meant as given (an unknown field, a wrong type,
    a column under two keys, an option the chosen route cannot honour).  A ValueError too."""


@dataclass(frozen=True)
class PmeConfig:
    """Parquet modular encryption with envcrypt master keys.

    ``footer_key`` and the keys of ``column_keys`` are envcrypt key URIs
    (``local:NAME``, ``aws-kms://alias/x``, ...): they are the PME master key ids.
    A reader trusts ``trusted_keys``, by default the master keys named here
    (any version): a file whose key material names another key is refused.
    """

    footer_key: str | None = None
    column_keys: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    plaintext_footer: bool = False
    double_wrapping: bool = True
    internal_key_material: bool = True
    uniform_encryption: bool = False
    cache_lifetime: float = 600.0
    data_key_length_bits: int = 256
    encryption_algorithm: str = "AES_GCM_V1"
    trusted_keys: tuple[str, ...] | None = None
    encryption_context: Mapping[str, str] = field(default_factory=dict)
    resolver_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.footer_key is not None:
            _check_uri(self.footer_key, "footer_key")
        if not isinstance(self.column_keys, Mapping):
            raise PmeConfigError("column_keys is a mapping {key URI: [column, ...]}")
        seen: dict[str, str] = {}
        normalized: dict[str, tuple[str, ...]] = {}
        for uri, columns in self.column_keys.items():
            _check_uri(uri, "a column_keys key")
            if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns:
                raise PmeConfigError(f"column_keys[{uri!r}] is a non-empty list of column names")
            for column in columns:
                if not isinstance(column, str) or not column:
                    raise PmeConfigError(f"column_keys[{uri!r}] holds a column name that is not a str")
                if column in seen:
                    raise PmeConfigError(f"column {column!r} is under two keys: {seen[column]} and {uri}")
                seen[column] = uri
            normalized[uri] = tuple(columns)
        object.__setattr__(self, "column_keys", normalized)
        for name in ("plaintext_footer", "double_wrapping", "internal_key_material", "uniform_encryption"):
            if not isinstance(getattr(self, name), bool):
                raise PmeConfigError(f"{name} is True or False")
        if isinstance(self.cache_lifetime, bool) or not isinstance(self.cache_lifetime, (int, float)) \
                or self.cache_lifetime <= 0:
            raise PmeConfigError("cache_lifetime is a positive number of seconds")
        if self.data_key_length_bits not in KEY_LENGTHS:
            raise PmeConfigError(f"data_key_length_bits is one of {KEY_LENGTHS}")
        if self.encryption_algorithm not in ALGORITHMS:
            raise PmeConfigError(f"encryption_algorithm is one of {ALGORITHMS}")
        if self.uniform_encryption and self.column_keys:
            raise PmeConfigError("uniform_encryption encrypts every column with the footer key: no column_keys")
        if self.trusted_keys is not None:
            object.__setattr__(self, "trusted_keys", trusted_key_list(self.trusted_keys))
        for name in ("encryption_context", "resolver_options"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise PmeConfigError(f"{name} is a mapping")
            object.__setattr__(self, name, dict(value))
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.encryption_context.items()):
            raise PmeConfigError("encryption_context maps str to str")

    @classmethod
    def from_any(cls, config: ConfigArg) -> PmeConfig:
        """A config from a :class:`PmeConfig` or a plain dict (unknown fields are refused)."""
        if isinstance(config, PmeConfig):
            return config
        if not isinstance(config, Mapping):
            raise PmeConfigError(f"a PME configuration is a dict or a PmeConfig, not {type(config).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise PmeConfigError(f"unknown PME configuration field(s): {', '.join(map(str, unknown))}")
        return cls(**dict(config))

    def to_dict(self) -> dict[str, Any]:
        """The plain dict this config came from (JSON-able when its resolver options are)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["column_keys"] = {k: list(v) for k, v in self.column_keys.items()}
        out["trusted_keys"] = list(self.trusted_keys) if self.trusted_keys is not None else None
        out["encryption_context"] = dict(self.encryption_context)
        out["resolver_options"] = dict(self.resolver_options)
        return out

    def cache_key(self) -> str:
        """A canonical text of the whole config (the per-process cache of pyarrow objects)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def master_keys(self) -> tuple[str, ...]:
        """The master keys this config names (footer key first)."""
        keys = ([self.footer_key] if self.footer_key else []) + list(self.column_keys)
        return tuple(dict.fromkeys(keys))

    def trusted(self) -> tuple[str, ...]:
        """The keys a reader trusts: ``trusted_keys``, else the master keys named here (any version)."""
        return trusted_key_list(self.trusted_keys, [key_name(k) for k in self.master_keys()])

    def require_footer_key(self) -> str:
        if not self.footer_key:
            raise PmeConfigError("writing needs a footer_key")
        return self.footer_key


ConfigArg = PmeConfig | Mapping[str, Any]


def _check_uri(uri: Any, what: str) -> None:
    if not isinstance(uri, str):
        raise PmeConfigError(f"{what} is a key URI (str), not {type(uri).__name__}")
    split_key_uri(uri)  # InvalidKeyUriError for a malformed one
