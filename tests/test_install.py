"""Installs through the hub stand-in with the real huggingface_hub client and real RQ worker processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr
from safetensors.numpy import save_file

from modelbay.bot import Actor, Dispatcher
from modelbay.config import load_settings
from modelbay.engine.db import Database
from modelbay.engine.errors import (
    GatedModel,
    InsufficientDisk,
    ModelInUse,
    NotInstalled,
    RepoNotFound,
    UnsafeWeights,
)
from modelbay.engine.ids import InvalidId
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL, wait_for
from tests.support.hub import Fault, HubStandIn

REPO = "tiny-org/tiny-llama"
BIG = "tiny-org/big-weights"
ADMIN = Actor("console", "root")


def _big_model(folder: Path, megabytes: int) -> Path:
    """A folder with a config and one real safetensors file of about `megabytes` MB."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    save_file({"weight": rng.standard_normal(megabytes * 262_144, dtype=np.float32)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 128}))
    return folder


def _gets(hub: HubStandIn, path: str) -> list[tuple[str, str, dict[str, str]]]:
    return [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1] and r[1].split("?")[0].endswith(path)]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def repos(hub: HubStandIn, tiny_model: Path, tmp_path: Path) -> HubStandIn:
    hub.add_repo(REPO, tiny_model, tags=["llama", "license:apache-2.0"], downloads=42)
    hub.add_repo(BIG, _big_model(tmp_path / "big", 24))
    return hub


@pytest.fixture
def runtime(database: Database, redis, repos: HubStandIn, store: Path, tmp_path: Path, monkeypatch) -> Runtime:
    """A ModelBay runtime on the test database and the machine's Redis, pointed at the hub stand-in."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    settings = load_settings(home=tmp_path / "home", database_url=database.url, redis_url=REDIS_URL,
                             hub_endpoint=repos.endpoint, model_store=store, disk_margin_bytes=0, worker_ttl=15,
                             environment="test")
    runtime = Runtime(settings)
    runtime.prepare()
    yield runtime
    runtime.close()


@pytest.fixture
def worker(worker_env: dict[str, str], repos: HubStandIn, store: Path, start_worker, tmp_path: Path):
    """Start workers that install from the hub stand-in into the test's store."""
    worker_env.update(MODELBAY_HUB_ENDPOINT=repos.endpoint, MODELBAY_MODEL_STORE=str(store),
                      MODELBAY_DISK_MARGIN_BYTES="0", MODELBAY_HUB_DOWNLOAD_TIMEOUT="2", MODELBAY_WORKER_TTL="15",
                      HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf-worker"))
    return start_worker


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, as when a machine or container dies."""
    children = [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    for child in children:
        _kill_tree(child)
    os.kill(pid, signal.SIGKILL)


def _no_partial_files(store: Path) -> bool:
    staging = store / ".staging"
    return not staging.exists() or not any(staging.iterdir())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_install_downloads_verifies_and_records(runtime: Runtime, worker, tiny_model: Path, store: Path) -> None:
    ticket = runtime.installs.request(REPO, None, "console:root")
    assert ticket.created and ticket.job.queue == "downloads" and ticket.version.install_state == "queued"
    events = []
    collector = threading.Thread(target=lambda: events.extend(runtime.jobs.events(ticket.job.id, poll=0.5)))
    collector.start()
    worker()
    collector.join(60)

    assert events[-1].status == "finished", events[-1]
    downloads = [e for e in events if e.detail.get("phase") == "download"]
    assert downloads and {"bytes", "total", "rate", "eta"} <= set(downloads[-1].detail)
    assert downloads[-1].detail["bytes"] == downloads[-1].detail["total"] == ticket.total_bytes

    model = runtime.registry.get(REPO)
    assert model.source == "huggingface" and model.installed and model.category == "chat"
    assert model.parameter_count and model.license == "apache-2.0"
    version = model.versions[0]
    assert version.install_state == "installed" and len(version.revision_sha) == 40
    folder = Path(version.local_path)
    assert folder == store / "tiny-org--tiny-llama" / version.revision_sha
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert _sha256(folder / name) == _sha256(tiny_model / name)
    recorded = {f["path"]: f["sha256"] for f in runtime.registry.get_version(version.id).files}
    assert recorded["model.safetensors"] == _sha256(tiny_model / "model.safetensors")
    assert _no_partial_files(store)
    assert not (folder / ".cache").exists()

    again = runtime.installs.request(REPO, None, "console:root")
    assert again.job is None and again.notices[0] == "Already installed."


def test_twenty_concurrent_requests_share_one_download(runtime: Runtime, worker, repos: HubStandIn) -> None:
    with ThreadPoolExecutor(max_workers=20) as pool:
        tickets = list(pool.map(lambda _: runtime.installs.request(BIG, None, "console:root"), range(20)))
    assert len({t.job.id for t in tickets}) == 1 and sum(t.created for t in tickets) == 1
    worker()
    assert runtime.jobs.wait(tickets[0].job.id, 60).status == "finished"
    assert len(_gets(repos, "model.safetensors")) == 1


def test_a_corrupted_byte_is_caught_and_nothing_is_installed(runtime: Runtime, worker, repos: HubStandIn,
                                                             store: Path) -> None:
    repos.inject(BIG, "model.safetensors", Fault("corrupt", after_bytes=5_000_000, times=0))
    ticket = runtime.installs.request(BIG, None, "console:root")
    worker()
    done = runtime.jobs.wait(ticket.job.id, 60)
    assert done.status == "failed" and done.attempts == 1  # a checksum failure is not retried blindly
    assert done.error.startswith("`model.safetensors` failed its checksum (expected ")
    assert runtime.registry.get_version(ticket.version.id).install_state == "failed"
    assert not (store / "tiny-org--big-weights").exists()
    assert _no_partial_files(store)


def test_a_dropped_connection_is_resumed(runtime: Runtime, worker, repos: HubStandIn, tmp_path: Path) -> None:
    repos.inject(BIG, "model.safetensors", Fault("drop", after_bytes=3_500_000))
    ticket = runtime.installs.request(BIG, None, "console:root")
    worker()
    assert runtime.jobs.wait(ticket.job.id, 60).status == "finished"
    gets = _gets(repos, "model.safetensors")
    assert len(gets) == 2 and gets[1][2].get("range", "").startswith("bytes=")  # resumed, not restarted
    installed = Path(runtime.registry.get_version(ticket.version.id).local_path) / "model.safetensors"
    assert _sha256(installed) == _sha256(tmp_path / "big" / "model.safetensors")


def test_a_stall_times_out_into_a_clear_failure(runtime: Runtime, worker, repos: HubStandIn, store: Path) -> None:
    repos.inject(BIG, "model.safetensors", Fault("stall", after_bytes=1_000_000, seconds=120, times=0))
    ticket = runtime.installs.request(BIG, None, "console:root")
    worker()
    # A network failure is worth another try: the job waits for its retry with the reason on record.
    retrying = wait_for(lambda: (r := runtime.jobs.get(ticket.job.id)).status == "retrying" and r, timeout=90)
    assert retrying.error.startswith("Downloading `model.safetensors` failed (")
    assert "nothing was installed" in retrying.error
    assert _no_partial_files(store)
    runtime.jobs.cancel(ticket.job.id)  # while it waits for its retry
    assert runtime.jobs.wait(ticket.job.id, 30).status == "canceled"
    assert runtime.registry.get_version(ticket.version.id).install_state == "failed"  # its last attempt's outcome


def test_cancel_stops_the_download_and_removes_partial_files(runtime: Runtime, worker, repos: HubStandIn,
                                                            store: Path) -> None:
    repos.inject(BIG, "model.safetensors", Fault("stall", after_bytes=2_000_000, seconds=120, times=0))
    ticket = runtime.installs.request(BIG, None, "console:root")
    worker()
    wait_for(lambda: runtime.jobs.get(ticket.job.id).progress_detail.get("bytes", 0) >= 1_000_000, timeout=30)
    runtime.jobs.cancel(ticket.job.id)
    assert runtime.jobs.wait(ticket.job.id, 30).status == "canceled"
    assert runtime.registry.get_version(ticket.version.id).install_state == "available"
    assert _no_partial_files(store)
    assert not (store / "tiny-org--big-weights").exists()


def test_a_killed_worker_never_leaves_an_install_and_the_next_attempt_completes(
    runtime: Runtime, worker, repos: HubStandIn, store: Path
) -> None:
    repos.inject(BIG, "model.safetensors", Fault("stall", after_bytes=2_000_000, seconds=120, times=1))
    first = runtime.installs.request(BIG, None, "console:root")
    doomed = worker()
    wait_for(lambda: runtime.jobs.get(first.job.id).progress_detail.get("bytes", 0) >= 1_000_000, timeout=30)
    _kill_tree(doomed.proc.pid)  # the worker and its work horse (its own process group), mid-download
    doomed.proc.wait(10)
    assert runtime.registry.get_version(first.version.id).install_state == "downloading"
    assert not (store / "tiny-org--big-weights").exists()

    lost = wait_for(lambda: (r := runtime.jobs.get(first.job.id)).status == "failed" and r, timeout=60)
    assert lost.error == "The worker stopped while running this job. Try it again."
    second = runtime.installs.request(BIG, None, "console:root")
    assert second.created and second.job.id != first.job.id
    worker()
    assert runtime.jobs.wait(second.job.id, 60).status == "finished"
    assert runtime.registry.get_version(second.version.id).install_state == "installed"


def test_pickle_only_repos_are_refused_before_downloading(runtime: Runtime, repos: HubStandIn, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (folder / "config.json").write_text("{}")
    repos.add_repo("old/pickled", folder)
    repos.requests.clear()
    with pytest.raises(UnsafeWeights, match="MODELBAY_ALLOW_PICKLE=true"):
        runtime.installs.request("old/pickled", None, "console:root")
    assert not [r for r in repos.requests if "/resolve/" in r[1]]


def test_the_disk_preflight_refuses_a_download_that_would_fill_the_disk(runtime: Runtime) -> None:
    runtime.installs.settings.disk_margin_bytes = 10**16
    with pytest.raises(InsufficientDisk, match="MODELBAY_MODEL_STORE"):
        runtime.installs.request(BIG, None, "console:root")
    assert runtime.jobs.list() == []


def test_gated_repos_need_an_approved_token(runtime: Runtime, repos: HubStandIn, tiny_model: Path) -> None:
    repos.add_repo("meta/gated", tiny_model, gated=True)
    with pytest.raises(GatedModel) as caught:
        runtime.installs.request("meta/gated", None, "console:root")
    assert "set MODELBAY_HUB_TOKEN" in str(caught.value)
    repos.allow_token("meta/gated", "hf_approved")
    runtime.installs.settings.hub_token = SecretStr("hf_approved")
    assert runtime.installs.request("meta/gated", None, "console:root").created


@pytest.mark.parametrize("bad", ["../etc/passwd", "/etc/passwd", "https://evil.example/x/y", "a/b\x00c", "a/../b",
                                 "C:\\models\\x", "~/x"])
def test_bad_ids_are_refused_before_any_io(runtime: Runtime, repos: HubStandIn, bad: str) -> None:
    repos.requests.clear()
    with pytest.raises(InvalidId):
        runtime.installs.request(bad, None, "console:root")
    assert repos.requests == []
    with pytest.raises(InvalidId):
        runtime.installs.request(REPO, "../../main", "console:root")


def test_unknown_repo_and_revision(runtime: Runtime) -> None:
    with pytest.raises(RepoNotFound, match="MODELBAY_HUB_TOKEN"):
        runtime.installs.request("nobody/nothing", None, "console:root")


def test_uninstall_keeps_history_and_refuses_while_in_use(runtime: Runtime, worker) -> None:
    ticket = runtime.installs.request(REPO, None, "console:root")
    worker()
    assert runtime.jobs.wait(ticket.job.id, 60).status == "finished"
    folder = Path(runtime.registry.get_version(ticket.version.id).local_path)

    busy, _ = runtime.jobs.submit("test.sleepy", {"seconds": 0}, requester="x", model_version_id=ticket.version.id)
    with pytest.raises(ModelInUse, match=f"test.sleepy job {busy.id}"):
        runtime.installs.uninstall(REPO)
    runtime.jobs.cancel(busy.id)
    runtime.jobs.wait(busy.id, 30)

    removed = runtime.installs.uninstall(REPO)
    assert [v.install_state for v in removed] == ["uninstalled"] and not folder.exists()
    model = runtime.registry.get(REPO)
    assert model.versions[0].revision_sha == ticket.version.revision_sha  # history stays
    with pytest.raises(NotInstalled):
        runtime.installs.uninstall(REPO)


def test_revisions_install_side_by_side(runtime: Runtime, worker, repos: HubStandIn, tiny_model: Path,
                                        tmp_path: Path) -> None:
    changed = tmp_path / "v2"
    shutil.copytree(tiny_model, changed)
    (changed / "README.md").write_text("# v2\n")
    sha2 = repos.add_repo(REPO, changed, revision="v2")
    first = runtime.installs.request(REPO, None, "console:root")
    second = runtime.installs.request(REPO, "v2", "console:root")
    assert second.version.revision_sha == sha2 != first.version.revision_sha
    worker()
    for ticket in (first, second):
        assert runtime.jobs.wait(ticket.job.id, 60).status == "finished"
    versions = runtime.registry.get(REPO).versions
    assert {v.revision for v in versions} == {"main", "v2"}
    assert all(v.install_state == "installed" for v in versions)
    assert len({v.local_path for v in versions}) == 2


def test_local_folder_source_installs_by_copy(runtime: Runtime, worker, worker_env, tiny_model: Path,
                                               tmp_path: Path) -> None:
    library = tmp_path / "library"
    shutil.copytree(tiny_model, library / "tiny")
    runtime.installs.settings.local_models_dir = library
    worker_env["MODELBAY_LOCAL_MODELS_DIR"] = str(library)
    ticket = runtime.installs.request("local/tiny", None, "console:root")
    worker()
    assert runtime.jobs.wait(ticket.job.id, 60).status == "finished"
    version = runtime.registry.get_version(ticket.version.id)
    assert runtime.registry.get("local/tiny").source == "local"
    assert _sha256(Path(version.local_path) / "model.safetensors") == _sha256(tiny_model / "model.safetensors")


def test_install_and_search_from_the_bot_in_embedded_mode(settings, repos: HubStandIn, tmp_path: Path,
                                                          monkeypatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    settings.hub_endpoint = repos.endpoint
    settings.disk_margin_bytes = 0
    settings.source_search_timeout = 3
    runtime = Runtime(settings)
    runtime.prepare()
    runtime.start_embedded_workers()
    dispatcher = Dispatcher(runtime, reraise_unknown=True)
    try:
        reply = asyncio.run(dispatcher.dispatch_line(f"/models install {REPO}", ADMIN))
        assert reply.progress and reply.buttons[0].command == f"/jobs cancel {reply.progress.job_id}"
        assert "Runs at fp16 on CPU here" in reply.text  # the pre-flight fit check, on this GPU-less machine
        assert runtime.jobs.wait(reply.progress.job_id, 60).status == "finished"

        found = asyncio.run(dispatcher.dispatch_line("/models search tiny", ADMIN))
        rows = {row[0]: row for row in found.table.rows}
        assert rows["tiny-llama"][5] == "yes"  # the registry's entry, marked installed
        assert "tiny-org/big-weights" in rows and "tiny-org/tiny-llama" not in rows  # hub duplicate folded
        assert "tiny-llama" in asyncio.run(dispatcher.dispatch_line("/models list installed:true", ADMIN)).plain()

        refused = asyncio.run(dispatcher.dispatch_line(f"/models install {REPO}", Actor("slack", "U9")))
        assert refused.title == "Not allowed"

        repos.stop()  # the hub goes away: search degrades to the registry with a notice
        degraded = asyncio.run(dispatcher.dispatch_line("/models search tiny", ADMIN))
        assert "tiny-llama" in [row[0] for row in degraded.table.rows]
        assert "tiny-org/big-weights" not in [row[0] for row in degraded.table.rows]
        assert "huggingface did not answer within 3s" in degraded.footer
    finally:
        runtime.close()


def test_a_local_owner_name_folder_is_never_fetched_from_the_hub(runtime: Runtime, repos: HubStandIn,
                                                                  tiny_model: Path, tmp_path: Path) -> None:
    library = tmp_path / "library"
    shutil.copytree(tiny_model, library / "tiny-org" / "tiny-llama")  # same id as a hub repo
    runtime.installs.settings.local_models_dir = library
    repos.requests.clear()
    ticket = runtime.installs.request("tiny-org/tiny-llama", None, "console:root")
    assert runtime.registry.get(ticket.model.name).source == "local"
    assert repos.requests == []


def test_ids_typed_in_another_case_share_one_download(runtime: Runtime) -> None:
    first = runtime.installs.request("tiny-org/big-weights", None, "console:root")
    second = runtime.installs.request("TINY-ORG/Big-Weights", None, "console:root")
    assert second.job.id == first.job.id and not second.created
    assert first.job.params["repo_id"] == BIG


def test_canceling_a_queued_install_puts_the_version_back(runtime: Runtime) -> None:
    ticket = runtime.installs.request(BIG, None, "console:root")
    assert runtime.registry.get_version(ticket.version.id).install_state == "queued"
    assert runtime.jobs.cancel(ticket.job.id).status == "canceled"
    assert runtime.registry.get_version(ticket.version.id).install_state == "available"
