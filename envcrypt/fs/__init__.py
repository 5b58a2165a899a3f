"""The envcrypt fsspec filesystem: ``envcrypt::`` in front of any fsspec URL encrypts at rest.

``EnvcryptFileSystem`` is registered as the ``envcrypt`` protocol through the
``fsspec.specs`` entry point (``envcrypt.fs:EnvcryptFileSystem``).
"""

from __future__ import annotations

from .filesystem import EnvcryptFileSystem
from .policy import KeyPolicy

__all__ = ["EnvcryptFileSystem", "KeyPolicy"]
