"""The documented layout is the real one: every module is named in docs/ARCHITECTURE.md's layout, and every
module path the architecture doc or the README names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "modelbay"
# A backticked path such as `engine/catalog/registry.py`, `workers/jobs/` or `tests/support/hub.py`.
_PATH = re.compile(r"`((?:[a-z_]+/)+(?:[a-z_]+\.(?:py|yaml))?)`")
# In the layout table, a module of the package's top level (`cli.py`) as well.
_MODULE = re.compile(r"`((?:[a-z_]+/)*[a-z_]+\.py)`")


def _modules() -> set[str]:
    """Every Python module of the package (not package markers or migration versions), relative to modelbay/."""
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and "migrations" not in path.parts
    }


def _section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _exists(named: str) -> bool:
    return any((base / named).exists() for base in (PACKAGE, ROOT))


def _ours(named: str) -> bool:
    """Whether a path starts in one of our folders (not a placeholder such as `owner/name/`)."""
    top = named.split("/", 1)[0]
    return any((base / top).is_dir() for base in (PACKAGE, ROOT))


def test_the_architecture_layout_names_every_module_and_no_other() -> None:
    layout = _section((ROOT / "docs" / "ARCHITECTURE.md").read_text(), "Layout")
    named = {m for m in _MODULE.findall(layout) if not m.startswith("tests/")}
    missing = sorted(_modules() - named)
    assert not missing, f"modules missing from docs/ARCHITECTURE.md's Layout: {missing}"
    gone = sorted(named - _modules())
    assert not gone, f"docs/ARCHITECTURE.md's Layout names modules that do not exist: {gone}"


def test_every_path_the_docs_name_exists() -> None:
    for doc in (ROOT / "docs" / "ARCHITECTURE.md", ROOT / "README.md"):
        named = set(_PATH.findall(doc.read_text()))
        assert named, f"{doc.name} names no paths: the pattern no longer matches how it writes them"
        gone = sorted(n for n in named if _ours(n) and not _exists(n))
        assert not gone, f"{doc.name} names paths that do not exist: {gone}"
