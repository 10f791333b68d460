"""Reading a bounce: which of our recipients it is about, whether the failure is permanent, and
whether it only warns of a delay (a soft bounce: the message is still queued and retried)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from worker.core.message import ParsedMessage

# A bounce says what went wrong at once: only the start of its text is read.
_NOTICE_WINDOW = 4_000

_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w.-]+\.[a-z]{2,}", re.IGNORECASE)
# RFC 3463 enhanced status codes of the failure classes: 4.x.x transient, 5.x.x permanent
# (2.x.x means success, and "2.1.5" in a bounce is as likely a software version).
_ENHANCED = re.compile(r"(?<![\d.])([45])\.\d{1,3}\.\d{1,3}(?![\d.])")
# RFC 5321 reply codes (4yz transient, 5yz permanent) where transcripts and DSNs put them:
# not inside a number, an address, a time or a path.
_SMTP_REPLY = re.compile(r"(?<![\w.:/#@-])([45])[0-5]\d(?=[ -]|$)", re.MULTILINE)
_ACTION_LINE = re.compile(r"^[ \t]*action[ \t]*:[ \t]*([a-z]+)", re.IGNORECASE | re.MULTILINE)
# Where a non-MIME bounce starts copying the returned message: nothing below is the MTA's word.
_ORIGINAL_FOLLOWS = re.compile(
    r"^[ \t]*(?:-{2,}[ \t]*)?(?:"
    r"below this line is a copy of the message|this is a copy of the message|"
    r"(?:the )?original message (?:follows|headers? follows?)|"
    r"(?:the )?(?:original )?message headers? follows?|"
    r"(?:undelivered|returned) message follows|"
    r"the first \d+ lines of your (?:original )?message follow|"
    r"-*[ \t]*(?:original|returned|undelivered) message[ \t]*-{2,}|"
    r"received:[ \t]+from |return-path:[ \t]*<)",
    re.IGNORECASE | re.MULTILINE,
)
# Non-standard reports that only warn of a delay: the message is still queued, nothing failed yet.
_DELAY_SUBJECT = re.compile(
    r"\(delay\)|\bdelayed\b|warning: could not send|warning--could not send|still being retried|"
    r"delivery warning|not yet been delivered",
    re.IGNORECASE,
)
_DELAY_BODY = re.compile(
    r"this is a warning (?:message )?only|you do not need to resend your message|"
    r"has not yet been delivered|message will be retried|will be retried (?:for|until)|"
    r"delivery attempts will continue|will continue to try to deliver|"
    r"(?:has|have) been postponed|\bdeliverydelay\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class BounceReport:
    recipients: tuple[str, ...]
    permanent: bool
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class _Recipient:
    """One per-recipient field group of a DSN (RFC 3464 section 2.3)."""

    addresses: tuple[str, ...]
    action: str
    status: str
    diagnostic: str


def dsn_actions(msg: ParsedMessage) -> list[str]:
    """Each recipient's Action in a DSN, normalised ("failure" -> "failed").

    When the report part was unreadable (broken boundary, wrong type), the fields are read from
    the text instead, where a broken DSN ends up.
    """
    actions = [_action(v) for n, v in msg.report_fields if n == "action"]
    if not actions and msg.content_type == "multipart/report":
        actions = [_action(a) for a in _ACTION_LINE.findall(msg.text[:_NOTICE_WINDOW * 4])]
    return actions


# A line that is just an address, maybe in <>, maybe followed by ":" (qmail) or a short note.
_LISTED_ADDRESS = re.compile(r"<?([^\s<>@:]+@[^\s<>@:]+\.[a-z]{2,})>?:?(?:\s|$)", re.IGNORECASE)
_SYSTEM_LOCAL_PART = re.compile(r"(?:mailer-daemon|postmaster|double-bounce)@", re.IGNORECASE)


def delay_warning(msg: ParsedMessage) -> str | None:
    """Why `msg` is only a delay warning (a soft bounce), or None if it reports a failure."""
    actions = dsn_actions(msg)
    if actions:
        return "Action: delayed" if "delayed" in actions and "failed" not in actions else None
    if msg.header("x-failed-recipients") is not None:
        return None
    hit = _DELAY_SUBJECT.search(msg.subject) or _DELAY_BODY.search(notice_text(msg))
    return hit.group(0)[:60] if hit else None


def notice_text(msg: ParsedMessage) -> str:
    """The bounce's own words: the start of the text, up to where it copies the returned
    message, without quoted lines."""
    window = msg.text[:_NOTICE_WINDOW]
    cut = _ORIGINAL_FOLLOWS.search(window)
    if cut:
        window = window[: cut.start()]
    return "\n".join(line for line in window.splitlines() if not line.lstrip().startswith(">"))


def analyse_bounce(msg: ParsedMessage) -> BounceReport:
    """Read a DSN's per-recipient fields, or a non-standard bounce's wording.

    Only the recipients that failed count (those delayed if none failed). Permanent when a
    failed recipient's status is 5.x.x (or its diagnostic an SMTP 5xx), temporary for 4.x.x and
    for a report that only warns of a delay; a failure notice that gives no code at all is
    taken as permanent, since it says delivery failed.
    """
    groups = _recipients(msg)
    failed = [g for g in groups if g.action == "failed"]
    delayed = [g for g in groups if g.action == "delayed"]
    chosen = failed or delayed or groups
    recipients = [a for g in chosen for a in g.addresses]
    for value in msg.header_values("x-failed-recipients"):
        recipients += [a.lower() for a in _ADDRESS.findall(value)]
    if not recipients:
        recipients = [a.lower() for name, value in msg.enclosed_headers if name == "to"
                      for a in _ADDRESS.findall(value)]
    if not recipients:
        recipients = _named_in_notice(msg)

    delay = delay_warning(msg)
    classes = {c for g in chosen if (c := _status_class(g))}
    reason = next((g.diagnostic or g.status for g in chosen if g.diagnostic or g.status), "")
    if not classes:
        text = notice_text(msg)
        codes = list(_ENHANCED.finditer(text)) or list(_SMTP_REPLY.finditer(text))
        classes = {m.group(1) for m in codes}
        if codes and not reason:
            # The line that decides: the first permanent code, if any.
            code = next((m for m in codes if m.group(1) == "5"), codes[0])
            reason = _line_at(text, code.start())
    permanent = delay is None and ("5" in classes or not classes)
    reason = reason or ("delivery delayed" if delay else "delivery failed")
    return BounceReport(recipients=tuple(dict.fromkeys(recipients)), permanent=permanent,
                        reason=" ".join(reason.split())[:300])


def _named_in_notice(msg: ParsedMessage) -> list[str]:
    """Addresses a non-standard notice names as failed, as qmail ("<a@b>:") and Exim (an
    indented address line) write them; never the notice's own sender or recipients."""
    own = {a for a in (msg.from_address, *msg.to, *msg.cc) if a}
    found: list[str] = []
    for line in notice_text(msg).splitlines():
        stripped = line.strip()
        match = _LISTED_ADDRESS.match(stripped)
        if match and (stripped.startswith("<") or line[:1].isspace()):
            address = match.group(1).lower()
            if address not in own and not _SYSTEM_LOCAL_PART.match(address):
                found.append(address)
    return found


def _action(value: str) -> str:
    token = value.strip().split(None, 1)[0].lower() if value.strip() else ""
    return "failed" if token.startswith("fail") else token


def _recipients(msg: ParsedMessage) -> list[_Recipient]:
    """The DSN's per-recipient groups (fields flattened in order): a recipient field seen again
    starts the next group, whichever of Original- and Final-Recipient comes first."""
    groups: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for name, value in msg.report_fields:
        if name in ("final-recipient", "original-recipient") and name in current:
            groups.append(current)
            current = {}
        current.setdefault(name, value)
    groups.append(current)
    return [
        _Recipient(
            addresses=tuple(dict.fromkeys(
                a.lower() for key in ("final-recipient", "original-recipient")
                for a in _ADDRESS.findall(group.get(key, "")))),
            action=_action(group.get("action", "")),
            status=group.get("status", "").strip(),
            diagnostic=group.get("diagnostic-code", "").strip(),
        )
        for group in groups if {"final-recipient", "original-recipient"} & group.keys()
    ]


def _status_class(group: _Recipient) -> str | None:
    """"4" or "5" from the Status field, else from the Diagnostic-Code's codes."""
    for text in (group.status, group.diagnostic):
        match = _ENHANCED.search(text) or _SMTP_REPLY.search(text)
        if match:
            return match.group(1)
    return None


def _line_at(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text[start: end if end >= 0 else len(text)].strip()
