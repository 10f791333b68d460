"""winmail.dat (TNEF): staff get the files inside it, named; damaged or hostile blobs never break intake.

The samples come from ../shared/corpora (MimeKit's and tnefparse's test data); tests that need
them are skipped when that folder is absent.
"""

from __future__ import annotations

import base64
import random
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness import PASSWORD, PROVIDER_ADDRESSES, Worker, mailbox_for
from worker.core.attachments import extract_attachments
from worker.core.parse import parse_message
from worker.core.tnef import SIGNATURE, TNEF_CONTENT_TYPE, unpack
from worker.embedded import EmbeddedImapServer, EmbeddedSmtpServer, deliver_many

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
MIMEKIT = CORPORA / "mimekit" / "UnitTests" / "TestData" / "tnef"
TNEFPARSE = CORPORA / "tnefparse" / "tests" / "examples"
needs_mimekit = pytest.mark.skipif(not MIMEKIT.is_dir(), reason=f"TNEF samples not at {MIMEKIT}")
needs_tnefparse = pytest.mark.skipif(not TNEFPARSE.is_dir(), reason=f"TNEF samples not at {TNEFPARSE}")

# The .list files name what the `tnef` tool writes out, which includes the message body
# (body.rtf / body.html); that is Outlook's formatting of the mail's own text, not a file.
BODY_NAMES = {"", "body.rtf", "body.html"}
# Samples that really are damaged: the files before the damage are still read.
DAMAGED = {"panic.tnef": "about 17 KB of bytes that are not TNEF after the last attachment"}
# A PT_OBJECT attachment starts with its 16-byte interface id: MimeKit (and we) drop it, the
# sample folders keep it.
OBJECT_PREFIX = 16


def mimekit_samples() -> list[str]:
    return sorted(p.name for p in MIMEKIT.glob("*.tnef")) if MIMEKIT.is_dir() else []


@needs_mimekit
@pytest.mark.parametrize("name", mimekit_samples())
def test_mimekit_samples_give_the_listed_files(name: str) -> None:
    path = MIMEKIT / name
    contents = unpack(path.read_bytes())
    names = [f.name for f in contents.files]
    listed = set(path.with_suffix(".list").read_text(encoding="utf-8").splitlines()) - BODY_NAMES
    assert listed <= set(names), f"missing {sorted(listed - set(names))}; got {names}"
    assert (contents.problem is not None) == (name in DAMAGED), contents.problem
    # Where the sample folder holds the extracted file, the bytes are the same.
    folder = path.with_suffix("")
    for file in contents.files:
        expected_path = folder / file.name
        if not expected_path.is_file():
            continue
        expected = expected_path.read_bytes()
        assert file.data in (expected, expected[OBJECT_PREFIX:]) or (
            # The corpus copy stores text files with LF line ends.
            file.data.replace(b"\r\n", b"\n") == expected), file.name


@needs_mimekit
def test_binary_attachment_keeps_its_trailing_zero_bytes() -> None:
    # The Word document ends in zero padding up to its last 512-byte sector; trimming it (as
    # the tnefparse library does) leaves a file Word calls damaged.
    files = {f.name: f for f in unpack((MIMEKIT / "MAPI_ATTACH_DATA_OBJ.tnef").read_bytes()).files}
    doc = files["VIA_Nytt_1402.doc"]
    assert len(doc.data) == 61_952 and len(doc.data) % 512 == 0
    assert doc.data.startswith(b"\xd0\xcf\x11\xe0") and doc.data.endswith(b"\x00" * 16)
    assert doc.content_type == "application/msword"
    assert files["VIA_Nytt_1402.pdf"].content_type == "application/pdf"


@needs_tnefparse
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("umlaut.tnef", [("TBZ PARIV GmbH.jpg", "image/jpeg"), ("image003.jpg", "image/jpeg"),
                         ("UmlautAnhang-äüö.txt", "text/plain")]),
        ("duplicate_filename.tnef", [("file_abcdefgh.txt", "text/plain"),
                                     ("file_abcdefgh.txt", "text/plain"),
                                     ("VIA_Nytt_14021.htm", "text/html")]),
        # The last attribute's checksum is cut off: the image itself is whole.
        ("bad_checksum.tnef", [("image001.png", "image/png")]),
        # An embedded Outlook item (a distribution list) is kept whole, as TNEF.
        ("IPM-DistList.tnef", [("Untitled Attachment", TNEF_CONTENT_TYPE)]),
        ("two-files.tnef", [("AUTHORS", "application/octet-stream"),
                            ("README", "application/octet-stream")]),
        ("rtf.tnef", []),  # only a rich-text body
    ],
)
def test_tnefparse_samples(name: str, expected: list[tuple[str, str]]) -> None:
    contents = unpack((TNEFPARSE / name).read_bytes())
    assert [(f.name, f.content_type) for f in contents.files] == expected
    assert contents.problem is None
    if name == "bad_checksum.tnef":
        assert contents.files[0].data.startswith(b"\x89PNG\r\n\x1a\n")


@needs_mimekit
def test_embedded_message_is_kept_and_its_files_unpacked() -> None:
    contents = unpack((MIMEKIT / "christmas.tnef").read_bytes())
    assert [(f.name, f.content_type) for f in contents.files] == [
        ("kitten-playing-with-a-christmas-tree.jpg", "image/jpeg"),
        ("Untitled Attachment", TNEF_CONTENT_TYPE),  # an Outlook task
        ("Untitled Attachment", TNEF_CONTENT_TYPE),  # an appointment with the picture...
        ("kitten-playing-with-a-christmas-tree.jpg", "image/jpeg"),  # ...attached to it
    ]
    assert all(unpack(f.data).problem is None for f in contents.files[1:3])


# ----------------------------------------------------------------------------- hostile blobs


def attribute(level: int, attribute_id: int, data: bytes, attribute_type: int = 6) -> bytes:
    tag = attribute_id | attribute_type << 16
    return struct.pack("<BII", level, tag, len(data)) + data + struct.pack("<H", sum(data) & 0xFFFF)


def blob(*attributes: bytes) -> bytes:
    return struct.pack("<IH", SIGNATURE, 0) + b"".join(attributes)


def one_file(name: bytes, data: bytes) -> bytes:
    return (attribute(2, 0x9002, b"\x01\x00" + b"\x00" * 12)
            + attribute(2, 0x8010, name + b"\x00", attribute_type=1)
            + attribute(2, 0x800F, data))


def test_hand_built_blob() -> None:
    contents = unpack(blob(one_file(b"bill.pdf", b"%PDF-1.4"), one_file(b"notes.txt", b"hello")))
    assert [(f.name, f.content_type, f.data) for f in contents.files] == [
        ("bill.pdf", "application/pdf", b"%PDF-1.4"), ("notes.txt", "text/plain", b"hello")]
    assert contents.problem is None


@pytest.mark.parametrize(
    "properties",
    [
        # 2**32-1 properties announced, one present (tnefparse loops through all of them).
        pytest.param(struct.pack("<IHHH2x", 0xFFFFFFFF, 0x0002, 0x3001, 7), id="property-count"),
        # A multi-valued short with 2**32-1 values announced.
        pytest.param(struct.pack("<IHHI", 1, 0x1002, 0x3001, 0xFFFFFFFF) + b"\x00" * 8,
                     id="value-count"),
        # A binary value claiming 4 GB.
        pytest.param(struct.pack("<IHHII", 1, 0x0102, 0x3701, 1, 0xFFFFFFF0), id="value-length"),
        pytest.param(struct.pack("<IHH", 1, 0x0999, 0x3001) + b"\x00" * 8, id="unknown-type"),
    ],
)
def test_forged_counts_end_the_reading_at_once(properties: bytes) -> None:
    contents = unpack(blob(one_file(b"a.txt", b"kept"), attribute(2, 0x9005, properties)))
    assert [f.name for f in contents.files] == ["a.txt"]
    assert contents.problem is not None


def test_truncated_blob_keeps_the_files_read_before_the_cut() -> None:
    whole = blob(one_file(b"first.txt", b"one"), one_file(b"second.txt", b"two" * 100))
    contents = unpack(whole[:-50])
    assert [f.name for f in contents.files] == ["first.txt"]
    assert contents.problem is not None


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 a zip", b"\x78\x9f\x3e\x22"])
def test_not_tnef(data: bytes) -> None:
    contents = unpack(data)
    assert contents.files == () and contents.problem == "not TNEF (no signature)"


def test_random_damage_never_raises() -> None:
    rng = random.Random(7)
    sample = blob(one_file(b"a.txt", b"x" * 40),
                  attribute(2, 0x9005, struct.pack("<IHHI", 1, 0x001F, 0x3707, 1)
                            + struct.pack("<I", 8) + "b.txt".encode("utf-16-le")[:8]),
                  one_file(b"c.bin", bytes(range(256))))
    for _ in range(2_000):
        damaged = bytearray(sample)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(6, len(damaged))] = rng.randrange(256)
        unpack(bytes(damaged[: rng.randint(6, len(damaged))]))


# ----------------------------------------------------------------------------- in a message


def outlook_mail(tnef: bytes, *, content_type: str = "application/ms-tnef",
                 filename: str = "winmail.dat") -> bytes:
    encoded = base64.encodebytes(tnef).replace(b"\n", b"\r\n")
    return (
        b"From: Sam Jones <sam@example.org>\r\nTo: complaints@claranetsoho.co.uk\r\n"
        b"Subject: My bill\r\nDate: Mon, 16 Nov 2026 09:00:00 +0000\r\n"
        b"Message-ID: <tnef-1@example.org>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
        b"--B\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nMy bill is attached.\r\n"
        b"--B\r\nContent-Type: " + content_type.encode() + b"; name=\"" + filename.encode() + b"\"\r\n"
        b"Content-Disposition: attachment; filename=\"" + filename.encode() + b"\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--B--\r\n"
    )


@needs_mimekit
@pytest.mark.parametrize("content_type", ["application/ms-tnef", "application/vnd.ms-tnef",
                                          "application/octet-stream"])
def test_message_lists_and_forwards_the_files_inside(content_type: str) -> None:
    raw = outlook_mail((MIMEKIT / "two-files.tnef").read_bytes(), content_type=content_type)
    msg = parse_message(raw)
    assert msg.text == "My bill is attached."
    assert [(a.filename, a.size) for a in msg.attachments] == [("AUTHORS", 244), ("README", 893)]
    files = extract_attachments(raw)
    assert [f.filename for f in files] == ["AUTHORS", "README"]
    assert files[1].data == (MIMEKIT / "two-files" / "README").read_bytes()
    assert "TnefDamaged" not in msg.defects


@needs_mimekit
def test_damaged_winmail_dat_is_kept_with_what_could_be_read() -> None:
    tnef = (MIMEKIT / "two-files.tnef").read_bytes()
    raw = outlook_mail(tnef[: tnef.index(b"README") + 100])
    msg = parse_message(raw)
    assert [a.filename for a in msg.attachments] == ["winmail.dat", "AUTHORS"]
    assert "TnefDamaged" in msg.defects
    assert [f.filename for f in extract_attachments(raw)] == ["winmail.dat", "AUTHORS"]


@needs_mimekit
def test_winmail_dat_with_only_a_rich_text_body_stands_for_no_file() -> None:
    msg = parse_message(outlook_mail((MIMEKIT / "rtf.tnef").read_bytes()))
    assert msg.attachments == ()
    assert msg.text == "My bill is attached."


def test_file_merely_called_winmail_dat_is_left_alone() -> None:
    raw = outlook_mail(b"just some bytes", content_type="application/octet-stream")
    msg = parse_message(raw)
    assert [(a.filename, a.content_type) for a in msg.attachments] == [
        ("winmail.dat", "application/octet-stream")]
    assert "TnefDamaged" not in msg.defects
    assert extract_attachments(raw)[0].data == b"just some bytes"


@needs_mimekit
def test_staff_receive_the_real_files(tmp_path: Path, pymap: EmbeddedImapServer,
                                      smtp: EmbeddedSmtpServer) -> None:
    address = PROVIDER_ADDRESSES["claranet-soho"]
    worker = Worker.create(tmp_path, imap_port=pymap.port, smtp_port=smtp.port,
                           mailboxes=[mailbox_for("claranet-soho",
                                                  extra={"notify": ["team@claranetsoho.co.uk"]})])
    at = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
    deliver_many("127.0.0.1", pymap.port, address, PASSWORD,
                 [(outlook_mail((MIMEKIT / "two-files.tnef").read_bytes()), at)])
    worker.once(at)
    [note] = [m for m in smtp.received
              if m.message["X-Complaints-Worker-Purpose"] == "staff-notification"]
    files = [(a.get_filename(), a.get_content()) for a in note.message.iter_attachments()]
    assert files == [("AUTHORS", (MIMEKIT / "two-files" / "AUTHORS").read_bytes()),
                     ("README", (MIMEKIT / "two-files" / "README").read_bytes())]
    text = note.message.get_body(("plain",))
    assert text is not None and "Attached:  AUTHORS, README" in text.get_content()
