"""Build the bytes of an outgoing message; every header value is checked for injection here.

The message is written directly rather than through EmailMessage: its header registry parses
every value again and cost ~1.2 ms a message, a large share of the worker's budget. What is
written is plain RFC 5322/MIME: headers folded at spaces to 78 characters (RFC 5322 2.2.3),
non-ASCII text as RFC 2047 encoded words, non-ASCII filenames as RFC 2231 parameters, bodies
in quoted-printable and base64 by the stdlib's encoders, CRLF line ends throughout.
Addresses are written as given: a non-ASCII one goes out as UTF-8 (RFC 6532), as the
SMTPUTF8 transaction that carries it (worker/adapters/smtp.py) expects.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import base64mime, quoprimime
from email.utils import format_datetime
from urllib.parse import quote

# Keep References bounded: the first id (thread root) and the most recent ones.
MAX_REFERENCES = 20

_LINE = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters.
_WORD = 75  # RFC 2047 2: an encoded word is at most 75 characters.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
# Printable ASCII but ":" (RFC 5322 ftext).
_HEADER_NAME = re.compile(r"[!-9;-~]+")
# RFC 5322 atext, and UTF-8 beyond ASCII (RFC 6532 3.2), in dot-atoms and in a phrase's atoms.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_PHRASE_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")
# Filenames sent as a quoted string: no quoted-pairs (read inconsistently), nothing like an
# encoded word; any other goes as RFC 2231.
_PLAIN_FILENAME = re.compile(r"[A-Za-z0-9 !#$%&'()*+,.;=@\[\]^_{}~-]+")
# RFC 2045 type "/" subtype, both tokens.
_MIME_TYPE = re.compile(r"[a-z0-9!#$%&'*+.^_`{|}~-]+/[a-z0-9!#$%&'*+.^_`{|}~-]+")


@dataclass(frozen=True, kw_only=True, slots=True)
class OutgoingMail:
    from_name: str
    from_address: str
    to: Sequence[str]
    subject: str
    message_id: str
    date: datetime
    text: str
    html: str | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    # Unstructured values: non-ASCII words go as encoded words, so no UTF-8 addresses here.
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    # (filename, content type, bytes) of each attachment.
    attachments: Sequence[tuple[str, str, bytes]] = ()


def single_line(value: str, limit: int = 900) -> str:
    """Strip CR, LF and other control characters so no supplied text can start a new header."""
    return " ".join(_CONTROLS.sub(" ", value).split())[:limit]


def compose(mail: OutgoingMail) -> bytes:
    """The message as it goes to the SMTP server. Raises ValueError for a naive date or an
    extra header name that is not a field name."""
    if mail.date.tzinfo is None:
        raise ValueError("date must be aware")
    name = single_line(mail.from_name, 200)
    address = _addr_spec(single_line(mail.from_address, 320))
    headers = [_fold("From", [*_phrase(name, _room("From")), f"<{address}>"] if name else [address])]
    to = [recipient for recipient in (single_line(a, 320) for a in mail.to) if recipient]
    if to:
        headers.append(_fold("To", [recipient + "," for recipient in to[:-1]] + [to[-1]]))
    headers += [
        _fold("Subject", _text_words(single_line(mail.subject), _room("Subject"))),
        f"Date: {format_datetime(mail.date)}\r\n",
        _fold("Message-ID", single_line(mail.message_id).split()),
    ]
    if mail.in_reply_to:
        headers.append(_fold("In-Reply-To", single_line(mail.in_reply_to).split()))
    references = list(dict.fromkeys(mail.references))
    if len(references) > MAX_REFERENCES:
        references = [references[0], *references[-(MAX_REFERENCES - 1):]]
    if references:
        headers.append(_fold("References", " ".join(single_line(r) for r in references).split()))
    for header, value in mail.extra_headers.items():
        if not _HEADER_NAME.fullmatch(header):
            raise ValueError(f"not a header name: {header!r}")
        headers.append(_fold(header, _text_words(single_line(value), _room(header))))
    headers.append("MIME-Version: 1.0\r\n")

    body = _text_part("plain", mail.text)
    if mail.html is not None:
        body = _multipart("alternative", [body, _text_part("html", mail.html)])
    if mail.attachments:
        body = _multipart("mixed", [body, *(_attachment(*a) for a in mail.attachments)])
    return "".join(headers).encode() + body


def _fold(name: str, words: Iterable[str]) -> str:
    """The header line `name: words...`, the words joined by spaces and a line broken before a
    word that would take it past 78 characters (a longer word keeps a line to itself).
    Unfolding, which removes only the CRLF, gives back the words joined by single spaces."""
    lines: list[str] = []
    line = name + ":"
    bare = True  # nothing but the name on this line yet: never break there
    for word in words:
        if not bare and len(line) + 1 + len(word) > _LINE:
            lines.append(line)
            line = ""
        line += " " + word
        bare = False
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def _room(name: str) -> int:
    """The longest encoded word for header `name`: one that fits the first line after the name
    (RFC 2047 2 allows 75), so it never needs a line of its own; at least 40 for a long name."""
    return max(40, min(_WORD, _LINE - len(name) - 2))


def _needs_encoding(text: str) -> bool:
    # Literal ASCII "=?" would be taken for the start of an encoded word by a reader.
    return not text.isascii() or "=?" in text


def _text_words(value: str, room: int) -> list[str]:
    """The words of unstructured text (Subject, extra headers): ASCII words as they are, each
    run of words that need encoding as RFC 2047 encoded words (spaces inside the run encoded)."""
    words: list[str] = []
    run: list[str] = []
    for word in value.split():
        if _needs_encoding(word):
            run.append(word)
            continue
        if run:
            words += _encoded_words(" ".join(run), room)
            run = []
        words.append(word)
    if run:
        words += _encoded_words(" ".join(run), room)
    return words


def _encoded_words(text: str, room: int) -> list[str]:
    """`text` as RFC 2047 UTF-8 encoded words of at most `room` characters, each holding whole
    characters (RFC 2047 5); Q if that is no longer than B. Q encodes everything but letters,
    digits and "!*+-/", so the words are valid in a phrase (a display name) too."""
    data = text.encode()
    use_q = quoprimime.header_length(data) <= base64mime.header_length(data)
    room -= len("=?utf-8?q??=")
    words: list[str] = []
    chunk: list[str] = []
    used = 0
    for char in text:
        octets = char.encode()
        size = quoprimime.header_length(octets) if use_q else len(octets)
        # Base64 needs 4 characters for every 3 octets or part of them.
        if chunk and (used + size if use_q else (used + size + 2) // 3 * 4) > room:
            words.append(_encoded_word("".join(chunk), use_q))
            chunk, used = [], 0
        chunk.append(char)
        used += size
    words.append(_encoded_word("".join(chunk), use_q))
    return words


def _encoded_word(text: str, use_q: bool) -> str:
    encode = quoprimime.header_encode if use_q else base64mime.header_encode
    return encode(text.encode(), "utf-8")


def _phrase(name: str, room: int) -> list[str]:
    """The words of a display name: atoms as they are, encoded words when it is not ASCII,
    else a quoted string (RFC 5322 3.2.5; it may fold at its spaces)."""
    if _needs_encoding(name):
        return _encoded_words(name, room)
    if _PHRASE_ATOMS.fullmatch(name):
        return name.split()
    return ('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"').split(" ")


def _addr_spec(address: str) -> str:
    """`local@domain`, the local part quoted unless it is a dot-atom (or quoted already)."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    if _DOT_ATOM.fullmatch(local) or (len(local) > 1 and local[0] == local[-1] == '"'):
        return address
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"@' + domain


def _text_part(subtype: str, text: str) -> bytes:
    """A UTF-8 quoted-printable text part, its lines ended by CRLF and at most 76 characters."""
    if not text.endswith(("\n", "\r")):
        text += "\n"
    return (f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode() + _qp(text)


def _qp(text: str) -> bytes:
    """`text` in UTF-8 quoted-printable, lines ended by CRLF (CR, LF and CRLF in `text` all end
    a line). binascii's encoder, in C, is 4x faster than quoprimime's, a share of every message
    the worker sends; but it can write a 77-character line when it encodes a trailing space,
    and then quoprimime's is used."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode()
    encoded = binascii.b2a_qp(data, istext=True)
    if max(map(len, encoded.split(b"\n"))) <= 76:
        return encoded.replace(b"\n", b"\r\n")
    # It works on characters below 256: UTF-8 octets read as Latin-1.
    return quoprimime.body_encode(data.decode("latin-1"), 76, "\r\n").encode("ascii")


def _attachment(filename: str, content_type: str, data: bytes) -> bytes:
    mime_type = content_type.partition(";")[0].strip().lower()
    if not _MIME_TYPE.fullmatch(mime_type) or mime_type.startswith(("multipart/", "message/")):
        mime_type = "application/octet-stream"
    head = (f"Content-Type: {mime_type}\r\nContent-Transfer-Encoding: base64\r\n"
            + _fold("Content-Disposition", _disposition(single_line(filename, 200))) + "\r\n")
    return head.encode() + base64.encodebytes(data).replace(b"\n", b"\r\n")


def _disposition(filename: str) -> list[str]:
    """`attachment` and the filename: a quoted string when it is plain ASCII and fits a line,
    else RFC 2231 UTF-8 in numbered sections that each fit one (RFC 2231 3, 4)."""
    if not filename:
        return ["attachment"]
    if _PLAIN_FILENAME.fullmatch(filename) and len(filename) <= _LINE - len(' filename=""'):
        return ["attachment;", f'filename="{filename}"']
    value = "utf-8''" + quote(filename, safe="")
    if len(value) <= _LINE - len(" filename*="):
        return ["attachment;", f"filename*={value}"]
    sections = []
    while value:
        cut = _LINE - len(" filename*00*=;")
        while "%" in value[cut - 2:cut]:  # never split a %XX escape
            cut -= 1
        sections.append(value[:cut])
        value = value[cut:]
    params = [f"filename*{i}*={section}" for i, section in enumerate(sections)]
    return ["attachment;", *(p + ";" for p in params[:-1]), params[-1]]


def _multipart(subtype: str, parts: list[bytes]) -> bytes:
    """The parts with their delimiters. The boundary starts "=_", which neither quoted-printable
    nor base64 output can contain (RFC 2045 6.7), so no part can end the multipart early."""
    boundary = "=_" + secrets.token_hex(16)
    head = f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"\r\n\r\n--{boundary}\r\n'
    delimiter = f"\r\n--{boundary}\r\n".encode()
    # One join: an attachment's bytes are copied once here, not once per "+".
    return b"".join([head.encode(), delimiter.join(parts), f"\r\n--{boundary}--\r\n".encode()])
