"""The worker's config file: loaded once, validated into typed objects, every problem reported."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.adapters.tomlfile import Checker, TomlSyntaxError, load_toml
from worker.core.addresses import address_problem
from worker.errors import ConfigError

SECURITY_CHOICES = ("tls", "starttls", "none")
DEFAULT_CONFIG_PATH = "config.toml"


@dataclass(frozen=True, slots=True)
class Secret:
    """A password or token read from the environment; never shown by repr or str."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return "***"


@dataclass(frozen=True, kw_only=True, slots=True)
class TlsSettings:
    security: str
    # A CA bundle to trust instead of the system store (private CAs, test servers).
    ca_file: Path | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SmtpConfig:
    host: str
    port: int
    tls: TlsSettings
    username: str
    password: Secret | None
    timeout_seconds: int
    # The envelope sender (MAIL FROM); empty means each message's From address.
    envelope_from: str
    # Messages in flight at once, one SMTP connection each (never two to one recipient).
    connections: int


@dataclass(frozen=True, kw_only=True, slots=True)
class MailboxConfig:
    name: str
    rules: str
    address: str
    host: str
    port: int
    tls: TlsSettings
    username: str
    auth: str
    password: Secret | None
    token_command: str
    folder: str
    processed_folder: str | None
    processed_keyword: str
    staff: tuple[str, ...]
    notify: tuple[str, ...]
    # Authentication-Results authserv-ids of our own receiving servers (RFC 8601).
    trusted_authserv_ids: tuple[str, ...]
    # Stage owner roles of the rule file (team-leader, manager, ...) -> their addresses.
    roles: dict[str, tuple[str, ...]]
    acknowledge: bool
    fetch_batch: int


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerSettings:
    poll_interval_seconds: int
    sweep_interval_seconds: int
    # Automatic mail (acknowledgements, updates) to one recipient, per hour and per day.
    rate_limit_per_hour: int
    rate_limit_per_day: int
    # Automatic mail to everyone together, per rolling hour: over it, mail waits (never dropped).
    global_rate_limit_per_hour: int
    # Failed attempts at one message (an error, or the process dying on it) before quarantine.
    poison_attempts: int
    max_message_bytes: int
    outbox_retry_base_seconds: int
    outbox_retry_max_seconds: int
    outbox_give_up_hours: int
    # How long a worker's claim on the outbox rows it is sending lasts (several workers).
    outbox_claim_seconds: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Config:
    path: Path
    database_url: str
    rules_dir: Path
    templates_dir: Path
    worker: WorkerSettings
    smtp: SmtpConfig
    mailboxes: tuple[MailboxConfig, ...]

    @property
    def own_addresses(self) -> frozenset[str]:
        return frozenset(m.address.lower() for m in self.mailboxes)


def config_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get("COMPLAINTS_WORKER_CONFIG") or DEFAULT_CONFIG_PATH)


def load_config(path: Path, environ: dict[str, str] | None = None) -> Config:
    """Read and validate the config file; raise ConfigError listing every problem."""
    env = dict(os.environ if environ is None else environ)
    try:
        doc = load_toml(path)
    except TomlSyntaxError as exc:
        raise ConfigError([exc.problem]) from exc
    check = Checker(doc)
    base = path.resolve().parent
    data = doc.data
    check.unknown_keys(data, (), {"worker", "database", "paths", "smtp", "mailboxes"})

    worker_t = check.table(data, ("worker",), required=False)
    check.unknown_keys(worker_t, ("worker",), {
        "poll_interval_seconds", "sweep_interval_seconds", "rate_limit_per_hour",
        "rate_limit_per_day", "global_rate_limit_per_hour", "poison_attempts",
        "max_message_bytes", "outbox_retry_base_seconds", "outbox_retry_max_seconds",
        "outbox_give_up_hours", "outbox_claim_seconds",
    })
    worker = WorkerSettings(
        poll_interval_seconds=check.integer(
            worker_t, ("worker", "poll_interval_seconds"), default=60, minimum=1),
        sweep_interval_seconds=check.integer(
            worker_t, ("worker", "sweep_interval_seconds"), default=30, minimum=1),
        rate_limit_per_hour=check.integer(
            worker_t, ("worker", "rate_limit_per_hour"), default=5, minimum=1),
        rate_limit_per_day=check.integer(
            worker_t, ("worker", "rate_limit_per_day"), default=20, minimum=1),
        global_rate_limit_per_hour=check.integer(
            worker_t, ("worker", "global_rate_limit_per_hour"), default=500, minimum=1),
        poison_attempts=check.integer(
            worker_t, ("worker", "poison_attempts"), default=3, minimum=1, maximum=100),
        max_message_bytes=check.integer(
            worker_t, ("worker", "max_message_bytes"), default=25 * 1024 * 1024, minimum=1024),
        outbox_retry_base_seconds=check.integer(
            worker_t, ("worker", "outbox_retry_base_seconds"), default=30, minimum=1),
        outbox_retry_max_seconds=check.integer(
            worker_t, ("worker", "outbox_retry_max_seconds"), default=1800, minimum=1),
        outbox_give_up_hours=check.integer(
            worker_t, ("worker", "outbox_give_up_hours"), default=48, minimum=1),
        outbox_claim_seconds=check.integer(
            worker_t, ("worker", "outbox_claim_seconds"), default=300, minimum=5),
    )

    db_t = check.table(data, ("database",), required=False)
    check.unknown_keys(db_t, ("database",), {"url"})
    database_url = _resolve_sqlite_url(
        check.string(db_t, ("database", "url"), default="sqlite:///complaints.db"), base)

    paths_t = check.table(data, ("paths",), required=False)
    check.unknown_keys(paths_t, ("paths",), {"rules", "templates"})
    rules_dir = base / check.string(paths_t, ("paths", "rules"), default="rules")
    templates_dir = base / check.string(paths_t, ("paths", "templates"), default="templates/emails")
    for key, directory in (("rules", rules_dir), ("templates", templates_dir)):
        if not directory.is_dir():
            check.error(("paths", key), f"directory '{directory}' does not exist")

    smtp_t = check.table(data, ("smtp",))
    check.unknown_keys(smtp_t, ("smtp",), {
        "host", "port", "security", "username", "password", "password_env", "timeout_seconds",
        "tls_ca_file", "envelope_from", "connections",
    })
    smtp = SmtpConfig(
        host=check.string(smtp_t, ("smtp", "host"), default="localhost"),
        port=check.integer(smtp_t, ("smtp", "port"), default=587, minimum=1, maximum=65535),
        tls=_tls(check, smtp_t, ("smtp",), base, default="starttls"),
        username=check.string(smtp_t, ("smtp", "username"), default=""),
        password=_secret(check, smtp_t, ("smtp",), env),
        timeout_seconds=check.integer(smtp_t, ("smtp", "timeout_seconds"), default=60, minimum=1),
        envelope_from=check.string(smtp_t, ("smtp", "envelope_from"), default=""),
        connections=check.integer(smtp_t, ("smtp", "connections"), default=2, minimum=1,
                                  maximum=8),
    )
    if smtp.envelope_from and (why := address_problem(smtp.envelope_from)):
        check.error(("smtp", "envelope_from"), f"invalid address: {why}")

    mailboxes = _mailboxes(check, data, base, env)
    if check.problems:
        raise ConfigError(check.problems)
    return Config(
        path=path, database_url=database_url, rules_dir=rules_dir, templates_dir=templates_dir,
        worker=worker, smtp=smtp, mailboxes=mailboxes,
    )


_MAILBOX_KEYS = {
    "name", "rules", "address", "host", "port", "security", "tls_ca_file", "username", "auth",
    "password", "password_env", "token_command", "folder", "processed_folder", "processed_keyword",
    "staff", "notify", "trusted_authserv_ids", "roles", "acknowledge", "fetch_batch",
}


def _mailboxes(
    check: Checker, data: dict[str, Any], base: Path, env: dict[str, str]
) -> tuple[MailboxConfig, ...]:
    raw = data.get("mailboxes", [])
    if not isinstance(raw, list) or not raw:
        check.error(("mailboxes",), "at least one [[mailboxes]] entry is required")
        return ()
    result: list[MailboxConfig] = []
    names: set[str] = set()
    for index, table in enumerate(raw):
        at = ("mailboxes", index)
        if not isinstance(table, dict):
            check.error(at, "each mailboxes entry must be a table")
            continue
        check.unknown_keys(table, at, _MAILBOX_KEYS)
        name = check.string(table, (*at, "name"))
        if name in names:
            check.error((*at, "name"), f"mailbox name '{name}' is used twice")
        names.add(name)
        address = check.string(table, (*at, "address"))
        if address and (why := address_problem(address)):
            check.error((*at, "address"), f"invalid address: {why}")
        auth = check.string(table, (*at, "auth"), default="password", choices=("password", "xoauth2"))
        token_command = check.string(table, (*at, "token_command"), default="")
        if auth == "xoauth2" and not token_command:
            check.error((*at, "auth"), "auth = \"xoauth2\" needs token_command")
        staff = check.string_list(table, (*at, "staff"))
        notify = check.string_list(table, (*at, "notify"))
        for key, addresses in (("staff", staff), ("notify", notify)):
            for item in addresses:
                if why := address_problem(item):
                    check.error((*at, key), f"invalid address '{item}': {why}")
        keyword = check.string(table, (*at, "processed_keyword"), default="$ComplaintsWorkerDone")
        if not keyword or any(c in keyword for c in ' ()"%*\\]{') or keyword.startswith("\\"):
            check.error((*at, "processed_keyword"), "must be an IMAP keyword (no spaces, no \\)")
        processed = check.string(table, (*at, "processed_folder"), default="")
        result.append(MailboxConfig(
            name=name,
            rules=check.string(table, (*at, "rules")),
            address=address.lower(),
            host=check.string(table, (*at, "host")),
            port=check.integer(table, (*at, "port"), default=993, minimum=1, maximum=65535),
            tls=_tls(check, table, at, base, default="tls"),
            username=check.string(table, (*at, "username"), default=address),
            auth=auth,
            password=_secret(check, table, at, env) if auth == "password" else None,
            token_command=token_command,
            folder=check.string(table, (*at, "folder"), default="INBOX"),
            processed_folder=processed or None,
            processed_keyword=keyword,
            staff=tuple(a.lower() for a in staff),
            notify=tuple(a.lower() for a in notify),
            trusted_authserv_ids=tuple(
                t.lower() for t in check.string_list(table, (*at, "trusted_authserv_ids"))),
            roles=_roles(check, table, at),
            acknowledge=check.boolean(table, (*at, "acknowledge"), default=True),
            fetch_batch=check.integer(table, (*at, "fetch_batch"), default=100, minimum=1,
                                      maximum=1000),
        ))
    return tuple(result)


def _roles(check: Checker, table: dict[str, Any], at: tuple[str | int, ...]
           ) -> dict[str, tuple[str, ...]]:
    raw = table.get("roles", {})
    if not isinstance(raw, dict):
        check.error((*at, "roles"), "'roles' must be a table of role = [addresses]")
        return {}
    roles: dict[str, tuple[str, ...]] = {}
    for role in raw:
        values = check.string_list(raw, (*at, "roles", role))
        for address in values:
            if why := address_problem(address):
                check.error((*at, "roles", role), f"invalid address '{address}': {why}")
        roles[role] = tuple(a.lower() for a in values)
    return roles


def _tls(
    check: Checker, table: dict[str, Any], at: tuple[str | int, ...], base: Path, *, default: str
) -> TlsSettings:
    security = check.string(table, (*at, "security"), default=default, choices=SECURITY_CHOICES)
    ca = check.string(table, (*at, "tls_ca_file"), default="")
    ca_file = base / ca if ca else None
    if ca_file is not None and not ca_file.is_file():
        check.error((*at, "tls_ca_file"), f"file '{ca_file}' does not exist")
    return TlsSettings(security=security, ca_file=ca_file)


def _secret(
    check: Checker, table: dict[str, Any], at: tuple[str | int, ...], env: dict[str, str]
) -> Secret | None:
    if "password" in table and "password_env" in table:
        check.error((*at, "password"), "give either password or password_env, not both")
    if "password" in table:
        return Secret(check.string(table, (*at, "password")))
    variable = check.string(table, (*at, "password_env"), default="")
    if not variable:
        return None
    if variable not in env:
        check.error((*at, "password_env"), f"environment variable {variable} is not set")
        return None
    return Secret(env[variable])


def _resolve_sqlite_url(url: str, base: Path) -> str:
    """Make a relative SQLite path relative to the config file, not to the current directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(base / url[len(prefix):])
    return url
