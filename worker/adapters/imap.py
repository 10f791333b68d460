"""One IMAP folder through imapclient: list new UIDs, fetch raw bytes, mark processed, wait in IDLE.

Never deletes.
"""

from __future__ import annotations

import contextlib
import re
import select
import shlex
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from worker.adapters.tls import client_context
from worker.config import MailboxConfig
from worker.errors import MailboxError

NETWORK_ERRORS = (IMAPClientError, OSError, ssl.SSLError, socket.timeout, EOFError)


@dataclass(frozen=True, kw_only=True, slots=True)
class FolderStatus:
    uidvalidity: int
    # Whether the server stores our keyword flag (PERMANENTFLAGS has \*).
    keywords_allowed: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class FetchedMessage:
    uid: int
    internaldate: datetime
    size: int
    # The whole message, or only its header when it is over the size limit.
    raw: bytes
    truncated: bool = False


class MailboxSource(Protocol):
    """One folder of one mailbox. Implementations raise MailboxError for any server or network failure.

    `open` connects, logs in and selects the folder. `new_uids(after)` lists UIDs greater than
    `after`, ascending. `unmarked_uids(up_to)` lists UIDs at or below `up_to` that are still
    waiting to be flagged or moved (a crash can fall between our commit and the mark).
    `fetch` yields messages without changing any flag (BODY.PEEK). `mark_processed` moves
    the messages to the processed folder, or adds our keyword; it never sets \\Seen and
    never deletes.
    """

    def open(self) -> FolderStatus: ...
    def new_uids(self, after: int) -> list[int]: ...
    def unmarked_uids(self, up_to: int) -> list[int]: ...
    def fetch(self, uids: Sequence[int], *, max_bytes: int) -> Iterator[FetchedMessage]: ...
    def mark_processed(self, uids: Sequence[int]) -> None: ...
    def close(self) -> None: ...


class ImapMailbox:
    """MailboxSource over imapclient. See MailboxSource for the contract.

    With `keep_open`, `close` keeps the connection for the next `open` (which re-selects the
    folder, and reconnects if the server dropped us): `run` holds one connection per mailbox
    and waits on it in IDLE between polls. `disconnect` really closes it.
    """

    def __init__(self, config: MailboxConfig, *, timeout: float = 60.0, keep_open: bool = False) -> None:
        self.config = config
        self.timeout = timeout
        self.keep_open = keep_open
        self._client: IMAPClient | None = None
        self._keywords_allowed = False
        self._can_move = False

    @property
    def client(self) -> IMAPClient:
        if self._client is None:
            raise MailboxError("mailbox is not open")
        return self._client

    def open(self) -> FolderStatus:
        if self._client is not None:
            try:
                return self._select()
            except NETWORK_ERRORS:
                self.disconnect()  # Dropped while we were away: connect afresh below.
        cfg = self.config
        try:
            client = self._connect()
            self._client = client
            if cfg.auth == "xoauth2":
                client.oauth2_login(cfg.username, self._token())
            else:
                client.login(cfg.username, cfg.password.value if cfg.password else "")
            client.normalise_times = False
            if cfg.processed_folder and not client.folder_exists(cfg.processed_folder):
                client.create_folder(cfg.processed_folder)
            self._can_move = client.has_capability("MOVE")
            return self._select()
        except MailboxError:
            self.disconnect()
            raise
        except NETWORK_ERRORS as exc:
            self.disconnect()
            raise MailboxError(_describe(exc)) from exc

    def _select(self) -> FolderStatus:
        selected = self.client.select_folder(self.config.folder)
        permanent = selected.get(b"PERMANENTFLAGS", ())
        self._keywords_allowed = b"\\*" in permanent
        return FolderStatus(uidvalidity=int(selected[b"UIDVALIDITY"]),
                            keywords_allowed=self._keywords_allowed)

    def _connect(self) -> IMAPClient:
        client = self._open_connection()
        # Small commands stall ~40 ms on Nagle's algorithm and delayed ACKs without this.
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    def _open_connection(self) -> IMAPClient:
        tls = self.config.tls
        if tls.security == "tls":
            return IMAPClient(self.config.host, self.config.port, ssl=True,
                              ssl_context=client_context(tls), timeout=self.timeout)
        client = IMAPClient(self.config.host, self.config.port, ssl=False, timeout=self.timeout)
        if tls.security == "starttls":
            # No silent downgrade: a server without STARTTLS is an error, not a plaintext login.
            if not client.has_capability("STARTTLS"):
                client.shutdown()
                raise MailboxError("server does not offer STARTTLS (security = \"starttls\")")
            client.starttls(client_context(tls))
        return client

    def _token(self) -> str:
        try:
            result = subprocess.run(shlex.split(self.config.token_command), capture_output=True,
                                    text=True, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise MailboxError(f"token_command failed: {type(exc).__name__}") from exc
        token = result.stdout.strip()
        if not token:
            raise MailboxError("token_command printed no token")
        return token

    def new_uids(self, after: int) -> list[int]:
        # "N:*" always includes the highest UID even when it is below N, so filter.
        uids = self._search(["UID", f"{after + 1}:*"])
        return sorted(uid for uid in uids if uid > after)

    def unmarked_uids(self, up_to: int) -> list[int]:
        if up_to <= 0:
            return []
        criteria: list[str] = ["UID", f"1:{up_to}"]
        if not self._moves:
            if not self._keywords_allowed:
                return []
            criteria += ["UNKEYWORD", self.config.processed_keyword]
        return sorted(uid for uid in self._search(criteria) if uid <= up_to)

    @property
    def _moves(self) -> bool:
        return bool(self.config.processed_folder) and self._can_move

    def _search(self, criteria: list[str]) -> list[int]:
        try:
            return [int(uid) for uid in self.client.search(criteria)]
        except NETWORK_ERRORS as exc:
            raise MailboxError(_describe(exc)) from exc

    def fetch(self, uids: Sequence[int], *, max_bytes: int) -> Iterator[FetchedMessage]:
        if not uids:
            return
        try:
            sizes = self.client.fetch(list(uids), ["RFC822.SIZE", "INTERNALDATE"])
            small = [uid for uid in uids if int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0)) <= max_bytes]
            large = [uid for uid in uids if uid in sizes and uid not in small]
            bodies = self.client.fetch(small, ["BODY.PEEK[]"]) if small else {}
            headers = self.client.fetch(large, ["BODY.PEEK[HEADER]"]) if large else {}
        except NETWORK_ERRORS as exc:
            raise MailboxError(_describe(exc)) from exc
        for uid in uids:
            if uid not in sizes:
                continue  # Expunged by someone else between SEARCH and FETCH.
            meta = sizes[uid]
            internaldate = meta[b"INTERNALDATE"]
            if internaldate.tzinfo is None:
                internaldate = internaldate.replace(tzinfo=UTC)
            if uid in bodies:
                raw = bodies[uid].get(b"BODY[]") or b""
                yield FetchedMessage(uid=uid, internaldate=internaldate, size=len(raw), raw=raw)
            elif uid in headers:
                yield FetchedMessage(uid=uid, internaldate=internaldate,
                                     size=int(meta[b"RFC822.SIZE"]),
                                     raw=headers[uid].get(b"BODY[HEADER]") or b"", truncated=True)

    def mark_processed(self, uids: Sequence[int]) -> None:
        if not uids:
            return
        folder = self.config.processed_folder
        try:
            if folder and self._can_move:
                self.client.move(list(uids), folder)
                return
            if folder:
                # No MOVE: copy, and flag the original rather than delete it.
                self.client.copy(list(uids), folder)
            if self._keywords_allowed:
                self.client.add_flags(list(uids), [self.config.processed_keyword.encode()])
        except NETWORK_ERRORS as exc:
            raise MailboxError(_describe(exc)) from exc

    @property
    def is_open(self) -> bool:
        return self._client is not None

    @property
    def can_idle(self) -> bool:
        """Whether the open connection offers IDLE (RFC 2177); without it `run` polls."""
        return bool(self.client.has_capability("IDLE"))

    def wait_for_mail(self, timeout: float, *, should_stop: Callable[[], bool] = lambda: False,
                      check_every: float = 1.0) -> bool:
        """Wait in IDLE up to `timeout` seconds; True as soon as the server announces new mail.

        Servers drop connections idle for long (RFC 2177 allows 29 minutes), so the caller
        re-issues IDLE with a timeout well under that. `should_stop` is checked every
        `check_every` seconds so that a stop request is not held up by a quiet mailbox.
        """
        client = self.client
        deadline = time.monotonic() + timeout
        arrived = False
        try:
            client.idle()
            while not arrived and not should_stop():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                arrived = any(_ANNOUNCES_MAIL.match(line)
                              for line in self._idle_lines(min(left, check_every)))
            _text, responses = client.idle_done()
        except NETWORK_ERRORS as exc:
            self.disconnect()
            raise MailboxError(_describe(exc)) from exc
        return arrived or _announces_mail(responses)

    def _idle_lines(self, timeout: float) -> list[bytes]:
        """The untagged lines the server sends in IDLE within `timeout` seconds, each one whole.

        Not imapclient's `idle_check`: it reads in non-blocking mode and aborts with
        "unterminated line" when a line arrives in two TCP segments (seen with pymap's
        FETCH). Only the wait is non-blocking here; lines are read with the normal timeout.
        """
        imap = self.client._imap
        if not self._line_waiting():
            poller = select.poll()  # Not select(): it fails on descriptors above 1024.
            poller.register(self.client.socket().fileno(), select.POLLIN)
            if not poller.poll(timeout * 1000):
                return []
        lines = [imap._get_line()]
        while self._line_waiting():
            lines.append(imap._get_line())
        return lines

    def _line_waiting(self) -> bool:
        """Whether bytes are buffered or readable now, without blocking."""
        sock = self.client.socket()
        sock.setblocking(False)
        try:
            return bool(self.client._imap.file.peek(1))
        except OSError:  # Nothing to read (a TLS socket says so with SSLWantReadError).
            return False
        finally:
            sock.settimeout(self.timeout)

    def close(self) -> None:
        if not self.keep_open:
            self.disconnect()

    def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()


# EXISTS (and the older RECENT) tell an IDLE client that a message was added.
_ANNOUNCES_MAIL = re.compile(rb"\* \d+ (?:EXISTS|RECENT)\b", re.IGNORECASE)


def _announces_mail(responses: Sequence[tuple[object, ...]]) -> bool:
    """The same test on the responses imapclient parsed from the end of IDLE."""
    return any(len(r) >= 2 and r[1] in (b"EXISTS", b"RECENT") for r in responses)


def _describe(exc: BaseException) -> str:
    """A short reason with no credentials in it (server replies to LOGIN can echo the user)."""
    if isinstance(exc, IMAPClient.AbortError):
        return "connection to the IMAP server was lost"
    if isinstance(exc, IMAPClientError) and "login" in str(exc).lower():
        return "login refused by the IMAP server"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message}"
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
        return f"network error: {exc.strerror or type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"[:300]
