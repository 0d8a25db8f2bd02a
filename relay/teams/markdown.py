"""Turn the agent's CommonMark/GFM answer into the Markdown subset Teams renders ("markdown").

Teams renders only part of Markdown and differs per client (reference §6.2): headings and rules are
not rendered at all, lists only on desktop, tables never in ``markdown`` text, and raw HTML is
interpreted, so a model writing ``<b>`` or ``<at>`` would change how the message looks or whom it
mentions. This module rewrites exactly those constructs, leaves everything Teams does render alone
and never touches code. It is also run on partial text while streaming, so it is total (never
raises, an unclosed fence is fine) and works line by line: for a prefix that ends at a blank line
outside a code block, the output is a prefix of the output for the whole text, which is what the
cumulative streaming rule (§1.1) needs. Tables are flattened into one paragraph per row and also
returned as data, so a final message can show them as Adaptive Card tables in their place
(``relay.teams.answer_card``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "ADAPTIVE_CARD_CONTENT_TYPE",
    "BR",
    "IMAGE",
    "TABLE_DELIMITER",
    "Fence",
    "RenderedText",
    "Table",
    "append_paragraph",
    "close_open_fence",
    "code_segments",
    "image_to_link",
    "is_fence_close",
    "is_paragraph_line",
    "match_fence_open",
    "strip_code_spans",
    "to_teams_markdown",
]

ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
ADAPTIVE_CARD_VERSION = "1.5"  # Teams renders Adaptive Cards up to 1.5 (§6.3); Table needs 1.5

# ---------------------------------------------------------------------------------------------
# Code fences and code spans: shared with the splitter and the citation scanner.
# ---------------------------------------------------------------------------------------------

# Any indentation is accepted, not only CommonMark's 0-3 spaces: models indent fences inside list
# items, and treating such a fence as text would let us rewrite code.
_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n]*)$")


@dataclass(frozen=True, slots=True)
class Fence:
    """An open fenced code block: how it was opened, so it can be closed and reopened the same."""

    indent: str
    char: str
    length: int
    info: str  # the info string (language), stripped

    @property
    def opening(self) -> str:
        return f"{self.indent}{self.char * self.length}{self.info}"

    @property
    def closing(self) -> str:
        return f"{self.indent}{self.char * self.length}"


def match_fence_open(line: str) -> Fence | None:
    """The fence this line opens, or None (a backtick fence's info may not contain backticks)."""
    m = _FENCE_OPEN.match(line.rstrip("\n"))
    if m is None:
        return None
    fence, info = m.group("fence"), m.group("info").strip()
    if fence[0] == "`" and "`" in info:
        return None  # CommonMark: that is inline code, not a fence
    return Fence(m.group("indent"), fence[0], len(fence), info)


def is_fence_close(line: str, fence: Fence) -> bool:
    stripped = line.strip()
    return (
        len(stripped) >= fence.length
        and stripped == fence.char * len(stripped)  # only fence characters, nothing after
    )


def close_open_fence(text: str) -> str:
    """``text`` with a closing fence appended if it ends inside a code block.

    Appending keeps the streamed text a prefix of the final one (§1.1), and Teams renders a code
    block only once its closing fence arrived (§6.2).
    """
    fence: Fence | None = None
    for line in text.split("\n"):
        if fence is None:
            fence = match_fence_open(line)
        elif is_fence_close(line, fence):
            fence = None
    if fence is None:
        return text
    separator = "" if text.endswith("\n") else "\n"
    return f"{text}{separator}{fence.closing}"


def append_paragraph(text: str, extra: str) -> str:
    """``text`` followed by ``extra`` as a new paragraph, ``text`` itself unchanged.

    Only appending is allowed once text has been streamed: the final message must contain the
    streamed text as a prefix (§1.1), so trailing whitespace is reused, never stripped.
    """
    if not text.strip():
        return extra
    if not extra:
        return text
    return text + ("" if text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n") + extra


_BACKTICKS = re.compile(r"`+")


def code_segments(line: str) -> list[tuple[bool, str]]:
    """Split one line into (is_code, text) runs; an unmatched backtick run is literal text."""
    out: list[tuple[bool, str]] = []
    pos = start = 0
    while True:
        m = _BACKTICKS.search(line, pos)
        if m is None:
            break
        run = m.group()
        # A code span closes at the next run of exactly the same length (CommonMark).
        close = re.compile(rf"(?<!`){run}(?!`)").search(line, m.end())
        if close is None:
            pos = m.end()
            continue
        if m.start() > start:
            out.append((False, line[start : m.start()]))
        out.append((True, line[m.start() : close.end()]))
        start = pos = close.end()
    if start < len(line):
        out.append((False, line[start:]))
    return out


def strip_code_spans(line: str) -> str:
    """The line without its inline code spans (for scanners that must ignore code)."""
    return "".join(text for is_code, text in code_segments(line) if not is_code)


# ---------------------------------------------------------------------------------------------
# Inline rewriting (outside code only).
# ---------------------------------------------------------------------------------------------

_LINKEDIMAGE = re.compile(r"\[!\[([^\]]*)\]\(([^()\s]*)(?:\s+\"[^\"]*\")?\)\]\(([^()\s]+)\)")
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^\s<>]+)>", re.IGNORECASE)
BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
# "<" opening something tag-like: an element, a closing tag, a comment/doctype or a processing
# instruction. A lone "a < b" is left alone.
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")


def image_to_link(m: re.Match[str]) -> str:
    """``![alt](url)`` → ``[alt](url)``."""
    # Teams does not render Markdown images in text messages on any client (§6.2).
    alt, url = m.group(1).strip(), m.group(2)
    return f"[{alt or 'image'}]({url})"


def _inline_text(text: str, br: str) -> str:
    text = _LINKEDIMAGE.sub(lambda m: f"[{m.group(1).strip() or 'image'}]({m.group(3)})", text)
    text = IMAGE.sub(image_to_link, text)
    text = _AUTOLINK.sub(lambda m: f"[{m.group(1)}]({m.group(1)})", text)
    text = BR.sub(br, text)
    # Teams interprets HTML in Markdown messages (and "<at>" would become a mention): show the
    # model's tags as text instead. "&lt;" is displayed as "<" by every client.
    return _TAG_START.sub("&lt;", text)


def _inline(line: str, text_fn: Callable[[str], str] | None = None, br: str = "\n") -> str:
    parts: list[str] = []
    for is_code, text in code_segments(line):
        if is_code:
            parts.append(text)  # never rewrite inside inline code
            continue
        if text_fn is not None:
            text = text_fn(text)
        parts.append(_inline_text(text, br))
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Block rewriting.
# ---------------------------------------------------------------------------------------------

RULE = "───"  # a thematic break, drawn in text
_QUOTE_PREFIX = re.compile(r"^((?: {0,3}>[ \t]?)*)(.*)$", re.DOTALL)
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
_INDENTED_CODE = re.compile(r"^(?: {4}|\t| {1,3}\t)")
_LIST_ITEM = re.compile(r"^[ \t]*(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")
_TASK_ITEM = re.compile(r"^([ \t]*[-+*][ \t]+)\[([ xX])\](?=[ \t]|$)")
TABLE_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True, slots=True)
class Table:
    """A GFM table as the agent wrote it; ``lines`` is the range of lines of the rendered text
    (split at "\n") holding it flattened, where a final message may show it as a card."""

    header: list[str]
    aligns: list[str | None]
    rows: list[list[str]]
    lines: tuple[int, int]


@dataclass(slots=True)
class RenderedText:
    """Teams Markdown for the text, and the tables in it (``relay.teams.answer_card``)."""

    text: str
    tables: list[Table] = field(default_factory=list)


def _bold_line(content: str) -> str:
    """A heading as a bold line: Teams renders no headings on any client (§6.2)."""
    content = content.strip()
    if not content:
        return ""
    marker = content[:2]
    if marker in ("**", "__") and content.endswith(marker) and marker not in content[2:-2]:
        return _inline(content)  # "## **Title**" is already one bold run
    # Nested "**" would end the bold early; a heading is bold as a whole anyway.
    inner = _inline(content, lambda t: t.replace("**", "").replace("__", ""))
    return f"**{inner}**" if inner.strip() else ""


def is_paragraph_line(line: str) -> bool:
    """A line that continues or starts a paragraph (not a list, quote, heading, code)."""
    return bool(
        line.strip()
        and not line.startswith(("    ", "\t"))
        and not _LIST_ITEM.match(line)
        and not line.lstrip(" ").startswith(">")
        and not _ATX_HEADING.match(line)
        and match_fence_open(line) is None
    )


def _render_line(line: str) -> str:
    m = _QUOTE_PREFIX.match(line)
    prefix, rest = (m.group(1), m.group(2)) if m else ("", line)
    if _THEMATIC_BREAK.match(rest):
        # Rules are not rendered by Teams (§6.2). A line drawn in text keeps the separation
        # and the structure: dropping it would merge the lists on either side into one.
        return prefix + RULE
    heading = _ATX_HEADING.match(rest)
    if heading:
        return prefix + _bold_line(heading.group(1) or "")
    # Task lists are not rendered either: keep the state readable as a checkbox character.
    rest = _TASK_ITEM.sub(lambda t: t.group(1) + ("☐" if t.group(2) == " " else "☑"), rest)
    return prefix + _inline(rest)


def _split_cells(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return [cell.strip().replace("\\|", "|") for cell in _CELL_SPLIT.split(s)]


def _alignment(delimiter_cell: str) -> str | None:
    cell = delimiter_cell.strip()
    if cell.startswith(":") and cell.endswith(":"):
        return "Center"
    if cell.endswith(":"):
        return "Right"
    return None  # Left is the default


def _table_header(lines: list[str], i: int) -> list[str] | None:
    """The header cells if lines[i] starts a GFM pipe table (header, delimiter row), else None."""
    if i + 1 >= len(lines) or "|" not in lines[i] or not TABLE_DELIMITER.match(lines[i + 1]):
        return None
    header = _split_cells(lines[i])
    # GFM: the delimiter row must have as many cells as the header, or it is not a table.
    return header if len(header) == len(_split_cells(lines[i + 1])) else None


def _table_fallback(header: list[str], rows: list[list[str]]) -> list[str]:
    """Each row as one paragraph "**H1**: v1 · **H2**: v2".

    Chosen over a fenced monospace table because it renders on every client, wraps on phones and
    keeps links and emphasis inside cells; rows are separated by blank lines because single line
    breaks are not reliable in Teams Markdown.
    """
    out: list[str] = []
    heads = [_inline(h, br=" ").replace("**", "") for h in header]
    for row in rows:
        pairs = []
        for head, value in zip(heads, row, strict=True):
            value = _inline(value, br=" ").strip()
            if value:
                pairs.append(f"**{head}**: {value}" if head else value)
        if pairs:
            if out:
                out.append("")
            out.append(" · ".join(pairs))
    return out


def _render(md: str) -> RenderedText:
    # Control characters other than tab/newline have no place in a chat message; CR is folded
    # into LF so every later step sees one line ending.
    md = md.replace("\r\n", "\n").replace("\r", "\n")
    md = "".join(ch for ch in md if ch >= " " or ch in "\n\t")
    lines = md.split("\n")
    out: list[str] = []
    tables: list[Table] = []
    fence: Fence | None = None
    i = 0
    in_list = False  # an indented line after a list item continues the item, it is not code
    while i < len(lines):
        line = lines[i]
        if fence is not None:
            out.append(line)  # code is emitted verbatim, closing fence included
            if is_fence_close(line, fence):
                fence = None
            i += 1
            continue
        fence = match_fence_open(line)
        if fence is not None:
            in_list = in_list and bool(fence.indent)  # a fence at column 0 ends a list
            out.append(line)
            i += 1
            continue
        after_blank = i == 0 or not lines[i - 1].strip()
        if line.strip() and not line.startswith((" ", "\t")):
            in_list = bool(_LIST_ITEM.match(line)) or (in_list and not after_blank)
        elif _LIST_ITEM.match(line):
            in_list = True
        if after_blank and not in_list and _INDENTED_CODE.match(line):
            # An indented code block (CommonMark §4.4): verbatim, like a fenced one.
            while i < len(lines) and (_INDENTED_CODE.match(lines[i]) or not lines[i].strip()):
                out.append(lines[i])
                i += 1
            continue
        header = _table_header(lines, i)
        if header is not None:
            aligns = [_alignment(c) for c in _split_cells(lines[i + 1])]
            j = i + 2
            rows: list[list[str]] = []
            while j < len(lines) and lines[j].strip() and "|" in lines[j]:
                if match_fence_open(lines[j]) is not None:
                    break
                cells = _split_cells(lines[j])
                # GFM: missing cells are empty, excess cells are ignored.
                rows.append((cells + [""] * len(header))[: len(header)])
                j += 1
            start = len(out)
            out.extend(_table_fallback(header, rows))
            tables.append(Table(header, aligns, rows, (start, len(out))))
            i = j
            continue
        if i > 0 and _SETEXT_UNDERLINE.match(line) and is_paragraph_line(lines[i - 1]):
            # "Title\n===" is a setext heading. Bolding "Title" would rewrite a line that may
            # already have been streamed (§1.1 prefix rule), so the title stays as written and
            # the underline becomes the paragraph break it visually is.
            out.append("")
            i += 1
            continue
        out.append(_render_line(line))
        i += 1
    return RenderedText(text="\n".join(out), tables=tables)


def to_teams_markdown(md: str) -> RenderedText:
    """Render the agent's Markdown for Teams; total on any input, including partial streams."""
    try:
        return _render(md)
    except Exception:  # streaming must never fail on odd text; see the module docstring
        # Unreachable in tests (hypothesis checks), but a renderer bug must not kill a stream:
        # degrade to the raw text with HTML neutralised.
        return RenderedText(text=_TAG_START.sub("&lt;", md))
