"""Load provider rule files (rules/<id>.toml) with their regime and scheme files, checking each key."""

from __future__ import annotations

import re
import zoneinfo
from datetime import date
from pathlib import Path
from typing import Any

from worker.adapters.tomlfile import Checker, TomlSyntaxError, load_toml
from worker.core.addresses import address_problem
from worker.core.rules import AdrThreshold, ProviderRules, Regime, Scheme
from worker.errors import Problem, RuleError

HOLIDAY_REGIONS = ("GB-ENG", "GB-SCT", "GB-NIR")
_PREFIX = re.compile(r"^[A-Z]{2,5}$")


def provider_files(rules_dir: Path) -> list[Path]:
    return sorted(p for p in rules_dir.glob("*.toml") if p.is_file())


def load_rule_set(rules_dir: Path, paths: list[Path] | None = None) -> dict[str, ProviderRules]:
    """Load every provider file (or just `paths`); raise RuleError listing every problem."""
    problems: list[Problem] = []
    providers: dict[str, ProviderRules] = {}
    prefixes: dict[str, str] = {}
    for path in paths if paths is not None else provider_files(rules_dir):
        try:
            rules, found = _load_provider(path, path.resolve().parent)
        except TomlSyntaxError as exc:
            problems.append(exc.problem)
            continue
        problems.extend(found)
        if rules is None:
            continue
        if rules.reference_prefix in prefixes:
            problems.append(Problem(str(path), 1, f"reference prefix '{rules.reference_prefix}' "
                                    f"is also used by {prefixes[rules.reference_prefix]}"))
        prefixes[rules.reference_prefix] = rules.id
        providers[rules.id] = rules
    if problems:
        raise RuleError(problems)
    return providers


def _load_provider(path: Path, rules_dir: Path) -> tuple[ProviderRules | None, list[Problem]]:
    doc = load_toml(path)
    check = Checker(doc)
    check.unknown_keys(doc.data, (), {"provider", "acknowledgement"})
    p = check.table(doc.data, ("provider",))
    check.unknown_keys(p, ("provider",), {
        "id", "name", "reference_prefix", "complaints_address", "timezone", "holiday_region",
        "regime", "adr_scheme", "contact_point",
    })
    provider_id = check.string(p, ("provider", "id"))
    if provider_id and provider_id != path.stem:
        check.error(("provider", "id"), f"id '{provider_id}' must match the file name '{path.stem}'")
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
        regime = _load_regime(rules_dir / "regimes" / f"{regime_id}.toml", check, ("provider", "regime"))
    scheme_id = check.string(p, ("provider", "adr_scheme"), default="")
    scheme = None
    if scheme_id:
        scheme = _load_scheme(rules_dir / "schemes" / f"{scheme_id}.toml", check,
                              ("provider", "adr_scheme"))
    elif regime is not None:
        check.error(("provider", "adr_scheme"), f"regime '{regime_id}' requires an adr_scheme")

    ack = check.table(doc.data, ("acknowledgement",))
    check.unknown_keys(ack, ("acknowledgement",), {"template", "next_steps"})
    template = check.string(ack, ("acknowledgement", "template"), default="acknowledgement")
    next_steps = check.string(ack, ("acknowledgement", "next_steps"))
    if check.problems:
        return None, check.problems
    return ProviderRules(
        id=provider_id, name=check.string(p, ("provider", "name")), reference_prefix=prefix,
        complaints_address=address.lower(), timezone=timezone, holiday_region=region,
        regime=regime, scheme=scheme,
        contact_point=check.string(p, ("provider", "contact_point"), default=""),
        acknowledgement_template=template, next_steps=next_steps.strip(),
    ), []


def _load_sub_file(path: Path, referrer: Checker, at: tuple[str, ...]) -> Checker | None:
    if not path.is_file():
        referrer.error(at, f"no such file {path}")
        return None
    try:
        return Checker(load_toml(path))
    except TomlSyntaxError as exc:
        referrer.problems.append(exc.problem)
        return None


def _load_regime(path: Path, referrer: Checker, at: tuple[str, ...]) -> Regime | None:
    check = _load_sub_file(path, referrer, at)
    if check is None:
        return None
    r = check.table(check.doc.data, ("regime",))
    check.unknown_keys(r, ("regime",), {"id", "name", "referral_window_months", "adr_threshold"})
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
        thresholds.append(AdrThreshold(
            weeks=check.integer(item, (*here, "weeks"), default=8, minimum=1, maximum=8),
            starts=_date(check, item, (*here, "first_raised_from")),
            ends=_date(check, item, (*here, "first_raised_before")),
        ))
    regime = Regime(
        id=check.string(r, ("regime", "id")), name=check.string(r, ("regime", "name")),
        referral_window_months=check.integer(r, ("regime", "referral_window_months"), default=12,
                                             minimum=1),
        adr_thresholds=tuple(thresholds),
    )
    referrer.problems.extend(check.problems)
    return regime


def _date(check: Checker, table: dict[str, Any], at: tuple[str | int, ...]) -> date | None:
    value = table.get(str(at[-1]))
    if value is None:
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    check.error(at, f"'{at[-1]}' must be a date like 2026-04-08")
    return None


def _load_scheme(path: Path, referrer: Checker, at: tuple[str, ...]) -> Scheme | None:
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
