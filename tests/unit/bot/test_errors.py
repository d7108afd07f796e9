"""Every user-facing error has a category, renders as a titled one-line reply, and answers HTTP with its category's
status unless the table lists another."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import pytest

import modelbay
from modelbay.adapters.api import _handle_error
from modelbay.bot.errors import ERRORS, ArgumentInvalid, ErrorStyle, UnknownCommand, render_error, style_of
from modelbay.bot.spec import Arg, Command
from modelbay.engine import errors as E

CATEGORIES = (E.NotFound, E.Conflict, E.Unavailable, E.Refused, E.Misconfigured)
HOME = {"modelbay/engine/errors.py", "modelbay/bot/errors.py"}  # where every user-facing error is defined


async def _noop() -> None:
    return None


_COMMAND = Command(("models", "install"), "Install a model.", lambda: _noop(),
                   (Arg("model", "The model.", required=True),))

# One instance of every user-facing error; a new error class needs a line here (see test_every_error_has_a_sample).
SAMPLES: list[E.ModelBayError] = [
    E.ModelNotFound("qwen", ["qwen2.5-0.5b-instruct"]),
    E.RepoNotFound("nobody/nothing"),
    E.RevisionMissing("Qwen/Qwen2.5-0.5B-Instruct", "nope"),
    E.JobNotFound("abc123"),
    E.AnswerNotFound(7),
    UnknownCommand("/modles", "/models"),
    E.JobNotCancelable("abc123", "finished"),
    E.ModelInUse("qwen", ["served"]),
    E.NotInstalled("qwen"),
    E.NeedsInstall("qwen"),
    E.NotServed("qwen", "in-process answers are off"),
    E.ServerNotRunning("qwen"),
    E.NoChatHere(),
    E.ModelNameTaken("tiny-words"),
    E.BaseModelMissing("tiny-words", "tiny-chat"),
    E.BaseModelMissing("tiny-words", None),
    E.IncompleteModel("tiny-words", ["adapter/adapter_model.safetensors"], installed=True,
                      fix="Fine-tune it again to replace it."),
    E.HubUnavailable("https://huggingface.co", "connection refused"),
    E.DownloadFailed("model.safetensors", "connection reset\nby peer"),
    E.ChecksumMismatch("model.safetensors", "a" * 64, "b" * 64),
    E.InsufficientDisk(10 * 2**30, 2**30, 2**30, "/models"),
    E.DiskFull("/models"),
    E.ServerFailed("qwen", "it exited with status 1"),
    E.BackendFailed("the backend timed out"),
    E.InferenceUnavailable(),
    E.DatabaseUnavailable(),
    E.InvalidId("model id", "../etc", "'..' may not be a part of it", "owner/name"),
    E.NotAllowed("/models install", "viewer", "admin"),
    E.GatedModel("meta-llama/Llama-3.1-8B", "https://huggingface.co/meta-llama/Llama-3.1-8B", token_set=False),
    E.UnsafeWeights("someone/pickled", ["pytorch_model.bin"]),
    E.RemoteCodeRequired("someone/custom"),
    E.UnsafeRepoFile("someone/odd", "../x", "it climbs out of its folder"),
    E.IncompleteModel("qwen", ["tokenizer.json"]),
    E.ModelUnloadable("qwen", "truncated safetensors header"),
    E.TemplateRefused("gemma", "System role not supported", needs_system=False),
    E.WrongReason("wrong", True, ("helpful", "accurate")),
    E.UploadRefused("notes.exe", "only text files are accepted."),
    E.DatasetNotFound("pairs"),
    E.DatasetNameTaken("pairs", 3),
    E.DatasetUnreadable("qa.csv", "it has no column `question` (mapped to prompt); its columns are `q`, `a`"),
    E.DatasetInvalid("pairs", "3,210 tokens, more than max_length 2,048; the policy is fail", 7),
    E.ConsoleOnly("Adding a dataset from a path", "Send the file to ModelBay in a direct message."),
    E.TemplateNotFound("chat-lora-xl", ["chat-lora", "instruction-lora"]),
    E.NotResumable("abc123", "finished", "train"),
    E.NotResumable("abc123", "failed", "install"),
    E.NotResumable("abc123", "started", "train"),
    E.NotATrainingJob("abc123", "install"),
    E.NotAnOptimizationJob("abc123", "train"),
    E.ServingUnsupported("tiny-chat-onnx", "it is an ONNX export (onnxruntime runs it, vLLM does not)"),
    E.OptimizationConfigInvalid("quantization.dataType", "int8 is an 8-bit type, not 4-bit: use nf4 or fp4 with bits 4"),
    E.OptimizationFailed("ONNX export", "tiny-chat", "logits differ from torch by 0.3 (at most 1e-3)"),
    E.TrainingNameBusy("tiny-colors", "abc123"),
    E.DatasetInUse("pairs", ["abc123"]),
    E.DatasetInUse("pairs", ["abc123", "def456"]),
    E.CheckpointMissing("abc123", "/data/training/abc123/checkpoints"),
    E.ResumeNameTaken("abc123", "tiny-colors", finished=True),
    E.ResumeNameTaken("abc123", "tiny-colors", finished=False),
    E.QuantizationUnavailable("bitsandbytes is not installed"),
    E.TrainingConfigInvalid("parameters.learning_rate", "Input should be greater than 0"),
    E.CudaRequired("4-bit training (QLoRA)"),
    E.TrainingMemory("qwen", "bf16", 8, 2048, 30 << 30, 24 << 30, "the largest GPU", 3),
    E.TrainingMemory("qwen", "fp32", 1, 4096, 90 << 30, 24 << 30, "the largest GPU", 0),
    E.UnknownPrecision("fp8", ("fp16", "int8", "4bit")),
    ArgumentInvalid(_COMMAND, "model", "is required"),
    E.CatalogInvalid("qwen", "size must be positive"),
    E.DatabaseDriverMissing("PostgreSQL", "psycopg", "postgres"),
    E.SchemaOutdated(None, "0007"),
    E.ModelStoreUnusable(Path("/models"), "permission denied"),
    E.UnknownJobKind("model.prune"),
    # arena
    E.BattleNotFound(12),
    E.ArenaNeedsModels(0),
    E.ArenaNeedsModels(1),
    E.BattleNotReady(12, "answering"),
    E.BattleNotReady(12, "failed"),
    E.BattleNotReady(12, "expired"),
    E.AlreadyVoted(12),
    E.VoteCapReached(100),
    # experiments
    E.ExperimentNotFound("tone"),
    E.ExperimentInvalid("split", "give one weight per variant (2 variants, 3 weights)"),
    E.ExperimentModelHidden("tone"),
    E.ExperimentNameTaken("tone"),
    E.ExperimentNameTaken("assistant", alias=True, by="tone"),
    E.ExperimentEnded("tone", "shipped"),
    E.NoWinnerYet("tone", "not enough data yet"),
    # registry search
    E.SearchTermInvalid("speed:fast", "give the least tokens/s as a number, like speed:40"),
]


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def _category(cls: type) -> type | None:
    return next((c for c in cls.__mro__ if c in CATEGORIES), None)


ERROR_CLASSES = sorted((c for c in _subclasses(E.ModelBayError) - set(CATEGORIES)
                        if c.__module__ in ("modelbay.engine.errors", "modelbay.bot.errors")), key=lambda c: c.__name__)


def test_every_error_has_a_sample() -> None:
    assert sorted(c.__name__ for c in set(ERROR_CLASSES) - {type(s) for s in SAMPLES}) == []


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_has_a_category_base(cls: type) -> None:
    assert _category(cls) is not None, f"{cls.__name__} subclasses none of {[c.__name__ for c in CATEGORIES]}"


def test_categories_carry_their_defaults() -> None:
    assert [(c.title, c.tone, c.http_status) for c in CATEGORIES] == [
        ("Not found", "warning", 404), ("Not possible now", "info", 409), ("Unavailable", "error", 502),
        ("Refused", "error", 422), ("Configuration problem", "error", 500)]
    assert E.Misconfigured.ephemeral is False and all(c.ephemeral for c in CATEGORIES[:4])


@pytest.mark.parametrize("exc", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_renders_a_titled_line(exc: E.ModelBayError) -> None:
    reply = render_error(exc, reraise_unknown=True)
    assert reply.title and reply.title != "Unexpected error"
    assert reply.text == str(exc) and "\n" not in reply.text  # each class words its message as one line
    assert reply.tone in ("info", "warning", "error")


@pytest.mark.parametrize("exc", SAMPLES, ids=lambda e: type(e).__name__)
def test_the_api_status_follows_the_category(exc: E.ModelBayError) -> None:
    listed = next((ERRORS[c] for c in type(exc).__mro__ if c in ERRORS), ErrorStyle())
    category = _category(type(exc))
    expected = category.http_status if listed.http_status is None else listed.http_status
    response = asyncio.run(_handle_error(None, exc))  # type: ignore[arg-type]  # the handler never reads it
    body = json.loads(response.body)
    assert response.status_code == style_of(exc).http_status == expected
    assert body == {"error": render_error(exc).text, "type": type(exc).__name__, "title": style_of(exc).title}


def test_table_entries_differ_from_their_category() -> None:
    """The table lists only what differs from the category: a field equal to the default is left out."""
    for cls, style in ERRORS.items():
        category = _category(cls)
        if category is None or style.title == E.ModelBayError.title:  # not a ModelBayError; shown generically
            continue
        for field in ("title", "tone", "ephemeral", "http_status"):
            value = getattr(style, field)
            assert value is None or value != getattr(category, field), (cls.__name__, field)


def test_user_errors_are_defined_in_one_place() -> None:
    """A ModelBayError subclass is defined in engine/errors.py (or, for the bot's own, beside the table)."""
    names = {c.__name__ for c in _subclasses(E.ModelBayError)} | {"ModelBayError"}
    root = Path(modelbay.__file__).parent
    elsewhere = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and rel not in HOME:
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                if bases & names:
                    elsewhere.append(f"{rel}: {node.name}")
    assert elsewhere == []
