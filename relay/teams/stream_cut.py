"""Where a streamed answer may be cut: word by word, never inside an open span, always a prefix.

Teams accepts a streamed update only if it contains everything streamed before, and the final
only if it starts with it (reference teams-platform.md §1.1, 403 "Request streamed content should
contain the previously streamed content"). So at every paced update the streamed text is the
rendering of everything the agent wrote so far, cut back only as far as needed to stay balanced
and prefix-stable:

* inside the last, unfinished line: after a word (a space, or a CJK character whose follower is
  known and not a combining mark), and never inside ``**…**``, ``*…*``/``_…_``, ``~~…~~``,
  `` `code` ``, a link or image ``[..](..)``, an HTML tag or autolink ``<…>`` or an entity ``&…;``.
  Python strings hold code points, so a surrogate pair cannot be split; a combining sequence ends
  before the space we cut after;
* a line whose kind is still open is held whole: a heading (``#``), a possible rule, fence,
  task-list box, setext underline, indented code or table row;
* tables by whole rows (the rendering flattens each row into its own paragraph);
* a fenced code block is **held until its closing fence**. Streaming it line by line would keep the
  prefix rule (code is copied verbatim) but Teams renders an unclosed fence as raw backticks and
  then the rest of the message as code-ish text (§6.2 "a code fence renders only after its closing
  ``` line arrives"), and closing it ourselves would break the prefix rule for the next update.

The cost of one update is proportional to the text since the last *neutral boundary* (a blank
line outside code whose next line starts at column 0, where ``relay.teams.markdown`` restarts with
no state), not to the whole answer: everything before it is rendered once and kept.
"""

from __future__ import annotations

import re
import unicodedata

from relay.teams.markdown import (
    TABLE_DELIMITER,
    is_fence_close,
    match_fence_open,
    to_teams_markdown,
)

__all__ = ["StreamCutter", "inline_cut"]

_QUOTE = re.compile(r"^(?: {0,3}>[ \t]?)*")
_MAYBE_RULE_OR_UNDERLINE = re.compile(r"^ {0,3}(?:[-*_=+][ \t]*)*$")
_MAYBE_FENCE = re.compile(r"^[ \t]*(?:`{3,}|~{3,}|[`~]{1,2}$)")
_LIST_MARKER = re.compile(r"^[ \t]*(?:[-+*]|\d{1,9}[.)])(?:[ \t]+|$)")
_ENTITY_CHAR = re.compile(r"[#A-Za-z0-9]")
_MAX_TAG = 200  # a "<" open this long is not a tag: stop holding text back for it


def _ends_word(line: str, i: int) -> bool:
    """A cut before ``line[i]`` ends a word: after a space, or after a CJK character whose
    follower is known and does not belong to it (CJK text has no spaces between words)."""
    before = line[i - 1]
    if before.isspace():
        return True
    return _is_wide(before) and i < len(line) and not _joins_previous(line[i])


def _is_wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F") and ch.isalnum()


def _joins_previous(ch: str) -> bool:
    """A combining mark, joiner or variation selector belongs to the character before it."""
    return unicodedata.combining(ch) > 0 or ch in "\u200d\ufe0e\ufe0f" or "\ufe00" <= ch <= "\ufe0f"


def inline_cut(line: str) -> int:
    """The longest prefix of an unfinished line that ends after a word with every span closed."""
    stack: list[tuple[str, int, int]] = []  # (kind, start, run length)
    best = 0
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        top = stack[-1][0] if stack else ""
        if top == "`":
            run = _run(line, i, "`") if ch == "`" else 0
            if run == stack[-1][2]:
                stack.pop()
            i += max(run, 1)
        elif top == "<":
            if ch == ">":
                stack.pop()
            elif (ch.isspace() and ":" in line[stack[-1][1] : i]) or i - stack[-1][1] > _MAX_TAG:
                stack.pop()  # "<https://…" with a space is no autolink; a very long "<" no tag
            i += 1
        elif top == "&":
            if ch == ";":
                stack.pop()
                i += 1
            elif _ENTITY_CHAR.match(ch) and i - stack[-1][1] <= 32:
                i += 1
            else:
                stack.pop()  # not an entity after all: look at this character again
        elif ch == "\\":
            i += 2
        elif ch == "`":
            run = _run(line, i, "`")
            stack.append(("`", i, run))
            i += run
        elif ch in "*_~":
            i = _emphasis(line, i, stack)
        elif ch == "[" or (ch == "!" and line[i + 1 : i + 2] == "["):
            stack.append(("[", i, 1))
            i += 1 if ch == "[" else 2
        elif ch == "]" and top == "[":
            if i + 1 >= n:
                i += 1  # "[1]" or "[text](": the next character decides
                continue
            start = stack.pop()[1]
            if line[i + 1] == "(":
                stack.append(("(", start, 1))
                i += 2
            else:
                i += 1
        elif ch == "(" and top == "(":
            stack.append(("(", stack[-1][1], 1))
            i += 1
        elif ch == ")" and top == "(":
            stack.pop()
            i += 1
        elif ch == "<" and (i + 1 >= n or line[i + 1].isalpha() or line[i + 1] in "/!?"):
            stack.append(("<", i, 1))
            i += 1
        elif ch == "&" and (i + 1 >= n or _ENTITY_CHAR.match(line[i + 1])):
            stack.append(("&", i, 1))
            i += 1
        else:
            i += 1
        if not stack and 0 < i <= n and _ends_word(line, i):
            best = i
    return best


def _run(line: str, i: int, ch: str) -> int:
    j = i
    while j < len(line) and line[j] == ch:
        j += 1
    return j - i


def _emphasis(line: str, i: int, stack: list[tuple[str, int, int]]) -> int:
    """One run of ``*``, ``_`` or ``~`` (CommonMark flanking rules, simplified)."""
    ch = line[i]
    run = _run(line, i, ch)
    end = i + run
    before = line[i - 1] if i else " "
    if end >= len(line):
        # The next character is not known yet: treat the run as an opener and wait for it.
        stack.append((ch, i, run))
        return end
    after = line[end]
    if ch == "~" and run != 2:
        return end  # only "~~" is strikethrough
    left = not after.isspace()
    right = not before.isspace()
    if ch == "_":
        left, right = left and not before.isalnum(), right and not after.isalnum()
    same = [k for k, entry in enumerate(stack) if entry[0] == ch]
    if right and same:
        del stack[same[-1] :]  # closes the latest opener; anything opened after it was literal
    elif left:
        stack.append((ch, i, run))
    return end


class StreamCutter:
    """Turns the growing answer into the rendered text to stream, incrementally (module doc)."""

    def __init__(self, limit_bytes: int) -> None:
        self._limit = limit_bytes
        self._src = ""  # the answer's source up to the neutral boundary
        self._out = ""  # its rendering
        self.last = ""  # the last text returned (what may be streamed now)
        self._full = False  # the byte limit was reached: the streamed text grows no more

    def advance(self, answer: str) -> str:
        """The rendered text safe to stream for ``answer`` ("" when there is none yet).

        Never shorter than the previous result while ``answer`` only grows; if the agent rewrote
        text already consumed, everything is recomputed and the caller checks the prefix rule.
        """
        if not answer.startswith(self._src):
            self._src, self._out = "", ""
        tail = answer[len(self._src) :]
        cut, neutral = _safe_cut(tail)
        if neutral:
            head = to_teams_markdown(tail[:neutral]).text
            self._src += tail[:neutral]
            self._out += head
            tail, cut = tail[neutral:], cut - neutral
        if self._full:
            return self.last
        text = (self._out + to_teams_markdown(tail[:cut]).text).rstrip()
        if _utf16(text) > self._limit:
            # Any prefix of a streamable text is a prefix of the final too: keep what fits, cut
            # back to a safe point, and stop growing (the rest goes in the final's pieces).
            fits = text.encode("utf-16-le", "surrogatepass")[: self._limit & ~1]
            fits_text = fits.decode("utf-16-le", "ignore")
            text = fits_text[: _safe_cut(fits_text)[0]].rstrip()
            self._full = True
        if text.startswith(self.last):
            self.last = text
        return self.last


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass"))


def _safe_cut(text: str) -> tuple[int, int]:
    """``(cut, neutral)``: how much of ``text`` may be rendered now, and the last neutral
    boundary at or before it (0 when none)."""
    lines = text.split("\n")
    partial = lines.pop()  # "" when the text ends with a newline
    cut = neutral = pos = 0
    fence_at: int | None = None  # start of an open fenced block
    fence = None
    in_table = skip_delimiter = False
    for k, line in enumerate(lines):
        start, pos = pos, pos + len(line) + 1
        nxt = lines[k + 1] if k + 1 < len(lines) else None  # None: not complete yet
        if fence is not None:
            if is_fence_close(line, fence):
                fence, fence_at = None, None
                cut = pos
            continue
        if skip_delimiter:
            skip_delimiter, cut = False, pos
            continue
        if in_table and line.strip() and "|" in line:
            cut = pos  # a whole row: it renders as a paragraph of its own
            continue
        in_table = False
        fence = match_fence_open(line)
        if fence is not None:
            fence_at = start
            continue
        if not line.strip():
            cut = pos
            following = nxt if nxt is not None else partial
            if following[:1] and not following[:1].isspace():
                neutral = pos
            continue
        if "|" in line:
            if nxt is None:
                return cut, min(neutral, cut)  # a table header, or not: the next line decides
            if TABLE_DELIMITER.match(nxt):
                in_table = skip_delimiter = True
                continue
        cut = pos
    if fence_at is not None:
        return fence_at, min(neutral, fence_at)
    if partial and not in_table and not skip_delimiter and not _holds_partial(partial):
        cut = pos + inline_cut(partial)
    return cut, min(neutral, cut)


def _holds_partial(line: str) -> bool:
    """An unfinished line whose kind (heading, rule, fence, code, table, task box) is open."""
    if line.startswith(("    ", "\t")) or "|" in line:
        return True
    rest = line[_QUOTE.match(line).end() :]  # type: ignore[union-attr]
    stripped = rest.lstrip(" ")
    if stripped.startswith("#") or _MAYBE_FENCE.match(rest) or _MAYBE_RULE_OR_UNDERLINE.match(rest):
        return True
    marker = _LIST_MARKER.match(rest)
    return bool(marker) and len(rest) - marker.end() < 4  # type: ignore[union-attr]
