"""Key policy: which master key(s) new writes under a path use, by longest prefix.

``KeyPolicy({"tenants/a/": "local:tenant-a", "": "local:default"})`` gives the
objects written under ``tenants/a/`` their own key, so purging that key
crypto-shreds exactly that tenant's data.  A prefix ending in ``/`` matches
whole path segments only (``tenants/a/`` never matches ``tenants/ab``).
A prefix matches at any directory boundary of a path as the target sees it
(``tenants/a/`` matches ``bucket/tenants/a/x`` and ``/data/lake/tenants/a/x``);
a prefix written as a URL (``s3://lake/tenants/a/``) is stripped by the target
first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ..keys.base import split_key_uri

__all__ = ["KeyPolicy", "KeyChoice"]

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

    def for_path(self, path: str, normalize: Callable[[str], str] = lambda p: p) -> KeyChoice | None:
        """The key URI(s) for a new object at ``path``; None when no rule applies.

        A prefix matches at any directory boundary of the path (``tenants/a/``
        matches ``bucket/tenants/a/x`` and ``/data/lake/tenants/a/x``); the
        longest matching prefix wins, and ``""`` matches everything.
        """
        target = "/" + path.lstrip("/")
        best: tuple[int, KeyChoice] | None = None
        for prefix, choice in self.rules.items():
            if prefix == "":
                if best is None:
                    best = (0, choice)
                continue
            forms = {prefix, _norm(prefix, normalize)}
            if any(_matches(target, form) for form in forms) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), choice)
        return None if best is None else best[1]


def _norm(prefix: str, normalize: Callable[[str], str]) -> str:
    if "://" not in prefix:
        return prefix
    stripped = normalize(prefix)
    return stripped.rstrip("/") + "/" if prefix.endswith("/") else stripped


def _matches(path: str, prefix: str) -> bool:
    """``prefix`` starts at a directory boundary of ``path`` (which begins with ``/``)."""
    return "/" + prefix.lstrip("/") in path
