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
import sys
import tomllib
from dataclasses import dataclass
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
_MARK = re.compile(r"#\s*extra:\s*([a-z0-9-]+)")
# Bounded to the major version we test (see the README's "Versions" section): their APIs changed under us.
BOUNDED = {"huggingface-hub", "transformers", "rq", "redis", "sqlalchemy", "pydantic", "fastapi", "slack-bolt",
           "slack-sdk", "discord-py", "typer", "alembic", "psycopg", "peft", "httpx", "starlette", "aiohttp",
           "uvicorn", "httpx2", "pydantic-settings", "fakeredis", "rich", "prompt-toolkit", "yarl"}


@dataclass(frozen=True)
class Use:
    """One import of a third-party module: where, which module, and the install it is marked for."""

    file: str
    line: int
    module: str
    extra: str | None
    guarded: bool


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


def uses(folder: str) -> list[Use]:
    """Every import of a module outside the standard library and this project, under a folder."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        text_lines = source.splitlines()
        guarded = _guarded(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            mark = _MARK.search(text_lines[node.lineno - 1])
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("modelbay", "tests", "bench", "__future__"):
                    continue
                found.append(Use(str(path.relative_to(ROOT)), node.lineno, top, mark and mark.group(1),
                                 node.lineno in guarded))
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
