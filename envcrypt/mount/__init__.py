"""``envcrypt mount``: any ``envcrypt::`` location as a plaintext directory for every program (FUSE).

Programs that know nothing of envcrypt (grep, tar, sqlite3, cp, a Java tool)
read and write plaintext files with exact sizes; only ciphertext is stored, with
the filesystem's keys, key policy, trusted keys and atomic publication::

    from envcrypt.fs.urls import encrypted_fs
    from envcrypt.mount import EnvcryptOperations, serve

    fs, root = encrypted_fs("s3://lake/raw", {"s3": {...}})
    serve(EnvcryptOperations(fs, root), "/mnt/raw")      # blocks until unmounted

Modules: ``operations`` (the FUSE operations class), ``_spool`` (the plaintext
of files open for writing, sealed and published on close/fsync), ``_errno``
(envcrypt errors -> errno), ``runner`` (the FUSE loop through the optional
``mfusepy`` binding, ``pip install 'envcrypt[mount]'``, and unmounting).
"""

from __future__ import annotations

from ._errno import errno_of
from .operations import EnvcryptOperations
from .runner import is_mounted, serve, unmount

__all__ = ["EnvcryptOperations", "serve", "unmount", "is_mounted", "errno_of"]
