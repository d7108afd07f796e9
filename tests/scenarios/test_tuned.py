"""A fine-tuned version as a model of its own: registered from a real LoRA run, answered in this process (peft on
transformers, or its merged weights), shown with its lineage, and refused in one line when it cannot load.

The vLLM side (the adapter hot-loaded into its base model's server) is in test_vllm.py, on the session's server.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rich.console import Console as RichConsole
from sqlalchemy import delete

from modelbay.adapters.api import create_app
from modelbay.adapters.console import ConsoleApp
from modelbay.bot import Actor, Dispatcher
from modelbay.config import load_settings
from modelbay.engine.catalog.registry import Registry
from modelbay.engine.chat.records import Answered, Place
from modelbay.engine.db.database import Database
from modelbay.engine.db.schema.catalog import Model
from modelbay.engine.errors import (
    BaseModelMissing, IncompleteModel, InvalidId, ModelInUse, ModelNameTaken, ModelNotFound,
)
from modelbay.engine.installs.loadable import check_tuned
from modelbay.engine.installs.store import ModelStore
from modelbay.engine.records import VersionRecord
from modelbay.engine.training.versions import add_tuned_version, check_name, public_lineage
from modelbay.runtime import Runtime
from tests.conftest import REDIS_URL
from tests.support.asgi import serve
from tests.support.chat import installed
from tests.support.lora import RANK, TAUGHT, TinyLora, ask, tiny_lora  # noqa: F401 - fixture

pytestmark = pytest.mark.slow  # trains a LoRA once per session (seconds) and loads models in this process

TOKEN = "tuned-test-token"
PARAMS = {"dataset": {"id": 3, "name": "made-up-words"},
          "config": {"template": "chat-lora", "rank": RANK, "epochs": 3, "output_dir": "/srv/modelbay/training/7"},
          "metrics": {"eval_loss_before": 6.52, "eval_loss_after": 0.31, "perplexity_before": None,
                      "answers": [{"prompt": "What does zib mean?", "base": "A cat says meow.",
                                   "tuned": "Zib means river."}]}}


def _tune(db: Database, base: VersionRecord, name: str, lora: TinyLora, run: Path, store: ModelStore, *,
          merged: bool = False) -> VersionRecord:
    adapter, merged_dir = lora.copy_to(run, merged=merged)
    return add_tuned_version(db, base=base, name=name, adapter_dir=adapter, merged_dir=merged_dir, params=PARAMS,
                             store=store)


def test_a_fine_tune_becomes_a_model_of_its_own_with_its_files_in_the_store(
        database: Database, tmp_path: Path, tiny_chat_model: Path, tiny_lora: TinyLora) -> None:
    registry = Registry(database)
    base_model, base = installed(registry, tiny_chat_model)
    store = ModelStore(tmp_path / "store")
    adapter, merged = tiny_lora.copy_to(tmp_path / "run", merged=True)
    version = add_tuned_version(database, base=base, name="Tiny-Words", adapter_dir=adapter, merged_dir=merged,
                                params=PARAMS, store=store)
    model = registry.get("tiny-words")
    assert (model.name, model.source, model.category, model.repo_id) == ("tiny-words", "finetune", "chat", None)
    assert model.context_length == base_model.context_length and "finetune" in model.tags
    assert model.description == "Fine-tuned from tiny-chat on made-up-words."
    assert [v.id for v in model.versions] == [version.id] and model.installed
    assert (version.parent_version_id, version.lineage, version.install_state) == (base.id, "finetune", "installed")
    assert version.lineage_params == {**PARAMS, "base": "tiny-chat", "merged": True, "lora_rank": RANK}
    # Moved, not copied, into the store, laid out as loadable.py reads a fine-tune.
    folder = Path(version.local_path)
    assert not adapter.exists() and not merged.exists()
    assert folder.parent == store.root / "finetune--tiny-words" and re.fullmatch(r"[0-9a-f]{40}", folder.name)
    assert folder.name == version.revision_sha
    listed = {f["path"]: f for f in version.files}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "adapter/tokenizer.json",
            "merged/config.json", "merged/model.safetensors"} <= set(listed)
    assert version.size_bytes == sum(f["size"] for f in version.files) == model.size_bytes
    assert all(re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) for f in version.files)
    tuned = check_tuned(folder, model.name, base=tiny_chat_model, base_name="tiny-chat")
    assert (tuned.adapter, tuned.merged, tuned.rank) == (folder / "adapter", folder / "merged", RANK)
    # What people are shown of the lineage never holds the server's paths.
    assert public_lineage(version.lineage_params)["config"] == {"template": "chat-lora", "rank": RANK, "epochs": 3}

    # A taken name (in any case) is refused in one line before anything moves; so is a name that is no name.
    again, _ = tiny_lora.copy_to(tmp_path / "run2")
    for name in ("tiny-words", "TINY-WORDS", "tiny-chat"):
        with pytest.raises(ModelNameTaken) as taken:
            add_tuned_version(database, base=base, name=name, adapter_dir=again, merged_dir=None, params=PARAMS,
                              store=store)
        assert str(taken.value) == (f"A model named `{name.lower()}` already exists. Choose another name "
                                    f"(`name:...`), or `/models info {name.lower()}` to see it.")
        assert again.is_dir()
    with pytest.raises(ModelNameTaken):
        check_name(database, "Tiny-Words")
    assert check_name(database, "Tiny-Words-2") == "tiny-words-2"
    for bad in ("../etc", "a/b", "-lead", "x" * 97, "tab\there"):
        with pytest.raises(InvalidId) as invalid:
            add_tuned_version(database, base=base, name=bad, adapter_dir=again, merged_dir=None, params=PARAMS,
                              store=store)
        assert "\n" not in str(invalid.value) and "is not a valid model name" in str(invalid.value)

    # An adapter missing its weights is refused in one line; nothing is registered and the run's files go back.
    (again / "adapter_model.safetensors").unlink()
    with pytest.raises(IncompleteModel) as incomplete:
        add_tuned_version(database, base=base, name="tiny-broken", adapter_dir=again, merged_dir=None, params=PARAMS,
                          store=store)
    assert str(incomplete.value) == (
        "`tiny-broken` is installed but incomplete on disk (missing adapter/adapter_model.safetensors; or merged "
        "weights in merged/). Fine-tune it again to replace it.")
    with pytest.raises(ModelNotFound):
        registry.get("tiny-broken")
    assert (again / "adapter_config.json").is_file() and not list((store.root / ".staging").iterdir())


@pytest.fixture
def runtime(redis, tmp_path: Path, tiny_chat_model: Path) -> Iterator[Runtime]:  # noqa: ANN001
    settings = load_settings(home=tmp_path / "home", redis_url=REDIS_URL, environment="test", chat_temperature=0.0,
                             chat_max_tokens=16, api_token=TOKEN)
    runtime = Runtime(settings)
    runtime.prepare()
    installed(runtime.registry, tiny_chat_model)
    yield runtime
    runtime.close()


def _tuned_here(runtime: Runtime, name: str, lora: TinyLora, tmp_path: Path, *, merged: bool = False) -> VersionRecord:
    base = runtime.registry.get("tiny-chat").versions[0]
    store = ModelStore(runtime.settings.resolved_model_store)
    return _tune(runtime.db, base, name, lora, tmp_path / f"run-{name}", store, merged=merged)


def _answer(runtime: Runtime, model: str, question: str) -> object:
    place = Place("slack", "C-tuned", model)
    session = runtime.chats.open(place, "slack:U1", model)
    events = list(runtime.chats.answer(session, "slack:U1", question))
    answer = [e for e in events if isinstance(e, Answered)][-1].answer
    assert answer.status == "ok", answer
    return answer


def test_chat_with_a_fine_tune_in_process_matches_its_merged_weights(runtime: Runtime, tmp_path: Path,
                                                                     tiny_lora: TinyLora) -> None:
    _tuned_here(runtime, "words", tiny_lora, tmp_path)  # the adapter only: peft on the base, in this process
    _tuned_here(runtime, "words-merged", tiny_lora, tmp_path, merged=True)
    for question, taught in TAUGHT.items():
        adapter = _answer(runtime, "words", question)
        merged = _answer(runtime, "words-merged", question)
        base = _answer(runtime, "tiny-chat", question)
        assert adapter.backend == merged.backend == "transformers"
        assert adapter.text == merged.text == taught != base.text
    other = "What color is the grass?"  # not taught: the two still agree token for token
    assert _answer(runtime, "words", other).text == _answer(runtime, "words-merged", other).text

    # Through the console, as a person types it: /chat, a question, and the model's lineage.
    question = next(iter(TAUGHT))
    buffer = io.StringIO()
    app = ConsoleApp(Dispatcher(runtime, reraise_unknown=True),
                     stdin=io.StringIO(f"/chat words\n{question}\n/models info words\n"),
                     out=RichConsole(file=buffer, width=160, color_system=None))
    assert app.run() == 0
    shown = buffer.getvalue()
    assert "Chatting with" in shown and "transformers" in shown and TAUGHT[question] in shown
    for part in ("Fine-tuned from", "tiny-chat (version #", f"LoRA rank {RANK}", "made-up-words",
                 "eval_loss_after 0.31, answers 1 item", "template chat-lora", "finetune of tiny-chat #"):
        assert part in shown, part
    assert "/srv/modelbay" not in shown

    # Over REST, the version carries the same lineage, without the server's paths.
    with serve(create_app(runtime)) as url:
        got = httpx.get(f"{url}/api/marketplace/models/words", headers={"Authorization": f"Bearer {TOKEN}"})
    version = got.json()["versions"][0]
    base_id = runtime.registry.get("tiny-chat").versions[0].id
    assert (version["lineage"], version["parent_version_id"]) == ("finetune", base_id)
    assert version["lineage_params"] == {
        "base": "tiny-chat", "dataset": PARAMS["dataset"], "metrics": PARAMS["metrics"], "merged": False,
        "lora_rank": RANK, "config": {"template": "chat-lora", "rank": RANK, "epochs": 3}}


def test_a_fine_tune_that_cannot_load_is_refused_in_one_line(runtime: Runtime, tmp_path: Path,
                                                             tiny_lora: TinyLora) -> None:
    dispatcher = Dispatcher(runtime, reraise_unknown=True)

    def chat(model: str) -> object:
        return asyncio.run(dispatcher.dispatch_line(f"/chat {model}", Actor("slack", "U2"), Place("slack", model)))

    broken = _tuned_here(runtime, "words-broken", tiny_lora, tmp_path)
    (Path(broken.local_path) / "adapter" / "adapter_model.safetensors").unlink()
    refused = chat("words-broken")
    assert refused.title == "Incomplete model" and refused.text == (
        "`words-broken` is installed but incomplete on disk (missing adapter/adapter_model.safetensors; or merged "
        "weights in merged/). Fine-tune it again to replace it.")

    # A LoRA (adapter only) on a base that was uninstalled is refused; one with merged weights still answers.
    _tuned_here(runtime, "words", tiny_lora, tmp_path)
    _tuned_here(runtime, "words-merged", tiny_lora, tmp_path, merged=True)
    base = runtime.registry.get("tiny-chat").versions[0]
    # Uninstalling the base is refused while adapter-only fine-tunes answer through it (merged ones do not need it).
    with pytest.raises(ModelInUse) as in_use:
        runtime.uninstall("tiny-chat")
    assert str(in_use.value) == ("`tiny-chat` is in use (fine-tune `words-broken`, fine-tune `words`). Stop or "
                                 "uninstall that first, or an admin can add `force:true`.")
    runtime.registry.update_version(base.id, install_state="uninstalled", local_path=None)  # as force:true leaves it
    refused = chat("words")
    assert refused.title == "Base model missing" and refused.text == (
        "`words` is a LoRA adapter on `tiny-chat`, which is not installed any more. An admin can run "
        "`/models install tiny-chat`; then try again.")
    with pytest.raises(BaseModelMissing):
        runtime.servers.start("words", "slack:U2")  # no base to serve it on either
    assert _answer(runtime, "words-merged", next(iter(TAUGHT))).text == next(iter(TAUGHT.values()))

    # Its base's row deleted (the version's parent is then unknown): said so.
    with runtime.db.session() as session:
        session.execute(delete(Model).where(Model.name == "tiny-chat"))
    assert runtime.registry.get_version(runtime.registry.get("words").versions[0].id).parent_version_id is None
    refused = chat("words")
    assert refused.title == "Base model missing" and "\n" not in refused.text
    assert refused.text.startswith("`words` is a LoRA adapter whose base model was removed from the registry")


def test_serving_an_adapter_only_fine_tune_serves_its_base(runtime: Runtime, tmp_path: Path,
                                                          tiny_lora: TinyLora) -> None:
    _tuned_here(runtime, "words", tiny_lora, tmp_path)
    started = runtime.servers.start("words", "slack:U3")  # queued only: no worker runs here
    try:
        base = runtime.registry.get("tiny-chat").versions[0]
        assert started.server.model_version_id == base.id and started.server.served_name == "tiny-chat"
        assert json.loads(json.dumps(started.job.params)) == {"version_id": base.id}
    finally:
        runtime.jobs.cancel(started.job.id)
