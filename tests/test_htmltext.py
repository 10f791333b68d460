"""html_to_text: readable text from HTML mail bodies, in linear time."""

from __future__ import annotations

import pytest

from worker.core import htmltext
from worker.core.htmltext import MAX_HTML_CHARS, TIME_LIMIT_MARKER, convert_html, html_to_text
from worker.core.parse import parse_message


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        pytest.param("<p>One</p><p>Two</p>", "One\nTwo", id="paragraphs"),
        pytest.param("line one<br>line two<br/>line three", "line one\nline two\nline three",
                     id="br"),
        pytest.param("<ul><li>first</li><li>second</li></ul>", "- first\n- second", id="li"),
        pytest.param(
            "<html><head><title>T</title><style>p {color: red}</style></head>"
            "<body><script>alert('x')</script><p>Visible</p></body></html>",
            "Visible",
            id="drop-head-script-style",
        ),
        pytest.param("<p>Fish &amp; chips &lt;3 &euro;5 &#8364;6 &#x41;</p>", "Fish & chips <3 €5 €6 A",
                     id="entities"),
        pytest.param("<p>  lots\n\n of \t  space&nbsp;&nbsp;here </p>", "lots of space here",
                     id="collapse-whitespace"),
        pytest.param("<div>a</div>\n\n\n<div>b</div>", "a\nb", id="no-blank-line-runs"),
        pytest.param(
            "<p>My reply</p><blockquote><p>quoted</p><blockquote>deeper</blockquote>back</blockquote>"
            "<p>after</p>",
            "My reply\n> quoted\n> > deeper\n> back\nafter",
            id="blockquote",
        ),
        pytest.param('<a href="https://example.com/bill">my bill</a>',
                     "my bill (https://example.com/bill)", id="link-text-differs"),
        pytest.param('<a href="https://example.com/">https://example.com/</a>',
                     "https://example.com/", id="link-text-is-url"),
        pytest.param('<a href="http://www.example.com">example.com</a>', "example.com",
                     id="link-same-target-normalised"),
        pytest.param('<a href="mailto:help@example.com">help@example.com</a>', "help@example.com",
                     id="mailto-same"),
        pytest.param('<a href="javascript:void(0)">click</a>', "click", id="javascript-link"),
        pytest.param('<a href="#top">top</a>', "top", id="anchor-link"),
        pytest.param('<a href="https://x.example/"><img src="logo.png"></a>Hi', "Hi",
                     id="image-only-link"),
        pytest.param("<pre>  a  b\n    c</pre>", "  a  b\n    c", id="pre-keeps-layout"),
        pytest.param("<table><tr><td>Name</td><td>Value</td></tr><tr><td>x</td><td>1</td></tr>"
                     "</table>", "Name Value\nx 1", id="table"),
        pytest.param("<!--[if mso]><p>only outlook</p><![endif]--><p>shown</p>", "shown",
                     id="outlook-conditional-comment"),
        pytest.param("<p><![if !supportLists]>1.<![endif]>Item</p>", "1.Item",
                     id="outlook-marked-section"),
        pytest.param("<p>before<!-- unclosed comment <p>hidden</p>", "before",
                     id="unclosed-comment"),
        pytest.param("a < b and c", "a < b and c", id="stray-lt"),
        pytest.param("", "", id="empty"),
        pytest.param("<SCRIPT>x=1</SCRIPT><P>Upper</P>", "Upper", id="uppercase-tags"),
        pytest.param("<html><head><title>Subject<body><p>Body text</p>", "Body text",
                     id="unclosed-head-closed-by-body"),
    ],
)
def test_html_to_text(html: str, expected: str) -> None:
    assert html_to_text(html) == expected


def test_max_chars_caps_output() -> None:
    html = "<p>" + "word " * 10_000 + "</p>"
    out = html_to_text(html, max_chars=100)
    assert 0 < len(out) <= 100
    assert out.startswith("word word")


def test_two_thousand_links_complete_and_yield_text() -> None:
    html = "<html><body>" + "".join(
        f'<p>Offer <a href="https://shop.example/item/{i}">item {i}</a></p>' for i in range(2_000)
    ) + "</body></html>"
    out = html_to_text(html)
    lines = out.splitlines()
    assert len(lines) == 2_000
    assert lines[0] == "Offer item 0 (https://shop.example/item/0)"
    assert lines[-1] == "Offer item 1999 (https://shop.example/item/1999)"


@pytest.mark.parametrize(
    "html",
    [
        pytest.param("<!--" * 50_000, id="many-unclosed-comments"),
        pytest.param("<!--x>" * 50_000, id="comments-closed-by-gt"),
        pytest.param("</" * 50_000, id="unclosed-end-tags"),
        pytest.param("<![CDATA[" * 20_000, id="unclosed-marked-sections"),
        pytest.param("<?" * 50_000, id="unclosed-pi"),
        pytest.param('<a href="' * 20_000, id="unclosed-attribute"),
        pytest.param("<div>" * 50_000 + "deep", id="deep-nesting"),
    ],
)
def test_hostile_html_completes(html: str) -> None:
    # These inputs are quadratic for html.parser on older Pythons; they must simply finish.
    out = html_to_text(html)
    assert isinstance(out, str)


def test_deep_nesting_keeps_text() -> None:
    assert html_to_text("<div>" * 50_000 + "deep") == "deep"


# ----------------------------------------------------------------------------- bounded work


def link_mail(count: int) -> bytes:
    """An HTML-only mail (like a retailer's newsletter) with `count` links."""
    links = "".join(f'<p><a href="https://shop.example/item/{i}?utm=mail&amp;n={i}">Item {i}</a></p>\n'
                    for i in range(count))
    return (b"From: Shop <news@shop.example>\r\nTo: jo@example.com\r\nSubject: Offers\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            + f"<html><body><p>Dear Jo,</p>{links}</body></html>".encode())


def test_two_thousand_link_mail_is_readable_text() -> None:
    msg = parse_message(link_mail(2_000))
    assert msg.text_from_html
    assert msg.text.startswith("Dear Jo,\nItem 0 (https://shop.example/item/0?utm=mail&n=0)\n")
    assert msg.text.endswith("Item 1999 (https://shop.example/item/1999?utm=mail&n=1999)")
    assert "HtmlConversionStopped" not in msg.defects


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        pytest.param("<span>" * 100_000 + "deep" + "</span>" * 100_000, "deep", id="nested-spans"),
        pytest.param("<div><p>" * 20_000 + "inner" + "</p></div>" * 20_000 + "<p>after</p>",
                     "inner\nafter", id="nested-blocks"),
        pytest.param('<p title="' + "x" * 1_000_000 + '">one attribute</p>', "one attribute",
                     id="1mb-attribute"),
        pytest.param("<p " + " ".join(f'a{i}="{i:020}"' for i in range(40_000)) + ">many attributes</p>",
                     "many attributes", id="1mb-of-attributes"),
    ],
)
def test_pathological_html_still_gives_its_text(html: str, expected: str) -> None:
    result = convert_html(html)
    assert result.complete
    assert result.text == expected


def test_html_beyond_the_size_cap_is_not_read() -> None:
    html = "<p>first</p>" + " " * MAX_HTML_CHARS + "<p>never read</p>"
    assert html_to_text(html) == "first"


def test_zero_time_limit_stops_at_once_with_the_marker() -> None:
    result = convert_html("<p>text</p>" * 1_000, time_limit=0)
    assert not result.complete
    assert result.text.endswith(TIME_LIMIT_MARKER)
    assert result.text.count("text") < 1_000


def test_time_limit_keeps_what_was_converted_before_it() -> None:
    # A clock that jumps an hour after its 20th reading: the deadline passes mid-document.
    readings = iter(range(10**6))

    def clock() -> float:
        return 0.0 if next(readings) < 20 else 3600.0

    html = "".join(f"<p>line {i}</p>" for i in range(10_000))
    result = convert_html(html, time_limit=5.0, clock=clock)
    assert not result.complete
    lines = result.text.splitlines()
    assert lines[0] == "line 0"
    assert "line 9999" not in result.text
    assert lines[-1] == TIME_LIMIT_MARKER
    # The clock is read every few hundred parser events, not on every one.
    assert 1_000 < len(lines) < 10_000


def test_parse_records_a_stopped_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(htmltext, "DEFAULT_TIME_LIMIT", 0.0)
    msg = parse_message(link_mail(10))
    assert "HtmlConversionStopped" in msg.defects
    assert msg.text.endswith(TIME_LIMIT_MARKER)
