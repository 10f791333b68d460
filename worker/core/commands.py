"""Staff commands: `#` lines at the top of a staff reply. Parsed here; applied by the service.

A reply with any unknown or malformed command changes nothing: the sender gets an error reply
that lists the valid forms, and nothing is relayed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from worker.core.addresses import address_problem
from worker.core.lifecycle import parse_cadence

USAGE = {
    "resolved": "#resolved",
    "reopen": "#reopen",
    "deadlock": "#deadlock",
    "decline-deadlock": "#decline-deadlock <ground> <reason>",
    "vexatious": "#vexatious <reason>",
    "out-of-jurisdiction": "#out-of-jurisdiction <reason>",
    "updates": "#updates <cadence: daily, weekly, fortnightly, <n>d or <n>w>",
    "stage": "#stage <n>",
    "assign": "#assign <address>",
    "note": "#note <text> (the whole reply is an internal note; nothing is relayed)",
    "first-raised": "#first-raised <YYYY-MM-DD> (never later than the recorded date)",
}
_NEEDS_TEXT = {"vexatious", "out-of-jurisdiction", "decline-deadlock"}
_LINE = re.compile(r"^#([a-z][a-z-]*)(?:\s+(.*))?$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Command:
    name: str
    argument: str = ""

    def __str__(self) -> str:
        return f"#{self.name} {self.argument}".strip()


@dataclass(frozen=True, kw_only=True, slots=True)
class ParsedCommands:
    commands: tuple[Command, ...]
    errors: tuple[str, ...]
    # The reply with the command lines taken off the top.
    body: str

    @property
    def is_note(self) -> bool:
        return any(c.name == "note" for c in self.commands)


def parse_commands(text: str) -> ParsedCommands:
    """Read `#command` lines from the top of `text` (blank lines between them are allowed)."""
    lines = text.splitlines()
    commands: list[Command] = []
    errors: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index].strip()
        if not line:
            index += 1
            continue
        if not line.startswith("#"):
            break
        index += 1
        match = _LINE.match(line)
        if not match or match.group(1) not in USAGE:
            errors.append(f"unknown command '{line[:60]}'")
            continue
        name, argument = match.group(1), (match.group(2) or "").strip()
        if name == "note":
            # Everything after #note, on its line and below, is the note.
            rest = "\n".join(lines[index:]).strip()
            commands.append(Command(name=name, argument="\n".join(p for p in (argument, rest) if p)))
            index = len(lines)
            break
        problem = _check(name, argument)
        if problem:
            errors.append(f"{line[:60]}: {problem} (use: {USAGE[name]})")
        else:
            commands.append(Command(name=name, argument=argument))
    body = "\n".join(lines[index:]).strip("\n")
    return ParsedCommands(commands=tuple(commands), errors=tuple(errors), body=body)


def _check(name: str, argument: str) -> str | None:
    if name in ("resolved", "reopen", "deadlock"):
        return "takes no argument" if argument else None
    if name in _NEEDS_TEXT and not argument:
        return "needs a reason"
    if name == "updates":
        try:
            parse_cadence(argument)
        except ValueError as exc:
            return str(exc)
    if name == "stage" and not (argument.isdigit() and int(argument) >= 1):
        return "needs a stage number"
    if name == "assign" and (not argument or address_problem(argument)):
        return "needs a valid email address"
    if name == "first-raised":
        try:
            date.fromisoformat(argument)
        except ValueError:
            return "needs a date like 2026-03-02"
    return None


def usage_text() -> str:
    return "\n".join(f"  {form}" for form in USAGE.values())
