"""Poll one mailbox folder: each message is stored, classified, threaded and decided in one transaction.

Only after that transaction commits is the message moved or flagged on the server, so a crash
in between means a re-fetch, which the UID and Message-ID constraints turn into a no-op.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters import repository as repo
from worker.adapters.db import transaction
from worker.adapters.db_models import Case, InboundMessage, Outbox
from worker.adapters.imap import FetchedMessage, MailboxSource
from worker.adapters.templates import TemplateRenderer
from worker.config import Config, MailboxConfig
from worker.core.classify import classify
from worker.core.intake import Decision, JoinCase, OpenCase, Quarantine, decide_intake
from worker.core.letters import letter_context
from worker.core.message import Classification, MessageKind, ParsedMessage
from worker.core.parse import parse_message
from worker.core.references import references_in_subject, without_references
from worker.core.rules import ProviderRules
from worker.core.staff import check_staff
from worker.core.threading import candidate_ids, match_thread
from worker.services.outbox import queue_email
from worker.services.staff import StaffDesk, notification_ids
from worker.services.timers import Calendars, plan_new_case

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PollResult:
    mailbox: str
    fetched: int = 0
    cases_opened: int = 0
    joined: int = 0
    quarantined: int = 0
    duplicates: int = 0
    outcomes: list[str] = field(default_factory=list)


class IngestService:
    def __init__(
        self, *, sessions: sessionmaker[Session], providers: dict[str, ProviderRules],
        renderer: TemplateRenderer, config: Config, calendars: Calendars,
    ) -> None:
        self.sessions = sessions
        self.providers = providers
        self.calendars = calendars
        self.desk = StaffDesk(renderer=renderer, config=config, calendars=calendars)
        self.renderer = renderer
        self.config = config

    def poll(
        self, mailbox: MailboxConfig, source: MailboxSource, *, now: datetime,
        acknowledge: bool | None = None, should_stop: Callable[[], bool] = lambda: False,
    ) -> PollResult:
        """Fetch and process every new message. Raises MailboxError when the server fails."""
        result = PollResult(mailbox=mailbox.name)
        status = source.open()
        try:
            with transaction(self.sessions) as session:
                state = repo.mailbox_state(session, mailbox.name, mailbox.folder)
                if state.uidvalidity != status.uidvalidity:
                    if state.uidvalidity is not None:
                        log.warning("mailbox %s: UIDVALIDITY changed from %s to %s; rescanning "
                                    "(Message-ID dedupe prevents duplicates)", mailbox.name,
                                    state.uidvalidity, status.uidvalidity)
                    state.uidvalidity = status.uidvalidity
                    state.last_uid = 0
                last_uid = state.last_uid
            self._reconcile(mailbox, source, status.uidvalidity, last_uid)
            new = source.new_uids(last_uid)
            self._record_backlog(mailbox, len(new), now)
            ack = mailbox.acknowledge if acknowledge is None else acknowledge
            for start in range(0, len(new), mailbox.fetch_batch):
                if should_stop():
                    break
                batch = new[start:start + mailbox.fetch_batch]
                done: list[int] = []
                for fetched in source.fetch(batch, max_bytes=self.config.worker.max_message_bytes):
                    outcome = self._process(mailbox, status.uidvalidity, fetched, now=now,
                                            acknowledge=ack)
                    _count(result, outcome)
                    done.append(fetched.uid)
                source.mark_processed(done)
                self._record_backlog(mailbox, len(new) - start - len(batch), now)
        finally:
            source.close()
        return result

    def _reconcile(self, mailbox: MailboxConfig, source: MailboxSource, uidvalidity: int,
                   last_uid: int) -> None:
        """Flag or move messages committed before a crash that stopped us marking them."""
        pending = source.unmarked_uids(last_uid)
        if not pending:
            return
        with self.sessions() as session:
            stored = repo.stored_uids(session, mailbox.name, mailbox.folder, uidvalidity, pending)
        if stored:
            log.info("mailbox %s: marking %d message(s) stored before an interruption",
                     mailbox.name, len(stored))
            source.mark_processed(sorted(stored))

    def _record_backlog(self, mailbox: MailboxConfig, backlog: int, now: datetime) -> None:
        with transaction(self.sessions) as session:
            state = repo.mailbox_state(session, mailbox.name, mailbox.folder)
            state.backlog = max(backlog, 0)
            state.last_poll_at = now

    def _process(self, mailbox: MailboxConfig, uidvalidity: int, fetched: FetchedMessage, *,
                 now: datetime, acknowledge: bool) -> str:
        """One message, one transaction. A bug on one message quarantines it; the loop goes on."""
        for attempt in (1, 2):
            try:
                with transaction(self.sessions) as session:
                    return self._ingest(session, mailbox, uidvalidity, fetched, now=now,
                                        acknowledge=acknowledge)
            except IntegrityError as exc:
                # Another worker stored the same message first; the second try sees it. A
                # conflict that persists is a bug in handling this message: quarantine it.
                if attempt == 1:
                    continue
                failure: Exception = exc
            except OperationalError:
                raise  # The database itself is failing: stop this pass, retry later, lose nothing.
            except Exception as exc:
                failure = exc
            log.error("mailbox %s uid %s: processing failed; quarantining", mailbox.name,
                      fetched.uid, exc_info=failure)
            with transaction(self.sessions) as session:
                self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=None,
                            status="quarantined",
                            reason=f"processing failed: {type(failure).__name__}: {failure}"[:2000])
                self._advance(session, mailbox, fetched.uid)
            return "quarantined"
        raise AssertionError("unreachable")

    def _ingest(self, session: Session, mailbox: MailboxConfig, uidvalidity: int,
                fetched: FetchedMessage, *, now: datetime, acknowledge: bool) -> str:
        if repo.stored_uids(session, mailbox.name, mailbox.folder, uidvalidity, [fetched.uid]):
            return "already-stored"
        self._advance(session, mailbox, fetched.uid)
        parsed = parse_message(fetched.raw)
        if fetched.truncated:
            limit = self.config.worker.max_message_bytes
            self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=parsed,
                        status="quarantined",
                        reason=f"message of {fetched.size} bytes is over the {limit}-byte limit; "
                               "only its header was stored (the message stays on the server)")
            return "quarantined"
        dedupe_key = parsed.message_id or "sha256:" + hashlib.sha256(fetched.raw).hexdigest()
        first = repo.first_with_dedupe_key(session, mailbox.name, dedupe_key)
        if first is not None:
            self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=parsed,
                        status="duplicate", case_id=first.case_id,
                        reason=f"same Message-ID as message #{first.id}")
            return "duplicate"

        classification = classify(parsed, own_addresses=self.config.own_addresses)
        automated = classification.kind.is_automated
        match = match_thread(
            parsed,
            known_message_ids=repo.known_message_ids(
                session, candidate_ids(parsed, automated=automated)),
            cases_by_reference=repo.cases_by_reference(session,
                                                       references_in_subject(parsed.subject)),
            staff=frozenset(mailbox.staff),
            automated=automated,
        )
        detail: dict[str, object] = {
            "classification": classification.kind.value,
            "evidence": list(classification.reasons),
            "threading": match.reason,
            "message_id": parsed.message_id,
        }
        warnings: list[str] = []
        sender = parsed.from_address or ""
        if classification.kind is MessageKind.HUMAN and sender in mailbox.staff:
            check = check_staff(
                parsed, staff=mailbox.staff,
                notification_ids=notification_ids(session, match.case_id) if match.case_id else (),
                trusted_authserv_ids=mailbox.trusted_authserv_ids)
            if check.proven_by is not None:
                return self._from_staff(session, mailbox, uidvalidity, fetched, parsed,
                                        match.case_id, check.proven_by, dedupe_key, detail, now)
            detail["security"] = "unauthenticated staff address"
            warnings.append(
                f"This message claims to come from staff member {sender} but is not "
                "authenticated: it answers no staff notification and no trusted server reports "
                "DKIM or DMARC passing. It was treated as customer mail and any commands in it "
                "were ignored.")
        if match.quoted_reference:
            warnings.append(
                f"The sender quoted case [{match.quoted_reference}] but is not a party to it, so "
                "they have a case of their own. Check whether they are connected to it.")
        decision = decide_intake(parsed, classification, match, received_at=fetched.internaldate,
                                 acknowledge=acknowledge, now=now)
        if "security" in detail and isinstance(decision, JoinCase):
            decision = JoinCase(case_id=decision.case_id, event_kind=decision.event_kind,
                                add_party=None)
        return self._apply(session, decision, mailbox, uidvalidity, fetched, parsed,
                           classification, detail, dedupe_key=dedupe_key, now=now,
                           warnings=warnings)

    def _from_staff(self, session: Session, mailbox: MailboxConfig, uidvalidity: int,
                    fetched: FetchedMessage, parsed: ParsedMessage, case_id: int | None,
                    proof: str, dedupe_key: str, detail: dict[str, object], now: datetime) -> str:
        """An authenticated staff member: a reply to a notification, or mail to the customer."""
        if case_id is None:
            self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=parsed,
                        status="quarantined", dedupe_key=dedupe_key, kind=MessageKind.HUMAN,
                        reason="staff mail that matches no case (reply to a staff notification, "
                               "or keep the case reference in the subject)")
            return "quarantined"
        case = session.get_one(Case, case_id)
        rules = self.providers[case.provider_id]
        row = self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=parsed,
                          status="processed", case_id=case.id, dedupe_key=dedupe_key,
                          kind=MessageKind.HUMAN)
        repo.add_event(session, case.id, "staff_message_received", at=now,
                       inbound_message_id=row.id, detail={**detail, "authenticated": proof})
        if mailbox.address in parsed.to:
            return self.desk.staff_reply(session, case, rules, mailbox, row, parsed, proof=proof,
                                         now=now)
        return self.desk.staff_direct(session, case, row, parsed, proof=proof, now=now,
                                      rules=rules)

    def _apply(self, session: Session, decision: Decision, mailbox: MailboxConfig,
               uidvalidity: int, fetched: FetchedMessage, parsed: ParsedMessage,
               classification: Classification, detail: dict[str, object], *, dedupe_key: str,
               now: datetime, warnings: list[str]) -> str:
        if isinstance(decision, Quarantine):
            self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=parsed,
                        status="quarantined", reason=decision.reason, dedupe_key=dedupe_key,
                        kind=classification.kind)
            return "quarantined"
        if isinstance(decision, JoinCase):
            case = session.get_one(Case, decision.case_id)
            row = self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=parsed,
                              status="processed", case_id=case.id, dedupe_key=dedupe_key,
                              kind=classification.kind)
            if decision.add_party:
                repo.add_party(session, case, decision.add_party, name=parsed.from_name,
                               role="correspondent", at=now)
            repo.add_event(session, case.id, decision.event_kind, at=now,
                           inbound_message_id=row.id, detail=detail)
            self._security_event(session, case, row, detail, now)
            if classification.kind is MessageKind.BOUNCE:
                self.desk.bounced(session, case, self.providers[case.provider_id], mailbox,
                                  parsed, now)
            if classification.kind is MessageKind.HUMAN:
                rules = self.providers[case.provider_id]
                warnings += self.desk.customer_wrote(session, case, rules, parsed, now)
                self.desk.notify(session, case, rules, mailbox, row, parsed, first=False,
                                 now=now, warnings=warnings)
            return "joined"
        return self._open_case(session, decision, mailbox, uidvalidity, fetched, parsed,
                               classification, detail, dedupe_key=dedupe_key, now=now,
                               warnings=warnings)

    def _security_event(self, session: Session, case: Case, row: InboundMessage,
                        detail: dict[str, object], now: datetime) -> None:
        if "security" in detail:
            repo.add_event(session, case.id, "security_unauthenticated_staff", at=now,
                           inbound_message_id=row.id,
                           detail={"sender": row.sender, "reason": detail["security"],
                                   "action": "treated as customer mail; commands ignored"})

    def _open_case(self, session: Session, decision: OpenCase, mailbox: MailboxConfig,
                   uidvalidity: int, fetched: FetchedMessage, parsed: ParsedMessage,
                   classification: Classification, detail: dict[str, object], *,
                   dedupe_key: str, now: datetime, warnings: list[str]) -> str:
        rules = self.providers[mailbox.rules]
        year = decision.first_raised_at.astimezone(ZoneInfo(rules.timezone)).year
        case = Case(
            reference=repo.next_reference(session, rules.reference_prefix, year),
            provider_id=rules.id, mailbox=mailbox.name, status="open",
            subject=without_references(parsed.subject) or "(no subject)",
            customer_address=decision.customer_address,
            customer_name=parsed.from_name, first_raised_at=decision.first_raised_at,
            created_at=now,
        )
        session.add(case)
        session.flush()
        repo.add_party(session, case, decision.customer_address, name=decision.customer_name,
                       role="customer", at=now)
        if decision.acknowledge_to and decision.acknowledge_to != decision.customer_address:
            repo.add_party(session, case, decision.acknowledge_to, name=decision.customer_name,
                           role="reply-to", at=now)
        row = self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=parsed,
                          status="processed", case_id=case.id, dedupe_key=dedupe_key,
                          kind=classification.kind)
        if decision.quoted_reference:
            detail = {**detail, "quoted_reference": decision.quoted_reference}
        repo.add_event(session, case.id, decision.event_kind, at=now, inbound_message_id=row.id,
                       detail={**detail, "reference": case.reference,
                               "first_raised_at": case.first_raised_at.isoformat()})
        self._security_event(session, case, row, detail, now)
        plan_new_case(session, case, rules, self.calendars.for_rules(rules),
                      acknowledged=decision.acknowledge_to is not None, now=now)
        warnings = warnings + self.desk.customer_wrote(session, case, rules, parsed, now)
        if decision.acknowledge_to is None:
            repo.add_event(session, case.id, "acknowledgement_not_sent", at=now,
                           detail={"reason": decision.no_acknowledgement_reason})
        else:
            ack = self._acknowledge(session, case, rules, mailbox, fetched, parsed,
                                    decision.acknowledge_to, now)
            if ack.status == "suppressed":
                warnings.append(f"No acknowledgement was sent: {ack.last_error}.")
        self.desk.notify(session, case, rules, mailbox, row, parsed, first=True, now=now,
                         warnings=warnings)
        return "opened"

    def _acknowledge(self, session: Session, case: Case, rules: ProviderRules,
                     mailbox: MailboxConfig, fetched: FetchedMessage, parsed: ParsedMessage,
                     to: str, now: datetime) -> Outbox:
        context = letter_context(
            rules=rules, reference=case.reference, customer_name=case.customer_name,
            customer_address=to, subject=case.subject,
            received_at=fetched.internaldate, first_raised_at=case.first_raised_at,
        )
        rendered = self.renderer.render(rules.id, rules.acknowledgement_template, context)
        return queue_email(
            session, case=case, mailbox=mailbox.name, purpose="acknowledgement",
            idempotency_key=f"ack:{case.reference}", from_name=rules.name,
            from_address=mailbox.address, envelope_from=self.config.smtp.envelope_from,
            to=[to], rendered=rendered, now=now, in_reply_to=parsed.message_id,
            references=[*parsed.references, *([parsed.message_id] if parsed.message_id else [])],
            limits=self.config.worker,
        )

    def _store(self, session: Session, mailbox: MailboxConfig, uidvalidity: int,
               fetched: FetchedMessage, *, now: datetime, parsed: ParsedMessage | None,
               status: str, reason: str | None = None, case_id: int | None = None,
               dedupe_key: str | None = None, kind: MessageKind | None = None) -> InboundMessage:
        row = InboundMessage(
            mailbox=mailbox.name, folder=mailbox.folder, uidvalidity=uidvalidity, uid=fetched.uid,
            message_id=parsed.message_id if parsed else None, dedupe_key=dedupe_key,
            received_at=fetched.internaldate, stored_at=now, raw=fetched.raw, size=fetched.size,
            sender=(parsed.from_address if parsed else None),
            subject=(parsed.subject if parsed else None), text=(parsed.text if parsed else None),
            kind=kind.value if kind else None, status=status, reason=reason, case_id=case_id,
        )
        session.add(row)
        session.flush()
        return row

    def _advance(self, session: Session, mailbox: MailboxConfig, uid: int) -> None:
        state = repo.mailbox_state(session, mailbox.name, mailbox.folder)
        state.last_uid = max(state.last_uid, uid)


def _count(result: PollResult, outcome: str) -> None:
    result.fetched += 1
    result.outcomes.append(outcome)
    if outcome == "opened":
        result.cases_opened += 1
    elif outcome == "joined":
        result.joined += 1
    elif outcome == "quarantined":
        result.quarantined += 1
    elif outcome == "duplicate":
        result.duplicates += 1

