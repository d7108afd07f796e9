"""Install throughput: `/models install` (pre-flight, job, download, sha256 of every file, move into the store)
against a plain `huggingface_hub.snapshot_download` of the same repo from the same server, in the same run.

The hub stand-in (tests/support/hub.py) serves a generated repo of safetensors shards from its own process, so
the server's work does not compete with the measured client for this process's GIL. Two scenarios: a link of
LINK_MB_S shared by all downloads (what a fast network gives; the goal, ModelBay at least 0.95x the plain
download, applies here), and raw loopback, where the server, the client and the sha256 of every file all
compete for this machine's two cores (a CPU-bound worst case, reported as well). Rounds alternate between the
two clients so machine noise hits both alike. Prints a final JSON line.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

REPO = "bench/shards"
SHARDS = 4
SHARD_MB = 64
ROUNDS = 3
LINK_MB_S = 150.0


def _make_repo(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(SHARDS):
        tensor = rng.standard_normal(SHARD_MB * 262_144, dtype=np.float32)
        save_file({f"layer{i}.weight": tensor}, str(folder / f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))


def _serve(folder: str, rate: float | None, ready: multiprocessing.Queue, stop: multiprocessing.Event) -> None:
    from tests.support.hub import HubStandIn

    with HubStandIn() as hub:
        hub.link_rate = rate
        hub.add_repo(REPO, Path(folder))
        ready.put(hub.endpoint)
        stop.wait()


def _plain(endpoint: str, dest: Path) -> float:
    from huggingface_hub import snapshot_download

    start = time.perf_counter()
    snapshot_download(REPO, local_dir=dest, endpoint=endpoint, token=False, max_workers=8)
    return time.perf_counter() - start


def _modelbay(runtime, store: Path) -> float:  # noqa: ANN001
    start = time.perf_counter()
    ticket = runtime.installs.request(REPO, None, "bench")
    done = runtime.jobs.wait(ticket.job.id, timeout=600, poll=0.005)
    elapsed = time.perf_counter() - start
    if done.status != "finished":
        raise SystemExit(f"install {done.status}: {done.error}")
    runtime.installs.uninstall(REPO)
    return elapsed


def _scenario(root: Path, rate: float | None, size: int) -> dict[str, float]:
    from modelbay.config import load_settings
    from modelbay.runtime import Runtime

    ready: multiprocessing.Queue = multiprocessing.Queue()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(str(root / "repo"), rate, ready, stop), daemon=True)
    server.start()
    endpoint = ready.get(timeout=60)
    home = root / f"home-{rate}"
    settings = load_settings(home=home, hub_endpoint=endpoint, model_store=home / "store", disk_margin_bytes=0,
                             environment="test")
    runtime = Runtime(settings)
    runtime.prepare()
    runtime.start_embedded_workers()
    plain, ours = [], []
    try:
        for i in range(ROUNDS):
            dest = root / f"plain-{i}"
            plain.append(_plain(endpoint, dest))
            shutil.rmtree(dest)
            ours.append(_modelbay(runtime, home / "store"))
    finally:
        runtime.close()
        stop.set()
        server.join(10)
    plain_rate = size / statistics.median(plain) / 1e6
    our_rate = size / statistics.median(ours) / 1e6
    return {"snapshot_download_mb_s": round(plain_rate, 1), "modelbay_install_mb_s": round(our_rate, 1),
            "ratio": round(our_rate / plain_rate, 3)}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "repo").mkdir()
        _make_repo(root / "repo")
        size = sum(f.stat().st_size for f in (root / "repo").iterdir())
        link = _scenario(root, LINK_MB_S * 1e6, size)
        loopback = _scenario(root, None, size)
    for name, figures in ((f"{LINK_MB_S:.0f} MB/s link", link), ("raw loopback", loopback)):
        print(f"{name:16} snapshot_download {figures['snapshot_download_mb_s']:7.1f} MB/s   ModelBay install+verify "
              f"{figures['modelbay_install_mb_s']:7.1f} MB/s   ratio {figures['ratio']:.3f}")
    result = {"repo_mb": round(size / 1e6, 1), "rounds": ROUNDS, "link_mb_s": LINK_MB_S, "link": link,
              "loopback": loopback, "ratio": link["ratio"], "goal": 0.95, "meets_goal": link["ratio"] >= 0.95}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
