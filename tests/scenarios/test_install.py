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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr
from safetensors.numpy import save_file

from modelbay.bot import Actor, Dispatcher
from modelbay.config import load_settings
from modelbay.engine.chat.records import Place
from modelbay.engine.db.database import Database
from modelbay.engine.errors import (
    GatedModel,
    HubUnavailable,
    IncompleteModel,
    InsufficientDisk,
    ModelInUse,
    NotInstalled,
    RemoteCodeRequired,
    RepoNotFound,
    UnsafeRepoFile,
    UnsafeWeights,
)
from modelbay.engine.ids import InvalidId
from modelbay.engine.installs.installs import INSTALL
from modelbay.engine.records import JobRecord, VersionRecord
from modelbay.engine.catalog.sources.hub import HubSource
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL, wait_for
from tests.support.chat import installed
from tests.support.hub import DripHub, Fault, HubStandIn, SilentHub

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
        installed_column = found.table.columns.index("Installed")
        assert rows["tiny-llama"][installed_column] == "yes"  # the registry's entry, marked installed
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


# -- installed means complete and loadable ---------------------------------------------------------------------------

def _repo_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _sharded(files: dict[str, bytes]) -> dict[str, bytes]:
    """The tiny model with its weights renamed to the first of two shards its index names; the second is absent."""
    files = dict(files)
    files["model-00001-of-00002.safetensors"] = files.pop("model.safetensors")
    index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                                            "lm_head.weight": "model-00002-of-00002.safetensors"}}
    files["model.safetensors.index.json"] = json.dumps(index).encode()
    return files


def _without(files: dict[str, bytes], *names: str) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k not in names}


def _with_json(files: dict[str, bytes], name: str, **extra: object) -> dict[str, bytes]:
    return {**files, name: json.dumps({**json.loads(files[name]), **extra}).encode()}


def _with(files: dict[str, bytes], **replaced: bytes) -> dict[str, bytes]:
    return {**files, **{name.replace("__", "."): data for name, data in replaced.items()}}


def _renamed(files: dict[str, bytes], old: str, new: str) -> dict[str, bytes]:
    files = dict(files)
    files[new] = files.pop(old)
    return files


INCOMPLETE_REPOS = {
    "missing shard": (_sharded, "model-00002-of-00002.safetensors (named by model.safetensors.index.json)"),
    "config null": (lambda f: _with(f, config__json=b"null"), "missing a readable config.json (a JSON object)"),
    "config {}": (lambda f: _with(f, config__json=b"{}"), "missing a readable config.json (a JSON object)"),
    "config a list": (lambda f: _with(f, config__json=b"[]"), "missing a readable config.json (a JSON object)"),
    "config over the read limit": (lambda f: _with(f, config__json=b"{" + b" " * (8 * 1024 * 1024) + b"}"),
                                   "missing a readable config.json (a JSON object)"),
    "index null and no weights": (lambda f: _with(_without(f, "model.safetensors"),
                                                  model__safetensors__index__json=b"null"),
                                  "missing a readable model.safetensors.index.json"),
    "only consolidated.safetensors": (lambda f: _renamed(f, "model.safetensors", "consolidated.safetensors"),
                                      "weights (model.safetensors"),
    "only adapter_model.safetensors": (lambda f: _renamed(f, "model.safetensors", "adapter_model.safetensors"),
                                       "weights (model.safetensors"),
    "a file named like a vocabulary is no tokenizer": (
        lambda f: {**_without(f, "tokenizer.json"), "vocab_notes.md": b"notes"}, "a tokenizer ("),
    "sentencepiece only": (lambda f: {**_without(f, "tokenizer.json"), "tokenizer.model": b"sp"},
                           "missing tokenizer.json (its only tokenizer is tokenizer.model, which needs sentencepiece"),
    "missing tokenizer": (lambda f: _without(f, "tokenizer.json", "tokenizer_config.json"), "a tokenizer ("),
    "missing config": (lambda f: _without(f, "config.json"), "missing config.json"),
    "only another framework's weights (ONNX)": (
        lambda f: {**_without(f, "model.safetensors"), "model.onnx": b"onnx"}, "weights (model.safetensors"),
}


@pytest.mark.parametrize(("build", "missing"), INCOMPLETE_REPOS.values(), ids=INCOMPLETE_REPOS.keys())
def test_a_repo_that_cannot_load_is_refused_before_downloading(runtime: Runtime, repos: HubStandIn, tiny_model: Path,
                                                               build, missing: str) -> None:
    repos.add_repo("odd/incomplete", build(_repo_files(tiny_model)))
    repos.requests.clear()
    with pytest.raises(IncompleteModel) as caught:
        runtime.installs.request("odd/incomplete", None, "console:root")
    message = str(caught.value)
    assert message.startswith("`odd/incomplete` cannot be loaded as published (missing ") and missing in message
    assert "nothing was installed" in message and "\n" not in message
    assert runtime.jobs.list() == []
    fetched = {r[1].split("/resolve/")[1].split("/", 1)[1] for r in repos.requests if "/resolve/" in r[1]}
    assert fetched <= {"config.json", "tokenizer_config.json", "model.safetensors.index.json"}  # small JSON only


def test_pickle_shards_beside_a_stray_safetensors_file_are_refused_as_pickle(runtime: Runtime, repos: HubStandIn,
                                                                              tiny_model: Path) -> None:
    # training_args.safetensors is not weights transformers loads: the .bin shards are the weights, and pickle is
    # refused; before, the shards were dropped and the stray file taken for weights.
    files = _without(_repo_files(tiny_model), "model.safetensors")
    files.update({"pytorch_model-00001-of-00001.bin": b"pickle", "training_args.safetensors": b"stray",
                  "pytorch_model.bin.index.json": json.dumps({"weight_map": {"a": "pytorch_model-00001-of-00001.bin"}
                                                              }).encode()})
    repos.add_repo("odd/stray", files)
    with pytest.raises(UnsafeWeights):
        runtime.installs.request("odd/stray", None, "console:root")
    assert runtime.jobs.list() == []


def test_shards_in_a_subfolder_named_by_the_index_install(runtime: Runtime, worker, repos: HubStandIn,
                                                          tiny_model: Path) -> None:
    files = _renamed(_repo_files(tiny_model), "model.safetensors", "weights/model-00001-of-00001.safetensors")
    files["model.safetensors.index.json"] = json.dumps(
        {"metadata": {}, "weight_map": {"w": "weights/model-00001-of-00001.safetensors"}}).encode()
    repos.add_repo("odd/subfolder", files)
    ticket = runtime.installs.request("odd/subfolder", None, "console:root")
    worker()
    assert runtime.jobs.wait(ticket.job.id, 60).status == "finished"


@pytest.mark.parametrize(("name", "auto_map", "code_from"), [
    ("config.json", {"AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"}, None),
    ("config.json", {"AutoConfig": "other-org/code-repo--configuration_tiny.TinyConfig"}, "other-org/code-repo"),
    ("tokenizer_config.json", {"AutoTokenizer": [None, "other-org/code-repo--tokenization.TinyFast"]},
     "other-org/code-repo"),
])
def test_auto_map_is_remote_code(runtime: Runtime, repos: HubStandIn, tiny_model: Path, name: str, auto_map: dict,
                                 code_from: str | None) -> None:
    repos.add_repo("odd/custom", _with_json(_repo_files(tiny_model), name, auto_map=auto_map))
    with pytest.raises(RemoteCodeRequired) as caught:
        runtime.installs.request("odd/custom", None, "console:root")
    assert caught.value.code_from == code_from and "MODELBAY_TRUST_REMOTE_CODE=true" in str(caught.value)
    if code_from:
        assert f"Python code from `{code_from}`" in str(caught.value)
    assert runtime.jobs.list() == []
    runtime.installs.settings.trust_remote_code = True  # an operator who reviewed the code
    assert runtime.installs.request("odd/custom", None, "console:root").created


HOSTILE_PATHS = ["/etc/passwd", "weights\x00.safetensors", "x" * 5000, "../../escape.json", "a/../../b.json",
                 "dir\\..\\up.json", "\x1b[2Jclear.md", "line\nbreak.md"]


@pytest.mark.parametrize("bad", HOSTILE_PATHS, ids=[repr(p[:12]) for p in HOSTILE_PATHS])
def test_a_hostile_listing_is_refused_in_one_line_before_any_download(runtime: Runtime, repos: HubStandIn,
                                                                      tiny_model: Path, store: Path, bad: str) -> None:
    repos.add_repo("odd/hostile", {**_repo_files(tiny_model), bad: b"{}"})
    repos.requests.clear()
    with pytest.raises(UnsafeRepoFile) as caught:
        runtime.installs.request("odd/hostile", None, "console:root")
    message = str(caught.value)
    assert message.startswith("`odd/hostile` lists a file ModelBay cannot store safely (`")
    assert len(message) < 400 and message.isprintable()  # one line: NUL, escapes and line breaks shown as \x..
    assert caught.value.path == bad
    assert runtime.jobs.list() == [] and not [r for r in repos.requests if "/resolve/" in r[1]]
    assert not store.exists() or not any(store.rglob("*"))


CLASHES = {
    "a file and a folder": ({"extra": b"x", "extra/inner.txt": b"y"}, "extra",
                            "it is both a file and a folder of other listed files"),
    "a deeper folder": ({"docs/a": b"x", "docs/a/b/c.md": b"y"}, "docs/a",
                        "it is both a file and a folder of other listed files"),
    "names differing in case": ({"Notes.md": b"x", "notes.md": b"y"}, "notes.md",
                                "it is listed twice (perhaps in another case)"),
    "folders differing in case": ({"Docs/a.md": b"x", "docs/A.md": b"y"}, "docs/A.md",
                                  "it is listed twice (perhaps in another case)"),
}


@pytest.mark.parametrize(("extra", "path", "reason"), CLASHES.values(), ids=CLASHES.keys())
def test_paths_that_clash_are_refused_in_one_line_before_any_download(runtime: Runtime, repos: HubStandIn,
                                                                      tiny_model: Path, extra: dict[str, bytes],
                                                                      path: str, reason: str) -> None:
    repos.add_repo("odd/clash", {**_repo_files(tiny_model), **extra})
    repos.requests.clear()
    with pytest.raises(UnsafeRepoFile) as caught:
        runtime.installs.request("odd/clash", None, "console:root")
    assert caught.value.path == path and caught.value.reason == reason and "\n" not in str(caught.value)
    assert runtime.jobs.list() == [] and not [r for r in repos.requests if "/resolve/" in r[1]]


def _queue_without_preflight(runtime: Runtime, repo_id: str) -> tuple[JobRecord, VersionRecord]:
    """Queue an install job for every listed file, as a source that can only list its files would (no pre-flight)."""
    remote = runtime.installs.source("huggingface").info(repo_id)
    model = runtime.registry.upsert(remote.registry_values(), source="huggingface")
    version = runtime.registry.add_version(model.id, "main", revision_sha=remote.sha)
    job, _ = runtime.jobs.submit(INSTALL.name, {"version_id": version.id, "source": "huggingface",
                                                "repo_id": remote.repo_id, "sha": remote.sha,
                                                "files": [asdict(f) for f in remote.files]},
                                 requester="console:root", model_version_id=version.id)
    return job, version


def test_a_listing_that_cannot_be_written_fails_the_job_once_without_retrying(
    runtime: Runtime, worker, repos: HubStandIn, tiny_model: Path, store: Path
) -> None:
    # Queued without pre-flight (as by a source that cannot be checked): the worker meets the clash on disk, and
    # IsADirectoryError / FileExistsError / NotADirectoryError are the listing's fault, not a temporary one.
    repos.add_repo("odd/late-clash", {**_repo_files(tiny_model), "extra": b"x", "extra/inner.txt": b"y"})
    job, _ = _queue_without_preflight(runtime, "odd/late-clash")
    worker()
    done = runtime.jobs.wait(job.id, 60)
    assert done.status == "failed" and done.attempts == 1, done
    assert done.error.startswith("`odd/late-clash` lists a file ModelBay cannot store safely (`extra"), done.error
    assert "\n" not in done.error and _no_partial_files(store)


def test_dots_inside_a_file_name_install(runtime: Runtime, worker, repos: HubStandIn, tiny_model: Path) -> None:
    repos.add_repo("odd/dots", {**_repo_files(tiny_model), "docs/thanks...md": b"thanks", "a..b.txt": b"ab"})
    ticket = runtime.installs.request("odd/dots", None, "console:root")
    worker()
    assert runtime.jobs.wait(ticket.job.id, 60).status == "finished"
    folder = Path(runtime.registry.get_version(ticket.version.id).local_path)
    assert (folder / "docs" / "thanks...md").read_bytes() == b"thanks" and (folder / "a..b.txt").is_file()


@pytest.mark.parametrize(("build", "expected"), [
    (lambda f: _without(f, "tokenizer.json", "tokenizer_config.json"),
     "`odd/late` cannot be loaded as published (missing a tokenizer ("),
    (lambda f: _with_json(f, "config.json", auto_map={"AutoConfig": "configuration_x.XConfig"}),
     "`odd/late` needs its repository's own Python code to load"),
], ids=["missing tokenizer", "auto_map"])
def test_the_worker_checks_the_files_before_installing_and_does_not_retry(
    runtime: Runtime, worker, repos: HubStandIn, tiny_model: Path, store: Path, build, expected: str
) -> None:
    # A job queued without pre-flight's reading of the files (a source that can only list them): the worker's own
    # check on disk is what keeps it from being marked installed.
    repos.add_repo("odd/late", build(_repo_files(tiny_model)))
    job, version = _queue_without_preflight(runtime, "odd/late")
    worker()
    done = runtime.jobs.wait(job.id, 60)
    assert done.status == "failed" and done.attempts == 1, done  # a refusal fails the same way every time
    assert done.error.startswith(expected) and "\n" not in done.error
    assert runtime.registry.get_version(version.id).install_state == "failed"
    assert not (store / "odd--late").exists() and _no_partial_files(store)


def test_a_failed_job_stops_its_downloads_before_removing_staging(runtime: Runtime, worker, repos: HubStandIn,
                                                                  store: Path) -> None:
    # tokenizer.json's metadata answer is slow, so its download is still starting when chat_template.jinja fails
    # its checksum; a download thread left running would then create its lock file in a staging folder removed.
    repos.inject(REPO, "chat_template.jinja", Fault("corrupt", after_bytes=3, times=0))
    repos.inject(REPO, "tokenizer.json", Fault("delay", seconds=3, method="HEAD"))
    ticket = runtime.installs.request(REPO, None, "console:root")
    worker()
    done = runtime.jobs.wait(ticket.job.id, 60)
    assert done.status == "failed" and done.error.startswith("`chat_template.jinja` failed its checksum")
    assert _no_partial_files(store)
    time.sleep(5)  # longer than the slow answer: nothing comes back to life in staging
    assert _no_partial_files(store)


def test_a_hub_that_never_answers_is_given_up_on(runtime: Runtime) -> None:
    runtime.installs.settings.hub_timeout = 1
    with SilentHub() as silent:
        runtime.installs.settings.hub_endpoint = silent.endpoint
        started = time.monotonic()
        with pytest.raises(HubUnavailable, match="did not answer within 1s"):
            runtime.installs.request("tiny-org/anything", None, "console:root")
        with pytest.raises(HubUnavailable, match="did not answer within 1s"):
            HubSource(runtime.installs.settings).search("tiny")
        assert time.monotonic() - started < 60 and silent.accepted >= 2
    assert runtime.jobs.list() == []


def _bounded(call, seconds: float = 90.0):  # noqa: ANN001, ANN202
    """Run call in a thread and return what it raised (or returned); a call still running after `seconds` fails."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    try:
        return future.exception(timeout=seconds) or future.result()
    except TimeoutError:
        pytest.fail(f"still waiting after {seconds:g}s")
    finally:
        pool.shutdown(wait=False)  # a call still stuck ends when its hub closes


def test_a_hub_that_drips_its_answer_is_given_up_on_at_one_deadline(runtime: Runtime) -> None:
    # Headers at once, then a byte a second: every read gets its byte in time, so only an overall deadline ends it.
    settings = runtime.installs.settings
    settings.hub_timeout = 3
    with DripHub(interval=1.0) as drip:
        settings.hub_endpoint = drip.endpoint
        started = time.monotonic()
        refused = _bounded(lambda: runtime.installs.request("tiny-org/anything", None, "console:root"))
        assert isinstance(refused, HubUnavailable) and "did not answer within" in str(refused), refused
        assert time.monotonic() - started < 30  # 2 x 3 s for the pre-flight, plus a read's worth
        searched = _bounded(lambda: HubSource(settings).search("tiny"))
        assert isinstance(searched, HubUnavailable) and "did not answer within 3s" in str(searched), searched
        assert drip.accepted >= 2
    assert runtime.jobs.list() == []


def test_uninstall_refuses_a_revision_that_is_no_revision(runtime: Runtime) -> None:
    runtime.installs.request(REPO, None, "console:root")  # registered, not installed
    for garbage in ("../../..", "main\x00", "a//b", "x" * 300):
        with pytest.raises(InvalidId):
            runtime.installs.uninstall(REPO, garbage)
    with pytest.raises(NotInstalled):
        runtime.installs.uninstall(REPO, "main")


def test_an_install_incomplete_on_disk_is_installed_again(runtime: Runtime, worker) -> None:
    ticket = runtime.installs.request(REPO, None, "console:root")
    worker()
    assert runtime.jobs.wait(ticket.job.id, 60).status == "finished"
    folder = Path(runtime.registry.get_version(ticket.version.id).local_path)
    (folder / "tokenizer.json").unlink()  # removed by hand: "Already installed" would be wrong
    again = runtime.installs.request(REPO, None, "console:root")
    assert again.created and again.version.id == ticket.version.id
    assert runtime.jobs.wait(again.job.id, 60).status == "finished"
    assert (folder / "tokenizer.json").is_file()


def test_an_install_incomplete_on_disk_says_so_at_chat(settings, tiny_chat_model: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_chat_model, tmp_path / "tiny-chat")
    runtime = Runtime(settings)
    runtime.prepare()
    try:
        installed(runtime.registry, folder)
        (folder / "model.safetensors").unlink()  # removed by hand after the install
        reply = asyncio.run(Dispatcher(runtime, reraise_unknown=True).dispatch_line("/chat tiny-chat", ADMIN,
                                                                                    Place("slack", "C1")))
        assert reply.title == "Incomplete model"
        assert reply.text.startswith("`tiny-chat` is installed but incomplete on disk (missing weights (")
        assert "`/models install tiny-chat`" in reply.text and "\n" not in reply.text
    finally:
        runtime.close()


def _truncate(path: Path) -> None:
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size // 2)


BROKEN_ON_DISK = {
    "truncated weights": lambda folder: _truncate(folder / "model.safetensors"),
    "weights that are no safetensors": lambda folder: (folder / "model.safetensors").write_bytes(b"\xff" * 64),
    "a model type transformers does not know": lambda folder: (folder / "config.json").write_text(
        json.dumps({**json.loads((folder / "config.json").read_text()), "model_type": "no-such-model"})),
    "a broken tokenizer.json": lambda folder: (folder / "tokenizer.json").write_text("{"),
}


@pytest.mark.parametrize("damage", BROKEN_ON_DISK.values(), ids=BROKEN_ON_DISK.keys())
def test_a_model_that_fails_to_load_says_so_at_chat_in_one_line(settings, tiny_chat_model: Path, tmp_path: Path,
                                                                 damage, caplog: pytest.LogCaptureFixture) -> None:
    # Complete as far as the file check sees, but loading fails: the person reads one line, the log has the why.
    folder = shutil.copytree(tiny_chat_model, tmp_path / "tiny-chat")
    runtime = Runtime(settings)
    runtime.prepare()
    try:
        installed(runtime.registry, folder)
        damage(folder)
        reply = asyncio.run(Dispatcher(runtime, reraise_unknown=True).dispatch_line("/chat tiny-chat", ADMIN,
                                                                                    Place("slack", "C1")))
        assert reply.title == "Model cannot load", reply
        assert reply.text.startswith("`tiny-chat` is installed but could not be loaded (")
        assert "`/models install tiny-chat`" in reply.text and "\n" not in reply.text
        assert any(r.exc_info for r in caplog.records if r.name == "modelbay.engine.inference.backends.transformers")  # the traceback
    finally:
        runtime.close()
