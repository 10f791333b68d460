"""An aiosmtpd sink that reads only each message's header, for the ingest benchmark.

    python bench/light_sink.py --port 10025 --log sink.jsonl

It writes the same JSON lines as the recipe's ../shared/bench/smtp_sink.py (envelope, size and
the headers that judge an acknowledgement), but parses just the header block with the
standard library's compat32 parser instead of the whole message with `email.policy.default`.
That parse is 2-5 ms a message here, so the recipe's sink alone caps a run at a few hundred
messages a second: it measures the sink, not the worker. Stops cleanly on SIGTERM.
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
    controller = Controller(recorder, hostname=args.host, port=args.port, data_size_limit=0)
    controller.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    print(f"sink stopped after {recorder.count} messages", flush=True)


if __name__ == "__main__":
    main()
