"""The fs command line: ls|cat|cp|put|get|rm|inspect|rewrap|migrate|manifest|encrypt-tree|decrypt-tree."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

import envcrypt
from envcrypt.cli import main

from .fs_helpers import make_key


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_put_ls_cat_get_cp_rm_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_key("cli")
    local = tmp_path / "report.csv"
    local.write_bytes(b"id,card\n1,4111111111111111\n" * 1000)
    store = tmp_path / "store"
    store.mkdir()
    assert _run(capsys, "put", str(local), f"file://{store}/report.csv", "--key", "local:cli")[0] == 0
    assert (store / "report.csv").read_bytes()[:8] == b"ENVCRYPT"
    code, out = _run(capsys, "ls", f"file://{store}", "--json")
    rows = json.loads(out)
    assert code == 0 and rows[0]["size"] == local.stat().st_size and rows[0]["encrypted"] is True
    assert rows[0]["stored_size"] == (store / "report.csv").stat().st_size
    assert main(["cat", f"{store}/report.csv", "--range", "0", "8"]) == 2  # read under the default key only
    assert "UntrustedKeyError" in capsys.readouterr().err
    assert _run(capsys, "cat", f"{store}/report.csv", "--range", "0", "8", "--trust", "local:cli") == (0, "id,card\n")
    code, out = _run(capsys, "inspect", f"{store}/report.csv", "--json")
    assert json.loads(out)["key_slots"][0]["key_uri"] == "local:cli/1"
    assert _run(capsys, "cp", f"{store}/report.csv", f"{store}/copy.csv")[0] == 0
    assert (store / "copy.csv").read_bytes() == (store / "report.csv").read_bytes()
    assert _run(capsys, "get", f"{store}/copy.csv", str(tmp_path / "back.csv"), "--trust", "local:cli")[0] == 0
    assert (tmp_path / "back.csv").read_bytes() == local.read_bytes()
    assert _run(capsys, "rm", f"{store}/copy.csv")[0] == 0
    assert not (store / "copy.csv").exists()
    plain = store / "plain.txt"
    plain.write_bytes(b"not encrypted")
    assert main(["cat", str(plain)]) == 2  # NotEncryptedError, a clear message
    assert "NotEncryptedError" in capsys.readouterr().err
    assert _run(capsys, "cat", str(plain), "--plaintext", "allow")[1] == "not encrypted"


def test_trees_migrate_rewrap_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(5):
        (src / "d" / f"{i}.txt").write_bytes(b"row\n" * (i * 100))
    enc = f"file://{tmp_path}/enc"
    code, out = _run(capsys, "encrypt-tree", str(src), enc, "--json", "--no-progress")
    assert code == 0 and json.loads(out)["done"] == 5
    assert main(["encrypt-tree", str(src), enc, "--json"]) == 0  # resumable: all skipped
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"done": 0, "skipped": 5, "failed": []}
    assert "encrypt-tree: 5/5" in captured.err  # the plain progress counter (no tqdm installed)
    make_key("next")
    code, out = _run(capsys, "rewrap", enc, "--to", "local:next", "-r", "--json", "--no-progress")
    assert code == 0 and json.loads(out)["done"] == 5  # re-encrypted under fresh DEKs for local:next
    code, out = _run(capsys, "rewrap", enc, "--to", "local:default", "-r", "--json", "--no-progress")
    assert code == 1 and len(json.loads(out)["failed"]) == 5  # local:next is not a key this URL names
    assert "UntrustedKeyError" in out
    make_key("signer", "ec-p256")
    assert _run(capsys, "manifest", "sign", enc, "--key", "local:signer")[0] == 0
    code, out = _run(capsys, "manifest", "verify", enc, "--json")
    assert code == 0 and json.loads(out)["ok"] is True and json.loads(out)["signer_checked"] is False
    code, out = _run(capsys, "manifest", "verify", enc, "--key", "local:signer", "--min-serial", "1")
    assert code == 0 and "signed by local:signer/1" in out
    make_key("other-signer", "ec-p256")
    code, out = _run(capsys, "manifest", "verify", enc, "--key", "local:other-signer")
    assert code == 1 and "not by local:other-signer" in out
    code, out = _run(capsys, "manifest", "verify", enc, "--min-serial", "2")
    assert code == 1 and "older than the minimum 2" in out
    (tmp_path / "enc" / "d" / "0.txt").unlink()
    code, out = _run(capsys, "manifest", "verify", enc)
    assert code == 1 and "removed     d/0.txt" in out
    code, out = _run(capsys, "decrypt-tree", enc, str(tmp_path / "dec"), "--json", "--no-progress",
                     "--trust", "local:next")
    assert code == 0 and (tmp_path / "dec" / "d" / "3.txt").read_bytes() == b"row\n" * 300
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "p.csv").write_bytes(b"a,b\n")
    code, out = _run(capsys, "migrate", str(tmp_path / "plain"), "--json", "--no-progress")
    assert json.loads(out)["done"] == 1 and (tmp_path / "plain" / "p.csv").read_bytes()[:8] == b"ENVCRYPT"


@pytest.mark.cloud
def test_cli_over_s3(moto_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import boto3

    bucket = f"cli-{uuid.uuid4().hex[:10]}"
    client: Any = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    options = json.dumps({"s3": {"client_kwargs": {"endpoint_url": moto_server}}})
    (tmp_path / "x.bin").write_bytes(b"\x00" * 70_000)
    assert _run(capsys, "put", str(tmp_path / "x.bin"), f"s3://{bucket}/k/x.bin", "-o", options)[0] == 0
    code, out = _run(capsys, "ls", f"s3://{bucket}/k", "-o", options, "--json")
    assert json.loads(out)[0]["size"] == 70_000
    raw = client.get_object(Bucket=bucket, Key="k/x.bin")["Body"].read()
    assert raw[:8] == b"ENVCRYPT" and len(raw) > 70_000


# ---------------------------------------------------------------- paths, options, prefixes (issue 8, item 6)


def _err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_bare_relative_paths_are_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """``data``, ``raw`` are directories here, never fsspec's ``data:`` filesystem."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.csv").write_bytes(b"id\n1\n")
    code, out = _run(capsys, "encrypt-tree", "raw", "data", "--json", "--no-progress")
    assert code == 0 and json.loads(out)["done"] == 1
    assert (tmp_path / "data" / "a.csv").read_bytes()[:8] == b"ENVCRYPT"
    code, out = _run(capsys, "ls", "data", "--json")
    assert code == 0 and [(Path(r["name"]).name, r["size"]) for r in json.loads(out)] == [("a.csv", 5)]
    assert _run(capsys, "cat", "data/a.csv") == (0, "id\n1\n")
    assert _run(capsys, "get", "-r", "data", "back", "--no-progress")[0] == 0
    assert (tmp_path / "back" / "a.csv").read_bytes() == b"id\n1\n"


def test_top_level_storage_options_that_name_no_protocol_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An ``endpoint_url`` at the top level would be dropped (and the command sent to real AWS)."""
    (tmp_path / "x").write_bytes(b"x")
    for argv in (["ls", str(tmp_path)], ["put", str(tmp_path / "x"), f"{tmp_path}/y"],
                 ["encrypt-tree", str(tmp_path), f"{tmp_path}/enc", "--no-progress"]):
        assert main([*argv, "-o", '{"endpoint_url": "http://127.0.0.1:9"}']) == 2
        lines = _err_lines(capsys)
        assert len(lines) == 1 and "StorageOptionsError" in lines[0]
        assert "'endpoint_url' is not a protocol name" in lines[0] and '{"s3": {"endpoint_url"' in lines[0]
    assert main(["ls", str(tmp_path), "-o", "{not json"]) == 2
    assert "is not JSON" in _err_lines(capsys)[0]
    assert not (tmp_path / "y").exists() and not (tmp_path / "enc").exists()


def test_one_object_commands_on_a_prefix_say_use_r(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    (store / "p").mkdir(parents=True)
    (tmp_path / "a.csv").write_bytes(b"a\n")
    assert _run(capsys, "put", str(tmp_path / "a.csv"), f"{store}/p/a.csv")[0] == 0
    for argv in (["get", f"{store}/p", str(tmp_path / "out")], ["rm", f"{store}/p"],
                 ["rewrap", f"{store}/p", "--to", "local:default"], ["cat", f"{store}/p"],
                 ["put", str(store), f"{tmp_path}/elsewhere"]):
        assert main(argv) == 2, argv
        lines = _err_lines(capsys)
        assert len(lines) == 1 and ("is a prefix; use -r" in lines[0] or "is a directory; use -r" in lines[0])
        assert str(tmp_path) in lines[0]
    assert (store / "p" / "a.csv").exists() and not (tmp_path / "out").exists()
    code, out = _run(capsys, "rewrap", f"{store}/p", "--to", "local:default", "-r", "--json", "--no-progress")
    assert code == 0 and json.loads(out)["done"] == 0 and json.loads(out)["skipped"] == 1
    code, out = _run(capsys, "rm", "-r", f"{store}/p", "--json")
    assert code == 0 and json.loads(out)["done"] == 1 and not (store / "p").exists()


def test_get_r_of_a_signed_prefix_skips_the_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.csv").write_bytes(b"a\n")
    enc = f"{tmp_path}/enc"
    assert _run(capsys, "put", "-r", str(src), enc, "--no-progress")[0] == 0
    make_key("signer", "ec-p256")
    assert _run(capsys, "manifest", "sign", enc, "--key", "local:signer")[0] == 0
    code, out = _run(capsys, "get", "-r", enc, str(tmp_path / "back"), "--json", "--no-progress")
    assert code == 0 and json.loads(out) == {"done": 1, "skipped": 0, "failed": []}
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["a.csv"]


def test_not_encrypted_hint_names_the_cli_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain.txt").write_bytes(b"hello")
    assert main(["cat", str(tmp_path / "plain.txt")]) == 2
    line = _err_lines(capsys)[0]
    assert "--plaintext allow" in line and "plaintext='allow'" not in line


def test_put_json_summary_and_progress_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``put`` has a --json result; -r shows files, bytes, rate and ETA as plain lines off a terminal."""
    (tmp_path / "one.bin").write_bytes(b"\x01" * 3000)
    code, out = _run(capsys, "put", str(tmp_path / "one.bin"), f"{tmp_path}/enc/one.bin", "--json")
    assert code == 0 and json.loads(out)["done"] == 1
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.bin").write_bytes(b"\x00" * 2048)
    assert main(["put", "-r", str(src), f"{tmp_path}/tree", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["done"] == 3
    assert "put" not in captured.out
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("encrypt-tree: 3/3 files, 6.0 KiB of 6.0 KiB, ") and "/s" in last and "done in" in last


def test_cross_store_cli_copy_publishes_nothing_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import uuid

    import fsspec

    from envcrypt.cli import fs as cli_fs
    from envcrypt.cli import main

    src = f"memory://cp-{uuid.uuid4().hex[:8]}/obj"
    efs, path = fsspec.core.url_to_fs("envcrypt::" + src)
    efs.pipe_file(path, os.urandom(100_000))
    (tmp_path / "dst").mkdir()
    dst = tmp_path / "dst" / "obj"
    dst.write_bytes(b"the old copy")
    real = cli_fs.shutil.copyfileobj

    def half_then_fail(s: Any, d: Any, length: int = 0) -> None:
        d.write(s.read(1000))
        raise OSError("connection reset")

    monkeypatch.setattr(cli_fs.shutil, "copyfileobj", half_then_fail)
    assert main(["cp", src, f"file://{dst}"]) == 2  # the CLI: one line, no traceback
    assert "connection reset" in capsys.readouterr().err
    assert dst.read_bytes() == b"the old copy" and os.listdir(tmp_path / "dst") == ["obj"]
    monkeypatch.setattr(cli_fs.shutil, "copyfileobj", real)
    assert main(["cp", src, f"file://{dst}"]) == 0
    assert dst.read_bytes() == efs.target.cat_file(path)
    efs.target.rm(path)


def test_cross_store_cli_copy_takes_the_destination_policys_key(tmp_path: Path) -> None:
    import json
    import uuid

    import fsspec

    from envcrypt.cli import main

    make_key("tenant-b")
    src = f"memory://cp-{uuid.uuid4().hex[:8]}/obj"
    efs, path = fsspec.core.url_to_fs("envcrypt::" + src)
    data = os.urandom(50_000)
    efs.pipe_file(path, data)
    (tmp_path / "lake" / "b").mkdir(parents=True)
    options = json.dumps({"envcrypt": {"key_policy": {f"file://{tmp_path}/lake/b/": "local:tenant-b"}}})
    assert main(["cp", src, f"file://{tmp_path}/lake/b/obj", "-o", options]) == 0
    assert main(["cp", src, f"file://{tmp_path}/lake/plain-copy", "-o", options]) == 0
    copied = (tmp_path / "lake" / "b" / "obj").read_bytes()
    assert envcrypt.inspect(copied).key_uris == ["local:tenant-b/1"]
    assert (tmp_path / "lake" / "plain-copy").read_bytes() == efs.target.cat_file(path)  # no rule: as it is
    assert envcrypt.decrypt(copied, trusted_keys="local:tenant-b") == data
    efs.target.rm(path)
