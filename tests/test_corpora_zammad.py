"""Our parse against Zammad's: from, to, cc, subject and attachment names of real helpdesk mail.

Zammad's test corpus pairs each mailNNN.box with mailNNN.yml, the parse its own helpdesk made.
Each field is compared; every difference must be one of EXPECTED_DIFFERENCES below, each a place
where we decided Zammad's normalisation is not ours, and each entry must still be a difference.
Reads ../shared/corpora (see its README); skipped when that folder is absent.
"""

from __future__ import annotations

from collections.abc import Callable
from email.utils import getaddresses
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.core.message import ParsedMessage
from worker.core.parse import parse_message

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
MAIL = CORPORA / "zammad" / "test" / "data" / "mail"

pytestmark = [
    pytest.mark.corpora,
    pytest.mark.skipif(not MAIL.is_dir(), reason=f"Zammad corpus not available at {MAIL}"),
]

_COMMENT_ADDRESS = ("The only address is inside a comment, `=?iso-8859-2?Q?Namedy=F1ski?= "
                    "(hans@example.com)`: Zammad keeps the phrase, we take the address.")
# (file, field): why our parse deliberately differs from Zammad's expectation.
EXPECTED_DIFFERENCES = {
    ("mail006", "to"): _COMMENT_ADDRESS,
    ("mail075", "to"): _COMMENT_ADDRESS,
    ("mail018", "subject"): (
        "An encoded word with spaces and a fold inside (=?unicode-1-1-utf-7?Q?+ANw-bermittlungsstatus"
        " ... ?=), which RFC 2047 forbids: Zammad leaves it encoded, we decode it to "
        "'Übermittlungsstatus' as Outlook shows it."),
    ("mail046", "from_name"): (
        "A raw 8-bit GB2312 display name: Zammad's expectation is mojibake ('ÎäŔźłÉ'); we decode it "
        "as GB2312, the charset the enclosed original declares ('武兰成')."),
    ("mail065", "from_name"): (
        "From: =?iso-8859-1?Q?B=FCrling,=20Andreas?= <...>: Zammad splits the address list at the "
        "comma inside the encoded word and keeps '=20Andreas?='; we decode 'Bürling, Andreas'."),
    ("mail076", "from_email"): (
        "From: \"Millions Lottery Spain transfer\"@example.com> : Zammad keeps the stray '>' in the "
        "address; we read the quoted local part and drop it."),
    ("mail076", "from_name"): "Same From: there is no display name; Zammad makes one from the address.",
    ("mail087", "from_email"): (
        "From: Test test@example.com (no angle brackets): Zammad keeps the whole text as the address; "
        "we take the addr-spec."),
    ("mail087", "from_name"): "Same From: Zammad repeats the whole text as the name; we have none.",
    ("mail087", "attachments"): (
        "The last part has no Content-Type, so it is inline text/plain: the body ('Sehr geehrter "
        "Kunde, ...'). Zammad stores it as an attachment called 'file'."),
    ("mail062", "attachments"): (
        "Two unnamed HTML parts and two unnamed videos: Zammad numbers the repeats (document1.html, "
        "video1.mov); we keep the repeated name."),
    ("mail102", "attachments"): (
        "Two files the sender named 'Screen Shot 2018-12-17 at 09.00.38.png': Zammad renames the "
        "second ('... at 091.00.38.png'); we keep the sender's names."),
    ("mail100", "attachments"): (
        "An unnamed application/others part: Zammad names it after its Content-ID "
        "('32497.1617621278.2'); we use a Content-ID only when it looks like a file name, so 'file'."),
}


class _RubyTolerantLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no type hints
    """SafeLoader that reads Ruby-tagged nodes (!ruby/hash:...) as plain YAML."""


def _plain(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_RubyTolerantLoader.add_multi_constructor("!", _plain)


def _words(text: str | None) -> str:
    """Leading, trailing and repeated white space carries no meaning in a subject or a name."""
    return " ".join((text or "").split())


def _address_set(text: str | None) -> list[str]:
    """The addresses in one of Zammad's display strings ("Name <a@b>, c@d")."""
    return sorted({spec.lower() for _, spec in getaddresses([text or ""]) if "@" in spec})


def _attachment_names(expected: dict[str, Any]) -> list[str]:
    # Zammad also stores the HTML body as an attachment ("message.html"), flagged as such.
    return sorted(str(a["filename"]) for a in expected.get("attachments") or []
                  if not (a.get("preferences") or {}).get("content-alternative"))


# field: (Zammad's value, ours), both normalised to what a reader of the case would compare.
FIELDS: dict[str, Callable[[dict[str, Any], ParsedMessage], tuple[object, object]]] = {
    "from_email": lambda e, p: (str(e.get("from_email") or "").lower(), p.from_address or ""),
    "from_name": lambda e, p: (_words(e.get("from_display_name")), _words(p.from_name)),
    "to": lambda e, p: (_address_set(e.get("to")), sorted(set(p.to))),
    "cc": lambda e, p: (_address_set(e.get("cc")), sorted(set(p.cc))),
    "subject": lambda e, p: (_words(e.get("subject")), _words(p.subject)),
    "attachments": lambda e, p: (_attachment_names(e), sorted(a.filename for a in p.attachments)),
}


def test_zammad_expected_fields_match_our_parse() -> None:
    matched = dict.fromkeys(FIELDS, 0)
    known: list[str] = []
    unexplained: list[str] = []
    still_differ: set[tuple[str, str]] = set()
    expectations = sorted(MAIL.glob("mail*.yml"))
    for path in expectations:
        expected = yaml.load(path.read_text(encoding="utf-8"), Loader=_RubyTolerantLoader)
        parsed = parse_message(path.with_suffix(".box").read_bytes())
        for field, compare in FIELDS.items():
            want, got = compare(expected, parsed)
            if want == got:
                matched[field] += 1
                continue
            line = f"{path.stem} {field}: expected {want!r}, got {got!r}"
            if (path.stem, field) in EXPECTED_DIFFERENCES:
                still_differ.add((path.stem, field))
                known.append(line)
            else:
                unexplained.append(line)

    total = len(expectations)
    print(f"\nZammad corpus: {total} messages with expectations")
    print(f"{'field':14}{'matched':>10}{'known diff':>12}")
    for field, count in matched.items():
        differences = sum(1 for stem, name in EXPECTED_DIFFERENCES if name == field)
        print(f"{field:14}{f'{count}/{total}':>10}{differences:>12}")
    print("Known differences (see EXPECTED_DIFFERENCES for why):", *known, sep="\n  ")
    if unexplained:
        print("UNEXPLAINED:", *unexplained, sep="\n  ")

    assert total >= 60, f"only {total} Zammad expectations found under {MAIL}"
    assert not unexplained, "\n".join(unexplained)
    stale = sorted(set(EXPECTED_DIFFERENCES) - still_differ)
    assert not stale, f"listed as differences but now equal (remove them): {stale}"
    # With the two checks above, each field scores exactly total minus its listed differences.
    for field, count in matched.items():
        assert count / total >= 0.94, f"{field}: {count}/{total}"
