"""The tiny test model's untrained build, against loading the folder it writes (what every later session does).

A session whose model cache is empty builds the tiny Llama the suite runs on (`tests/support/tinymodel.py`:
a byte-level BPE tokenizer trained on the synthetic corpus, the model initialised, both saved); a session that
finds it cached only loads it. Both are timed in the same run, interleaved, on this machine (the first round
warms imports up and is left out of the medians). Goal: an untrained build at or under 1 s, so an empty cache
costs a test next to nothing. Prints a line per round, then a final
JSON line: {"rounds", "build_s_median", "load_s_median", "ratio", "goal_build_s", "meets_goal"}.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from tests.support.tinymodel import TinyModelSpec, build_tiny_model  # noqa: E402

ROUNDS = 6  # the first warms up
GOAL_BUILD_S = 1.0


def _build(folder: Path) -> float:
    started = time.perf_counter()
    build_tiny_model(folder, TinyModelSpec())
    return time.perf_counter() - started


def _load(folder: Path) -> float:
    started = time.perf_counter()
    AutoTokenizer.from_pretrained(folder)
    AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    return time.perf_counter() - started


def main() -> dict[str, object]:
    """Time ROUNDS builds and loads, interleaved, and return the figures."""
    hf_logging.disable_progress_bar()
    builds, loads = [], []
    with tempfile.TemporaryDirectory(prefix="modelbay-bench-") as tmp:
        for round_ in range(ROUNDS):
            folder = Path(tmp) / f"model-{round_}"
            builds.append(_build(folder))
            loads.append(_load(folder))
            print(f"round {round_ + 1}: build {builds[-1]:.2f} s, load {loads[-1]:.2f} s")
    build, load = statistics.median(builds[1:]), statistics.median(loads[1:])
    return {"rounds": ROUNDS - 1, "build_s_median": round(build, 3), "load_s_median": round(load, 3),
            "ratio": round(build / load, 1), "goal_build_s": GOAL_BUILD_S, "meets_goal": build <= GOAL_BUILD_S}


if __name__ == "__main__":
    result = main()
    verdict = "met" if result["meets_goal"] else "MISSED"
    print(f"median untrained build {result['build_s_median']} s against a goal of {GOAL_BUILD_S:g} s: {verdict}")
    print(json.dumps(result))
