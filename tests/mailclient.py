"""A real mail client (NeoMutt, else Mutt) replying to a message, for end-to-end tests.

Staff answer notification emails from their own mail clients, so the tests should see the
replies such a client really writes. :func:`mutt_reply` makes NeoMutt reply to a message
through its own reply machinery (``Re:`` subject, In-Reply-To/References, the attribution
line and ``> `` quoting) and send it over SMTP, with nobody at the keyboard:

* the original goes into a one-message Maildir under `workdir`, opened read-only (``-R``);
* ``-e 'push <reply><send-message><exit><exit>'`` replies, sends from the compose menu and
  quits (the second ``<exit>`` leaves the index if sending failed and ``<exit>`` only left
  the compose menu);
* ``$editor`` is a small shell script that puts the "typed" lines above what NeoMutt put in
  the draft (the attribution and the quoted original): a top-posted reply;
* ``$fast_reply`` skips the To/Subject prompts and ``$reply_to=yes`` the "Reply to ...?" one;
  everything else stays at NeoMutt's defaults ($attribution, $date_format, $indent_string,
  $reply_regex, ...), so the reply is what a stock NeoMutt sends;
* NeoMutt is a curses program, so it runs on a pseudo-terminal (TERM=xterm, 24x80) whose
  output is drained and kept for error messages, with a hard timeout after which its process
  group is killed.

Success is checked through ``$record``: NeoMutt writes the Fcc copy only after the SMTP server
accepted the message. Checked with NeoMutt 20220429 (Debian 12); Mutt 2.2.12 works the same
way but writes other Message-IDs (``<random@host>``) and splits encoded words differently.

:func:`mutt_style_reply` builds, with the email package, the message NeoMutt 20220429 sends
with the same settings, for machines without NeoMutt; :func:`reply_shape` reduces a message to
what the two must agree on.
"""

from __future__ import annotations

import base64
import contextlib
import email.header
import email.policy
import email.utils
import fcntl
import mailbox
import os
import pty
import pwd
import re
import secrets
import select
import shlex
import shutil
import signal
import string
import struct
import subprocess
import termios
import time
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

__all__ = [
    "DEFAULT_SEND_CHARSET",
    "MuttError",
    "mutt_available",
    "mutt_binary",
    "mutt_reply",
    "mutt_style_reply",
    "reply_shape",
]

DEFAULT_SEND_CHARSET = "utf-8"
"""$send_charset for :func:`mutt_reply`; NeoMutt's own default is "us-ascii:iso-8859-1:utf-8"."""

_TIMEOUT = 20.0
_COLUMNS, _ROWS = 80, 24
# NeoMutt's $reply_regex default; all lower case, so it matches case-insensitively.
_REPLY_REGEX = re.compile(r"^((re|aw|sv)(\[[0-9]+\])*:[ \t]*)*", re.IGNORECASE)
_ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>78MDEHc])")
_MSGID_CHARS = string.ascii_lowercase + string.digits
_DATE_HEADER = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
_MESSAGE_ID = re.compile(r"<\d{14}\.[a-z0-9]{16}@[^>\s]+>")


class MuttError(RuntimeError):
    """The mail client did not send the reply; the message ends with its last screen."""


def mutt_binary() -> str | None:
    """Path of neomutt, else mutt, on PATH; None if neither is installed."""
    return shutil.which("neomutt") or shutil.which("mutt")


def mutt_available() -> str | None:
    """None if :func:`mutt_reply` can run here, else why not (for pytest.skip/fail)."""
    binary = mutt_binary()
    if binary is None:
        return "neither neomutt nor mutt is installed (apt-get install neomutt)"
    try:
        out = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{binary} -v failed: {exc}"
    if "+smtp" not in out and "+USE_SMTP" not in out:  # NeoMutt's and Mutt's feature lists
        return f"{binary} was built without SMTP support"
    return None


# --------------------------------------------------------------------------------------------
# The real client
# --------------------------------------------------------------------------------------------


def _rc_string(value: str) -> str:
    """`value` as a double-quoted muttrc string (no variable or backtick expansion)."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"muttrc values cannot hold line breaks: {value!r}")
    escaped = "".join("\\" + ch if ch in '\\"$`' else ch for ch in value)
    return f'"{escaped}"'


def _muttrc(
    *, workdir: Path, from_address: str, smtp_host: str, smtp_port: int, editor: Path, fcc: Path,
    quote: bool, send_charset: str,
) -> str:
    _, address = email.utils.parseaddr(from_address)
    domain = address.rpartition("@")[2]
    strings = {
        # Where it sends from and to.
        "from": from_address,
        "hostname": domain,  # the right-hand side of the Message-ID
        "smtp_url": f"smtp://{smtp_host}:{smtp_port}/",
        "record": str(fcc),  # written only once the SMTP server accepted the message
        # Composing without prompts.
        "editor": shlex.quote(str(editor)),
        "signature": "",
        "charset": "utf-8",
        "send_charset": send_charset,
        # Nothing outside workdir.
        "folder": str(workdir),
        "spoolfile": str(workdir / "inbox"),
        "mbox": str(workdir / "mbox"),
        "postponed": str(workdir / "postponed"),
        "tmpdir": str(workdir),
        "header_cache": "",
        "message_cachedir": "",
    }
    words = {
        "ssl_starttls": "no",
        "ssl_force_tls": "no",
        "include": "yes" if quote else "no",
        "fast_reply": "yes",
        "reply_to": "yes",
        "recall": "no",
        "postpone": "no",
        # No questions, no pauses.
        "move": "no",
        "quit": "yes",
        "confirmcreate": "no",
        "confirmappend": "no",
        "sleep_time": "0",
        "wait_key": "no",
        "beep": "no",
    }
    lines = ["# Written by tests/mailclient.py: reply, send and quit without a human."]
    lines += [f"set {name}={_rc_string(value)}" for name, value in strings.items()]
    lines += [f"set {name}={value}" for name, value in words.items()]
    return "\n".join(lines) + "\n"


_EDITOR = """#!/bin/sh
# $editor for tests/mailclient.py: type the reply above the draft NeoMutt made (top-posting).
set -e
cat {body} "$1" > "$1.typed"
cat "$1.typed" > "$1"
rm -f "$1.typed"
: > {marker}
"""


def mutt_reply(
    original: bytes,
    *,
    from_address: str,
    body_lines: list[str],
    smtp_host: str,
    smtp_port: int,
    workdir: Path,
    quote: bool = True,
    send_charset: str = DEFAULT_SEND_CHARSET,
    timeout: float = _TIMEOUT,
) -> None:
    """Make NeoMutt (else Mutt) reply to `original` and send the reply to smtp_host:smtp_port.

    The reply's body is `body_lines`, then (if `quote`) an empty line, NeoMutt's attribution
    line and the quoted original. `from_address` is one RFC 5322 address, best with a
    display name ("Team Leader <tl@example.com>": NeoMutt gives a bare address the Unix
    user's GECOS name); its domain ends the Message-ID. `send_charset` is $send_charset.

    Raises:
        MuttError: no client is installed, it failed, or it was not done within `timeout`
            seconds (then its process group is killed); the message has its last screen.
    """
    if "@" not in email.utils.parseaddr(from_address)[1]:
        raise ValueError(f"not one address: {from_address!r} (a display name with a comma needs quotes)")
    binary = mutt_binary()
    if binary is None:
        raise MuttError(mutt_available() or "no mail client")
    workdir.mkdir(parents=True, exist_ok=True)
    inbox = workdir / "inbox"
    if inbox.exists():
        raise MuttError(f"{inbox} exists: give each mutt_reply call its own workdir")
    box = mailbox.Maildir(str(inbox), create=True)
    box.add(original.replace(b"\r\n", b"\n"))
    box.close()

    body = workdir / "typed.txt"
    typed = "".join(line + "\n" for line in body_lines)
    body.write_text(typed + ("\n" if quote else ""), encoding="utf-8")
    marker = workdir / "editor-ran"
    editor = workdir / "editor.sh"
    editor.write_text(_EDITOR.format(body=shlex.quote(str(body)), marker=shlex.quote(str(marker))))
    editor.chmod(0o755)
    fcc = workdir / "sent"
    muttrc = workdir / "muttrc"
    muttrc.write_text(
        _muttrc(
            workdir=workdir, from_address=from_address, smtp_host=smtp_host, smtp_port=smtp_port,
            editor=editor, fcc=fcc, quote=quote, send_charset=send_charset,
        ),
        encoding="utf-8",
    )

    argv = [
        binary, "-n", "-F", str(muttrc), "-R", "-f", str(inbox),
        "-e", "push <reply><send-message><exit><exit>",
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "TERM": "xterm",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": str(workdir),
    }
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    returncode, screen = _run_on_pty(argv, env=env, cwd=workdir, timeout=timeout)

    def failed(why: str) -> MuttError:
        return MuttError(f"{Path(binary).name} {why}; its last screen:\n{screen}")

    if returncode is None:
        raise failed(f"did not finish within {timeout}s and was killed")
    if returncode != 0:
        raise failed(f"exited with status {returncode}")
    if not marker.exists():
        raise failed("never ran the editor")
    if not fcc.exists() or fcc.stat().st_size == 0:
        raise failed("did not send the reply (no Fcc copy)")


def _run_on_pty(argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> tuple[int | None, str]:
    """Run `argv` on a fresh pseudo-terminal; (exit status or None if killed, last screen text)."""
    master, slave = pty.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", _ROWS, _COLUMNS, 0, 0))
        proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
            start_new_session=True, close_fds=True,
        )
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([master], [], [], min(left, 0.1))
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every process holding the terminal has gone
                    chunk = b""
                if chunk:
                    output += chunk
                    continue
            if proc.poll() is not None:
                break
            if ready:  # end of output but not yet reaped
                try:
                    proc.wait(max(0.0, min(deadline - time.monotonic(), 1.0)))
                except subprocess.TimeoutExpired:
                    pass
                else:
                    break
        returncode = proc.poll()
        if returncode is None:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
                returncode = proc.returncode
            except subprocess.TimeoutExpired:
                returncode = None
    finally:
        if proc.poll() is None:
            # Its own session and process group: this ends it and the editor, nothing else.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        os.close(master)
    return returncode, _screen_text(bytes(output))


def _screen_text(output: bytes, limit: int = 2000) -> str:
    """Readable tail of a curses program's output: escape sequences dropped, blank runs shrunk."""
    text = _ANSI.sub(b" ", output).decode("utf-8", "replace")
    text = re.sub(r"[ \t]{3,}", "  ", text.replace("\r", "\n"))
    text = re.sub(r"\n\s*\n+", "\n", text)
    return text[-limit:].strip()


# --------------------------------------------------------------------------------------------
# Without the real client
# --------------------------------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Characters that make NeoMutt quote a display name, and that its Q encoding escapes.
_ADDRESS_SPECIALS = '"(),.:;<>@[\\]'
_MIME_SPECIALS = '@.,;:<>[]\\"()?/= \t'
_ENCWORD_LEN_MAX = 75


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
    assert isinstance(message, EmailMessage)
    return message


def _quotable_text(message: EmailMessage) -> str:
    """The text NeoMutt quotes: the decoded text/plain body (the plain part of an alternative)."""
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        raise ValueError("mutt_style_reply only handles originals with a text/plain body")
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def _offset(when: datetime) -> str:
    """"+hhmm"; "-0000" (RFC 5322: zone unknown) for a naive datetime."""
    if when.tzinfo is None:
        return "-0000"
    offset = when.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"


def _attribution_date(when: datetime) -> str:
    """NeoMutt's default $date_format "!%a, %b %d, %Y at %I:%M:%S%p %Z" in the sender's zone.

    The "!" means the C locale (so no strftime here); for %Z NeoMutt writes the numeric
    offset of the original's Date header.
    """
    hour = when.hour % 12 or 12
    return (
        f"{_DAYS[when.weekday()]}, {_MONTHS[when.month - 1]} {when.day:02d}, {when.year} at "
        f"{hour:02d}:{when.minute:02d}:{when.second:02d}{'AM' if when.hour < 12 else 'PM'} {_offset(when)}"
    )


def _date_header(when: datetime) -> str:
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year} "
        f"{when:%H:%M:%S} {_offset(when)}"
    )


def _gecos_name() -> str:
    """What NeoMutt names a bare $from with: $real_name, by default the user's GECOS name up to
    the first comma (it cannot be set empty)."""
    try:
        entry = pwd.getpwuid(os.getuid())
    except KeyError:
        return ""
    return entry.pw_gecos.split(",", 1)[0]


def _charset_for(text: str, send_charset: str) -> str:
    """The first charset in `send_charset` ("a:b:c") that can encode `text`, as NeoMutt picks."""
    for charset in send_charset.split(":"):
        try:
            text.encode(charset)
        except (UnicodeEncodeError, LookupError):
            continue
        return charset.lower()
    return "utf-8"


def _header_charset(text: str, send_charset: str) -> str:
    """The charset NeoMutt 20220429 encodes a header in: utf-8 if $send_charset lists it
    (even after a charset that would do), else the first that can encode `text`."""
    fitting = []
    for charset in send_charset.split(":"):
        try:
            text.encode(charset)
        except (UnicodeEncodeError, LookupError):
            continue
        fitting.append(charset.lower())
    if not fitting or "utf-8" in fitting:
        return "utf-8"
    return fitting[0]


def _q_escaped(byte: int) -> bool:
    """Whether NeoMutt's Q encoding writes `byte` as =XX (a space becomes "_")."""
    char = chr(byte)
    return byte >= 0x7F or byte < 0x20 or char == "_" or (char != " " and char in _MIME_SPECIALS)


def _q_encode(data: bytes) -> str:
    return "".join(f"={b:02X}" if _q_escaped(b) else "_" if b == 0x20 else chr(b) for b in data)


def _encode_words(value: str, send_charset: str, specials: str = "") -> str:
    """`value` RFC 2047-encoded the way NeoMutt does it for a short header value.

    NeoMutt encodes one run of whole words, from the first to the last that needs it (a
    non-ASCII character, or with `specials` one of those too), in :func:`_header_charset`,
    as B or Q, whichever is shorter (Q on a tie). Runs too long for one encoded
    word are left to the email package (same decoded value, maybe other encoded words).
    """
    if value.isascii():
        return value
    marks = [i for i, ch in enumerate(value) if not ch.isascii()]
    start, end = marks[0], marks[-1]
    if specials:
        special = [i for i, ch in enumerate(value) if ch in specials]
        if special:
            start, end = min(start, special[0]), max(end, special[-1])
    while start > 0 and value[start - 1] not in " \t":
        start -= 1
    end += 1
    while end < len(value) and value[end] not in " \t":
        end += 1
    charset = _header_charset(value, send_charset)
    data = value[start:end].encode(charset)
    count = sum(1 for b in data if _q_escaped(b))
    overhead = len("=?.?.?.?=") - 2 + len(charset)
    len_b = overhead + (len(data) + 2) // 3 * 4
    len_q = overhead + len(data) + 2 * count
    if len_b < len_q and len_b <= _ENCWORD_LEN_MAX:
        word = f"=?{charset}?B?{base64.b64encode(data).decode()}?="
    elif len_q <= _ENCWORD_LEN_MAX:
        word = f"=?{charset}?Q?{_q_encode(data)}?="
    else:
        return email.header.Header(value, charset).encode()
    return value[:start] + word + value[end:]


def _addresses(header: object) -> tuple[Address, ...]:
    """The addresses of a parsed address header (None: none)."""
    return tuple(getattr(header, "addresses", None) or ())


def _address(name: str, addr: str, send_charset: str) -> str:
    """One address as NeoMutt writes it: bare, or "Name <addr>" with the name quoted or encoded."""
    if not name:
        return addr
    if name.isascii():
        if any(ch in _ADDRESS_SPECIALS for ch in name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        name = _encode_words(name, send_charset, _ADDRESS_SPECIALS)
    return f"{name} <{addr}>"


def mutt_style_reply(
    original: bytes,
    from_address: str,
    body_lines: list[str],
    *,
    quote: bool = True,
    send_charset: str = DEFAULT_SEND_CHARSET,
    now: datetime | None = None,
) -> bytes:
    """The reply :func:`mutt_reply` makes NeoMutt 20220429 send, built without NeoMutt.

    Same headers in the same order (Date, From, To, Subject, Message-ID, References,
    MIME-Version, Content-Type, Content-Disposition, [Content-Transfer-Encoding: 8bit],
    In-Reply-To; no User-Agent, which NeoMutt leaves out by default), the same
    "<YYYYmmddHHMMSS.16 random@from domain>" Message-ID, References one per line, and the
    same body: the typed lines, an empty line, "On <date>, <name> wrote:" and the
    "> "-quoted text/plain body. Lines end in CRLF, as they go over SMTP. Long headers are
    not folded as NeoMutt would (it folds at 78 columns); their values are the same.
    """
    parent = _parse(original)
    now = (now or datetime.now(UTC)).astimezone()
    from_name, from_addr = email.utils.parseaddr(from_address)
    domain = from_addr.rpartition("@")[2] or "localhost"
    from_name = from_name or _gecos_name()

    recipients = _addresses(parent.get("Reply-To")) or _addresses(parent.get("From"))
    to = ", ".join(_address(a.display_name, a.addr_spec, send_charset) for a in recipients)
    subject = "Re: " + _REPLY_REGEX.sub("", str(parent.get("Subject", "")), count=1)
    parent_id = str(parent.get("Message-ID", "")).strip()
    references = str(parent.get("References", "")).split()
    if not references and parent.get("In-Reply-To"):
        references = str(parent["In-Reply-To"]).split()[:1]
    if parent_id:
        references.append(parent_id)

    text = "".join(line + "\n" for line in body_lines)
    if quote:
        senders = _addresses(parent.get("From"))
        name = (senders[0].display_name or senders[0].addr_spec) if senders else ""
        # Naive for a "-0000" zone, which the attribution keeps.
        sent = email.utils.parsedate_to_datetime(str(parent["Date"])) if parent.get("Date") else now
        text += "\n" + f"On {_attribution_date(sent)}, {name} wrote:\n"
        quoted = _quotable_text(parent)
        if quoted.endswith("\n"):
            quoted = quoted[:-1]
        text += "".join("> " + line + "\n" for line in quoted.split("\n"))
    charset = _charset_for(text, send_charset)

    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    message_id = f"<{stamp}.{''.join(secrets.choice(_MSGID_CHARS) for _ in range(16))}@{domain}>"
    headers: list[tuple[str, str]] = [
        ("Date", _date_header(now.replace(microsecond=0))),
        ("From", _address(from_name, from_addr, send_charset)),
        ("To", to),
        ("Subject", _encode_words(subject, send_charset)),
        ("Message-ID", message_id),
    ]
    if references:
        headers.append(("References", "\r\n ".join(references)))
    headers += [
        ("MIME-Version", "1.0"),
        ("Content-Type", f"text/plain; charset={charset}"),
        ("Content-Disposition", "inline"),
    ]
    if not text.isascii():
        headers.append(("Content-Transfer-Encoding", "8bit"))
    if parent_id:
        headers.append(("In-Reply-To", parent_id))
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return head.encode("ascii") + b"\r\n" + text.replace("\n", "\r\n").encode(charset)


def reply_shape(raw: bytes) -> dict[str, object]:
    """What a NeoMutt reply and :func:`mutt_style_reply` must share.

    The header names in order, their decoded values and the raw body; for Date and
    Message-ID, whose values differ between any two replies, whether they have NeoMutt's form.
    """
    message = _parse(raw)
    date = str(message.get("Date", ""))
    message_id = str(message.get("Message-ID", ""))
    return {
        "headers": [name for name, _ in message.items()],
        "values": {name: str(value) for name, value in message.items() if name not in ("Date", "Message-ID")},
        "date_format": bool(_DATE_HEADER.fullmatch(date)),
        "message_id_format": bool(_MESSAGE_ID.fullmatch(message_id)),
        "body": raw.replace(b"\r\n", b"\n").partition(b"\n\n")[2],
    }
