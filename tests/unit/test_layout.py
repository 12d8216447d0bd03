"""The walls between the project's parts hold: who may import whom (README, "Layout")."""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "bootstrap" / "src"


def _module_name(path: Path) -> str:
    base = AGENT if AGENT in path.parents else ROOT
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Each import of a Python file as (module, names taken from it), relative imports made absolute."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.append((base, [alias.name for alias in node.names]))
    return found


def imported_modules(path: Path) -> set[str]:
    """Every module a Python file imports, relative imports made absolute."""
    found = set()
    for base, names in _imports(path):
        found.add(base)
        found.update(f"{base}.{name}" for name in names)
    return found


def _dependencies(path: Path, modules: Collection[str]) -> set[str]:
    """The `modules` a file depends on: `from pkg import sub` names the submodule, not the package."""
    found = set()
    for base, names in _imports(path):
        subs = {f"{base}.{name}" for name in names} & set(modules)
        found |= subs
        if len(subs) < len(names) or not names:
            found.add(base)
    return found & set(modules)


def _python_files(*folders: str) -> list[Path]:
    files = []
    for folder in folders:
        target = ROOT / folder
        files += [target] if target.is_file() else sorted(target.rglob("*.py"))
    return files


def _imports_of(files: list[Path], *tops: str) -> list[str]:
    """`FILE: module` for each import of a module under one of `tops`."""
    return [
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in sorted(imported_modules(path))
        if name.split(".")[0] in tops
    ]


def test_build_and_publish_code_imports_neither_the_lab_nor_the_tests():
    files = _python_files("box", "tasks.py")
    assert len(files) > 10
    assert _imports_of(files, "lab", "tests") == []


def test_the_lab_never_imports_the_tests():
    files = _python_files("lab")
    assert len(files) > 5
    assert _imports_of(files, "tests") == []


def test_benchmarks_use_the_lab_not_the_tests():
    files = _python_files("bench")
    assert _imports_of(files, "tests") == []
    assert _imports_of(files, "lab"), "bench/ is expected to stand on lab/"


def test_the_agent_imports_nothing_of_the_host_side():
    files = _python_files("bootstrap/src")
    assert _imports_of(files, "box", "lab", "tests", "bench") == []


def test_no_test_module_imports_a_conftest():
    files = _python_files("tests", "bench", "lab")
    assert [line for line in _imports_of(files, "tests") if line.endswith("conftest")
            or ".conftest." in line] == []


def test_no_test_module_imports_another_test_module():
    """Shared test machinery lives in the lab, a conftest fixture or a helper module, not in a test."""
    files = _python_files("tests", "bench", "lab")
    assert [line for line in _imports_of(files, "tests")
            if any(part.startswith("test_") for part in line.split(": ", 1)[1].split("."))] == []


def test_no_two_project_modules_import_each_other_in_a_circle():
    """Imports inside functions and under TYPE_CHECKING count: a circle is a circle in the design."""
    files = _python_files("box", "lab", "bench", "tasks.py", "bootstrap/src")
    names = {_module_name(p): p for p in files}
    graph = {name: _dependencies(path, names) - {name} for name, path in names.items()}
    circles = []
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for nxt in sorted(graph[name]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


# A module over this many lines does several jobs: split it along them (issue 18).
MAX_MODULE_LINES = 400


def test_no_module_of_the_agent_the_build_or_the_lab_is_over_400_lines():
    files = _python_files("bootstrap/src", "box", "lab", "tasks.py")
    assert len(files) > 40
    too_long = {
        str(path.relative_to(ROOT)): lines
        for path in files
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert too_long == {}


@pytest.mark.parametrize(("source", "expected"), [
    ("from lab.procs import free_port\n", {"lab.procs", "lab.procs.free_port"}),
    ("import tests.box.conftest\n", {"tests.box.conftest"}),
    ("from . import netns\n", {"lab", "lab.netns"}),
])
def test_the_import_reader_sees_absolute_and_relative_imports(tmp_path, monkeypatch, source, expected):
    path = ROOT / "lab" / "example.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)

    assert imported_modules(path) == expected


@pytest.mark.parametrize(("source", "expected"), [
    ("from registry_cache.front import spool\n", {"registry_cache.front.spool"}),
    ("from registry_cache.front import Front\n", {"registry_cache.front"}),
    ("from registry_cache.front import Front, spool\n",
     {"registry_cache.front", "registry_cache.front.spool"}),
])
def test_a_circle_counts_a_submodule_taken_from_its_package_as_that_submodule(monkeypatch, source, expected):
    path = AGENT / "registry_cache" / "example.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)

    assert _dependencies(path, ["registry_cache.front", "registry_cache.front.spool"]) == expected


# One owner module per file the agent keeps on disk (issue 18): its only reader and writer. The
# names live in paths.py; besides it, only the owner says a name, as the constant, the path
# helper or the literal. Tests may name the files: they check the format users see.
FILE_OWNERS = {
    "registry_cache/state.py": ("STATE_FILE", "state_file"),
    "registry_cache/hold.py": ("READONLY_REQUEST", "readonly_request"),
    "registry_cache/usage.py": ("USAGE_FILE", "usage_file"),
    "registry_cache/gc/result.py": ("GC_FILE", "gc_file"),
    "registry_cache/warmresult.py": ("WARM_FILE", "warm_file"),
    "registry_cache/record.py": ("MIRROR_RECORD", "CREDENTIALS"),
    "registry_cache/metrics.py": ("METRICS_SETTINGS",),
}
PATHS_MODULE = "registry_cache/paths.py"


def _owned_names(path: Path) -> dict[str, str]:
    """Each name of an owned file in the paths module at `path` (constant, helper, literal) -> its owner."""
    tree = ast.parse(path.read_text())
    values = {node.targets[0].id: node.value.value for node in tree.body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
              and isinstance(node.value, ast.Constant)}
    owned = {}
    for owner, names in FILE_OWNERS.items():
        for name in names:
            owned[name] = owner
            if name in values:
                owned[values[name]] = owner
    return owned


def _names_said(path: Path, owned: Collection[str]) -> set[str]:
    """The owned names a Python file says: as an attribute or name in code, or as a string literal."""
    said = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in owned:
            said.add(node.attr)
        elif isinstance(node, ast.Name) and node.id in owned:
            said.add(node.id)
        elif isinstance(node, ast.alias) and node.name in owned:
            said.add(node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            said |= {name for name in owned if "." in name and name in node.value}
    return said


def test_each_file_the_agent_keeps_is_named_only_by_its_owner_module():
    owned = _owned_names(AGENT / PATHS_MODULE)
    files = _python_files("bootstrap/src", "lab", "bench", "box", "tasks.py")
    strangers = []
    for path in files:
        relative = str(path.relative_to(AGENT)) if AGENT in path.parents else str(path.relative_to(ROOT))
        if relative == PATHS_MODULE:
            continue
        strangers += [f"{relative} names {name} (owner: {owned[name]})"
                      for name in sorted(_names_said(path, owned)) if owned[name] != relative]
    assert strangers == []


def test_the_one_owner_rule_sees_a_file_named_outside_its_owner(tmp_path):
    owned = _owned_names(AGENT / PATHS_MODULE)
    stranger = tmp_path / "stranger.py"
    stranger.write_text('import os\nfrom registry_cache import paths\n'
                        'a = paths.state_file("/c")\nb = os.path.join("/c", ".registry-cache-gc.json")\n')
    assert _names_said(stranger, owned) == {"state_file", ".registry-cache-gc.json"}
