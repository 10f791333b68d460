"""Bounce, auto-reply and report classification scored against four bounce corpora's answer keys.

sisimai set-of-emails (maildir/bsd, and the same messages with CR and CRLF line endings in
maildir/mac and maildir/dos), Mail-DeliveryStatus-BounceParser, flufl.bounce and bounce_email.
Each test prints a confusion table (expected kind x classified kind) and, where the key gives
one, how often our hard/soft verdict (analyse_bounce().permanent) agrees with it.

Where an answer key is wrong or silent for our purposes, the correction is listed with its
reason (`*_KEY_CORRECTIONS`); where we knowingly disagree with a key, the deviation is listed
with its reason (`*_DEVIATIONS`). Any other disagreement fails, and so does anything automated
that is classified HUMAN (it would be acknowledged).

Reads ../shared/corpora (see its README); skipped when that folder is absent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_corpora import CORPORA, NONE
from worker.core.bounces import BounceReport, analyse_bounce
from worker.core.classify import classify
from worker.core.message import Classification, MessageKind
from worker.core.parse import parse_message

pytestmark = [
    pytest.mark.corpora,
    pytest.mark.skipif(
        not CORPORA.is_dir(), reason=f"mail corpora not available at {CORPORA} (../shared/corpora)"
    ),
]

HUMAN = MessageKind.HUMAN
AUTO = MessageKind.AUTO_REPLY
BOUNCE = MessageKind.BOUNCE
REPORT = MessageKind.DELIVERY_REPORT
FEEDBACK = MessageKind.FEEDBACK_REPORT
BULK = MessageKind.BULK

SISIMAI = CORPORA / "set-of-emails"
MAILDIR = SISIMAI / "maildir"
BSD = MAILDIR / "bsd"
BOUNCEPARSER = CORPORA / "BounceParser"
FLUFL = CORPORA / "flufl.bounce"
BOUNCE_EMAIL = CORPORA / "bounce_email" / "test"

# The floor: bounces recognised as bounces, per corpus.
BOUNCE_FLOOR = 0.98


@dataclass(frozen=True, kw_only=True)
class Sample:
    name: str
    path: Path
    expected: MessageKind | None  # None: the answer key says nothing about this message
    permanent: bool | None = None  # the key's hard (True) / soft (False) verdict, if it gives one
    status: str = ""  # the key's DSN status code, if it gives one


@dataclass(frozen=True, kw_only=True)
class Outcome:
    sample: Sample
    result: Classification
    bounce: BounceReport | None

    @property
    def kind(self) -> MessageKind:
        return self.result.kind


def run(samples: list[Sample]) -> list[Outcome]:
    outcomes = []
    for sample in samples:
        msg = parse_message(sample.path.read_bytes())
        result = classify(msg, own_addresses=NONE)
        bounce = analyse_bounce(msg) if result.kind is BOUNCE else None
        outcomes.append(Outcome(sample=sample, result=result, bounce=bounce))
    return outcomes


def score(corpus: str, outcomes: list[Outcome],
          deviations: Mapping[str, tuple[MessageKind, str]]) -> Counter[tuple[bool, bool]]:
    """Print the confusion table; assert what the issue asks of every bounce corpus.

    Returns the hard/soft agreement table, (key says permanent, we say permanent) -> count.
    """
    confusion = Counter(
        (o.sample.expected.value if o.sample.expected else "(no key)", o.kind.value)
        for o in outcomes)
    keyed = [o for o in outcomes if o.sample.expected is not None]
    exact = sum(o.kind is o.sample.expected for o in keyed)
    bounces = [o for o in keyed if o.sample.expected is BOUNCE]
    recognised = sum(o.kind is BOUNCE for o in bounces)
    hard_soft = Counter((o.sample.permanent, o.bounce.permanent) for o in outcomes
                        if o.sample.permanent is not None and o.bounce is not None)

    print(f"\n{corpus}: {len(outcomes)} messages, {exact}/{len(keyed)} exact "
          f"({exact / len(keyed):.1%}), bounces recognised {recognised}/{len(bounces)} "
          f"({recognised / len(bounces):.1%})")
    print(f"  {'expected':18}{'classified':18}count")
    for (want, got), count in sorted(confusion.items()):
        print(f"  {want:18}{got:18}{count}")
    for name, (kind, why) in sorted(deviations.items()):
        print(f"  deviation {name}: {kind.value} ({why})")
    if hard_soft:
        agree = hard_soft[(True, True)] + hard_soft[(False, False)]
        print(f"  hard/soft agreement {agree}/{hard_soft.total()} ({agree / hard_soft.total():.1%});"
              f" key hard -> ours hard {hard_soft[(True, True)]}, key hard -> ours soft "
              f"{hard_soft[(True, False)]}, key soft -> ours soft {hard_soft[(False, False)]}, "
              f"key soft -> ours hard {hard_soft[(False, True)]}")

    by_name = {o.sample.name: o for o in outcomes}
    stale = {n: (by_name[n].kind.value if n in by_name else "(absent)", k.value)
             for n, (k, _) in deviations.items() if n not in by_name or by_name[n].kind is not k}
    assert not stale, f"documented deviations no longer hold (now, documented): {stale}"
    unexplained = [f"{o.sample.name}: expected {o.sample.expected}, got {o.kind.value} "
                   f"{o.result.reasons}" for o in keyed
                   if o.kind is not o.sample.expected and o.sample.name not in deviations]
    assert not unexplained, "\n".join(unexplained)
    # Nothing automated may be taken for a person (it would be acknowledged); the only people
    # allowed are those the key or a documented deviation names as people writing.
    human = [f"{o.sample.name}: {o.result.reasons}" for o in outcomes if o.kind is HUMAN
             and o.sample.expected is not HUMAN and deviations.get(o.sample.name, (None,))[0]
             is not HUMAN]
    assert not human, f"automated mail classified HUMAN (would be acknowledged): {human}"
    assert recognised / len(bounces) >= BOUNCE_FLOOR, f"bounces recognised {recognised}/{len(bounces)}"
    for kind in (AUTO, FEEDBACK, REPORT):
        wrong = [o.sample.name for o in keyed if o.sample.expected is kind and o.kind is not kind]
        assert not wrong, f"expected {kind.value}: {wrong}"
    return hard_soft


# ----------------------------------------------------------------------------- sisimai

# Human-written messages in the bounce corpus, which we deliberately classify HUMAN: a customer
# forwarding a bounce to us is a person writing to us, and acknowledging them is right.
HUMAN_FORWARDS = {
    "lhost-sendmail-14.eml": "Apple Mail forward of a Sendmail bounce ('Fwd: Returned mail')",
}
SISIMAI_DEVIATIONS: dict[str, tuple[MessageKind, str]] = {
    **{name: (HUMAN, why) for name, why in HUMAN_FORWARDS.items()},
    "lhost-fml-02.eml": (BULK, "fml list server's 'you are not a member' notice: list mail by its "
                               "List-Subscribe/X-MLServer headers; it says nothing about whether "
                               "the address works, so it must not mark it undeliverable"),
}
# Upstream renamed these modules; maildir/mac and maildir/dos keep the old names (same messages).
SISIMAI_RENAMED = {"lhost-interscanmss-": "lhost-trendmicro-", "lhost-mailmarshalsmtp-": "lhost-mailmarshal-"}


def sisimai_key() -> dict[str, list[dict[str, object]]]:
    data = json.loads((SISIMAI / "EXPECTED-sisimai.json").read_text(encoding="utf-8"))
    return dict(data["expected"])


def sisimai_kind(records: list[dict[str, object]]) -> MessageKind:
    reasons = {str(r.get("reason")) for r in records}
    if "vacation" in reasons:
        return AUTO
    if "feedback" in reasons:
        return FEEDBACK
    if "delivered" in reasons:
        return REPORT
    return BOUNCE


def sisimai_samples(folder: str) -> list[Sample]:
    key = sisimai_key()
    samples = []
    for path in sorted((MAILDIR / folder).iterdir()):
        name = path.name
        for old, new in SISIMAI_RENAMED.items():
            name = name.replace(old, new)
        records = key.get(f"maildir/bsd/{name}")
        records = records or []
        kind = sisimai_kind(records) if records else None
        samples.append(Sample(
            name=path.name, path=path, expected=kind,
            permanent=any(bool(r["hardbounce"]) for r in records) if kind is BOUNCE else None,
            status=str(records[0].get("status", "")) if records else ""))
    return samples


@pytest.mark.parametrize("folder", ["bsd", "mac", "dos"])
def test_sisimai_bounces_auto_replies_and_reports(folder: str) -> None:
    outcomes = run(sisimai_samples(folder))
    names = {o.sample.name for o in outcomes}
    if folder == "bsd":
        assert SISIMAI_DEVIATIONS.keys() <= names
    deviations = {n: d for n, d in SISIMAI_DEVIATIONS.items() if n in names}
    hard_soft = score(f"set-of-emails/maildir/{folder}", outcomes, deviations)

    keyed = [o for o in outcomes if o.sample.expected is not None]
    exact = sum(o.kind is o.sample.expected for o in keyed)
    assert exact / len(keyed) >= 0.98, f"only {exact}/{len(keyed)} exact"
    # sisimai's `hardbounce` means "this address does not exist" (user or host unknown, has
    # moved, not accepting mail); its soft bounces include every 5xx policy or content
    # rejection, which for us is a permanent failure of our mail to reach the customer, so the
    # raw agreement is low by definition. What must hold: an address that does not exist is
    # marked undeliverable, and a DSN whose own status is 4.x.x is not.
    hard = hard_soft[(True, True)] + hard_soft[(True, False)]
    assert hard_soft[(True, True)] / hard >= 0.95, hard_soft
    transient = [o for o in outcomes if o.bounce and o.sample.permanent is False
                 and o.sample.status.startswith("4")]
    soft = sum(not o.bounce.permanent for o in transient if o.bounce)
    print(f"  sisimai status 4.x.x -> ours soft: {soft}/{len(transient)}")
    if folder == "bsd":
        assert soft / len(transient) >= 0.85, [o.sample.name for o in transient if o.bounce
                                                and o.bounce.permanent]


@pytest.mark.parametrize("folder", ["mac", "dos"])
def test_sisimai_line_endings_do_not_change_the_verdict(folder: str) -> None:
    """maildir/mac (CR) and maildir/dos (CRLF) hold the bsd messages with other line endings
    (five with their headers decoded to 8-bit): each gets the bsd copy's verdict."""
    compared = 0
    for path in sorted((MAILDIR / folder).iterdir()):
        bsd = BSD / path.name
        if not bsd.exists():
            continue
        compared += 1
        ours, theirs = parse_message(path.read_bytes()), parse_message(bsd.read_bytes())
        verdict, expected = classify(ours, own_addresses=NONE), classify(theirs, own_addresses=NONE)
        assert verdict.kind is expected.kind, path.name
        if verdict.kind is BOUNCE:
            mine, reference = analyse_bounce(ours), analyse_bounce(theirs)
            assert mine == reference, path.name
    print(f"\n{folder}: {compared} messages give their bsd copy's verdict")
    assert compared >= 40


# ----------------------------------------------------------------------------- BounceParser

BOUNCEPARSER_KEY_CORRECTIONS: dict[str, tuple[MessageKind, str]] = {
    "spam-bogus-email-in-report.msg": (
        HUMAN, "upstream test: 'a non-bounce spam message' (is_bounce is only the constructor "
               "accepting it); spam with no filter verdict reads as a person"),
    "spam-with-image.msg": (
        HUMAN, "upstream test checks 'No reports': a spam message, not a bounce; no filter verdict"),
    "virus-caused-multiple-weird-reports.msg": (
        HUMAN, "upstream test: 'a non-bounce virus message'; a phishing mail, no filter verdict"),
    "warning-8.msg": (
        BOUNCE, "DSN with Action: delayed; upstream: not a bounce; for us a delay is a soft bounce"),
    "whitelist.msg": (
        BOUNCE, "upstream files it as challenge-response, but it is Postfix's DSN, Action: "
                "failed, 550 from the recipient's server: our mail was not delivered"),
    "autoreply.msg": (
        AUTO, "todo upstream (BounceParser wrongly calls it a bounce); an out-of-office sent with "
              "a null sender and Precedence: bulk"),
    "postfix-orig.msg": (
        BOUNCE, "the key has no is_bounce (orig-message.t checks the returned original): a "
                "Postfix DSN, Action: failed"),
    "warning-9.msg": (
        BOUNCE, "the key has no is_bounce: a Sendmail 'Returned mail' with permanent fatal errors"),
}


def bounceparser_samples() -> list[Sample]:
    data = json.loads((BOUNCEPARSER / "EXPECTED-bounceparser.json").read_text(encoding="utf-8"))
    samples = []
    for relative, spec in sorted(data["expected"].items()):
        path = BOUNCEPARSER / relative
        if not path.exists():  # kept in the author-test folder upstream
            path = BOUNCEPARSER / relative.replace("t/", "xt/", 1)
        name = path.name
        assert not spec.get("todo") or name in BOUNCEPARSER_KEY_CORRECTIONS, f"todo entry {name}"
        if name in BOUNCEPARSER_KEY_CORRECTIONS:
            kind = BOUNCEPARSER_KEY_CORRECTIONS[name][0]
        elif spec.get("is_bounce") == 1:
            kind = BOUNCE
        else:
            # Not a bounce: the key names what it is instead.
            assert spec.get("is_bounce") == 0, f"{name}: {spec}"
            assert any(word in str(spec.get("kind")) for word in ("auto-reply", "challenge")), spec
            kind = AUTO
        code = str(spec.get("smtp_code") or "")
        samples.append(Sample(name=name, path=path, expected=kind,
                              permanent=code.startswith("5") if code and kind is BOUNCE else None))
    return samples


def test_bounceparser_bounces_auto_replies_and_challenges() -> None:
    outcomes = run(bounceparser_samples())
    for name, (kind, why) in sorted(BOUNCEPARSER_KEY_CORRECTIONS.items()):
        print(f"  key corrected {name}: {kind.value} ({why})")
    hard_soft = score("BounceParser", outcomes, {})
    # The key's SMTP code (550 vs 447): the class of the server's own reply decides.
    assert hard_soft[(True, False)] + hard_soft[(False, True)] == 0, hard_soft
    challenges = {o.sample.name: o.result.reasons for o in outcomes
                  if o.sample.name in ("bluebottle.msg", "boxbe-cr2.msg")}
    assert all("challenge-response system" in reasons for reasons in challenges.values()), challenges


# ----------------------------------------------------------------------------- flufl.bounce


def flufl_samples() -> list[Sample]:
    data = json.loads((FLUFL / "EXPECTED-flufl.json").read_text(encoding="utf-8"))
    key: dict[str, list[dict[str, object]]] = data["expected"]
    samples = []
    for path in sorted((FLUFL / "flufl" / "bounce" / "tests" / "data").iterdir()):
        detections = key.get(str(path.relative_to(FLUFL)))
        found = [d for d in detections or [] if d["addresses"]]
        # An empty detection list is a negative test ("must not find an address"), which says
        # nothing about what the message is; flufl has none at present.
        samples.append(Sample(
            name=path.name, path=path, expected=BOUNCE if found else None,
            permanent=not any(d["temporary"] for d in found) if found else None))
    return samples


def test_flufl_bounces() -> None:
    outcomes = run(flufl_samples())
    hard_soft = score("flufl.bounce", outcomes, {})
    # flufl's `temporary` is our "soft": every warning ("will keep trying", Action: delayed)
    # must be soft. The only disagreements allowed are give-ups after a retry timeout that
    # carry a 4.x.x code (dsn_02 Status: 4.4.7, yahoo_01 #4.4.1): flufl calls them permanent,
    # the server's code says transient, and we follow the code.
    agree = hard_soft[(True, True)] + hard_soft[(False, False)]
    assert hard_soft[(False, True)] == 0, hard_soft
    assert agree / hard_soft.total() >= 0.95, hard_soft


# ----------------------------------------------------------------------------- bounce_email

# bounce_email's folder is its label; the non-bounces are, one by one:
BOUNCE_EMAIL_NON_BOUNCES: dict[str, tuple[MessageKind, str]] = {
    "non_bounces/tt_1234210666.txt": (AUTO, "Latvian Outlook out-of-office: 'Arpus biroja "
                                            "atrasanas automatiska atbilde:'"),
    "non_bounces/tt_1234211024.txt": (AUTO, "Gmail vacation responder: X-Autoreply: yes"),
    "non_bounces/tt_1234241664.txt": (HUMAN, "a person's apology for a test mailing: a person "
                                             "writing, not a bounce"),
    "fixtures/no_subject.txt": (HUMAN, "the same apology without a Subject (a parser fixture)"),
}


def bounce_email_samples() -> list[Sample]:
    samples = []
    for path in sorted(BOUNCE_EMAIL.rglob("*.txt")):
        name = str(path.relative_to(BOUNCE_EMAIL))
        if path.parent.name == "bounces":
            # The file name says when upstream expects a soft bounce.
            samples.append(Sample(name=name, path=path, expected=BOUNCE,
                                  permanent=False if "_soft" in path.stem else None))
        else:
            samples.append(Sample(name=name, path=path, expected=BOUNCE_EMAIL_NON_BOUNCES[name][0]))
    return samples


def test_bounce_email_bounces_and_non_bounces() -> None:
    outcomes = run(bounce_email_samples())
    for name, (kind, why) in sorted(BOUNCE_EMAIL_NON_BOUNCES.items()):
        print(f"  non-bounce {name}: {kind.value} ({why})")
    hard_soft = score("bounce_email", outcomes, {})
    assert hard_soft == Counter({(False, False): 1}), hard_soft


def automated_samples() -> Iterator[tuple[str, Sample]]:
    """Every message of these corpora that is not a person writing, labelled by corpus."""
    for folder in ("bsd", "mac", "dos"):
        for sample in sisimai_samples(folder):
            if sample.name not in HUMAN_FORWARDS:
                yield folder, sample
    for corpus, samples in (("bounceparser", bounceparser_samples()), ("flufl", flufl_samples()),
                            ("bounce_email", bounce_email_samples())):
        for sample in samples:
            if sample.expected is not HUMAN:
                yield corpus, sample
