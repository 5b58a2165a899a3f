"""The envcrypt fsspec filesystem: ``envcrypt::`` in front of any fsspec URL encrypts at rest.

``EnvcryptFileSystem`` is registered as the ``envcrypt`` protocol through the
``fsspec.specs`` entry point (``envcrypt.fs:EnvcryptFileSystem``)::

    import pandas as pd
    so = {"envcrypt": {"key_uri": "local:team"}, "s3": {"client_kwargs": {...}}}
    df.to_parquet("envcrypt::s3://lake/t.parquet", storage_options=so)
    pd.read_parquet("envcrypt::s3://lake/t.parquet", columns=["a"], storage_options=so)

    fs, path = fsspec.core.url_to_fs("envcrypt::s3://lake", **so)
    pq.read_table("lake/t.parquet", filesystem=fs)      # pyarrow: pass filesystem=

Modules: ``filesystem`` (the protocol), ``_files`` (random-access reader,
atomic writer), ``_heads`` (header probes and their cache), ``_opened``
(head -> chunk cipher, kept in the read-side DEK cache), ``_ranges`` (plaintext
ranges: ``cat_file``/``cat_ranges``, one open per object, spans fetched
together), ``_sinks`` (atomic publication per target), ``_backend`` (backend
errors translated), ``policy`` (key by path prefix), ``trees``
(encrypt/decrypt a tree, migrate, rewrap, copy across stores), ``manifest``
(signed dataset manifests), ``urls`` (URL helpers for the CLI), ``progress``.

Key policy prefixes are anchored at the bucket of an object store and at the
root of local and memory filesystems (see ``policy``); copies and moves into
a prefix with another key get that key.  Rewrap and migrate replace objects
conditionally (see ``_sinks``).

Atomicity: ``with fs.open(p, "wb")`` (binary or text) publishes nothing when the
block raises.  ``fsspec.open(...)``'s ``OpenFile`` closes its file from its
``__exit__`` without passing the exception on; a writer closed while an
exception raised after it was opened propagates publishes nothing either, so
a pandas writer that fails half-way leaves no object behind.
"""

from __future__ import annotations

from .filesystem import EnvcryptFileSystem
from .policy import KeyPolicy

__all__ = ["EnvcryptFileSystem", "KeyPolicy"]
