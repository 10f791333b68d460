"""What kind of mail a parsed message is, and the evidence for it (pure rules, no I/O).

Order of the checks, first match wins:

1. `problem` set -> UNPARSEABLE, unless a machine-readable report can still be read (a DSN
   whose From line was lost is still a DSN).
2. Our own mail coming back (our purpose header, or From one of our mailboxes) -> OWN_MAIL.
3. Challenge-response systems ("confirm you are human before I accept your mail") -> AUTO_REPLY:
   some wrap their challenge in a DSN, so they are recognised before reports.
4. Machine-readable reports: multipart/report or a report part (delivery-status by its Action
   fields, read receipts, ARF feedback) and a few vendor report formats.
5. Bounces: X-Failed-Recipients, a MAILER-DAEMON/postmaster sender, or a bounce subject or body
   backed by a second sign of automation (null sender, Auto-Submitted, an enclosed original).
   Bounces also carry Auto-Submitted, so they are recognised before auto-replies. A report that
   only warns of a delay (Action: delayed, "THIS IS A WARNING MESSAGE ONLY") is a soft BOUNCE:
   analyse_bounce reports it as not permanent.
6. Auto-replies: RFC 3834 Auto-Submitted, vendor auto-reply headers, auto-reply subjects, and
   null-sender mail with Precedence bulk/junk (the classic vacation(1) auto-responder).
7. Any other null-sender mail -> BOUNCE (DSNs and MDNs are the only mail sent with `<>`, and
   RFC 3834 auto-replies were recognised just above).
8. Bulk: Precedence bulk/junk/list, List-* headers, spam flags, notification-platform headers.
9. Otherwise HUMAN.

The rules lean towards "automated" when evidence is explicit, and never treat a message as
automated because of its *quoted* content: a customer who forwards a bounce to us is a human.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable

from worker.core.bounces import delay_warning, dsn_actions
from worker.core.message import Classification, MessageKind, ParsedMessage

# Only the start of a body is read for bounce wording: a DSN says so at once.
_BODY_WINDOW = 4_000

_PURPOSE_HEADER = "x-complaints-worker-purpose"

_DSN_TYPES = frozenset({"delivery-status", "global-delivery-status"})
_MDN_TYPES = frozenset({"disposition-notification", "global-disposition-notification"})
# Amazon SES event notifications delivered by SNS as a JSON mail body.
_SES_NOTIFICATION = re.compile(r'\\?"(?:notificationType|eventType)\\?"\s*:\s*\\?"([A-Za-z]+)')
_SES_KINDS = {
    "bounce": MessageKind.BOUNCE,
    "complaint": MessageKind.FEEDBACK_REPORT,
    "delivery": MessageKind.DELIVERY_REPORT,
    "deliverydelay": MessageKind.BOUNCE,  # a soft bounce, like a DSN with Action: delayed
}

# Local parts of mail systems, never people ("postmaster", "MAILER-DAEMON", "Mail.Delivery.System").
_DAEMON_LOCAL_PART = re.compile(
    r"^(?:mailer[-_]?daemon|mail[-_]?daemon|post[-_]?master|mail[-_.]delivery[-_.](?:sub)?system)"
    r"(?![a-z0-9])",
    re.IGNORECASE,
)
# Display names of mail systems (From: "Mail Delivery Subsystem" <...>, From: MAILER-DAEMON <>).
_DAEMON_NAME = re.compile(
    r"\b(?:mailer[-_ ]?daemon|mail[-_ ]daemon|mail delivery (?:sub)?system|"
    r"mail delivery service|postmaster)\b",
    re.IGNORECASE,
)

# Subject wording that says "delivery failed". Alone it counts only at the start (after an
# optional "[tag]"), so a customer's "Fwd: Undeliverable: ..." or "Re: returned mail" never
# matches; anywhere in a subject that is not a forward, it backs up bounce wording in the body
# (gateways reply "RE: <subject> : non remis (delivery failed)").
_BOUNCE_SUBJECT_WORDS = (
    r"mail delivery failed|mail delivery failure|delivery failure|delivery failed|"
    r"(?:mail )?delivery status notification|delivery notification|"
    r"undeliver(?:able|ed)\b|undelivered mail|returned mail|"
    r"failure notice|failure delivery|permanent delivery failure|"
    r"message delivery has failed|mail system error|non[- ]?deliver(?:y|able)|"
    r"delayed mail|warning: could not send|warning: message .{0,80} delayed|"
    r"warning--could not send|could not send message|"
    r"mail could not be delivered|message could not be delivered|message not delivered|"
    r"email delivery failure|there was an error sending your mail|mail failure|"
    r"mail delivery warning|delivery warning|"
    r"delivery (?:status )?report|"
    # Localised Exchange and provider wording (de, fr, it, es, nl, sv, da, no, pl, pt, ru, ja).
    r"unzustellbar|nicht zustellbar|non remis|non distribuable|non recapitabile|"
    r"no se puede entregar|onbestelbaar|kan niet worden bezorgd|olevererbart|"
    r"kan ikke leveres|ikke levert|nie można dostarczyć|não é possível entregar|"
    r"ваше сообщение не доставлено|не доставлено|配信不能|メールエラー通知|"
    r"undeliverable message"
)
_BOUNCE_SUBJECT = re.compile(
    rf"^(?:\[[^\]]{{1,40}}\]\s*)?(?:{_BOUNCE_SUBJECT_WORDS})", re.IGNORECASE)
_BOUNCE_SUBJECT_ANYWHERE = re.compile(_BOUNCE_SUBJECT_WORDS, re.IGNORECASE)
_FORWARD_SUBJECT = re.compile(r"^\s*(?:fwd?|wg|tr|rv|doorst|vs)\s*:", re.IGNORECASE)
# Opening wording of the common non-standard bounces (qmail, Exim, Postfix, Sendmail, Exchange,
# Gmail, Yahoo, Notes, ...), looked for in the unquoted start of the body.
_BOUNCE_BODY = re.compile(
    r"this is the qmail-send program|"
    r"this message was created automatically by mail delivery software|"
    r"this is the mail system at host|"
    r"i'm sorry to have to inform you that your message could not|"
    r"i'm afraid i wasn't able to deliver|"
    r"unable to deliver (?:your|the) message|"
    r"could not be delivered to one or more recipients|"
    r"your message did not reach some or all of the intended recipients|"
    r"delivery to the following recipients? (?:has )?failed|"
    r"delivery has failed to these recipients|"
    r"this is an automatically generated delivery status notification|"
    r"the following addresses had (?:permanent fatal errors|delivery problems)|"
    r"-+ ?transcript of session follows ?-+|"
    r"the original message was received at|"
    r"your message (?:could not|cannot|can ?not|wasn't|was not) (?:be )?delivered|"
    r"message could not be delivered|"
    r"there was an error delivering your mail|"
    r"did not reach the following recipient|"
    r"sorry, we were unable to deliver your message|"
    r"permanent error\. the following address|"
    r"a message that you sent could not be delivered|"
    r"delivery to this address has been suspended|"
    r"could not deliver (?:the )?message to the following recipient|"
    r"could not be delivered to the following (?:recipient|user|address)|"
    r"-{3,} ?failed recipients ?-{3,}|"
    r"delivery of email to this address .{0,80}has been postponed|"
    r"(?:is|'s) not a valid (?:user|recipient|mailbox)\b|"
    r"votre message n'a pas pu [eê]tre (?:d[eé]livr[eé]|remis|distribu[eé])",
)  # Matched against lower-cased text: four times faster than IGNORECASE on this alternation.
# Where forwarded or quoted content starts: nothing below it says who wrote *this* message.
_FORWARD_MARKER = re.compile(
    r"^\s*(?:-{2,}\s*(?:forwarded|original) message|begin forwarded message|"
    r"-{2,}\s*weitergeleitete nachricht|-{2,}\s*message transféré|"
    r"on .{0,200} wrote:\s*$)",
    re.IGNORECASE | re.MULTILINE,
)

# Auto-reply subject prefixes: Exchange/Outlook in many languages, Gmail, Apple, Zimbra, Lotus
# Notes ("AUTO:"), ... Each must be followed by a colon, a closing "]" or the end of the
# subject, because customers write subjects like "Automatic renewal ..." or "Out of office hours
# charge". Matched on the subject as written and with its accents removed, so that a mailer that
# drops them ("Arpus biroja automatiska atbilde") is recognised too.
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\[?(?:"
    r"auto(?:matic)?[ -]?(?:reply|response|answer)|autoreply|autoresponse|auto|"
    r"out of (?:the )?office(?:\s*(?:auto ?reply|reply|notice))?|vacation reply|"
    r"abwesenheitsnotiz|automatische antwort|abwesend|"
    r"reponse automatique|absence du bureau|risposta automatica|respuesta automatica|"
    r"resposta automatica|automatisch antwoord|"
    r"autosvar|automatisk svar|automaattinen vastaus|automatyczna odpowiedz|"
    r"automaticka odpoved|automatski odgovor|samodejni odgovor|automatikus valasz|"
    r"raspuns automat|otomatik yan[ıi]t|automaatne vastus|automatinis atsakymas|"
    r"(?:arpus biroja (?:atrasanas )?)?automatiska atbilde|"
    r"автоматический ответ|автоматичен отговор|автоматична відповідь|αυτοματη απαντηση|"
    r"自動応答|自动回复|自動回覆|자동 회신"
    r")\s*(?:[:：\]]|$)",
    re.IGNORECASE,
)
# Header fields whose mere presence marks an auto-responder.
_AUTO_REPLY_HEADERS = (
    "x-autoreply", "x-autorespond", "x-autoresponder", "x-autoreply-from",
    "x-mail-autoreply", "x-auto-reply", "x-autogenerated", "x-vacation",
    "x-ms-exchange-inbox-rules-loop", "x-ms-exchange-generated-message-source",
    "x-auto-response-suppress", "x-fc-machinegenerated",
)
# Challenge-response systems hold mail from unknown senders until the sender proves to be a
# person (clicks a link, replies to a code): their notices are automated and are never answered.
# Header fields of the known systems (as listed by SpamAssassin's 20_vbounce.cf), by product.
# (Barracuda's "**Message you sent blocked by our bulk email filter**", which that list also
# names, is a real DSN with Action: failed, 5.7.1: a bounce, see sisimai lhost-barracuda-02.)
_CHALLENGE_HEADERS = {
    "x-bluebottle-request": "Bluebottle", "x-boxtrapper": "cPanel BoxTrapper",
    "x-spamarrest-noauth": "Spam Arrest", "x-choicemail-registration-request": "ChoiceMail",
    "x-askversion": "ASK (Active Spam Killer)", "x-spamazoid-md": "Spamazoid",
    "spamlion": "SpamLion", "x-exispam": "ExiSpam",
}
# Services that send nothing but challenge-response notices (From, Sender or Return-Path).
_CHALLENGE_DOMAINS = {"boxbe.com": "Boxbe", "spamarrest.com": "Spam Arrest", "0spam.com": "0Spam"}
_CHALLENGE_SUBJECT = re.compile(
    r"^(?:re:\s*)?(?:your email requires verification|please verify your e-?mail address|"
    r"unverified email to )|\[qurb #\d+\]\s*$",
    re.IGNORECASE,
)
# Wording of a challenge. A customer may write these words too, so they count only with a second
# sign that a machine sent the message (null sender, Auto-Submitted, Precedence, ...).
_CHALLENGE_BODY = re.compile(
    r"\b(?:verify|confirm|prove) (?:that )?you are (?:a )?(?:human|real person|not a (?:robot|spammer))|"
    r"\badded to (?:my|the recipient's|the) (?:allowed|approved|accepted|safe|guest) (?:senders? )?list|"
    r"\bsender not pre-approved|\bchallenge[- /]response\b|"
    r"\bthis (?:account|mailbox|e-?mail address) is protected by\b",
    re.IGNORECASE,
)
# Header fields whose presence marks list or bulk mail.
_LIST_HEADERS = (
    "list-id", "list-unsubscribe", "list-post", "list-help", "list-subscribe", "mailing-list",
    "x-mailing-list", "x-ml-name", "x-mlserver",
)
_BULK_HEADERS = (
    "x-facebook-notify", "x-linkedin-class", "x-campaign", "x-campaignid", "x-mc-user",
    "x-mailchimp-campaign", "x-sfmc-stack",
)


def classify(msg: ParsedMessage, *, own_addresses: frozenset[str]) -> Classification:
    """Decide what kind of mail `msg` is; `own_addresses` are our mailboxes (lower-case)."""
    if msg.problem:
        # A report whose fields could be read is still a report (a DSN that lost its From line).
        found = _report(msg) if msg.report_fields else None
        if found is None:
            return Classification(kind=MessageKind.UNPARSEABLE, reasons=(f"problem: {msg.problem}",))
        return Classification(kind=found.kind, reasons=(*found.reasons, f"despite: {msg.problem}"))
    found = _own_mail(msg, own_addresses)
    if found is not None:
        return found
    for rule in _RULES:
        found = rule(msg)
        if found is not None:
            return found
    return Classification(kind=MessageKind.HUMAN)


# --------------------------------------------------------------------------- helpers


def _first_token(value: str) -> str:
    return value.strip().split(";", 1)[0].split(None, 1)[0].lower() if value.strip() else ""


def _local_part(address: str | None) -> str:
    return address.rsplit("@", 1)[0].strip('"').lower() if address else ""


def _is_daemon_address(address: str | None) -> bool:
    return bool(_DAEMON_LOCAL_PART.match(_local_part(address)))


def _null_sender_signs(msg: ParsedMessage) -> list[str]:
    """Evidence of the null sender `<>`, used only by DSNs, MDNs and RFC 3834 auto-replies."""
    if msg.return_path == "":
        return ["Return-Path: <>"]
    if _null_from(msg):
        return ["From: <> (null sender)"]
    return []


def _null_from(msg: ParsedMessage) -> bool:
    return msg.from_address is None and any(
        re.search(r"<\s*>", value) for value in msg.header_values("from")
    )


def _daemon_sender(msg: ParsedMessage) -> str | None:
    """Evidence that the sender is a mail system rather than a person."""
    if _is_daemon_address(msg.from_address):
        return f"From: {msg.from_address}"
    if _is_daemon_address(msg.sender_address):
        return f"Sender: {msg.sender_address}"
    if msg.return_path and _is_daemon_address(msg.return_path):
        return f"Return-Path: {msg.return_path}"
    for value in msg.header_values("from"):
        if _DAEMON_NAME.search(value) and (msg.from_address is None or "@" not in value
                                          or _DAEMON_NAME.search(value.split("<")[0])):
            return f"From: {value[:80]}"
    return None


def _precedence(msg: ParsedMessage) -> str:
    return _first_token(msg.header("precedence") or msg.header("x-precedence") or "")


def _fold(text: str) -> str:
    """`text` without accents ("Réponse" -> "Reponse"), for mailers that drop or mangle them."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _own_text(msg: ParsedMessage) -> str:
    """The start of the body that this sender wrote: no quoted lines, nothing forwarded."""
    window = msg.text[:_BODY_WINDOW]
    marker = _FORWARD_MARKER.search(window)
    if marker:
        window = window[: marker.start()]
    return "\n".join(line for line in window.splitlines() if not line.lstrip().startswith(">"))


def _header_present(msg: ParsedMessage, names: Iterable[str]) -> list[str]:
    found: list[str] = []
    for name in names:
        value = msg.header(name)
        if value is not None:
            found.append(f"{_display_name(name)}: {value[:60]}".rstrip(": "))
    return found


def _display_name(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


# --------------------------------------------------------------------------- rules


def _own_mail(msg: ParsedMessage, own_addresses: frozenset[str]) -> Classification | None:
    purpose = msg.header(_PURPOSE_HEADER)
    if purpose is not None:
        return Classification(
            kind=MessageKind.OWN_MAIL, reasons=(f"X-Complaints-Worker-Purpose: {purpose[:60]}",)
        )
    if msg.from_address and msg.from_address.lower() in own_addresses:
        return Classification(
            kind=MessageKind.OWN_MAIL, reasons=(f"From is our own address {msg.from_address}",)
        )
    return None


def _challenge(msg: ParsedMessage) -> Classification | None:
    """A challenge-response system asking us to prove we are human: an auto-reply."""
    found = [f"{_display_name(name)} ({product})" for name, product in _CHALLENGE_HEADERS.items()
             if msg.header(name) is not None]
    agent = msg.header("x-delivery-agent") or ""
    if agent.lower().startswith("tmda") or (msg.message_id or "").endswith("-tmda-confirm>"):
        found.append("TMDA confirmation request")
    for address in (msg.from_address, msg.sender_address, msg.return_path):
        domain = address.rsplit("@", 1)[-1].lower() if address and "@" in address else ""
        product = next((p for d, p in _CHALLENGE_DOMAINS.items()
                        if domain == d or domain.endswith("." + d)), None)
        if product:
            found.append(f"sent by {product} ({address})")
            break
    if any(n == "diagnostic-code" and v.strip().lower().startswith("x-boxbe")
           for n, v in msg.report_fields):
        found.append("Diagnostic-Code: X-Boxbe-Notice (Boxbe)")
    if _CHALLENGE_SUBJECT.search(msg.subject):
        found.append(f"Subject: {msg.subject[:60]}")
    if not found:
        support = [*_null_sender_signs(msg), *filter(None, [_auto_submitted(msg)])]
        if _precedence(msg) in ("bulk", "junk", "auto_reply", "auto-reply"):
            support.append(f"Precedence: {_precedence(msg)}")
        support += _header_present(msg, _AUTO_REPLY_HEADERS)
        # The wording counts only with a sign of a machine, so without one it is not read.
        wording = _CHALLENGE_BODY.search(_own_text(msg)) if support else None
        if not (wording and support):
            return None
        found = [f"body: {wording.group(0)[:60]}", *support]
    return Classification(kind=MessageKind.AUTO_REPLY,
                          reasons=("challenge-response system", *found))


def _report(msg: ParsedMessage) -> Classification | None:
    """multipart/report (RFC 6522) and report parts found elsewhere in the message."""
    report_type = msg.report_type
    names = {name for name, _ in msg.report_fields}
    if msg.content_type == "multipart/report":
        label = f"multipart/report; report-type={report_type or '(none)'}"
    else:
        label = "report part in " + msg.content_type
    if report_type in _DSN_TYPES or (report_type is None and "action" in names):
        return _delivery_status(msg, label)
    if report_type in _MDN_TYPES or (report_type is None and "disposition" in names):
        disposition = next((v for n, v in msg.report_fields if n == "disposition"), "")
        reasons = [f"{label}; Disposition: {disposition[:60]}" if disposition else label]
        return Classification(kind=MessageKind.DELIVERY_REPORT, reasons=tuple(reasons))
    if report_type == "feedback-report" or "feedback-type" in names:
        feedback = next((v for n, v in msg.report_fields if n == "feedback-type"), "")
        reasons = [f"{label}; Feedback-Type: {feedback[:40]}" if feedback else label]
        return Classification(kind=MessageKind.FEEDBACK_REPORT, reasons=tuple(reasons))
    return None


def _delivery_status(msg: ParsedMessage, label: str) -> Classification:
    """A DSN: failed -> BOUNCE; delayed -> BOUNCE too (a soft one: analyse_bounce reports it
    as not permanent); delivered/relayed/expanded -> DELIVERY_REPORT."""
    actions = dsn_actions(msg)
    statuses = [_first_token(v) for n, v in msg.report_fields if n == "status"]
    if "failed" in actions:
        return Classification(kind=MessageKind.BOUNCE, reasons=(f"{label}; Action: failed",))
    if "delayed" in actions:
        return Classification(kind=MessageKind.BOUNCE, reasons=(
            f"{label}; Action: delayed", "delay warning only, a soft bounce"))
    if actions:
        return Classification(
            kind=MessageKind.DELIVERY_REPORT, reasons=(f"{label}; Action: {actions[0]}",)
        )
    if any(s.startswith(("4", "5")) for s in statuses):
        worst = "5" if any(s.startswith("5") for s in statuses) else "4"
        return Classification(kind=MessageKind.BOUNCE, reasons=(f"{label}; Status: {worst}.x.x",))
    if statuses:
        return Classification(
            kind=MessageKind.DELIVERY_REPORT, reasons=(f"{label}; Status: {statuses[0]}",)
        )
    # A DSN that says nothing about its recipients is, in practice, a failure report.
    return Classification(kind=MessageKind.BOUNCE, reasons=(f"{label}; no Action field",))


def _vendor_report(msg: ParsedMessage) -> Classification | None:
    """Provider report formats that are not RFC 6522 reports."""
    if any(name == "x-hmxmroriginalrecipient" for name, _ in msg.enclosed_headers):
        return Classification(
            kind=MessageKind.FEEDBACK_REPORT,
            reasons=("enclosed message has X-HmXmrOriginalRecipient (Microsoft JMRP complaint)",),
        )
    head = msg.text[:2_000].lstrip()
    if head.startswith("{"):
        match = _SES_NOTIFICATION.search(head)
        if match:
            kind = _SES_KINDS.get(match.group(1).lower())
            if kind is not None:
                return Classification(
                    kind=kind, reasons=(f"Amazon SES notification: {match.group(1)}",)
                )
    return None


def _auto_submitted(msg: ParsedMessage) -> str | None:
    value = msg.header("auto-submitted")
    if value is not None and _first_token(value) not in ("", "no"):
        return f"Auto-Submitted: {value[:60]}"
    return None


def _bounce(msg: ParsedMessage) -> Classification | None:
    strong: list[str] = []
    failed = msg.header("x-failed-recipients")
    if failed is not None:
        strong.append(f"X-Failed-Recipients: {failed[:60]}")
    daemon = _daemon_sender(msg)
    if daemon:
        strong.append(daemon)
    subject_hit = _BOUNCE_SUBJECT.search(msg.subject)
    # Bounce wording alone could be a customer's own words ("Delivery failure" of a router!):
    # without a strong sign it needs a second, independent sign that a machine sent this.
    support = _null_sender_signs(msg)
    auto = _auto_submitted(msg)
    if auto:
        support.append(auto)
    if msg.enclosed_headers:
        support.append("encloses the original message")
    subject_mentions = _BOUNCE_SUBJECT_ANYWHERE.search(msg.subject)
    if not (strong or subject_hit or support or subject_mentions):
        return None  # Wording in the body could only be the customer's: not read (most mail).
    body_hit = _bounce_wording(_own_text(msg))
    wording: list[str] = []
    if subject_hit:
        wording.append(f"Subject: {msg.subject[:60]}")
    if body_hit:
        wording.append(f"body: {body_hit[:60]}")
    if strong:
        return _failure_or_delay(msg, strong + wording)
    if not wording:
        return None
    if body_hit and (subject_hit or (subject_mentions
                                     and not _FORWARD_SUBJECT.match(msg.subject))):
        support.append("subject and body both report a delivery failure")
    if not support:
        return None
    return _failure_or_delay(msg, wording + support)


def _bounce_wording(text: str) -> str | None:
    """The bounce wording in `text`, as written there."""
    lowered = text.lower()
    hit = _BOUNCE_BODY.search(lowered)
    if hit is None:
        return None
    # lower() keeps the length of nearly all text; where it does not, quote it lower-cased.
    return text[hit.start():hit.end()] if len(lowered) == len(text) else hit.group(0)


def _failure_or_delay(msg: ParsedMessage, reasons: list[str]) -> Classification:
    """A bounce; one that only warns of a delay is still a bounce, a soft one."""
    delay = delay_warning(msg)
    if delay:
        reasons.append(f"delay warning only, a soft bounce: {delay}")
    return Classification(kind=MessageKind.BOUNCE, reasons=tuple(reasons))


def _auto_reply(msg: ParsedMessage) -> Classification | None:
    reasons: list[str] = []
    auto = _auto_submitted(msg)
    if auto:
        reasons.append(auto)
    for name in _AUTO_REPLY_HEADERS:
        value = msg.header(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            reasons.append(f"{_display_name(name)}: {value[:60]}".rstrip(": "))
    precedence = _precedence(msg)
    if precedence in ("auto_reply", "auto-reply", "autoreply"):
        reasons.append(f"Precedence: {precedence}")
    elif precedence in ("bulk", "junk") and _null_sender_signs(msg):
        # vacation(1) and its kin answer with a null sender and Precedence: bulk or junk.
        reasons.append(f"{_null_sender_signs(msg)[0]} with Precedence: {precedence}")
    apple = msg.header("x-apple-action")
    if apple is not None and "vacation" in apple.lower():
        reasons.append(f"X-Apple-Action: {apple[:40]}")
    post_class = msg.header("x-post-messageclass")
    if post_class is not None and "autorespond" in post_class.lower():
        reasons.append(f"X-POST-MessageClass: {post_class[:40]}")
    if any("autoresponder" in v.lower() for v in msg.header_values("delivered-to")):
        reasons.append("Delivered-To: Autoresponder")
    if _AUTO_REPLY_SUBJECT.search(msg.subject) or _AUTO_REPLY_SUBJECT.search(_fold(msg.subject)):
        reasons.append(f"Subject: {msg.subject[:60]}")
    if not reasons:
        return None
    return Classification(kind=MessageKind.AUTO_REPLY, reasons=tuple(reasons))


def _other_report(msg: ParsedMessage) -> Classification | None:
    if msg.content_type == "multipart/report":
        label = f"multipart/report; report-type={msg.report_type or '(none)'}"
        return Classification(kind=MessageKind.DELIVERY_REPORT, reasons=(label,))
    return None


def _bulk(msg: ParsedMessage) -> Classification | None:
    reasons: list[str] = []
    precedence = _first_token(msg.header("precedence") or "")
    if precedence in ("bulk", "junk", "list"):
        reasons.append(f"Precedence: {precedence}")
    reasons.extend(_header_present(msg, _LIST_HEADERS))
    spam_flag = msg.header("x-spam-flag")
    if spam_flag is not None and _first_token(spam_flag) == "yes":
        reasons.append("X-Spam-Flag: YES")
    spam_status = msg.header("x-spam-status")
    if spam_status is not None and _first_token(spam_status.replace(",", " ")) == "yes":
        reasons.append("X-Spam-Status: Yes")
    spam = msg.header("x-spam")
    if spam is not None and _first_token(spam) in ("yes", "true"):
        reasons.append("X-Spam: yes")
    reasons.extend(_header_present(msg, _BULK_HEADERS))
    if not reasons:
        return None
    return Classification(kind=MessageKind.BULK, reasons=tuple(reasons))


def _null_sender(msg: ParsedMessage) -> Classification | None:
    signs = _null_sender_signs(msg)
    return Classification(kind=MessageKind.BOUNCE, reasons=tuple(signs)) if signs else None


_RULES: tuple[Callable[[ParsedMessage], Classification | None], ...] = (
    _challenge,
    _report,
    _vendor_report,
    _bounce,
    _auto_reply,
    _null_sender,
    _other_report,
    _bulk,
)
