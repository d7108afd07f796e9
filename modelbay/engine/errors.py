"""Domain errors: each carries its data and one sentence that tells the user what to do next.

A value the user typed (or a hub listed) is echoed through `shown`: one line, control characters escaped, cut short.
"""

from __future__ import annotations

import unicodedata

from modelbay.engine.units import human_bytes, human_bytes_apart

__all__ = [
    "one_line",
    "shown",
    "AnswerNotFound",
    "BackendFailed",
    "NeedsInstall",
    "NoChatHere",
    "NotServed",
    "ServerFailed",
    "ServerNotRunning",
    "WrongReason",
    "UploadRefused",
    "DatabaseDriverMissing",
    "DatabaseUnavailable",
    "IncompleteModel",
    "UnsafeRepoFile",
    "ChecksumMismatch",
    "DiskFull",
    "DownloadFailed",
    "GatedModel",
    "HubUnavailable",
    "InsufficientDisk",
    "ModelInUse",
    "NotInstalled",
    "RemoteCodeRequired",
    "RepoNotFound",
    "RevisionMissing",
    "UnsafeWeights",
    "CatalogInvalid",
    "JobNotFound",
    "JobNotCancelable",
    "ModelBayError",
    "ModelNotFound",
    "NotAllowed",
    "TemplateRefused",
]


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
    """Base of every error a user may see; str() is the user-facing sentence."""

    # Whether running the same job again may succeed (a network hiccup), or fail the same way (bad input).
    retryable = False


class ModelNotFound(ModelBayError):
    """No model by that name; suggests close matches."""

    def __init__(self, name: str, suggestions: list[str] | None = None) -> None:
        self.name = name
        self.suggestions = suggestions or []
        hint = f" Did you mean {', '.join(f'`{shown(s)}`' for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"No model named `{shown(name)}`.{hint} See `/models list` for what is available.")


class JobNotFound(ModelBayError):
    """No job with that id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"No job `{shown(job_id)}`. See `/jobs` for your jobs and their ids.")


class JobNotCancelable(ModelBayError):
    """The job already ended."""

    def __init__(self, job_id: str, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"Job `{shown(job_id)}` has already {status}; there is nothing to cancel.")


class NotAllowed(ModelBayError):
    """The caller's role does not allow the action."""

    def __init__(self, action: str, role: str, needed: str) -> None:
        self.action = action
        self.role = role
        self.needed = needed
        super().__init__(
            f"`{shown(action)}` needs the {needed} role and you have {role}. Ask an admin to grant it in "
            "MODELBAY_ROLES."
        )


class CatalogInvalid(ModelBayError):
    """The catalog file has an entry that does not validate."""

    def __init__(self, entry: str, problem: str) -> None:
        self.entry = entry
        self.problem = problem
        super().__init__(
            f"Catalog entry `{shown(entry)}` is invalid: {one_line(problem, 300)}. Fix it in the catalog YAML."
        )


class HubUnavailable(ModelBayError):
    """The model hub could not be reached or answered with a server error."""

    retryable = True

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint = endpoint
        self.reason = reason
        super().__init__(f"The model hub at {endpoint} can't be reached ({reason}). Try again shortly.")


class RepoNotFound(ModelBayError):
    """The hub has no such repository (or it is private to someone else)."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        super().__init__(
            f"`{shown(repo_id)}` is not on the hub. Check the spelling; if it is private, set MODELBAY_HUB_TOKEN to a "
            "token that can read it."
        )


class RevisionMissing(ModelBayError):
    """The repository has no such branch, tag or commit."""

    def __init__(self, repo_id: str, revision: str) -> None:
        self.repo_id = repo_id
        self.revision = revision
        super().__init__(
            f"`{shown(repo_id)}` has no revision `{shown(revision)}`. Use a branch, tag or commit sha it has."
        )


class GatedModel(ModelBayError):
    """The repository needs a licence accepted on the hub and a token of that account."""

    def __init__(self, repo_id: str, url: str, token_set: bool) -> None:
        self.repo_id = repo_id
        self.token_set = token_set
        if token_set:
            fix = "the token in MODELBAY_HUB_TOKEN has not been granted access: accept the licence with that account"
        else:
            fix = "accept its licence with your account, then set MODELBAY_HUB_TOKEN to a read token of that account"
        super().__init__(f"`{shown(repo_id)}` is gated: {fix} ({shown(url, 200)}).")


class UnsafeWeights(ModelBayError):
    """The repository ships only pickle weights, which can run code when loaded."""

    def __init__(self, repo_id: str, files: list[str]) -> None:
        self.repo_id = repo_id
        self.files = files
        super().__init__(
            f"`{shown(repo_id)}` ships only pickle weights ({', '.join(shown(f) for f in files[:3])}), which can run "
            "code when loaded, so "
            "ModelBay installs safetensors only. An operator can allow pickle with MODELBAY_ALLOW_PICKLE=true."
        )


class RemoteCodeRequired(ModelBayError):
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


class InsufficientDisk(ModelBayError):
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


class DiskFull(ModelBayError):
    """The disk filled up while a download was writing."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"The disk holding {path} filled up during the download; the partial files were removed and nothing was "
            "installed. Free some space (`/models uninstall`) and run the install again."
        )


class ChecksumMismatch(ModelBayError):
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


class DownloadFailed(ModelBayError):
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


class ModelInUse(ModelBayError):
    """The model is being served or trained and cannot be removed now."""

    def __init__(self, name: str, uses: list[str]) -> None:
        self.name = name
        self.uses = uses
        super().__init__(
            f"`{shown(name)}` is in use ({', '.join(uses)}). Stop that first, or an admin can add `force:true`."
        )


class NotInstalled(ModelBayError):
    """Nothing to remove: no version of the model is installed."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"`{shown(name)}` is not installed. `/models info {shown(name)}` shows its versions.")


class NeedsInstall(ModelBayError):
    """A chat or server was asked for a model that has no installed version."""

    def __init__(self, name: str, action: str = "chat with") -> None:
        self.name = name
        super().__init__(f"`{shown(name)}` is not installed, so there is nothing to {action}. An admin can run "
                         f"`/models install {shown(name)}`; then try again.")


class NotServed(ModelBayError):
    """No server runs the model and in-process answers are turned off or impossible here."""

    def __init__(self, name: str, why: str) -> None:
        self.name = name
        self.why = why
        super().__init__(f"`{shown(name)}` is not being served ({why}). An admin can start it with "
                         f"`/models serve {shown(name)}`.")


class ServerNotRunning(ModelBayError):
    """Nothing to stop: the model has no live server."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"`{shown(name)}` has no running server. `/models servers` lists the ones that run.")


class ServerFailed(ModelBayError):
    """A model server did not start or stopped answering; the message carries the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"The server for `{shown(name)}` failed: {reason}. `/models serve {shown(name)}` starts it "
                         "again.")


class BackendFailed(ModelBayError):
    """The model backend failed or timed out while answering."""

    retryable = True

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class NoChatHere(ModelBayError):
    """A chat message or rating came where no chat is open."""

    def __init__(self) -> None:
        super().__init__("There is no chat open here. Start one with `/chat <model>`.")


class AnswerNotFound(ModelBayError):
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


class WrongReason(ModelBayError):
    """A rating reason that belongs to the other direction (a 👍 marked 'wrong')."""

    def __init__(self, reason: str, up: bool, allowed: tuple[str, ...]) -> None:
        self.reason = reason
        direction = "up" if up else "down"
        super().__init__(f"`{shown(reason)}` is not a reason for rating {direction}; use one of {', '.join(allowed)}.")


class UploadRefused(ModelBayError):
    """An uploaded file was not accepted: too large, an unknown kind, or a name that cannot be stored."""

    def __init__(self, filename: str, problem: str) -> None:
        self.filename = filename
        self.problem = problem
        super().__init__(f"`{shown(filename)}` was not saved: {problem}")


class IncompleteModel(ModelBayError):
    """A model version lacks what loading it needs: a config, a tokenizer, or weights its index names."""

    def __init__(self, name: str, missing: list[str], *, installed: bool = False) -> None:
        self.name = name
        self.missing = missing
        self.installed = installed
        what = "; ".join(shown(m, 120) for m in missing[:4]) + ("; …" if len(missing) > 4 else "")
        if installed:
            text = (f"`{shown(name)}` is installed but incomplete on disk (missing {what}). Install it again with "
                    f"`/models install {shown(name)}`.")
        else:
            text = (f"`{shown(name)}` cannot be loaded as published (missing {what}), so nothing was installed. "
                    "Install a revision that has them, or ask the repo's owner to add them.")
        super().__init__(text)


class UnsafeRepoFile(ModelBayError):
    """A repository lists a file whose name could reach outside its folder or cannot be stored."""

    def __init__(self, repo_id: str, path: str, reason: str) -> None:
        self.repo_id = repo_id
        self.path = path
        self.reason = reason
        super().__init__(
            f"`{shown(repo_id)}` lists a file ModelBay cannot store safely (`{shown(path)}`: {one_line(reason, 80)}), "
            "so nothing was installed. Install another revision, or ask the repo's owner to rename the file."
        )


class DatabaseUnavailable(ModelBayError):
    """The database connection dropped (or the database did not answer) in the middle of a request."""

    retryable = True  # the same job may well succeed once the database is back

    def __init__(self, *, dropped: bool = True) -> None:
        self.dropped = dropped
        what = "The database connection dropped" if dropped else "The database did not answer"
        super().__init__(f"{what}. Try again in a moment; if it keeps happening, ask an admin to check the database.")


class DatabaseDriverMissing(ModelBayError):
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


class TemplateRefused(BackendFailed):
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


class ModelUnloadable(ModelBayError):
    """An installed model's files are there but loading them failed (a corrupt or truncated file, a bad config)."""

    retryable = False  # the same files fail the same way

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"`{shown(name)}` is installed but could not be loaded ({one_line(reason, 120)}). Install it "
                         f"again with `/models install {shown(name)}`; if that does not help, tell an admin.")
