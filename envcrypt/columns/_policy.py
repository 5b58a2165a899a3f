"""The column policy: plain, picklable data (key URIs, column key tokens, column lists, modes).

Every process (a dask worker, a thread, the CLI) opens keys from it itself; nothing in it is a
secret.  ``columns`` maps a column name to either a master key URI (``local:pii``: a fresh column
key is made for each ``encrypt_table`` call; randomized mode only) or a column key token
(``eck1....`` from :func:`envcrypt.columns.new_column_key`: the same column key for every file
and process, required for deterministic columns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import EnvcryptError
from ..keys.base import split_key_uri
from ..slots import key_name, trusted_key_list
from ._keys import TOKEN_PREFIX, blob_of, own_trust

__all__ = ["ColumnPolicy", "ColumnPolicyError", "PolicyArg"]


class ColumnPolicyError(EnvcryptError, ValueError):
    """A column policy that cannot be meant as given (an unknown column, a deterministic column
    without a stable column key, a column encrypted twice).  A ValueError too."""


@dataclass(frozen=True)
class ColumnPolicy:
    columns: Mapping[str, str] = field(default_factory=dict)
    deterministic: tuple[str, ...] = ()
    trusted_keys: tuple[str, ...] | None = None
    encryption_context: Mapping[str, str] = field(default_factory=dict)
    resolver_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.columns, Mapping):
            raise ColumnPolicyError("columns is a mapping {column name: key URI or column key token}")
        for name, spec in self.columns.items():
            if not isinstance(name, str) or not name or not isinstance(spec, str):
                raise ColumnPolicyError("columns maps column names to key URIs or column key tokens (str)")
            if spec.startswith(TOKEN_PREFIX):
                blob_of(spec)
            else:
                split_key_uri(spec)
        object.__setattr__(self, "columns", dict(self.columns))
        if isinstance(self.deterministic, str):
            raise ColumnPolicyError("deterministic is a list of column names")
        det = tuple(self.deterministic)
        for name in det:
            if name not in self.columns:
                raise ColumnPolicyError(f"deterministic column {name!r} is not in columns")
            if not self.columns[name].startswith(TOKEN_PREFIX):
                raise ColumnPolicyError(
                    f"deterministic column {name!r} needs a stable column key, so that equal values give "
                    "equal cells in every file and process: make one once with "
                    f"envcrypt.columns.new_column_key({self.columns[name]!r}) (or `envcrypt columns new-key`) "
                    "and name its token instead of the key URI")
        object.__setattr__(self, "deterministic", det)
        if self.trusted_keys is not None:
            object.__setattr__(self, "trusted_keys", trusted_key_list(self.trusted_keys))
        for name in ("encryption_context", "resolver_options"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ColumnPolicyError(f"{name} is a mapping")
            object.__setattr__(self, name, dict(value))

    @classmethod
    def from_any(cls, value: PolicyArg) -> ColumnPolicy:
        if isinstance(value, ColumnPolicy):
            return value
        if isinstance(value, Mapping) and "columns" in value and isinstance(value["columns"], Mapping):
            unknown = set(value) - {f for f in cls.__dataclass_fields__}
            if unknown:
                raise ColumnPolicyError(f"unknown column policy field(s): {', '.join(sorted(unknown))}")
            return cls(**value)
        if isinstance(value, Mapping):
            return cls(columns=value)
        raise ColumnPolicyError("a column policy is a ColumnPolicy, {'columns': {...}, ...} or {column: key}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (pickles, JSON-able when the resolver options are)."""
        out = asdict(self)
        out["columns"], out["deterministic"] = dict(self.columns), list(self.deterministic)
        return out

    def mode(self, column: str) -> str:
        return "deterministic" if column in self.deterministic else "randomized"

    def trusted(self) -> tuple[str, ...]:
        """What a reader with this policy trusts: ``trusted_keys``, else the master keys the policy
        names (any version), the slots' keys for a token."""
        if self.trusted_keys is not None:
            return self.trusted_keys
        names: list[str] = []
        for spec in self.columns.values():
            names += own_trust(blob_of(spec)) if spec.startswith(TOKEN_PREFIX) else [key_name(spec)]
        return trusted_key_list(names)


PolicyArg = ColumnPolicy | Mapping[str, Any]
