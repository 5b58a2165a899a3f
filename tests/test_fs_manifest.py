"""Signed manifests (envcrypt/fs/manifest.py): root, signer, serial and every file are checked."""

from __future__ import annotations

from .fs_helpers import make_key, memory_envcrypt


def test_manifest_checks_root_signer_serial_and_every_file() -> None:
    from envcrypt.fs import manifest as mf

    make_key("signer", "ec-p256")
    make_key("intruder", "ec-p256")
    fs, target = memory_envcrypt()
    fs.pipe_file("/lake/2025/part-0", b"old year")
    first = mf.sign_manifest(fs, "/lake/2025", "local:signer")
    fs.pipe_file("/lake/2026/part-0", b"new year")
    mf.sign_manifest(fs, "/lake/2026", "local:signer")
    assert mf.verify_manifest(fs, "/lake/2026", signer="local:signer").ok
    # the whole 2025 dataset, manifest included, copied over 2026
    snapshot = {n: target.cat_file(f"/lake/2026/{n}") for n in ("part-0", mf.MANIFEST_NAME)}
    for name in ("part-0", mf.MANIFEST_NAME):
        target.cp_file(f"/lake/2025/{name}", f"/lake/2026/{name}")
    result = mf.verify_manifest(fs, "/lake/2026")
    assert not result.ok and "root" in (result.error or "")
    assert mf.verify_manifest(fs, "/lake/2026", expected_root="/lake/2025").ok  # a deliberate move
    for name, data in snapshot.items():
        target.pipe_file(f"/lake/2026/{name}", data)
    # files the old scan ignored are listed now
    target.pipe_file("/lake/2026/sub/.envcrypt-manifest.json", b"x")
    target.pipe_file("/lake/2026/.envcrypt-tmp-zzz", b"x")
    assert sorted(mf.verify_manifest(fs, "/lake/2026").added) == [".envcrypt-tmp-zzz", "sub/.envcrypt-manifest.json"]
    target.rm_file("/lake/2026/sub/.envcrypt-manifest.json")
    target.rm_file("/lake/2026/.envcrypt-tmp-zzz")
    # another vault key signing: reported, and an error when the signer is pinned
    second = mf.sign_manifest(fs, "/lake/2026", "local:intruder")
    unpinned = mf.verify_manifest(fs, "/lake/2026")
    assert unpinned.ok and unpinned.signed_by == "local:intruder/1" and not unpinned.signer_checked
    pinned = mf.verify_manifest(fs, "/lake/2026", signer="local:signer")
    assert not pinned.ok and "intruder" in (pinned.error or "")
    # serials grow; an older manifest is rejected against a remembered minimum
    assert first.serial == 1 and second.serial == 2
    assert not mf.verify_manifest(fs, "/lake/2025", min_serial=2).ok
    assert mf.verify_manifest(fs, "/lake/2026", min_serial=2).ok
