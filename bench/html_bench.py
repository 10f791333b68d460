"""Benchmark of HTML-to-text: a 2,000-link HTML-only mail, converted N times.

Run as `.venv/bin/python bench/html_bench.py [N]` (default N = 50). Times the HTML conversion
alone (`convert_html`) and the whole `parse_message` of the mail, and for scale a few hostile
inputs once each, showing that the time limit (DEFAULT_TIME_LIMIT) bounds them. Prints figures;
it is not a test and asserts nothing.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from pathlib import Path
from time import perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.core.htmltext import DEFAULT_TIME_LIMIT, convert_html
from worker.core.parse import parse_message

LINKS = 2_000


def link_html(count: int) -> str:
    links = "".join(f'<p><a href="https://shop.example/item/{i}?utm=mail&amp;n={i}">Item {i}</a></p>\n'
                    for i in range(count))
    return f"<html><body><p>Dear Jo,</p>{links}</body></html>"


def link_mail(count: int) -> bytes:
    return (b"From: Shop <news@shop.example>\r\nTo: jo@example.com\r\nSubject: Offers\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            + link_html(count).encode())


def rate(label: str, n: int, work: Callable[[], object]) -> None:
    started = perf_counter()
    for _ in range(n):
        work()
    seconds = perf_counter() - started
    print(f"{label:44}{n / seconds:10.1f} /s  ({seconds / n * 1000:.1f} ms each)")


def main(argv: list[str]) -> None:
    n = int(argv[1]) if len(argv) > 1 else 50
    html = link_html(LINKS)
    raw = link_mail(LINKS)
    print(f"Python {platform.python_version()} on {platform.machine()}; {LINKS}-link mail: "
          f"{len(raw):,} bytes; time limit {DEFAULT_TIME_LIMIT} s; N = {n}")
    rate(f"convert_html, {LINKS} links", n, lambda: convert_html(html))
    rate(f"parse_message, {LINKS}-link HTML-only mail", n, lambda: parse_message(raw))
    hostile = {
        "200,000 nested <div>": "<div>" * 200_000 + "deep",
        "1 MB of attributes on one tag": "<p " + " ".join(f'a{i}="{i:020}"' for i in range(40_000)) + ">x",
        "1,000,000 stray '<'": "<" * 1_000_000 + ">",
        "150,000 table rows (4.4 MB, cut at 4 MB)": "<table>" + "<tr><td>a</td><td>b</td></tr>" * 150_000,
    }
    for label, text in hostile.items():
        started = perf_counter()
        result = convert_html(text)
        seconds = perf_counter() - started
        state = "complete" if result.complete else "stopped by the time limit"
        print(f"{label:44}{seconds * 1000:10.1f} ms  ({state})")


if __name__ == "__main__":
    main(sys.argv)
