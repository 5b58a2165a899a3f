"""Rules about the code's shape, checked on its syntax tree (issue 15).

- no ``assert`` statement in envcrypt/: it vanishes under ``python -O``; an invariant
  raises ``envcrypt.errors.InternalError`` instead;
- no private name (``_x``) imported from, or reached into, another envcrypt module:
  what another module needs is public there (a package-private module such as
  ``_buffers`` is fine: its name is private to the package, its contents are its API);
- test files import shared helpers from helper modules, never from another test file;
- a test file imports an optional dependency (pyarrow, pandas, ...) at module level
  only after ``pytest.importorskip`` of it, so a missing extra skips, never errors.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "envcrypt"

#: (importing module, imported name) pairs that break the private-import rule today, each
#: to be removed when its module is reworked.  Empty: keep it so, the list is for a merge
#: that brings one in and cannot fix it at once.
ALLOWED_PRIVATE_IMPORTS: frozenset[tuple[str, str]] = frozenset()

#: optional dependencies (extras) a test module must importorskip before importing
OPTIONAL = ("pyarrow", "pandas", "dask", "distributed", "polars", "duckdb", "h5py", "xarray", "zarr", "adlfs",
            "azure", "s3fs", "boto3", "botocore")


def _sources(root: Path) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path, ast.parse(path.read_text(), filename=str(path))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    """A module or package of envcrypt (a C extension counts by its source file)."""
    base = PACKAGE.parent.joinpath(*dotted.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists() or base.with_suffix(".c").exists()


def _imported_from(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``from X import ...`` names."""
    if not node.level:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


# ---------------------------------------------------------------- production code


def test_no_assert_in_the_package() -> None:
    found = [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
             for path, tree in _sources(PACKAGE) for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert found == [], "use `if not ...: raise InternalError(...)` (asserts vanish under -O)"


def private_imports() -> set[tuple[str, str]]:
    """(importing module, ``module.name``) for every private name imported from another envcrypt module."""
    found = set()
    for path, tree in _sources(PACKAGE):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _imported_from(path, node)
                if source.split(".")[0] != "envcrypt":
                    continue
                for alias in node.names:
                    if _private(alias.name) and not _is_module(f"{source}.{alias.name}"):
                        found.add((_module_name(path), f"{source}.{alias.name}"))
    return found


def test_no_private_name_is_imported_across_modules() -> None:
    assert private_imports() - ALLOWED_PRIVATE_IMPORTS == set()


def test_the_allow_list_holds_only_live_exceptions() -> None:
    """An entry whose import is gone is removed from the list, so the list only shrinks."""
    assert ALLOWED_PRIVATE_IMPORTS - private_imports() == set()


def test_no_private_attribute_is_reached_through_a_module() -> None:
    """``from . import chunked`` then ``chunked._segment(...)`` is the same breach as importing it."""
    found = []
    for path, tree in _sources(PACKAGE):
        modules: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _imported_from(path, node).split(".")[0] == "envcrypt":
                source = _imported_from(path, node)
                modules.update({alias.asname or alias.name: f"{source}.{alias.name}"
                                for alias in node.names if _is_module(f"{source}.{alias.name}")})
            elif isinstance(node, ast.Import):
                modules.update({alias.asname: alias.name for alias in node.names
                                if alias.asname and alias.name.split(".")[0] == "envcrypt"})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in modules and _private(node.attr)):
                found.append(f"{_module_name(path)}:{node.lineno}: {modules[node.value.id]}.{node.attr}")
    assert found == []


def test_the_checks_see_a_breach(tmp_path: Path) -> None:
    """The rules above are not blind: a planted breach of each is found."""
    tree = ast.parse("from .chunked import _segment\nfrom . import _buffers\nassert x\n")
    path = PACKAGE / "planted.py"
    imports = [(_imported_from(path, n), a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
               for a in n.names]
    assert imports == [("envcrypt.chunked", "_segment"), ("envcrypt", "_buffers")]
    assert not _is_module("envcrypt.chunked._segment") and _is_module("envcrypt._buffers")
    assert any(isinstance(n, ast.Assert) for n in ast.walk(tree))


# ---------------------------------------------------------------- the tests themselves


def _test_files() -> list[tuple[Path, ast.Module]]:
    return [(p, t) for p, t in _sources(TESTS) if p.name.startswith("test_")]


def test_test_files_import_helpers_not_other_test_files() -> None:
    found = []
    for path, tree in _test_files():
        for node in ast.walk(tree):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.relative_to(TESTS)}:{node.lineno}: {n}" for n in names
                      if any(part.startswith("test_") for part in n.split("."))]
    assert found == [], "move what several test files share into a helper module (tests/*_helpers.py)"


def _skipped_at_module_level(tree: ast.Module) -> set[str]:
    """Top-level distributions a module importorskips (``pytest.importorskip("pyarrow.parquet")`` -> pyarrow)."""
    skipped = set()
    for node in tree.body:
        for call in ast.walk(node):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "importorskip" and call.args and isinstance(call.args[0], ast.Constant)):
                skipped.add(str(call.args[0].value).split(".")[0])
    return skipped


@pytest.mark.parametrize("path", [p for p, _ in _test_files()], ids=lambda p: str(p.relative_to(TESTS)))
def test_optional_dependencies_are_importorskipped(path: Path) -> None:
    tree = ast.parse(path.read_text())
    skipped = _skipped_at_module_level(tree)
    bare = []
    for node in tree.body:  # module level only: imports inside a test run after its own importorskip
        names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        bare += [n for n in names if n.split(".")[0] in OPTIONAL and n.split(".")[0] not in skipped]
    assert bare == [], f"pytest.importorskip these first, or move the tests that need them to their own file: {bare}"


# ---------------------------------------------------------------- invariants fail loudly


def test_internal_error_is_a_typed_bug_report() -> None:
    from envcrypt.errors import EnvcryptError, InternalError

    exc = InternalError("a reader without a size")
    assert isinstance(exc, EnvcryptError) and isinstance(exc, RuntimeError)
    assert str(exc) == "internal error (a bug in envcrypt): a reader without a size"


def test_a_broken_reader_invariant_raises_internal_error_even_under_o() -> None:
    """Where an assert stood: the check stays under ``python -O`` and nothing is returned."""
    import io
    import subprocess
    import sys

    import envcrypt
    from envcrypt.errors import InternalError

    reader = envcrypt.open_reader(io.BytesIO(envcrypt.encrypt(b"secret" * 1000)))
    reader._size = None  # the state the invariant rules out
    with pytest.raises(InternalError):
        reader.read(10)
    code = ("import io, envcrypt\n"
            "r = envcrypt.open_reader(io.BytesIO(envcrypt.encrypt(b'secret' * 1000)))\n"
            "r._size = None\n"
            "try:\n    r.read(10)\nexcept envcrypt.errors.InternalError:\n    print('raised')\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, check=True,
                         cwd=PACKAGE.parent)
    assert out.stdout.strip() == "raised"


def test_the_cli_reports_an_internal_error_as_a_bug(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from envcrypt.cli import core, main
    from envcrypt.errors import InternalError

    def broken(args: object) -> int:
        raise InternalError("planted")

    monkeypatch.setattr(core, "_encrypt", broken)
    (tmp_path / "in").write_bytes(b"x")
    assert main(["encrypt", str(tmp_path / "in"), str(tmp_path / "out")]) == 1  # not 2: not the input's fault
    err = capsys.readouterr().err
    assert "InternalError" in err and "a bug in envcrypt" in err and "--debug" in err
