"""Send raw messages with aiosmtplib over one connection per batch; classify failures at the boundary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import aiosmtplib

from worker.adapters.tls import client_context
from worker.config import SmtpConfig
from worker.errors import SendFailure, SendFailureKind


class MailSender(Protocol):
    """Hands messages to an SMTP server.

    Use as `async with sender:`; `send` returns the server's acceptance reply and raises
    SendFailure: PERMANENT for a 5xx refusal (retrying cannot help), TRANSIENT for 4xx,
    timeouts and connection failures. After a TRANSIENT failure the connection is dropped and
    the next `send` reconnects.
    """

    async def __aenter__(self) -> MailSender: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def send(self, envelope_from: str, recipients: Sequence[str], raw: bytes) -> str: ...


class SmtpSender:
    """MailSender over aiosmtplib. TLS is verified; "starttls" fails rather than fall back."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: aiosmtplib.SMTP | None = None

    async def __aenter__(self) -> SmtpSender:
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        cfg = self.config
        security = cfg.tls.security
        # start_tls=True requires STARTTLS: a server without it is an error, never plaintext.
        client = aiosmtplib.SMTP(
            hostname=cfg.host, port=cfg.port, timeout=cfg.timeout_seconds,
            use_tls=security == "tls", start_tls=security == "starttls",
            tls_context=client_context(cfg.tls) if security != "none" else None,
        )
        await client.connect()
        if cfg.username:
            await client.login(cfg.username, cfg.password.value if cfg.password else "")
        self._client = client
        return client

    async def send(self, envelope_from: str, recipients: Sequence[str], raw: bytes) -> str:
        try:
            client = await self._connected()
            options = []
            if not all(address.isascii() for address in (envelope_from, *recipients)):
                # An internationalised address (RFC 6531) needs SMTPUTF8; never mangle it.
                if not client.supports_extension("smtputf8"):
                    raise SendFailure(SendFailureKind.PERMANENT,
                                      "the address is internationalised and the SMTP server "
                                      "does not offer SMTPUTF8")
                options.append("SMTPUTF8")
            errors, reply = await client.sendmail(envelope_from, list(recipients), raw,
                                                  mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            kind = SendFailureKind.TRANSIENT if all(400 <= c < 500 for c in codes) else \
                SendFailureKind.PERMANENT
            raise SendFailure(kind, "; ".join(f"{r.code} {r.message}" for r in exc.recipients)) \
                from exc
        except aiosmtplib.SMTPResponseException as exc:
            await self._drop()
            kind = SendFailureKind.PERMANENT if 500 <= exc.code < 600 else SendFailureKind.TRANSIENT
            raise SendFailure(kind, f"{exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            await self._drop()
            raise SendFailure(SendFailureKind.TRANSIENT, f"{type(exc).__name__}: {exc}") from exc
        if errors:
            # Some recipients were refused; those are recorded with the acceptance reply.
            refused = "; ".join(f"{addr}: {resp.code} {resp.message}" for addr, resp in errors.items())
            return f"{reply}; refused: {refused}"
        return reply

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
