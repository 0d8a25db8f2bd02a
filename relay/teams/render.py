"""From a finished ``Reply`` to the Teams messages that carry it: split, cited, labelled, files.

Teams refuses a bot message over ~100 KB counted in UTF-16 and asks for 80 KB (reference §6.1), so
long answers become several messages, cut where a reader would pause and never inside a code
block without closing and reopening its fence. Each message carries the single AI entity (§6.4)
with only the citations its text marks; the feedback buttons and the answer's attachments (images,
table cards, approval cards) go on the last text message, so an answer is one bubble — only the
final streamed message may carry attachments at all (§1.1). Everything here is pure: plain dicts
out, the sender wraps them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from relay.domain import FilePart, Reply, ReplyOutcome
from relay.teams.answer_card import split_at_first_table
from relay.teams.cards import approval_card, approval_title, decidable_approvals
from relay.teams.citations import (
    MAX_CITATIONS,
    ai_message_entity,
    build_citations,
    citation_markers,
    feedback_channel_data,
)
from relay.teams.markdown import (
    Fence,
    RenderedText,
    append_paragraph,
    close_open_fence,
    is_fence_close,
    match_fence_open,
    to_teams_markdown,
)

__all__ = [
    "MAX_CITATIONS",
    "MESSAGE_LIMIT_BYTES",
    "NO_TEXT_ANSWER",
    "MessagePayload",
    "RenderedText",
    "ai_message_entity",
    "build_citations",
    "feedback_channel_data",
    "file_links",
    "final_message_payload",
    "split_for_teams",
    "to_teams_markdown",
    "utf16_size",
    "what_is_attached",
]

MESSAGE_LIMIT_BYTES = 80_000  # Microsoft's advice; the hard limit is ~100 KB (§6.1)
MIN_LIMIT_BYTES = 64  # below this a fence close/reopen leaves no room for content
MAX_INLINE_IMAGE_BYTES = 1024 * 1024  # pictures in bot messages: 1 MB, PNG/JPEG/GIF (§5)
NO_TEXT_ANSWER = "The agent finished without writing an answer."  # e.g. tools only, no text

_IMAGE_MAGIC = {"image/png": b"\x89PNG", "image/jpeg": b"\xff\xd8\xff", "image/gif": b"GIF8"}
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif"}


def utf16_size(text: str) -> int:
    """Bytes Teams counts for ``text`` (UTF-16, §6.1): 2 per BMP character, 4 per astral one."""
    return len(text.encode("utf-16-le", "surrogatepass"))


# ---------------------------------------------------------------------------------------------
# Splitting.
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    """A paragraph (with its trailing blank lines) or a whole fenced code block."""

    lines: list[str]
    fence: Fence | None = None


def _blocks(text: str) -> list[_Block]:
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
    blocks: list[_Block] = []
    current: list[str] = []
    fence: Fence | None = None
    for line in lines:
        if fence is not None:
            blocks[-1].lines.append(line)
            if is_fence_close(line, fence):
                fence = None
            continue
        fence = match_fence_open(line)
        if fence is not None or (line.strip() and current and not current[-1].strip()):
            if current:
                blocks.append(_Block(current))
            current = []
        if fence is not None:
            blocks.append(_Block([line], fence))
        else:
            current.append(line)
    if current:
        blocks.append(_Block(current))
    return blocks


def _fitting_prefix(text: str, room: int) -> int:
    """How many characters of ``text`` to cut off so they fit ``room`` bytes (at least one)."""
    n = min(len(text), max(room // 2, 1))
    while n > 1 and utf16_size(text[:n]) > room:
        n -= max(1, (utf16_size(text[:n]) - room) // 4)
    # Prefer a cut after a space in the second half, so words survive the last-resort split.
    space = text.rfind(" ", n // 2, n)
    return space + 1 if space > 0 else n


class _Packer:
    """Greedy packing of blocks, then lines, then characters into pieces under ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pieces: list[str] = []
        self.buf: list[str] = []
        self.size = 0
        self.has_content = False
        self.fence: Fence | None = None  # a code block open at the end of ``buf``

    def room(self) -> int:
        reserve = 2 + utf16_size(self.fence.closing) if self.fence else 0
        return self.limit - self.size - reserve

    def add(self, text: str, *, content: bool = True) -> None:
        self.buf.append(text)
        self.size += utf16_size(text)
        self.has_content = self.has_content or content

    def _close_fence(self) -> None:
        assert self.fence is not None
        newline = "" if not self.buf or self.buf[-1].endswith("\n") else "\n"
        self.buf.append(newline + self.fence.closing)

    def flush(self) -> None:
        if not self.has_content:
            return
        if self.fence is not None:
            self._close_fence()  # always fits: ``room()`` kept the reserve free
        self.pieces.append("".join(self.buf))
        self.buf, self.size, self.has_content = [], 0, False
        if self.fence is not None:
            self.add(self.fence.opening + "\n", content=False)  # reopen, same language

    def add_line(self, line: str) -> None:
        if utf16_size(line) > self.room():
            self.flush()
        while utf16_size(line) > self.room():
            # A single line bigger than a whole message: hard split, last resort.
            cut = _fitting_prefix(line, self.room())
            self.add(line[:cut])
            self.flush()
            line = line[cut:]
        if line:
            self.add(line)

    def add_block(self, block: _Block) -> None:
        text = "".join(block.lines)
        size = utf16_size(text)
        if size > self.room() and size <= self.limit:
            self.flush()  # the block fits a message of its own: do not cut it
        if size <= self.room():
            self.add(text)
            return
        fence = block.fence
        opening = fence.opening + "\n" if fence else ""
        if fence is None or 4 * utf16_size(opening) + 8 > self.limit:
            for line in block.lines:  # a paragraph, or a fence too long to repeat
                self.add_line(line)
            return
        if utf16_size(opening) + 2 + utf16_size(fence.closing) + 64 > self.room():
            self.flush()  # do not open a code block with no room left for its first line
        self.add(block.lines[0])
        self.fence = fence
        closed = len(block.lines) > 1 and is_fence_close(block.lines[-1], fence)
        for line in block.lines[1 : -1 if closed else None]:
            self.add_line(line)
        if closed:
            end = block.lines[-1]
            if utf16_size(end) <= self.limit - self.size:
                self.add(end)
            else:
                self._close_fence()  # the reserved closing fence stands in for the real one
            self.fence = None

    def finish(self) -> list[str]:
        if self.has_content:
            self.pieces.append("".join(self.buf))  # an unclosed fence stays as the model left it
        return [piece for piece in self.pieces if piece.strip()]


def split_for_teams(text: str, limit_bytes: int = MESSAGE_LIMIT_BYTES) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit_bytes`` UTF-16 bytes each.

    Cuts at blank lines, else at line ends; a code block is kept whole when it fits a message,
    else closed at the cut and reopened with the same fence and language in the next piece; one
    enormous line is cut at a space or anywhere as a last resort. Apart from those fence lines,
    the pieces concatenate to the input; whitespace-only pieces are dropped ([] for blank text).
    """
    if limit_bytes < MIN_LIMIT_BYTES:
        raise ValueError(f"limit_bytes must be at least {MIN_LIMIT_BYTES}, not {limit_bytes}")
    if utf16_size(text) <= limit_bytes:
        return [text] if text.strip() else []
    packer = _Packer(limit_bytes)
    for block in _blocks(text):
        packer.add_block(block)
    return packer.finish()


# ---------------------------------------------------------------------------------------------
# Files the agent produced.
# ---------------------------------------------------------------------------------------------

_UNSAFE_LABEL = re.compile(r"[\[\]<>`*_\\]")
_MEDIA_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")


def _media_type(value: str | None) -> str:
    media = (value or "").split(";")[0].strip().lower()
    media = "image/jpeg" if media == "image/jpg" else media
    return media if _MEDIA_TYPE.match(media) and len(media) <= 100 else "unknown type"


def _link(url: str, media_type: str) -> str:
    name = unquote(urlsplit(url).path.rstrip("/").rpartition("/")[2]) or media_type
    label = _UNSAFE_LABEL.sub("", name)[:100] or "file"
    target = url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return f"[{label}]({target})"


def _data_url_image(url: str, fallback_type: str) -> str | None:
    """The media type of a ``data:`` URL that is a PNG/JPEG/GIF of at most 1 MB, else None."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        return None
    params = [p.strip().lower() for p in header.split(";")]
    media = _media_type(params[0]) if params[0] else fallback_type
    if media not in _IMAGE_MAGIC:
        return None
    if "base64" in params[1:]:
        if len(payload) > (MAX_INLINE_IMAGE_BYTES * 4) // 3 + 4:
            return None  # too big before decoding anything
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return None
    else:
        data = unquote_to_bytes(payload)
    if len(data) > MAX_INLINE_IMAGE_BYTES or not data.startswith(_IMAGE_MAGIC[media]):
        return None
    if media == "image/gif" and b"NETSCAPE2.0" in data:
        return None  # animated GIFs are not supported in bot messages (§5)
    return media


def file_links(files: list[FilePart]) -> tuple[list[dict[str, Any]], str]:
    """Attachments and Markdown for the agent's ``file`` parts.

    https URLs become links in the text (Teams fetches nothing for a bot, and a link costs a few
    bytes of the message budget). Small PNG/JPEG/GIF ``data:`` URLs become image attachments: the
    100 KB limit does not count base64 images and Teams shows pictures up to 1 MB (§5, §6.1).
    Anything else cannot be delivered in a bot message and is replaced by a short note.
    """
    attachments: list[dict[str, Any]] = []
    lines: list[str] = []
    for file in files:
        url = file.url.strip()
        scheme = url.partition(":")[0].lower()
        media = _media_type(file.media_type)
        if scheme == "https":
            lines.append(_link(url, media))
            continue
        if scheme == "data":
            declared = _media_type(url[5:].partition(",")[0])  # the data URL's own type wins
            media = media if declared == "unknown type" else declared
        image_type = _data_url_image(url, media) if scheme == "data" else None
        if image_type is None:
            lines.append(f"(file omitted: {media})")
            continue
        number = len(attachments) + 1
        attachments.append(
            {
                "contentType": image_type,
                "contentUrl": url,
                "name": f"image-{number}.{_EXTENSIONS[image_type]}",
            }
        )
    return attachments, "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The final message(s).
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class MessagePayload:
    """One Teams message activity to send (textFormat "markdown"), as plain JSON parts."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    channel_data: dict[str, Any] = field(default_factory=dict)
    # The text is not the streamed rendering (its tables moved into a card): a stream's final
    # cannot carry it (§1.1), so the streamed message is replaced by it in place.
    in_place: bool = False


def what_is_attached(reply: Reply, images: int) -> str:
    """The one sentence a text-less answer shows: what its attachments are (never a placeholder).

    Teams needs visible text on a message that carries the AI label (§6.4), and "(no answer
    text)" reads like a fault; this names the approval to decide or the files attached instead.
    """
    if reply.approvals:
        names = [approval_title(a) for a in decidable_approvals(reply.approvals)]
        head = "Approval needed" if len(names) == 1 else "Approvals needed"
        return f"{head}: {'; '.join(names)}"
    if images:
        return "Here is the image." if images == 1 else f"Here are the {images} images."
    return NO_TEXT_ANSWER


def stopped_early(reply: Reply, reference: str | None = None) -> str | None:
    """The line that ends an answer an ``error`` or ``abort`` chunk cut short, else None.

    Without it a cut-short answer reads as complete (it keeps the AI label); the reference is
    what support can look the turn up by in Neo.
    """
    if reply.outcome is ReplyOutcome.ERROR:
        reason = reply.error_text or "the agent reported an error"
    elif reply.outcome is ReplyOutcome.ABORTED:
        reason = reply.abort_reason or "the agent stopped generating"
    else:
        return None
    reason = " ".join(reason.split())
    reason = reason if len(reason) <= 200 else reason[:199] + "…"
    ref = f" (ref {reference})" if reference else ""
    return f"⚠️ The answer stopped early: {reason.rstrip('.')}{ref}"


def final_message_payload(
    reply: Reply,
    *,
    limit_bytes: int = MESSAGE_LIMIT_BYTES,
    feedback_mode: str | None = "default",
    reference: str | None = None,
) -> list[MessagePayload]:
    """The messages that deliver ``reply``: usually one; text pieces when it is too long.

    One bubble per answer: the last text piece carries the answer's attachments too — its
    tables in place (:func:`relay.teams.answer_card.split_at_first_table`), images and approval
    cards — since only the final message of a stream may carry
    attachments (§1.1) and a second message after the text reads as a second answer. Every
    message carries the AI entity (each Teams message is labelled on its own); a text piece
    lists only the citations whose markers it contains; the last piece gets the feedback buttons
    (``feedback_mode=None`` leaves them off). The text budget leaves room for the entity and
    attachment JSON, which count towards the same size limit. An answer cut short ends with
    :func:`stopped_early` (``reference``: Neo's id for the turn) and gets no feedback buttons.
    """
    rendered = to_teams_markdown(reply.text)
    images, links = file_links(reply.files)
    head, card = split_at_first_table(rendered)
    if card is not None and utf16_size(json.dumps(card, ensure_ascii=False)) > limit_bytes // 2:
        head, card = rendered.text, None  # too big for one card: the tables stay flattened
    text = append_paragraph(close_open_fence(head), links)
    attachments = ([card] if card else []) + answer_attachments(reply, images)
    if not text.strip() and card is None:
        text = what_is_attached(reply, len(images))
    text, citations = build_citations(text, reply.sources)
    notice = stopped_early(reply, reference)
    if notice is not None:
        text, feedback_mode = append_paragraph(text, notice), None
    feedback = feedback_channel_data(feedback_mode) if feedback_mode is not None else {}
    overhead = json.dumps([ai_message_entity(citations)], ensure_ascii=False) + json.dumps(feedback)
    # Base64 images do not count towards the limit (§6.1); cards do.
    overhead += json.dumps([a for a in attachments if "content" in a], ensure_ascii=False)
    budget = max(limit_bytes - utf16_size(overhead), limit_bytes // 2)
    by_position = {citation["position"]: citation for citation in citations}

    payloads: list[MessagePayload] = []
    for piece in split_for_teams(text, budget) or [text.strip()]:
        used = sorted(set(citation_markers(piece)) & by_position.keys())
        entity = ai_message_entity([by_position[n] for n in used])
        payloads.append(MessagePayload(text=piece, entities=[entity]))
    payloads[0].in_place = card is not None
    payloads[-1].channel_data = feedback
    payloads[-1].attachments = attachments
    return payloads


def answer_attachments(reply: Reply, images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Images, then approval cards (one per action): what the answer's last message carries."""
    return images + [approval_card(a) for a in decidable_approvals(reply.approvals)]
