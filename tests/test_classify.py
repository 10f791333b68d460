"""classify: every rule, in order, on small hand-written messages."""

from __future__ import annotations

import pytest

from worker.core.bounces import analyse_bounce
from worker.core.classify import classify
from worker.core.message import MessageKind, ParsedMessage
from worker.core.parse import parse_message

OWN = frozenset({"complaints@provider.example"})

HUMAN = MessageKind.HUMAN
AUTO = MessageKind.AUTO_REPLY
BOUNCE = MessageKind.BOUNCE
REPORT = MessageKind.DELIVERY_REPORT
FEEDBACK = MessageKind.FEEDBACK_REPORT
BULK = MessageKind.BULK
OWN_MAIL = MessageKind.OWN_MAIL
UNPARSEABLE = MessageKind.UNPARSEABLE


def mail(headers: bytes, body: bytes = b"Hello,\r\nmy broadband has been down for a week.\r\n"
         ) -> bytes:
    """A message from a customer unless `headers` say otherwise (later fields win for From)."""
    base = b"To: complaints@provider.example\r\nMessage-ID: <c1@example.com>\r\n"
    if b"\nfrom:" not in b"\n" + headers.lower():
        base = b"From: Jo Bloggs <jo@example.com>\r\n" + base
    return base + headers + b"\r\n" + body


def dsn(action: bytes, *, report_type: bytes = b"delivery-status",
        container: bytes = b"multipart/report; report-type=", extra: bytes = b"") -> bytes:
    content_type = container + report_type if container.endswith(b"=") else container
    return (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        b"To: complaints@provider.example\r\n"
        b"Subject: Delivery report\r\n"
        b"Content-Type: " + content_type + b"; boundary=B\r\n"
        + extra +
        b"\r\n"
        b"--B\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"Report follows.\r\n"
        b"--B\r\n"
        b"Content-Type: message/delivery-status\r\n"
        b"\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n"
        b"\r\n"
        b"Final-Recipient: rfc822; gone@example.org\r\n"
        + action +
        b"--B--\r\n"
    )


def run(raw: bytes, own: frozenset[str] = OWN) -> tuple[MessageKind, tuple[str, ...]]:
    result = classify(parse_message(raw), own_addresses=own)
    return result.kind, result.reasons


CASES: list[tuple[str, bytes, MessageKind, str]] = [
    # --- unparseable and own mail come first
    ("empty", b"", UNPARSEABLE, "problem: empty message"),
    ("no-sender", b"Subject: hi\r\n\r\nbody", UNPARSEABLE, "no sender address"),
    ("own-purpose-header", mail(b"X-Complaints-Worker-Purpose: acknowledgement\r\n"), OWN_MAIL,
     "X-Complaints-Worker-Purpose: acknowledgement"),
    ("own-from-address", mail(b"From: Complaints <Complaints@Provider.example>\r\n"), OWN_MAIL,
     "our own address complaints@provider.example"),
    ("own-beats-auto-submitted",
     mail(b"X-Complaints-Worker-Purpose: reminder\r\nAuto-Submitted: auto-generated\r\n"),
     OWN_MAIL, "X-Complaints-Worker-Purpose"),
    # --- RFC 3464 DSNs, by their Action fields (a delay is a soft bounce)
    ("dsn-failed", dsn(b"Action: failed\r\nStatus: 5.1.1\r\n"), BOUNCE,
     "multipart/report; report-type=delivery-status; Action: failed"),
    ("dsn-failure-spelling", dsn(b"Action: failure\r\nStatus: 5.1.1\r\n"), BOUNCE,
     "Action: failed"),
    ("dsn-delayed", dsn(b"Action: delayed\r\nStatus: 4.4.7\r\n"), BOUNCE,
     "delay warning only, a soft bounce"),
    ("dsn-delivered", dsn(b"Action: delivered\r\nStatus: 2.0.0\r\n"), REPORT, "Action: delivered"),
    ("dsn-relayed", dsn(b"Action: relayed\r\n"), REPORT, "Action: relayed"),
    ("dsn-expanded", dsn(b"Action: expanded\r\n"), REPORT, "Action: expanded"),
    ("dsn-mixed-failed-wins",
     dsn(b"Action: delayed\r\n\r\nFinal-Recipient: rfc822; b@example.org\r\nAction: Failed\r\n"),
     BOUNCE, "Action: failed"),
    ("dsn-status-only-5xx", dsn(b"Status: 5.0.0\r\n"), BOUNCE, "Status: 5.x.x"),
    ("dsn-status-only-4xx", dsn(b"Status: 4.2.2\r\n"), BOUNCE, "Status: 4.x.x"),
    ("dsn-status-only-2xx", dsn(b"Status: 2.0.0\r\n"), REPORT, "Status: 2.0.0"),
    ("dsn-no-fields", dsn(b""), BOUNCE, "no Action field"),
    ("dsn-part-in-mixed", dsn(b"Action: failed\r\n", container=b"multipart/mixed"), BOUNCE,
     "report part in multipart/mixed; Action: failed"),
    ("dsn-delayed-in-mixed", dsn(b"Action: delayed\r\n", container=b"multipart/mixed"), BOUNCE,
     "report part in multipart/mixed; Action: delayed"),
    # Bounces carry Auto-Submitted too: a bounce, not an auto-reply.
    ("dsn-with-auto-submitted", dsn(b"Action: failed\r\n", extra=b"Auto-Submitted: auto-replied\r\n"),
     BOUNCE, "Action: failed"),
    # A DSN whose From line was lost (folded into Date:) is still read as a DSN.
    ("dsn-without-any-sender",
     dsn(b"Action: failed\r\nStatus: 4.0.0\r\n").replace(
         b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n", b""),
     BOUNCE, "despite: no sender address"),
    ("barracuda-bulk-filter-dsn-is-a-bounce",
     dsn(b"Action: failed\r\nStatus: 5.7.1\r\n").replace(
         b"Subject: Delivery report", b"Subject: **Message you sent blocked by our bulk email filter**"),
     BOUNCE, "Action: failed"),
    # --- read receipts and ARF
    ("mdn",
     b"From: jo@example.com\r\n"
     b"Subject: Read: your complaint\r\n"
     b"Content-Type: multipart/report; report-type=disposition-notification; boundary=M\r\n"
     b"\r\n--M\r\nContent-Type: text/plain\r\n\r\nYour message was displayed.\r\n"
     b"--M\r\nContent-Type: message/disposition-notification\r\n\r\n"
     b"Final-Recipient: rfc822; jo@example.com\r\n"
     b"Disposition: manual-action/MDN-sent-manually; displayed\r\n--M--\r\n",
     REPORT, "report-type=disposition-notification; Disposition: manual-action"),
    ("arf",
     b"From: feedback@isp.example\r\n"
     b"Subject: Abuse report\r\n"
     b"Content-Type: multipart/report; report-type=feedback-report; boundary=F\r\n"
     b"\r\n--F\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
     b"--F\r\nContent-Type: message/feedback-report\r\n\r\n"
     b"Feedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\n"
     b"--F\r\nContent-Type: message/rfc822\r\n\r\nFrom: complaints@provider.example\r\n"
     b"Subject: ack\r\n\r\nbody\r\n--F--\r\n",
     FEEDBACK, "report-type=feedback-report; Feedback-Type: abuse"),
    ("jmrp",
     b"From: staff@hotmail.example\r\nSubject: complaint about message from 192.0.2.1\r\n"
     b"Content-Type: multipart/mixed; boundary=J\r\n\r\n"
     b"--J\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n"
     b"X-HmXmrOriginalRecipient: someone@hotmail.example\r\n"
     b"From: complaints@provider.example\r\nSubject: ack\r\n\r\nbody\r\n--J--\r\n",
     FEEDBACK, "X-HmXmrOriginalRecipient"),
    ("ses-bounce-json",
     mail(b"From: AWS Notifications <no-reply@sns.amazonaws.com>\r\n"
          b"Subject: AWS Notification Message\r\n",
          b'{"notificationType":"Bounce","bounce":{"bounceType":"Permanent"},"mail":{}}\r\n'),
     BOUNCE, "Amazon SES notification: Bounce"),
    ("ses-delivery-delay-json",
     mail(b"From: AWS Notifications <no-reply@sns.amazonaws.com>\r\n"
          b"Subject: AWS Notification Message\r\n",
          b'{"eventType":"DeliveryDelay","deliveryDelay":{"delayType":"MailboxFull"}}\r\n'),
     BOUNCE, "Amazon SES notification: DeliveryDelay"),
    ("ses-complaint-escaped-json",
     mail(b"From: AWS Notifications <no-reply@sns.amazonaws.com>\r\n"
          b"Subject: AWS Notification Message\r\n",
          b'{\r\n "Type" : "Notification",\r\n'
          b' "Message" : "{\\"notificationType\\":\\"Complaint\\"}"\r\n}\r\n'),
     FEEDBACK, "Amazon SES notification: Complaint"),
    # --- non-standard bounces
    ("x-failed-recipients", mail(b"X-Failed-Recipients: gone@example.org\r\n"), BOUNCE,
     "X-Failed-Recipients: gone@example.org"),
    ("from-mailer-daemon", mail(b"From: MAILER-DAEMON@mx.example.net\r\nSubject: hi\r\n"),
     BOUNCE, "From: mailer-daemon@mx.example.net"),
    ("from-postmaster", mail(b"From: postmaster@example.net\r\nSubject: Undeliverable: x\r\n"),
     BOUNCE, "From: postmaster@example.net"),
    ("from-null-with-daemon-name",
     mail(b"From: MAILER-DAEMON <>\r\nSubject: Mail delivery failed\r\n"), BOUNCE,
     "From: MAILER-DAEMON <>"),
    ("return-path-daemon", mail(b"Return-Path: <MAILER-DAEMON@mx.example.net>\r\n"), BOUNCE,
     "Return-Path: mailer-daemon@mx.example.net"),
    ("qmail",
     mail(b"From: Delivery <noreply@mx.example.net>\r\nReturn-Path: <>\r\n"
          b"Subject: failure notice\r\n",
          b"Hi. This is the qmail-send program at mx.example.net.\r\n"
          b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"),
     BOUNCE, "body: This is the qmail-send program"),
    ("exim-bounce-with-auto-submitted",
     mail(b"From: Mail System <relay@mx.example.net>\r\nAuto-Submitted: auto-replied\r\n"
          b"Subject: Mail delivery failed: returning message to sender\r\n",
          b"This message was created automatically by mail delivery software.\r\n"),
     BOUNCE, "Subject: Mail delivery failed"),
    ("exchange-undeliverable",
     b"From: Microsoft Outlook <outlook@provider-mail.example>\r\n"
     b"Subject: Undeliverable: Your complaint reference\r\n"
     b"Content-Type: multipart/mixed; boundary=U\r\n\r\n"
     b"--U\r\nContent-Type: text/plain\r\n\r\n"
     b"Delivery has failed to these recipients or groups:\r\n"
     b"--U\r\nContent-Type: message/rfc822\r\n\r\nFrom: complaints@provider.example\r\n"
     b"Subject: ack\r\n\r\nbody\r\n--U--\r\n",
     BOUNCE, "Subject: Undeliverable: Your complaint reference"),
    ("gmail-dsn-subject-null-path",
     mail(b"From: Mail Delivery Subsystem <delivery@googlemail.example>\r\nReturn-Path: <>\r\n"
          b"Subject: Delivery Status Notification (Failure)\r\n"),
     BOUNCE, "Subject: Delivery Status Notification (Failure)"),
    ("yahoo-failure-notice",
     mail(b"From: Yahoo <bounces@yahoo.example>\r\nSubject: Failure Notice\r\n",
          b"Sorry, we were unable to deliver your message to the following address.\r\n"),
     BOUNCE, "subject and body both report a delivery failure"),
    ("exim-filter-not-a-valid-user",
     mail(b"From: <>\r\nAuto-Submitted: auto-replied\r\n",
          b"You sent mail to jo@example.org. That's not a valid user here.\r\n"),
     BOUNCE, "not a valid user"),
    # A gateway answering "RE: <subject> : non remis (delivery failed)": subject wording that is
    # not at the start backs up the body's, unless the subject is a forward.
    ("gateway-reply-with-failure-tag",
     mail(b"From: Gateway <gateway@bank.example>\r\n"
          b"Subject: RE: Your complaint : non remis (delivery failed)\r\n",
          b"Votre message n'a pas pu etre delivre a jo@bank.example\r\n"
          b"Your message could not be delivered to jo@bank.example\r\n"),
     BOUNCE, "subject and body both report a delivery failure"),
    ("non-delivery-report-with-list-headers",
     mail(b"From: <admin@bank.example>\r\nPrecedence: bulk\r\nList-Id: <talk.lists.example>\r\n"
          b"Subject: Non-Delivery: Your message awaits moderator approval\r\n",
          b"--- Non-Delivery Report ---\r\n"
          b"The email below could not be delivered to the following user:\r\n"),
     BOUNCE, "could not be delivered to the following user"),
    ("returned-mail-auto-submitted",
     mail(b"From: Relay <relay@example.net>\r\nAuto-Submitted: auto-generated (failure)\r\n"
          b"Subject: Returned mail: see transcript for details\r\n"),
     BOUNCE, "Auto-Submitted: auto-generated (failure)"),
    # Non-standard delay warnings are soft bounces, just like Action: delayed.
    ("gmail-delay-warning",
     mail(b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.example>\r\n"
          b"Subject: Delivery Status Notification (Delay)\r\n",
          b"This is an automatically generated Delivery Status Notification\r\n\r\n"
          b"THIS IS A WARNING MESSAGE ONLY.\r\n\r\nYOU DO NOT NEED TO RESEND YOUR MESSAGE.\r\n"),
     BOUNCE, "delay warning only, a soft bounce: (Delay)"),
    ("exim-delay-warning",
     mail(b"From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\n"
          b"Auto-Submitted: auto-replied\r\n"
          b"Subject: Warning: message 1abc-000 delayed 24 hours\r\n",
          b"A message that you sent has not yet been delivered to one or more of its\r\n"
          b"recipients after more than 24 hours on the queue.\r\n"),
     BOUNCE, "delay warning only, a soft bounce"),
    ("failed-recipients-beat-delay-wording",
     mail(b"From: Mail Delivery System <Mailer-Daemon@mx.example.net>\r\n"
          b"X-Failed-Recipients: gone@example.org\r\n"
          b"Subject: Mail delivery failed: returning message to sender\r\n",
          b"This message was created automatically by mail delivery software.\r\n"
          b"Delivery to other recipients has not yet been delivered and will be retried.\r\n"),
     BOUNCE, "X-Failed-Recipients"),
    # Bounce wording from a person, with nothing else automated about it, is a person.
    ("customer-subject-delivery-failure",
     mail(b"Subject: Delivery failure of my new router\r\n"), HUMAN, ""),
    ("customer-words-in-subject-and-body",
     mail(b"Subject: Delivery failure of my new router\r\n",
          b"There was a delivery failure: your courier never came. Mail delivery failed too.\r\n"),
     HUMAN, ""),
    ("customer-forward-subject-with-failure-words",
     mail(b"Subject: Fwd: my mail to you: delivery failed\r\n",
          b"My phone says your message could not be delivered. Why?\r\n"), HUMAN, ""),
    ("customer-forwards-a-bounce",
     mail(b"Subject: Fwd: Returned mail: see transcript for details\r\n",
          b"Why does my mail to you bounce?\r\n\r\nBegin forwarded message:\r\n\r\n"
          b"> From: Mail Delivery Subsystem <MAILER-DAEMON>\r\n"
          b"> The original message was received at Mon, 2 Mar 2026\r\n"),
     HUMAN, ""),
    # --- auto-replies
    ("auto-submitted-replied", mail(b"Auto-Submitted: auto-replied\r\n"), AUTO,
     "Auto-Submitted: auto-replied"),
    ("auto-submitted-generated", mail(b"Auto-Submitted: auto-generated\r\n"), AUTO,
     "Auto-Submitted: auto-generated"),
    ("auto-submitted-no", mail(b"Auto-Submitted: no\r\n"), HUMAN, ""),
    ("x-autoreply", mail(b"X-Autoreply: yes\r\n"), AUTO, "X-Autoreply: yes"),
    ("x-autorespond", mail(b"X-Autorespond: Thanks\r\n"), AUTO, "X-Autorespond: Thanks"),
    ("x-auto-response-suppress", mail(b"X-Auto-Response-Suppress: All\r\n"), AUTO,
     "X-Auto-Response-Suppress: All"),
    ("exchange-rules-loop", mail(b"X-MS-Exchange-Inbox-Rules-Loop: jo@example.com\r\n"), AUTO,
     "X-Ms-Exchange-Inbox-Rules-Loop"),
    ("exchange-oof-suppress-and-subject",
     mail(b"X-Auto-Response-Suppress: All\r\nSubject: Automatic reply: Your complaint\r\n"
          b"Thread-Topic: Your complaint\r\n"), AUTO, "X-Auto-Response-Suppress: All"),
    ("lotus-notes-auto-subject",
     mail(b"From: Jo Bloggs <jo.bloggs@notes.example>\r\n"
          b"Subject: AUTO: Jo Bloggs is out of the office (returning 02/03/2026)\r\n",
          b"I am out of the office until 02/03/2026 and will not see your message.\r\n"), AUTO,
     "Subject: AUTO: Jo Bloggs is out of the office"),
    ("exchange-generated-source",
     mail(b"X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent\r\n"), AUTO,
     "Mailbox Rules Agent"),
    ("precedence-auto-reply", mail(b"Precedence: auto_reply\r\n"), AUTO,
     "Precedence: auto_reply"),
    ("apple-vacation", mail(b"X-Apple-Action: VACATION\r\n"), AUTO, "X-Apple-Action: VACATION"),
    ("null-path-automatic-reply",
     mail(b"Return-Path: <>\r\nSubject: Automatic reply: your complaint\r\n"), AUTO,
     "Subject: Automatic reply"),
    # vacation(1) and its kin: a null sender and Precedence: bulk or junk, no other header.
    ("vacation-null-sender-precedence-bulk",
     mail(b"Return-Path: <>\r\nPrecedence: bulk\r\nSubject: Thank you for your e-mail\r\n",
          b"I will endeavour to reply as soon as possible.\r\n"), AUTO,
     "Return-Path: <> with Precedence: bulk"),
    ("vacation-null-from-precedence-junk",
     mail(b"From: <>\r\nPrecedence: junk\r\nSubject: Away\r\n"), AUTO,
     "From: <> (null sender) with Precedence: junk"),
    ("vacation-beats-precedence-list",
     mail(b"Auto-Submitted: auto-replied\r\nPrecedence: list\r\nSubject: Away\r\n"), AUTO,
     "Auto-Submitted: auto-replied"),
    # --- challenge-response systems: auto-replies, never acknowledged or answered
    ("cr-bluebottle",
     mail(b"From: jo@bluebottle.example\r\nSubject: RE: Your complaint\r\n"
          b"X-Bluebottle-Request: <1234>\r\n",
          b"This account is protected by Bluebottle. Please click on the following link to have\r\n"
          b"your address added to the recipient's allowed list.\r\n"),
     AUTO, "X-Bluebottle-Request (Bluebottle)"),
    ("cr-boxtrapper", mail(b"X-Boxtrapper: 1\r\nSubject: Re: Your complaint\r\n"), AUTO,
     "X-Boxtrapper (cPanel BoxTrapper)"),
    ("cr-spamarrest-header", mail(b"X-Spamarrest-noauth: 1\r\n"), AUTO, "(Spam Arrest)"),
    ("cr-spamarrest-domain",
     mail(b"Return-Path: <verify@mail.spamarrest.com>\r\nSubject: Re: Your complaint\r\n"),
     AUTO, "sent by Spam Arrest (verify@mail.spamarrest.com)"),
    ("cr-choicemail", mail(b"X-ChoiceMail-Registration-Request: yes\r\n"), AUTO, "(ChoiceMail)"),
    ("cr-ask", mail(b"X-AskVersion: 2.5.3\r\n"), AUTO, "(ASK (Active Spam Killer))"),
    ("cr-tmda-agent",
     mail(b"X-Delivery-Agent: TMDA/1.1.12 (Macallan)\r\nSubject: Re: Your complaint\r\n"), AUTO,
     "TMDA confirmation request"),
    ("cr-tmda-message-id",
     mail(b"Subject: Re: Your complaint\r\n").replace(
         b"<c1@example.com>", b"<1767225600.4242.tmda@mail.example.net-tmda-confirm>"), AUTO,
     "TMDA confirmation request"),
    # Boxbe wraps its notice in a DSN with Action: failed: a challenge, not a bounce.
    ("cr-boxbe-dsn-from-boxbe",
     dsn(b"Action: failed\r\nStatus: 4.7.0\r\n").replace(
         b"Mail Delivery System <MAILER-DAEMON@mx.example.net>", b"noreply@boxbe.com"),
     AUTO, "sent by Boxbe (noreply@boxbe.com)"),
    ("cr-boxbe-diagnostic",
     dsn(b"Action: failed\r\nStatus: 4.7.0\r\n"
         b"Diagnostic-Code: X-Boxbe-Notice; Sender not pre-approved\r\n"),
     AUTO, "Diagnostic-Code: X-Boxbe-Notice (Boxbe)"),
    ("cr-verify-subject", mail(b"Subject: Please Verify Your Email Address\r\n"), AUTO,
     "challenge-response system"),
    ("cr-requires-verification-subject",
     mail(b"Subject: Your email requires verification verify:8c2f1e\r\n"), AUTO,
     "challenge-response system"),
    ("cr-qurb-subject", mail(b"Subject: Your complaint [Qurb #1234567]\r\n"), AUTO,
     "challenge-response system"),
    ("cr-confirm-human-null-sender",
     mail(b"Return-Path: <>\r\nSubject: Re: Your complaint\r\n",
          b"I use a challenge-response filter. Please confirm you are human by replying.\r\n"),
     AUTO, "body: challenge-response"),
    ("cr-confirm-human-auto-submitted",
     mail(b"Auto-Submitted: auto-replied\r\nSubject: Re: Your complaint\r\n",
          b"To get through, please verify that you are a real person: http://cr.example/v/1\r\n"),
     AUTO, "body: verify that you are a real person"),
    # The same words from a customer, with nothing automated about the message, are a person.
    ("customer-quoting-a-captcha",
     mail(b"Subject: Your website\r\n",
          b"The form says 'please confirm you are human' and then crashes.\r\n"), HUMAN, ""),
    # --- the null sender alone
    ("null-return-path", mail(b"Return-Path: <>\r\nSubject: something\r\n"), BOUNCE,
     "Return-Path: <>"),
    # --- bulk
    ("precedence-bulk", mail(b"Precedence: bulk\r\n"), BULK, "Precedence: bulk"),
    ("precedence-junk", mail(b"Precedence: junk\r\n"), BULK, "Precedence: junk"),
    ("precedence-list", mail(b"Precedence: list\r\n"), BULK, "Precedence: list"),
    ("list-id", mail(b"List-Id: Users <users.lists.example>\r\n"), BULK, "List-Id"),
    ("list-unsubscribe", mail(b"List-Unsubscribe: <mailto:u@lists.example>\r\n"), BULK,
     "List-Unsubscribe"),
    ("spam-flag", mail(b"X-Spam-Flag: YES\r\n"), BULK, "X-Spam-Flag: YES"),
    ("spam-status", mail(b"X-Spam-Status: Yes, score=12.1\r\n"), BULK, "X-Spam-Status: Yes"),
    ("spam-flag-no", mail(b"X-Spam-Flag: NO\r\nX-Spam-Status: No, score=0.1\r\n"), HUMAN, ""),
    ("facebook-notify", mail(b"X-Facebook-Notify: note_reply\r\n"), BULK, "X-Facebook-Notify"),
    # --- people
    ("plain-customer", mail(b"Subject: Complaint about my bill\r\n"), HUMAN, ""),
    ("customer-reply", mail(b"Subject: Re: [CLR-2026-000123] Your complaint\r\n"
                            b"In-Reply-To: <ack-1@provider.example>\r\n"), HUMAN, ""),
]

AUTO_REPLY_SUBJECTS = [
    "Auto: Your complaint",
    "AUTO: Jo Bloggs is out of the office (returning 02/03/2026)",
    "AUTO: Jo is out of the office",
    "Automatic reply: Your complaint",
    "Auto reply: Your complaint",
    "Autoreply: Your complaint",
    "Out of Office: Your complaint",
    "Out of Office AutoReply: Your complaint",
    "Out of the office",
    "Abwesenheitsnotiz: Ihre Beschwerde",
    "Automatische Antwort: Ihre Beschwerde",
    "Réponse automatique : votre plainte",
    "Risposta automatica: reclamo",
    "Respuesta automática: queja",
    "Automatisch antwoord: klacht",
    "[Automatyczna odpowiedź] skarga",
    "Arpus biroja atrasanas automatiska atbilde: subjecting",
    "Automātiskā atbilde: jūsu sūdzība",
    "Automatinis atsakymas: skundas",
    "Automatická odpověď: stížnost",
    "Automatická odpoveď: sťažnosť",
    "Automatikus válasz: panasz",
    "Răspuns automat: reclamație",
    "Automatski odgovor: prigovor",
    "Otomatik yanıt: şikayet",
    "Αυτόματη απάντηση: παράπονο",
    "Автоматический ответ: жалоба",
    "Автоматичен отговор: оплакване",
    "자동 회신: 불만",
]

CUSTOMER_SUBJECTS = [
    "Out of office hours engineer charge",
    "Out of the office all week and still no broadband",
    "Automatic renewal without asking me",
    "Automatic response to my complaint was useless",
    "Auto top-up took £20",
    "Abwesend im Urlaub, Roaming-Rechnung zu hoch",
    "On vacation, roaming charges were huge",
    "Auto-renewal complaint",
    "Delivery failure of my router",
    "Returned my router, still billed",
    "Re: Undeliverable: my complaint",
]


@pytest.mark.parametrize(("raw", "kind", "reason"), [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_rules(raw: bytes, kind: MessageKind, reason: str) -> None:
    got_kind, reasons = run(raw)
    assert got_kind is kind, reasons
    if kind is HUMAN:
        assert reasons == ()
    else:
        assert reasons, "automated kinds always carry evidence"
        assert any(reason in r for r in reasons), reasons


@pytest.mark.parametrize("subject", AUTO_REPLY_SUBJECTS)
def test_auto_reply_subjects(subject: str) -> None:
    raw = mail(b"Subject: " + subject.encode() + b"\r\n")
    assert run(raw)[0] is AUTO


@pytest.mark.parametrize("subject", CUSTOMER_SUBJECTS)
def test_customer_subjects_stay_human(subject: str) -> None:
    raw = mail(b"Subject: " + subject.encode() + b"\r\n")
    assert run(raw) == (HUMAN, ())


def test_own_addresses_are_only_ours() -> None:
    raw = mail(b"From: complaints@provider.example\r\n")
    assert run(raw, own=frozenset())[0] is HUMAN
    assert run(raw)[0] is OWN_MAIL


def test_is_automated_matches_kinds() -> None:
    # The whole point of classification: nothing automated is ever acknowledged.
    assert not HUMAN.is_automated
    assert not UNPARSEABLE.is_automated
    for kind in (AUTO, BOUNCE, REPORT, FEEDBACK, BULK, OWN_MAIL):
        assert kind.is_automated


def test_classify_is_pure_on_value_objects() -> None:
    msg = ParsedMessage(message_id="<x@y>", from_address="jo@example.com",
                        headers=(("auto-submitted", "auto-replied"),))
    first = classify(msg, own_addresses=OWN)
    assert first == classify(msg, own_addresses=OWN)
    assert first.kind is AUTO


# ----------------------------------------------------------------------------- hard or soft
# analyse_bounce decides what a BOUNCE does: a permanent one marks the address undeliverable,
# a soft one (a delay, a 4.x.x failure) is only recorded.


def test_delayed_dsn_is_a_soft_bounce_for_the_delayed_recipient() -> None:
    report = analyse_bounce(parse_message(dsn(b"Action: delayed\r\nStatus: 4.4.7\r\n")))
    assert report.recipients == ("gone@example.org",)
    assert not report.permanent
    assert report.reason == "4.4.7"


def test_only_failed_recipients_count_and_either_field_order_works() -> None:
    raw = dsn(b"Action: delivered\r\nStatus: 2.0.0\r\n\r\n"
              b"Final-Recipient: rfc822; gone@example.net\r\n"
              b"Original-Recipient: rfc822; alias@example.net\r\n"
              b"Action: failed\r\nStatus: 5.1.1\r\n"
              b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n")
    report = analyse_bounce(parse_message(raw))
    assert report.recipients == ("gone@example.net", "alias@example.net")
    assert report.permanent and report.reason == "smtp; 550 5.1.1 User unknown"


def test_non_standard_delay_warning_without_a_code_is_soft() -> None:
    raw = mail(b"From: Mail Delivery Subsystem <mailer-daemon@googlemail.example>\r\n"
               b"Subject: Delivery Status Notification (Delay)\r\n",
               b"This is an automatically generated Delivery Status Notification\r\n\r\n"
               b"THIS IS A WARNING MESSAGE ONLY.\r\n")
    report = analyse_bounce(parse_message(raw))
    assert (report.permanent, report.reason) == (False, "delivery delayed")


def test_codes_in_the_returned_copy_are_not_the_servers_verdict() -> None:
    # The copy of our message below the marker has version numbers and a "550" of its own.
    original = (b"--- Below this line is a copy of the message.\r\n\r\n"
                b"Return-Path: <complaints@provider.example>\r\n"
                b"X-Mailer: Mailer 5.0.1\r\nSubject: Case 550\r\n\r\nSee 550 Oxford Street.\r\n")
    head = b"From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice\r\n"
    soft = analyse_bounce(parse_message(mail(head, b"Hi. This is the qmail-send program.\r\n"
                                             b"<jo@example.org>:\r\nMailbox full. (#4.2.2)\r\n"
                                             + original)))
    assert (soft.permanent, soft.reason) == (False, "Mailbox full. (#4.2.2)")
    no_code = analyse_bounce(parse_message(mail(head, b"Hi. This is the qmail-send program.\r\n"
                                                b"<jo@example.org>:\r\nNo such user.\r\n"
                                                + original.replace(b"5.0.1", b"4.0.1"))))
    # No code from the server at all: it says delivery failed, so the failure is permanent.
    assert (no_code.permanent, no_code.reason) == (True, "delivery failed")
