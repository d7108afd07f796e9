"""Every third-party module the code imports is declared, directly, by the install that needs it.

A module brought in only through another package (httpx through huggingface_hub 1.x) disappears when that
package changes; this test reads every import with `ast`, maps it to its distribution with
`importlib.metadata.packages_distributions()`, and checks the declaring install: the base dependencies for
`modelbay/` imports, base plus an extra for an import marked `# extra: NAME`, the test extra for tests and
benchmarks. An import guarded by `try/except ImportError` must carry such a mark.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
_MARK = re.compile(r"#\s*extra:\s*([a-z0-9-]+)")
# Bounded to the major version we test (see the README's "Versions" section): their APIs changed under us.
BOUNDED = {"huggingface-hub", "transformers", "rq", "redis", "sqlalchemy", "pydantic", "fastapi", "slack-bolt",
           "slack-sdk", "discord-py", "typer", "alembic", "psycopg", "peft", "httpx", "starlette", "aiohttp",
           "uvicorn", "httpx2", "pydantic-settings", "fakeredis", "rich", "prompt-toolkit", "yarl", "pluggy",
           "pytest-xdist"}


@dataclass(frozen=True)
class Use:
    """One import of a third-party module: where, which module, the install it is marked for, and where it sits."""

    file: str
    line: int
    module: str
    extra: str | None
    guarded: bool
    top_level: bool  # runs when its module is imported (not inside a function)


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@functools.cache
def _declared(extra: str | None, seen: frozenset[str] = frozenset()) -> set[str]:
    """Distribution names (canonical) declared by the base install plus an extra, following modelbay[...]."""
    project = _project()
    lines = list(project["dependencies"])
    if extra:
        lines += project["optional-dependencies"][extra]
    names: set[str] = set()
    for line in lines:
        req = Requirement(line)
        if canonicalize_name(req.name) == "modelbay":
            for inner in sorted(req.extras - seen):
                names |= _declared(inner, seen | {inner})
        else:
            names.add(canonicalize_name(req.name))
    return names


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside a `try` whose handlers catch ImportError or ModuleNotFoundError."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        names = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
        if any("ImportError" in n or "ModuleNotFoundError" in n for n in names):
            for inner in node.body:
                for sub in ast.walk(inner):
                    if isinstance(sub, (ast.Import, ast.ImportFrom)):
                        lines.add(sub.lineno)
    return lines


def _in_functions(tree: ast.AST) -> set[int]:
    """Line numbers of the nodes inside a function body (run when called, not when the module is imported)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            lines |= {sub.lineno for sub in ast.walk(node) if hasattr(sub, "lineno") and sub is not node}
    return lines


def _imported(node: ast.AST) -> list[str]:
    """The modules a node imports: import statements, and importlib.import_module("x") or __import__("x")."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module] if node.level == 0 and node.module else []
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str) and ast.unparse(node.func) in ("importlib.import_module",
                                                                                 "import_module", "__import__"):
        return [node.args[0].value]
    return []


def uses(folder: str) -> list[Use]:
    """Every import of a module outside the standard library and this project, under a folder."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        text_lines = source.splitlines()
        guarded = _guarded(tree)
        inside = _in_functions(tree)
        for node in ast.walk(tree):
            modules = _imported(node)
            if not modules:
                continue
            mark = _MARK.search(text_lines[node.lineno - 1])
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("modelbay", "tests", "bench", "__future__"):
                    continue
                found.append(Use(str(path.relative_to(ROOT)), node.lineno, top, mark and mark.group(1),
                                 node.lineno in guarded, node.lineno not in inside))
    return found


@functools.cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def _distributions(module: str) -> set[str]:
    return {canonicalize_name(d) for d in _installed().get(module, [])}


def _undeclared(found: list[Use], default_extra: str | None) -> list[str]:
    problems = []
    for use in found:
        if use.guarded and use.extra is None:
            problems.append(f"{use.file}:{use.line}: optional import of {use.module} needs '# extra: NAME'")
            continue
        extra = use.extra or default_extra
        dists = _distributions(use.module)
        if not dists:
            problems.append(f"{use.file}:{use.line}: {use.module} is not installed here (which package has it?)")
        elif not dists & _declared(extra):
            problems.append(f"{use.file}:{use.line}: {use.module} (from {', '.join(sorted(dists))}) is not declared "
                            f"by {'the base install' if extra is None else f'modelbay[{extra}]'}")
    return problems


def test_marks_name_real_extras() -> None:
    extras = set(_project()["optional-dependencies"])
    for use in uses("modelbay") + uses("tests") + uses("bench"):
        assert use.extra is None or use.extra in extras, f"{use.file}:{use.line}: no extra named {use.extra}"


def test_the_package_declares_what_it_imports() -> None:
    assert _undeclared(uses("modelbay"), None) == []


def test_marked_imports_run_only_when_their_extra_is_used() -> None:
    """An import marked for an extra sits in a function or a guarded block: importing its module never needs it."""
    misplaced = [f"{u.file}:{u.line}: {u.module} is marked '# extra: {u.extra}' but runs at import time"
                 for u in uses("modelbay") if u.extra and u.top_level and not u.guarded]
    assert misplaced == []
    assert [f"{u.file}:{u.line}" for u in uses("modelbay") if u.extra == "test"] == []  # the product never needs it


def _closure(lines: list[str], extra: str = "") -> set[str]:
    """Canonical names of the distributions these requirements install, following each one's own requirements."""
    seen: set[str] = set()
    todo = [(Requirement(line), extra) for line in lines]
    while todo:
        req, parent_extra = todo.pop()
        if req.marker and not req.marker.evaluate({"extra": parent_extra}):
            continue
        name = canonicalize_name(req.name)
        if name == "modelbay" or name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(req.name).requires or []
        except PackageNotFoundError:
            continue
        for wanted in [""] + sorted(req.extras):
            todo += [(Requirement(r), wanted) for r in requires]
    return seen


def test_every_module_imports_with_only_the_base_install() -> None:
    """Import every module of the package with each extra-only distribution hidden, as the base install has it."""
    project = _project()
    base = _closure(project["dependencies"])
    extra_only = {canonicalize_name(Requirement(line).name) for lines in project["optional-dependencies"].values()
                  for line in lines} - base - {"modelbay"}
    hidden = sorted(module for module, dists in _installed().items()
                    if module.isidentifier() and {canonicalize_name(d) for d in dists} <= extra_only)
    assert {"torch", "transformers", "psycopg", "vllm", "pytest"} <= set(hidden)
    script = textwrap.dedent(f"""
        import importlib, importlib.abc, pkgutil, sys
        HIDDEN = set({hidden!r})

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HIDDEN:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (not in the base install)", name=name)

        sys.meta_path.insert(0, Hide())
        import modelbay
        for info in pkgutil.walk_packages(modelbay.__path__, "modelbay."):
            if info.name == "modelbay.__main__" or info.name.startswith("modelbay.migrations."):
                continue  # the CLI entry point runs on import; Alembic loads its own scripts
            importlib.import_module(info.name)
        print("imported", len(sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_tests_and_benchmarks_declare_what_they_import() -> None:
    assert _undeclared(uses("tests") + uses("bench"), "test") == []


def test_imports_are_found() -> None:
    """The walk itself works: it sees a direct import, a lazy one, and the marks on the ML imports."""
    found = {(u.module, u.extra) for u in uses("modelbay")}
    assert ("httpx", None) in found
    assert ("torch", "ml") in found and ("transformers", "ml") in found


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_major_versions_are_bounded(name: str) -> None:
    """Dependencies whose API we rely on have an upper bound, so a new major version is chosen, not met."""
    project = _project()
    lines = list(project["dependencies"]) + [x for deps in project["optional-dependencies"].values() for x in deps]
    reqs = [Requirement(line) for line in lines if canonicalize_name(Requirement(line).name) == name]
    assert reqs, f"{name} is not a dependency (drop it from BOUNDED)"
    for req in reqs:
        assert any(spec.operator in ("<", "<=", "==", "~=") for spec in req.specifier), f"{req} has no upper bound"
