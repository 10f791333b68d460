"""The files inside a TNEF blob (Outlook's `winmail.dat`, `application/ms-tnef`), bounded and pure.

Only what staff need is read: each attachment's name, MIME type and bytes (MS-OXTNEF attributes
attAttachRendData, attAttachTitle, attAttachData and the attAttachment property list). Bodies,
recipients and dates are skipped. Embedded messages (attach method 5) are kept whole, as their
own TNEF stream, and the files inside them are unpacked too, to a fixed depth.

Hand-written rather than `tnefparse` (1.4.0, 2021) because that library trims trailing NUL
bytes from binary attachments (a Word .doc loses its last sectors) and trusts counts read from
the file: a 40-byte winmail.dat announcing 2**32-1 properties keeps it looping through them all.
Here every loop consumes input or stops, and damage ends the reading with a `problem`: the files
read completely before it are still given.
"""

from __future__ import annotations

import mimetypes
import struct
from collections.abc import Iterator
from dataclasses import dataclass

SIGNATURE = 0x223E9F78
MAX_FILES = 200  # per TNEF blob, nested ones included
MAX_DEPTH = 3  # embedded messages inside embedded messages

_LEVEL_ATTACHMENT = 0x02
# Attribute ids (the low 16 bits of the attribute tag).
_ATT_ATTACH_DATA = 0x800F
_ATT_ATTACH_TITLE = 0x8010
_ATT_ATTACH_REND_DATA = 0x9002
_ATT_ATTACHMENT = 0x9005
_ATT_OEM_CODEPAGE = 0x9007
# MAPI property ids used for attachments.
_PR_DISPLAY_NAME = 0x3001
_PR_ATTACH_DATA = 0x3701
_PR_ATTACH_FILENAME = 0x3704
_PR_ATTACH_METHOD = 0x3705
_PR_ATTACH_LONG_FILENAME = 0x3707
_PR_ATTACH_MIME_TAG = 0x370E
_METHOD_EMBEDDED_MESSAGE = 5
# MAPI property types: fixed sizes (each value padded to 4 bytes) and length-prefixed ones.
_FIXED_SIZES = {0x0002: 2, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, 0x000A: 4,
                0x000B: 2, 0x0014: 8, 0x0040: 8, 0x0048: 16}
_PT_OBJECT, _PT_STRING8, _PT_UNICODE, _PT_BINARY = 0x000D, 0x001E, 0x001F, 0x0102
_VARIABLE = frozenset({_PT_OBJECT, _PT_STRING8, _PT_UNICODE, _PT_BINARY})
_MULTI_VALUE = 0x1000
# A PT_OBJECT value starts with the interface id; this one marks an embedded message.
_IID_MESSAGE = bytes.fromhex("0703020000000000c000000000000046")
TNEF_CONTENT_TYPE = "application/vnd.ms-tnef"

# Built-in table only, so that guesses do not depend on the host's /etc/mime.types.
MIME_TYPES = mimetypes.MimeTypes(filenames=())


class TnefError(ValueError):
    """Damage inside one attribute."""


@dataclass(frozen=True, slots=True)
class TnefFile:
    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class TnefContents:
    files: tuple[TnefFile, ...]
    # Set when the blob is not TNEF or is damaged; `files` are then what could be read.
    problem: str | None = None


@dataclass(slots=True)
class _Pending:
    title: str = ""
    long_name: str = ""
    short_name: str = ""
    display_name: str = ""
    mime_tag: str = ""
    method: int = 0
    data: bytes | None = None

    def name(self) -> str:
        for candidate in (self.long_name, self.title, self.short_name, self.display_name):
            # A listing never needs a path, and a path in a filename is only ever trouble.
            name = candidate.replace("\\", "/").rsplit("/", 1)[-1].strip()
            if name:
                return name
        return "Untitled Attachment"


def is_tnef(data: bytes) -> bool:
    return len(data) >= 6 and struct.unpack_from("<I", data)[0] == SIGNATURE


def guess_type(name: str) -> str | None:
    return MIME_TYPES.guess_type(name, strict=False)[0]


def unpack(blob: bytes) -> TnefContents:
    """Every attachment in `blob`, in order. Never raises."""
    if not is_tnef(blob):
        return TnefContents(files=(), problem="not TNEF (no signature)")
    files: list[TnefFile] = []
    problems: list[str] = []
    _unpack(memoryview(blob), files, problems, depth=0)
    return TnefContents(files=tuple(files), problem="; ".join(problems[:3]) or None)


def _attributes(blob: memoryview, problems: list[str]) -> Iterator[tuple[int, int, memoryview]]:
    """(level, attribute id, data) of every attribute whose data is complete.

    Checksums are not checked (Outlook's own readers do not either, and a bad one damages
    nothing we read). Damage ends the walk with a note in `problems`; NUL or white-space
    padding after the last attribute is not damage.
    """
    pos = 6
    while pos < len(blob):
        level, tag, length = struct.unpack_from("<BII", blob, pos) if pos + 9 <= len(blob) else (0, 0, 0)
        end = pos + 9 + length
        if level not in (1, 2) or end > len(blob):
            if bytes(blob[pos:]).strip(b"\x00 \t\r\n"):
                problems.append(f"damaged after byte {pos}")
            return
        yield level, tag & 0xFFFF, blob[pos + 9 : end]
        pos = end + 2


def _mapi_properties(data: memoryview) -> Iterator[tuple[int, int, list[memoryview]]]:
    """(property id, base type, values) from an attAttachment property list.

    Every iteration consumes at least four bytes or raises TnefError, so a forged count cannot
    make the loops outlive the data.
    """
    size = len(data)

    def u32(at: int) -> int:
        if at + 4 > size:
            raise TnefError("property list truncated")
        value: int = struct.unpack_from("<I", data, at)[0]
        return value

    count = u32(0)
    pos = 4
    for _ in range(count):
        if pos + 4 > size:
            raise TnefError("fewer properties than announced")
        ptype, pid = struct.unpack_from("<HH", data, pos)
        pos += 4
        if pid >= 0x8000:  # a named property: GUID, kind, then an id or a UTF-16 name
            kind = u32(pos + 16)
            pos += 20
            pos += 4 if kind == 0 else 4 + _pad4(u32(pos))
        base = ptype & ~_MULTI_VALUE
        values_count = 1
        if ptype & _MULTI_VALUE or base in _VARIABLE:
            values_count = u32(pos)
            pos += 4
        values: list[memoryview] = []
        for _ in range(values_count):
            if base in _FIXED_SIZES:
                length = _FIXED_SIZES[base]
            elif base in _VARIABLE:
                length = u32(pos)
                pos += 4
            else:
                raise TnefError(f"unknown property type {ptype:#06x}")
            if pos + length > size:
                raise TnefError("property value runs past the end")
            values.append(data[pos : pos + length])
            pos += _pad4(length)
        yield pid, base, values


def _pad4(length: int) -> int:
    return length + (-length % 4)


def _text(value: memoryview, ptype: int, codepage: str) -> str:
    raw = bytes(value)
    if ptype == _PT_UNICODE:
        text = raw.decode("utf-16-le", "replace")
    else:
        try:
            text = raw.decode(codepage)
        except (UnicodeDecodeError, LookupError):
            text = raw.decode("cp1252", "replace")
    return text.split("\x00", 1)[0].strip()


def _codepage(data: memoryview) -> str:
    if len(data) < 4:
        return "cp1252"
    number = struct.unpack_from("<I", data)[0]
    name = {65001: "utf-8", 20127: "ascii", 28591: "latin-1", 20866: "koi8-r"}.get(number)
    return name or f"cp{number}"


def _unpack(blob: memoryview, files: list[TnefFile], problems: list[str], *, depth: int) -> None:
    codepage = "cp1252"
    pending: list[_Pending] = []
    for level, attribute, data in _attributes(blob, problems):
        if attribute == _ATT_OEM_CODEPAGE:
            codepage = _codepage(data)
        if level != _LEVEL_ATTACHMENT:
            continue
        if attribute == _ATT_ATTACH_REND_DATA or not pending:
            pending.append(_Pending())  # attAttachRendData opens each attachment
        current = pending[-1]
        if attribute == _ATT_ATTACH_TITLE:
            current.title = _text(data, _PT_STRING8, codepage)
        elif attribute == _ATT_ATTACH_DATA:
            current.data = bytes(data)
        elif attribute == _ATT_ATTACHMENT:
            try:
                for pid, ptype, values in _mapi_properties(data):
                    _apply_property(current, pid, ptype, values, codepage)
            except TnefError as exc:
                problems.append(str(exc))
    for item in pending:
        if item.data is None:
            continue  # a rendering placeholder with no content
        if len(files) >= MAX_FILES:
            problems.append(f"more than {MAX_FILES} files")
            return
        name = item.name()
        if item.method == _METHOD_EMBEDDED_MESSAGE:
            files.append(TnefFile(name=name, content_type=TNEF_CONTENT_TYPE, data=item.data))
            if depth + 1 < MAX_DEPTH and is_tnef(item.data):
                _unpack(memoryview(item.data), files, problems, depth=depth + 1)
            continue
        mime = item.mime_tag if _looks_like_type(item.mime_tag) else None
        files.append(TnefFile(name=name, data=item.data,
                              content_type=mime or guess_type(name) or "application/octet-stream"))


def _apply_property(item: _Pending, pid: int, ptype: int, values: list[memoryview],
                    codepage: str) -> None:
    if not values:
        return
    value = values[0]
    if pid == _PR_ATTACH_DATA and ptype in (_PT_OBJECT, _PT_BINARY):
        raw = bytes(value)
        # A PT_OBJECT value starts with its interface id, which is not part of the file.
        item.data = raw[16:] if ptype == _PT_OBJECT else raw
        if ptype == _PT_OBJECT and raw[:16] == _IID_MESSAGE:
            item.method = _METHOD_EMBEDDED_MESSAGE
    elif pid == _PR_ATTACH_METHOD and ptype == 0x0003:
        item.method = item.method or struct.unpack_from("<I", value)[0]
    elif ptype in (_PT_STRING8, _PT_UNICODE):
        text = _text(value, ptype, codepage)
        if pid == _PR_ATTACH_LONG_FILENAME:
            item.long_name = text
        elif pid == _PR_ATTACH_FILENAME:
            item.short_name = text
        elif pid == _PR_DISPLAY_NAME:
            item.display_name = text
        elif pid == _PR_ATTACH_MIME_TAG:
            item.mime_tag = text.lower()


def _looks_like_type(value: str) -> bool:
    kind, slash, sub = value.partition("/")
    return bool(slash and kind.isascii() and kind.isalpha() and sub and " " not in value)
