"""The test suite needs nothing outside the repository (issue 8: a fresh clone tests green).

Every ``.py`` file under ``tests/`` is scanned for

- references to the workspace's sibling ``shared`` directory (its vectors now live
  in ``tests/vectors/wycheproof/``),
- absolute paths on a developer's machine (home directories, ``/work``, drive letters, ...)
  or to wherever this checkout happens to live,
- paths built from ``__file__`` (``.parent``, ``.parents[n]``, ``/ ".."``, ``os.path.dirname``)
  that climb out of the repository.

The needles are assembled at run time so this file does not flag itself.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
WYCHEPROOF = TESTS / "vectors" / "wycheproof"

_UP = "." * 2
_SHARED = "sh" + "ared"
NEEDLES = (
    _UP + "/" + _SHARED,
    _UP + "\\" + _SHARED,
    _SHARED + "/" + "vectors",
    _SHARED + "\\" + "vectors",
)
# Roots that only ever name a real machine's files, never a fake in-memory test path.
_ROOTS = ("home", "Users", "root", "work", "mnt", "media", "srv", "opt", "private")
ABSOLUTE = re.compile(
    r"(?<![\w:/.}\])])(?:/(?:" + "|".join(_ROOTS) + r")/|[A-Za-z]:[\\/](?=\w)|[~]/)"
)


def python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


# ---------------------------------------------------------------- the checks


def text_problems(text: str) -> list[str]:
    """Needles and absolute machine paths anywhere in the text (code, strings or comments)."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for needle in NEEDLES:
            if needle in line:
                found.append(f"line {lineno}: refers to {needle!r}")
        if str(REPO) + os.sep in line or line.rstrip().endswith(str(REPO)):
            found.append(f"line {lineno}: absolute path of this checkout")
        for m in ABSOLUTE.finditer(line):
            found.append(f"line {lineno}: absolute path {line[m.start():m.start() + 40].strip()!r}")
    return found


class _PathEvaluator:
    """Statically evaluates path expressions rooted at ``__file__``."""

    def __init__(self, file: Path, tree: ast.Module) -> None:
        self.file = file
        self.names: dict[str, ast.expr] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.names[node.targets[0].id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                self.names[node.target.id] = node.value

    def eval(self, node: ast.AST, depth: int = 0) -> str | None:
        """The absolute path ``node`` denotes (not normalised), or None if it is not such a path."""
        if depth > 50:
            return None
        ev = lambda n: self.eval(n, depth + 1)  # noqa: E731
        if isinstance(node, ast.Name):
            if node.id == "__file__":
                return str(self.file)
            return ev(self.names[node.id]) if node.id in self.names else None
        if isinstance(node, ast.Call):
            func, args = node.func, node.args
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("Path", "PurePath") and len(args) == 1:
                return ev(args[0])
            if name in ("resolve", "absolute") and isinstance(func, ast.Attribute) and not args:
                return ev(func.value)
            if name in ("dirname", "abspath", "realpath", "normpath") and len(args) == 1:
                inner = ev(args[0])
                return None if inner is None else os.path.join(inner, _UP) if name == "dirname" else inner
            if name in ("join", "joinpath") and args:
                base = ev(func.value) if name == "joinpath" and isinstance(func, ast.Attribute) else ev(args[0])
                rest = args if name == "joinpath" else args[1:]
                if base is None or not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in rest):
                    return None
                return os.path.join(base, *(a.value for a in rest))  # type: ignore[union-attr]
            return None
        if isinstance(node, ast.Attribute) and node.attr == "parent":
            inner = ev(node.value)
            return None if inner is None else os.path.join(inner, _UP)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
            inner = ev(node.value.value)
            index = node.slice
            if inner is None or not (isinstance(index, ast.Constant) and isinstance(index.value, int)):
                return None
            return os.path.join(inner, *[_UP] * (index.value + 1))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            left = ev(node.left)
            right = node.right
            if left is not None and isinstance(right, ast.Constant) and isinstance(right.value, str):
                return os.path.join(left, right.value)
        return None


def escaping_paths(text: str, file: Path) -> list[str]:
    """Paths built from ``__file__`` that leave the repository."""
    tree = ast.parse(text)
    evaluator = _PathEvaluator(file, tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Call, ast.Attribute, ast.Subscript, ast.BinOp)):
            continue
        path = evaluator.eval(node)
        if path is None:
            continue
        resolved = Path(os.path.normpath(path))
        if resolved != REPO and REPO not in resolved.parents:
            found.append(f"line {node.lineno}: {ast.unparse(node)} leaves the repository ({resolved})")
    return sorted(set(found))


def problems(text: str, file: Path) -> list[str]:
    return text_problems(text) + escaping_paths(text, file)


# ---------------------------------------------------------------- the suite itself


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(TESTS)))
def test_no_reference_outside_the_repository(path: Path) -> None:
    assert problems(path.read_text(encoding="utf-8"), path) == []


def test_every_wycheproof_file_the_tests_name_is_in_the_repository() -> None:
    named = set()
    for path in python_files():
        named |= set(re.findall(r"[\"']([\w.-]+_test\.json)[\"']", path.read_text(encoding="utf-8")))
    assert named, "expected the vector tests to name their Wycheproof files"
    for name in sorted(named):
        data = json.loads((WYCHEPROOF / name).read_text())
        assert data["numberOfTests"] > 0, name


def test_vendored_vectors_carry_licence_and_provenance_and_stay_small() -> None:
    assert "Apache License" in (WYCHEPROOF / "LICENSE").read_text()
    readme = (WYCHEPROOF / "README.md").read_text()
    assert "C2SP/wycheproof" in readme
    total = sum(p.stat().st_size for p in WYCHEPROOF.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024


# ---------------------------------------------------------------- the checker catches what it should


HERE = TESTS / "test_example.py"


@pytest.mark.parametrize(
    "source",
    [
        f'VECTORS = Path(__file__).resolve().parents[1].parent / "{_SHARED}" / "vectors"\n',
        f'W = Path(__file__).resolve().parents[2] / "{_SHARED}" / "vectors" / "wycheproof"\n',
        f'HERE = Path(__file__).parent\nX = HERE / "{_UP}" / "{_UP}" / "data"\n',
        f'X = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "{_UP}", "x")\n',
        'X = Path(__file__).parent.parent.parent.joinpath("vectors")\n',
        f'X = open("{_UP}/{_SHARED}/README.md")\n',
        f'# see {_SHARED}/vectors/README.md\n',
        f'X = Path("/{"home"}/alice/vectors/a.json")\n',
        f'X = "/{"work"}/{_SHARED}/x"\n',
        f'X = r"C:{chr(92)}Users{chr(92)}me"\n',
        f'X = Path("{"~"}/vectors")\n',
        f'X = "{REPO}/tests/vectors/x.json"\n',
    ],
)
def test_checker_flags_references_outside_the_repository(source: str) -> None:
    assert problems(source, HERE)


@pytest.mark.parametrize(
    "source",
    [
        'W = Path(__file__).resolve().parent / "vectors" / "wycheproof"\n',
        'DOC = (Path(__file__).resolve().parents[1] / "FORMAT.md").read_text()\n',
        'X = Path(__file__).parent / "vectors" / ".." / "golden.py"\n',
        'fs.pipe_file("/lake/tenants/a/x.csv", b"")\nfs.ls("/data/x")\n',
        'url = "s3://bucket/home/x"; other = f"{root}/opt/x"; key = "local:default/1"\n',
        'def shared_vault(): ...\n',
    ],
)
def test_checker_accepts_paths_inside_the_repository(source: str) -> None:
    assert problems(source, HERE) == []
