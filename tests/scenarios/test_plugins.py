"""Plugins installed as entry points (group `modelbay`), loaded as a fresh process would load them: a broken plugin
never takes the built-ins down, and a plugin that imports the bot while it loads still gets its commands in."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from modelbay.engine.jobs.kinds import BUILT_IN

ROOT = Path(__file__).resolve().parents[2]


def _install(site: Path, name: str, module: str) -> None:
    """Put a plugin module and a distribution declaring it under the `modelbay` entry-point group on `site`."""
    (site / f"{name}.py").write_text(textwrap.dedent(module))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[modelbay]\n{name} = {name}\n")


def _run(site: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env,
                          cwd=site, timeout=120)


def test_a_plugin_that_fails_to_import_is_logged_and_the_built_ins_stay(tmp_path: Path) -> None:
    _install(tmp_path, "broken_plugin", "raise ImportError('no such thing')\n")
    done = _run(tmp_path, """
        from modelbay.engine.catalog.sources.base import SOURCES
        from modelbay.engine.jobs.kinds import KINDS
        print(sorted(SOURCES))
        print(sorted(KINDS))  # read again: still there
        print(sorted(SOURCES))
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    sources, kinds, again = done.stdout.splitlines()
    assert sources == again == "['huggingface', 'local']"
    assert kinds == str(sorted(kind.name for kind in BUILT_IN))  # every built-in kind
    assert "the plugin broken_plugin (broken_plugin) could not be loaded" in done.stderr
    assert "no such thing" in done.stderr  # the traceback goes to the log


def test_a_plugin_importing_the_bot_while_registries_fill_gets_its_commands(tmp_path: Path) -> None:
    _install(tmp_path, "hello_plugin", """
        from modelbay.bot import Reply, command
        from modelbay.hookspecs import hookimpl


        @hookimpl
        def register_commands(commands):
            @command("hello", help="Say hello.", registry=commands)
            async def hello(ctx):
                return Reply(text="hello")
    """)
    done = _run(tmp_path, """
        from modelbay.engine.catalog.sources.base import SOURCES
        print(sorted(SOURCES))  # a registry read first loads the plugin, which imports the bot
        from modelbay.bot import COMMANDS
        names = {cmd.name for cmd in COMMANDS}
        print("/hello" in names, "/models list" in names, "/help" in names)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["['huggingface', 'local']", "True True True"]
