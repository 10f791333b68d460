"""Readable plain text from an HTML mail body (stdlib `html.parser`, linear time)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

# Generous default: a complaint is never this long, and the cap keeps hostile input cheap.
DEFAULT_MAX_CHARS = 1_000_000
# HTML beyond this many characters is never looked at.
MAX_HTML_CHARS = 4_000_000

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


class _TextExtractor(HTMLParser):
    """Collects text into lines; each line remembers its blockquote depth."""

    def __init__(self, max_chars: int) -> None:
        super().__init__(convert_charrefs=True)
        self.max_chars = max_chars
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

    # -- parser callbacks ----------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
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


def _neutralise(html: str) -> str:
    """Remove the constructs that make `html.parser` rescan the rest of the document.

    On Python < 3.13.4 (CVE-2025-6069) the parser re-searches to the end of the input for every
    comment, `<![...`, `<?...` or tag that is never closed, which is quadratic on hostile or
    truncated mail. Here, in one linear pass: comments, marked sections (Outlook's
    `<![if ...]>`), processing instructions and script/style elements are dropped (their
    content is never shown anyway; an unclosed one runs to the end, as browsers do), and any
    `<` with no `>` anywhere after it is escaped as text.
    """
    lower = html.lower()
    last_close = html.rfind(">")
    out: list[str] = []
    pos = 0
    while True:
        lt = html.find("<", pos)
        if lt < 0:
            out.append(html[pos:])
            break
        out.append(html[pos:lt])
        if lt > last_close:
            # Nothing from here on can be markup.
            out.append(html[lt:].replace("<", "&lt;"))
            break
        if html.startswith("<!--", lt):
            end = html.find("-->", lt + 2)
            if end < 0:
                break
            pos = end + 3
            continue
        if html.startswith(("<![", "<?"), lt):
            pos = html.find(">", lt) + 1
            continue
        for element in ("script", "style"):
            after = lt + 1 + len(element)
            if lower.startswith(element, lt + 1) and not lower[after : after + 1].isalnum():
                end = lower.find(f"</{element}", lt)
                pos = -1 if end < 0 else html.find(">", end) + 1
                break
        else:
            out.append("<")
            pos = lt + 1
            continue
        if pos <= 0:
            break
    return "".join(out)


def html_to_text(html: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Render `html` as readable plain text of at most `max_chars` characters.

    Paragraphs, `<br>` and list items become line breaks, script/style/head are dropped,
    entities are decoded, whitespace is collapsed, blockquoted lines get "> " and links
    read "text (url)" unless the text already is the url. Never raises for any string.
    """
    if not html or max_chars <= 0:
        return ""
    parser = _TextExtractor(max_chars)
    html = _neutralise(html[:MAX_HTML_CHARS])
    try:
        parser.feed(html)
        parser.close()
    except Exception:
        # html.parser is lenient and rarely raises, but a body must never break intake:
        # keep whatever text was collected before the failure.
        pass
    return parser.result()
