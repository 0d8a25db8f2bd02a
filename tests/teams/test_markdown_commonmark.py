"""``relay.teams.markdown`` checked against a real CommonMark parser (markdown-it-py, tests only).

The conversion rewrites only what Teams cannot render (reference teams-platform.md §6.2):
headings become bold paragraphs, rules a line drawn in text, tables one paragraph per row, raw
HTML is shown as text. So, parsed by CommonMark, what the user sees must have the same blocks as
what the agent wrote (after exactly those mappings), and every code block and span keeps its bytes.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from markdown_it.token import Token

from relay.teams.markdown import to_teams_markdown

MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])

WORD = st.sampled_from(
    ["spooler", "print", "<ok>", "a<b", "x > y", "日本語", "😀", "Ünïcode", "&amp;", "snake_case"]
)
CODE = st.sampled_from(['print("<ok>")', "x = a**b  # <b>", "if a < b and c > d:", "  indented"])


@st.composite
def words(draw: st.DrawFn) -> str:
    parts = draw(st.lists(WORD, min_size=1, max_size=6))
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), f"`{draw(CODE).strip()}`")
    if draw(st.booleans()):
        parts.append(f"**{parts[0]}**")
    return " ".join(parts)


@st.composite
def block(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["para", "list", "heading", "fence", "indented", "quote", "rule"]))
    if kind == "list":
        return "\n".join(f"- {draw(words())}" for _ in range(draw(st.integers(1, 3))))
    if kind == "heading":
        return "#" * draw(st.integers(1, 6)) + " " + draw(words())
    if kind == "fence":
        return "```python\n" + "\n".join(draw(st.lists(CODE, min_size=1, max_size=3))) + "\n```"
    if kind == "indented":
        return "\n".join("    " + c for c in draw(st.lists(CODE, min_size=1, max_size=3)))
    if kind == "quote":
        return "> " + draw(words())
    if kind == "rule":
        return "---"
    return draw(words())


def _blocks(tokens: list[Token]) -> list[str]:
    """Top-level block kinds, with the conversion's documented mappings applied."""
    kinds: list[str] = []
    depth = 0
    for token in tokens:
        if depth == 0 and token.nesting >= 0:
            kind = token.type.removesuffix("_open")
            # A heading becomes a bold line, a rule a line drawn in text (Teams renders
            # neither), raw HTML the text it is.
            mapping = {"heading": "paragraph", "html_block": "paragraph", "hr": "paragraph"}
            kinds.append(mapping.get(kind, kind))
        depth += token.nesting
    return kinds


def _code(tokens: list[Token]) -> list[str]:
    found: list[str] = []
    for token in tokens:
        if token.type in ("fence", "code_block"):
            found.append(token.content)
        for child in token.children or []:
            if child.type == "code_inline":
                found.append(child.content)
    return found


@settings(max_examples=200, deadline=None)
@given(st.lists(block(), min_size=1, max_size=6))
@example(["- spooler", '```python\nprint("<ok>")\n```', '    print("<ok>")'])  # fence ends list
def test_what_the_user_sees_has_the_blocks_and_code_the_agent_wrote(blocks: list[str]) -> None:
    source = "\n\n".join(blocks)
    shown = to_teams_markdown(source).text
    wrote, sees = MD.parse(source), MD.parse(shown)
    assert _blocks(sees) == _blocks(wrote), (source, shown)
    assert _code(sees) == _code(wrote), (source, shown)


def test_indented_code_keeps_its_bytes() -> None:
    source = 'Run this:\n\n    print("<ok>")\n    x = a**b\n\nThen <b>check</b>.'
    shown = to_teams_markdown(source).text
    [code] = [t for t in MD.parse(shown) if t.type == "code_block"]
    assert code.content == 'print("<ok>")\nx = a**b\n'
    assert "&lt;b>check&lt;/b>" in shown  # HTML outside code is shown as text, not interpreted


def test_a_table_becomes_one_paragraph_per_row_and_code_cells_stay_code() -> None:
    source = (
        "| Method | Command |\n|---|---|\n"
        "| PowerShell | `Restart-Service Spooler` |\n| GUI | services.msc |"
    )
    tokens: list[Any] = MD.parse(to_teams_markdown(source).text)
    assert _blocks(tokens) == ["paragraph", "paragraph"]
    assert _code(tokens) == ["Restart-Service Spooler"]
