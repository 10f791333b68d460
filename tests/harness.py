"""Drive the real worker in tests: write a config for given servers, migrate, build, run passes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.adapters.db import upgrade
from worker.bootstrap import App, build_app
from worker.services import queries
from worker.services.cycle import PassResult

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
PASSWORD = "test-password"

PROVIDER_ADDRESSES = {
    "claranet-soho": "complaints@claranetsoho.co.uk",
    "halo-tech-group": "complaints@thehalotechgroup.com",
    "infinity-group": "customerservices@infinitygroup.co.uk",
    "all-communications": "info@allcommunications.com",
    "communications-ombudsman": "customer-relations@trustalliancegroup.org",
}


@dataclass(frozen=True, kw_only=True)
class MailboxSpec:
    name: str
    rules: str
    address: str
    processed_folder: str | None = None
    acknowledge: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def per_recipient(mail: Iterable[tuple[str, Sequence[str]]]) -> dict[str, list[str]]:
    """The Message-IDs of (Message-ID, recipients) pairs by recipient, in their order."""
    found: dict[str, list[str]] = {}
    for message_id, recipients in mail:
        for address in recipients:
            found.setdefault(address, []).append(message_id)
    return found


def mailbox_for(rules: str, *, name: str | None = None, **kwargs: Any) -> MailboxSpec:
    return MailboxSpec(name=name or rules, rules=rules, address=PROVIDER_ADDRESSES[rules], **kwargs)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    path: Path,
    *,
    db_url: str,
    imap_port: int,
    smtp_port: int,
    mailboxes: Sequence[MailboxSpec],
    worker: dict[str, Any] | None = None,
    smtp: dict[str, Any] | None = None,
) -> Path:
    lines = ["[worker]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in (worker or {}).items()]
    lines += [
        "",
        "[database]",
        f"url = {_toml_value(db_url)}",
        "",
        "[paths]",
        f"rules = {_toml_value(str(ROOT / 'rules'))}",
        f"templates = {_toml_value(str(ROOT / 'templates' / 'emails'))}",
        "",
        "[smtp]",
        'host = "127.0.0.1"',
        f"port = {smtp_port}",
        'security = "none"',
        *(f"{k} = {_toml_value(v)}" for k, v in (smtp or {}).items()),
        "",
    ]
    for box in mailboxes:
        settings: dict[str, Any] = {
            "name": box.name,
            "rules": box.rules,
            "address": box.address,
            "host": "127.0.0.1",
            "port": imap_port,
            "security": "none",
            "username": box.address,
            "password": PASSWORD,
            "acknowledge": box.acknowledge,
            "staff": [f"staff@{box.address.rpartition('@')[2]}"],
            **box.extra,
        }
        if box.processed_folder:
            settings["processed_folder"] = box.processed_folder
        lines += ["[[mailboxes]]", *(f"{k} = {_toml_value(v)}" for k, v in settings.items()), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


class Worker:
    """The real worker built from a written config, as `complaints-worker once` builds it."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.app: App = build_app(config_path)

    @classmethod
    def create(cls, tmp_path: Path, *, db_url: str | None = None, **kwargs: Any) -> Worker:
        url = db_url or f"sqlite:///{tmp_path / 'worker.db'}"
        path = write_config(tmp_path / "config.toml", db_url=url, **kwargs)
        upgrade(url)
        return cls(path)

    def restart(self) -> Worker:
        """A fresh process's view: new engine, new in-memory state, same database."""
        self.close()
        return Worker(self.config_path)

    def once(self, now: datetime, **kwargs: Any) -> PassResult:
        return self.app.cycle.run_pass(now=now, **kwargs)

    def cases(self) -> list[dict[str, Any]]:
        with self.app.sessions() as session:
            return queries.list_cases(session)

    def case(self, reference: str) -> dict[str, Any]:
        with self.app.sessions() as session:
            found = queries.show_case(session, reference)
        assert found is not None, f"no case {reference}"
        return found

    def status(self) -> dict[str, Any]:
        with self.app.sessions() as session:
            return queries.status(session, self.app.config)

    def close(self) -> None:
        self.app.close()
