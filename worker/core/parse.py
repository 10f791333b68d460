"""Raw RFC 5322 bytes to a `ParsedMessage`: pure, bounded, and never raising.

The MIME structure comes from the stdlib `email` package with the compat32 policy, which keeps
every header value exactly as received. Decoding is then done here, deliberately:

* Header text (RFC 2047 encoded words) is decoded by our own tolerant decoder, which also handles
  encoded words glued to other text and multi-byte characters split across adjacent words.
* Addresses are parsed on the *raw* value with the policy.default address parser, but an
  addr-spec is only believed if it appears verbatim in the raw header: that parser decodes
  encoded words inside local parts (`=?utf-8?q?ceo?=@evil.example` -> `ceo@evil.example`),
  which RFC 2047 forbids and which would let a sender spoof an address. Otherwise the
  non-decoding `email.utils.getaddresses` and finally a plain regex are used.
* Body bytes are decoded with the declared charset mapped to the superset real mailers mean
  (ks_c_5601-1987 -> cp949, gb2312 -> gb18030, iso-8859-1 -> cp1252, ...), then UTF-8, then
  cp1252/latin-1, so any byte string decodes to some text.
* Raw 8-bit header text (against RFC 5322) is UTF-8 if it decodes as such, else in a charset
  the message declares (a multi-byte one such as GB2312 first), else cp1252.
* The body text is every inline text part in document order; inside a multipart/alternative
  the text/plain representation wins, and HTML is only converted (time-limited) where there is
  no plain text. Parts of a multipart/related other than its root are resources, not body.
* Every other part is an attachment with a name: its own (RFC 2231/2047 decoded), else one that
  says what it is ("Your bill.eml", "delivery-status.txt", "image.gif"). A winmail.dat (TNEF)
  stands for the files inside it. `attachment_files` gives the same files with their bytes.

Work is bounded: MIME parameters are split by our own linear splitter (the stdlib one is
quadratic), the structured address parser only sees short fields, and every extracted piece
(text, headers, ids, addresses, report fields) has a cap.
"""

from __future__ import annotations

import binascii
import codecs
import functools
import itertools
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from email import policy
from email import utils as email_utils
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from typing import NamedTuple

from worker.core.htmltext import convert_html
from worker.core.message import Attachment, ParsedMessage
from worker.core.tnef import MIME_TYPES, guess_type, is_tnef
from worker.core.tnef import unpack as unpack_tnef

# Work bounds: real complaints are far below all of these; hostile mail is cut off cheaply.
MAX_TEXT_BYTES = 1_000_000  # per text part, before decoding
MAX_TEXT_CHARS = 1_000_000  # for the whole extracted text
MAX_HEADERS = 1_000
MAX_HEADER_CHARS = 65_536  # per header value
MAX_PARTS = 1_000
MAX_IDS = 200  # Message-IDs kept from one References/In-Reply-To field
MAX_ADDRESSES = 500  # per address field
MAX_DEFECTS = 32
MAX_REPORT_FIELDS = 500
MAX_FILENAME_CHARS = 200
# The structured (policy.default) address parser is quadratic on some malformed input, so only
# short fields go through it; longer ones (big To/Cc lists) use the linear classic parser.
_MAX_STRUCTURED_ADDRESS_CHARS = 2_048

# Report parts whose body is a set of "Name: value" fields.
_REPORT_PART_TYPES = frozenset({
    "message/delivery-status",
    "message/global-delivery-status",
    "message/feedback-report",
    "message/disposition-notification",
    "message/global-disposition-notification",
})
# Parts that carry (the headers of) another message, e.g. the original of a bounce.
_ENCLOSED_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_ENCLOSED_HEADER_TYPES = frozenset({"text/rfc822-headers", "message/rfc822-headers",
                                    "message/global-headers"})
# Outlook's winmail.dat: unpacked into the files it carries.
_TNEF_TYPES = frozenset({"application/ms-tnef", "application/vnd.ms-tnef"})
# Names for attachments that have none, by top-level media type ("image" + ".gif").
_GENERIC_STEMS = {"image": "image", "audio": "audio", "video": "video", "text": "document"}


class AttachedFile(NamedTuple):
    """One attachment as staff receive it: named, decoded, winmail.dat already unpacked."""

    filename: str
    content_type: str
    data: bytes

# Charsets that are labelled one way but, in real mail, mean a superset codec.
_CODEC_SUPERSETS = {
    "euc_kr": "cp949",  # ks_c_5601-1987 is what Outlook calls cp949
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "iso2022_jp": "iso2022_jp_2",
    "iso8859-1": "cp1252",  # nobody means the C1 control codes
    "big5": "big5hkscs",
}
# Labels Python does not know under that spelling.
_CHARSET_ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601-1989": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "x-windows-949": "cp949",
    "windows-949": "cp949",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    "x-euc-jp": "euc_jp",
    "x-gbk": "gb18030",
    "x-euc-cn": "gb18030",
    "windows-874": "cp874",
    "x-windows-874": "cp874",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-8-e": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "iso-8859-6-e": "iso8859-6",
    "x-mac-roman": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
}
# Labels that declare no particular charset (RFC 1428's unknown-8bit): decoded as if absent.
_UNDECLARED_CHARSETS = frozenset({"us-ascii", "ascii", "unknown-8bit", "x-unknown", "unknown"})
# Codecs that are not character sets (or that carry risk) even though Python can "decode" them.
_NOT_CHARSETS = frozenset({
    "ascii",  # treated as "unknown": 8-bit bytes in "us-ascii" mail are usually UTF-8
    "idna", "punycode", "unicode_escape", "raw_unicode_escape", "undefined", "mbcs", "oem",
    "rot-13", "charmap",
})

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([bBqQ])\?([^?]*)\?=")
_FOLD = re.compile(r"\r\n(?=[ \t])|\n(?=[ \t])|\r(?=[ \t])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UTF8_SEQUENCE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ID_TOKEN = re.compile(r"<([^<>]*)>")
_ADDR_LIKE = re.compile(r"[^\s<>()\[\],;:\"@]+@[^\s<>()\[\],;:\"@]+")
# A lone `Name <addr>` or `addr` written in atoms alone (no quotes, comments, encoded words,
# groups or obsolete syntax), as most From and To fields are: the two address parsers below
# read it the same way without a defect, at ~100 us a field, so it is read directly.
_ATOM = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PLAIN_SPEC = rf"{_DOT_ATOM}@{_LABEL}(?:\.{_LABEL})+"
_PLAIN_ADDRESS = re.compile(
    rf" *(?:(?P<name>{_ATOM}(?: {_ATOM})*) ?<(?P<spec>{_PLAIN_SPEC})>|(?P<bare>{_PLAIN_SPEC})) *")
_LEADING_BLANK_LINES = re.compile(rb"\A(?:[ \t]*(?:\r\n|\n|\r))+")
_NULL_PATH = re.compile(r"^<\s*>$")
_NULL_IN_FROM = re.compile(r"<\s*>")


# --------------------------------------------------------------------------- MIME parameters

# Real parameter lists (boundary, charset, RFC 2231 filenames) are far shorter than this.
_MAX_PARAM_CHARS = 16_384


def _split_params(value: str) -> list[str]:
    """Split a header value on ';' outside double quotes, in linear time."""
    parts: list[str] = []
    start = pos = 0
    semi = quote = -2  # cached positions of the next ';' and '"', -1 when there is none
    while True:
        if semi != -1 and semi < pos:
            semi = value.find(";", pos)
        if quote != -1 and quote < pos:
            quote = value.find('"', pos)
        if semi < 0:
            break
        if 0 <= quote < semi:
            close = quote
            while True:
                close = value.find('"', close + 1)
                if close < 0:
                    parts.append(value[start:])  # unterminated quote runs to the end
                    return parts
                backslashes = 0
                while value[close - 1 - backslashes] == "\\" and close - 1 - backslashes > quote:
                    backslashes += 1
                if backslashes % 2 == 0:
                    break
            pos = close + 1
            continue
        parts.append(value[start:semi])
        start = pos = semi + 1
    parts.append(value[start:])
    return parts


class _BoundedMessage(Message):
    """compat32 Message whose MIME parameter parsing is linear and bounded.

    The stdlib splitter is quadratic in the number of ';' (and runs inside the parser itself,
    for every multipart boundary), so a few hundred KB of semicolons in a Content-Type would
    stall intake for minutes.
    """

    def _get_params_preserve(self, failobj: object, header: str) -> object:
        # The raw value: `get` would wrap raw 8-bit text (a filename="März.pdf") in a Header
        # whose str() has already replaced those bytes with U+FFFD.
        wanted = header.lower()
        value = next((v for k, v in self.raw_items() if k.lower() == wanted), None)
        if value is None:
            return failobj
        params: list[tuple[str, str]] = []
        for item in _split_params(value[:_MAX_PARAM_CHARS]):
            name, sep, val = item.partition("=")
            if sep:
                params.append((name.strip().lower(), val.strip()))
            else:
                params.append((item.strip(), ""))
        return email_utils.decode_params(params)


def _parser() -> BytesParser:
    return BytesParser(_class=_BoundedMessage, policy=policy.compat32)


def _header_parser() -> BytesHeaderParser:
    return BytesHeaderParser(_class=_BoundedMessage, policy=policy.compat32)


# --------------------------------------------------------------------------- charsets


@functools.lru_cache(maxsize=256)
def _codec_for(label: str | None) -> str | None:
    """The Python codec to use for a declared charset label, or None when unknown/unusable."""
    if not label:
        return None
    name = label.strip().strip("\"'").strip().lower()
    name = _CHARSET_ALIASES.get(name, name)
    candidates = [name]
    if name.startswith("x-"):
        candidates.append(name[2:])
    if name.startswith("cp-"):
        candidates.append("cp" + name[3:])
    for candidate in candidates:
        try:
            info = codecs.lookup(candidate)
        except (LookupError, ValueError):
            continue
        codec = _CODEC_SUPERSETS.get(info.name, info.name)
        if codec in _NOT_CHARSETS:
            return None
        try:
            b"a".decode(codec)  # (empty input would skip the codec check)
        except LookupError:  # a bytes-to-bytes codec such as base64 or zlib
            return None
        except (UnicodeDecodeError, ValueError):
            pass  # a real text codec that merely dislikes this sample (utf-16, ...)
        return codec
    return None


def _try_decode(data: bytes, codec: str, truncated: bool) -> str | None:
    try:
        return data.decode(codec)
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by our own truncation is not a charset error.
        if truncated and exc.start >= len(data) - 8:
            try:
                return data[: exc.start].decode(codec)
            except (UnicodeDecodeError, LookupError):
                return None
        return None
    except LookupError:
        return None


def decode_bytes(data: bytes, charset: str | None, *, truncated: bool = False) -> str:
    """Decode `data` declared as `charset`; any bytes give some text, never an exception.

    Order: the declared charset (via its real-world superset), then UTF-8 when there are
    8-bit bytes. Text that is neither is UTF-8 with a few bad bytes if it contains real UTF-8
    sequences (decoded with replacement), else legacy single-byte text (cp1252, then latin-1,
    which accepts every byte).
    """
    codec = _codec_for(charset)
    if codec is not None:
        text = _try_decode(data, codec, truncated)
        if text is not None:
            return text
        if codec != "utf-8" and data.isascii():
            # A 7-bit charset (ISO-2022-*, UTF-7) with a bad sequence: keep what it can read.
            return data.decode(codec, errors="replace")
    if codec != "utf-8":
        text = _try_decode(data, "utf-8", truncated)
        if text is not None:
            return text
    if codec is not None and codec != "utf-8":
        return data.decode(codec, errors="replace")
    if _UTF8_SEQUENCE.search(data):
        return data.decode("utf-8", errors="replace")
    text = _try_decode(data, "cp1252", truncated)
    if text is not None:
        return text
    return data.decode("latin-1")


def _clean(text: str) -> str:
    """Drop NULs (databases reject them) and replace lone surrogates (unencodable)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if _LONE_SURROGATE.search(text):
        text = _LONE_SURROGATE.sub("\ufffd", text)
    return text


# --------------------------------------------------------------------------- header text


def _raw_to_text(value: str, hint: str | None = None) -> str:
    """compat32 keeps 8-bit header bytes as surrogate escapes: decode them as UTF-8, else in
    the message's own charset (`hint`, see `_header_charset`), else as legacy single-byte text."""
    if len(value) > MAX_HEADER_CHARS:
        value = value[:MAX_HEADER_CHARS]
    if value.isascii() or not _LONE_SURROGATE.search(value):
        return value
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _clean(value)
    text = _try_decode(raw, "utf-8", False)
    if text is None and hint is not None:
        text = _try_decode(raw, hint, False)
    return text if text is not None else decode_bytes(raw, None)


def _unfold(value: str) -> str:
    return _FOLD.sub("", value)


def _single_line(value: str) -> str:
    return _clean(_CONTROL.sub(" ", value)).strip()


def _encoded_word_bytes(encoding: str, payload: str, charset: str) -> bytes | None:
    try:
        if encoding in "qQ":
            if not payload.isascii():
                # Old mailers put raw 8-bit text inside Q words; it was decoded with the header
                # already, so re-encode it in the word's own charset to get the bytes back.
                codec = _codec_for(charset) or "utf-8"
                try:
                    raw = payload.encode(codec)
                except (UnicodeEncodeError, LookupError):
                    raw = payload.encode("utf-8")
                return binascii.a2b_qp(raw, header=True)
            return binascii.a2b_qp(payload.encode("ascii"), header=True)
        if not payload.isascii():
            return None
        compact = "".join(payload.split())
        compact += "=" * (-len(compact) % 4)
        try:
            return binascii.a2b_base64(compact.encode("ascii"))
        except binascii.Error:
            # One stray character too many: drop it rather than lose the whole word.
            trimmed = compact.rstrip("=")[:-1]
            return binascii.a2b_base64((trimmed + "=" * (-len(trimmed) % 4)).encode("ascii"))
    except (binascii.Error, ValueError):
        return None


def decode_words(text: str) -> str:
    """Decode RFC 2047 encoded words in `text`, tolerating the usual malformations.

    Whitespace between adjacent encoded words is dropped (RFC 2047 section 6.2); adjacent words
    in the same charset are joined before decoding, because some mailers split a multi-byte
    character across two words; words glued to surrounding text are decoded too. A word that
    cannot be decoded is kept literally.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(decode_bytes(bytes(pending), pending_charset))
        pending.clear()
        pending_charset = None

    for match in _ENCODED_WORD.finditer(text):
        gap = text[pos : match.start()]
        if not (pending_charset is not None and not gap.strip()):
            flush()
            out.append(gap)
        # RFC 2231 allows a language suffix: =?utf-8*en?Q?...?=
        charset = match.group(1).split("*", 1)[0].lower()
        decoded = _encoded_word_bytes(match.group(2), match.group(3), charset)
        if decoded is None:
            flush()
            out.append(match.group(0))
        else:
            if pending_charset is not None and charset != pending_charset:
                flush()
            pending.extend(decoded)
            pending_charset = charset
        pos = match.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def _header_text(raw: str, hint: str | None = None) -> str:
    """A header value as one decoded line."""
    return _single_line(decode_words(_unfold(_raw_to_text(raw, hint))))


# A hint needs only the first few declared charsets.
_MAX_HINT_PARTS = 100
# Codecs whose byte sequences are too constrained to match text in another charset by chance.
_MULTIBYTE_CODECS = frozenset({"cp949", "gb18030", "big5hkscs", "cp932", "euc_jp", "euc_kr",
                               "euc_jis_2004", "shift_jis_2004", "johab", "big5"})


def _header_charset(msg: Message) -> str | None:
    """The codec to try for raw 8-bit header text that is not UTF-8.

    Mailers that put raw 8-bit text in headers (against RFC 5322) use the charset they label
    their text with. Of the charsets the message declares, a multi-byte legacy one wins (raw
    bytes that decode strictly in it are almost surely in it), else the first legacy one.
    """
    single: str | None = None
    for codec in _declared_codecs(msg):
        if codec.startswith(("utf", "iso2022")):
            continue
        if codec in _MULTIBYTE_CODECS:
            return codec
        single = single or codec
    return single


def _declared_codecs(msg: Message) -> Iterator[str]:
    """Codecs of the charsets declared by the parts of `msg`, then by those of the first
    message it encloses (a report or forward often copies that message's raw headers)."""
    inner: Message | None = None
    for part, _, _ in itertools.islice(_walk(msg, []), _MAX_HINT_PARTS):
        codec = _codec_for(_charset(part))
        if codec is not None:
            yield codec
        payload = part.get_payload()
        if inner is None and part.get_content_type() in _ENCLOSED_MESSAGE_TYPES \
                and isinstance(payload, list) and payload and isinstance(payload[0], Message):
            inner = payload[0]
    if inner is not None:
        for part, _, _ in itertools.islice(_walk(inner, []), _MAX_HINT_PARTS):
            codec = _codec_for(_charset(part))
            if codec is not None:
                yield codec


# --------------------------------------------------------------------------- addresses


def _parse_addresses(raw: str, defects: list[str], hint: str | None = None, *,
                     sender: bool = False) -> list[tuple[str, str]]:
    """(display name, lower-cased addr-spec) pairs from one raw address header value.

    Display names are decoded by `decode_words` from the raw phrase (so adjacent encoded words
    join as RFC 2047 says), and an old-style `addr (Name)` comment serves as the name. A lone
    word with no domain counts as an address only in a `sender` field (`From: MAILER-DAEMON`).
    """
    value = _unfold(_raw_to_text(raw, hint)).replace("\r", " ").replace("\n", " ")
    if not value.strip():
        return []
    plain = _PLAIN_ADDRESS.fullmatch(value)
    if plain:
        return [(plain["name"] or "", (plain["spec"] or plain["bare"]).lower())]
    return _parsed_addresses(value, defects, sender=sender)


def _parsed_addresses(value: str, defects: list[str], *, sender: bool) -> list[tuple[str, str]]:
    """`_parse_addresses` of a field that is not a lone plain address: both parsers, compared."""
    try:
        # The classic parser keeps names undecoded and takes a trailing comment as the name.
        classic = email_utils.getaddresses([value])
    except Exception:
        classic = []
    found: list[tuple[str, str]] = []
    structured_ok = False
    if len(value) <= _MAX_STRUCTURED_ADDRESS_CHARS:
        try:
            header = policy.default.header_factory("to", value)
            structured_ok = True
            for defect in header.defects:
                defects.append(type(defect).__name__)
            for address in header.addresses:
                spec = address.addr_spec
                if spec and spec != "<>":
                    found.append((str(address.display_name or ""), spec))
        except Exception:
            defects.append("AddressHeaderUnparseable")
    lowered = value.lower()
    believable = all(spec.lower() in lowered for _, spec in found) and (
        "@" not in value or all("@" in spec for _, spec in found)
    )
    if structured_ok and found and believable:
        names = [name for name, _ in found]
        if [spec.strip().lower() for _, spec in classic] == [spec.lower() for _, spec in found]:
            # Both parsers see the same mailboxes (the classic one splits a comma inside an
            # encoded word): take its raw names, for our decoding and for `addr (Name)`.
            names = [raw or name for (raw, _), name in zip(classic, names, strict=True)]
        return [(_single_line(decode_words(name)), spec.lower())
                for name, (_, spec) in zip(names, found, strict=True) if sender or "@" in spec]

    # The structured parser failed, found nothing or decoded something it should not have:
    # fall back to the non-decoding classic parser, then to anything shaped like an address.
    fallback: list[tuple[str, str]] = []
    bare: list[tuple[str, str]] = []
    for name, spec in classic:
        spec = spec.strip()
        if not spec or any(c.isspace() for c in spec) or spec.lower() not in lowered:
            continue
        entry = (_single_line(decode_words(name)), spec.lower())
        (fallback if "@" in spec else bare).append(entry)
    if fallback:
        return fallback
    found_like = [("", m.group(0).lower()) for m in _ADDR_LIKE.finditer(value[:MAX_HEADER_CHARS])]
    if found_like:
        return found_like
    # Last resort: a lone word such as "MAILER-DAEMON" still identifies the sender, but
    # "John Smith" (two words, no address) identifies nobody, and `To: Recipients` nobody either.
    if sender and len(bare) == 1 and not any(c.isspace() for c in value.strip()):
        return bare
    return []


def _addresses(values: Iterable[str], defects: list[str], hint: str | None = None, *,
               sender: bool = False) -> list[tuple[str, str]]:
    seen: set[str] = set()
    result: list[tuple[str, str]] = []
    for raw in values:
        for name, spec in _parse_addresses(raw, defects, hint, sender=sender):
            if spec not in seen and len(result) < MAX_ADDRESSES:
                seen.add(spec)
                result.append((name, spec))
    return result


def _return_path(raw: str) -> str | None:
    """'' for the null reverse-path `<>`, the lower-cased address otherwise, None if absent."""
    value = _single_line(_unfold(_raw_to_text(raw)))
    if not value or _NULL_PATH.match(value) or value == "<>":
        return "" if value else None
    match = _ADDR_LIKE.search(value)
    if match:
        return match.group(0).strip("<>").lower()
    inner = value.strip("<> ")
    return inner.lower() if inner and not any(c.isspace() for c in inner) else None


# --------------------------------------------------------------------------- ids, dates


def _message_ids(values: Iterable[str]) -> tuple[str, ...]:
    """All `<id>` tokens, whitespace removed; a lone bare id is given brackets."""
    ids: list[str] = []
    for raw in values:
        value = _unfold(_raw_to_text(raw))
        tokens = ["".join(t.split()) for t in _ID_TOKEN.findall(value)]
        tokens = [t for t in tokens if t]
        if not tokens:
            bare = [t.strip("<>") for t in re.split(r"[\s,]+", value) if t.strip("<>")]
            # Several bare words are usually prose ("your message of ..."): keep only id-like ones.
            tokens = bare if len(bare) == 1 else [t for t in bare if "@" in t]
        ids.extend(f"<{_clean(_CONTROL.sub('', t))}>" for t in tokens)
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_IDS:
        # Keep the thread root and the most recent ancestors, the ones threading uses.
        unique = [unique[0], *unique[-(MAX_IDS - 1) :]]
    return tuple(unique)


def _parse_date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        value = email_utils.parsedate_to_datetime(_single_line(_unfold(_raw_to_text(raw))))
    except Exception:
        return None
    if value is None:
        return None
    if value.tzinfo is None:
        # "-0000" means UTC with no claim about the sender's local zone.
        value = value.replace(tzinfo=UTC)
    return value


# --------------------------------------------------------------------------- MIME walking


def _walk(root: Message, defects: list[str]) -> Iterator[tuple[Message, int, bool]]:
    """Parts in document order, each with the number of its nearest multipart/alternative
    ancestor (0 when there is none: alternatives are one body in several representations) and
    whether it is a resource of a multipart/related (any part but the root, RFC 2387: an
    image or page the body refers to, never shown as body text itself).

    Iterative so that deep nesting cannot exhaust the stack; enclosed messages (message/rfc822)
    are not entered: they are attachments, not part of this message's own body.
    """
    stack: list[tuple[Message, int, bool]] = [(root, 0, False)]
    count = 0
    groups = 0
    while stack:
        part, group, resource = stack.pop()
        count += 1
        if count > MAX_PARTS:
            defects.append("TooManyParts")
            return
        yield part, group, resource
        if part.get_content_maintype() != "multipart":
            continue
        payload = part.get_payload()
        children = [c for c in payload if isinstance(c, Message)] if isinstance(payload, list) else []
        subtype = part.get_content_subtype()
        if subtype == "alternative":
            groups += 1
            group = groups
        shown = _related_root(part, children) if subtype == "related" else None
        stack.extend((c, group, resource or (shown is not None and c is not shown))
                     for c in reversed(children))


def _related_root(part: Message, children: list[Message]) -> Message | None:
    """The root of a multipart/related: the child named by `start`, else the first."""
    try:
        start = part.get_param("start")
    except Exception:
        start = None
    if isinstance(start, str) and start.strip():
        wanted = start.strip().strip("<>")
        for child in children:
            if str(child.get("content-id", "")).strip().strip("<>") == wanted:
                return child
    return children[0] if children else None


def _filename(part: Message, hint: str | None = None) -> str:
    """The declared filename (RFC 2231 parameters, RFC 2047 words and raw 8-bit all decoded)."""
    try:
        name = part.get_filename()
    except Exception:
        name = None
    return _safe_filename(_header_text(name, hint)) if name else ""


def _safe_filename(name: str) -> str:
    # A listing never needs a path, and a path in a filename is only ever trouble.
    return _single_line(name).replace("\\", "/").rsplit("/", 1)[-1].strip()[:MAX_FILENAME_CHARS]


def _fallback_name(part: Message, ctype: str) -> str:
    """A name for an attachment that has none, saying what it is (staff see it in listings).

    An enclosed message is named by its subject, else (like a report) by the Content-Description
    its MTA wrote ("Undelivered Message"), else by its type; an inline image by its Content-ID
    or Content-Location when that looks like a filename; anything else generically.
    """
    if ctype in _ENCLOSED_MESSAGE_TYPES:
        subject = next((v for n, v in _enclosed_headers(part) if n == "subject"), "")
        return _label(part, subject, "message") + ".eml"
    if ctype in _REPORT_PART_TYPES or ctype in _ENCLOSED_HEADER_TYPES:
        return _label(part, "", ctype.partition("/")[2]) + ".txt"
    content_id = str(part.get("content-id", "")).strip().strip("<>").split("@", 1)[0]
    for value in (content_id, str(part.get("content-location", ""))):
        candidate = _safe_filename(value)
        if candidate and guess_type(candidate):
            return candidate
    extension = MIME_TYPES.guess_extension(ctype, strict=False)
    stem = _GENERIC_STEMS.get(ctype.partition("/")[0], "file")
    return stem + ("" if extension in (None, ".bin") else extension)


def _payload_bytes(part: Message) -> bytes:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload
    raw = part.get_payload()
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return b""


def _label(part: Message, first: str, default: str) -> str:
    """`first`, else the part's Content-Description, else `default`, as a safe file name stem."""
    for text in (first, _header_text(str(part.get("content-description", "")))):
        name = _safe_filename(text.replace("/", "-").replace("\\", "-"))
        if name:
            return name
    return default


def _part_data(part: Message) -> bytes:
    """The decoded content of an attachment part."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _payload_bytes(part)
    # A message/* part that compat32 parsed into messages (the enclosed message, or the field
    # groups of a report): serialised again.
    try:
        return b"".join(inner.as_bytes() for inner in payload if isinstance(inner, Message))
    except Exception:
        return b""


def _part_files(part: Message, ctype: str, name: str, defects: list[str]) -> Iterator[AttachedFile]:
    """The file(s) one attachment part stands for: itself, or the files its winmail.dat holds.

    A winmail.dat that holds no files (only Outlook's rich-text body) stands for nothing. A
    damaged one is kept as it is, after whatever files could be read from it.
    """
    data = _part_data(part)
    if ctype not in _TNEF_TYPES and not (name.lower() == "winmail.dat" and is_tnef(data)):
        yield AttachedFile(name, ctype, data)
        return
    contents = unpack_tnef(data)
    if contents.problem is not None:
        defects.append("TnefDamaged")
        yield AttachedFile(name, ctype, data)
    for inner in contents.files:
        yield AttachedFile(_safe_filename(inner.name) or "attachment", inner.content_type, inner.data)


def _charset(part: Message) -> str | None:
    try:
        charset = part.get_content_charset()
    except Exception:
        return None
    return str(charset) if charset else None


def _part_text(part: Message, defects: list[str]) -> str:
    data = _payload_bytes(part)
    truncated = len(data) > MAX_TEXT_BYTES
    if truncated:
        data = data[:MAX_TEXT_BYTES]
        defects.append("TextTruncated")
    charset = _charset(part)
    if charset and _codec_for(charset) is None and charset.lower() not in _UNDECLARED_CHARSETS:
        defects.append("UnknownCharset")
    text = decode_bytes(data, charset, truncated=truncated)
    return _clean(text.replace("\r\n", "\n").replace("\r", "\n")).lstrip("\ufeff")


def _field_lines(text: str) -> list[tuple[str, str]]:
    """'Name: value' fields (with folded continuations) from a report body; blank lines ignored."""
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if sep and name and " " not in name and len(name) < 80:
            fields.append((name.lower(), value.strip()))
        if len(fields) >= MAX_REPORT_FIELDS:
            break
    return fields


def _report_fields(part: Message) -> list[tuple[str, str]]:
    payload = part.get_payload()
    fields: list[tuple[str, str]] = []
    if isinstance(payload, list):
        # compat32 parses delivery-status into one pseudo-message per field group, and other
        # message/* types into a message whose "headers" are the fields.
        for block in payload:
            if not isinstance(block, Message):
                continue
            fields.extend((n.lower(), _header_text(v)) for n, v in block.raw_items())
            rest = block.get_payload()
            if isinstance(rest, str) and rest.strip():
                fields.extend(_field_lines(_raw_to_text(rest)))
    else:
        fields.extend(_field_lines(decode_bytes(_payload_bytes(part)[:MAX_TEXT_BYTES], None)))
    return [(n, _single_line(v)) for n, v in fields[:MAX_REPORT_FIELDS]]


def _enclosed_headers(part: Message) -> list[tuple[str, str]]:
    payload = part.get_payload()
    if isinstance(payload, list):
        inner = next((p for p in payload if isinstance(p, Message)), None)
        if inner is None:
            return []
        hint = _header_charset(inner)
        return [(n.lower(), _header_text(v, hint)) for n, v in list(inner.raw_items())[:MAX_HEADERS]]
    data = _payload_bytes(part)[:MAX_TEXT_BYTES]
    try:
        inner = _header_parser().parsebytes(data)
    except Exception:
        return []
    return [(n.lower(), _header_text(v)) for n, v in list(inner.raw_items())[:MAX_HEADERS]]


# --------------------------------------------------------------------------- header repair

_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
_OBS_COLON = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]+:")
_KEY_HEADER_LINE = re.compile(rb"^(?:from|subject|message-id|date|to|content-type)[ \t]*:", re.I)
_MAX_REPAIR_LINES = 2_000


def _repair_header_block(data: bytes) -> bytes | None:
    """Re-fold stray unindented lines inside the header block, when that is clearly what they are.

    Some gateways emit a folded header (a long base64 token, for instance) without indenting
    the continuation lines; the parser then ends the headers there and From/Subject below it
    are lost in the body. Only when the header block (up to the first blank line) still has a
    key header field *after* such a line are the stray lines turned into continuations.
    Field names followed by white space before the colon (obsolete syntax) are closed up.
    """
    lines = data.splitlines(keepends=True)
    stray: list[int] = []
    spaced: list[int] = []
    key_after_stray = False
    for index, line in enumerate(lines[:_MAX_REPAIR_LINES]):
        if not line.strip():
            break
        if index == 0 and line.startswith(b"From "):
            continue
        if line[:1] in (b" ", b"\t"):
            continue
        if _HEADER_LINE.match(line):
            if _OBS_COLON.match(line):
                spaced.append(index)
            if stray and _KEY_HEADER_LINE.match(line):
                key_after_stray = True
            continue
        stray.append(index)
    else:
        return None  # no blank line: there is no header block end to trust
    if not (stray and key_after_stray) and not spaced:
        return None
    for index in spaced:
        # Obsolete syntax (RFC 5322 section 4.5): white space before the colon.
        lines[index] = _OBS_COLON.sub(rb"\1:", lines[index], count=1)
    if key_after_stray:
        for index in stray:
            lines[index] = b" " + lines[index]
    return b"".join(lines)


# --------------------------------------------------------------------------- entry point


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one raw message; never raises.

    `problem` is set only when the message is unusable as mail we could ever act on: the input
    is empty, it has no header fields at all, or no sender can be found in From, Sender,
    Reply-To or Return-Path. A null sender (`Return-Path: <>`, `From: MAILER-DAEMON <>`) counts
    as a sender: it marks an automated message, which can still be classified and recorded.
    Everything else (broken MIME, bad charsets, bad dates, malformed addresses) is salvaged and
    noted in `defects`.
    """
    try:
        data = bytes(raw)
    except Exception:
        return ParsedMessage(message_id=None, problem="input is not bytes")
    try:
        return _parse(data)
    except Exception as exc:
        # Should not happen; keep whatever the header block alone gives us.
        return _salvage(data, f"message could not be parsed ({type(exc).__name__})")


def _salvage(data: bytes, problem: str) -> ParsedMessage:
    try:
        msg = _header_parser().parsebytes(data[:MAX_TEXT_BYTES])
        items = list(msg.raw_items())[:MAX_HEADERS]
        headers = tuple((n.lower(), _header_text(v)) for n, v in items)
        return ParsedMessage(message_id=None, headers=headers, problem=problem)
    except Exception:
        return ParsedMessage(message_id=None, problem=problem)


def _mime(data: bytes, defects: list[str]) -> Message:
    """The MIME tree of a (non-empty) message, header block repaired where clearly needed."""
    try:
        msg = _parser().parsebytes(data)
    except RecursionError:
        # MIME nested deeper than the parser's recursion allows: the headers still count.
        defects.append("NestingTooDeep")
        msg = _header_parser().parsebytes(data)
    if any(type(d).__name__ == "MissingHeaderBodySeparatorDefect" for d in msg.defects):
        repaired = _repair_header_block(data)
        if repaired is not None:
            defects.append("RepairedHeaderBlock")
            msg = _parser().parsebytes(repaired)
    return msg


def _leaf_parts(msg: Message, defects: list[str], hint: str | None
                ) -> Iterator[tuple[Message, str, int, str | None]]:
    """Every leaf part in document order as (part, content type, alternative group, name).

    `name` is None for body text (inline text/plain or text/html) and the attachment's name
    (declared, else `_fallback_name`) for everything else.
    """
    for part, group, resource in _walk(msg, defects):
        defects.extend(type(d).__name__ for d in getattr(part, "defects", ()))
        ctype = part.get_content_type()
        if part.get_content_maintype() == "multipart":
            if isinstance(part.get_payload(), list):
                continue
            # Broken MIME (boundary never found): the body is all we have, read it as text.
            ctype = "text/plain"
        filename = _filename(part, hint)
        attached = resource or bool(filename) or part.get_content_disposition() == "attachment"
        if ctype in ("text/plain", "text/html") and not attached:
            yield part, ctype, group, None
        else:
            yield part, ctype, group, filename or _fallback_name(part, ctype)


def attachment_files(raw: bytes) -> Iterator[AttachedFile]:
    """Every attachment of `raw`, named, decoded and unpacked exactly as `parse_message` lists
    them in `ParsedMessage.attachments`. Never raises."""
    try:
        data = _LEADING_BLANK_LINES.sub(b"", bytes(raw), count=1)
        if not data.strip():
            return
        defects: list[str] = []
        msg = _mime(data, defects)
        hint = _header_charset(msg)
        for part, ctype, _, name in _leaf_parts(msg, defects, hint):
            if name is not None:
                yield from _part_files(part, ctype, name, defects)
    except Exception:
        return  # whatever was yielded stands; the stored message itself keeps everything


def _parse(data: bytes) -> ParsedMessage:
    data = _LEADING_BLANK_LINES.sub(b"", data, count=1)
    # Old Mac mail (bare CR line ends): the stdlib leaves quoted-printable soft breaks "=\r"
    # undecoded and cuts the text short; read it with LF line ends.
    if b"\r" in data and b"\n" not in data:
        data = data.replace(b"\r", b"\n")
    if not data.strip():
        return ParsedMessage(message_id=None, problem="empty message")
    defects: list[str] = []
    msg = _mime(data, defects)
    hint = _header_charset(msg)
    raw_headers = list(msg.raw_items())[:MAX_HEADERS]
    headers = tuple((name.lower(), _header_text(value, hint)) for name, value in raw_headers)

    def raw_all(name: str) -> list[str]:
        wanted = name.lower()
        return [v for n, v in raw_headers if n.lower() == wanted]

    def raw_first(name: str) -> str | None:
        values = raw_all(name)
        return values[0] if values else None

    from_list = _addresses(raw_all("from"), defects, hint, sender=True)
    sender_list = _addresses(raw_all("sender"), defects, hint, sender=True)
    reply_to = tuple(spec for _, spec in _addresses(raw_all("reply-to"), defects, hint))
    return_raw = raw_first("return-path")
    return_path = _return_path(return_raw) if return_raw is not None else None
    # With several From fields (or garbage in the first), prefer a real address.
    from_list.sort(key=lambda entry: "@" not in entry[1])
    from_name, from_address = from_list[0] if from_list else ("", None)
    sender_address = sender_list[0][1] if sender_list else None
    if from_address is None and sender_address is not None:
        from_address = sender_address
        from_name = sender_list[0][0]

    message_ids = _message_ids(raw_all("message-id")[:1])
    content_type = msg.get_content_type()
    report_type: str | None = None
    if content_type == "multipart/report":
        try:
            param = msg.get_param("report-type")
        except Exception:
            param = None
        if param:
            value = email_utils.collapse_rfc2231_value(param)
            report_type = _single_line(str(value)).strip("\"'").lower() or None

    # Inline body parts in document order: (alternative group, is html, decoded text).
    bodies: list[tuple[int, bool, str]] = []
    attachments: list[Attachment] = []
    report_fields: list[tuple[str, str]] = []
    enclosed: list[tuple[str, str]] = []
    text_chars = 0
    for part, ctype, group, name in _leaf_parts(msg, defects, hint):
        if name is None:
            if text_chars < MAX_TEXT_CHARS:
                body = _part_text(part, defects)
                text_chars += len(body)
                bodies.append((group, ctype == "text/html", body))
            continue
        if ctype in _REPORT_PART_TYPES:
            report_fields.extend(_report_fields(part))
        elif not enclosed and (ctype in _ENCLOSED_MESSAGE_TYPES or ctype in _ENCLOSED_HEADER_TYPES):
            enclosed = _enclosed_headers(part)
        attachments.extend(Attachment(filename=f.filename, content_type=f.content_type, size=len(f.data))
                           for f in _part_files(part, ctype, name, defects))

    # Within one multipart/alternative the plain text wins; outside of one, every inline part
    # is content (e.g. an HTML message followed by a plain-text signature in multipart/mixed).
    plain_groups = {group for group, is_html, _ in bodies if not is_html and group}
    html = next((body for _, is_html, body in bodies if is_html), None)
    pieces: list[str] = []
    text_from_html = False
    for group, is_html, body in bodies:
        if is_html:
            if group in plain_groups:
                continue
            converted = convert_html(body, max_chars=MAX_TEXT_CHARS)
            if not converted.complete:
                defects.append("HtmlConversionStopped")
            body = converted.text
            text_from_html = True
        pieces.append(body)
    text = "\n".join(pieces)[:MAX_TEXT_CHARS]

    # `From: MAILER-DAEMON <>` names the null sender just like `Return-Path: <>` does.
    null_from = from_address is None and any(_NULL_IN_FROM.search(v) for v in raw_all("from"))
    problem: str | None = None
    if not raw_headers:
        problem = "no header fields"
    elif (
        from_address is None
        and not reply_to
        and return_path is None
        and not null_from
    ):
        problem = "no sender address (From, Sender, Reply-To and Return-Path all missing or empty)"

    to = tuple(spec for _, spec in _addresses(raw_all("to"), defects, hint))
    cc = tuple(spec for _, spec in _addresses(raw_all("cc"), defects, hint))
    short_defects = list(dict.fromkeys(d.removesuffix("Defect") for d in defects))[:MAX_DEFECTS]
    return ParsedMessage(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=_message_ids(raw_all("in-reply-to")),
        references=_message_ids(raw_all("references")),
        from_address=from_address,
        from_name=from_name,
        sender_address=sender_address,
        return_path=return_path,
        reply_to=reply_to,
        to=to,
        cc=cc,
        subject=_header_text(raw_first("subject") or "", hint),
        date=_parse_date(raw_first("date")),
        text=text,
        text_from_html=text_from_html,
        html=html,
        attachments=tuple(attachments),
        content_type=content_type,
        report_type=report_type,
        headers=headers,
        defects=tuple(short_defects),
        report_fields=tuple(report_fields[:MAX_REPORT_FIELDS]),
        enclosed_headers=tuple(enclosed),
        problem=problem,
    )
