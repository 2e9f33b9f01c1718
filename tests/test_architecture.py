"""docs/architecture.md against the tree: every module where the document says it is, the one-way import rule,
and the module size bound."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synthserve", "training", "serving", "torchserve_handler")
GENERATED = ("serving/proto/",)
MAX_MODULE_LINES = 310  # "no module in serving/ or training/ over ~300 lines"
_ENTRY = re.compile(r"^(?P<indent>(?:  )*)(?P<name>[a-z_0-9]+(?:/|\.py))(?:\s|$)")


def _modules() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if path.name != "__init__.py" and not relative.startswith(GENERATED):
                found.add(relative)
    return found


def _documented() -> set[str]:
    """Module paths drawn in docs/architecture.md's trees: a directory line (`name/`) opens a level, a module line
    (`name.py`) one indent (two spaces) below it is a file of that directory."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    paths: set[str] = set()
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        stack: list[str] = []
        for line in block.splitlines():
            match = _ENTRY.match(line)
            if match is None:
                continue
            depth = len(match["indent"]) // 2
            if depth > len(stack):
                continue  # not inside a drawn directory (the overview diagram)
            stack = stack[:depth]
            name = match["name"]
            if name.endswith("/"):
                stack.append(name)
            else:
                paths.add("".join(stack) + name)
    return paths


def test_the_documented_house_matches_the_tree() -> None:
    modules, documented = _modules(), _documented()
    assert sorted(modules - documented) == [], "modules missing from docs/architecture.md"
    assert sorted(documented - modules) == [], "docs/architecture.md names modules that do not exist"


def _imports(path: Path) -> set[str]:
    """Top-level packages a module imports at module level (imports inside functions are deferred on purpose)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


# What each package may import at module level, besides the standard library.
ALLOWED = {
    "synthserve/contract": {"numpy", "synthserve"},
    "torchserve_handler": {"numpy", "synthserve", "torchserve_handler", "yaml"},
    "serving": {
        "numpy",
        "pandas",
        "grpc",
        "grpc_health",
        "grpc_reflection",
        "google",
        "prometheus_client",
        "serving",
        "synthserve",
        "pyarrow",
        "tqdm",
    },
}
FORBIDDEN = {"training": {"serving", "torchserve_handler"}}
EXCEPTIONS = {
    "serving/runtime_torchscript.py": {"torch"},  # --runtime torchscript
    "synthserve/contract/frames.py": {"pandas"},  # DataFrame columns, for the client and training (both have pandas)
}


@pytest.mark.parametrize("package", sorted({*ALLOWED, *FORBIDDEN}))
def test_one_way_imports(package: str) -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(GENERATED):
            continue
        imported = _imports(path) - stdlib
        if package in ALLOWED:
            extra = imported - ALLOWED[package] - EXCEPTIONS.get(relative, set())
        else:
            extra = imported & FORBIDDEN[package]
        if extra:
            wrong[relative] = sorted(extra)
    assert wrong == {}


@pytest.mark.parametrize("package", ["serving", "training"])
def test_modules_stay_small(package: str) -> None:
    sizes = {
        path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
        for path in (ROOT / package).rglob("*.py")
        if not path.relative_to(ROOT).as_posix().startswith(GENERATED)
    }
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}
