"""Attachments of a stored message, as bytes, to forward to staff or relay to a customer.

They are exactly the files `parse_message` lists in `ParsedMessage.attachments` (same names, same
order, winmail.dat unpacked), so what a notification says is attached is what is attached.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.core.parse import attachment_files

# A relay or notification never carries more than this in attachments.
MAX_TOTAL_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class AttachmentData:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, kw_only=True, slots=True)
class AttachmentSelection:
    files: tuple[AttachmentData, ...]
    # (filename, size in bytes) of each file that did not fit under the limit.
    left_out: tuple[tuple[str, int], ...] = ()
    limit: int = MAX_TOTAL_BYTES

    def warning(self) -> str | None:
        """What to tell staff about files that were not forwarded, or None."""
        if not self.left_out:
            return None
        names = ", ".join(f"{name} ({_megabytes(size)})" for name, size in self.left_out)
        return (f"Not attached here, as the attachments would be over {_megabytes(self.limit)} in "
                f"all: {names}. The stored message keeps them.")


NO_ATTACHMENTS = AttachmentSelection(files=())


def select_attachments(raw: bytes, *, limit: int = MAX_TOTAL_BYTES) -> AttachmentSelection:
    """Every attachment in order; a file that would take the total over `limit` is left out
    (and named), and smaller ones after it still go."""
    files: list[AttachmentData] = []
    left_out: list[tuple[str, int]] = []
    total = 0
    for name, content_type, data in attachment_files(raw):
        if total + len(data) > limit:
            left_out.append((name, len(data)))
            continue
        total += len(data)
        files.append(AttachmentData(filename=name, content_type=content_type, data=data))
    return AttachmentSelection(files=tuple(files), left_out=tuple(left_out), limit=limit)


def extract_attachments(raw: bytes, *, limit: int = MAX_TOTAL_BYTES) -> tuple[AttachmentData, ...]:
    """The attachments that fit under `limit` (see `select_attachments`)."""
    return select_attachments(raw, limit=limit).files


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"
