"""Wire the worker together. The only module that names concrete adapters."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from worker.adapters.db import make_engine, session_factory
from worker.adapters.imap import ImapMailbox
from worker.adapters.rules import load_rule_set
from worker.adapters.smtp import SmtpSender
from worker.adapters.templates import TemplateRenderer
from worker.config import Config, load_config
from worker.core.letters import letter_context
from worker.core.rules import ProviderRules
from worker.errors import ConfigError, Problem, TemplateError
from worker.services.case_mail import sample_staff_context
from worker.services.cycle import Cycle
from worker.services.dispatch import DispatchService
from worker.services.ingest import IngestService
from worker.services.rules_watch import RulesWatcher
from worker.services.sweep import TimerSweep
from worker.services.timers import Calendars, replan_open_cases

log = logging.getLogger(__name__)


@dataclass(slots=True)
class App:
    config: Config
    engine: Engine
    sessions: sessionmaker[Session]
    providers: dict[str, ProviderRules]
    renderer: TemplateRenderer
    cycle: Cycle

    def close(self) -> None:
        self.engine.dispose()


def load_checked(config_path: Path) -> tuple[Config, dict[str, ProviderRules], TemplateRenderer]:
    """Config, rules and templates, cross-checked; raises ConfigError/RuleError with every problem."""
    config = load_config(config_path)
    renderer = TemplateRenderer(config.templates_dir)
    return config, check_rules(config, renderer), renderer


def check_rules(config: Config, renderer: TemplateRenderer) -> dict[str, ProviderRules]:
    """Load the rule files and check them against the config's mailboxes and the templates.

    Start-up and every reload run exactly these checks, so a reload accepts nothing that
    start-up would refuse.
    """
    rule_set = load_rule_set(
        config.rules_dir,
        template_exists=lambda provider, name: not renderer.missing(provider, name))
    for warning in rule_set.warnings:
        log.warning("%s", warning)
    providers = rule_set.providers
    problems: list[Problem] = []
    for index, mailbox in enumerate(config.mailboxes):
        rules = providers.get(mailbox.rules)
        if rules is None:
            problems.append(Problem(str(config.path), _mailbox_line(config.path, index),
                                    f"mailbox '{mailbox.name}': no rule file "
                                    f"{config.rules_dir / (mailbox.rules + '.toml')}"))
            continue
        problems.extend(_template_problems(config, renderer, rules, index))
    if problems:
        raise ConfigError(problems)
    return providers


STAFF_TEMPLATES = ("staff_notification", "confirmation", "command_error", "reminder",
                   "escalation", "alert")


def templates_used(rules: ProviderRules) -> list[str]:
    names = [rules.acknowledgement_template, *STAFF_TEMPLATES]
    names += [o.template for o in rules.obligations if o.template]
    if rules.deadlock:
        names.append(rules.deadlock.template)
    if rules.resolution_template:
        names.append(rules.resolution_template)
    return list(dict.fromkeys(names))


def _template_problems(config: Config, renderer: TemplateRenderer, rules: ProviderRules,
                       index: int) -> list[Problem]:
    """Render each template once with sample data, so a broken one fails at start-up, not on mail."""
    sample = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
    context = letter_context(rules=rules, reference=f"{rules.reference_prefix}-2026-000001",
                             customer_name="Sample Customer", customer_address="customer@example.com",
                             subject="Sample complaint", received_at=sample, first_raised_at=sample)
    staff_context = sample_staff_context(rules)
    problems = []
    for name in templates_used(rules):
        missing = renderer.missing(rules.id, name)
        if missing:
            problems.append(Problem(str(config.path), _mailbox_line(config.path, index),
                                    f"provider {rules.id}: template file(s) "
                                    f"{', '.join(missing)} not found in {config.templates_dir}"))
            continue
        try:
            renderer.render(rules.id, name, staff_context if name in STAFF_TEMPLATES else context)
        except TemplateError as exc:
            problems.append(Problem(str(config.path), _mailbox_line(config.path, index),
                                    f"provider {rules.id}: {exc}"))
    return problems


def _mailbox_line(config_path: Path, index: int) -> int:
    """The line of a mailbox's `rules` key; only needed to report a problem, so read then."""
    from worker.adapters.tomlfile import load_toml

    return load_toml(config_path).line("mailboxes", index, "rules")


def build_app(config_path: Path) -> App:
    config, providers, renderer = load_checked(config_path)
    engine = make_engine(config.database_url)
    sessions = session_factory(engine)
    calendars = Calendars()
    ingest = IngestService(sessions=sessions, providers=providers, renderer=renderer, config=config,
                           calendars=calendars)
    dispatch = DispatchService(sessions=sessions, sender_factory=lambda: SmtpSender(config.smtp),
                               settings=config.worker, connections=config.smtp.connections)
    app_holder: list[App] = []

    def load() -> tuple[dict[str, ProviderRules], TemplateRenderer]:
        checked = TemplateRenderer(config.templates_dir)
        return check_rules(config, checked), checked

    def use_rules(loaded: tuple[dict[str, ProviderRules], TemplateRenderer], now: datetime) -> None:
        new, checked = loaded
        replan_open_cases(sessions, calendars, ingest.providers, new, now=now)
        ingest.providers = new
        renderer.adopt(checked)
        app_holder[0].providers = new
        log.info("rule files and templates reloaded: %s", ", ".join(sorted(new)))

    watcher = RulesWatcher(folders=(config.rules_dir, config.templates_dir), load=load,
                           on_change=use_rules)
    sweep = TimerSweep(sessions=sessions, desk=ingest.desk, config=config,
                       providers=lambda: ingest.providers)
    cycle = Cycle(config=config, sessions=sessions, ingest=ingest, dispatch=dispatch,
                  mailbox_factory=ImapMailbox, rules_watcher=watcher, sweep=sweep)
    app = App(config=config, engine=engine, sessions=sessions, providers=providers,
               renderer=renderer, cycle=cycle)
    app_holder.append(app)
    return app
