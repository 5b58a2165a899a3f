"""``EnvcryptFileSystem``: the ``envcrypt::`` fsspec protocol, transparent encryption at rest.

Put ``envcrypt::`` in front of any fsspec URL (``envcrypt::s3://b/k``,
``envcrypt::file:///d/f``, ``envcrypt::memory://x``, ``envcrypt::abfs://c/p``)
and every object written through it is an envcrypt object; every object read
is decrypted.  Options are keyed by protocol as fsspec does::

    storage_options={"envcrypt": {"key_uri": "local:team"}, "s3": {"anon": False}}

Options of the envcrypt layer (none is a secret; all are pickled):

``key_uri``            key URI(s) for new writes (default ``$ENVCRYPT_KEY_URI`` / ``local:default``)
``key_policy``         ``{prefix: key URI(s)}``, the longest prefix wins over ``key_uri``
``trusted_keys``       further key URIs readers accept (a reader of several tenants names them);
                       an object is always read through a slot naming a trusted key: by default
                       the key new writes at its path would use (``key_policy`` for that path,
                       else ``key_uri``, else the default key), any version of it
``encryption_context`` authenticated context for new writes (and required on reads)
``plaintext``          ``"error"`` (default: reading a non-envcrypt object raises
                       NotEncryptedError) or ``"allow"`` (read it as it is)
``resolver_options``   options of the key resolvers (``{"vault": "/path"}``, ...)
``pickle_credentials`` keep every target option when pickled or serialized (default False: only an
                       allowlist of harmless options travels, such as endpoint_url, region_name, anon;
                       workers use their own environment's credentials)
``spool``              writers for clients that seek back while writing (h5py, netCDF-4): None (default,
                       "auto": a writer that seeks, reads or truncates before its first MiB is spooled),
                       True (always spool), False (always stream); ``fs.open(p, "wb", spool=True)`` per file.
                       A spool is a private local temp file of plaintext (0600), sealed and published
                       through the same atomic sink on close, removed afterwards
``auto_mkdir``         writes on a local target create missing parent directories (default True, as on
                       object stores, where directories need no creating: zarr and dask expect it)

Paths are the target's paths.  Sizes in ``info``/``ls``/``find``/``du`` are exact
plaintext sizes computed from each object's header length and stored size;
``stored_size``, ``header_size`` and ``encrypted`` are reported alongside.  An
envcrypt object that cannot be read does not fail a listing or ``info``: its
entry carries ``"error"`` (the class name a read raises: ``MalformedHeaderError``
for an object cut off inside its header, ``IntegrityError`` for an impossible
body length) and its stored size; reading it raises that error.

What a read costs: an object is opened once per version seen.  Its head comes
from the head cache (``_heads``) when the target reports the same version, and
its key work (trust check, unwrap, key commitment) from the read-side DEK cache
(``_opened``; on by default for every resolver, ``ENVCRYPT_DEK_CACHE=0`` or the
resolver option ``dek_cache=False`` turn it off): a reopened object costs the
requests a plain open costs and no resolver call.  ``cat_file`` of a whole
object is one read of the target, header included; ``cat_file`` ranges and
``cat_ranges`` fetch only the sealed chunks of the ranges, those of many ranges
together (``_ranges``); on S3 an object whose head this process has cached is
read with no HEAD request, each GET pinned to that head's ETag (``If-Match``: a
replaced object answers 412 and is read again from a fresh head), so a ranged
read costs the GETs plain s3fs makes.  A listing fetches the heads it lacks concurrently
(``HEAD_CONCURRENCY`` in flight on async targets; S3 targets built here get a
connection pool that large, ``S3_POOL_CONNECTIONS``).
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fsspec
import fsspec.asyn
from fsspec.callbacks import DEFAULT_CALLBACK
from fsspec.implementations.chained import ChainedFileSystem
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.utils import isfilelike

from ..envelope import new_stream_header, normalize_key_uris
from ..errors import IntegrityError, NotEncryptedError, ObjectExistsError
from ..slots import key_name, trusted_key_list
from ..streams import EncryptingWriter
from ._backend import object_changed
from ._files import EnvcryptReadFile, EnvcryptWriteFile
from ._heads import (
    HEAD_CONCURRENCY,
    HEADS,
    Head,
    cached,
    fetch_heads,
    fs_token,
    local_info,
    memory_head,
)
from ._opened import Opened, open_head
from ._ranges import cat_range, cat_ranges, cat_whole
from ._sinks import TEMP_PREFIX, LocalSink, open_sink
from .policy import KeyChoice, KeyPolicy, check_segments

__all__ = ["EnvcryptFileSystem"]

GET_PART = 32 * 1024 * 1024  # plaintext bytes per ranged read when downloading a whole object
GET_THREADS = 4
PUT_BUFFER = 4 * 1024 * 1024  # plaintext bytes per read when sealing a file for upload

#: target options known to hold no secret: the only ones pickled / serialized (unless pickle_credentials)
_SAFE_OPTIONS = frozenset({
    "endpoint_url", "region_name", "anon", "use_ssl", "default_block_size", "default_fill_cache",
    "default_cache_type", "version_aware", "cache_regions", "requester_pays", "auto_mkdir",
    "skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths", "fixed_upload_size",
    "account_name", "account_host", "blocksize", "project", "consistency", "default_location",
})
#: nested option dicts and the names in them known to hold no secret
_SAFE_NESTED = {
    "client_kwargs": frozenset({"endpoint_url", "region_name", "use_ssl", "verify"}),
    "config_kwargs": frozenset({"signature_version", "s3", "retries", "connect_timeout", "read_timeout",
                                "max_pool_connections", "region_name", "request_checksum_calculation",
                                "response_checksum_validation"}),
}


class _hybrid:
    """A method that is a classmethod on the class and an instance method on instances."""

    def __init__(self, on_class: Callable[..., Any], on_instance: Callable[..., Any]) -> None:
        self._cls, self._inst = on_class, on_instance

    def __get__(self, obj: Any, cls: type) -> Callable[..., Any]:
        if obj is None:
            return functools.partial(self._cls, cls)
        return functools.partial(self._inst, obj)


def _strip_class(cls: type, path: Any) -> Any:
    if isinstance(path, list):
        return [_strip_class(cls, p) for p in path]
    path = fsspec.utils.stringify_path(path)
    for prefix in ("envcrypt::", "envcrypt://"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    # a root ("/", "file:///") stays as it is: "" would mean the current directory to a local target
    return path.rstrip("/") or path


def _strip_instance(self: EnvcryptFileSystem, path: Any) -> Any:
    if isinstance(path, list):
        return [_strip_instance(self, p) for p in path]
    path = fsspec.utils.stringify_path(path)
    for prefix in ("envcrypt::", "envcrypt://"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    return self.target._strip_protocol(path)  # the target decides what its root is


def scrub(options: Mapping[str, Any]) -> dict[str, Any]:
    """Target options reduced to an allowlist of names known to hold no secret.

    Everything else (keys, tokens, passwords, ``headers``, ``api_key``,
    ``private_key``, credential objects, options this module does not know)
    is dropped: workers use their own environment's credentials.
    """
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name in _SAFE_NESTED and isinstance(value, Mapping):
            kept = {k: v for k, v in value.items() if k in _SAFE_NESTED[name]}
            if kept:
                out[name] = kept
        elif name in _SAFE_OPTIONS and isinstance(value, (str, int, float, bool, type(None))):
            out[name] = value
    return out


#: connections an S3 target made here may hold open: listings fetch every object's head at
#: once (``_heads.HEAD_CONCURRENCY`` in flight); botocore's default pool (10) would queue them
S3_POOL_CONNECTIONS = 64


def _with_pool(protocol: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Target options with a connection pool for concurrent head fetches, when the target is
    s3fs and the caller set none (a caller's ``max_pool_connections`` is kept)."""
    out = dict(options)
    if protocol in ("s3", "s3a"):
        config = dict(out.get("config_kwargs") or {})
        config.setdefault("max_pool_connections", S3_POOL_CONNECTIONS)
        out["config_kwargs"] = config
    return out


async def _gather_infos(target: Any, paths: list[str]) -> list[Any]:
    gate = asyncio.Semaphore(HEAD_CONCURRENCY)

    async def one(path: str) -> Any:
        async with gate:
            return await target._info(path)

    return await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)


def _rebuild(cls: type, options: dict[str, Any]) -> EnvcryptFileSystem:
    return cls(**options)  # type: ignore[no-any-return]


class EnvcryptFileSystem(ChainedFileSystem):  # type: ignore[misc]
    """Transparent envelope encryption over any fsspec filesystem (see the module docstring)."""

    protocol = "envcrypt"
    root_marker = ""
    _strip_protocol = _hybrid(_strip_class, _strip_instance)

    def __init__(
        self,
        fo: str = "",
        *,
        target_protocol: str | None = None,
        target_options: Mapping[str, Any] | None = None,
        fs: Any = None,
        key_uri: KeyChoice | None = None,
        key_policy: Mapping[str, KeyChoice] | None = None,
        trusted_keys: KeyChoice | None = None,
        encryption_context: Mapping[str, str] | None = None,
        plaintext: str = "error",
        resolver_options: Mapping[str, Any] | None = None,
        pickle_credentials: bool = False,
        auto_mkdir: bool = True,
        spool: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if plaintext not in ("error", "allow"):
            raise ValueError("plaintext must be 'error' or 'allow'")
        self._given_fs = fs is not None
        if fs is None:
            target_protocol = target_protocol or "file"
            fs = fsspec.filesystem(target_protocol, **_with_pool(target_protocol, target_options or {}))
        self.target = fs
        self._target_protocol = target_protocol
        self._target_options = dict(target_options or {})
        self.root = fs._strip_protocol(fo) if fo else ""
        self.root_marker = fs.root_marker
        self.key_uri = key_uri
        self.policy = KeyPolicy(key_policy)
        self.trusted_keys = list(trusted_key_list(trusted_keys)) if trusted_keys is not None else []
        self.encryption_context = dict(encryption_context or {})
        self.plaintext = plaintext
        self.resolver_options = dict(resolver_options or {})
        self.pickle_credentials = pickle_credentials
        self.auto_mkdir = bool(auto_mkdir)
        if spool not in (None, True, False):
            raise ValueError("spool must be None (auto), True or False")
        self.spool = spool
        self._trusted_memo: tuple[Any, list[str]] | None = None  # trusted_for without a key policy

    def __repr__(self) -> str:
        return f"<EnvcryptFileSystem over {type(self.target).__name__} key_uri={self.key_uri!r}>"

    # ------------------------------------------------------------ pickling (no secrets)

    def _options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "key_uri": self.key_uri,
            "key_policy": self.policy.as_dict() or None,
            "trusted_keys": self.trusted_keys or None,
            "encryption_context": self.encryption_context or None,
            "plaintext": self.plaintext,
            "resolver_options": self.resolver_options or None,
            "pickle_credentials": self.pickle_credentials,
            "auto_mkdir": None if self.auto_mkdir else False,
            "spool": self.spool,
        }
        if self._given_fs and (self.pickle_credentials or scrub(self.target.storage_options)
                               == dict(self.target.storage_options)):
            options["fs"] = self.target  # nothing credential-like in it: pickle the instance itself
        elif self._given_fs:
            protocol = self.target.protocol
            options["target_protocol"] = protocol if isinstance(protocol, str) else protocol[0]
            options["target_options"] = scrub(self.target.storage_options)
        else:
            target_options = self._target_options
            options["target_protocol"] = self._target_protocol
            options["target_options"] = target_options if self.pickle_credentials else scrub(target_options)
        if self.root:
            options["fo"] = self.root
        return {k: v for k, v in options.items() if v is not None}

    def __reduce__(self) -> Any:
        return _rebuild, (type(self), self._options())

    def to_dict(self, *, include_password: bool = True) -> dict[str, Any]:
        """fsspec's serialized form (``to_json``): the same options a pickle carries, never more.

        The target is always described by protocol and options (scrubbed to
        the allowlist unless ``pickle_credentials``); ``include_password``
        cannot add what was scrubbed.
        """
        options = self._options()
        target = options.pop("fs", None)
        if target is not None:
            protocol = target.protocol
            options["target_protocol"] = protocol if isinstance(protocol, str) else protocol[0]
            options["target_options"] = dict(target.storage_options)
        if not include_password:
            options["target_options"] = {k: v for k, v in options.get("target_options", {}).items()
                                         if k != "password"}
        cls = type(self)
        return {"cls": f"{cls.__module__}:{cls.__name__}", "protocol": "envcrypt", "args": [], **options}

    def unstrip_protocol(self, name: str) -> str:
        return "envcrypt::" + str(self.target.unstrip_protocol(name))

    def for_duckdb(self) -> EnvcryptFileSystem:
        """This filesystem in the form duckdb routes to: ``con.register_filesystem(fs.for_duckdb())``.

        duckdb sends a registered fsspec filesystem only paths that start with
        its protocol and ``://``, including the paths its own ``glob`` returns;
        the chained URLs of ``unstrip_protocol`` (``envcrypt::file:///d/x``) it
        would open as local files.  The adapter names paths ``envcrypt://`` +
        the target path (``envcrypt:///data/x.parquet``, ``envcrypt://bucket/k``)
        and shares this filesystem's target, keys and options; SQL names files
        the same way (``read_parquet('envcrypt://bucket/sales/*.parquet')``).
        Its URLs are for duckdb only: ``fsspec.open`` takes the chained form.
        """
        options = self._options()
        for name in ("fs", "target_protocol", "target_options"):
            options.pop(name, None)
        return _DuckDBFileSystem(fs=self.target, skip_instance_cache=True, **options)

    # ------------------------------------------------------------ heads and sizes

    def _fs_tok(self) -> Any:
        return fs_token(self.target)

    def _decorate(self, entries: list[dict[str, Any]],
                  relist: Callable[[], list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
        """Copies of target entries with plaintext sizes (heads fetched concurrently).

        A plaintext size needs the stored size and the header of the *same*
        version of an object.  When a head must be fetched (fresh bytes) while
        the target may have served the entries from its listing cache
        (s3fs's dircache: possibly an older version), the entries are listed
        again first (``relist``), so size and header come from one version.
        """
        files = [e for e in entries if e.get("type") == "file"]
        if relist is not None and any(not cached(self.target, f) for f in files):
            entries = relist()
            files = [e for e in entries if e.get("type") == "file"]
        heads = dict(zip((id(e) for e in files), fetch_heads(self.target, files), strict=False)) if files else {}
        out = []
        for entry in entries:
            copy = dict(entry)
            head = heads.get(id(entry))
            if head is not None:
                _apply(copy, head)
            out.append(copy)
        return out

    def _cached_listing(self, path: str | None) -> bool:
        """Whether the target could serve a listing of ``path`` (None: anything) from its listing cache.

        Checked *before* listing: a listing made fresh by the call itself is
        never listed twice.
        """
        dircache = getattr(self.target, "dircache", None)
        if not dircache:
            return False
        if path is None:
            return True
        path = path.rstrip("/")
        parent = self.target._parent(path)
        try:
            return any(k in (path, parent) or str(k).startswith(path + "/") for k in list(dircache))
        except Exception:
            return True

    def _hidden(self, name: str) -> bool:
        return name.rsplit("/", 1)[-1].startswith(TEMP_PREFIX)

    def _target_info(self, path: str, fresh: bool = False, **kwargs: Any) -> dict[str, Any]:
        if fresh:
            self.target.invalidate_cache(path)
        return dict(self.target.info(path, **kwargs))

    def head(self, path: str, refresh: bool = False) -> Head:
        """What the first stored bytes of the object at ``path`` say (no key needed): whether it
        is encrypted, its header, stored and plaintext sizes, the header bytes, and the error
        class a read raises when it is broken (``Head.error``).  From the head cache when the
        object is unchanged; ``refresh`` fetches it again."""
        return self._heads([path], refresh)[0]

    def _heads(self, paths: list[str], refresh: bool = False, stripped: bool = False) -> list[Head]:
        """Heads of stored files (fetched together: concurrently on async targets)."""
        if not stripped:
            paths = [self._strip_protocol(p) for p in paths]
        if type(self.target) is MemoryFileSystem:  # straight from the store (never cached)
            found = [memory_head(self.target, p) for p in paths]
            if all(h is not None for h in found):
                return found  # type: ignore[return-value]
        if isinstance(self.target, LocalFileSystem):  # one stat each (no listing cache to consult)
            local = [local_info(p) for p in paths]
            if all(i is not None for i in local):
                if refresh:
                    for p in paths:
                        HEADS.forget(self._fs_tok(), p)
                return fetch_heads(self.target, local, use_cache=not refresh)  # type: ignore[arg-type]
        if refresh:
            for path in paths:
                HEADS.forget(self._fs_tok(), path)
        from_cache = [not refresh and self._cached_listing(p) for p in paths]
        infos = self._target_infos(paths, fresh=refresh)
        stale = [i for i, info in enumerate(infos)
                 if from_cache[i] and info.get("type") == "file" and not cached(self.target, info)]
        if stale:  # size and header from one version
            for i, info in zip(stale, self._target_infos([paths[i] for i in stale], fresh=True), strict=True):
                infos[i] = info
        for path, info in zip(paths, infos, strict=True):
            if info.get("type") != "file":
                raise IsADirectoryError(path)
        return fetch_heads(self.target, infos, use_cache=not refresh)

    def _target_infos(self, paths: list[str], fresh: bool) -> list[dict[str, Any]]:
        """The target's ``info`` of each path: concurrently on an async target (its ``_info``
        coroutines on its own loop, ``HEAD_CONCURRENCY`` at a time), else one by one."""
        if len(paths) < 2 or not getattr(self.target, "async_impl", False):
            return [self._target_info(p, fresh=fresh) for p in paths]
        if fresh:
            for path in paths:
                self.target.invalidate_cache(path)
        found = fsspec.asyn.sync(self.target.loop, _gather_infos, self.target, paths)
        failed = next((r for r in found if isinstance(r, BaseException)), None)
        if failed is not None:
            raise failed
        return [dict(info) for info in found]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        from_cache = self._cached_listing(path)
        info = self._target_info(path, **kwargs)
        if info.get("type") != "file":
            return info
        relist = (lambda: [self._target_info(path, fresh=True, **kwargs)]) if from_cache else None
        return self._decorate([info], relist)[0]

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> Any:
        path = self._strip_protocol(path)

        def listing(fresh: bool = False) -> list[dict[str, Any]]:
            if fresh:
                self.target.invalidate_cache(path)
            entries = self.target.ls(path, detail=True, **kwargs)
            return [e for e in entries if not self._hidden(e["name"])]

        from_cache = detail and self._cached_listing(path)
        entries = listing()
        if not detail:
            return [e["name"] for e in entries]
        return self._decorate(entries, (lambda: listing(fresh=True)) if from_cache else None)

    def find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, detail: bool = False,
             **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        from_cache = detail and self._cached_listing(path)
        return self._tree(
            lambda: self.target.find(path, maxdepth=maxdepth, withdirs=withdirs, detail=True, **kwargs),
            detail, from_cache,
        )

    def glob(self, path: str, maxdepth: int | None = None, **kwargs: Any) -> Any:
        detail = kwargs.pop("detail", False)
        path = self._strip_protocol(path) if "::" in path or "://" in path else path
        from_cache = detail and self._cached_listing(None)
        return self._tree(lambda: self.target.glob(path, maxdepth=maxdepth, detail=True, **kwargs), detail, from_cache)

    def _tree(self, fetch: Callable[[], dict[str, dict[str, Any]]], detail: bool, from_cache: bool) -> Any:
        """find/glob: internal files hidden, entries decorated with plaintext sizes.

        When the target's listing may have come from its cache, ``_decorate``
        can ask for one fresh listing (of the whole tree) so that sizes and
        headers come from the same object versions.
        """

        def listing(fresh: bool = False) -> dict[str, dict[str, Any]]:
            if fresh:
                self.target.invalidate_cache()  # a tree: subdirectory listings too
            return {n: i for n, i in fetch().items() if not self._hidden(n)}

        found = listing()
        if not detail:
            return list(found)

        def relist() -> list[dict[str, Any]]:
            found.clear()
            found.update(listing(fresh=True))
            return list(found.values())

        decorated = self._decorate(list(found.values()), relist if from_cache else None)
        return dict(zip(found, decorated, strict=False))

    def exists(self, path: str, **kwargs: Any) -> bool:
        return bool(self.target.exists(self._strip_protocol(path), **kwargs))

    def lexists(self, path: str, **kwargs: Any) -> bool:
        return bool(self.target.lexists(self._strip_protocol(path), **kwargs))

    def isdir(self, path: str) -> bool:
        return bool(self.target.isdir(self._strip_protocol(path)))

    def isfile(self, path: str) -> bool:
        return bool(self.target.isfile(self._strip_protocol(path)))

    def created(self, path: str) -> Any:
        return self.target.created(self._strip_protocol(path))

    def modified(self, path: str) -> Any:
        return self.target.modified(self._strip_protocol(path))

    # ------------------------------------------------------------ namespace operations

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        self.target.mkdir(self._strip_protocol(path), create_parents=create_parents, **kwargs)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.target.makedirs(self._strip_protocol(path), exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        self.target.rmdir(self._strip_protocol(path))

    def rm_file(self, path: str) -> None:
        path = self._strip_protocol(path)
        self.target.rm_file(path)
        self.invalidate_written(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        self.target.rm(self._strip_protocol(path), recursive=recursive, maxdepth=maxdepth)
        self.invalidate_cache()

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy the stored ciphertext (no decryption; the copy opens with the same keys).

        With a key policy, a copy into a prefix whose key differs from the
        source's gets the destination's key: its slots are rewritten (body
        copied byte for byte, never re-encrypted), so purging a tenant's key
        also shreds what was copied into that tenant's prefix.
        """
        path1, path2 = self._strip_protocol(path1), self._strip_protocol(path2)
        if self.policy.rules and self._other_key(path1, path2) and self.target.isfile(path1):
            head = self.head(path1)
            if head.encrypted and head.error is None:
                from ._slots import rewrite_slots

                rewrite_slots(self, path1, path2, normalize_key_uris(self.key_for(path2)))
                return
        self.target.cp_file(path1, path2, **kwargs)
        self.invalidate_written(path2)

    def _other_key(self, path1: str, path2: str) -> bool:
        keys1, keys2 = normalize_key_uris(self.key_for(path1)), normalize_key_uris(self.key_for(path2))
        return {key_name(u) for u in keys1} != {key_name(u) for u in keys2}

    def mv(self, path1: Any, path2: Any, recursive: bool = False, maxdepth: int | None = None,
           **kwargs: Any) -> None:
        """The target's move; with a key policy, copy (re-keyed per file, see ``cp_file``) then delete."""
        if self.policy.rules:
            super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)
        else:
            self.target.mv(self._strip_protocol(path1), self._strip_protocol(path2), recursive=recursive,
                           maxdepth=maxdepth, **kwargs)
        self.invalidate_cache()

    def invalidate_cache(self, path: str | None = None) -> None:
        if path is None:
            HEADS.clear()
            self.target.invalidate_cache()
        else:
            path = self._strip_protocol(path)
            HEADS.forget(self._fs_tok(), path)
            self.target.invalidate_cache(path)

    def invalidate_written(self, path: str) -> None:
        """Forget what is cached about ``path`` after this process wrote, replaced or removed it:
        its head and the target's listings of it and of its parent directory."""
        path = self._strip_protocol(path)
        HEADS.forget(self._fs_tok(), path)
        self.target.invalidate_cache(path)
        self.target.invalidate_cache(self.target._parent(path))

    # ------------------------------------------------------------ files

    def key_for(self, path: str) -> KeyChoice | None:
        """The key URI(s) new writes at ``path`` use: key policy, else ``key_uri``, else the default.

        With a key policy, a path with ``.``, ``..`` or empty segments is refused
        (UnsafePathError: as text it names one prefix, on the storage another), and
        on a local disk symlinks are resolved first, so the key is the one of the
        directory the object really lands in.
        """
        path = self._strip_protocol(path)
        if not self.policy.rules:
            return self.key_uri
        check_segments(path)
        if isinstance(self.target, LocalFileSystem):
            path = os.path.realpath(path)
        chosen = self.policy.for_path(path, self.target._strip_protocol, self._policy_anchor(path))
        return chosen if chosen is not None else self.key_uri

    def trusted_for(self, path: str) -> list[str]:
        """The keys a read of ``path`` accepts: the key new writes at ``path`` would use (any
        version of it) and the ``trusted_keys`` option.  Another tenant's key is not among them."""
        if not self.policy.rules:  # the same for every path: computed once per default key
            default = os.environ.get("ENVCRYPT_KEY_URI")
            key = self.key_uri
            state = (key if key is None or isinstance(key, str) else tuple(key), default, tuple(self.trusted_keys))
            memo = self._trusted_memo
            if memo is None or memo[0] != state:
                memo = self._trusted_memo = (state, self._trusted(key))
            return list(memo[1])
        return self._trusted(self.key_for(path))

    def _trusted(self, key: KeyChoice | None) -> list[str]:
        own = [key_name(u) for u in normalize_key_uris(key)]
        return list(dict.fromkeys(own + self.trusted_keys))

    def _policy_anchor(self, path: str) -> str:
        """Where relative key-policy prefixes start for ``path`` (see ``policy``).

        The bucket (container) of an object store, else the target's root
        (``/`` on local disks and in memory).  It never depends on the URL the
        filesystem was made from, so a file gets the same key whether it is
        written through ``envcrypt::s3://lake`` or ``envcrypt::s3://lake/t/f.csv``.
        """
        if not isinstance(self.target, (LocalFileSystem, MemoryFileSystem)) and "/" in path.lstrip("/"):
            return path.lstrip("/").split("/", 1)[0]
        return ""

    def put_file(self, lpath: Any, rpath: str, callback: Any = DEFAULT_CALLBACK, mode: str = "overwrite",
                 **kwargs: Any) -> None:
        """Encrypt a local file to ``rpath``.

        On object stores (async targets: s3fs, gcsfs, adlfs) the object is sealed
        into a local temporary file first and handed to the target's own
        ``put_file``, so it is uploaded the way the plain target uploads (one PUT,
        or a multipart upload with concurrent parts), and appears only when complete.
        """
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        rpath = self._strip_protocol(rpath)
        if not getattr(self.target, "async_impl", False):
            super().put_file(lpath, rpath, callback=callback, mode=mode, **kwargs)
            return
        if mode == "create" and self.target.exists(rpath):
            raise ObjectExistsError(f"{rpath} exists")
        dek, header, charge = new_stream_header(self.key_for(rpath), self.encryption_context, self.resolver_options)
        with tempfile.TemporaryDirectory(prefix="envcrypt-put-") as tmp:
            sealed = os.path.join(tmp, "object")
            with open(lpath, "rb") as src, open(sealed, "wb") as dst, \
                    EncryptingWriter(dst, header, dek, charge=charge) as writer:
                shutil.copyfileobj(src, writer, PUT_BUFFER)
            try:  # mode="create": s3fs makes it conditional (If-None-Match: *), checked by the store
                self.target.put_file(sealed, rpath, callback=callback, mode=mode, **kwargs)
            except OSError as exc:
                if mode == "create" and object_changed(exc):
                    raise ObjectExistsError(f"{rpath} exists (another writer created it)") from exc
                raise
        self.invalidate_written(rpath)

    def get_file(self, rpath: str, lpath: Any = None, callback: Any = DEFAULT_CALLBACK, outfile: Any = None,
                 **kwargs: Any) -> None:
        """Decrypt one object to a local file: large ranges fetched and opened in parallel."""
        if outfile is not None or isfilelike(lpath) or self.isdir(rpath):
            return super().get_file(rpath, lpath, callback=callback, outfile=outfile, **kwargs)  # type: ignore[no-any-return]
        lpath = os.path.abspath(lpath)
        os.makedirs(os.path.dirname(lpath), exist_ok=True)
        # decrypted into a temp file next to lpath, renamed over it only when complete:
        # a failure never destroys an existing file nor leaves partial output
        sink = LocalSink(LocalFileSystem(), lpath)
        try:
            with self.open(rpath, "rb", **kwargs) as f:
                if not isinstance(f, EnvcryptReadFile):  # a plaintext object, allowed
                    shutil.copyfileobj(f, sink.raw, GET_PART)
                else:
                    callback.set_size(f.size)
                    spans = [(a, min(a + GET_PART, f.size)) for a in range(0, f.size, GET_PART)] or [(0, 0)]
                    fd = sink.raw.fileno()

                    def part(span: tuple[int, int]) -> int:
                        data = memoryview(f.read_range(*span))
                        offset = span[0]
                        while data:
                            n = os.pwrite(fd, data, offset)
                            data, offset = data[n:], offset + n
                        return span[1] - span[0]

                    with ThreadPoolExecutor(min(GET_THREADS, len(spans))) as pool:
                        for n in pool.map(part, spans):
                            callback.relative_update(n)
            sink.commit()
        except BaseException:
            sink.abort()
            raise
        return None

    def pipe_file(self, path: str, value: Any, mode: str = "overwrite", **kwargs: Any) -> None:
        """fsspec's ``pipe_file``; ``mode="create"`` is an exclusive create (``open(path, "xb")``,
        atomic where the target allows it: see ``_sinks``), not fsspec's exists-then-write."""
        with self.open(path, "xb" if mode == "create" else "wb", **kwargs) as f:
            f.write(value)

    def open(self, path: str, mode: str = "rb", block_size: Any = None, cache_options: Any = None,
             compression: Any = None, **kwargs: Any) -> Any:
        """fsspec's ``open``; text writers also abort (publish nothing) when a ``with`` block raises."""
        if "b" in mode or "r" in mode or compression is not None:
            return super().open(path, mode, block_size=block_size, cache_options=cache_options,
                                compression=compression, **kwargs)
        text = {k: kwargs.pop(k) for k in ("encoding", "errors", "newline") if k in kwargs}
        raw = super().open(path, mode.replace("t", "") + "b", block_size=block_size,
                           cache_options=cache_options, **kwargs)
        return _TextWriter(raw, **text)

    def _open(self, path: str, mode: str = "rb", block_size: Any = None, autocommit: bool = True,
              cache_options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        if "a" in mode or "+" in mode:
            raise NotImplementedError(
                f"mode {mode!r} is not supported by envcrypt: an object is sealed when it is closed "
                "(its final chunk authenticates its length), so it cannot be appended to or updated; "
                "rewrite it instead"
            )
        if mode == "wb" and kwargs.pop("overwrite", True) is False:
            mode = "xb"  # fs.open(p, "wb", overwrite=False): an exclusive create
        if mode in ("wb", "xb"):
            if mode == "xb" and self.target.exists(path):
                # fail early; the sink's publish is what makes it exclusive (see _sinks)
                raise ObjectExistsError(f"{path} exists")
            spool = kwargs.pop("spool", self.spool)
            if spool not in (None, True, False):
                raise ValueError("spool must be None (auto), True or False")
            return self._open_write(path, autocommit, block_size, spool=spool, exclusive=mode == "xb")
        if mode != "rb":
            raise ValueError(f"unsupported mode {mode!r}")
        return self._open_read(path, block_size, cache_options, **kwargs)

    def _open_write(self, path: str, autocommit: bool, block_size: Any, expect: Any = None,
                    spool: bool | None = False, exclusive: bool = False) -> EnvcryptWriteFile:
        """An atomic writer; ``expect`` (``_sinks.version_of``) makes publication conditional;
        ``spool`` as the option (``EnvcryptWriteFile``); ``exclusive``: create only (``"xb"``)."""
        dek, header, charge = new_stream_header(self.key_for(path), self.encryption_context, self.resolver_options)
        sink = open_sink(self.target, path, block_size=block_size if isinstance(block_size, int) else None,
                         expect=expect, make_parents=self.auto_mkdir, exclusive=exclusive)
        try:
            writer = EncryptingWriter(sink.raw, header, dek, charge=charge)
        except BaseException:
            sink.abort()
            raise
        try:
            return EnvcryptWriteFile(self, path, writer, sink, autocommit, spool=spool)
        except BaseException:
            writer.abort()
            sink.abort()
            raise

    def _open_read(self, path: str, block_size: Any, cache_options: Any, **kwargs: Any) -> Any:
        opened = self._open_object(path)
        if opened is None:  # a plaintext object, allowed
            return self.target.open(path, "rb", block_size=block_size, cache_options=cache_options, **kwargs)
        kwargs.pop("size", None)
        return EnvcryptReadFile(
            self, path, opened.head, opened.immutable_size, opened.cipher, block_size=block_size,
            cache_type=kwargs.pop("cache_type", "none"), cache_options=cache_options, **kwargs,
        )

    def _open_object(self, path: str, refresh: bool = False) -> Opened | None:
        """The opened object at ``path`` (a stripped path; None: not encrypted, and
        ``plaintext="allow"``)."""
        trusted = self.trusted_for(path)  # first: a path the key policy refuses is never read
        head = self._heads([path], refresh, stripped=True)[0]
        if not refresh and (not head.encrypted or head.error is not None):
            # never serve stored bytes as plaintext (or fail) on a cached head: look again
            head = self._heads([path], refresh=True, stripped=True)[0]
        return self._opened(path, head, trusted)

    def _opened(self, path: str, head: Head, trusted: list[str]) -> Opened | None:
        if head.error is FileNotFoundError:
            raise FileNotFoundError(path)
        if not head.encrypted:
            if self.plaintext == "allow":
                return None
            raise NotEncryptedError(f"{path} is not an envcrypt object (pass plaintext='allow' to read it)")
        if head.error is not None:
            raise head.error(f"{path}: unreadable envcrypt header")
        if head.plaintext_size is None:
            raise IntegrityError()
        return open_head(head, trusted, self.encryption_context, self.resolver_options)

    # ------------------------------------------------------------ whole objects and ranges

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        """Plaintext of an object or of a range of it: each object opened once (its key work
        served from the read-side DEK cache when it was opened recently), only the sealed
        chunks of the range fetched.  A whole object is fetched with one read, header included."""
        if kwargs:  # options meant for a file object (block sizes, caches): fsspec's way
            return super().cat_file(path, start, end, **kwargs)  # type: ignore[no-any-return]
        path = self._strip_protocol(path)
        if not start and end is None:
            return cat_whole(self, path)
        return cat_range(self, path, start, end)

    def cat_ranges(self, paths: list[str], starts: Any, ends: Any, max_gap: Any = None, on_error: str = "return",
                   **kwargs: Any) -> list[Any]:
        """Plaintext ranges of one or more objects, each object opened once and the sealed chunks
        of all ranges fetched together (``_ranges.cat_ranges``)."""
        if max_gap is not None:
            raise NotImplementedError
        return cat_ranges(self, paths, starts, ends, on_error)


class _DuckDBFileSystem(EnvcryptFileSystem):
    """``EnvcryptFileSystem.for_duckdb``: paths come back as ``envcrypt://`` + target path."""

    def unstrip_protocol(self, name: str) -> str:
        return "envcrypt://" + str(self._strip_protocol(name))


class _TextWriter(io.TextIOWrapper):
    """A text writer over an envcrypt writer: leaving ``with`` by an exception publishes nothing."""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and isinstance(self.buffer, EnvcryptWriteFile):
            self.buffer.discard()
        self.close()


#: size fields targets report beside ``size`` (s3fs listings: ``Size``): the stored size, which
#: nobody must take for the plaintext size; ``stored_size`` says it under its own name
_STORED_SIZE_FIELDS = ("Size", "ContentLength", "content_length")


def _apply(entry: dict[str, Any], head: Head) -> None:
    for name in _STORED_SIZE_FIELDS:
        entry.pop(name, None)
    entry["stored_size"] = head.stored_size
    entry["encrypted"] = head.encrypted
    entry["size"] = head.size
    if head.encrypted:
        entry["header_size"] = head.header_size
    if head.problem is not None:
        # a broken object does not fail the listing: it is marked, with its stored size
        entry["error"] = head.problem
