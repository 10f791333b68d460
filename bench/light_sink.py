"""An aiosmtpd sink that reads only each message's header, for the ingest benchmark.

    python bench/light_sink.py --port 10025 --log sink.jsonl

It writes the same JSON lines as the recipe's ../shared/bench/smtp_sink.py (envelope, size and
the headers that judge an acknowledgement), but parses just the header block with the
standard library's compat32 parser instead of the whole message with `email.policy.default`,
and reads DATA in chunks instead of line by line. That parse is 2-5 ms a message here and
aiosmtpd's line loop ~1 ms more, so the recipe's sink alone caps a run at a few hundred
messages a second, and the worker waits on it for every message it sends: it measures the
sink, not the worker. Stops cleanly on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

HEADERS = ("From", "To", "Subject", "Message-ID", "In-Reply-To", "References", "Auto-Submitted",
           "X-Auto-Response-Suppress", "Precedence")


class Recorder:
    def __init__(self, path: str) -> None:
        self.out = open(path, "a", buffering=1)  # noqa: SIM115 (open for the sink's lifetime)
        self.parser = BytesHeaderParser(policy=compat32)
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        end = raw.find(b"\r\n\r\n")
        headers = self.parser.parsebytes(raw[:end + 2] if end >= 0 else raw)
        record: dict[str, Any] = {"t": time.time(), "mail_from": envelope.mail_from,
                                  "rcpt_tos": envelope.rcpt_tos, "size": len(raw)}
        for name in HEADERS:
            value = headers.get(name)
            record[name.lower()] = None if value is None else _text(value)
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1
        return "250 Message accepted for delivery"


class ChunkedDataSMTP(SMTP):
    """aiosmtpd's server with DATA read a chunk at a time, not a line at a time.

    No line of a message may be a lone "." (the client stuffs a second dot before any line that
    starts with one), so the data ends at the first chunk that ends in CRLF "." CRLF: the client
    waits for our reply after it (this sink offers no PIPELINING).
    """

    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        data = bytearray()
        while not (data.endswith(b"\r\n.\r\n") or data == b".\r\n"):
            chunk = await self._reader.read(1 << 16)
            if not chunk:
                return  # The client went away mid-message.
            data += chunk
        # Drop the terminating "." line and undo the dot-stuffing (RFC 5321 4.5.2).
        content = bytes(data[:-3])
        content = content[1:] if content.startswith(b".") else content
        content = content.replace(b"\r\n.", b"\r\n")
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push(status)


class ChunkedController(Controller):
    def factory(self) -> SMTP:
        return ChunkedDataSMTP(self.handler, **self.SMTP_kwargs)


def _text(value: str) -> str:
    """A header as the recipe's sink gives it: encoded words decoded, folding removed."""
    unfolded = " ".join(value.split())
    if "=?" not in unfolded:
        return unfolded
    return str(make_header(decode_header(unfolded)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10025)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    recorder = Recorder(args.log)
    controller = ChunkedController(recorder, hostname=args.host, port=args.port, data_size_limit=0)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    print(f"sink stopped after {recorder.count} messages", flush=True)


if __name__ == "__main__":
    main()
