"""Parsing and classification against real mail written by other people and other programs.

Reads ../shared/corpora (see its README); skipped when that folder is absent, as in a fresh clone.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.core.classify import classify
from worker.core.message import MessageKind, ParsedMessage
from worker.core.parse import parse_message

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"

pytestmark = [
    pytest.mark.corpora,
    pytest.mark.skipif(
        not CORPORA.is_dir(), reason=f"mail corpora not available at {CORPORA} (../shared/corpora)"
    ),
]

NONE = frozenset[str]()

# Bounce, auto-reply and report scores against the bounce corpora's answer keys are in
# tests/test_corpora_bounces.py.


def recipient_mailbox(msg: ParsedMessage) -> str:
    """The vacationing user's own address: where the sample was delivered."""
    for name in ("x-original-to", "delivered-to"):
        value = msg.header(name)
        if value and "@" in value:
            return value.strip("<> ").lower()
    raise AssertionError("sample has no delivery address")


def test_postfixadmin_vacation_samples() -> None:
    folder = CORPORA / "postfixadmin-vacation"
    expected = json.loads((folder / "EXPECTED.json").read_text(encoding="utf-8"))["expected"]
    results: dict[str, str] = {}
    for relative, spec in sorted(expected.items()):
        msg = parse_message((folder / relative).read_bytes())
        # "Sender is the vacationing user" is, for us, our own mailbox writing to itself.
        own = frozenset({recipient_mailbox(msg)})
        result = classify(msg, own_addresses=own)
        results[Path(relative).name] = f"{result.kind.value} {result.reasons}"
        if spec["send_autoreply"]:
            assert result.kind is MessageKind.HUMAN, (relative, spec["why"], result)
        else:
            assert result.kind is not MessageKind.HUMAN, (relative, spec["why"], result)
    print("\npostfixadmin-vacation:")
    for name, outcome in results.items():
        print(f"  {name}: {outcome}")


# ----------------------------------------------------------------------------- crash sweep

MAIL_SUFFIXES = {".eml", ".msg", ".txt", ".box", ".mbox", ".raw", ".mail", ".email"}
MAILDIR_FOLDERS = {"cur", "new", "tmp"}
NOT_MAIL = re.compile(r"licen[cs]e|copying|^readme|^changelog|^authors|^notice", re.IGNORECASE)
MAX_FILE_BYTES = 5 * 1024 * 1024
_MBOX_SEPARATOR = re.compile(rb"^From [^\r\n]*\r?\n", re.MULTILINE)


def looks_like_mail(path: Path) -> bool:
    if path.stat().st_size > MAX_FILE_BYTES or NOT_MAIL.search(path.name):
        return False
    if path.name.endswith(".mbox.txt") or path.suffix.lower() in MAIL_SUFFIXES:
        return True
    # Maildir files: no extension, or a maildir name like "1382298805.004618:2,S".
    return path.parent.name in MAILDIR_FOLDERS or path.suffix == ""


def split_mbox(data: bytes) -> Iterator[bytes]:
    """Messages of an mbox: each starts at a "From " line at the start or after a blank line."""
    starts = [
        m.start() for m in _MBOX_SEPARATOR.finditer(data)
        if m.start() == 0 or data[max(0, m.start() - 4) : m.start()].endswith((b"\n\n", b"\r\n\r\n"))
    ]
    if not starts or starts[0] != 0:
        yield data
        return
    for begin, end in zip(starts, [*starts[1:], len(data)], strict=True):
        yield data[begin:end]


def messages_in(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    if ".mbox" in path.name.lower():
        yield from split_mbox(data)
    else:
        yield data


def test_every_corpus_message_parses_and_classifies() -> None:
    processed: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    crashes: list[str] = []
    for path in sorted(CORPORA.rglob("*")):
        if not path.is_file() or not looks_like_mail(path):
            continue
        corpus = path.relative_to(CORPORA).parts[0]
        for index, raw in enumerate(messages_in(path)):
            try:
                msg = parse_message(raw)
                result = classify(msg, own_addresses=NONE)
            except Exception as exc:  # the point of the test: report every crash, not the first
                crashes.append(f"{path.relative_to(CORPORA)}#{index}: {exc!r}")
                continue
            assert isinstance(msg, ParsedMessage)
            processed[corpus] += 1
            kinds[result.kind.value] += 1

    print(f"\nmessages processed: {sum(processed.values())}, crashes: {len(crashes)}")
    for corpus, count in sorted(processed.items()):
        print(f"  {corpus:32}{count}")
    print("  by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())))
    assert not crashes, crashes
    assert sum(processed.values()) > 1_000, "the corpora look empty or unreadable"
