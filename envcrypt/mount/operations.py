"""``EnvcryptOperations``: the FUSE operations of ``envcrypt mount``, on the filesystem's public methods.

Paths the kernel gives are relative to the mount root (``/a/b``); the
operations turn them into the filesystem's paths (``root/a/b``) and call
``EnvcryptFileSystem`` (``info``, ``ls``, ``open``, ``mv``, ``rm_file``,
``mkdir``, ``rmdir``): the key policy, trusted keys and encryption context of
the filesystem apply unchanged.

Reads.  ``getattr`` reports exact plaintext sizes (``info``, from the header
cache).  A file opened read-only keeps one ``EnvcryptReadFile``; each ``read``
fetches and opens only the chunks it touches (``read_range``).  A read that
fails to authenticate (or an object that is not an envcrypt object) is ``EIO``,
and so is every later read of that open file: no unauthenticated byte is served.

Writes.  Every path open for writing has one ``_Node`` shared by its handles,
holding the plaintext in a private ``Spool`` from the first change on (filled
with the old plaintext, unless opened with ``O_TRUNC`` or created).  The spool is sealed and published
through ``fs.open(path, "wb")`` (atomic: the old object or the new one) when a
handle that wrote is closed (``flush``, so ``close()`` reports a failed
publication), on ``fsync``, and when the last handle is released.  While a
path has a spool every handle of it reads the spool, so a program reads back
what it wrote.  A program killed by a signal while it had the file open
publishes nothing of what it wrote since the last publication (see
``_killed``): the stored object stays the old one, or nothing for a new file.
A mount that ends while files are open publishes none of their pending writes.
"""

from __future__ import annotations

import datetime
import errno
import functools
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fsspec.implementations.local import LocalFileSystem

from ..fs import EnvcryptFileSystem
from ._errno import INTEGRITY, LOG, to_oserror
from ._spool import Spool

__all__ = ["EnvcryptOperations"]

F = TypeVar("F", bound=Callable[..., Any])

#: errors that are the normal answer of an operation, not worth a log line
_ROUTINE = (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY, errno.EROFS)
_PF_EXITING = 0x4  # task flag (include/linux/sched.h): the task is in do_exit
_BLOCK = 128 * 1024  # st_blksize: what cp and tar use as their buffer size
_HIDDEN_PREFIX = ".envcrypt-tmp-"  # the atomic sinks' temporary objects (never shown)


def _boundary(op: F) -> F:
    """Every operation: exceptions become the OSError (errno) FUSE returns, logged when not routine."""

    @functools.wraps(op)
    def wrapped(self: EnvcryptOperations, path: Any, *args: Any) -> Any:
        try:
            return op(self, path, *args)
        except OSError as exc:
            if type(exc) is OSError and exc.errno in _ROUTINE:
                raise
            raise to_oserror(op.__name__, str(path), exc) from None
        except Exception as exc:
            raise to_oserror(op.__name__, str(path), exc) from None

    return wrapped  # type: ignore[return-value]


def _killed(pid: int) -> bool:
    """Whether thread ``pid`` is exiting because a signal killed it (kill -9, an unhandled SIGINT).

    The kernel closes a dying program's files like any others (``flush``), so
    the flags of the caller tell the two apart: ``PF_EXITING`` set and an exit
    code whose low bits name a signal (``/proc/PID/stat`` fields 9 and 52).  A
    program that exits normally (exit code with no signal) publishes what it wrote.
    """
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2 :].split()  # fields[0] is field 3 (state)
        flags, exit_code = int(fields[9 - 3]), int(fields[52 - 3])
    except (OSError, ValueError, IndexError):
        return False
    return bool(flags & _PF_EXITING) and (exit_code & 0x7F) != 0


def _ns(value: Any, default: int) -> int:
    """A modification time from a target's info (float seconds, datetime, ISO text) in ns, else ``default``."""
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1e9)
    if isinstance(value, (int, float)):
        return int(value * 1e9)
    if isinstance(value, str):
        try:
            return int(datetime.datetime.fromisoformat(value).timestamp() * 1e9)
        except ValueError:
            pass
    return default  # stable: tar fails on a directory whose time changes while it reads it


class _Node:
    """The shared state of one path while it is open: the spool of its writes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.handles = 0
        self.writers = 0  # handles open for writing
        self.spool: Spool | None = None
        self.dirty = False  # the spool differs from the stored object
        self.unlinked = False  # removed or replaced while open: nothing more is published
        self.abandoned = False  # a writer was killed: its pending writes are not published
        self.generation = 0  # bumped on each publication: read-only handles reopen


class _Handle:
    def __init__(self, node: _Node, writable: bool) -> None:
        self.node, self.writable = node, writable
        self.reader: Any = None
        self.reader_generation = -1
        self.failed: BaseException | None = None  # sticky: an integrity failure fails every later read
        self.wrote = False  # written through this handle since the last publication


class EnvcryptOperations:
    """FUSE operations over ``fs`` rooted at ``root`` (see the module docstring).

    ``context`` returns ``(uid, gid, pid)`` of the calling program (the FUSE
    binding's ``fuse_get_context``); ``spool_dir`` is where the plaintext of
    files open for writing is kept (default: the system temp dir).
    """

    use_ns = True  # times in integer nanoseconds (the binding's modern convention)

    def __init__(
        self, fs: EnvcryptFileSystem, root: str, *, read_only: bool = False, spool_dir: str | None = None,
        context: Callable[[], tuple[int, int, int]] | None = None,
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/") if root not in ("", "/") else ""
        self.read_only = read_only
        self.spool_dir = spool_dir
        self._context = context
        self._local = isinstance(fs.target, LocalFileSystem)
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._handles: dict[int, _Handle] = {}
        self._next_fh = 1
        self._dirs: set[str] = set()  # directories made on an object store, where an empty one does not exist
        self._uid, self._gid = os.getuid(), os.getgid()
        self._started = time.time_ns()
        self.served = False  # set once the kernel has connected (``init``)

    def __repr__(self) -> str:
        return f"<EnvcryptOperations root={self.root or '/'!r} read_only={self.read_only}>"

    def __reduce__(self) -> Any:
        raise TypeError("mount operations cannot be pickled")

    # ------------------------------------------------------------ paths and attributes

    def _full(self, path: str) -> str:
        if path in ("", "/"):
            return self.root or "/"
        return self.root + path

    def _parent(self, full: str) -> str:
        parent = full.rsplit("/", 1)[0]
        return parent or "/"

    def _writable(self) -> None:
        if self.read_only:
            raise OSError(errno.EROFS, "read-only mount")

    def _dir_attrs(self, mtime: int | None = None, mode: int = 0o755) -> dict[str, Any]:
        t = self._started if mtime is None else mtime
        return {"st_mode": stat.S_IFDIR | self._mask(mode), "st_nlink": 2, "st_size": 0, "st_uid": self._uid,
                "st_gid": self._gid, "st_mtime": t, "st_ctime": t, "st_atime": t, "st_blksize": _BLOCK}

    def _file_attrs(self, size: int, mtime: int, mode: int = 0o644, uid: int | None = None,
                    gid: int | None = None) -> dict[str, Any]:
        return {"st_mode": stat.S_IFREG | self._mask(mode), "st_nlink": 1, "st_size": size,
                "st_blocks": (size + 511) // 512, "st_blksize": _BLOCK,
                "st_uid": self._uid if uid is None else uid, "st_gid": self._gid if gid is None else gid,
                "st_mtime": mtime, "st_ctime": mtime, "st_atime": mtime}

    def _mask(self, mode: int) -> int:
        mode &= 0o7777
        return mode & ~0o222 if self.read_only else mode

    def _attrs_of(self, info: dict[str, Any]) -> dict[str, Any]:
        mtime = _ns(info.get("mtime", info.get("LastModified", info.get("last_modified"))), self._started)
        raw_mode = info.get("mode")
        if info.get("type") == "directory":
            return self._dir_attrs(mtime, int(raw_mode) if isinstance(raw_mode, int) else 0o755)
        mode = int(raw_mode) if isinstance(raw_mode, int) else 0o644
        uid, gid = (info.get("uid"), info.get("gid")) if self._local else (None, None)
        return self._file_attrs(int(info.get("size") or 0), mtime, mode, uid, gid)

    @_boundary
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        full = self._full(path)
        node = self._handles[fh].node if fh in self._handles else self._nodes.get(full)
        if node is not None and node.spool is not None and not node.abandoned:
            return self._file_attrs(node.spool.size(), time.time_ns())
        if full.rsplit("/", 1)[-1].startswith(_HIDDEN_PREFIX):
            raise OSError(errno.ENOENT, "not found")
        try:
            info = self.fs.info(full)
        except FileNotFoundError:
            if full in self._dirs or full == (self.root or "/"):
                return self._dir_attrs()
            raise OSError(errno.ENOENT, "not found") from None
        return self._attrs_of(info)

    @_boundary
    def readdir(self, path: str, fh: int) -> Iterator[Any]:
        full = self._full(path)
        names: dict[str, int] = {}
        try:
            for entry in self.fs.ls(full, detail=True):
                name = str(entry["name"]).rstrip("/")
                if name == full.rstrip("/"):
                    continue
                kind = stat.S_IFDIR if entry.get("type") == "directory" else stat.S_IFREG
                names[name.rsplit("/", 1)[-1]] = kind
        except FileNotFoundError:
            if full not in self._dirs and full != (self.root or "/"):
                raise
        with self._lock:
            pending = [p for p, n in self._nodes.items() if n.spool is not None and not n.abandoned]
            dirs = list(self._dirs)
        for other, kind in [(p, stat.S_IFREG) for p in pending] + [(d, stat.S_IFDIR) for d in dirs]:
            if self._parent(other) == full:
                names.setdefault(other.rsplit("/", 1)[-1], kind)
        return iter([".", ".."] + [(name, {"st_mode": kind}, 0) for name, kind in sorted(names.items())])

    @_boundary
    def statfs(self, path: str) -> dict[str, int]:
        if self._local:
            st = os.statvfs(self.root or "/")
            return {name: getattr(st, name) for name in (
                "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail")} | {
                "f_namemax": 255}
        big = 1 << 40  # an object store has no capacity to report: a large, honest "plenty"
        return {"f_bsize": _BLOCK, "f_frsize": _BLOCK, "f_blocks": big, "f_bfree": big, "f_bavail": big,
                "f_files": big, "f_ffree": big, "f_favail": big, "f_namemax": 255}

    # ------------------------------------------------------------ open files

    def _acquire(self, full: str) -> _Node:
        with self._lock:
            node = self._nodes.get(full)
            if node is None:
                node = self._nodes[full] = _Node(full)
            node.handles += 1
            return node

    def _register(self, handle: _Handle) -> int:
        with self._lock:
            fh = self._next_fh
            self._next_fh += 1
            self._handles[fh] = handle
            return fh

    def _let_go(self, node: _Node) -> None:
        """One handle fewer; the last one publishes what is pending and removes the spool."""
        with node.lock:
            with self._lock:
                node.handles -= 1
                last = node.handles == 0
            if not last:
                return
            try:
                if node.dirty and not node.unlinked and not node.abandoned:
                    self._publish(node)
            finally:
                self._drop_spool(node)
                with self._lock:
                    if node.handles == 0 and self._nodes.get(node.path) is node:
                        del self._nodes[node.path]

    def _drop_spool(self, node: _Node) -> None:
        spool, node.spool = node.spool, None
        node.dirty = node.abandoned = False
        if spool is not None:
            spool.remove()

    def _materialize(self, node: _Node, truncate: bool) -> None:
        """Give ``node`` a spool: empty when truncated, else the stored object's plaintext."""
        spool = Spool(self.spool_dir)
        try:
            if not truncate:
                try:
                    with self.fs.open(node.path, "rb") as f:
                        spool.fill_from(f)
                except FileNotFoundError:
                    truncate = True  # nothing stored yet: the file is new
        except BaseException:
            spool.remove()
            raise
        node.spool, node.dirty, node.abandoned = spool, truncate, False

    def _publish(self, node: _Node) -> None:
        """Seal the spool into a new object at the node's path (atomic) and mark it clean."""
        spool = node.spool
        if spool is None:
            return
        with self.fs.open(node.path, "wb", spool=False) as writer:
            spool.seal_into(writer)
        node.dirty = False
        node.generation += 1

    @_boundary
    def open(self, path: str, flags: int) -> int:
        full = self._full(path)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if writable:
            self._writable()
        node = self._acquire(full)
        try:
            handle = _Handle(node, writable)
            with node.lock:
                if writable and flags & os.O_TRUNC:
                    if node.spool is None:
                        self._materialize(node, truncate=True)
                    else:
                        node.spool.truncate(0)
                        node.dirty = True
                elif node.spool is None:
                    # opened now, so that a refused key or a broken header fails open(), not read();
                    # a writer copies the plaintext into a spool only at its first change (sqlite opens
                    # its database read-write even to query it)
                    handle.reader = self.fs.open(full, "rb")
                    handle.reader_generation = node.generation
                if writable:
                    node.writers += 1
        except BaseException:
            self._let_go(node)
            raise
        return self._register(handle)

    @_boundary
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        self._writable()
        full = self._full(path)
        self.fs.key_for(full)  # a path the key policy refuses fails here, before any byte is written
        node = self._acquire(full)
        try:
            with node.lock:
                if node.spool is None:
                    node.spool = Spool(self.spool_dir)
                else:
                    node.spool.truncate(0)
                node.dirty, node.abandoned, node.unlinked = True, False, False
                node.writers += 1
        except BaseException:
            self._let_go(node)
            raise
        return self._register(_Handle(node, True))

    @_boundary
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        handle = self._handles[fh]
        if handle.failed is not None:
            raise handle.failed
        node = handle.node
        spool = node.spool
        if spool is not None:
            return spool.pread(size, offset)
        try:
            reader = handle.reader
            if reader is None or handle.reader_generation != node.generation:
                with node.lock:  # the file was republished since: read the new object
                    if handle.reader is None or handle.reader_generation != node.generation:
                        if handle.reader is not None:
                            handle.reader.close()
                        handle.reader = self.fs.open(node.path, "rb")
                        handle.reader_generation = node.generation
                    reader = handle.reader
            total = reader.size  # authenticated (the final chunk is opened on first use)
            if offset >= total:
                return b""
            return bytes(reader.read_range(offset, min(offset + size, total)))
        except INTEGRITY as exc:
            handle.failed = exc
            raise

    @_boundary
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        handle = self._handles[fh]
        node = handle.node
        with node.lock:
            if node.spool is None:
                if not handle.writable:
                    raise OSError(errno.EBADF, "not open for writing")
                self._materialize(node, truncate=False)  # the first change: the old plaintext into a spool
            n = node.spool.pwrite(data, offset)  # type: ignore[union-attr]
            node.dirty = handle.wrote = True
        return n

    @_boundary
    def truncate(self, path: str, length: int, fh: int | None = None) -> None:
        self._writable()
        full = self._full(path)
        node = self._handles[fh].node if fh in self._handles else self._nodes.get(full)
        if node is not None and (node.spool is not None or node.writers > 0):
            with node.lock:  # open for writing: part of that session, published with it
                if node.spool is None:
                    self._materialize(node, truncate=length == 0)
                node.spool.truncate(length)  # type: ignore[union-attr]
                node.dirty = True
                return
        # not open for writing: rewrite the stored object at the new length, atomically
        node = self._acquire(full)
        try:
            with node.lock:
                if node.spool is None:
                    self._materialize(node, truncate=length == 0)
                node.spool.truncate(length)  # type: ignore[union-attr]
                node.dirty = True
                self._publish(node)  # now, even while a reader holds the path open
        finally:
            self._let_go(node)

    @_boundary
    def flush(self, path: str, fh: int) -> None:
        handle = self._handles.get(fh)
        if handle is None or not handle.writable:
            return
        node = handle.node
        with node.lock:
            pid = self._context()[2] if self._context is not None else 0
            if node.dirty and _killed(pid):
                node.abandoned = True
                if node.handles == 1:  # nobody else has it open: forget the writes now (release is async)
                    self._drop_spool(node)
                LOG.warning("flush %s: the writing program (pid %d) was killed: its unpublished writes are "
                            "dropped, the stored object is left as it was", node.path, pid)
                return
            if handle.wrote and node.dirty and not node.unlinked and not node.abandoned:
                self._publish(node)
            handle.wrote = False

    @_boundary
    def fsync(self, path: str, datasync: int, fh: int) -> None:
        handle = self._handles.get(fh)
        if handle is None:
            return
        node = handle.node
        with node.lock:
            if node.dirty and not node.unlinked and not node.abandoned:
                self._publish(node)

    @_boundary
    def release(self, path: str, fh: int) -> None:
        with self._lock:
            handle = self._handles.pop(fh, None)
        if handle is None:
            return
        if handle.reader is not None:
            handle.reader.close()
        if handle.writable:
            with self._lock:
                handle.node.writers -= 1
        self._let_go(handle.node)

    # ------------------------------------------------------------ namespace

    @_boundary
    def unlink(self, path: str) -> None:
        self._writable()
        full = self._full(path)
        with self._lock:
            node = self._nodes.pop(full, None)
        if node is not None:
            node.unlinked = True  # open handles keep their spool; nothing of it is published
        try:
            self.fs.rm_file(full)
        except FileNotFoundError:
            if node is None or node.generation > 0:
                raise

    @_boundary
    def mkdir(self, path: str, mode: int) -> None:
        self._writable()
        full = self._full(path)
        self.fs.mkdir(full, create_parents=False)
        if not self._local:
            with self._lock:
                self._dirs.add(full)

    @_boundary
    def rmdir(self, path: str) -> None:
        self._writable()
        full = self._full(path)
        with self._lock:
            if any(self._parent(p) == full for p in list(self._nodes) + list(self._dirs)):
                raise OSError(errno.ENOTEMPTY, "not empty")
        try:
            children = self.fs.ls(full, detail=False)
        except FileNotFoundError:
            children = []
        if [c for c in children if str(c).rstrip("/") != full]:
            raise OSError(errno.ENOTEMPTY, "not empty")
        with self._lock:
            self._dirs.discard(full)
        if self._local:
            self.fs.rmdir(full)
        # an object store has no empty directories: one without objects is gone already

    @_boundary
    def rename(self, old: str, new: str) -> None:
        self._writable()
        src, dst = self._full(old), self._full(new)
        node = self._nodes.get(src)
        if node is not None:
            with node.lock:  # what the program wrote so far is what moves
                if node.dirty and not node.abandoned and not node.unlinked:
                    self._publish(node)
        if src in self._dirs and not self.fs.exists(src):
            with self._lock:
                self._dirs = {dst + d[len(src):] if d == src or d.startswith(src + "/") else d for d in self._dirs}
        elif self.fs.isdir(src) and not self.fs.isfile(src):
            self.fs.mv(src, dst, recursive=True)
        else:
            self.fs.mv(src, dst)
        with self._lock:
            replaced = self._nodes.pop(dst, None)
            if replaced is not None:
                replaced.unlinked = True
            if node is not None and self._nodes.get(src) is node:
                del self._nodes[src]
                node.path = dst
                self._nodes[dst] = node

    @_boundary
    def chmod(self, path: str, mode: int) -> None:
        """The stored file's mode on a local target; object stores have none (accepted, no effect)."""
        self._writable()
        full = self._full(path)
        if self._local and os.path.lexists(full):
            os.chmod(full, mode & 0o7777)

    @_boundary
    def chown(self, path: str, uid: int, gid: int) -> None:
        """The stored file's owner on a local target (as the OS allows); object stores have none."""
        self._writable()
        full = self._full(path)
        if self._local and os.path.lexists(full):
            os.chown(full, uid, gid)

    @_boundary
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> None:
        """The stored file's times on a local target; object stores set their own (accepted, no effect)."""
        self._writable()
        full = self._full(path)
        if self._local and os.path.lexists(full):
            os.utime(full, ns=times) if times is not None else os.utime(full)

    def init(self, path: str) -> None:
        self.served = True

    def destroy(self, path: str) -> None:
        """The mount ends: files still open publish nothing (their programs never closed them)."""
        with self._lock:
            handles, self._handles = list(self._handles.values()), {}
            nodes, self._nodes = list(self._nodes.values()), {}
        for handle in handles:
            if handle.reader is not None:
                handle.reader.close()
        for node in nodes:
            if node.dirty and not node.unlinked:
                LOG.warning("unmount: %s was still open for writing: its unpublished writes are dropped",
                            node.path)
            self._drop_spool(node)
