"""Each file in examples/ runs on its own, as a newcomer would run it, and does what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(name: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELBAY_")}  # no developer settings
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)  # in an empty folder: no .env is read
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_every_example_is_run_here() -> None:
    assert {p.name for p in (ROOT / "examples").glob("*.py")} == {"model_source.py", "backend.py", "command.py",
                                                                 "optimization_method.py"}


def test_a_plugin_model_source_is_searched(tmp_path: Path) -> None:
    out = _run("model_source.py", tmp_path)
    assert "acme/tiny-chat  source=dict  category=chat  size=26 B" in out
    assert "acme/tiny-coder  source=dict  category=code" in out
    assert "acme/tiny-chat@" in out and ": config.json, README.md" in out
    assert "/models install acme/tiny-chat installs from: dict" in out  # the source that holds it, not the hub


def test_a_plugin_backend_streams_an_answer(tmp_path: Path) -> None:
    out = _run("backend.py", tmp_path).splitlines()
    assert out[0] == "backends: vllm, transformers, onnx, echo"  # the built-ins, registered through the same hook
    assert out[1] == "ModelBay streams answers piece by piece"
    assert out[2].endswith("tokens in, 6 out, stop]")


@pytest.mark.slow
def test_a_plugin_command_answers_through_the_dispatcher(tmp_path: Path) -> None:
    out = _run("command.py", tmp_path)
    assert "/hello -> **Hello**\nHello, Ada! The registry holds" in out
    assert "/hello Grace Hopper -> **Hello**\nHello, Grace Hopper!" in out
    assert "Usage: `/hello [name]`" in out  # /help lists it like a built-in


@pytest.mark.slow
def test_a_plugin_optimization_method_makes_a_variant(tmp_path: Path) -> None:
    out = _run("optimization_method.py", tmp_path)
    assert "methods: cast, bnb, weight-only, prune, channels, onnx, drop-blocks" in out  # built-ins, then the plugin's
    assert "  50% dropped block 3\n  100% dropped block 2" in out  # progress through the job's side, per block
    assert out.rstrip().endswith("model-drop2: 2 blocks left")
