"""Mail about a case: staff notifications and alerts, replies to staff, relays and letters to the
customer, each rendered from its template and queued in the outbox.

It runs inside the caller's transaction, like everything the staff desk does.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from worker.adapters import repository as repo
from worker.adapters.db_models import Case, InboundMessage, Outbox, Timer
from worker.adapters.templates import Rendered, TemplateRenderer
from worker.config import Config, MailboxConfig
from worker.core.attachments import NO_ATTACHMENTS, extract_attachments, select_attachments
from worker.core.commands import usage_text
from worker.core.letters import letter_context, local_datetime_text
from worker.core.message import ParsedMessage
from worker.core.quotes import extract_reply
from worker.core.rules import ProviderRules
from worker.services.outbox import queue_email

NOTIFICATION = "staff-notification"

# The six nearest pending deadlines of a case, for the case summary in staff mail.
_NEXT_DEADLINES = (select(Timer.obligation_id, Timer.kind, Timer.due_at)
                   .where(Timer.case_id == bindparam("case_id"), Timer.status == "pending")
                   .order_by(Timer.due_at).limit(6))


def notification_ids(session: Session, case_id: int) -> set[str]:
    """Message-IDs of the staff notifications sent about a case: a reply to one proves staff."""
    return set(session.scalars(select(Outbox.message_id).where(
        Outbox.case_id == case_id, Outbox.purpose == NOTIFICATION)))


def new_text(msg: ParsedMessage) -> str:
    """What the sender wrote this time, without the history they quoted."""
    return _reply_text(msg.text, msg.html if msg.text_from_html else None)


@lru_cache(maxsize=4)
def _reply_text(text: str, html: str | None) -> str:
    # Asked twice for a customer's message (what they ask for, then the staff notification).
    return extract_reply(text, html=html).text


def sample_staff_context(rules: ProviderRules) -> dict[str, Any]:
    """Every value the staff templates may use, for the start-up render check."""
    return {
        "reference": f"{rules.reference_prefix}-2026-000001",
        "provider": {"id": rules.id, "name": rules.name,
                     "complaints_address": rules.complaints_address},
        "case": {"status": "open", "subject": "Sample complaint", "customer": "c@example.com",
                 "stage": "1", "first_raised_local": "Monday 5 January 2026 at 10:00",
                 "assignee": ""},
        "deadlines": [{"rule": "sample", "kind": "due",
                       "due_local": "Tuesday 6 January 2026 at 10:00"}],
        "first": True, "sender": "c@example.com", "sender_name": "Sample",
        "received_local": "Monday 5 January 2026 at 10:00", "text": "Sample text.",
        "attachments": ["sample.pdf"], "warnings": ["sample warning"], "commands": usage_text(),
        "effects": ["#resolved: case resolved"], "relayed": True, "errors": ["sample error"],
        "obligation": {"id": "sample", "quote": "Sample quote.", "severity": "commitment",
                       "due_local": "Tuesday 6 January 2026 at 10:00"},
        "stage_owner": "Team Leader (team-leader)",
        "alert": {"title": "sample alert", "detail": "Sample detail."},
    }


@dataclass(slots=True)
class CaseMail:
    renderer: TemplateRenderer
    config: Config

    def notify(self, session: Session, case: Case, rules: ProviderRules, mailbox: MailboxConfig,
               row: InboundMessage, msg: ParsedMessage, *, first: bool, now: datetime,
               warnings: list[str]) -> None:
        """Forward a customer message to the mailbox's notify addresses with the case summary."""
        if not mailbox.notify:
            repo.add_event(session, case.id, "staff_not_notified", at=now,
                           inbound_message_id=row.id,
                           detail={"reason": "the mailbox has no notify addresses"})
            return
        # Parsing the message again for its files is only worth it when it has some.
        attached = select_attachments(row.raw) if msg.attachments else NO_ATTACHMENTS
        left_out = attached.warning()
        context = self.case_context(session, case, rules)
        context.update({
            "first": first,
            "sender": msg.from_address or "",
            "sender_name": msg.from_name,
            "received_local": local_datetime_text(row.received_at, rules.timezone),
            "text": new_text(msg) if not first else msg.text.strip(),
            "attachments": [a.filename for a in msg.attachments],
            "warnings": [*warnings, left_out] if left_out else warnings,
            "commands": usage_text(),
        })
        rendered = self.renderer.render(rules.id, "staff_notification", context)
        queue_email(
            session, case=case, mailbox=mailbox.name, purpose=NOTIFICATION,
            idempotency_key=f"notify:{case.reference}:{row.id}", from_name=rules.name,
            from_address=mailbox.address, envelope_from=self.config.smtp.envelope_from,
            to=list(mailbox.notify), rendered=rendered, now=now, attachments=attached.files,
        )

    def case_context(self, session: Session, case: Case, rules: ProviderRules) -> dict[str, Any]:
        stage = rules.stage(case.stage)
        timers = repo.run(session, _NEXT_DEADLINES, {"case_id": case.id})
        return {
            "reference": case.reference,
            "provider": {"id": rules.id, "name": rules.name,
                         "complaints_address": rules.complaints_address},
            "case": {
                "status": case.status, "subject": case.subject,
                "customer": case.customer_address,
                "stage": f"{case.stage} ({stage.name})" if stage else str(case.stage),
                "first_raised_local": local_datetime_text(case.first_raised_at, rules.timezone),
                "assignee": case.assignee or "",
            },
            "deadlines": [
                {"rule": t.obligation_id, "kind": t.kind,
                 "due_local": local_datetime_text(t.due_at, rules.timezone)} for t in timers],
        }

    def customer_thread(self, session: Session, case: Case) -> tuple[str | None, list[str]]:
        ids = [mid for mid in session.scalars(select(InboundMessage.message_id).where(
            InboundMessage.case_id == case.id, InboundMessage.kind == "human",
            InboundMessage.sender == case.customer_address)
            .order_by(InboundMessage.received_at, InboundMessage.id)) if mid is not None]
        return (ids[-1] if ids else None), ids

    def customer_address(self, case: Case) -> str:
        reply_to = [p.address for p in case.parties if p.role == "reply-to"]
        return reply_to[0] if reply_to else case.customer_address

    def relay(self, session: Session, case: Case, rules: ProviderRules, mailbox: MailboxConfig,
               row: InboundMessage, body: str, now: datetime) -> Outbox:
        in_reply_to, thread = self.customer_thread(session, case)
        text = body.strip() + "\n"
        rendered = Rendered(
            subject=f"Re: {case.subject}", text=text,
            html=f'<div style="white-space: pre-wrap">{html.escape(text)}</div>')
        return queue_email(
            session, case=case, mailbox=mailbox.name, purpose="relay",
            idempotency_key=f"relay:{case.reference}:{row.id}", from_name=rules.name,
            from_address=mailbox.address, envelope_from=self.config.smtp.envelope_from,
            to=[self.customer_address(case)], rendered=rendered, now=now,
            in_reply_to=in_reply_to, references=thread, auto_submitted=False,
            attachments=extract_attachments(row.raw),
        )

    def letter(self, session: Session, case: Case, rules: ProviderRules, mailbox: MailboxConfig,
               *, template: str, purpose: str, key: str, now: datetime,
               reopen_until: datetime | None = None, limited: bool = False) -> Outbox:
        """A templated letter to the customer, threaded into their conversation.

        A letter that cannot go (the address bounced, or `limited` and over the rate limit)
        is kept as suppressed, and the stage owner is alerted with the reason.
        """
        # The complaint was received when its first message reached the mailbox (INTERNALDATE),
        # not when a pass happened to store it.
        received_at = session.scalar(select(func.min(InboundMessage.received_at)).where(
            InboundMessage.case_id == case.id)) or case.first_raised_at
        context = letter_context(
            rules=rules, reference=case.reference, customer_name=case.customer_name,
            customer_address=self.customer_address(case), subject=case.subject,
            received_at=received_at, first_raised_at=case.first_raised_at, sent_at=now,
            reopen_until=reopen_until)
        rendered = self.renderer.render(rules.id, template, context)
        in_reply_to, thread = self.customer_thread(session, case)
        row = queue_email(
            session, case=case, mailbox=mailbox.name, purpose=purpose, idempotency_key=key,
            from_name=rules.name, from_address=mailbox.address,
            envelope_from=self.config.smtp.envelope_from, to=[self.customer_address(case)],
            rendered=rendered, now=now, in_reply_to=in_reply_to, references=thread,
            limits=self.config.worker if limited else None)
        if row.status == "suppressed":
            stage = rules.stage(case.stage)
            self.to_roles(
                session, case, rules, mailbox, roles=[stage.owner] if stage else [],
                template="alert", purpose="alert", now=now, key=f"alert:{key}",
                extra={"alert": {"title": f"{purpose} not sent to the customer",
                                 "detail": f"{row.last_error}. It is kept on the case; send it "
                                           "another way if the customer must have it."}})
        return row

    def to_roles(self, session: Session, case: Case, rules: ProviderRules,
                 mailbox: MailboxConfig, *, roles: list[str], template: str, purpose: str,
                 key: str, now: datetime, extra: dict[str, Any]) -> None:
        """Staff mail to whoever holds `roles` (the notify addresses when nobody does)."""
        addresses = list(dict.fromkeys(a for r in roles for a in mailbox.roles.get(r, ())))
        addresses = addresses or list(mailbox.notify)
        if not addresses:
            repo.add_event(session, case.id, "staff_not_notified", at=now,
                           detail={"reason": f"nobody holds {', '.join(roles)} and the mailbox "
                                             "has no notify addresses", "purpose": purpose})
            return
        self.staff_mail(session, case, rules, mailbox, to=addresses, template=template,
                         purpose=purpose, key=key, now=now, extra=extra)

    def staff_mail(self, session: Session, case: Case, rules: ProviderRules,
                    mailbox: MailboxConfig, *, to: list[str], template: str, purpose: str,
                    key: str, now: datetime, extra: dict[str, Any],
                    answering: str | None = None) -> None:
        """A staff template with the case summary, optionally threaded under `answering`."""
        context = self.case_context(session, case, rules) | extra
        rendered = self.renderer.render(rules.id, template, context)
        queue_email(session, case=case, mailbox=mailbox.name, purpose=purpose,
                    idempotency_key=key, from_name=rules.name, from_address=mailbox.address,
                    envelope_from=self.config.smtp.envelope_from, to=to, rendered=rendered,
                    now=now, in_reply_to=answering, references=[answering] if answering else [])

    def to_staff(self, session: Session, case: Case, rules: ProviderRules, mailbox: MailboxConfig,
                  row: InboundMessage, staff: str, template: str, now: datetime,
                  extra: dict[str, Any]) -> None:
        purpose = "error" if template == "command_error" else "confirmation"
        self.staff_mail(session, case, rules, mailbox, to=[staff], template=template,
                         purpose=purpose, key=f"{purpose}:{case.reference}:{row.id}", now=now,
                         extra=extra, answering=row.message_id)
