"""Embedded IMAP and SMTP servers for `complaints-worker demo` and the fast tests.

Both servers listen on loopback in plaintext, run in a daemon thread with their own asyncio
loop, and are context managers that start on ``__enter__`` (returning once the socket is
listening) and stop cleanly on ``__exit__`` (joining the thread).

* :class:`EmbeddedImapServer` is an in-memory pymap server (the "dict" backend). It supports
  MOVE, IDLE and UIDPLUS but *not* keyword flags (its PERMANENTFLAGS lacks ``\\*``).
* :class:`EmbeddedSmtpServer` is an aiosmtpd server that records every accepted message and
  can be told to refuse the next DATA commands, or to go down, to exercise failure handling.
* :func:`deliver` / :func:`deliver_many` put mail into any IMAP server with APPEND.

pymap and aiosmtpd are the ``demo`` extra, so they are imported only when a server starts;
without them a :class:`DemoDependenciesMissing` error says what to install.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.policy
import importlib
import secrets
import socket
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser
from types import TracebackType
from typing import Any, Self

from worker.errors import WorkerError

__all__ = [
    "DemoDependenciesMissing",
    "EmbeddedImapServer",
    "EmbeddedSmtpServer",
    "ReceivedMail",
    "deliver",
    "deliver_many",
]

_LOOPBACK = "127.0.0.1"
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 15.0


class DemoDependenciesMissing(WorkerError, ImportError):
    """pymap or aiosmtpd is not installed; they come with the ``demo`` extra."""


def _require(module: str) -> None:
    """Import `module` or raise :class:`DemoDependenciesMissing` naming the extra to install."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise DemoDependenciesMissing(
            f"the embedded servers need {module!r}: install complaints-worker[demo]"
        ) from exc


# --------------------------------------------------------------------------------------------
# IMAP
# --------------------------------------------------------------------------------------------


class EmbeddedImapServer:
    """In-memory pymap IMAP server on loopback, plaintext, running in a daemon thread.

    Args:
        users: login -> password for the accounts that exist at start.
        host: address to listen on.
        port: port to listen on; 0 (the default) lets the OS pick a free one, reported
            as :attr:`port` once started.

    Mail lives in memory only: it is gone once the server stops, and a stopped server
    cannot be started again.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        host: str = _LOOPBACK,
        port: int = 0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._users: dict[str, str] = dict(users or {})
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._backend: Any = None
        self._config: Any = None
        self._used = False

    @property
    def port(self) -> int:
        """The port the server listens (or, once stopped, listened) on; known once started."""
        if self._port is None:
            raise RuntimeError("the embedded IMAP server has not been started")
        return self._port

    @property
    def running(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._stop_event is not None

    def start(self, timeout: float = _START_TIMEOUT) -> None:
        """Start the server thread and return once it accepts connections."""
        if self._used:
            raise RuntimeError("an EmbeddedImapServer can only be started once")
        _require("pymap")
        self._used = True
        self._thread = threading.Thread(target=self._thread_main, name="embedded-imap", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"the embedded IMAP server did not start within {timeout}s")
        if self._error is not None:
            self._thread.join(_STOP_TIMEOUT)
            raise RuntimeError("the embedded IMAP server failed to start") from self._error

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop listening, drop open connections and join the thread. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None:
            # RuntimeError: the loop already closed, so the thread is finishing anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"the embedded IMAP server did not stop within {timeout}s")
        self._thread = None

    def add_user(self, login: str, password: str, timeout: float = _START_TIMEOUT) -> None:
        """Create (or re-password) an account; works before start and while running."""
        loop = self._loop
        if not self.running or loop is None:
            self._users[login] = password
            return
        future = asyncio.run_coroutine_threadsafe(self._set_user(login, password), loop)
        future.result(timeout)
        self._users[login] = password

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inside the server thread --------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start(); never lost silently
            if self._error is None:
                self._error = exc
        finally:
            self._ready.set()

    async def _set_user(self, login: str, password: str) -> None:
        from pymap.backend.dict import Identity
        from pymap.user import Passwords, UserMetadata

        hashed = await Passwords(self._config).hash_password(password)
        identity = Identity(login, self._backend.login, None, frozenset())
        await identity.set(UserMetadata(self._config, login, password=hashed))

    async def _serve(self) -> None:
        from proxyprotocol.reader import ProxyProtocolReader
        from pymap.backend.dict import DictBackend
        from pymap.concurrent import Subsystem
        from pymap.imap import IMAPServer
        from pysasl.hashing import BuiltinHash

        args = argparse.Namespace(
            debug=False,
            host=self.host,
            port=str(self._requested_port),
            cert=None,
            key=None,
            tls=False,
            proxy_protocol="noop",
            passlib_cfg=None,
            demo_data=False,
            # The dict backend always creates a "demo" account; make it unguessable.
            demo_user=f"disabled-demo-{secrets.token_hex(16)}",
            demo_password=secrets.token_urlsafe(32),
            inherited_sockets=None,
            skip_services=[],
        )
        try:
            backend, config = await DictBackend.init(
                args,
                # No worker thread pool to leak, cheap password hashes (logins are on
                # loopback against throwaway accounts) and no delay for unknown users.
                cpu_subsystem=Subsystem.for_asyncio(),
                hash_context=BuiltinHash(rounds=1000),
                invalid_user_sleep=0.0,
            )
            config.apply_context()
            self._backend, self._config = backend, config
            for login, password in list(self._users.items()):
                await self._set_user(login, password)
            # What pymap's IMAPService.start() does, minus its listener bookkeeping, so the
            # port the OS picked for port 0 can be read back.
            handler = ProxyProtocolReader(config.proxy_protocol).get_callback(
                IMAPServer(backend.login, config)
            )
            server = await asyncio.start_server(handler, host=self.host, port=self._requested_port)
        except BaseException as exc:
            self._error = exc
            return
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stop_event.wait()
        finally:
            # Stop accepting; asyncio.run() then cancels the open connections' tasks.
            server.close()


# --------------------------------------------------------------------------------------------
# Delivering mail over IMAP
# --------------------------------------------------------------------------------------------


def deliver(
    host: str,
    port: int,
    login: str,
    password: str,
    raw: bytes,
    *,
    folder: str = "INBOX",
    internaldate: datetime | None = None,
) -> None:
    """APPEND one message to `folder` (created if missing) as if it had been delivered.

    A naive `internaldate` is taken as local time; None lets the server use "now".
    """
    deliver_many(host, port, login, password, [(raw, internaldate)], folder=folder)


def deliver_many(
    host: str,
    port: int,
    login: str,
    password: str,
    messages: Iterable[tuple[bytes, datetime | None]],
    *,
    folder: str = "INBOX",
) -> None:
    """APPEND each ``(raw, internaldate)`` to `folder` (created if missing), on one connection."""
    from imapclient import IMAPClient

    with IMAPClient(host, port=port, ssl=False, timeout=30) as client:
        # imaplib writes an APPEND literal in two sends; with Nagle on, the second waits for
        # the server's delayed ACK, costing ~40 ms per message.
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.login(login, password)
        if folder.upper() != "INBOX" and not client.folder_exists(folder):
            client.create_folder(folder)
        for raw, internaldate in messages:
            client.append(folder, raw, msg_time=internaldate)


# --------------------------------------------------------------------------------------------
# SMTP
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message the embedded SMTP server accepted.

    `raw` is exactly what came after DATA (CRLF line ends); `message` is it parsed with
    ``email.policy.default`` after turning CRLF into LF.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage


class _RecordingHandler:
    """aiosmtpd handler: refuse DATA while failures are queued, else record the message."""

    def __init__(self, owner: EmbeddedSmtpServer) -> None:
        self._owner = owner

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self._owner._on_data(envelope)


class EmbeddedSmtpServer:
    """aiosmtpd SMTP server on loopback, plaintext, no AUTH, recording what it accepts.

    Args:
        host: address to listen on.
        port: port to listen on; 0 (the default) lets the OS pick a free one, reported as
            :attr:`port` and kept across :meth:`set_down` outages.
        server_hostname: the name in the greeting (set so aiosmtpd skips a DNS lookup).
    """

    def __init__(
        self,
        *,
        host: str = _LOOPBACK,
        port: int = 0,
        server_hostname: str = "smtp.embedded.invalid",
    ) -> None:
        self.host = host
        self.server_hostname = server_hostname
        self._port = port
        self._controller: Any = None
        self._cond = threading.Condition()
        self._received: list[ReceivedMail] = []
        self._failures: deque[tuple[int, str]] = deque()
        self._started = False

    @property
    def port(self) -> int:
        """The port the server listens (or listened, while down) on; known once started."""
        if not self._started:
            raise RuntimeError("the embedded SMTP server has not been started")
        return self._port

    @property
    def received(self) -> list[ReceivedMail]:
        """A snapshot of every accepted message, oldest first."""
        with self._cond:
            return list(self._received)

    @property
    def is_down(self) -> bool:
        """True while the server is not listening (before start, after stop, or set down)."""
        return self._controller is None

    def start(self) -> None:
        """Start listening and return once the server answers. Idempotent."""
        if self._controller is not None:
            return
        _require("aiosmtpd")
        controller = _make_controller(_RecordingHandler(self), self.host, self._port, self.server_hostname)
        controller.start()
        self._port = int(controller.port)
        self._controller = controller
        self._started = True

    def stop(self) -> None:
        """Stop listening, drop open sessions and join the thread. Idempotent."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def set_down(self, down: bool) -> None:
        """Simulate an outage: stop listening (True) or listen again on the same port (False)."""
        if not self._started:
            raise RuntimeError("start the embedded SMTP server before taking it down")
        if down:
            self.stop()
        else:
            self.start()

    def fail_next(self, n: int = 1, code: int = 451, text: str = "4.3.0 Try again later (simulated)") -> None:
        """Refuse the next `n` DATA commands with `code` (4xx transient, 5xx permanent)."""
        if not 400 <= code <= 599:
            raise ValueError(f"SMTP failure code must be 4xx or 5xx, not {code}")
        if n < 0:
            raise ValueError("n must not be negative")
        with self._cond:
            self._failures.extend([(code, text)] * n)

    def clear(self) -> None:
        """Forget the messages received so far and any queued failures."""
        with self._cond:
            self._received.clear()
            self._failures.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least `count` messages were received; return them all.

        Raises:
            TimeoutError: fewer than `count` arrived within `timeout` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} message(s) within {timeout}s, received {len(self._received)}"
                )
            return list(self._received)

    def _on_data(self, envelope: Any) -> str:
        """Called on the server thread for every DATA command; returns the SMTP reply."""
        with self._cond:
            if self._failures:
                code, text = self._failures.popleft()
                return f"{code} {text}"
            raw = bytes(envelope.original_content or envelope.content or b"")
            # Parsed with LF line ends, so that get_content() gives "text\n", not "text\r\n".
            message = BytesParser(policy=email.policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
            assert isinstance(message, EmailMessage)
            self._received.append(
                ReceivedMail(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=tuple(str(r) for r in envelope.rcpt_tos),
                    raw=raw,
                    message=message,
                )
            )
            self._cond.notify_all()
        return "250 2.0.0 OK: message accepted"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _make_controller(handler: Any, host: str, port: int, server_hostname: str) -> Any:
    """An aiosmtpd Controller that, given port 0, learns the port the OS picked."""
    from aiosmtpd.controller import Controller

    class _PortZeroController(Controller):
        def _create_server(self) -> Any:
            create = super()._create_server()

            async def bind() -> Any:
                server = await create
                assert isinstance(server, asyncio.Server)
                # Read back the real port before start() connects to it.
                self.port = int(server.sockets[0].getsockname()[1])
                return server

            return bind()

    return _PortZeroController(
        handler,
        hostname=host,
        port=port,
        server_hostname=server_hostname,
        decode_data=False,
        ready_timeout=_START_TIMEOUT,
    )
