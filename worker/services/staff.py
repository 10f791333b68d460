"""Staff work by email: staff replies with #commands, relays, and the case state they change
(resolution, reopening, deadlock requests, timers met). The mail itself is CaseMail's.

Everything here runs inside the caller's per-message transaction: a case change, its audit
events and the mail it causes (relay, confirmation, error reply) commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from worker.adapters import repository as repo
from worker.adapters.db_models import Case, InboundMessage, Outbox, Timer
from worker.adapters.templates import TemplateRenderer
from worker.config import Config, MailboxConfig
from worker.core.attachments import select_attachments
from worker.core.bounces import BounceReport
from worker.core.commands import Command, ParsedCommands, parse_commands, usage_text
from worker.core.customer_intent import asks_for_deadlock, still_unhappy
from worker.core.deadlines import due_at
from worker.core.letters import local_datetime_text
from worker.core.lifecycle import obligation_due, parse_cadence
from worker.core.message import ParsedMessage
from worker.core.replan import PlannedTimer, catch_up, occurrence_timer
from worker.core.rules import Duration, Obligation, ProviderRules
from worker.services.case_mail import CaseMail, new_text
from worker.services.outbox import fulfils
from worker.services.timers import Calendars, add_timer

# Whether a deadlock letter was decided on already, or a decision is pending.
_DEADLOCK_LETTER = select(Outbox.id).where(Outbox.idempotency_key == bindparam("key"))
_DEADLOCK_DECISION = select(Timer.id).where(
    Timer.case_id == bindparam("case_id"), Timer.kind == "deadlock_decision",
    Timer.status == "pending")


@dataclass(slots=True)
class StaffDesk:
    renderer: TemplateRenderer
    config: Config
    calendars: Calendars
    mail: CaseMail = field(init=False)

    def __post_init__(self) -> None:
        self.mail = CaseMail(renderer=self.renderer, config=self.config)

    # ------------------------------------------------------------------ staff replies

    def staff_reply(self, session: Session, case: Case, rules: ProviderRules,
                    mailbox: MailboxConfig, row: InboundMessage, msg: ParsedMessage, *,
                    proof: str, now: datetime) -> str:
        """Apply the reply's commands, relay its new text to the customer, confirm to the sender."""
        staff = msg.from_address or ""
        parsed = parse_commands(new_text(msg))
        errors = list(parsed.errors) or self._invalid_for_case(session, parsed, case, rules)
        if errors:
            repo.add_event(session, case.id, "staff_commands_rejected", at=now,
                           inbound_message_id=row.id, detail={"staff": staff, "errors": errors})
            self.mail.to_staff(session, case, rules, mailbox, row, staff, "command_error", now,
                               {"errors": errors, "commands": usage_text()})
            return "staff-rejected"
        # The staff member's own words go first; a resolution letter, say, follows them.
        relayed = None
        if not parsed.is_note and parsed.body.strip():
            relayed = self.mail.relay(session, case, rules, mailbox, row, parsed.body, now)
            met = self._mark_met(session, case, rules, ("staff-reply", "update"), now)
            # The relay is what meets those deadlines: if it is still unsent after the soonest
            # of them (an SMTP outage), that is a breach like any late letter.
            upcoming = sorted((deadline, rule) for rule, deadline in met if deadline >= now)
            if upcoming:
                fulfils(relayed, upcoming[0][1], upcoming[0][0], now)
        effects = [self._apply(session, case, rules, mailbox, row, command, staff, now)
                   for command in parsed.commands]
        repo.add_event(session, case.id, "staff_response", at=now, inbound_message_id=row.id,
                       detail={"staff": staff, "authenticated": proof,
                               "relayed_message_id": relayed.message_id if relayed else None,
                               "commands": [str(c) for c in parsed.commands]})
        # Files too large to forward were left out of the relay: the sender must know.
        left_out = select_attachments(row.raw).warning() if relayed is not None else None
        if parsed.commands or left_out:
            self.mail.to_staff(session, case, rules, mailbox, row, staff, "confirmation", now,
                               {"effects": effects, "relayed": relayed is not None,
                                "warnings": [left_out] if left_out else []})
        return "staff-reply"

    def staff_direct(self, session: Session, case: Case, row: InboundMessage, msg: ParsedMessage,
                     *, proof: str, now: datetime, rules: ProviderRules) -> str:
        """Staff wrote to the customer themselves with us in Cc/Bcc: record it, relay nothing."""
        repo.add_event(session, case.id, "staff_response", at=now, inbound_message_id=row.id,
                       detail={"staff": msg.from_address, "authenticated": proof, "direct": True,
                               "to": list(msg.to)})
        self._mark_met(session, case, rules, ("staff-reply", "update"), now)
        return "staff-direct"

    def _invalid_for_case(self, session: Session, parsed: ParsedCommands, case: Case,
                          rules: ProviderRules) -> list[str]:
        """Commands that are well formed but cannot apply to this case under its rules."""
        errors = []
        for command in parsed.commands:
            if problem := self._check(command, case, rules):
                errors.append(f"{command}: {problem}")
            elif command.name == "deadlock" and session.scalar(select(Outbox.id).where(
                    Outbox.idempotency_key == f"deadlock-letter:{case.reference}")):
                errors.append(f"{command}: a deadlock letter was already sent on this case")
        return errors

    def _check(self, command: Command, case: Case, rules: ProviderRules) -> str | None:
        name, argument = command.name, command.argument
        if name == "resolved" and case.status == "resolved":
            return "the case is already resolved"
        if name == "reopen" and case.status != "resolved":
            return "the case is not resolved"
        if name in ("deadlock", "decline-deadlock") and rules.deadlock is None:
            return f"{rules.name} has no deadlock letters in its rules"
        if name == "decline-deadlock" and rules.deadlock is not None:
            ground = argument.split()[0]
            allowed = sorted(rules.deadlock.refusal_grounds)
            if ground not in allowed:
                return (f"'{ground}' is not a ground {rules.name} may decline on "
                        f"(allowed: {', '.join(allowed) or 'none'})")
        if name in ("vexatious", "out-of-jurisdiction") and name not in rules.no_adr_letter:
            return f"the rules of {rules.name} do not allow this exception"
        if name == "updates" and not any(o.agreed_cadence for o in rules.obligations):
            return f"{rules.name} has no update obligation whose cadence can be agreed"
        if name == "stage" and int(argument) > len(rules.stages):
            return f"{rules.name} has {len(rules.stages)} stage(s)"
        if name == "first-raised":
            recorded = case.first_raised_at.astimezone(ZoneInfo(rules.timezone)).date()
            if datetime.fromisoformat(argument).date() > recorded:
                return f"the complaint is recorded as first raised on {recorded}; never later"
        return None

    def _apply(self, session: Session, case: Case, rules: ProviderRules, mailbox: MailboxConfig,
               row: InboundMessage, command: Command, staff: str, now: datetime) -> str:
        """Change the case for one (already validated) command; returns what it did."""
        name, argument = command.name, command.argument
        effect: str
        if name == "resolved":
            effect = self.resolve(session, case, rules, mailbox, now)
        elif name == "reopen":
            effect = self.reopen(session, case, rules, now, by=staff)
        elif name == "deadlock":
            assert rules.deadlock is not None
            self.deadlock_letter(session, case, rules, mailbox, now)
            effect = "deadlock letter queued to the customer"
        elif name == "decline-deadlock":
            self._cancel_timers(session, case, "deadlock_decision", now, "declined by staff")
            effect = f"deadlock letter declined ({argument})"
        elif name in ("vexatious", "out-of-jurisdiction"):
            case.adr_exception, case.adr_exception_reason = name, argument
            cancelled = self._cancel_timers(session, case, "adr_letter", now, name)
            effect = f"marked {name}: the ADR letter will not be sent ({cancelled} cancelled)"
        elif name == "updates":
            case.update_cadence = argument
            effect = f"update cadence agreed with the customer: {argument}"
            effect += self._replan_updates(session, case, rules, now)
        elif name == "stage":
            case.stage = int(argument)
            stage = rules.stage(case.stage)
            effect = f"moved to stage {argument}" + (f" ({stage.name})" if stage else "")
        elif name == "assign":
            case.assignee = argument.lower()
            effect = f"assigned to {case.assignee}"
        elif name == "note":
            effect = "internal note recorded; nothing was sent to the customer"
        else:  # first-raised
            effect = self._first_raised(session, case, rules, argument, now)
        repo.add_event(session, case.id, f"command_{name.replace('-', '_')}", at=now,
                       inbound_message_id=row.id,
                       detail={"staff": staff, "command": str(command), "effect": effect})
        return f"{command}: {effect}"

    def _replan_updates(self, session: Session, case: Case, rules: ProviderRules,
                        now: datetime) -> str:
        """The agreed cadence runs from now: the pending update moves to its first occurrence."""
        calendar = self.calendars.for_rules(rules)
        moved = []
        for obligation in rules.obligations:
            if obligation.repeat is None or not obligation.agreed_cadence:
                continue
            pending = list(session.scalars(select(Timer).where(
                Timer.case_id == case.id, Timer.obligation_id == obligation.id,
                Timer.status == "pending")))
            for timer in pending:
                timer.status = "cancelled"
            occurrence = max((t.occurrence for t in pending), default=0) + 1
            deadline = due_at(calendar, self.cadence(case, obligation), now)
            planned = occurrence_timer(calendar, obligation, self.cadence(case, obligation),
                                       previous=now, deadline=deadline, occurrence=occurrence)
            add_timer(session, case.id, planned, now)
            moved.append(f"next {obligation.id} due {deadline.isoformat()}")
        return f" ({'; '.join(moved)})" if moved else ""

    def _first_raised(self, session: Session, case: Case, rules: ProviderRules, argument: str,
                      now: datetime) -> str:
        """Move the first-raised date earlier (a phone complaint) and re-plan its clocks."""
        tz = ZoneInfo(rules.timezone)
        day = datetime.fromisoformat(argument).date()
        # The time of day is unknown: the start of that day is the earliest, so the safest.
        new_start = datetime.combine(day, time(0), tz).astimezone(case.first_raised_at.tzinfo)
        if new_start >= case.first_raised_at:
            return "already recorded as first raised then; nothing changed"
        case.first_raised_at = new_start
        calendar = self.calendars.for_rules(rules)
        moved = []
        for timer in session.scalars(select(Timer).where(Timer.case_id == case.id,
                                                         Timer.status == "pending")):
            obligation = rules.obligation(timer.obligation_id)
            if obligation is None or obligation.trigger != "first_raised" or timer.kind != "due":
                continue
            timer.start_at = new_start
            timer.due_at = obligation_due(rules, calendar, obligation, new_start)
            moved.append(f"{timer.obligation_id} now due {timer.due_at.isoformat()}")
            repo.add_event(session, case.id, "timer_replanned", at=now, detail={
                "rule": timer.obligation_id, "kind": timer.kind,
                "due_at": timer.due_at.isoformat(), "reason": "first raised earlier"})
        return f"first raised on {day}" + (f"; {'; '.join(moved)}" if moved else "")

    def resolve(self, session: Session, case: Case, rules: ProviderRules,
                mailbox: MailboxConfig, now: datetime) -> str:
        """Resolve: suspend every pending deadline and send the resolution letter."""
        case.status, case.resolved_at = "resolved", now
        suspended = self._set_timers(session, case, ("pending",), "suspended", now, "resolved")
        effect = f"case resolved; {suspended} pending deadline(s) suspended"
        if rules.resolution_template:
            reopen_until = (due_at(self.calendars.for_rules(rules), rules.reopen_within, now)
                            if rules.reopen_within else None)
            count = session.scalar(select(func.count()).select_from(Outbox).where(
                Outbox.case_id == case.id, Outbox.purpose == "resolution")) or 0
            self.mail.letter(session, case, rules, mailbox, template=rules.resolution_template,
                             purpose="resolution", key=f"resolution:{case.reference}:{count + 1}",
                             now=now, reopen_until=reopen_until)
            effect += "; resolution letter queued to the customer"
        return effect

    def reopen(self, session: Session, case: Case, rules: ProviderRules, now: datetime, *,
               by: str) -> str:
        """Reopen: suspended deadlines resume on their original clocks (one missed while
        resolved fires at once); a repeating one restarts from now, without breaches."""
        case.status, case.resolved_at = "open", None
        calendar = self.calendars.for_rules(rules)
        resumed = 0
        for timer in list(session.scalars(select(Timer).where(Timer.case_id == case.id,
                                                              Timer.status == "suspended"))):
            obligation = rules.obligation(timer.obligation_id)
            if obligation is not None and obligation.repeat is not None:
                timer.status = "cancelled"
                # No breaches while resolved: the next deadline at or after now is the one due.
                _, covered, _ = catch_up(calendar, self.cadence(case, obligation),
                                         timer.deadline_at or timer.due_at, now)
                add_timer(session, case.id, occurrence_timer(
                    calendar, obligation, self.cadence(case, obligation), previous=now,
                    deadline=covered, occurrence=timer.occurrence + 1), now)
            else:
                timer.status = "pending"
            resumed += 1
        repo.add_event(session, case.id, "case_reopened", at=now,
                       detail={"by": by, "timers_resumed": resumed})
        return f"case reopened; {resumed} deadline(s) resumed on their original clocks"

    def customer_wrote(self, session: Session, case: Case, rules: ProviderRules,
                       msg: ParsedMessage, now: datetime) -> list[str]:
        """React to what a customer asks; returns warnings for the staff notification."""
        text = new_text(msg)
        warnings: list[str] = []
        if case.status == "resolved":
            window_open = rules.reopen_within is None or case.resolved_at is None or now <= \
                due_at(self.calendars.for_rules(rules), rules.reopen_within, case.resolved_at)
            if window_open and still_unhappy(text):
                self.reopen(session, case, rules, now, by="customer")
                warnings.append("The customer says the complaint is not resolved: the case has "
                                "been reopened and its original deadlines continue.")
            else:
                warnings.append("This case is resolved. Reply #reopen if it should be reopened.")
        if asks_for_deadlock(text):
            warnings.extend(self._deadlock_requested(session, case, rules, now))
        return warnings

    def _deadlock_requested(self, session: Session, case: Case, rules: ProviderRules,
                            now: datetime) -> list[str]:
        policy = rules.deadlock
        if policy is None:
            return ["The customer mentions a deadlock letter or an ombudsman; this procedure "
                    "has no deadlock letters (see its rule file)."]
        decided = repo.run(session, _DEADLOCK_LETTER,
                           {"key": f"deadlock-letter:{case.reference}"}).first()
        pending = repo.run(session, _DEADLOCK_DECISION, {"case_id": case.id}).first()
        if decided or pending:
            return []
        deadline = due_at(self.calendars.for_rules(rules), policy.decision_deadline, now)
        add_timer(session, case.id, PlannedTimer(
            obligation_id="deadlock_decision", kind="deadlock_decision", start_at=now,
            due_at=deadline, promised=False), now)
        repo.add_event(session, case.id, "deadlock_requested", at=now, detail={
            "decision_deadline": deadline.isoformat(), "on_request": policy.on_request})
        when = local_datetime_text(deadline, rules.timezone)
        grounds = ", ".join(sorted(policy.refusal_grounds)) or "none"
        if policy.on_request:
            return [f"The customer asks for a deadlock letter. Decide by {when}: reply #deadlock "
                    f"to send it now, or #decline-deadlock <ground> <reason> (allowed grounds: "
                    f"{grounds}). Without a decision it is sent automatically at {when}."]
        return [f"The customer asks for a deadlock letter. {rules.name}'s code does not offer "
                f"one on request: decide by {when} (#deadlock to send it)."]

    def cadence(self, case: Case, obligation: Obligation) -> Duration:
        if obligation.agreed_cadence and case.update_cadence:
            return parse_cadence(case.update_cadence)
        assert obligation.repeat is not None
        return obligation.repeat

    def _set_timers(self, session: Session, case: Case, statuses: tuple[str, ...], to: str,
                    now: datetime, reason: str, obligation_id: str | None = None,
                    kind: str | None = None) -> int:
        query = select(Timer).where(Timer.case_id == case.id, Timer.status.in_(statuses))
        if obligation_id:
            query = query.where(Timer.obligation_id == obligation_id)
        if kind:
            query = query.where(Timer.kind == kind)
        timers = list(session.scalars(query))
        for timer in timers:
            timer.status = to
            repo.add_event(session, case.id, f"timer_{to}", at=now, detail={
                "rule": timer.obligation_id, "kind": timer.kind, "occurrence": timer.occurrence,
                "due_at": timer.due_at.isoformat(), "reason": reason})
        return len(timers)

    def _cancel_timers(self, session: Session, case: Case, obligation_id: str | None,
                       now: datetime, reason: str) -> int:
        return self._set_timers(session, case, ("pending", "suspended"), "cancelled", now,
                                reason, obligation_id)

    def _mark_met(self, session: Session, case: Case, rules: ProviderRules,
                  kinds: tuple[str, ...], now: datetime) -> list[tuple[str, datetime]]:
        """An update or reply went out: the deadlines it meets are met (late ones too).
        Returns (rule, deadline) of each deadline it met."""
        met = {o.id for o in rules.obligations if o.met_by & set(kinds)}
        done: list[tuple[str, datetime]] = []
        for timer in list(session.scalars(select(Timer).where(
                Timer.case_id == case.id, Timer.status.in_(("pending", "breached"))))):
            if timer.obligation_id not in met:
                continue
            if timer.kind == "due" and timer.deadline_at is not None and now <= timer.start_at:
                continue  # An occurrence's window is (start, deadline]: this opened it.
            deadline = timer.deadline_at or timer.due_at
            timer.status = "met"
            if timer.kind != "reminder":  # A reminder is a nudge to staff, not a deadline.
                done.append((timer.obligation_id, deadline))
            repo.add_event(session, case.id, "timer_met", at=now, detail={
                "rule": timer.obligation_id, "kind": timer.kind, "occurrence": timer.occurrence,
                "due_at": deadline.isoformat(), "late": now > deadline})
            obligation = rules.obligation(timer.obligation_id)
            if obligation is not None and obligation.repeat is not None and timer.kind == "due":
                self.schedule_next(session, case, rules, obligation, timer, now)
        return done

    def schedule_next(self, session: Session, case: Case, rules: ProviderRules,
                      obligation: Obligation, timer: Timer, now: datetime) -> list[datetime]:
        """Plan the occurrence after the one a message sent at `now` covered; returns the
        deadlines missed before it (downtime), which the caller records as breaches."""
        calendar = self.calendars.for_rules(rules)
        cadence = self.cadence(case, obligation)
        missed, covered, following = catch_up(calendar, cadence,
                                              timer.deadline_at or timer.due_at, now)
        add_timer(session, case.id, occurrence_timer(
            calendar, obligation, cadence, previous=covered, deadline=following,
            occurrence=timer.occurrence + 1 + len(missed)), now)
        return missed

    # ------------------------------------------------------------------ mail

    def bounced(self, session: Session, case: Case, rules: ProviderRules, mailbox: MailboxConfig,
                report: BounceReport, now: datetime) -> None:
        """A bounce of our mail: a permanent one stops all mail to that address on the case."""
        for party in case.parties:
            if party.address not in report.recipients:
                continue
            if not report.permanent:
                repo.add_event(session, case.id, "soft_bounce", at=now, detail={
                    "address": party.address, "reason": report.reason})
                continue
            if party.undeliverable_at is not None:
                continue
            party.undeliverable_at, party.undeliverable_reason = now, report.reason
            repo.add_event(session, case.id, "address_undeliverable", at=now, detail={
                "address": party.address, "reason": report.reason})
            stage = rules.stage(case.stage)
            self.mail.to_roles(
                session, case, rules, mailbox, roles=[stage.owner] if stage else [],
                template="alert", purpose="alert", now=now,
                key=f"alert:{case.reference}:undeliverable:{party.address}",
                extra={"alert": {"title": f"the customer's address {party.address} bounced",
                                 "detail": f"The mail server said: {report.reason}\n\nNo more "
                                           "email goes to this address on this case. Contact the "
                                           "customer another way (phone or post): letters due "
                                           "later, including the ADR letter, cannot reach them "
                                           "by email."}})

    def deadlock_letter(self, session: Session, case: Case, rules: ProviderRules,
                        mailbox: MailboxConfig, now: datetime) -> Outbox:
        assert rules.deadlock is not None
        row = self.mail.letter(session, case, rules, mailbox, template=rules.deadlock.template,
                               purpose="deadlock-letter", key=f"deadlock-letter:{case.reference}",
                               now=now)
        # The deadlock letter is the ADR letter: the threshold letter must not follow it.
        self._cancel_timers(session, case, "adr_letter", now, "deadlock letter sent")
        self._cancel_timers(session, case, "deadlock_decision", now, "deadlock letter sent")
        return row

