"""Staff work from their mail client: notifications, authenticated replies, relays and #commands."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.harness import CORPORA, PASSWORD, PROVIDER_ADDRESSES, Worker, mailbox_for
from worker.demo_mail import customer_mail
from worker.embedded import EmbeddedSmtpServer, ReceivedMail, deliver_many

CLARANET = PROVIDER_ADDRESSES["claranet-soho"]
STAFF = "staff@claranetsoho.co.uk"
TEAM = "team@claranetsoho.co.uk"
CUSTOMER = "sarah@example.org"
T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # Monday
TRUSTED = "mx.claranetsoho.co.uk"


def purpose(smtp: EmbeddedSmtpServer, name: str) -> list[ReceivedMail]:
    return [m for m in smtp.received if m.message["X-Complaints-Worker-Purpose"] == name]


def body(mail: ReceivedMail) -> str:
    return mail.message.get_body(("plain",)).get_content()


class Desk:
    """A Claranet mailbox with a notify list, a customer complaint already in, and its notification."""

    def __init__(self, tmp_path: Path, pymap, smtp: EmbeddedSmtpServer, raw: bytes | None = None,
                 worker: dict[str, int] | None = None):
        self.pymap, self.smtp = pymap, smtp
        self.worker = Worker.create(
            tmp_path, imap_port=pymap.port, smtp_port=smtp.port, worker=worker,
            mailboxes=[mailbox_for("claranet-soho", extra={
                "notify": [TEAM], "trusted_authserv_ids": [TRUSTED]})])
        self.complaint = raw or customer_mail(
            sender=CUSTOMER, name="Sarah Jones", to=CLARANET, subject="Broadband down", at=T0,
            text="My broadband has been down since Friday.\n")
        self.now = T0
        self.deliver(self.complaint)
        [self.notification] = purpose(smtp, "staff-notification")
        self.reference = self.notification.message["X-Complaints-Worker-Case"]

    def deliver(self, *raws: bytes) -> None:
        self.now += timedelta(minutes=10)
        deliver_many("127.0.0.1", self.pymap.port, CLARANET, PASSWORD,
                     [(raw, self.now) for raw in raws])
        self.worker.once(self.now)

    def staff_reply(self, text: str, *, sender: str = STAFF, threaded: bool = True,
                    headers: dict[str, str] | None = None, to: str = CLARANET) -> None:
        note = self.notification.message
        self.deliver(customer_mail(
            sender=sender, name="Team Leader", to=to, subject=f"Re: {note['Subject']}",
            at=self.now, text=text, headers=headers,
            in_reply_to=note["Message-ID"] if threaded else None))

    def case(self) -> dict:
        return self.worker.case(self.reference)

    def events(self) -> list[str]:
        return [e["kind"] for e in self.case()["events"]]

    def timers(self) -> dict[str, str]:
        return {t["rule"]: t["status"] for t in self.case()["timers"] if t["kind"] == "due"}


@pytest.fixture
def desk(tmp_path: Path, pymap, smtp) -> Desk:
    return Desk(tmp_path, pymap, smtp)


def test_every_customer_message_is_notified_to_staff_with_the_case_summary(desk: Desk):
    note = desk.notification.message
    assert desk.notification.rcpt_tos == (TEAM,)
    assert note["From"].addresses[0].addr_spec == CLARANET
    assert note["Subject"] == f"[{desk.reference}] New complaint: Broadband down"
    text = body(desk.notification)
    assert "My broadband has been down since Friday." in text
    assert "First raised:  Monday 16 November 2026 at 09:10" in text
    assert "initial_response" in text and "#resolved" in text and "#first-raised" in text
    # A follow-up is notified too, with only its new text.
    [ack] = purpose(desk.smtp, "acknowledgement")
    desk.deliver(customer_mail(
        sender=CUSTOMER, name="Sarah Jones", to=CLARANET, subject=f"Re: {ack.message['Subject']}",
        at=desk.now, in_reply_to=ack.message["Message-ID"],
        text="Still down.\n\nOn Mon, 16 Nov 2026, Claranet SOHO wrote:\n> We have received\n"))
    follow_up = purpose(desk.smtp, "staff-notification")[-1]
    assert follow_up.message["Subject"].startswith(f"[{desk.reference}] Customer reply:")
    assert "Still down." in body(follow_up) and "We have received" not in body(follow_up)


def test_attachments_reach_staff(tmp_path: Path, pymap, smtp):
    msg = email.message_from_bytes(customer_mail(
        sender=CUSTOMER, name="Sarah", to=CLARANET, subject="Bill wrong", at=T0,
        text="See the bill.\n"), policy=email.policy.SMTP)
    msg.add_attachment(b"%PDF-1.4 fake bill", maintype="application", subtype="pdf",
                       filename="bill.pdf")
    desk = Desk(tmp_path, pymap, smtp, raw=msg.as_bytes())
    [attachment] = list(desk.notification.message.iter_attachments())
    assert attachment.get_filename() == "bill.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake bill"


def staff_reply_with_video(desk: Desk, megabytes: int) -> None:
    note = desk.notification.message
    reply = email.message_from_bytes(customer_mail(
        sender=STAFF, name="Team Leader", to=CLARANET, subject=f"Re: {note['Subject']}",
        at=desk.now, text="Here is the engineer's report and the site video.\n",
        in_reply_to=note["Message-ID"]), policy=email.policy.SMTP)
    reply.add_attachment(b"report", maintype="text", subtype="plain", filename="report.txt")
    reply.add_attachment(b"\0" * (megabytes * 1024 * 1024), maintype="video", subtype="mp4",
                         filename="site.mp4")
    desk.deliver(reply.as_bytes())


def test_staff_are_told_when_an_attachment_is_too_large_to_relay(tmp_path: Path, pymap, smtp):
    desk = Desk(tmp_path, pymap, smtp, worker={"max_message_bytes": 40 * 1024 * 1024})
    staff_reply_with_video(desk, 21)  # Under the message limit, over 20 MB of attachments.
    [relay] = purpose(desk.smtp, "relay")
    assert [a.get_filename() for a in relay.message.iter_attachments()] == ["report.txt"]
    [confirmation] = purpose(desk.smtp, "confirmation")
    assert confirmation.rcpt_tos == (STAFF,)
    assert "site.mp4 (21.0 MB)" in body(confirmation)
    assert "Your message was sent to the customer." in body(confirmation)


def test_staff_mail_over_the_size_limit_is_not_relayed_and_the_sender_is_told(desk: Desk):
    staff_reply_with_video(desk, 21)  # About 28 MB as sent: over the 25 MB default limit.
    assert purpose(desk.smtp, "relay") == []
    [error] = purpose(desk.smtp, "error")
    assert error.rcpt_tos == (STAFF,)
    assert "over the 25.0 MB limit" in body(error) and "not relayed to the customer" in body(error)
    assert desk.worker.status()["quarantine"]["total"] == 1


def test_staff_reply_is_relayed_to_the_customer_threaded_under_the_reference(desk: Desk):
    desk.staff_reply("Hello Sarah,\n\nAn engineer will call today.\n\n-- \nTeam Leader\n\n"
                     "On Mon, 16 Nov 2026 at 09:10, Claranet SOHO <complaints@...> wrote:\n"
                     "> A new complaint has arrived\n")
    [relay] = purpose(desk.smtp, "relay")
    assert relay.rcpt_tos == (CUSTOMER,)
    assert relay.message["From"].addresses[0].addr_spec == CLARANET
    assert relay.message["Subject"] == f"[{desk.reference}] Re: Broadband down"
    assert relay.message["In-Reply-To"] == email.message_from_bytes(desk.complaint)["Message-ID"]
    assert relay.message["Auto-Submitted"] is None, "a person wrote it"
    assert body(relay) == "Hello Sarah,\n\nAn engineer will call today.\n\n-- \nTeam Leader\n"
    response = [e for e in desk.case()["events"] if e["kind"] == "staff_response"]
    assert response[0]["detail"]["staff"] == STAFF
    assert desk.timers()["initial_response"] == "met"
    assert purpose(desk.smtp, "confirmation") == [], "no commands, nothing to confirm"


def test_forged_staff_reply_changes_nothing_and_is_a_security_event(desk: Desk):
    # Right From and the case reference, but it answers no notification...
    desk.staff_reply("#resolved\n\nAll sorted, case closed.\n", threaded=False)
    # ...and here a pass from a server we do not trust.
    desk.staff_reply("#resolved\n", threaded=False, headers={
        "Authentication-Results": "mx.attacker.example; dkim=pass header.d=claranetsoho.co.uk"})
    case = desk.case()
    assert case["status"] == "open"
    assert purpose(desk.smtp, "relay") == [] and purpose(desk.smtp, "confirmation") == []
    assert desk.events().count("security_unauthenticated_staff") == 2
    assert STAFF not in [p["address"] for p in case["parties"]]
    warned = [m for m in purpose(desk.smtp, "staff-notification") if "not authenticated" in body(m)]
    assert len(warned) == 2, "staff see the forged mail, flagged"
    assert desk.timers()["initial_response"] == "pending"


def test_forged_staff_mail_quoting_the_reference_is_recorded_on_the_case(desk: Desk):
    desk.deliver(customer_mail(sender=STAFF, name="Team", to=CLARANET,
                               subject=f"[{desk.reference}] update", at=desk.now,
                               text="#resolved\n"))
    case = desk.case()
    assert case["status"] == "open"
    assert "security_unauthenticated_staff" in desk.events()
    assert purpose(desk.smtp, "relay") == [] and purpose(desk.smtp, "confirmation") == []


def test_trusted_authentication_results_prove_staff(desk: Desk):
    desk.staff_reply("Hello Sarah, we are on it.\n", threaded=False, headers={
        "Authentication-Results": f"{TRUSTED}; spf=pass smtp.mailfrom=claranetsoho.co.uk; "
                                  "dkim=pass header.d=claranetsoho.co.uk header.s=s1; "
                                  "dmarc=pass header.from=claranetsoho.co.uk"})
    # No notification reference, so it threads by [REF] from staff.
    [relay] = purpose(desk.smtp, "relay")
    assert body(relay) == "Hello Sarah, we are on it.\n"


def test_staff_writing_to_the_customer_with_us_in_cc_is_recorded_without_relay(desk: Desk):
    desk.deliver(customer_mail(
        sender=STAFF, name="Team", to=CUSTOMER, subject=f"[{desk.reference}] Your broadband",
        at=desk.now, text="Hello Sarah, fixed now.\n",
        headers={"Cc": CLARANET, "Authentication-Results": f"{TRUSTED}; dkim=pass "
                                                          "header.d=claranetsoho.co.uk"}))
    assert purpose(desk.smtp, "relay") == []
    [response] = [e for e in desk.case()["events"] if e["kind"] == "staff_response"]
    assert response["detail"]["direct"] is True and response["detail"]["staff"] == STAFF
    assert desk.timers()["initial_response"] == "met"


def confirmation_of(desk: Desk) -> str:
    return body(purpose(desk.smtp, "confirmation")[-1])


def test_resolved_and_reopen(desk: Desk):
    desk.staff_reply("#resolved\n\nGlad we could fix it.\n")
    case = desk.case()
    assert case["status"] == "resolved"
    assert desk.timers()["adr_letter"] == "suspended"
    assert "case resolved" in confirmation_of(desk)
    assert body(purpose(desk.smtp, "relay")[0]) == "Glad we could fix it.\n"
    [resolution] = purpose(desk.smtp, "resolution")
    assert resolution.rcpt_tos == (CUSTOMER,)
    assert "Communications Ombudsman" in body(resolution), "the ADR right is restated"
    desk.staff_reply("#reopen\n")
    assert desk.case()["status"] == "open"
    assert desk.timers()["adr_letter"] == "pending", "the original clock continues"
    assert "case reopened" in confirmation_of(desk)
    assert len(purpose(desk.smtp, "relay")) == 1, "a command-only reply relays nothing"


def test_deadlock_sends_the_letter_now_and_cancels_the_adr_letter(desk: Desk):
    desk.staff_reply("#deadlock\n")
    [letter] = purpose(desk.smtp, "deadlock-letter")
    assert letter.rcpt_tos == (CUSTOMER,) and "Communications Ombudsman" in body(letter)
    assert desk.timers()["adr_letter"] == "cancelled"
    assert "deadlock letter queued" in confirmation_of(desk)
    desk.staff_reply("#deadlock\n")
    assert len(purpose(desk.smtp, "deadlock-letter")) == 1, "never twice"
    assert "already" in body(purpose(desk.smtp, "error")[-1])


@pytest.mark.parametrize(("command", "field", "value", "effect"), [
    ("#vexatious repeated abusive messages", None, None, "marked vexatious"),
    ("#out-of-jurisdiction pricing complaint", None, None, "marked out-of-jurisdiction"),
    ("#updates weekly", None, None, "update cadence agreed"),
    ("#stage 2", None, None, "moved to stage 2 (Manager)"),
    ("#assign manager@claranetsoho.co.uk", None, None, "assigned to manager@claranetsoho.co.uk"),
    ("#decline-deadlock resolution-imminent engineer booked for Tuesday", None, None,
     "deadlock letter declined"),
])
def test_each_command_takes_effect_and_is_confirmed(desk: Desk, command, field, value, effect):
    desk.staff_reply(f"{command}\n")
    assert effect in confirmation_of(desk)
    assert purpose(desk.smtp, "error") == []
    events = [e for e in desk.case()["events"] if e["kind"].startswith("command_")]
    assert events and events[-1]["detail"]["command"] == command
    if command.startswith(("#vexatious", "#out-of")):
        assert desk.timers()["adr_letter"] == "cancelled"


def test_note_is_internal(desk: Desk):
    desk.staff_reply("#note spoke to her on the phone\nshe is happy to wait\n")
    assert purpose(desk.smtp, "relay") == []
    [note] = [e for e in desk.case()["events"] if e["kind"] == "command_note"]
    assert "she is happy to wait" in note["detail"]["command"]


def test_first_raised_moves_the_adr_clock_earlier_never_later(desk: Desk):
    desk.staff_reply("#first-raised 2026-11-02\n")
    adr = next(t for t in desk.case()["timers"] if t["rule"] == "adr_letter")
    # 2 November 2026, start of the day (GMT), plus 6 weeks.
    assert adr["due_at"] == "2026-12-14T00:00:00+00:00"
    assert desk.case()["first_raised_at"] == "2026-11-02T00:00:00+00:00"
    desk.staff_reply("#first-raised 2026-12-01\n")
    assert "never later" in body(purpose(desk.smtp, "error")[-1])
    assert desk.case()["first_raised_at"] == "2026-11-02T00:00:00+00:00"


@pytest.mark.parametrize("reply", [
    "#resolve\n\nThanks!\n",
    "#stage 9\n\nThanks!\n",
    "#updates sometimes\n\nThanks!\n",
    "#vexatious\n\nThanks!\n",
    "#decline-deadlock bored of it\n\nThanks!\n",
])
def test_a_malformed_command_changes_nothing_and_gets_an_error_reply(desk: Desk, reply: str):
    before = desk.case()
    desk.staff_reply(reply)
    [error] = purpose(desk.smtp, "error")
    assert error.rcpt_tos == (STAFF,)
    assert "NOT applied" in body(error) and "#first-raised <YYYY-MM-DD>" in body(error)
    assert purpose(desk.smtp, "relay") == [] and purpose(desk.smtp, "confirmation") == []
    after = desk.case()
    assert (after["status"], after["timers"]) == (before["status"], before["timers"])


TALON = CORPORA / "talon" / "tests" / "fixtures" / "standard_replies"


def staff_version(raw: bytes, notification: email.message.EmailMessage) -> bytes:
    """A real client's reply, re-addressed as a staff member's reply to our notification."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for name in ("From", "To", "Cc", "In-Reply-To", "References", "Message-ID", "Subject"):
        del msg[name]
    msg["From"] = f"Team Leader <{STAFF}>"
    msg["To"] = CLARANET
    msg["Subject"] = f"Re: {notification['Subject']}"
    msg["Message-ID"] = f"<talon-{abs(hash(raw))}@claranetsoho.co.uk>"
    msg["In-Reply-To"] = notification["Message-ID"]
    msg["References"] = notification["Message-ID"]
    return msg.as_bytes()


@pytest.mark.corpora
@pytest.mark.skipif(not TALON.is_dir(), reason=f"talon corpus not available at {TALON}")
def test_real_client_replies_relay_exactly_the_new_text(desk: Desk):
    replies = sorted(TALON.glob("*.eml"))
    assert replies
    for path in replies:
        expected_file = TALON / f"{path.stem}_reply_text"
        expected = expected_file.read_text().strip() if expected_file.exists() else "Hello"
        before = len(purpose(desk.smtp, "relay"))
        desk.deliver(staff_version(path.read_bytes(), desk.notification.message))
        relays = purpose(desk.smtp, "relay")
        assert len(relays) == before + 1, f"{path.name}: not relayed"
        assert body(relays[-1]).strip() == expected, path.name
        assert relays[-1].message["Subject"].startswith(f"[{desk.reference}]")
        assert relays[-1].rcpt_tos == (CUSTOMER,)


def test_outlook_html_reply_relays_only_the_new_text(desk: Desk):
    html = (
        '<html><body><div class="WordSection1"><p class="MsoNormal">Hello Sarah,<o:p></o:p></p>'
        '<p class="MsoNormal">The engineer is booked for Tuesday.<o:p></o:p></p></div>'
        '<div id="appendonsend"></div><hr style="display:inline-block;width:98%">'
        '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri"><b>From:</b> Claranet SOHO '
        '&lt;complaints@claranetsoho.co.uk&gt;<br><b>Sent:</b> 16 November 2026 09:10<br>'
        f'<b>To:</b> {TEAM}<br><b>Subject:</b> [{desk.reference}] New complaint</font></div>'
        '<div><p>A new complaint has arrived for Claranet SOHO.</p></div></body></html>')
    note = desk.notification.message
    desk.deliver(customer_mail(sender=STAFF, name="Team Leader", to=CLARANET,
                               subject=f"RE: {note['Subject']}", at=desk.now, html=html,
                               in_reply_to=note["Message-ID"]))
    [relay] = purpose(desk.smtp, "relay")
    assert body(relay).split() == ["Hello", "Sarah,", "The", "engineer", "is", "booked", "for", "Tuesday."]


def test_stranger_quoting_a_reference_gets_own_case_and_staff_are_told(desk: Desk):
    desk.deliver(customer_mail(sender="mallory@example.net", name="Mallory", to=CLARANET,
                               subject=f"Re: [{desk.reference}] same problem", at=desk.now,
                               text="My line is down too.\n"))
    new_case = purpose(desk.smtp, "staff-notification")[-1]
    assert new_case.message["X-Complaints-Worker-Case"] != desk.reference
    assert f"quoted case [{desk.reference}]" in body(new_case)
    assert "mallory@example.net" not in [p["address"] for p in desk.case()["parties"]]
