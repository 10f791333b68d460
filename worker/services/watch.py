"""`run`'s mailbox loop: poll until nothing is new, then wait in IMAP IDLE for the next mail.

One thread and one connection per mailbox. Without IDLE (or while the connection is down) the
thread waits the poll interval instead. IDLE is re-issued every `idle_seconds` with a poll in
between, because servers and NAT boxes drop connections that stay quiet, and a poll also
catches anything an IDLE notification missed. Polling again until a poll finds nothing closes
the gap where mail arrives during a poll and its EXISTS is swallowed by that poll's commands.

With several workers on PostgreSQL, a mailbox is polled only by the worker holding its
advisory lock; the others keep trying to take it over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from worker.adapters.imap import ImapMailbox
from worker.adapters.locks import AdvisoryLock
from worker.config import MailboxConfig
from worker.errors import MailboxError

log = logging.getLogger(__name__)

# Well under RFC 2177's 29 minutes and common NAT idle timeouts.
DEFAULT_IDLE_SECONDS = 240.0


class MailboxWatcher(threading.Thread):
    def __init__(self, *, mailbox: MailboxConfig, source: ImapMailbox,
                 poll: Callable[[MailboxConfig], int], stop: threading.Event,
                 poll_seconds: float, idle_seconds: float = DEFAULT_IDLE_SECONDS,
                 ownership: AdvisoryLock | None = None) -> None:
        super().__init__(name=f"mailbox-{mailbox.name}", daemon=True)
        self.mailbox = mailbox
        self.source = source
        self.poll = poll
        self.stop = stop
        self.poll_seconds = poll_seconds
        self.idle_seconds = idle_seconds
        self.ownership = ownership
        self._owned = ownership is None
        self._mode: str | None = None  # how it last waited, logged when it changes

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if not self._own():
                    self.stop.wait(self.poll_seconds)
                    continue
                if self.poll(self.mailbox) == 0:
                    self._wait()
        finally:
            self.source.disconnect()
            if self.ownership is not None:
                self.ownership.release()

    def _own(self) -> bool:
        if self.ownership is None:
            return True
        owned = self.ownership.try_hold()
        if owned != self._owned:
            log.info("mailbox %s: %s", self.mailbox.name,
                     "now polled by this worker" if owned else "polled by another worker")
            self._owned = owned
            if not owned:
                self.source.disconnect()
        return owned

    def _wait(self) -> None:
        if self.stop.is_set():
            return
        try:
            if self.source.is_open and self.source.can_idle:
                self._say("waiting for new mail with IMAP IDLE")
                self.source.wait_for_mail(self.idle_seconds, should_stop=self.stop.is_set)
                return
        except MailboxError as exc:
            log.info("mailbox %s: IDLE interrupted (%s); polling again", self.mailbox.name, exc)
            return
        self._say(f"no IMAP IDLE; polling every {self.poll_seconds:g}s")
        self.stop.wait(self.poll_seconds)

    def _say(self, mode: str) -> None:
        if mode != self._mode:
            log.info("mailbox %s: %s", self.mailbox.name, mode)
            self._mode = mode
