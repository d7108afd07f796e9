"""Every error a user can meet, by category: each carries its data and one sentence that tells the user what to do.

An error subclasses one category, which gives its default title, tone and HTTP status (class attributes):

- `NotFound` (404): the thing named does not exist.
- `Conflict` (409): not possible in the current state (in use, not installed, already ended).
- `Unavailable` (502): something ModelBay relies on failed or is missing (the hub, a download, the disk, a model
  server, the database, an optional dependency).
- `Refused` (422): bad input, not allowed, or unsafe to do.
- `Misconfigured` (500): an operator must fix the settings, the catalog, the database or the code.

`bot/errors.py` holds the one table that gives each class its own title and any exception to its category's tone
or status; the bot's own errors (`UnknownCommand`, `ArgumentInvalid`: commands are a bot concept) sit beside it.
A value the user typed (or a hub listed) is echoed through `shown`: one line, control characters escaped, cut short.
Public engine methods list the errors they raise in their docstrings (`Raises:`); any method that reads the
database may also meet `DatabaseUnavailable`, which those lists leave out.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar, Literal

from modelbay.engine.units import human_bytes, human_bytes_apart

__all__ = [
    "one_line",
    "shown",
    "ModelBayError",
    "NotFound",
    "Conflict",
    "Unavailable",
    "Refused",
    "Misconfigured",
    "ModelNotFound",
    "RepoNotFound",
    "RevisionMissing",
    "JobNotFound",
    "AnswerNotFound",
    "DatasetNotFound",
    "JobNotCancelable",
    "ModelInUse",
    "NotInstalled",
    "NeedsInstall",
    "NotServed",
    "ServerNotRunning",
    "NoChatHere",
    "ModelNameTaken",
    "BaseModelMissing",
    "HubUnavailable",
    "DownloadFailed",
    "ChecksumMismatch",
    "InsufficientDisk",
    "DiskFull",
    "ServerFailed",
    "BackendFailed",
    "InferenceUnavailable",
    "DatabaseUnavailable",
    "InvalidId",
    "NotAllowed",
    "GatedModel",
    "UnsafeWeights",
    "RemoteCodeRequired",
    "UnsafeRepoFile",
    "IncompleteModel",
    "ModelUnloadable",
    "TemplateRefused",
    "WrongReason",
    "UploadRefused",
    "DatasetUnreadable",
    "DatasetInvalid",
    "DatasetNameTaken",
    "ConsoleOnly",
    "UnknownPrecision",
    "CatalogInvalid",
    "DatabaseDriverMissing",
    "SchemaOutdated",
    "ModelStoreUnusable",
    "UnknownJobKind",
    "TemplateNotFound",
    "NotResumable",
    "NotATrainingJob",
    "NotAnOptimizationJob",
    "ServingUnsupported",
    "TrainingNameBusy",
    "DatasetInUse",
    "CheckpointMissing",
    "ResumeNameTaken",
    "QuantizationUnavailable",
    "TrainingConfigInvalid",
    "CudaRequired",
    "TrainingMemory",
    # experiments
    "ExperimentEnded",
    "ExperimentInvalid",
    "ExperimentNameTaken",
    "ExperimentNotFound",
    "NoWinnerYet",
    "OptimizationConfigInvalid",
    "OptimizationFailed",
    "JobCanceled",
    "TransferStopped",
]

Tone = Literal["info", "warning", "error"]  # the tones an error is shown in (a subset of bot.reply.Tone)

SHOWN_CHARS = 80  # an echoed value is cut to this many characters
# Characters that end a line, move the cursor or reorder text on a terminal or in a chat client.
_HIDDEN = {"Cc", "Cs", "Zl", "Zp"}
_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if char in _BIDI or unicodedata.category(char) in _HIDDEN:
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def one_line(text: str, limit: int) -> str:
    """Return text as one line of at most limit characters, control characters escaped (`\\x1b`), cut with `…`."""
    pieces: list[str] = []
    size = 0
    for char in text:
        piece = _visible(char)
        if size + len(piece) > limit:
            while pieces and size + 1 > limit:  # room for the ellipsis, cutting between escapes
                size -= len(pieces.pop())
            return "".join(pieces) + "…"
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """Return a user-given value to echo inside backticks: `one_line` of it with its backticks made quotes."""
    return one_line(str(value).replace("`", "'"), limit)




class ModelBayError(Exception):
    """Base of every error a user may see; str() is the user-facing sentence.

    The class attributes are how it is shown unless bot/errors.py's table says otherwise; each category sets its own.
    """

    title: ClassVar[str] = "Something needs attention"
    tone: ClassVar[Tone] = "warning"
    ephemeral: ClassVar[bool] = True  # shown only to the person who asked
    http_status: ClassVar[int] = 400
    # Whether running the same job again may succeed (a network hiccup), or fail the same way (bad input).
    retryable: ClassVar[bool] = False


class NotFound(ModelBayError):
    """The model, repository, revision, job or answer named does not exist."""

    title = "Not found"
    http_status = 404


class Conflict(ModelBayError):
    """The action is not possible in the current state: in use, not installed, not running, already ended."""

    title = "Not possible now"
    tone = "info"
    http_status = 409


class Unavailable(ModelBayError):
    """Something ModelBay relies on failed or is missing: the hub, a download, the disk, a server, the database."""

    title = "Unavailable"
    tone = "error"
    http_status = 502


class Refused(ModelBayError):
    """ModelBay will not do it: the input is malformed, the role does not allow it, or it would be unsafe."""

    title = "Refused"
    tone = "error"
    http_status = 422


class Misconfigured(ModelBayError):
    """An operator must fix something before this works: the settings, the catalog, the database or the code."""

    title = "Configuration problem"
    tone = "error"
    ephemeral = False  # everyone in the channel sees that the deployment needs fixing
    http_status = 500


# -- not found: the thing named does not exist -----------------------------------------------------------------------

class ModelNotFound(NotFound):
    """No model by that name; suggests close matches."""

    def __init__(self, name: str, suggestions: list[str] | None = None) -> None:
        self.name = name
        self.suggestions = suggestions or []
        hint = f" Did you mean {', '.join(f'`{shown(s)}`' for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"No model named `{shown(name)}`.{hint} See `/models list` for what is available.")


class RepoNotFound(NotFound):
    """The hub has no such repository (or it is private to someone else)."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        super().__init__(
            f"`{shown(repo_id)}` is not on the hub. Check the spelling; if it is private, set MODELBAY_HUB_TOKEN to a "
            "token that can read it."
        )


class RevisionMissing(NotFound):
    """The repository has no such branch, tag or commit."""

    def __init__(self, repo_id: str, revision: str) -> None:
        self.repo_id = repo_id
        self.revision = revision
        super().__init__(
            f"`{shown(repo_id)}` has no revision `{shown(revision)}`. Use a branch, tag or commit sha it has."
        )


class JobNotFound(NotFound):
    """No job with that id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"No job `{shown(job_id)}`. See `/jobs` for your jobs and their ids.")


class AnswerNotFound(NotFound):
    """A rating named an answer that does not exist (or cannot be rated by this person)."""

    def __init__(self, message_id: int | None, *, theirs: bool = False) -> None:
        self.message_id = message_id
        if theirs:
            text = f"Answer #{message_id} was given to someone else; you can rate only answers to your messages."
        elif message_id is None:
            text = "There is no answer to rate yet. Ask something first, then `/rate up` or `/rate down`."
        else:
            text = f"There is no answer #{message_id}. Rate the answers you got with their 👍/👎 buttons."
        super().__init__(text)


class DatasetNotFound(NotFound):
    """No dataset with that id or name (or none this person may see)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"No dataset `{shown(ref)}`. `/datasets list` shows yours with their ids.")


class DatasetNameTaken(Conflict):
    """Another dataset of the same person already has the name asked for."""

    def __init__(self, name: str, dataset_id: int) -> None:
        self.name = name
        self.dataset_id = dataset_id
        super().__init__(f"You already have a dataset named `{shown(name)}` (#{dataset_id}). Choose another name "
                         f"(`name:...`), or `/datasets delete {dataset_id}` first.")


class TemplateNotFound(NotFound):
    """No training template by that name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"No training template `{shown(name)}`. Templates: {', '.join(known)} "
                         "(`/train templates` describes them).")


# -- conflict: not possible in the current state ---------------------------------------------------------------------

class JobNotCancelable(Conflict):
    """The job already ended."""

    def __init__(self, job_id: str, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"Job `{shown(job_id)}` has already {status}; there is nothing to cancel.")


class ModelInUse(Conflict):
    """The model is being served or trained, or a fine-tune answers through it, and cannot be removed now."""

    def __init__(self, name: str, uses: list[str]) -> None:
        self.name = name
        self.uses = uses
        super().__init__(
            f"`{shown(name)}` is in use ({', '.join(uses)}). Stop or uninstall that first, or an admin can add "
            "`force:true`."
        )


class NotInstalled(Conflict):
    """Nothing to remove: no version of the model is installed."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"`{shown(name)}` is not installed. `/models info {shown(name)}` shows its versions.")


class NeedsInstall(Conflict):
    """A chat or server was asked for a model that has no installed version."""

    def __init__(self, name: str, action: str = "chat with") -> None:
        self.name = name
        super().__init__(f"`{shown(name)}` is not installed, so there is nothing to {action}. An admin can run "
                         f"`/models install {shown(name)}`; then try again.")


class NotServed(Conflict):
    """No server runs the model and in-process answers are turned off or impossible here."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why
        super().__init__(f"`{shown(name)}` is not being served ({why}). An admin can start it with "
                         f"`/models serve {shown(name)}`.")


class ServingUnsupported(Refused):
    """`/models serve` was asked for a version vLLM cannot serve (an ONNX export)."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why
        super().__init__(f"`{shown(name)}` cannot be served by vLLM: {why}. `/chat {shown(name)}` answers it in this "
                         "process.")


class ServerNotRunning(Conflict):
    """Nothing to stop: the model has no live server."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"`{shown(name)}` has no running server. `/models servers` lists the ones that run.")


class NoChatHere(Conflict):
    """A chat message or rating came where no chat is open."""

    def __init__(self) -> None:
        super().__init__("There is no chat open here. Start one with `/chat <model>`.")


class ModelNameTaken(Conflict):
    """A new model (a fine-tune) was given a name another model already has."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"A model named `{shown(name)}` already exists. Choose another name (`name:...`), or "
                         f"`/models info {shown(name)}` to see it.")


class BaseModelMissing(Conflict):
    """A fine-tune stored as a LoRA adapter cannot load: the base model it adapts is not installed any more."""

    def __init__(self, name: str, base: str | None) -> None:
        self.name = name
        self.base = base
        if base is None:
            text = (f"`{shown(name)}` is a LoRA adapter whose base model was removed from the registry, so it cannot "
                    "be loaded. Fine-tune again (with `merge:true` it keeps its own full weights).")
        else:
            text = (f"`{shown(name)}` is a LoRA adapter on `{shown(base)}`, which is not installed any more. An admin "
                    f"can run `/models install {shown(base)}`; then try again.")
        super().__init__(text)


_STATES = {"started": "running", "retrying": "waiting to be retried", "queued": "queued"}  # job states as said


class NotResumable(Conflict):
    """Only a training job that stopped before its end (canceled, or failed after its retries) can be resumed."""

    def __init__(self, job_id: str, status: str, kind: str) -> None:
        self.job_id = job_id
        self.status = status
        self.kind = kind
        if kind != "train":
            text = f"Job `{shown(job_id)}` is a `{shown(kind)}` job, not a training job."
        else:
            text = (f"Training job `{shown(job_id)}` is {_STATES.get(status, status)}; only a canceled or failed one "
                    f"resumes. `/train status {shown(job_id)}` shows where it stands.")
        super().__init__(text)


class NotAnOptimizationJob(NotFound):
    """`/optimize status` (or the optimization routes) named a job of another kind: an install, a training run."""

    def __init__(self, job_id: str, kind: str) -> None:
        self.job_id = job_id
        self.kind = kind
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        super().__init__(f"Job `{shown(job_id)}` is {article} `{shown(kind)}` job, not an optimization job: "
                         f"`/jobs watch {shown(job_id)}` follows it, `/optimize list` shows the optimization jobs.")


class NotATrainingJob(NotFound):
    """`/train status|resume` (or the training routes) named a job of another kind: an install, a server."""

    def __init__(self, job_id: str, kind: str) -> None:
        self.job_id = job_id
        self.kind = kind
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        super().__init__(f"Job `{shown(job_id)}` is {article} `{shown(kind)}` job, not a training job: "
                         f"`/jobs watch {shown(job_id)}` follows it, `/train list` shows the training jobs.")


class TrainingNameBusy(Conflict):
    """A queued or running training (or optimization) job already makes a model of that name, from a different
    request."""

    def __init__(self, name: str, job_id: str, command: str = "train") -> None:
        self.name = name
        self.job_id = job_id
        what = "Training" if command == "train" else "Optimization"
        super().__init__(f"{what} job `{shown(job_id)}` is already making a model named `{shown(name)}`. Choose "
                         f"another name (`name:...`), or `/{command} status {shown(job_id)}` follows that job.")


class DatasetInUse(Conflict):
    """A dataset a queued or running training job will read (to train or to validate on) cannot be deleted."""

    def __init__(self, name: str, job_ids: list[str]) -> None:
        self.name = name
        self.job_ids = job_ids
        jobs = ", ".join(f"`{shown(j)}`" for j in job_ids)
        first = shown(job_ids[0])
        super().__init__(f"Dataset `{shown(name)}` is used by training job{'s' * (len(job_ids) > 1)} {jobs}, queued "
                         f"or running. `/jobs cancel {first}` first, then delete it.")


class CheckpointMissing(Conflict):
    """A resume found no checkpoint to continue from (the job stopped before its first save, or it was removed)."""

    retryable = False  # the same run directory has the same checkpoints

    def __init__(self, job_id: str, where: str) -> None:
        self.job_id = job_id
        self.where = where
        super().__init__(f"Training job `{shown(job_id)}` left no checkpoint to resume from in {where} (it stopped "
                         "before its first save). Start it again with `/train start`.")


class ResumeNameTaken(Conflict):
    """A resume would train a run whose result cannot be registered: its run already made that model (through an
    earlier resume), or another model took its new model's name since it started."""

    def __init__(self, job_id: str, name: str, *, finished: bool) -> None:
        self.job_id = job_id
        self.name = name
        self.finished = finished
        if finished:
            text = (f"Training job `{shown(job_id)}` was resumed already and its run finished as `{shown(name)}`: "
                    f"`/models info {shown(name)}` shows it.")
        else:
            text = (f"Training job `{shown(job_id)}` would make `{shown(name)}`, a name another model has taken since "
                    f"it started: delete or rename that model, or `/train start` again with another `name:`.")
        super().__init__(text)


# -- unavailable: something ModelBay relies on failed or is missing --------------------------------------------------

class HubUnavailable(Unavailable):
    """The model hub could not be reached or answered with a server error."""

    retryable = True

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"The model hub at {endpoint} can't be reached ({reason}). Try again shortly.")


class DownloadFailed(Unavailable):
    """The download broke off and the client's own retries did not recover it."""

    retryable = True

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"Downloading `{shown(path)}` failed ({one_line(reason, 300)}); the partial files were removed and "
            "nothing was installed. "
            "Run the install again."
        )


class ChecksumMismatch(Unavailable):
    """A downloaded file does not match the hash the hub published for it."""

    def __init__(self, path: str, expected: str, actual: str) -> None:
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"`{shown(path)}` failed its checksum (expected {expected[:12]}…, got {actual[:12]}…), so the download "
            "was "
            "discarded and nothing was installed. Run the install again."
        )


class InsufficientDisk(Unavailable):
    """The model store has too little free space for the download."""

    def __init__(self, needed: int, free: int, margin: int, path: str) -> None:
        self.needed = needed
        self.free = free
        self.margin = margin
        # The two sizes the reader compares are shown in one unit, precise enough to tell them apart.
        wanted, has = human_bytes_apart(needed + margin, free)
        if margin:
            wanted = f"{human_bytes(needed)} plus a {human_bytes(margin)} margin ({wanted} in all)"
        super().__init__(
            f"Not enough disk: the download needs {wanted} and {path} "
            f"has {has} free. Free some space (`/models uninstall`) or point MODELBAY_MODEL_STORE at a "
            "bigger disk."
        )


class DiskFull(Unavailable):
    """The disk filled up while a download was writing."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"The disk holding {path} filled up during the download; the partial files were removed and nothing was "
            "installed. Free some space (`/models uninstall`) and run the install again."
        )


class ServerFailed(Unavailable):
    """A model server did not start or stopped answering; the message carries the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"The server for `{shown(name)}` failed: {reason}. `/models serve {shown(name)}` starts it "
                         "again.")


class BackendFailed(Unavailable):
    """The model backend failed or timed out while answering."""

    retryable = True

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InferenceUnavailable(Unavailable):
    """In-process answers need torch and transformers, which this installation lacks."""

    def __init__(self) -> None:
        super().__init__("Answering here needs torch and transformers: install them with "
                         "`pip install torch && pip install 'modelbay[ml]'`, or have an admin `/models serve` it.")


class DatabaseUnavailable(Unavailable):
    """The database connection dropped (or the database did not answer) in the middle of a request."""

    retryable = True  # the same job may well succeed once the database is back

    def __init__(self, *, dropped: bool = True) -> None:
        self.dropped = dropped
        what = "The database connection dropped" if dropped else "The database did not answer"
        super().__init__(f"{what}. Try again in a moment; if it keeps happening, ask an admin to check the database.")


class QuantizationUnavailable(Unavailable):
    """QLoRA was asked for where bitsandbytes (4-bit loading) is not installed."""

    retryable = False  # the worker's packages do not change between tries

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"4-bit training (QLoRA) cannot run on this gpu worker: {reason}. Install bitsandbytes "
                         "there (`pip install bitsandbytes`), or use the chat-lora template.")


# -- refused: bad input, not allowed, or unsafe to do ----------------------------------------------------------------

class InvalidId(Refused):
    """A model id, revision or file path that could reach outside the model store or the hub."""

    def __init__(self, kind: str, value: str, reason: str, example: str) -> None:
        self.kind = kind
        self.value = value
        self.reason = reason
        super().__init__(f"`{shown(value)}` is not a valid {kind}: {reason}. Use {example}.")


class NotAllowed(Refused):
    """The caller's role does not allow the action."""

    def __init__(self, action: str, role: str, needed: str) -> None:
        self.action = action
        self.role = role
        self.needed = needed
        super().__init__(
            f"`{shown(action)}` needs the {needed} role and you have {role}. Ask an admin to grant it in "
            "MODELBAY_ROLES."
        )


class GatedModel(Refused):
    """The repository needs a licence accepted on the hub and a token of that account."""

    def __init__(self, repo_id: str, url: str, token_set: bool) -> None:
        self.repo_id = repo_id
        self.token_set = token_set
        if token_set:
            fix = "the token in MODELBAY_HUB_TOKEN has not been granted access: accept the licence with that account"
        else:
            fix = "accept its licence with your account, then set MODELBAY_HUB_TOKEN to a read token of that account"
        super().__init__(f"`{shown(repo_id)}` is gated: {fix} ({shown(url, 200)}).")


class UnsafeWeights(Refused):
    """The repository ships only pickle weights, which can run code when loaded."""

    def __init__(self, repo_id: str, files: list[str]) -> None:
        self.repo_id = repo_id
        self.files = files
        super().__init__(
            f"`{shown(repo_id)}` ships only pickle weights ({', '.join(shown(f) for f in files[:3])}), which can run "
            "code when loaded, so "
            "ModelBay installs safetensors only. An operator can allow pickle with MODELBAY_ALLOW_PICKLE=true."
        )


class RemoteCodeRequired(Refused):
    """The model needs the repository's own Python code to load."""

    def __init__(self, repo_id: str, code_from: str | None = None) -> None:
        self.repo_id = repo_id
        self.code_from = code_from  # another repo whose code it names (auto_map "owner/name--module.Class")
        code = f"Python code from `{shown(code_from)}`" if code_from else "its repository's own Python code"
        super().__init__(
            f"`{shown(repo_id)}` needs {code} to load, which ModelBay does not run by "
            "default. "
            "An operator who has reviewed it can set MODELBAY_TRUST_REMOTE_CODE=true."
        )


class UnsafeRepoFile(Refused):
    """A repository lists a file whose name could reach outside its folder or cannot be stored."""

    def __init__(self, repo_id: str, path: str, reason: str) -> None:
        self.repo_id = repo_id
        self.path = path
        self.reason = reason
        super().__init__(
            f"`{shown(repo_id)}` lists a file ModelBay cannot store safely (`{shown(path)}`: {one_line(reason, 80)}), "
            "so nothing was installed. Install another revision, or ask the repo's owner to rename the file."
        )


class IncompleteModel(Refused):
    """A model version lacks what loading it needs: a config, a tokenizer, or weights its index names."""

    def __init__(self, name: str, missing: list[str], *, installed: bool = False, fix: str | None = None) -> None:
        self.name = name
        self.missing = missing
        self.installed = installed
        what = "; ".join(shown(m, 120) for m in missing[:4]) + ("; …" if len(missing) > 4 else "")
        if installed:
            text = (f"`{shown(name)}` is installed but incomplete on disk (missing {what}). "
                    + (fix or f"Install it again with `/models install {shown(name)}`."))
        else:
            text = (f"`{shown(name)}` cannot be loaded as published (missing {what}), so nothing was installed. "
                    "Install a revision that has them, or ask the repo's owner to add them.")
        super().__init__(text)


class ModelUnloadable(Refused):
    """An installed model's files are there but loading them failed (a corrupt or truncated file, a bad config)."""

    retryable = False  # the same files fail the same way

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"`{shown(name)}` is installed but could not be loaded ({one_line(reason, 120)}). Install it "
                         f"again with `/models install {shown(name)}`; if that does not help, tell an admin.")


class TemplateRefused(Refused, BackendFailed):
    """A model's chat template refused the shape of a conversation (a system message, turns out of order)."""

    retryable = False  # the same conversation meets the same template

    def __init__(self, model: str, reason: str, *, needs_system: bool = False) -> None:
        self.model = model
        self.template_reason = reason
        self.needs_system = needs_system  # the template demands a system message the chat does not have
        said = one_line(reason, 160).rstrip()
        said += "" if said.endswith((".", "!", "?", "…")) else "."
        # ModelBay already sends the only shapes it can (alternating turns, a refused system prompt folded in):
        # a new chat would meet the same refusal, so the advice is what can change.
        fix = (f"Set a system prompt with `/chat {shown(model)} <system prompt>`." if needs_system
               else "Tell an admin: the model's chat template refuses this conversation.")
        super().__init__(f"The chat template of {shown(model)} refused the conversation: {said} {fix}")


class WrongReason(Refused):
    """A rating reason that belongs to the other direction (a 👍 marked 'wrong')."""

    def __init__(self, reason: str, up: bool, allowed: tuple[str, ...]) -> None:
        self.reason = reason
        direction = "up" if up else "down"
        super().__init__(f"`{shown(reason)}` is not a reason for rating {direction}; use one of {', '.join(allowed)}.")


class UploadRefused(Refused):
    """An uploaded file was not accepted: too large, an unknown kind, or a name that cannot be stored."""

    def __init__(self, filename: str, problem: str) -> None:
        self.filename = filename
        self.problem = problem
        super().__init__(f"`{shown(filename)}` was not saved: {problem}")


class DatasetUnreadable(Refused):
    """A file cannot be read as a dataset at all: an unknown kind of file, no rows, or no row in a known format."""

    def __init__(self, filename: str, problem: str) -> None:
        self.filename = filename
        self.problem = problem
        super().__init__(f"`{shown(filename)}` cannot be read as a dataset: {problem}.")


class DatasetInvalid(Refused):
    """A dataset cannot be trained on as asked: a row the `fail` policy stops at, or no row left to train on."""

    retryable = False  # the same rows fail the same way

    def __init__(self, dataset: str, problem: str, line: int | None = None) -> None:
        self.dataset = dataset
        self.problem = problem
        self.line = line
        where = f" at line {line}" if line is not None else ""
        super().__init__(f"Dataset `{shown(dataset)}` cannot be trained on{where}: {problem}.")


class ConsoleOnly(Refused):
    """Something only the console may do (read a file from a path on the machine ModelBay runs on)."""

    def __init__(self, action: str, instead: str) -> None:
        self.action = action
        self.instead = instead
        super().__init__(f"{action} works only in the console. {instead}")


class UnknownPrecision(Refused):
    """No precision by that name."""

    def __init__(self, precision: str, known: Iterable[str]) -> None:
        self.precision = precision
        self.known = tuple(known)
        super().__init__(f"There is no precision `{precision}`: use one of {', '.join(self.known)}.")


class TrainingConfigInvalid(Refused):
    """A training setting (a template's or an override) names no field or has a value its field refuses."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"Training setting `{shown(setting)}`: {one_line(problem, 200)}. Fix it and start again "
                         "(`/train templates` lists the settings).")


class CudaRequired(Refused):
    """A training config that runs only on a CUDA GPU (QLoRA, 8-bit optimizers) was asked where there is none."""

    retryable = False

    def __init__(self, what: str, where: str = "the gpu workers have none",
                 fix: str = "Use the chat-lora template (it trains on the CPU too)") -> None:
        self.what = what
        self.where = where
        super().__init__(f"{what} needs a CUDA GPU and {where}. {fix}, or run a gpu worker on a machine with a GPU.")


class OptimizationConfigInvalid(Refused):
    """An optimization setting (a command's option, a recipe's step or the REST body) is unknown, out of range or
    impossible with another one (4-bit int8, sparsity 1.5, static quantization without calibration data)."""

    retryable = False

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"Optimization setting `{shown(setting)}`: {one_line(problem, 220)}. Fix it and start again "
                         "(`/help optimize` lists the settings).")


class OptimizationFailed(Refused):
    """A method could not make a variant of this model (an architecture ONNX export does not take, a logits check
    that failed, a layer shape 2:4 sparsity cannot use); nothing is kept."""

    retryable = False

    def __init__(self, method: str, model: str, reason: str) -> None:
        self.method = method
        self.model = model
        self.reason = reason
        super().__init__(f"{method} could not make a variant of `{shown(model)}`: {one_line(reason, 240)}. Nothing "
                         "was kept; try another method (`/help optimize`).")


class TrainingMemory(Refused):
    """A fine-tune would not fit the memory it runs in at this precision and batch size."""

    def __init__(self, name: str, precision: str, batch: int, max_length: int, needed: int, room: int, where: str,
                 fits: int, shard: int = 0) -> None:
        self.name, self.precision, self.batch, self.max_length = name, precision, batch, max_length
        self.needed, self.room, self.where, self.fits, self.shard = needed, room, where, fits, shard
        wanted, has = human_bytes_apart(needed, room)
        if shard >= 2:  # the GPUs together hold it: shard the model (FSDP) rather than shrink the run
            advice = f"Sharded across {shard} GPUs it fits: add `processes:{shard} strategy:fsdp`."
        elif fits >= 1:
            advice = f"Batch {fits} would fit: add `batch:{fits}` (gradient accumulation keeps the effective batch)."
        else:
            advice = ("Even batch 1 does not fit: use the qlora-4bit template, a shorter `max_length:`, or "
                      "`hardware.gradient_checkpointing:true`.")
        super().__init__(f"Fine-tuning `{shown(name)}` at {precision} with batch {batch} and rows of up to {max_length} "
                         f"tokens needs about {wanted}; {where} has {has}. {advice}")


# -- arena: blind battles and votes (not found, conflict, refused) ---------------------------------------------------

class BattleNotFound(NotFound):
    """No arena battle with that number."""

    def __init__(self, battle_id: int) -> None:
        self.battle_id = battle_id
        super().__init__(f"No arena battle #{battle_id}. `/arena <prompt>` starts one.")


class ArenaNeedsModels(Conflict):
    """A battle needs two installed models that can answer."""

    def __init__(self, installed: int) -> None:
        self.installed = installed
        have = "none is" if installed == 0 else "only one is"
        super().__init__(f"The arena needs two installed models and {have}: install another with "
                         "`/models install <name>` (`/models list` shows them).")


class BattleNotReady(Conflict):
    """A vote on a battle that is still answering, or whose answers failed."""

    def __init__(self, battle_id: int, status: str) -> None:
        self.battle_id = battle_id
        self.status = status
        if status == "expired":  # still answering long after any answer could take: its stream was left unread
            text = (f"Battle #{battle_id} never finished answering (its answers were not read to the end); `/arena` "
                    "starts a new battle.")
        elif status == "failed":
            text = f"Battle #{battle_id} has no two answers to compare (a model failed); `/arena` starts another."
        else:
            text = f"Battle #{battle_id} is still answering; vote once both answers are in."
        super().__init__(text)


class AlreadyVoted(Conflict):
    """One vote per person per battle."""

    def __init__(self, battle_id: int) -> None:
        self.battle_id = battle_id
        super().__init__(f"You already voted on battle #{battle_id}: one vote per battle. `/arena` starts another.")


class VoteCapReached(Refused):
    """A person reached the daily number of arena votes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        super().__init__(f"You have cast {cap} arena votes today, the daily cap (MODELBAY_ARENA_DAILY_VOTES); "
                         "vote again tomorrow (UTC).")


# -- experiments: A/B tests of model variants (not found, refused, conflict) -------------------------------------------

class ExperimentNotFound(NotFound):
    """No experiment by that name."""

    def __init__(self, name: str) -> None:
        self.name = name
        if not name.strip():  # `/chat exp:` with nothing after it
            super().__init__("Give the experiment's name, e.g. `/chat exp:<name>`. `/experiments list` shows them.")
        else:
            super().__init__(f"No experiment `{shown(name)}`. `/experiments list` shows them.")


class ExperimentInvalid(Refused):
    """An experiment cannot start as asked: a bad name, variant, split, metric, guardrail or alpha."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"Check the experiment's {field}: {reason}.")


class ExperimentModelHidden(Unavailable):
    """A chat on a running experiment's variant cannot be answered; the model's own error would name it."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"The model behind experiment `{shown(name)}` cannot answer right now (it stays hidden while "
                         "the experiment runs); tell the experiment's owner, or `/chat end` and chat with another "
                         "model.")


class ExperimentNameTaken(Conflict):
    """The name is used by another experiment, or the alias by a running one."""

    def __init__(self, name: str, *, alias: bool = False, by: str | None = None) -> None:
        self.name = name
        self.alias = alias
        if alias:
            text = (f"The alias `{shown(name)}` belongs to the running experiment `{shown(by or '')}`; pick another "
                    f"alias or end that one with `/experiments stop {shown(by or '')}`.")
        else:
            text = f"An experiment named `{shown(name)}` exists already; pick another name."
        super().__init__(text)


class ExperimentEnded(Conflict):
    """The experiment was stopped or shipped: it takes no chats and cannot be ended again."""

    def __init__(self, name: str, status: str) -> None:
        self.name = name
        self.status = status
        super().__init__(f"Experiment `{shown(name)}` is {status}. `/experiments start` begins a new one.")


class NoWinnerYet(Conflict):
    """`ship` without a variant while the statistics name no winner, or after the experiment was stopped."""

    def __init__(self, name: str, reason: str, *, stopped: bool = False, variants: tuple[str, ...] = ()) -> None:
        self.name = name
        self.reason = reason
        self.stopped = stopped
        named = f" (one of {', '.join(shown(v) for v in variants)})" if variants else ""
        ship = f"`/experiments ship {shown(name)} <variant>`{named}"
        if stopped:
            super().__init__(f"Experiment `{shown(name)}` was stopped without a winner; ship a variant by name with "
                             f"{ship}, or start a new experiment with `/experiments start`.")
        else:
            super().__init__(f"Experiment `{shown(name)}` has no winner yet ({reason}); keep it running, or name the "
                             f"variant to ship anyway: {ship}.")


# -- registry search: measured speed (refused) -----------------------------------------------------------------------

class SearchTermInvalid(Refused):
    """A `key:value` search term whose value is not what the key takes (`speed:fast`)."""

    def __init__(self, term: str, fix: str) -> None:
        self.term = term
        self.fix = fix
        super().__init__(f"The search term `{shown(term)}` is not understood: {fix}.")


# -- misconfigured: an operator must fix the settings, catalog, database or code -------------------------------------

class CatalogInvalid(Misconfigured):
    """The catalog file has an entry that does not validate."""

    def __init__(self, entry: str, problem: str) -> None:
        self.entry = entry
        self.problem = problem
        super().__init__(
            f"Catalog entry `{shown(entry)}` is invalid: {one_line(problem, 300)}. Fix it in the catalog YAML."
        )


class DatabaseDriverMissing(Misconfigured):
    """MODELBAY_DATABASE_URL names a database whose Python driver is not installed."""

    def __init__(self, database: str, driver: str, extra: str | None, *, use: str | None = None) -> None:
        self.database = database
        self.driver = driver
        self.extra = extra
        fix = f"pip install 'modelbay[{extra}]'" if extra else f"pip install {driver}"
        if use:  # a driver ModelBay does not use: installing it would not help
            super().__init__(f"MODELBAY_DATABASE_URL names the driver `{driver}`, but ModelBay uses {use}: change the "
                             f"URL to that driver's, and run `{fix}`.")
            return
        super().__init__(f"MODELBAY_DATABASE_URL is a {database} URL, but its driver `{driver}` is not installed: "
                         f"run `{fix}` and start again.")


class SchemaOutdated(Misconfigured):
    """The database schema is behind the code."""

    def __init__(self, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"The database schema is at {current or 'nothing'} and this version needs {head}: "
            "run `modelbay db upgrade`."
        )


class ModelStoreUnusable(Misconfigured):
    """The model store directory cannot be created or measured."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"The model store {path} cannot be used ({reason}). Set MODELBAY_MODEL_STORE to a writable directory."
        )


class UnknownJobKind(Misconfigured):
    """No job kind by that name is registered."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        super().__init__(f"There is no job kind `{kind}`.")


# -- signals: raised and caught inside the engine and workers, never shown -------------------------------------------

class JobCanceled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside a job when someone asked to cancel it."""


class TransferStopped(Exception):  # noqa: N818 - a control-flow signal raised inside download threads
    """Raised inside a download when the meter was told to stop (the job was canceled)."""
