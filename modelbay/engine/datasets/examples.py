"""The normalised row every dataset format becomes: a chat (`messages`), a prompt and completion, or a text.

Readers (`readers.py`) turn each row of a file into an `Example` or a `Problem` (`problems.py`); everything after
them (validation, tokens, the split, training) reads only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Kind", "Message", "ROLES", "Role", "Example"]

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
Kind = Literal["chat", "completion", "text"]


@dataclass(frozen=True)
class Message:
    """One turn of a chat: who speaks and what they say."""

    role: Role
    content: str


@dataclass(frozen=True)
class Example:
    """One valid row of a dataset, whatever its file's format.

    Exactly one shape is filled: `messages` (chat, ShareGPT and Alpaca rows: an optional leading system message,
    then user and assistant turns alternating, ending with the assistant), `prompt` and `completion` (completion
    rows, trained without a chat template), or `text` (plain text, every token trained).
    """

    line: int  # 1-based: the JSONL/text line, the CSV line (header is line 1), the Parquet row index + 1
    messages: tuple[Message, ...] = ()
    prompt: str | None = None
    completion: str | None = None
    text: str | None = None

    @property
    def kind(self) -> Kind:
        """Which shape the row has: chat, completion or text."""
        if self.messages:
            return "chat"
        return "text" if self.text is not None else "completion"

    @property
    def content(self) -> tuple[object, ...]:
        """What the row says, without where it stands: equal for duplicate rows."""
        return (tuple((m.role, m.content) for m in self.messages), self.prompt, self.completion, self.text)

    def chars(self) -> int:
        """How many characters the row holds (its length when no tokenizer is chosen)."""
        return sum(len(m.content) for m in self.messages) + len(self.prompt or "") + len(self.completion or "") \
            + len(self.text or "")

    def as_dicts(self) -> list[dict[str, str]]:
        """The chat as the `[{"role", "content"}]` list chat templates take (empty for other kinds)."""
        return [{"role": m.role, "content": m.content} for m in self.messages]
