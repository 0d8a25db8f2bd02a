"""Word-by-word stream cuts: every update a prefix of the next and of the final, spans closed.

The property test writes random Markdown answers (emphasis, code spans, fences, links, lists,
tables, headings, emoji, CJK), feeds them to :class:`relay.teams.stream_cut.StreamCutter` in random
deltas, and checks the rule Teams enforces with a 403 (teams-platform.md §1.1) plus what a reader
sees: a real CommonMark parser (markdown-it-py, tests only) finds no stray span delimiter in the
text of any update, so no update ends inside ``**…**``, `` `…` `` or a link.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from relay.teams.markdown import to_teams_markdown
from relay.teams.stream_cut import StreamCutter, inline_cut

WORDS = st.sampled_from(
    ["alpha", "beta", "Spooler", "print", "日本語の", "テキスト", "😀", "👍🏽", "naïve", "x2", "é"]
)


@st.composite
def inline(draw: st.DrawFn) -> str:
    words = draw(st.lists(WORDS, min_size=1, max_size=4))
    text = " ".join(words)
    kind = draw(st.sampled_from(["plain", "bold", "em", "under", "code", "link", "strike"]))
    return {
        "plain": text,
        "bold": f"**{text}**",
        "em": f"*{text}*",
        "under": f"_{text}_",
        "code": f"`{text} <ok> **x**`",
        "link": f"[{text}](https://example.com/{words[0].encode().hex()})",
        "strike": f"~~{text}~~",
    }[kind]


@st.composite
def paragraph(draw: st.DrawFn) -> str:
    return " ".join(draw(st.lists(inline(), min_size=1, max_size=8)))


@st.composite
def block(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["para", "para", "list", "heading", "fence", "table", "quote"]))
    if kind == "list":
        items = draw(st.lists(paragraph(), min_size=1, max_size=3))
        return "\n".join(f"- {item}" for item in items)
    if kind == "heading":
        return "## " + draw(paragraph())
    if kind == "fence":
        body = draw(st.lists(paragraph(), min_size=1, max_size=3))
        return "```python\n" + "\n".join(body) + "\n```"
    if kind == "table":
        rows = draw(st.lists(st.tuples(paragraph(), paragraph()), min_size=1, max_size=3))
        return "| Method | Command |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    if kind == "quote":
        return "> " + draw(paragraph())
    return draw(paragraph())


@st.composite
def answer_and_deltas(draw: st.DrawFn) -> tuple[str, list[int]]:
    answer = "\n\n".join(draw(st.lists(block(), min_size=1, max_size=5)))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(answer) - 1)), max_size=30))))
    return answer, [*cuts, len(answer)]


_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _stray_delimiters(text: str) -> list[str]:
    """Span delimiters a CommonMark parser left as literal text (an unclosed span)."""
    stray = []
    for token in _MD.parse(text):
        for child in token.children or []:
            if child.type == "text":
                stray += [d for d in ("**", "`", "~~", "[", "](") if d in child.content]
                if "*" in child.content.replace("**", ""):
                    stray.append("*")
    return stray


@settings(max_examples=400, deadline=None)
@given(answer_and_deltas())
def test_every_update_is_a_prefix_of_the_next_and_of_the_final(
    case: tuple[str, list[int]],
) -> None:
    answer, ends = case
    final = to_teams_markdown(answer).text
    cutter = StreamCutter(limit_bytes=1 << 30)
    previous = ""
    for end in ends:
        update = cutter.advance(answer[:end])
        assert update.startswith(previous), (answer[:end], previous, update)
        assert final.startswith(update), (answer[:end], update, final)
        assert _stray_delimiters(update) == [], (answer[:end], update)
        previous = update


def test_a_single_paragraph_grows_word_by_word() -> None:
    words = [f"word{n}" for n in range(20)]
    cutter = StreamCutter(limit_bytes=1 << 20)
    seen = []
    text = ""
    for word in words:
        text += word + " "
        seen.append(cutter.advance(text))
    assert seen[0] == "word0"
    assert seen[-1] == " ".join(words)
    assert len(set(seen)) == len(words)  # every word made the text grow


def test_inline_cut_stops_before_open_spans() -> None:
    assert inline_cut("Hello **wor") == len("Hello ")
    assert inline_cut("see `code <b") == len("see ")
    assert inline_cut("a [link](https://x") == len("a ")
    assert inline_cut("a <https://example.com") == len("a ")
    assert inline_cut("x &amp") == len("x ")
    assert inline_cut("snake_case stays ") == len("snake_case stays ")
    assert inline_cut("2 * 3 = 6 ") == len("2 * 3 = 6 ")
    assert inline_cut("**done** next ") == len("**done** next ")


def test_fenced_code_is_held_until_it_closes() -> None:
    cutter = StreamCutter(limit_bytes=1 << 20)
    assert cutter.advance("Run this:\n\n```ps\nRestart-Service ") == "Run this:"
    assert cutter.advance("Run this:\n\n```ps\nRestart-Service Spooler\n```\n") == (
        "Run this:\n\n```ps\nRestart-Service Spooler\n```"
    )


def test_headings_and_setext_lines_wait_for_their_line() -> None:
    cutter = StreamCutter(limit_bytes=1 << 20)
    assert cutter.advance("# Restart the spo") == ""
    assert cutter.advance("# Restart the spooler\n\nFirst ") == "**Restart the spooler**\n\nFirst"
    cutter = StreamCutter(limit_bytes=1 << 20)
    assert cutter.advance("Title\n") == "Title"
    assert cutter.advance("Title\n==") == "Title"
    assert cutter.advance("Title\n===\nText ") == "Title\n\nText"


def test_the_byte_limit_stops_growth() -> None:
    cutter = StreamCutter(limit_bytes=20)
    assert cutter.advance("abcd efgh ") == "abcd efgh"
    assert cutter.advance("abcd efgh ijkl mnop ") == "abcd efgh"
    assert cutter.advance("abcd efgh ijkl mnop qrst ") == "abcd efgh"
    cutter = StreamCutter(limit_bytes=30)  # over the limit at once: what fits, at a word
    assert cutter.advance("abcd efgh ijkl mnop qrst uvwx ") == "abcd efgh ijkl"
