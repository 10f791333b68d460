"""Load provider rule files (rules/<id>.toml) with their regime and scheme files, checking every key.

The language is documented in docs/rules.md. Every problem is collected with its file and line;
nothing stops at the first one.
"""

from __future__ import annotations

import itertools
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from worker.adapters.tomlfile import Checker, KeyPath, TomlSyntaxError, load_toml
from worker.core.addresses import address_problem
from worker.core.calendar import BusinessCalendar, CalendarSpec
from worker.core.deadlines import due_at
from worker.core.rules import (
    EXCEPTIONS,
    MET_BY,
    REFUSAL_GROUNDS,
    TRIGGERS,
    AdrThreshold,
    DeadlockPolicy,
    Duration,
    Interval,
    Obligation,
    Owner,
    ProviderRules,
    Regime,
    Scheme,
    Severity,
    Stage,
    Unit,
)
from worker.errors import Problem, RuleError

HOLIDAY_REGIONS = ("GB-ENG", "GB-SCT", "GB-NIR")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_PREFIX = re.compile(r"^[A-Z]{2,5}$")
_INTERVAL = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")

# Says whether a template (all of its parts) exists for a provider.
TemplateCheck = Callable[[str, str], bool]


@dataclass(slots=True)
class RuleSet:
    providers: dict[str, ProviderRules]
    warnings: list[Problem] = field(default_factory=list)


def provider_files(rules_dir: Path) -> list[Path]:
    return sorted(p for p in rules_dir.glob("*.toml") if p.is_file())


def load_rule_set(rules_dir: Path, paths: list[Path] | None = None, *,
                  template_exists: TemplateCheck | None = None) -> RuleSet:
    """Load every provider file (or just `paths`); raise RuleError listing every problem."""
    problems: list[Problem] = []
    result = RuleSet(providers={})
    prefixes: dict[str, str] = {}
    files = paths if paths is not None else provider_files(rules_dir)
    if not files:
        raise RuleError([Problem(str(rules_dir), 1, "no provider rule files (*.toml) found")])
    for path in files:
        try:
            loader = _ProviderLoader(path, template_exists)
        except TomlSyntaxError as exc:
            problems.append(exc.problem)
            continue
        rules = loader.load()
        problems.extend(sorted(loader.check.problems, key=lambda p: p.line))
        result.warnings.extend(loader.warnings)
        if rules is None:
            continue
        if rules.reference_prefix in prefixes:
            problems.append(loader.check.doc.problem(
                ("provider", "reference_prefix"),
                f"reference prefix '{rules.reference_prefix}' is also used by "
                f"{prefixes[rules.reference_prefix]}"))
        prefixes[rules.reference_prefix] = rules.id
        result.providers[rules.id] = rules
    if problems:
        raise RuleError(problems)
    return result


class _ProviderLoader:
    def __init__(self, path: Path, template_exists: TemplateCheck | None) -> None:
        self.path = path
        self.check = Checker(load_toml(path))
        self.data = self.check.doc.data
        self.template_exists = template_exists
        self.warnings: list[Problem] = []
        # Known once the hours are valid; a calendar is built from it only to check hard limits.
        self.calendar_spec: CalendarSpec | None = None

    def load(self) -> ProviderRules | None:
        check, data = self.check, self.data
        check.unknown_keys(data, (), {"provider", "hours", "calendar", "acknowledgement",
                                      "defaults", "stages", "obligations", "deadlock",
                                      "exceptions", "resolution"})
        p = check.table(data, ("provider",))
        check.unknown_keys(p, ("provider",), {
            "id", "name", "reference_prefix", "complaints_address", "timezone", "holiday_region",
            "regime", "adr_scheme", "contact_point",
        })
        provider_id = check.string(p, ("provider", "id"))
        if provider_id and provider_id != self.path.stem:
            check.error(("provider", "id"),
                        f"id '{provider_id}' must match the file name '{self.path.stem}'")
        prefix = check.string(p, ("provider", "reference_prefix"))
        if prefix and not _PREFIX.match(prefix):
            check.error(("provider", "reference_prefix"), "must be 2 to 5 upper-case letters")
        address = check.string(p, ("provider", "complaints_address"))
        if address and (why := address_problem(address)):
            check.error(("provider", "complaints_address"), f"invalid address: {why}")
        timezone = check.string(p, ("provider", "timezone"), default="Europe/London")
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            check.error(("provider", "timezone"), f"unknown timezone '{timezone}'")
        region = check.string(p, ("provider", "holiday_region"), choices=HOLIDAY_REGIONS)
        regime_id = check.string(p, ("provider", "regime"))
        regime = None
        if regime_id and regime_id != "none":
            regime = _load_regime(self.path.parent / "regimes" / f"{regime_id}.toml", check,
                                  ("provider", "regime"))
        scheme_id = check.string(p, ("provider", "adr_scheme"), default="")
        scheme = None
        if scheme_id:
            scheme = _load_scheme(self.path.parent / "schemes" / f"{scheme_id}.toml", check,
                                  ("provider", "adr_scheme"))
        elif regime_id and regime_id != "none":
            check.error(("provider", "adr_scheme"), f"regime '{regime_id}' requires an adr_scheme")

        before_calendar = len(check.problems)
        weekly, confirmed = self._hours()
        closures, extra_days = self._calendar()
        if len(check.problems) == before_calendar and region in HOLIDAY_REGIONS:
            self.calendar_spec = CalendarSpec(
                timezone=timezone, weekly_hours=weekly, holiday_region=region,
                closures=closures, extra_working_days=extra_days)
        ack = check.table(data, ("acknowledgement",))
        check.unknown_keys(ack, ("acknowledgement",), {"template", "next_steps"})
        ack_template = check.string(ack, ("acknowledgement", "template"), default="acknowledgement")
        self._template(provider_id, ack_template, ("acknowledgement", "template"))
        next_steps = check.string(ack, ("acknowledgement", "next_steps"))
        defaults = check.table(data, ("defaults",), required=False)
        check.unknown_keys(defaults, ("defaults",), {"reminder_before"})
        reminder_before = self._duration(defaults, ("defaults", "reminder_before"), required=False)
        stages = self._stages()
        obligations = self._obligations(provider_id, regime, stages)
        deadlock = self._deadlock(provider_id, regime)
        no_adr_letter = self._exceptions(regime)
        resolution = check.table(data, ("resolution",), required=regime is not None)
        check.unknown_keys(resolution, ("resolution",), {"template", "reopen_within"})
        resolution_template = check.string(resolution, ("resolution", "template"),
                                           default="") or None
        if resolution_template:
            self._template(provider_id, resolution_template, ("resolution", "template"))
        elif regime is not None:
            check.error(("resolution",), f"regime '{regime.id}' requires a resolution template "
                                         "(it restates the ADR right)")
        reopen_within = self._duration(resolution, ("resolution", "reopen_within"), required=False)

        if check.problems:
            return None
        rules = ProviderRules(
            id=provider_id, name=check.string(p, ("provider", "name")), reference_prefix=prefix,
            complaints_address=address.lower(), timezone=timezone, holiday_region=region,
            regime=regime, scheme=scheme,
            contact_point=check.string(p, ("provider", "contact_point"), default=""),
            acknowledgement_template=ack_template, next_steps=next_steps.strip(),
            weekly_hours=weekly, hours_confirmed=confirmed, closures=closures,
            extra_working_days=extra_days, stages=stages, obligations=obligations,
            deadlock=deadlock, no_adr_letter=no_adr_letter, reminder_before=reminder_before,
            resolution_template=resolution_template, reopen_within=reopen_within,
        )
        if not confirmed:
            self.warnings.append(self.check.doc.problem(
                ("hours", "confirmed"),
                f"warning: {provider_id}: business hours are an unconfirmed placeholder; "
                "confirm them with the provider before going live"))
        return None if check.problems else rules

    # ---------------------------------------------------------------- calendar

    def _intervals(self, value: Any, at: KeyPath) -> tuple[Interval, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.check.error(at, f"'{at[-1]}' must be a list of \"HH:MM-HH:MM\" strings")
            return ()
        intervals: list[Interval] = []
        for text in value:
            match = _INTERVAL.match(text)
            if not match:
                self.check.error(at, f"bad interval '{text}': write it as \"HH:MM-HH:MM\"")
                continue
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
                self.check.error(at, f"bad time in '{text}'")
                continue
            start, end = time(h1, m1), time(h2, m2)
            if start >= end:
                self.check.error(at, f"interval '{text}' must open before it closes")
                continue
            intervals.append((start, end))
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            if start < end:
                self.check.error(at, f"intervals overlap in {value}")
        return tuple(intervals)

    def _hours(self) -> tuple[tuple[tuple[Interval, ...], ...], bool]:
        hours = self.check.table(self.data, ("hours",))
        self.check.unknown_keys(hours, ("hours",), {"confirmed", *WEEKDAYS})
        weekly = tuple(self._intervals(hours.get(day, []), ("hours", day)) for day in WEEKDAYS)
        if hours and not any(weekly):
            self.check.error(("hours",), "no business hours on any day of the week")
        return weekly, self.check.boolean(hours, ("hours", "confirmed"), default=True)

    def _calendar(self) -> tuple[frozenset[date], tuple[tuple[date, tuple[Interval, ...]], ...]]:
        cal = self.check.table(self.data, ("calendar",), required=False)
        self.check.unknown_keys(cal, ("calendar",), {"closures", "extra_working_day"})
        closures: set[date] = set()
        raw = cal.get("closures", [])
        if not isinstance(raw, list):
            self.check.error(("calendar", "closures"), "'closures' must be a list of dates")
            raw = []
        for item in raw:
            if parsed := _as_date(item):
                closures.add(parsed)
            else:
                self.check.error(("calendar", "closures"), f"'{item}' is not a date like 2026-12-24")
        extra: list[tuple[date, tuple[Interval, ...]]] = []
        for index, item in enumerate(cal.get("extra_working_day", [])):
            at = ("calendar", "extra_working_day", index)
            if not isinstance(item, dict):
                self.check.error(at, "each extra_working_day must be a table")
                continue
            self.check.unknown_keys(item, at, {"date", "hours"})
            day = _as_date(item.get("date"))
            if day is None:
                self.check.error((*at, "date"), "'date' must be a date like 2026-12-27")
                continue
            if day in closures:
                self.check.error((*at, "date"), f"{day} is both a closure and an extra working day")
            intervals = self._intervals(item.get("hours", []), (*at, "hours"))
            if not intervals:
                self.check.error((*at, "hours"), "an extra working day needs hours")
            extra.append((day, intervals))
        return frozenset(closures), tuple(sorted(extra))

    # ---------------------------------------------------------------- durations

    def _duration(self, table: dict[str, Any], at: KeyPath, *, required: bool = True,
                  allow_regime: bool = False) -> Duration | None:
        key = str(at[-1])
        value = table.get(key)
        if value is None:
            if required:
                self.check.error(at[:-1], f"missing required key '{key}'")
            return None
        if value == "regime" and allow_regime:
            return None
        units = ", ".join(u.value for u in Unit)
        if not isinstance(value, dict) or len(value) != 1:
            extra = " or \"regime\"" if allow_regime else ""
            self.check.error(at, f"'{key}' must be an inline table with exactly one of: "
                                 f"{units}{extra}")
            return None
        [(unit_name, amount)] = value.items()
        try:
            unit = Unit(unit_name)
        except ValueError:
            self.check.error(at, f"unknown unit '{unit_name}' in '{key}' (use one of: {units})")
            return None
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            self.check.error(at, f"'{key}' needs a number of {unit.value}")
            return None
        try:
            number = Decimal(str(amount))
        except InvalidOperation:
            number = Decimal(-1)
        if number < 0 or (unit is not Unit.BUSINESS_HOURS and number != int(number)):
            self.check.error(at, f"'{key}': {unit.value} must be a whole number of at least 0"
                             if unit is not Unit.BUSINESS_HOURS else
                             f"'{key}': business_hours must be at least 0")
            return None
        return Duration(unit=unit, amount=number)

    # ---------------------------------------------------------------- stages and obligations

    def _stages(self) -> tuple[Stage, ...]:
        raw = self.data.get("stages", [])
        stages: list[Stage] = []
        for index, item in enumerate(raw if isinstance(raw, list) else []):
            at = ("stages", index)
            if not isinstance(item, dict):
                self.check.error(at, "each stages entry must be a table")
                continue
            self.check.unknown_keys(item, at, {"number", "name", "owner"})
            number = self.check.integer(item, (*at, "number"), default=index + 1, minimum=1)
            if number != index + 1:
                self.check.error((*at, "number"), f"stages must be numbered 1, 2, ... in order; "
                                                  f"expected {index + 1}")
            stages.append(Stage(number=number, name=self.check.string(item, (*at, "name")),
                                owner=self.check.string(item, (*at, "owner"))))
        if not stages:
            self.check.error(("stages",), "at least one [[stages]] entry is required")
        return tuple(stages)

    def _obligations(self, provider_id: str, regime: Regime | None,
                     stages: tuple[Stage, ...]) -> tuple[Obligation, ...]:
        raw = self.data.get("obligations", [])
        result: list[Obligation] = []
        seen: set[str] = set()
        for index, item in enumerate(raw if isinstance(raw, list) else []):
            at = ("obligations", index)
            if not isinstance(item, dict):
                self.check.error(at, "each obligations entry must be a table")
                continue
            obligation = self._obligation(item, at, provider_id, regime, stages)
            if obligation is None:
                continue
            if obligation.id in seen:
                self.check.error((*at, "id"), f"obligation id '{obligation.id}' is used twice")
            seen.add(obligation.id)
            result.append(obligation)
        if not raw:
            self.check.error(("obligations",), "at least one [[obligations]] entry is required")
        written = {item.get("id") for item in raw if isinstance(item, dict)} \
            if isinstance(raw, list) else set()
        if regime is not None and "adr_letter" not in written:
            self.check.error(("provider", "regime"),
                             f"regime '{regime.id}' requires an 'adr_letter' obligation")
        return tuple(result)

    def _obligation(self, item: dict[str, Any], at: KeyPath, provider_id: str,
                    regime: Regime | None, stages: tuple[Stage, ...]) -> Obligation | None:
        check = self.check
        problems_before = len(check.problems)
        check.unknown_keys(item, at, {
            "id", "quote", "severity", "trigger", "due", "hard_limit", "owner", "stage", "met_by",
            "reminder_before", "template", "repeat", "send_before", "agreed_cadence",
        })
        obligation_id = check.string(item, (*at, "id"))
        if not check.string(item, (*at, "quote")).strip():
            check.error((*at, "quote"), "quote the sentence of the complaints code this comes from")
        severity = check.string(item, (*at, "severity"), choices=tuple(s.value for s in Severity))
        trigger = check.string(item, (*at, "trigger"), choices=TRIGGERS)
        owner = check.string(item, (*at, "owner"), choices=tuple(o.value for o in Owner))
        due = self._duration(item, (*at, "due"), allow_regime=regime is not None)
        from_regime = item.get("due") == "regime" and regime is not None
        if due is None and not from_regime:
            return None
        hard_limit = self._duration(item, (*at, "hard_limit"), required=False)
        repeat = self._duration(item, (*at, "repeat"), required=False)
        send_before = self._duration(item, (*at, "send_before"), required=False)
        reminder_before = self._duration(item, (*at, "reminder_before"), required=False)
        stage = check.integer(item, (*at, "stage"), default=1, minimum=1)
        if stage > len(stages):
            check.error((*at, "stage"), f"no stage {stage} (there are {len(stages)})")
        met_by = check.string_list(item, (*at, "met_by"))
        for kind in met_by:
            if kind not in MET_BY:
                check.error((*at, "met_by"), f"unknown met_by '{kind}' (use: {', '.join(MET_BY)})")
        if not met_by:
            check.error((*at, "met_by"), "say what meets this obligation (met_by)")
        template = check.string(item, (*at, "template"), default="") or None
        if owner == Owner.AUTOMATIC.value and template is None:
            check.error((*at, "owner"), "an automatic obligation needs a template to send")
        if template:
            self._template(provider_id, template, (*at, "template"))
        agreed = check.boolean(item, (*at, "agreed_cadence"), default=False)
        if repeat is not None:
            if repeat.amount == 0:
                check.error((*at, "repeat"), "a repeat of zero would fire for ever")
            if hard_limit is not None:
                check.error((*at, "hard_limit"), "a repeating obligation cannot have a hard_limit")
            if from_regime:
                check.error((*at, "repeat"), "the regime's ADR letter cannot repeat")
        elif agreed:
            check.error((*at, "agreed_cadence"), "agreed_cadence needs a repeat to replace")
        elif send_before is not None:
            check.error((*at, "send_before"), "send_before only applies to repeating obligations")
        if from_regime and owner != Owner.AUTOMATIC.value:
            check.error((*at, "owner"), "the regime's ADR letter must be sent automatically")
        if obligation_id == "adr_letter" and regime is not None and due is not None:
            self._not_looser_than_regime(due, regime, (*at, "due"))
        if due is not None and hard_limit is not None:
            self._hard_limit_not_before_due(due, hard_limit, (*at, "hard_limit"))
        if len(check.problems) > problems_before:
            return None
        return Obligation(
            id=obligation_id, quote=str(item.get("quote", "")), severity=Severity(severity),
            trigger=trigger, due=due, owner=Owner(owner), met_by=frozenset(met_by), stage=stage,
            hard_limit=hard_limit, template=template, repeat=repeat, send_before=send_before,
            reminder_before=reminder_before, agreed_cadence=agreed,
        )

    def _not_looser_than_regime(self, due: Duration, regime: Regime, at: KeyPath) -> None:
        if not due.unit.is_calendar or due.unit is Unit.MINUTES:
            self.check.error(at, "the ADR letter's due must be \"regime\" or calendar weeks/days")
            return
        days = due.amount * (7 if due.unit is Unit.WEEKS else 1)
        for threshold in regime.adr_thresholds:
            if days > threshold.weeks * 7:
                since = f" for complaints first raised from {threshold.starts}" \
                    if threshold.starts else ""
                self.check.error(at, f"looser than regime {regime.id}: it requires the ADR letter "
                                     f"at {threshold.weeks} weeks{since}")

    def _hard_limit_not_before_due(self, due: Duration, hard_limit: Duration, at: KeyPath) -> None:
        """A hard limit earlier than the due time is impossible; checked over a sample week."""
        if self.calendar_spec is None:
            return
        calendar = BusinessCalendar.build(self.calendar_spec)
        starts = [datetime(2026, 6, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(0, 168, 5)]
        if any(due_at(calendar, hard_limit, start) < due_at(calendar, due, start)
               for start in starts):
            self.check.error(at, "hard_limit can fall before the due time")

    # ---------------------------------------------------------------- deadlock and exceptions

    def _deadlock(self, provider_id: str, regime: Regime | None) -> DeadlockPolicy | None:
        table = self.check.table(self.data, ("deadlock",), required=False)
        if not table:
            if regime is not None and regime.deadlock_letter:
                self.check.error(("provider", "regime"),
                                 f"regime '{regime.id}' requires a [deadlock] table")
            return None
        at = ("deadlock",)
        self.check.unknown_keys(table, at, {"on_request", "decision_deadline", "refusal_grounds",
                                            "template"})
        grounds = self.check.string_list(table, (*at, "refusal_grounds"))
        allowed = regime.deadlock_refusal_grounds if regime else frozenset(REFUSAL_GROUNDS)
        for ground in grounds:
            if ground not in allowed:
                self.check.error((*at, "refusal_grounds"),
                                 f"refusal ground '{ground}' is not allowed by "
                                 f"{'regime ' + regime.id if regime else 'the rule language'} "
                                 f"(allowed: {', '.join(sorted(allowed))})")
        template = self.check.string(table, (*at, "template"), default="deadlock_letter")
        self._template(provider_id, template, (*at, "template"))
        deadline = self._duration(table, (*at, "decision_deadline"))
        if deadline is None:
            return None
        return DeadlockPolicy(
            on_request=self.check.boolean(table, (*at, "on_request"), default=False),
            decision_deadline=deadline, refusal_grounds=frozenset(grounds), template=template,
        )

    def _exceptions(self, regime: Regime | None) -> frozenset[str]:
        table = self.check.table(self.data, ("exceptions",), required=False)
        self.check.unknown_keys(table, ("exceptions",), {"no_adr_letter"})
        listed = self.check.string_list(table, ("exceptions", "no_adr_letter"))
        allowed = regime.exceptions if regime else frozenset(EXCEPTIONS)
        for name in listed:
            if name not in allowed:
                self.check.error(("exceptions", "no_adr_letter"),
                                 f"exception '{name}' is not allowed by "
                                 f"{'regime ' + regime.id if regime else 'the rule language'} "
                                 f"(allowed: {', '.join(sorted(allowed))})")
        return frozenset(listed)

    def _template(self, provider_id: str, name: str, at: KeyPath) -> None:
        if self.template_exists is not None and provider_id and name \
                and not self.template_exists(provider_id, name):
            self.check.error(at, f"unknown template '{name}' (no {name}.subject.txt, .txt and "
                                 ".html in the templates folder)")


def _as_date(value: Any) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _load_sub_file(path: Path, referrer: Checker, at: KeyPath) -> Checker | None:
    if not path.is_file():
        referrer.error(at, f"no such file {path}")
        return None
    try:
        return Checker(load_toml(path))
    except TomlSyntaxError as exc:
        referrer.problems.append(exc.problem)
        return None


def _load_regime(path: Path, referrer: Checker, at: KeyPath) -> Regime | None:
    check = _load_sub_file(path, referrer, at)
    if check is None:
        return None
    r = check.table(check.doc.data, ("regime",))
    check.unknown_keys(r, ("regime",), {"id", "name", "referral_window_months", "adr_threshold",
                                        "exceptions", "deadlock_refusal_grounds",
                                        "deadlock_letter"})
    thresholds: list[AdrThreshold] = []
    raw = r.get("adr_threshold", [])
    if not isinstance(raw, list) or not raw:
        check.error(("regime",), "at least one [[regime.adr_threshold]] is required")
        raw = []
    for index, item in enumerate(raw):
        here = ("regime", "adr_threshold", index)
        if not isinstance(item, dict):
            check.error(here, "each adr_threshold must be a table")
            continue
        check.unknown_keys(item, here, {"weeks", "first_raised_before", "first_raised_from"})
        bounds = []
        for key in ("first_raised_from", "first_raised_before"):
            value = item.get(key)
            parsed = _as_date(value) if value is not None else None
            if value is not None and parsed is None:
                check.error((*here, key), f"'{key}' must be a date like 2026-04-08")
            bounds.append(parsed)
        thresholds.append(AdrThreshold(
            weeks=check.integer(item, (*here, "weeks"), default=8, minimum=1, maximum=52),
            starts=bounds[0], ends=bounds[1]))
    exceptions = check.string_list(r, ("regime", "exceptions")) or EXCEPTIONS
    grounds = check.string_list(r, ("regime", "deadlock_refusal_grounds")) or REFUSAL_GROUNDS
    for key, values, allowed in (("exceptions", exceptions, EXCEPTIONS),
                                 ("deadlock_refusal_grounds", grounds, REFUSAL_GROUNDS)):
        for value in values:
            if value not in allowed:
                check.error(("regime", key), f"unknown value '{value}' (use: {', '.join(allowed)})")
    regime = Regime(
        id=check.string(r, ("regime", "id")), name=check.string(r, ("regime", "name")),
        referral_window_months=check.integer(r, ("regime", "referral_window_months"), default=12,
                                             minimum=1),
        adr_thresholds=tuple(thresholds), exceptions=frozenset(exceptions),
        deadlock_refusal_grounds=frozenset(grounds),
        deadlock_letter=check.boolean(r, ("regime", "deadlock_letter"), default=True),
    )
    referrer.problems.extend(check.problems)
    return regime


def _load_scheme(path: Path, referrer: Checker, at: KeyPath) -> Scheme | None:
    check = _load_sub_file(path, referrer, at)
    if check is None:
        return None
    s = check.table(check.doc.data, ("scheme",))
    check.unknown_keys(s, ("scheme",), {"id", "name", "web", "phone", "email", "post", "free"})
    scheme = Scheme(
        id=check.string(s, ("scheme", "id")), name=check.string(s, ("scheme", "name")),
        web=check.string(s, ("scheme", "web"), default=""),
        phone=check.string(s, ("scheme", "phone"), default=""),
        email=check.string(s, ("scheme", "email"), default=""),
        post=check.string(s, ("scheme", "post"), default=""),
        free=check.boolean(s, ("scheme", "free"), default=True),
    )
    referrer.problems.extend(check.problems)
    return scheme
