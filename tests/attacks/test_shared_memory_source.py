"""A storage writer who can change the bytes of a mapped object while it is decrypted.

OpenSSL's AES-GCM reads each chunk twice (GHASH, then CTR).  Were a reader to decrypt straight
from an mmap of a file in storage, a writer rewriting the file between the two passes would get
plaintext released that the tag never authenticated.  So only process-private memory (bytes,
bytearray, BytesIO) is decrypted in place; shared mappings are copied span by span first.
"""

from __future__ import annotations

import io
import mmap
from pathlib import Path

import pytest

import envcrypt
from envcrypt.chunked import ChunkCipher
from envcrypt.errors import IntegrityError
from envcrypt.format import CHUNK_SIZE, parse_header

C = CHUNK_SIZE


def pattern(size: int) -> bytes:
    return bytes((i * 31 + i // 251) % 256 for i in range(size))


def _write(tmp: Path, blob: bytes) -> Path:
    path = tmp / "object.envc"
    path.write_bytes(blob)
    return path


def test_private_memory_is_read_in_place_and_shared_memory_by_copy(tmp_path: Path) -> None:
    """A mapping of a file in storage can change under AES-GCM (a storage writer): copied first."""
    blob = envcrypt.encrypt(pattern(100))
    for private in (blob, bytearray(blob), memoryview(blob), io.BytesIO(blob)):
        assert envcrypt.open_reader(private)._view_of is not None
    with open(_write(tmp_path, blob), "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        for shared in (mm, memoryview(mm)):
            reader = envcrypt.open_reader(shared)
            assert reader._view_of is None and reader.read() == pattern(100)
            reader.close()
            if isinstance(shared, memoryview):
                shared.release()
        mm.close()


@pytest.mark.parametrize("size", [0, 5, C, 256 * C - 1, 256 * C, 600 * C + 3])
def test_decrypt_of_a_shared_mapping_copies_span_by_span(size: int, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = pattern(size)
    blob = envcrypt.encrypt(data)
    with open(_write(tmp_path, blob), "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        opened: list[bool] = []
        real = ChunkCipher.open

        def spy(self: ChunkCipher, first: int, src: memoryview, dst: memoryview, final: bool) -> int:
            opened.append(isinstance(src.obj, bytearray))  # a private copy, never the mapping
            return real(self, first, src, dst, final)

        real_single = ChunkCipher.open_single

        def spy_single(self: ChunkCipher, src: bytes | memoryview) -> bytes:  # a body of one chunk
            opened.append(type(src) is bytes)  # a private copy, never a view of the mapping
            return real_single(self, src)

        monkeypatch.setattr(ChunkCipher, "open", spy)
        monkeypatch.setattr(ChunkCipher, "open_single", spy_single)
        assert envcrypt.decrypt(view) == data
        assert opened and all(opened)
        view.release()
        mm.close()


@pytest.mark.parametrize("size", [0, 1024, C - 1, 600 * C + 3])
def test_decrypt_of_a_tampered_shared_mapping_fails_whole(size: int, tmp_path: Path) -> None:
    data = pattern(size)
    blob = bytearray(envcrypt.encrypt(data))
    at = parse_header(bytes(blob))[1] + 56
    blob[at + 500 * (C + 16) + 9 if size > C else len(blob) - 1] ^= 1  # in the third span, or the tag
    with open(_write(tmp_path, bytes(blob)), "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        view = memoryview(mm)
        with pytest.raises(IntegrityError):
            envcrypt.decrypt(view)
        view.release()
        mm.close()
