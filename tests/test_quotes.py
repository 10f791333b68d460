"""Reply extraction: keep the staff member's new text, drop the quoted history.

The corpus tests read ../shared/corpora (see its README) and are skipped when that folder is
absent, as in a fresh clone; the hand-written tests always run.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.core.htmltext import html_to_text
from worker.core.parse import parse_message
from worker.core.quotes import Reply, _visible, extract_reply

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
TRIMMER = CORPORA / "email_reply_trimmer" / "test"
TALON_REPLIES = CORPORA / "talon" / "tests" / "fixtures" / "standard_replies"

needs_corpora = pytest.mark.skipif(
    not CORPORA.is_dir(), reason=f"mail corpora not available at {CORPORA} (../shared/corpora)"
)

# Where our output differs from email_reply_trimmer's expectation, on purpose.
TRIMMER_DIFFERENCES = {
    "usenet": "we keep the staff member's '--' signature; the trimmer drops it",
    "embedded_email_polish_1": "we keep the '--' signature above the quote; the trimmer drops it",
    "embedded_email_7": "text above the attribution makes it top posting: we cut at the header, "
    "the trimmer keeps the quote and the text below it",
    "embedded_email_17": "text above the second attribution makes it top posting: we cut there, "
    "the trimmer keeps that quote and the text below it",
}


def normalise(text: str) -> str:
    """Trailing whitespace per line and leading/trailing blank lines do not count."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


# --- corpora -------------------------------------------------------------------------------------


@pytest.mark.corpora
@needs_corpora
def test_email_reply_trimmer_score() -> None:
    emails = sorted((TRIMMER / "emails").glob("*.txt"))
    assert emails, f"no emails in {TRIMMER}"
    failures: list[str] = []
    for path in emails:
        got = extract_reply(path.read_text(encoding="utf-8")).text
        want = (TRIMMER / "trimmed" / path.name).read_text(encoding="utf-8")
        if normalise(got) != normalise(want):
            failures.append(path.stem)
    matched = len(emails) - len(failures)
    score = 100 * matched / len(emails)
    print(f"\nemail_reply_trimmer: {matched}/{len(emails)} = {score:.1f}%")
    for name in failures:
        print(f"  differs: {name}: {TRIMMER_DIFFERENCES.get(name, 'UNEXPECTED')}")
    assert score >= 90, f"only {matched}/{len(emails)} ({score:.1f}%); differing: {failures}"


@pytest.mark.corpora
@needs_corpora
def test_talon_standard_replies_are_exactly_the_new_text() -> None:
    emls = sorted(TALON_REPLIES.glob("*.eml"))
    assert emls, f"no messages in {TALON_REPLIES}"
    wrong: list[str] = []
    for path in emls:
        message = parse_message(path.read_bytes())
        expected_file = TALON_REPLIES / f"{path.stem}_reply_text"
        expected = (
            normalise(expected_file.read_text(encoding="utf-8")) if expected_file.exists() else "Hello"
        )
        reply = extract_reply(message.text, html=message.html if message.text_from_html else None)
        if reply.text != expected:
            wrong.append(f"{path.name}: {reply.text!r} != {expected!r}")
    assert not wrong, "\n".join(wrong)


# --- HTML-only replies ---------------------------------------------------------------------------

OUTLOOK_TOP = """<html><head><style>p {margin:0}</style></head><body dir="ltr">"""
OUTLOOK_NEW = """<div style="font-family: Calibri"><p>Dear Mrs Smith,</p><p>&nbsp;</p>
<p>We have refunded the &pound;12.50 charge. It will reach your account within 5 working days.</p>
<p>&nbsp;</p><p>Kind regards,<br>Jo Bloggs<br>Complaints team</p></div>"""
OUTLOOK_HISTORY = """<hr style="display:inline-block;width:98%" tabindex="-1">
<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri" style="font-size:11pt">
<b>From:</b> Jane Smith &lt;jane@example.com&gt;<br>
<b>Sent:</b> Monday, 3 March 2025 10:02<br>
<b>To:</b> Complaints &lt;complaints@example.co.uk&gt;<br>
<b>Subject:</b> Re: [CMP-1042] Charged twice for broadband</font><div>&nbsp;</div></div>
<div><p>I was charged twice this month. Please refund me.</p></div>
</body></html>"""
OUTLOOK_HTML = OUTLOOK_TOP + OUTLOOK_NEW + OUTLOOK_HISTORY


def test_outlook_html_reply_cut_at_divrplyfwdmsg() -> None:
    reply = extract_reply(html_to_text(OUTLOOK_HTML), html=OUTLOOK_HTML)
    # html_to_text renders paragraphs as lines (an &nbsp; paragraph is not a blank line).
    assert reply.text == (
        "Dear Mrs Smith,\n"
        "We have refunded the £12.50 charge. It will reach your account within 5 working days.\n"
        "Kind regards,\nJo Bloggs\nComplaints team"
    )
    assert "From: Jane Smith" in reply.quoted
    assert "I was charged twice" in reply.quoted


def test_outlook_html_only_message_through_the_parser() -> None:
    raw = (
        "From: Jo Bloggs <jo@example.co.uk>\r\nTo: relay@example.co.uk\r\n"
        "Subject: RE: [CMP-1042] Charged twice\r\nMessage-ID: <a1@example.co.uk>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + OUTLOOK_HTML
    ).encode()
    message = parse_message(raw)
    assert message.text_from_html
    reply = extract_reply(message.text, html=message.html if message.text_from_html else None)
    assert reply.text.startswith("Dear Mrs Smith,")
    assert reply.text.endswith("Complaints team")
    assert "charged twice this month" not in reply.text


def test_outlook_html_hr_and_header_block_without_ids() -> None:
    html = (
        "<div>Your engineer visit is booked for Tuesday.</div>"
        "<hr><b>From:</b> jane@example.com<br><b>To:</b> complaints@example.co.uk<br>"
        "<b>Sent:</b> Friday, 7 March 2025 18:20<br><b>Subject:</b> Slow line<br><br>"
        "<div>My line is slow.</div>"
    )
    reply = extract_reply(html_to_text(html), html=html)
    assert reply.text == "Your engineer visit is booked for Tuesday."
    assert "My line is slow." in reply.quoted


def test_outlook_html_with_nothing_written_relays_nothing() -> None:
    html = OUTLOOK_TOP + OUTLOOK_HISTORY
    reply = extract_reply(html_to_text(html), html=html)
    assert reply.text == ""
    assert "I was charged twice" in reply.quoted


def test_gmail_html_reply_cut_at_gmail_quote() -> None:
    html = (
        '<div dir="ltr">Hi Jane,<div><br></div><div>Your refund has been issued.</div>'
        '<div><br></div><div>Jo</div></div><br><div class="gmail_quote gmail_quote_container">'
        '<div dir="ltr" class="gmail_attr">On Mon, 3 Mar 2025 at 10:02, Jane Smith &lt;'
        '<a href="mailto:jane@example.com">jane@example.com</a>&gt; wrote:<br></div>'
        '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">'
        "I was charged twice.</blockquote></div>"
    )
    reply = extract_reply(html_to_text(html), html=html)
    assert reply.text == "Hi Jane,\n\nYour refund has been issued.\n\nJo"
    assert "On Mon, 3 Mar 2025 at 10:02, Jane Smith" in reply.quoted
    assert "I was charged twice." in reply.quoted


def test_apple_html_reply_cut_at_cite_blockquote() -> None:
    html = (
        "<html><body><div>Refund issued today.</div><div><br></div><div>Jo</div>"
        '<div><br><blockquote type="cite"><div>On 3 Mar 2025, at 10:02, Jane Smith '
        "&lt;jane@example.com&gt; wrote:</div><br><div><div>I was charged twice.</div></div>"
        "</blockquote></div></body></html>"
    )
    reply = extract_reply(html_to_text(html), html=html)
    assert reply.text == "Refund issued today.\n\nJo"
    assert "I was charged twice." in reply.quoted


def test_thunderbird_html_bottom_posting_keeps_the_answer_below() -> None:
    html = (
        '<div class="moz-cite-prefix">On 03/03/2025 10:02, Jane Smith wrote:<br></div>'
        '<blockquote type="cite">I was charged twice.</blockquote>'
        "<p>The duplicate charge has been refunded.</p><p>Jo</p>"
    )
    reply = extract_reply(html_to_text(html), html=html)
    assert reply.text == "The duplicate charge has been refunded.\nJo"
    assert "I was charged twice." in reply.quoted


def test_html_argument_without_a_quote_container_uses_the_text_rules() -> None:
    html = "<p>Thanks, all sorted.</p><blockquote>&gt; older text</blockquote>"
    reply = extract_reply(html_to_text(html), html=html)
    assert reply.text == "Thanks, all sorted."


# --- plain text ----------------------------------------------------------------------------------


def test_german_outlook_reply() -> None:
    text = (
        "Sehr geehrte Frau Schmidt,\n\n"
        "wir haben Ihnen die doppelte Abbuchung erstattet.\n\n"
        "Mit freundlichen Grüßen\nJo Bloggs\n\n"
        "________________________________\n"
        "Von: Anna Schmidt <anna@example.de>\n"
        "Gesendet: Montag, 3. März 2025 10:02\n"
        "An: Beschwerden <beschwerden@example.de>\n"
        "Betreff: AW: Doppelte Abbuchung\n\n"
        "Mir wurde zweimal abgebucht.\n"
    )
    reply = extract_reply(text)
    assert reply.text == (
        "Sehr geehrte Frau Schmidt,\n\n"
        "wir haben Ihnen die doppelte Abbuchung erstattet.\n\n"
        "Mit freundlichen Grüßen\nJo Bloggs"
    )
    assert reply.quoted.startswith("________________________________\nVon: Anna Schmidt")
    assert reply.quoted.endswith("Mir wurde zweimal abgebucht.")


def test_german_original_message_divider() -> None:
    text = (
        "Erledigt.\n\n-----Ursprüngliche Nachricht-----\nVon: Anna <anna@example.de>\n"
        "Gesendet: Montag, 3. März 2025 10:02\nAn: Beschwerden\nBetreff: Hilfe\n\nHallo"
    )
    assert extract_reply(text).text == "Erledigt."


def test_french_gmail_reply() -> None:
    text = (
        "Bonjour Madame,\n\nLe remboursement a été effectué.\n\nCordialement,\nJo\n\n"
        "Le lun. 3 mars 2025 à 10:02, Claire Martin <claire@example.fr> a écrit :\n\n"
        "> J'ai été prélevée deux fois.\n"
    )
    reply = extract_reply(text)
    assert reply.text == "Bonjour Madame,\n\nLe remboursement a été effectué.\n\nCordialement,\nJo"
    assert reply.quoted.startswith("Le lun. 3 mars 2025")


def test_french_outlook_header_block_with_spaces_before_colons() -> None:
    text = (
        "C'est corrigé.\n\nDe : Claire Martin <claire@example.fr>\n"
        "Envoyé : lundi 3 mars 2025 10:02\nÀ : Réclamations <rec@example.fr>\n"
        "Objet : Facture\n\nBonjour"
    )
    assert extract_reply(text).text == "C'est corrigé."


def test_gmail_attribution_wrapped_over_two_lines() -> None:
    text = (
        "Done, refund issued.\n\n"
        "On Mon, Mar 3, 2025 at 10:02 AM Jane Smith via Complaints <\n"
        "complaints@example.co.uk> wrote:\n\n> I was charged twice.\n"
    )
    reply = extract_reply(text)
    assert reply.text == "Done, refund issued."
    assert reply.quoted.startswith("On Mon, Mar 3, 2025")


@pytest.mark.parametrize(
    "header",
    [
        "Op ma 3 mrt 2025 om 10:02 schreef Jan Jansen <jan@example.nl>:",
        "El lun, 3 mar 2025 a las 10:02, Juan Pérez (<juan@example.es>) escribió:",
        "Il giorno lun 3 mar 2025 alle ore 10:02 Mario Rossi <mario@example.it> ha scritto:",
        "Em seg., 3 de mar. de 2025 às 10:02, João Silva <joao@example.pt> escreveu:",
        "Den mån 3 mars 2025 kl 10:02 skrev Sven Svensson <sven@example.se>:",
        "Den man. 3. mar. 2025 kl. 10.02 skrev Lars Hansen <lars@example.dk>:",
        "man. 3. mar. 2025 kl. 10:02 skrev Ola Nordmann <ola@example.no>:",
        "pon., 3 mar 2025 o 10:02 Jan Kowalski <jan@example.pl> napisał(a):",
        "пн, 3 мар. 2025 г. в 10:02, Иван Иванов <ivan@example.ru>:",
        "3 марта 2025 г., в 10:02, Иван Иванов <ivan@example.ru> написал(а):",
        "Am Mo., 3. März 2025 um 10:02 Uhr schrieb Anna Schmidt <anna@example.de>:",
        "ma 3. maalisk. 2025 klo 10.02 Matti Meikäläinen (matti@example.fi) kirjoitti:",
        "On 3 Mar 2025, at 10:02, Jane Smith <jane@example.com> wrote:",
    ],
)
def test_localised_attributions_cut(header: str) -> None:
    text = f"New text.\n\n{header}\n\n> Old text.\n"
    reply = extract_reply(text)
    assert reply.text == "New text."
    assert reply.quoted.startswith(header)


@pytest.mark.parametrize(
    "marker",
    [
        "-----Original Message-----",
        "-------- Original Message --------",
        "-------- Forwarded Message --------",
        "---------- Forwarded message ---------",
        "-----Mensaje original-----",
        "-----Message d'origine-----",
        "Begin forwarded message:",
    ],
)
def test_original_and_forward_markers_start_the_history(marker: str) -> None:
    text = f"See the details below.\n\n{marker}\nFrom: Jane <jane@example.com>\nSubject: Hi\n\nOld"
    assert extract_reply(text).text == "See the details below."


def test_bottom_posted_mutt_reply() -> None:
    text = (
        "On Mon, Mar 03, 2025 at 10:02:11AM +0000, Jane Smith wrote:\n"
        "> I was charged twice for March.\n"
        "> Please refund me.\n"
        "\n"
        "The duplicate charge has been refunded.\n"
        "\n"
        "-- \n"
        "Jo Bloggs\n"
        "Complaints team\n"
    )
    reply = extract_reply(text)
    assert reply.text == "The duplicate charge has been refunded.\n\n-- \nJo Bloggs\nComplaints team"
    assert reply.quoted.startswith("On Mon, Mar 03, 2025")
    assert "Please refund me." in reply.quoted


def test_bottom_posting_below_a_quoted_outlook_block() -> None:
    text = (
        "> -----Original Message-----\n"
        "> From: Jane Smith [mailto:jane@example.com]\n"
        "> Sent: Monday, March 3, 2025 10:02 AM\n"
        "> To: Complaints\n"
        "> Subject: Charged twice\n"
        ">\n"
        "> Please refund me.\n"
        "\n"
        "Refunded today.\n"
    )
    assert extract_reply(text).text == "Refunded today."


def test_inline_reply_keeps_the_answers_and_drops_the_quotes() -> None:
    text = (
        "On Mon, 3 Mar 2025 at 10:02, Jane Smith <jane@example.com> wrote:\n"
        "> I was charged twice.\n"
        "Refunded today.\n"
        "> And my line is slow.\n"
        "An engineer will call on Tuesday.\n"
    )
    reply = extract_reply(text)
    assert reply.text == "Refunded today.\nAn engineer will call on Tuesday."
    assert "> I was charged twice." in reply.quoted
    assert "> And my line is slow." in reply.quoted


def test_inline_reply_under_a_greeting() -> None:
    text = (
        "Hi Jane,\n"
        "On Mon, 3 Mar 2025 at 10:02, Jane Smith <jane@example.com> wrote:\n"
        "> I was charged twice.\n"
        "\n"
        "Refunded today.\n"
    )
    assert extract_reply(text).text == "Hi Jane,\n\nRefunded today."


def test_command_lines_at_the_top_are_kept() -> None:
    text = (
        "#resolved\n"
        "#category billing\n"
        "\n"
        "Dear Mrs Smith, your refund has been issued.\n"
        "\n"
        "On Mon, 3 Mar 2025 at 10:02, Jane Smith <jane@example.com> wrote:\n"
        "> I was charged twice.\n"
    )
    reply = extract_reply(text)
    assert reply.text == (
        "#resolved\n#category billing\n\nDear Mrs Smith, your refund has been issued."
    )


def test_dash_dash_space_signature_is_kept() -> None:
    text = "Your refund has been issued.\n\n-- \nJo Bloggs\nComplaints team\n0800 000 000\n"
    reply = extract_reply(text)
    assert reply.text == "Your refund has been issued.\n\n-- \nJo Bloggs\nComplaints team\n0800 000 000"
    assert reply.quoted == ""


def test_mobile_signature_is_kept_and_ends_the_new_text() -> None:
    text = (
        "Refund issued.\n\nSent from my iPhone\n\n"
        "On 3 Mar 2025, at 10:02, Jane Smith <jane@example.com> wrote:\n\n> Help\n"
    )
    assert extract_reply(text).text == "Refund issued.\n\nSent from my iPhone"
    text = "Refund issued.\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n\nJane's old text\n"
    reply = extract_reply(text)
    assert reply.text == "Refund issued.\n\nGet Outlook for iOS<https://aka.ms/o0ukef>"
    assert reply.quoted == "Jane's old text"


def test_mobile_signature_lookalikes_do_not_cut() -> None:
    text = (
        "Your replacement router was\n"
        "sent from our warehouse today.\n\n"
        "Sent from our Leeds office\n\n"
        "It should arrive on Thursday."
    )
    assert extract_reply(text).text == text


def test_text_without_quotes_is_unchanged() -> None:
    text = (
        "Dear Mr Jones,\n\n"
        "On Monday our engineer found a fault at the exchange.\n"
        "From: our side, the line is now fixed.\n"
        "To: be sure, please restart your router.\n\n"
        "Regards,\nJo"
    )
    assert extract_reply(text) == Reply(text=text, quoted="")


def test_a_citation_answered_below_is_kept_but_a_trailing_quote_is_not() -> None:
    text = "> Can I get a refund?\n\nYes, it has been issued.\n\n> old history\n> more\n"
    reply = extract_reply(text)
    assert reply.text == "> Can I get a refund?\n\nYes, it has been issued."
    assert reply.quoted == "> old history\n> more"


def test_quoted_attribution_block_after_new_text_is_cut() -> None:
    text = (
        "Sorted.\n\n"
        "> On 3 Mar 2025, at 10:02, Jane Smith <jane@example.com> wrote:\n>\n> Help\n\n"
        "--\nJo\n"
    )
    assert extract_reply(text).text == "Sorted."


def test_trailing_separator_lines_and_whitespace_are_dropped() -> None:
    assert extract_reply("Done.   \n\n--\n____\n\n").text == "Done."
    assert extract_reply("\r\n\r\nDone.\r\n").text == "Done."


def test_empty_input() -> None:
    assert extract_reply("") == Reply(text="", quoted="")
    assert extract_reply("", html="") == Reply(text="", quoted="")


def test_hostile_input_stays_linear() -> None:
    # Unclosed tags, endless lines and lines that all look like the start of an attribution must
    # not make the scans quadratic (that would take minutes here, not a fraction of a second).
    started = time.perf_counter()
    html = "<div" * 50_000 + "<p>text</p>" + '<div class="gmail_quote">' + "x" * 10
    extract_reply(html_to_text(html), html=html)
    text = ("On " + "1/2/2025 " * 5_000 + "\n") * 20 + "-- " * 10_000 + "\n" + "> x\n" * 10_000
    extract_reply(text)
    extract_reply("On 1/2/2025 <a@b.example> x:\n" * 5_000 + "From: a\nTo: b\n" * 5_000)
    assert time.perf_counter() - started < 10


@given(st.text(alphabet=st.sampled_from(
    [" ", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u200b", "\u200f", "\u2060",
     "\ufeff", "\u3000", ">", ":", "a", "Z", "é", "£"]), max_size=40))
def test_lines_are_compared_without_invisible_characters_however_spelled(line: str) -> None:
    """What the rules read of a line: invisible characters and whitespace runs become one
    space, the ends stripped (the fast path, for lines with no invisible character but
    whitespace, must agree with the pattern)."""
    assert _visible(line) == re.sub(r"[\s\u200b-\u200f\u2060\ufeff]+", " ", line).strip()
