"""EnvcryptFileSystem's own rules (envcrypt/fs/filesystem.py): the root is the target's root, and
pickles and JSON carry only allow-listed target options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from envcrypt.fs import EnvcryptFileSystem


def test_root_paths_are_the_targets_root_not_the_current_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "only-in-cwd").write_bytes(b"")
    fs = EnvcryptFileSystem(key_uri="local:default", skip_instance_cache=True)
    for root in ("/", "file:///", "envcrypt::file:///"):
        assert fs._strip_protocol(root) == "/"
    listed = fs.ls("/", detail=False)
    assert sorted(listed) == sorted(LocalFileSystem().ls("/", detail=False))
    assert str(tmp_path / "only-in-cwd") not in listed
    efs, path = fsspec.core.url_to_fs("envcrypt::file:///")
    assert path == "/" and efs.isdir(path)


@pytest.mark.parametrize("options", [
    {"api_key": "S3CR3T"}, {"headers": {"Authorization": "Bearer S3CR3T"}}, {"private_key": "S3CR3T"},
    {"client_kwargs": {"aws_secret_access_key": "S3CR3T", "endpoint_url": "http://127.0.0.1:9"}},
    {"an_option_nobody_reviewed": "S3CR3T", "anon": True},
])
def test_pickles_and_json_carry_only_allowlisted_target_options(options: dict[str, Any]) -> None:
    import pickle

    from fsspec.implementations.memory import MemoryFileSystem

    built = EnvcryptFileSystem(target_protocol="memory", target_options=options, skip_instance_cache=True)
    given = EnvcryptFileSystem(fs=MemoryFileSystem(skip_instance_cache=True, **options), skip_instance_cache=True)
    for fs in (built, given):
        assert b"S3CR3T" not in pickle.dumps(fs)
        assert "S3CR3T" not in fs.to_json()
        copy = pickle.loads(pickle.dumps(fs))
        restored = EnvcryptFileSystem.from_json(fs.to_json())
        kept = {k: v for k, v in options.items() if k in ("anon", "client_kwargs")}
        if "client_kwargs" in kept:
            kept["client_kwargs"] = {"endpoint_url": "http://127.0.0.1:9"}
        assert copy._target_options == restored._target_options == kept
    trusted = EnvcryptFileSystem(target_protocol="memory", target_options=options, pickle_credentials=True,
                                 skip_instance_cache=True)
    assert b"S3CR3T" in pickle.dumps(trusted) and "S3CR3T" in trusted.to_json()  # asked for
