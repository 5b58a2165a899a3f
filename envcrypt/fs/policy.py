"""Key policy: which master key(s) new writes under a path use, by longest prefix.

``KeyPolicy({"tenants/a/": "local:tenant-a", "": "local:default"})`` gives the
objects written under ``tenants/a/`` their own key, so purging that key
crypto-shreds exactly that tenant's data.  A prefix ending in ``/`` matches
whole path segments only (``tenants/a/`` never matches ``tenants/ab``).

Prefixes are *anchored*, never matched somewhere inside a path (else
``/lake/tenants/b/uploads/tenants/a/x`` would get tenant a's key):

- a relative prefix (``tenants/a/``) is matched from the bucket (container)
  of an object store (``lake/tenants/a/x`` on ``s3://lake``), and from the
  root of the filesystem on local disks and in memory (so there it must name
  the whole path: ``srv/lake/tenants/a/``);
- an absolute prefix (``/srv/lake/tenants/a/``) or a URL
  (``s3://lake/tenants/a/``, ``file:///srv/lake/tenants/a/``, stripped by the
  target first) is matched against the whole target path.

The anchor never depends on the URL a filesystem was made from, so an object
gets the same key through ``envcrypt::s3://lake`` and through
``envcrypt::s3://lake/tenants/a/f.csv`` (pandas' per-file URLs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..errors import UnsafePathError
from ..keys.base import split_key_uri

__all__ = ["KeyPolicy", "KeyChoice", "check_segments"]

KeyChoice = str | Sequence[str]


class KeyPolicy:
    """An immutable prefix -> key URI(s) table; ``for_path`` picks the longest matching prefix."""

    def __init__(self, rules: Mapping[str, KeyChoice] | None = None, default: KeyChoice | None = None) -> None:
        table: dict[str, KeyChoice] = {}
        for prefix, choice in (rules or {}).items():
            if not isinstance(prefix, str):
                raise TypeError("key_policy prefixes are str")
            uris = [choice] if isinstance(choice, str) else list(choice)
            if not uris:
                raise ValueError(f"key_policy entry {prefix!r} names no key")
            for uri in uris:
                split_key_uri(uri)
            table[prefix] = choice if isinstance(choice, str) else tuple(uris)
        if default is not None and "" not in table:
            table[""] = default
        self.rules = table

    def __repr__(self) -> str:
        return f"KeyPolicy({self.rules!r})"

    def as_dict(self) -> dict[str, KeyChoice]:
        return {k: (v if isinstance(v, str) else list(v)) for k, v in self.rules.items()}

    def for_path(self, path: str, normalize: Callable[[str], str] = lambda p: p, anchor: str = "") -> KeyChoice | None:
        """The key URI(s) for a new object at ``path``; None when no rule applies.

        Relative prefixes are matched against ``path`` relative to ``anchor``
        (a directory of the target that ``path`` lies under; ``""`` is the
        target's root), absolute ones and URLs against the whole ``path``; the
        longest matching prefix wins, and ``""`` matches everything.
        """
        relative = _relative(path, anchor)
        best: tuple[int, KeyChoice] | None = None
        for prefix, choice in self.rules.items():
            if prefix == "":
                if best is None:
                    best = (0, choice)
                continue
            if "://" in prefix or prefix.startswith("/"):
                matched = _starts(path, _norm(prefix, normalize))
            else:
                matched = relative is not None and relative.startswith(prefix)
            if matched and (best is None or len(prefix) > best[0]):
                best = (len(prefix), choice)
        return None if best is None else best[1]


def _relative(path: str, anchor: str) -> str | None:
    """``path`` below ``anchor`` (no leading ``/``); None when it does not lie under it."""
    anchor = anchor.rstrip("/")
    if not anchor:
        return path.lstrip("/")
    if path.startswith(anchor + "/"):
        return path[len(anchor) + 1 :]
    return None


def _norm(prefix: str, normalize: Callable[[str], str]) -> str:
    if "://" not in prefix:
        return prefix
    stripped = normalize(prefix)
    return stripped.rstrip("/") + "/" if prefix.endswith("/") else stripped


def _starts(path: str, prefix: str) -> bool:
    """``path`` begins with ``prefix``, both taken from the target's root."""
    return path.lstrip("/").startswith(prefix.lstrip("/"))


def check_segments(path: str) -> None:
    """UnsafePathError for a path with ``.``, ``..`` or empty segments (leading and trailing
    ``/`` aside): as text it lies under one prefix, on the storage under another."""
    inner = path.strip("/")
    if "://" in inner:
        inner = inner.split("://", 1)[1]
    if any(seg in ("", ".", "..") for seg in inner.split("/")) and inner:
        raise UnsafePathError(f"refusing a path with '.', '..' or empty segments under a key policy: {path!r}")
