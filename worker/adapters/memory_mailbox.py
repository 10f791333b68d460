"""An in-memory MailboxSource: the twin of ImapMailbox for fast tests, benchmarks and replays.

It keeps the same contract (see MailboxSource) and is checked by the same contract tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from worker.adapters.imap import FetchedMessage, FolderStatus
from worker.errors import MailboxError


@dataclass(slots=True)
class _Stored:
    raw: bytes
    internaldate: datetime
    processed: bool = False


@dataclass(slots=True)
class InMemoryMailbox:
    uidvalidity: int = 1
    keywords_allowed: bool = True
    # When set, `open` fails with this reason (an unreachable server, a refused login).
    failure: str | None = None
    _messages: dict[int, _Stored] = field(default_factory=dict)
    _next_uid: int = 1
    _open: bool = False

    def deliver(self, raw: bytes, internaldate: datetime) -> int:
        if internaldate.tzinfo is None:
            raise ValueError("internaldate must be aware")
        uid = self._next_uid
        self._next_uid += 1
        self._messages[uid] = _Stored(raw=raw, internaldate=internaldate)
        return uid

    def open(self) -> FolderStatus:
        if self.failure:
            raise MailboxError(self.failure)
        self._open = True
        return FolderStatus(uidvalidity=self.uidvalidity, keywords_allowed=self.keywords_allowed)

    def _require_open(self) -> None:
        if not self._open:
            raise MailboxError("mailbox is not open")

    def new_uids(self, after: int) -> list[int]:
        self._require_open()
        return sorted(uid for uid in self._messages if uid > after)

    def unmarked_uids(self, up_to: int) -> list[int]:
        self._require_open()
        if not self.keywords_allowed:
            return []
        return sorted(uid for uid, m in self._messages.items() if uid <= up_to and not m.processed)

    def fetch(self, uids: Sequence[int], *, max_bytes: int) -> Iterator[FetchedMessage]:
        self._require_open()
        for uid in uids:
            stored = self._messages.get(uid)
            if stored is None:
                continue
            if len(stored.raw) > max_bytes:
                header = stored.raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                yield FetchedMessage(uid=uid, internaldate=stored.internaldate,
                                     size=len(stored.raw), raw=header, truncated=True)
            else:
                yield FetchedMessage(uid=uid, internaldate=stored.internaldate,
                                     size=len(stored.raw), raw=stored.raw)

    def mark_processed(self, uids: Sequence[int]) -> None:
        self._require_open()
        if not self.keywords_allowed:
            return
        for uid in uids:
            if uid in self._messages:
                self._messages[uid].processed = True

    def close(self) -> None:
        self._open = False
