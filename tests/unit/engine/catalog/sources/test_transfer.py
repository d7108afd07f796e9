"""engine/catalog/sources/transfer.py: a ByteMeter counts each file's bytes within its size across threads, stops
downloads when told to, and derives rate and ETA from a sliding window."""

from __future__ import annotations

import threading
import time

import pytest

from modelbay.engine.catalog.sources.transfer import ByteMeter, TransferStopped


def test_each_file_counts_within_its_size_and_the_total_is_their_sum() -> None:
    meter = ByteMeter({"a.safetensors": 100, "b.json": 10})
    assert (meter.total, meter.done) == (110, 0)
    meter.add("a.safetensors", 60)
    meter.add("a.safetensors", 60)  # a resumed chunk counted twice is capped at the file's size
    meter.set("b.json", -5)
    assert meter.done == 100
    meter.set("b.json", 7)
    meter.set("a.safetensors", 40)  # set says how much is on disk now: a restarted file goes back
    assert meter.done == 47
    meter.add("unlisted.txt", 3)  # a file not in the listing counts without a cap
    assert meter.done == 50 and meter.total == 110


def test_parallel_downloads_add_up_exactly() -> None:
    meter = ByteMeter({f"shard-{i}": 10**9 for i in range(8)})

    def download(path: str) -> None:
        for _ in range(2000):
            meter.add(path, 7)

    threads = [threading.Thread(target=download, args=(path,)) for path in meter.sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert meter.done == 8 * 2000 * 7


def test_a_stopped_meter_stops_every_download_at_its_next_chunk() -> None:
    meter = ByteMeter({"a": 10})
    meter.add("a", 1)
    meter.stop.set()
    with pytest.raises(TransferStopped):
        meter.add("a", 1)
    with pytest.raises(TransferStopped):
        meter.tqdm_class("a")(total=10)
    assert meter.done == 1


def test_the_tqdm_stand_in_feeds_the_meter_as_huggingface_hub_calls_it() -> None:
    meter = ByteMeter({"model.safetensors": 1000})
    progress_class = meter.tqdm_class("model.safetensors")
    with progress_class(total=1000, initial=100, desc="model.safetensors", unit="B") as bar:
        bar.update(250)
        bar.update(None)  # tqdm's update() may be called without a count
        bar.update(0.0)
        bar.close()
    assert bar.n == 350 and meter.done == 350


def test_rate_and_eta_come_from_recent_bytes_and_a_stall_reads_as_no_rate() -> None:
    meter = ByteMeter({"a": 10_000})
    first = meter.snapshot()
    assert (first["bytes"], first["total"], first["eta"]) == (0, 10_000, None)
    time.sleep(0.05)
    meter.add("a", 1000)
    moving = meter.snapshot()
    assert moving["bytes"] == 1000 and moving["rate"] > 0
    assert moving["eta"] == pytest.approx(9000 / moving["rate"], rel=0.01, abs=0.1)
    meter.WINDOW = 0.05  # seconds: a short window, so a stall shows at once
    time.sleep(0.1)
    meter.snapshot()
    stalled = meter.snapshot()  # every sample in the window has the same count: nothing moved lately
    assert stalled["bytes"] == 1000 and stalled["rate"] == 0 and stalled["eta"] is None
