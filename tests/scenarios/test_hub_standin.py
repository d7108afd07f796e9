"""Drives the real huggingface_hub client against the hub stand-in: listings, metadata, downloads and faults."""

from __future__ import annotations

import hashlib
import json
import pathlib
import random

import httpx2
import numpy as np
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder
from huggingface_hub.utils import get_session
from safetensors.numpy import save

# tests/conftest.py provides `hub` too; importing it here keeps this module runnable with --noconftest.
from tests.support.hub import Fault, HubStandIn, hub  # noqa: F401

REPO = "acme/tiny-llm"
CONFIG = json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}).encode()


def _weights() -> bytes:
    """A real 1 MiB safetensors file with 262,144 F32 + 8 F16 parameters."""
    rng = np.random.default_rng(0)
    return save({"w": rng.standard_normal((512, 512), dtype=np.float32), "b": np.ones(8, dtype=np.float16)})


def _files() -> dict[str, bytes]:
    """A small model repo: weights, config, a nested tokenizer file and a 1.5 MB random LFS blob."""
    return {
        "model.safetensors": _weights(),
        "config.json": CONFIG,
        "tokenizer/vocab.txt": b"hello\nworld\n",
        "extra.bin": random.Random(1).randbytes(1_500_000),
    }


@pytest.fixture(autouse=True)
def _local_hub_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's token and Xet out of the way, and let the client reach the stand-in even offline."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")  # read at import; the stand-in never advertises Xet anyway
    # The suite may import huggingface_hub with HF_HUB_OFFLINE=1; that flag is read at import and would block us.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def api(hub: HubStandIn) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=False)


def _download(hub: HubStandIn, tmp_path: pathlib.Path, filename: str, *, token: str | bool = False, **kwargs) -> bytes:
    """hf_hub_download into `tmp_path`'s cache (anonymously unless a token is given) and return the bytes."""
    path = hf_hub_download(REPO, filename, endpoint=hub.endpoint, cache_dir=tmp_path / "cache", token=token, **kwargs)
    return pathlib.Path(path).read_bytes()


def _gets(hub: HubStandIn, filename: str) -> list[dict[str, str]]:
    """Headers of every GET resolve request for `filename`."""
    return [h for m, p, h in hub.requests if m == "GET" and p.endswith(f"/resolve/main/{filename}")]


def test_list_models_search_filter_sort_limit(hub: HubStandIn, api: HfApi) -> None:
    hub.add_repo("acme/Chat-Small", {"a": b"1"}, downloads=10, likes=5, tags=["chat", "en"])
    hub.add_repo("acme/chat-large", {"a": b"2"}, downloads=30, likes=1, tags=["chat"])
    hub.add_repo("other/embedder", {"a": b"3"}, downloads=20, pipeline_tag="feature-extraction",
                 library_name="sentence-transformers")
    hub.add_repo("other/secret", {"a": b"4"}, private=True, downloads=99)

    assert [m.id for m in api.list_models(search="CHAT")] == ["acme/Chat-Small", "acme/chat-large"]
    assert [m.id for m in api.list_models(author="other")] == ["other/embedder"]
    assert [m.id for m in api.list_models(filter=["chat", "en"])] == ["acme/Chat-Small"]
    assert [m.id for m in api.list_models(filter="sentence-transformers")] == ["other/embedder"]
    assert [m.id for m in api.list_models(pipeline_tag="text-generation")] == ["acme/Chat-Small", "acme/chat-large"]
    assert [m.id for m in api.list_models(sort="downloads")] == ["acme/chat-large", "other/embedder", "acme/Chat-Small"]
    assert [m.id for m in api.list_models(sort="likes", limit=1)] == ["acme/Chat-Small"]
    assert [m.id for m in api.list_models(sort="created_at", limit=2)] == ["other/embedder", "acme/chat-large"]

    first = next(iter(api.list_models(search="large", full=True, cardData=True)))
    assert (first.author, first.downloads, first.gated, first.private) == ("acme", 30, False, False)
    assert first.siblings is not None and [s.rfilename for s in first.siblings] == ["a"]
    assert first.card_data is not None and first.card_data.library_name == "transformers"
    assert first.created_at is not None and first.last_modified is not None
    slim = next(iter(api.list_models(search="large", expand=["downloads"])))
    assert (slim.downloads, slim.likes) == (30, None)

    # The private repo shows up only for a token allowed to read it.
    hub.allow_token("other/secret", "hf_owner")
    assert [m.id for m in HfApi(endpoint=hub.endpoint, token="hf_owner").list_models(author="other")] == [
        "other/embedder", "other/secret"]


def test_list_models_follows_link_pagination(hub: HubStandIn, api: HfApi) -> None:
    hub.page_size = 10
    for i in range(25):
        hub.add_repo(f"acme/model-{i:02d}", {"a": bytes([i])}, downloads=i)

    assert [m.id for m in api.list_models()] == [f"acme/model-{i:02d}" for i in range(25)]
    pages = [p for m, p, _ in hub.requests if m == "GET" and p.startswith("/api/models")]
    assert len(pages) == 3 and "cursor=20" in pages[-1]

    hub.requests.clear()
    top = [m.id for m in api.list_models(sort="downloads", limit=15)]
    assert top == [f"acme/model-{i:02d}" for i in range(24, 9, -1)]
    assert len(hub.requests) == 2  # the client stops following Link once it has `limit` models


def test_model_info_reports_files_metadata_and_safetensors(hub: HubStandIn, api: HfApi) -> None:
    files = _files()
    sha = hub.add_repo(REPO, files, tags=["llama"])

    info = api.model_info(REPO, files_metadata=True)
    assert info.sha == sha and info.pipeline_tag == "text-generation" and info.library_name == "transformers"
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == set(files)
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None and weights.lfs.sha256 == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert weights.size == weights.lfs.size == len(files["model.safetensors"])
    config = siblings["config.json"]
    assert config.lfs is None
    assert config.blob_id == hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert info.safetensors is not None
    assert info.safetensors.parameters == {"F32": 512 * 512, "F16": 8} and info.safetensors.total == 512 * 512 + 8
    assert info.used_storage == sum(len(d) for d in files.values())
    assert info.config == {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}

    plain = api.model_info(REPO)
    assert plain.siblings is not None and plain.siblings[0].size is None  # sizes only with files_metadata
    assert api.get_safetensors_metadata(REPO).parameter_count == {"F32": 512 * 512, "F16": 8}


def test_revisions_by_branch_and_sha(hub: HubStandIn, api: HfApi, tmp_path: pathlib.Path) -> None:
    old = hub.add_repo(REPO, {"config.json": b'{"v": 1}'})
    new = hub.add_repo(REPO, {"config.json": b'{"v": 2}'})
    dev = hub.add_repo(REPO, {"config.json": b'{"v": 3}'}, revision="dev")
    assert len({old, new, dev}) == 3

    assert api.model_info(REPO).sha == new
    assert api.model_info(REPO, revision=old).sha == old
    assert api.model_info(REPO, revision="dev").sha == dev
    assert _download(hub, tmp_path, "config.json", revision=old) == b'{"v": 1}'
    assert _download(hub, tmp_path, "config.json") == b'{"v": 2}'
    assert _download(hub, tmp_path, "config.json", revision="dev") == b'{"v": 3}'
    assert {b.name: b.target_commit for b in api.list_repo_refs(REPO).branches} == {"main": new, "dev": dev}
    assert api.resolve_revision(REPO, revision="main", cache_dir=tmp_path / "cache").resolved == new

    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="nope")
    with pytest.raises(RevisionNotFoundError):
        _download(hub, tmp_path, "config.json", revision="0" * 40)


def test_list_repo_tree(hub: HubStandIn, api: HfApi) -> None:
    files = _files()
    hub.add_repo(REPO, files)

    top = list(api.list_repo_tree(REPO))
    assert [(type(e), e.path) for e in top] == [
        (RepoFolder, "tokenizer"), (RepoFile, "config.json"), (RepoFile, "extra.bin"), (RepoFile, "model.safetensors")]
    everything = {e.path: e for e in api.list_repo_tree(REPO, recursive=True)}
    assert set(everything) == set(files) | {"tokenizer"}
    weights = everything["model.safetensors"]
    assert isinstance(weights, RepoFile) and weights.lfs is not None
    assert weights.lfs.sha256 == hashlib.sha256(files["model.safetensors"]).hexdigest()
    assert [e.path for e in api.list_repo_tree(REPO, "tokenizer")] == ["tokenizer/vocab.txt"]
    assert sorted(api.list_repo_files(REPO)) == sorted(files)

    expanded = next(iter(api.list_repo_tree(REPO, "tokenizer", expand=True)))
    assert expanded.last_commit is not None and expanded.last_commit.oid == api.model_info(REPO).sha

    hub.page_size = 2  # forces three Link-chained pages
    assert set(e.path for e in api.list_repo_tree(REPO, recursive=True)) == set(everything)

    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(REPO, "missing"))


def test_get_paths_info(hub: HubStandIn, api: HfApi) -> None:
    files = _files()
    hub.add_repo(REPO, files)

    found = api.get_paths_info(REPO, ["config.json", "tokenizer", "absent.txt", "model.safetensors"])
    assert [(type(e), e.path) for e in found] == [
        (RepoFile, "config.json"), (RepoFolder, "tokenizer"), (RepoFile, "model.safetensors")]
    assert found[0].size == len(CONFIG) and found[0].lfs is None
    assert found[2].lfs is not None and found[2].lfs.size == len(files["model.safetensors"])
    assert api.get_paths_info(REPO, "config.json", expand=True)[0].last_commit is not None


def test_downloads_are_byte_identical(hub: HubStandIn, tmp_path: pathlib.Path) -> None:
    files = _files()
    sha = hub.add_repo(REPO, files)

    assert _download(hub, tmp_path, "model.safetensors") == files["model.safetensors"]
    assert _download(hub, tmp_path, "tokenizer/vocab.txt") == files["tokenizer/vocab.txt"]

    snapshot = pathlib.Path(snapshot_download(REPO, endpoint=hub.endpoint, cache_dir=tmp_path / "snap", token=False))
    assert snapshot.name == sha
    assert {p.relative_to(snapshot).as_posix(): p.read_bytes() for p in snapshot.rglob("*") if p.is_file()} == files

    local = pathlib.Path(snapshot_download(REPO, endpoint=hub.endpoint, local_dir=tmp_path / "local", token=False,
                                           allow_patterns=["*.json", "*.safetensors"]))
    assert (local / "config.json").read_bytes() == CONFIG
    assert (local / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert not (local / "extra.bin").exists()


def test_resolve_headers_and_ranges(hub: HubStandIn) -> None:
    files = _files()
    sha = hub.add_repo(REPO, files)
    weights = files["model.safetensors"]
    url = f"{hub.endpoint}/{REPO}/resolve/main/model.safetensors"

    head = get_session().head(url)
    assert head.status_code == 200 and head.headers["X-Repo-Commit"] == sha
    assert head.headers["ETag"] == head.headers["X-Linked-Etag"] == f'"{hashlib.sha256(weights).hexdigest()}"'
    assert int(head.headers["Content-Length"]) == int(head.headers["X-Linked-Size"]) == len(weights)
    assert head.headers["Accept-Ranges"] == "bytes"
    assert not [name for name in head.headers if name.lower().startswith("x-xet")]

    part = get_session().get(url, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == weights[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(weights)}"
    tail = get_session().get(url, headers={"Range": f"bytes={len(weights) - 10}-"})
    assert tail.status_code == 206 and tail.content == weights[-10:]
    assert get_session().get(url, headers={"Range": f"bytes={len(weights)}-"}).status_code == 416

    config = get_session().head(f"{hub.endpoint}/{REPO}/resolve/main/config.json")
    git_oid = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert config.headers["ETag"] == f'"{git_oid}"'
    assert "X-Linked-Etag" not in config.headers


def test_gated_repo_needs_an_allowed_token(hub: HubStandIn, api: HfApi, tmp_path: pathlib.Path) -> None:
    hub.add_repo(REPO, {"config.json": CONFIG}, gated=True)
    hub.allow_token(REPO, "hf_granted")

    assert api.model_info(REPO).gated == "auto"  # like the Hub, metadata stays public; file content is gated
    with pytest.raises(GatedRepoError) as anonymous:
        _download(hub, tmp_path, "config.json")
    assert anonymous.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as refused:
        _download(hub, tmp_path, "config.json", token="hf_stranger")
    assert refused.value.response.status_code == 403
    assert _download(hub, tmp_path, "config.json", token="hf_granted") == CONFIG


def test_private_repo_looks_missing_without_access(hub: HubStandIn, tmp_path: pathlib.Path) -> None:
    hub.add_repo(REPO, {"config.json": CONFIG}, private=True)
    hub.allow_token(REPO, "hf_owner")

    with pytest.raises(RepositoryNotFoundError) as anonymous:
        HfApi(endpoint=hub.endpoint, token=False).model_info(REPO)
    assert anonymous.value.response.status_code == 401 and not isinstance(anonymous.value, GatedRepoError)
    with pytest.raises(RepositoryNotFoundError):
        _download(hub, tmp_path, "config.json", token="hf_stranger")
    assert HfApi(endpoint=hub.endpoint, token="hf_owner").model_info(REPO).private is True
    assert _download(hub, tmp_path, "config.json", token="hf_owner") == CONFIG


def test_missing_repo_and_missing_file(hub: HubStandIn, api: HfApi, tmp_path: pathlib.Path) -> None:
    hub.add_repo(REPO, {"config.json": CONFIG})

    with pytest.raises(RepositoryNotFoundError) as repo_missing:
        api.model_info("acme/nothing-here")
    assert not isinstance(repo_missing.value, GatedRepoError)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nothing-here", "config.json", endpoint=hub.endpoint, cache_dir=tmp_path, token=False)
    assert api.repo_exists(REPO) and not api.repo_exists("acme/nothing-here")
    with pytest.raises(RemoteEntryNotFoundError):
        _download(hub, tmp_path, "weights.gguf")
    assert not api.file_exists(REPO, "weights.gguf")


def test_drop_fault_is_resumed_by_the_client(hub: HubStandIn, tmp_path: pathlib.Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files()
    hub.add_repo(REPO, files)
    hub.inject(REPO, "extra.bin", Fault("drop", after_bytes=300_000))
    # The client reads 10 MiB chunks; smaller ones make it keep the partial body and resume with a Range request.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)

    assert _download(hub, tmp_path, "extra.bin") == files["extra.bin"]
    first, retry = _gets(hub, "extra.bin")
    assert "range" not in first
    resumed_at = int(retry["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 300_000


def test_stall_fault_times_out_then_resumes(hub: HubStandIn, tmp_path: pathlib.Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    files = _files()
    hub.add_repo(REPO, files)
    hub.inject(REPO, "extra.bin", Fault("stall", after_bytes=200_000, seconds=30))
    # http_get reads constants.HF_HUB_DOWNLOAD_TIMEOUT per call; the env var is only read at import.
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 2)

    assert _download(hub, tmp_path, "extra.bin") == files["extra.bin"]
    assert len(_gets(hub, "extra.bin")) == 2  # the stalled GET timed out and a resumed one finished the file


def test_corrupt_fault_passes_the_clients_size_check(hub: HubStandIn, api: HfApi, tmp_path: pathlib.Path) -> None:
    files = _files()
    hub.add_repo(REPO, files)
    hub.inject(REPO, "model.safetensors", Fault("corrupt", after_bytes=5_000))

    got = _download(hub, tmp_path, "model.safetensors")
    siblings = api.model_info(REPO, files_metadata=True).siblings or []
    [weights] = [s for s in siblings if s.rfilename == "model.safetensors"]
    assert len(got) == len(files["model.safetensors"])
    assert weights.lfs is not None and hashlib.sha256(got).hexdigest() != weights.lfs.sha256  # ModelBay must verify
    assert got[5_000] == files["model.safetensors"][5_000] ^ 0xFF


def test_status_faults(hub: HubStandIn, tmp_path: pathlib.Path) -> None:
    hub.add_repo(REPO, {"config.json": CONFIG})

    hub.inject(REPO, "config.json", Fault("status", status=503))
    with pytest.raises(HfHubHTTPError) as unavailable:  # http_get retries only 408/429, not 5xx
        _download(hub, tmp_path / "a", "config.json")
    assert unavailable.value.response.status_code == 503

    hub.inject(REPO, "config.json", Fault("status", status=429))
    assert _download(hub, tmp_path / "b", "config.json") == CONFIG  # waited out Retry-After, then retried
    assert len(_gets(hub, "config.json")) == 3

    hub.inject(REPO, "config.json", Fault("status", status=500, times=0))
    for attempt in ("c", "d"):
        with pytest.raises(HfHubHTTPError):
            _download(hub, tmp_path / attempt, "config.json")


def test_add_repo_from_a_folder(hub: HubStandIn, api: HfApi, tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "export"
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "config.json").write_bytes(CONFIG)
    (folder / "tokenizer" / "vocab.txt").write_bytes(b"a\nb\n")
    (folder / "model.gguf").write_bytes(b"GGUF" * 10)

    hub.add_repo(REPO, folder)
    assert sorted(api.list_repo_files(REPO)) == ["config.json", "model.gguf", "tokenizer/vocab.txt"]
    [gguf] = api.get_paths_info(REPO, "model.gguf")
    assert gguf.lfs is not None and gguf.lfs.sha256 == hashlib.sha256(b"GGUF" * 10).hexdigest()


def test_remove_repo_and_reset(hub: HubStandIn, api: HfApi) -> None:
    hub.add_repo(REPO, {"config.json": CONFIG})
    hub.add_repo("acme/other", {"config.json": CONFIG})
    hub.remove_repo(REPO)
    assert [m.id for m in api.list_models()] == ["acme/other"]
    assert hub.requests and all(isinstance(h, dict) for _, _, h in hub.requests)

    hub.reset()
    assert hub.requests == [] and list(api.list_models()) == []


def test_stop_wakes_a_stalled_download(tmp_path: pathlib.Path) -> None:
    stand_in = HubStandIn().start()
    stand_in.add_repo(REPO, {"extra.bin": b"x" * 100_000})
    stand_in.inject(REPO, "extra.bin", Fault("stall", after_bytes=10, seconds=60))
    get = get_session().stream("GET", f"{stand_in.endpoint}/{REPO}/resolve/main/extra.bin")
    with get as response:
        stand_in.stop()
        with pytest.raises(httpx2.RemoteProtocolError):  # cut off by stop(), not served after a 30 s stall
            response.read()
