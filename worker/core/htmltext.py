"""Readable plain text from an HTML mail body (stdlib `html.parser`, linear time, time-limited)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser

# Generous default: a complaint is never this long, and the cap keeps hostile input cheap.
DEFAULT_MAX_CHARS = 1_000_000
# HTML beyond this many characters is never looked at.
MAX_HTML_CHARS = 4_000_000
# Conversion stops after this long, whatever the input: a mail must never hold up the pipeline.
# Real mail (even 2,000 links) converts in well under a tenth of this.
DEFAULT_TIME_LIMIT = 2.0
# The clock is read once every this many parser events, so that reading it costs nothing.
_CLOCK_EVERY = 256
# Ends the text when the time limit cut the conversion short.
TIME_LIMIT_MARKER = "[The rest of this HTML message was not converted: it took too long.]"

# Elements whose content is never shown to a reader of the mail.
_SKIP = frozenset({"script", "style", "head", "title", "template", "xml"})
# Elements that start and end on their own line.
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "center", "dd", "details", "dialog", "div",
    "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
    "h5", "h6", "header", "hr", "legend", "li", "main", "nav", "ol", "p", "pre", "section",
    "summary", "table", "tbody", "tfoot", "thead", "tr", "ul",
})
# Table cells are separated by a space so that adjacent cells do not run together.
_CELL = frozenset({"td", "th"})

_WS = re.compile(r"[ \t\n\r\f\v\u00a0]+")
_URL_PREFIX = re.compile(r"^(?:https?://|mailto:)", re.IGNORECASE)


def _same_target(text: str, href: str) -> bool:
    """True when the visible link text already says where the link goes."""

    def norm(value: str) -> str:
        value = _URL_PREFIX.sub("", value.strip()).rstrip("/").lower()
        return value.removeprefix("www.")

    return norm(text) == norm(href)


class _OutOfTime(Exception):
    pass


class _TextExtractor(HTMLParser):
    """Collects text into lines; each line remembers its blockquote depth."""

    def __init__(self, max_chars: int, deadline: float, clock: Callable[[], float]) -> None:
        super().__init__(convert_charrefs=True)
        self.max_chars = max_chars
        self.deadline = deadline
        self.clock = clock
        self.events = 0
        self.size = 0
        self.full = False
        # Finished lines as (blockquote depth, text, preformatted).
        self.lines: list[tuple[int, str, bool]] = []
        self.current: list[str] = []
        self.current_depth = 0
        self.quote_depth = 0
        self.skip_depth = 0
        self.pre_depth = 0
        # The open <a>: its href and the text seen inside it (kept separately so that
        # finishing a link costs only its own length, never the whole document's).
        self.link_href: str | None = None
        self.link_text: list[str] = []

    # -- output helpers -------------------------------------------------
    def _emit(self, text: str) -> None:
        if self.full or not text:
            return
        if not self.current:
            # A line belongs to the quote level at which its first text arrived.
            self.current_depth = self.quote_depth
        self.current.append(text)
        if self.link_href is not None:
            self.link_text.append(text)
        self.size += len(text)
        if self.size >= self.max_chars:
            self.full = True

    def _newline(self) -> None:
        line = "".join(self.current)
        self.current = []
        self.lines.append((self.current_depth, line, self.pre_depth > 0))
        self.current_depth = self.quote_depth

    def _block_break(self) -> None:
        """End the current line unless we are already at the start of one."""
        if self.current and "".join(self.current).strip():
            self._newline()
        else:
            self.current = []

    def _tick(self) -> None:
        """Stop the parse (from inside `feed`) once the deadline has passed."""
        self.events += 1
        if self.events % _CLOCK_EVERY == 1 and self.clock() >= self.deadline:
            raise _OutOfTime

    # -- parser callbacks ----------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tick()
        if tag == "body":
            # Browsers close an unclosed <head> (or <title>) here; without this a sloppy
            # "<head><title>x<body>..." would hide the whole message.
            self.skip_depth = 0
            return
        if tag in _SKIP:
            self.skip_depth += 1
            return
        if self.skip_depth:
            return
        if tag == "br":
            self._newline()
        elif tag == "a":
            self._close_link()
            href = next((v for k, v in attrs if k == "href" and v), None)
            self.link_href = href.strip() if href else None
            self.link_text = []
        elif tag in _BLOCK:
            self._block_break()
            if tag == "blockquote":
                self.quote_depth += 1
                self.current_depth = self.quote_depth
            elif tag == "li":
                self._emit("- ")
            elif tag == "pre":
                self.pre_depth += 1
        elif tag in _CELL and self.current:
            self._emit(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/>, <hr/>, <p/>: only the line-breaking effect matters.
        if tag in _SKIP:
            return
        self.handle_starttag(tag, attrs)
        if tag == "a":
            self._close_link()

    def handle_endtag(self, tag: str) -> None:
        self._tick()
        if tag in _SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
            return
        if self.skip_depth:
            return
        if tag == "a":
            self._close_link()
        elif tag in _BLOCK:
            self._block_break()
            if tag == "blockquote":
                self.quote_depth = max(0, self.quote_depth - 1)
                self.current_depth = self.quote_depth
            elif tag == "pre":
                self.pre_depth = max(0, self.pre_depth - 1)

    def handle_data(self, data: str) -> None:
        self._tick()
        if self.skip_depth or self.full:
            return
        if self.pre_depth:
            # Preformatted text keeps its own line structure.
            parts = data.replace("\r\n", "\n").split("\n")
            for index, part in enumerate(parts):
                if index:
                    self._newline()
                self._emit(part)
            return
        text = _WS.sub(" ", data)
        if text == " " and not self.current:
            return
        self._emit(text)

    def _close_link(self) -> None:
        href, self.link_href = self.link_href, None
        text = "".join(self.link_text).strip()
        self.link_text = []
        if not href or not text or href.startswith("#"):
            return
        if href.lower().startswith(("javascript:", "data:", "cid:")):
            return
        if not _same_target(text, href):
            self._emit(f" ({href})")

    def result(self) -> str:
        self._close_link()
        if self.current:
            self._newline()
        out: list[str] = []
        blank = True  # suppresses leading blank lines
        for depth, raw, pre in self.lines:
            line = raw.rstrip() if pre else _WS.sub(" ", raw).strip()
            if not line:
                if blank:
                    continue
                blank = True
                out.append(">" * depth if depth else "")
                continue
            blank = False
            out.append("> " * depth + line)
        while out and not out[-1].strip(" >"):
            out.pop()
        return "\n".join(out)[: self.max_chars]


# What `_neutralise` removes: comments, marked sections, processing instructions, script/style.
_HIDDEN_START = re.compile(r"<(?:!--|!\[|\?|(?:script|style)(?![a-z0-9]))", re.IGNORECASE)
# A "<" that cannot start markup (only a letter, "/", "!" or "?" can follow one that does).
_STRAY_LT = re.compile(r"<(?![a-zA-Z/!?])")


def _neutralise(html: str) -> str:
    """Remove the constructs that make `html.parser` rescan the rest of the document.

    On Python < 3.13.4 (CVE-2025-6069) the parser re-searches to the end of the input for every
    comment, `<![...`, `<?...` or tag that is never closed, which is quadratic on hostile or
    truncated mail. Here, in linear passes done by the regex engine: comments, marked sections
    (Outlook's `<![if ...]>`), processing instructions and script/style elements are dropped
    (their content is never shown anyway; an unclosed one runs to the end, as browsers do), and
    every `<` that cannot start markup, or has no `>` anywhere after it, is escaped as text.
    """
    last_close = html.rfind(">")
    # Nothing after the last ">" can be markup.
    tail = html[last_close + 1 :].replace("<", "&lt;")
    html = html[: last_close + 1]
    lower = html.lower()
    out: list[str] = []
    pos = 0
    while (found := _HIDDEN_START.search(html, pos)) is not None:
        out.append(html[pos : found.start()])
        token = found.group(0).lower()
        if token == "<!--":
            end = html.find("-->", found.start() + 2)
            pos = end + 3 if end >= 0 else -1
        elif token in ("<![", "<?"):
            pos = html.find(">", found.start()) + 1  # there is one: it ends `html`
        else:
            end = lower.find(f"</{token[1:]}", found.start())
            pos = -1 if end < 0 else html.find(">", end) + 1
        if pos <= 0:
            return _STRAY_LT.sub("&lt;", "".join(out))
    out.append(html[pos:])
    return _STRAY_LT.sub("&lt;", "".join(out)) + tail


@dataclass(frozen=True, slots=True)
class HtmlText:
    text: str
    # False when the time limit stopped the conversion; `text` then ends with TIME_LIMIT_MARKER.
    complete: bool = True


def convert_html(html: str, *, max_chars: int = DEFAULT_MAX_CHARS,
                 time_limit: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> HtmlText:
    """Render `html` as readable plain text of at most `max_chars` characters.

    Paragraphs, `<br>` and list items become line breaks, script/style/head are dropped,
    entities are decoded, whitespace is collapsed, blockquoted lines get "> " and links
    read "text (url)" unless the text already is the url. Only the first MAX_HTML_CHARS are
    read, and conversion stops after `time_limit` seconds (default DEFAULT_TIME_LIMIT) of
    `clock` with what it has so far. Never raises for any string.
    """
    if not html or max_chars <= 0:
        return HtmlText("")
    limit = DEFAULT_TIME_LIMIT if time_limit is None else time_limit
    parser = _TextExtractor(max_chars, clock() + limit, clock)
    complete = True
    try:
        parser.feed(_neutralise(html[:MAX_HTML_CHARS]))
        parser.close()
    except _OutOfTime:
        complete = False
    except Exception:
        # html.parser is lenient and rarely raises, but a body must never break intake:
        # keep whatever text was collected before the failure.
        pass
    text = parser.result()
    if complete:
        return HtmlText(text)
    return HtmlText(f"{text}\n{TIME_LIMIT_MARKER}" if text else TIME_LIMIT_MARKER, complete=False)


def html_to_text(html: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """`convert_html(html).text`: readable text, with the marker if the time limit stopped it."""
    return convert_html(html, max_chars=max_chars).text
