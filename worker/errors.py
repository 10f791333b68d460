"""One exception root per layer; adapters translate library errors into these."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class WorkerError(Exception):
    """Root of every error the worker raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a file the user wrote, reported as `file:line: message`."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class InvalidInput(WorkerError):
    """A config, rule or template file is wrong; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class ConfigError(InvalidInput):
    """The worker's config file is invalid."""


class RuleError(InvalidInput):
    """A provider rule file is invalid."""


class TemplateError(WorkerError):
    """A template is missing or fails to render."""


class MailboxError(WorkerError):
    """The IMAP server could not be reached, refused the login, or failed mid-session."""


class SendFailureKind(enum.Enum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class SendFailure(WorkerError):
    """SMTP refused or could not take a message; `kind` says whether retrying can help."""

    def __init__(self, kind: SendFailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
