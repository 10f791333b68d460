"""Poll one mailbox folder: each message is stored, classified, threaded and decided in one transaction.

Only after that transaction commits is the message moved or flagged on the server, so a crash
in between means a re-fetch, which the UID and Message-ID constraints turn into a no-op.

On SQLite a fetched batch is processed in one transaction, which commits (and syncs to disk)
once rather than once a message; should any message in it fail, nothing of the batch is kept
and it is processed again one message per transaction, so the failure is that message's alone.
PostgreSQL keeps one transaction per message: several workers share its rows (the case-number
counter), and a batch-long transaction would make them wait for each other.

A message whose processing fails (an exception, or the process dying on it) is left on the
server unmarked, fetched again by UID on later passes, and quarantined after
`worker.poison_attempts` failures; the messages after it are processed meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters import repository as repo
from worker.adapters.db import transaction
from worker.adapters.db_models import Case, InboundMessage, MailboxState, Outbox
from worker.adapters.imap import FetchedMessage, MailboxSource
from worker.adapters.templates import TemplateRenderer
from worker.config import Config, MailboxConfig
from worker.core.bounces import BounceReport, analyse_bounce
from worker.core.classify import classify
from worker.core.commands import usage_text
from worker.core.intake import Decision, JoinCase, OpenCase, Quarantine, decide_intake
from worker.core.letters import letter_context
from worker.core.lifecycle import obligation_due
from worker.core.message import Classification, MessageKind, ParsedMessage
from worker.core.parse import parse_message
from worker.core.references import references_in_subject, without_references
from worker.core.rules import ProviderRules
from worker.core.staff import check_staff
from worker.core.threading import candidate_ids, match_thread
from worker.errors import MailboxError
from worker.services.case_mail import notification_ids
from worker.services.outbox import queue_email
from worker.services.staff import StaffDesk
from worker.services.timers import Calendars, plan_new_case

log = logging.getLogger(__name__)

STOPPED = ("the worker stopped while processing this message (a crash, kill -9 or running out "
           "of memory)")


@dataclass(slots=True)
class PollResult:
    mailbox: str
    fetched: int = 0
    cases_opened: int = 0
    joined: int = 0
    quarantined: int = 0
    duplicates: int = 0
    # Failed this time; fetched again on the next pass until stored or quarantined.
    retrying: int = 0
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
        self.batches_together = sessions.kw["bind"].dialect.name == "sqlite"

    def poll(
        self, mailbox: MailboxConfig, source: MailboxSource, *, now: datetime,
        acknowledge: bool | None = None, should_stop: Callable[[], bool] = lambda: False,
    ) -> PollResult:
        """Fetch and process every new message, and retry the ones that failed before.

        Raises MailboxError when the server fails and OperationalError when the database does;
        neither is held against the message in hand.
        """
        result = PollResult(mailbox=mailbox.name)
        status = source.open()
        try:
            last_uid, retry, suspects = self._resume(mailbox, source, status.uidvalidity, now)
            self._reconcile(mailbox, source, status.uidvalidity, last_uid)
            # In UID order, failed messages included: the first copy of a message is the one
            # that counts (its arrival starts the clocks), and a reply follows its complaint.
            new = sorted(retry.union(source.new_uids(last_uid)))
            self._record_backlog(mailbox, len(new), now)
            ack = mailbox.acknowledge if acknowledge is None else acknowledge
            # One-off work (building the business calendar takes ~0.1 s) is done before any
            # message is in hand, so that a process killed from outside (a deploy, the OOM
            # killer) while a fresh one warms up is not blamed on the first message each time.
            self.calendars.for_rules(self.providers[mailbox.rules])
            for start in range(0, len(new), mailbox.fetch_batch):
                if should_stop():
                    break
                batch = new[start:start + mailbox.fetch_batch]
                # Fetched before the batch is marked in hand: dying on the network is no
                # message's fault.
                messages = list(source.fetch(batch,
                                             max_bytes=self.config.worker.max_message_bytes))
                # Together only when no message in it has failed before or was in hand
                # when a batch processed together died.
                failed, stored, together = self._start_batch(
                    mailbox, status.uidvalidity, batch, suspects=suspects)
                outcomes = self._process_together(
                    mailbox, status.uidvalidity, messages, now=now, acknowledge=ack,
                    stored=stored) if together else None
                if outcomes is None:
                    outcomes = [self._process(mailbox, status.uidvalidity, fetched, now=now,
                                              acknowledge=ack, failed=failed.get(fetched.uid),
                                              stored=fetched.uid in stored)
                                for fetched in messages]
                for outcome in outcomes:
                    _count(result, outcome)
                source.mark_processed([fetched.uid for fetched, outcome
                                       in zip(messages, outcomes, strict=True)
                                       if outcome != "retry"])
                seen = {fetched.uid for fetched in messages}
                self._record_backlog(mailbox, len(new) - start - len(batch), now,
                                     vanished=[uid for uid in failed if uid not in seen])
        except (MailboxError, OperationalError):
            # The server or the database failed, not the message in hand: blame no message.
            self._clear_inflight(mailbox)
            raise
        finally:
            source.close()
        return result

    def _resume(self, mailbox: MailboxConfig, source: MailboxSource, uidvalidity: int,
                now: datetime) -> tuple[int, set[int], set[int]]:
        """Where this folder's processing stands: the UID watermark, the failed messages to
        fetch again by UID until they are stored or quarantined (they can be below it), and
        the messages of a batch processed together that died, to process one at a time."""
        suspects: set[int] = set()
        with transaction(self.sessions) as session:
            state = repo.mailbox_state(session, mailbox.name, mailbox.folder)
            if state.uidvalidity != uidvalidity:
                if state.uidvalidity is not None:
                    log.warning("mailbox %s: UIDVALIDITY changed from %s to %s; rescanning "
                                "(Message-ID dedupe prevents duplicates)", mailbox.name,
                                state.uidvalidity, uidvalidity)
                state.uidvalidity = uidvalidity
                state.last_uid = 0
                state.inflight = None
                repo.forget_attempts(session, mailbox.name, mailbox.folder)
            elif state.inflight and state.inflight_together:
                # Nothing of that batch was stored, and any of its messages may have been in
                # hand: blame none, and process them one at a time, where a crash is pinned on
                # the message in hand. Kept until that batch starts, should this pass die too.
                suspects = set(state.inflight)
            elif state.inflight:
                self._blame_crash(session, mailbox, source, uidvalidity, state.inflight, now)
                state.inflight = None
            return state.last_uid, set(repo.failed_attempts(
                session, mailbox.name, mailbox.folder, uidvalidity)), suspects

    def _start_batch(self, mailbox: MailboxConfig, uidvalidity: int, batch: list[int], *,
                     suspects: set[int]) -> tuple[dict[int, tuple[int, str]], set[int], bool]:
        """Record the batch as in hand (one commit per batch, not per message) and return the
        failed attempts so far at its messages (uid -> (count, last error)), which of them
        are stored already, and whether to process it in one transaction."""
        with transaction(self.sessions) as session:
            rows = repo.failed_attempts(session, mailbox.name, mailbox.folder, uidvalidity, batch)
            stored = repo.stored_uids(session, mailbox.name, mailbox.folder, uidvalidity, batch)
            together = self.batches_together and not rows and suspects.isdisjoint(batch)
            self._mark_inflight(session, mailbox, batch, together=together)
            return ({uid: (row.attempts, row.last_error) for uid, row in rows.items()}, stored,
                    together)

    def _mark_inflight(self, session: Session, mailbox: MailboxConfig, batch: list[int], *,
                       together: bool) -> None:
        state = repo.mailbox_state(session, mailbox.name, mailbox.folder)
        state.inflight = list(batch)
        state.inflight_together = together

    def _process_together(self, mailbox: MailboxConfig, uidvalidity: int,
                          messages: list[FetchedMessage], *, now: datetime, acknowledge: bool,
                          stored: set[int]) -> list[str] | None:
        """Every message of the batch in one transaction: their outcomes, or None when one
        of them failed. Then nothing of the batch is kept, and the batch in hand is recorded
        as processed one message at a time, as the caller does next."""
        try:
            with transaction(self.sessions) as session:
                return [self._ingest(session, mailbox, uidvalidity, fetched, now=now,
                                     acknowledge=acknowledge, stored=fetched.uid in stored)
                        for fetched in messages]
        except OperationalError:
            raise  # The database itself is failing: stop this pass, retry later, lose nothing.
        except Exception:
            log.info("mailbox %s: a message of the batch failed; processing the batch again "
                     "one message at a time", mailbox.name)
        with transaction(self.sessions) as session:
            self._mark_inflight(session, mailbox, [fetched.uid for fetched in messages],
                                together=False)
        return None

    def _blame_crash(self, session: Session, mailbox: MailboxConfig, source: MailboxSource,
                     uidvalidity: int, inflight: list[int], now: datetime) -> None:
        """The last pass died inside a batch: count an attempt against the message it was on.

        Messages are processed in batch order and each one commits a row (or, failing, takes
        itself off the in-flight list), so that message is the first of the batch that is
        neither stored nor gone from the server. A process killed from outside is blamed on
        the message in hand too: `poison_attempts` deaths are needed to quarantine it.
        """
        stored = repo.stored_uids(session, mailbox.name, mailbox.folder, uidvalidity, inflight)
        unstored = [uid for uid in inflight if uid not in stored]
        if not unstored:
            return
        present = set(source.new_uids(min(unstored) - 1))
        victim = next((uid for uid in unstored if uid in present), None)
        if victim is None:
            return
        count = repo.count_attempt(session, mailbox.name, mailbox.folder, uidvalidity, victim,
                                   error=STOPPED, at=now)
        log.error("mailbox %s uid %s: the worker stopped while processing this message "
                  "(attempt %d of %d)", mailbox.name, victim, count,
                  self.config.worker.poison_attempts)

    def _clear_inflight(self, mailbox: MailboxConfig) -> None:
        try:
            with transaction(self.sessions) as session:
                repo.mailbox_state(session, mailbox.name, mailbox.folder).inflight = None
        except OperationalError:
            # Still unavailable: the next pass may count one attempt against that message.
            log.debug("could not clear the in-flight batch: database unavailable")

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

    def _record_backlog(self, mailbox: MailboxConfig, backlog: int, now: datetime, *,
                        vanished: list[int] | None = None) -> None:
        """Also ends the batch in hand; `vanished`: failed messages no longer on the server."""
        with transaction(self.sessions) as session:
            state = repo.mailbox_state(session, mailbox.name, mailbox.folder)
            state.backlog = max(backlog, 0)
            state.last_poll_at = now
            state.inflight = None
            state.inflight_together = False
            if vanished and state.uidvalidity is not None:
                repo.forget_attempts(session, mailbox.name, mailbox.folder, state.uidvalidity,
                                     vanished)

    def _process(self, mailbox: MailboxConfig, uidvalidity: int, fetched: FetchedMessage, *,
                 now: datetime, acknowledge: bool, failed: tuple[int, str] | None,
                 stored: bool) -> str:
        """One message, one transaction. A message that fails is retried on later passes and
        quarantined after `poison_attempts` failures; the loop goes on either way. `stored`:
        the batch found it stored already."""
        limit = self.config.worker.poison_attempts
        if failed is not None and failed[0] >= limit:
            with transaction(self.sessions) as session:
                return self._quarantine_poison(session, mailbox, uidvalidity, fetched, now,
                                               count=failed[0], error=failed[1])
        for attempt in (1, 2):
            try:
                with transaction(self.sessions) as session:
                    outcome = self._ingest(session, mailbox, uidvalidity, fetched, now=now,
                                           acknowledge=acknowledge,
                                           stored=stored if attempt == 1 else None)
                    if failed is not None:
                        repo.forget_attempts(session, mailbox.name, mailbox.folder, uidvalidity,
                                             [fetched.uid])
                    return outcome
            except IntegrityError as exc:
                # Another worker stored the same message first; the second try sees it. A
                # conflict that persists is a bug in handling this message.
                if attempt == 1:
                    continue
                failure: Exception = exc
            except OperationalError:
                raise  # The database itself is failing: stop this pass, retry later, lose nothing.
            except Exception as exc:
                failure = exc
            break
        error = f"{type(failure).__name__}: {failure}"
        with transaction(self.sessions) as session:
            count = repo.count_attempt(session, mailbox.name, mailbox.folder, uidvalidity,
                                       fetched.uid, error=error, at=now)
            log.error("mailbox %s uid %s: processing failed (attempt %d of %d)", mailbox.name,
                      fetched.uid, count, limit, exc_info=failure)
            if count >= limit:
                return self._quarantine_poison(session, mailbox, uidvalidity, fetched, now,
                                               count=count, error=error)
            # Handled: take it off the in-flight batch, so a crash later in the batch is
            # not counted against it.
            state = repo.mailbox_state(session, mailbox.name, mailbox.folder)
            state.inflight = [uid for uid in state.inflight or [] if uid != fetched.uid]
            return "retry"

    def _quarantine_poison(self, session: Session, mailbox: MailboxConfig, uidvalidity: int,
                           fetched: FetchedMessage, now: datetime, *, count: int,
                           error: str) -> str:
        log.error("mailbox %s uid %s: quarantined after %d failed attempts", mailbox.name,
                  fetched.uid, count)
        self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=None,
                    status="quarantined",
                    reason=f"processing failed {count} times; last error: {error}"[:2000])
        self._advance(session, mailbox, fetched.uid)
        repo.forget_attempts(session, mailbox.name, mailbox.folder, uidvalidity, [fetched.uid])
        return "quarantined"

    def _ingest(self, session: Session, mailbox: MailboxConfig, uidvalidity: int,
                fetched: FetchedMessage, *, now: datetime, acknowledge: bool,
                stored: bool | None) -> str:
        """`stored`: whether the message is stored already, None to look (after a conflict)."""
        if stored is None:
            stored = bool(repo.stored_uids(session, mailbox.name, mailbox.folder, uidvalidity,
                                           [fetched.uid]))
        if stored:
            return "already-stored"
        self._advance(session, mailbox, fetched.uid)
        parsed = parse_message(fetched.raw)
        oversize = self._oversize_note(mailbox, fetched) if fetched.truncated else None
        if oversize is not None:
            # Only the header was fetched. It is handled like any message, by its header: a
            # complaint with large photos is still a complaint, its clock starts now, and staff
            # are told to read it on the server.
            parsed = replace(parsed, text=f"[{oversize}]")
        dedupe_key = parsed.message_id or "sha256:" + hashlib.sha256(fetched.raw).hexdigest()
        first = repo.first_with_dedupe_key(session, mailbox.name, dedupe_key)
        if first is not None:
            first_id, first_case = first
            self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=parsed,
                        status="duplicate", case_id=first_case,
                        reason=f"same Message-ID as message #{first_id}")
            return "duplicate"

        classification = classify(parsed, own_addresses=self.config.own_addresses)
        automated = classification.kind.is_automated
        bounce = analyse_bounce(parsed) if classification.kind is MessageKind.BOUNCE else None
        failed = bounce.recipients if bounce else ()
        match = match_thread(
            parsed,
            known_message_ids=repo.known_message_ids(
                session, candidate_ids(parsed, automated=automated)),
            cases_by_reference=repo.cases_by_reference(session,
                                                       references_in_subject(parsed.subject)),
            staff=frozenset(mailbox.staff),
            automated=automated,
            failed_recipients=failed,
            latest_case_of=repo.latest_case_of(session, mailbox.name, failed) if failed else None,
        )
        detail: dict[str, object] = {
            "classification": classification.kind.value,
            "evidence": list(classification.reasons),
            "threading": match.reason,
            "message_id": parsed.message_id,
        }
        if oversize:
            detail["over_size_limit_bytes"] = fetched.size
        warnings: list[str] = [oversize] if oversize else []
        sender = parsed.from_address or ""
        if classification.kind is MessageKind.HUMAN and sender in mailbox.staff:
            check = check_staff(
                parsed, staff=mailbox.staff,
                notification_ids=notification_ids(session, match.case_id) if match.case_id else (),
                trusted_authserv_ids=mailbox.trusted_authserv_ids)
            if check.proven_by is not None and oversize:
                return self._oversize_from_staff(session, mailbox, uidvalidity, fetched, parsed,
                                                 match.case_id, dedupe_key, oversize, now)
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
        if oversize and isinstance(decision, Quarantine):
            decision = Quarantine(reason=f"{decision.reason}; {oversize}")
        if "security" in detail and isinstance(decision, JoinCase):
            decision = JoinCase(case_id=decision.case_id, event_kind=decision.event_kind,
                                add_party=None)
        return self._apply(session, decision, mailbox, uidvalidity, fetched, parsed,
                           classification, detail, dedupe_key=dedupe_key, now=now,
                           warnings=warnings, bounce=bounce)

    def _oversize_from_staff(self, session: Session, mailbox: MailboxConfig, uidvalidity: int,
                             fetched: FetchedMessage, parsed: ParsedMessage, case_id: int | None,
                             dedupe_key: str, oversize: str, now: datetime) -> str:
        """Staff mail over the size limit is not relayed (we only have its header), and the
        sender is told so at once rather than left to think the customer has it."""
        row = self._store(session, mailbox, uidvalidity, fetched, now=now, parsed=parsed,
                          status="quarantined", dedupe_key=dedupe_key, kind=MessageKind.HUMAN,
                          case_id=case_id, reason=f"staff mail not relayed: {oversize}")
        if case_id is not None:
            case = session.get_one(Case, case_id)
            self.desk.mail.to_staff(
                session, case, self.providers[case.provider_id], mailbox, row,
                parsed.from_address or "", "command_error", now,
                {"errors": [f"{oversize} It was not relayed to the customer: send the files "
                            "another way, or your text again without them."],
                 "commands": usage_text()})
        return "quarantined"

    def _oversize_note(self, mailbox: MailboxConfig, fetched: FetchedMessage) -> str:
        limit = self.config.worker.max_message_bytes
        where = mailbox.processed_folder or mailbox.folder
        return (f"This message is {_size(fetched.size)}, over the {_size(limit)} limit "
                f"(max_message_bytes): only its header was "
                f"read. The whole message is kept on the IMAP server of mailbox {mailbox.name}, "
                f"folder {where}; read it there.")

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
               now: datetime, warnings: list[str], bounce: BounceReport | None = None) -> str:
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
            if bounce is not None:
                self.desk.bounced(session, case, self.providers[case.provider_id], mailbox,
                                  bounce, now)
            if classification.kind is MessageKind.HUMAN:
                rules = self.providers[case.provider_id]
                warnings += self.desk.customer_wrote(session, case, rules, parsed, now)
                self.desk.mail.notify(session, case, rules, mailbox, row, parsed, first=False,
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
        case = repo.insert_case(session, dict(
            reference=repo.next_reference(session, rules.reference_prefix, year),
            provider_id=rules.id, mailbox=mailbox.name, status="open",
            subject=without_references(parsed.subject) or "(no subject)",
            customer_address=decision.customer_address,
            customer_name=parsed.from_name, first_raised_at=decision.first_raised_at,
            created_at=now, stage=1, assignee=None, update_cadence=None, adr_exception=None,
            adr_exception_reason=None, resolved_at=None,
        ))
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
        self.desk.mail.notify(session, case, rules, mailbox, row, parsed, first=True, now=now,
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
        # The rules' acknowledgement obligation ("at once" for most) is its deadline.
        obligation = next((o for o in rules.obligations if "acknowledgement" in o.met_by), None)
        deadline = obligation_due(rules, self.calendars.for_rules(rules), obligation,
                                  fetched.internaldate) if obligation else None
        return queue_email(
            session, case=case, mailbox=mailbox.name, purpose="acknowledgement",
            idempotency_key=f"ack:{case.reference}", from_name=rules.name,
            from_address=mailbox.address, envelope_from=self.config.smtp.envelope_from,
            to=[to], rendered=rendered, now=now, in_reply_to=parsed.message_id,
            references=[*parsed.references, *([parsed.message_id] if parsed.message_id else [])],
            limits=self.config.worker, obligation_id=obligation.id if obligation else None,
            deadline=deadline,
        )

    def _store(self, session: Session, mailbox: MailboxConfig, uidvalidity: int,
               fetched: FetchedMessage, *, now: datetime, parsed: ParsedMessage | None,
               status: str, reason: str | None = None, case_id: int | None = None,
               dedupe_key: str | None = None, kind: MessageKind | None = None) -> InboundMessage:
        return repo.insert_loaded(session, InboundMessage, dict(
            mailbox=mailbox.name, folder=mailbox.folder, uidvalidity=uidvalidity, uid=fetched.uid,
            message_id=parsed.message_id if parsed else None, dedupe_key=dedupe_key,
            received_at=fetched.internaldate, stored_at=now, raw=fetched.raw, size=fetched.size,
            sender=(parsed.from_address if parsed else None),
            subject=(parsed.subject if parsed else None), text=(parsed.text if parsed else None),
            kind=kind.value if kind else None, status=status, reason=reason, case_id=case_id,
        ))

    def _advance(self, session: Session, mailbox: MailboxConfig, uid: int) -> None:
        """Move the folder's UID watermark, in the message's transaction (the row exists:
        `_resume` made it)."""
        repo.run(session, _ADVANCE, {"box": mailbox.name, "box_folder": mailbox.folder, "uid": uid})


_ADVANCE = update(MailboxState).where(
    MailboxState.mailbox == bindparam("box"), MailboxState.folder == bindparam("box_folder"),
    MailboxState.last_uid < bindparam("uid")).values(last_uid=bindparam("uid"))


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
    elif outcome == "retry":
        result.retrying += 1


def _size(size: int) -> str:
    return f"{size / 1_048_576:.1f} MB" if size >= 1_048_576 else f"{max(size // 1024, 1)} kB"
