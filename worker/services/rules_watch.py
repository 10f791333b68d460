"""Reload rule files and templates when they change; an invalid edit keeps the last good rules.

The files are compared by content, not modification time, so an edit is seen even within
one clock tick, and touching a file without changing it reloads nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from worker.errors import InvalidInput, Problem

log = logging.getLogger(__name__)


def fingerprint(*folders: Path) -> str:
    digest = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(b"\0")
            try:
                digest.update(path.read_bytes())
            except OSError:
                digest.update(b"<unreadable>")
    return digest.hexdigest()


Loaded = TypeVar("Loaded")


class RulesWatcher(Generic[Loaded]):
    """Loads the rules (and templates) again when their files change and hands them to
    `on_change` only when `load` passes every check."""

    def __init__(self, *, folders: tuple[Path, ...], load: Callable[[], Loaded],
                 on_change: Callable[[Loaded, datetime], None]) -> None:
        self.folders = folders
        self.load = load
        self.on_change = on_change
        self.rejected: list[Problem] = []
        self._fingerprint = fingerprint(*folders)

    def refresh(self, now: datetime) -> bool:
        """Reload when the files changed; True when new rules came into force at `now`."""
        current = fingerprint(*self.folders)
        if current == self._fingerprint:
            return False
        self._fingerprint = current
        try:
            loaded = self.load()
        except InvalidInput as exc:
            self.rejected = exc.problems
            log.error("rule files changed but are invalid; the last good rules stay in force:\n%s",
                      "\n".join(str(p) for p in exc.problems))
            return False
        self.rejected = []
        self.on_change(loaded, now)
        return True
