"""Domain errors: each carries its data and one sentence that tells the user what to do next."""

from __future__ import annotations

__all__ = [
    "CatalogInvalid",
    "JobNotFound",
    "JobNotCancelable",
    "ModelBayError",
    "ModelNotFound",
    "NotAllowed",
]


class ModelBayError(Exception):
    """Base of every error a user may see; str() is the user-facing sentence."""


class ModelNotFound(ModelBayError):
    """No model by that name; suggests close matches."""

    def __init__(self, name: str, suggestions: list[str] | None = None) -> None:
        self.name = name
        self.suggestions = suggestions or []
        hint = f" Did you mean {', '.join(f'`{s}`' for s in self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"No model named `{name}`.{hint} See `/models list` for what is available.")


class JobNotFound(ModelBayError):
    """No job with that id."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"No job `{job_id}`. See `/jobs` for your jobs and their ids.")


class JobNotCancelable(ModelBayError):
    """The job already ended."""

    def __init__(self, job_id: str, status: str) -> None:
        self.job_id = job_id
        self.status = status
        super().__init__(f"Job `{job_id}` has already {status}; there is nothing to cancel.")


class NotAllowed(ModelBayError):
    """The caller's role does not allow the action."""

    def __init__(self, action: str, role: str, needed: str) -> None:
        self.action = action
        self.role = role
        self.needed = needed
        super().__init__(
            f"`{action}` needs the {needed} role and you have {role}. Ask an admin to grant it in MODELBAY_ROLES."
        )


class CatalogInvalid(ModelBayError):
    """The catalog file has an entry that does not validate."""

    def __init__(self, entry: str, problem: str) -> None:
        self.entry = entry
        self.problem = problem
        super().__init__(f"Catalog entry `{entry}` is invalid: {problem}. Fix it in the catalog YAML.")
