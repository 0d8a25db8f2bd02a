"""Rendering the agent's Markdown for Teams: constructs, splitting, citations, AI entity, files."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.domain import FilePart, Reply, Source
from relay.teams.answer_card import split_at_first_table
from relay.teams.citations import feedback_comment
from relay.teams.markdown import is_fence_close, match_fence_open
from relay.teams.render import (
    NO_TEXT_ANSWER,
    ai_message_entity,
    build_citations,
    feedback_channel_data,
    file_links,
    final_message_payload,
    split_for_teams,
    to_teams_markdown,
    utf16_size,
)

LIMIT = 80_000


def render(md: str) -> str:
    return to_teams_markdown(md).text


def fence_balanced(piece: str) -> bool:
    fence = None
    for line in piece.split("\n"):
        if fence is None:
            fence = match_fence_open(line)
        elif is_fence_close(line, fence):
            fence = None
    return fence is None


# ---------------------------------------------------------------------------------------------
# Inline and block constructs.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "md",
    [
        "**bold** and __bold__",
        "*italic* and _italic_",
        "~~struck~~",
        "use `pip install x` here",
        "[docs](https://example.com/a?b=1)",
    ],
)
def test_inline_formatting_is_kept(md: str) -> None:
    assert render(md) == md


def test_headings_become_bold_lines() -> None:
    md = "# Title\n## Sub *one* ##\n###### Six\n#hashtag\n\nSetext\n====="
    assert render(md).split("\n") == [
        "**Title**",
        "**Sub *one***",
        "**Six**",
        "#hashtag",
        "",
        "Setext",  # a setext title stays as streamed: bolding it later would break the prefix
        "",
    ]


def test_heading_with_bold_inside_is_not_double_bolded() -> None:
    assert render("# The **big** one") == "**The big one**"
    assert render("## **Already bold**") == "**Already bold**"
    assert render("## **a** and **b**") == "**a and b**"


def test_horizontal_rule_becomes_a_drawn_line() -> None:
    assert render("above\n\n---\n\nbelow") == "above\n\n───\n\nbelow"
    assert render("* * *") == "───"
    assert render("- a\n\n---\n\n- b") == "- a\n\n───\n\n- b"  # two lists stay two


def test_lists_are_kept_including_nesting() -> None:
    md = "- one\n  - nested\n    - deeper\n- two\n\n1. first\n2. second\n   1. inner"
    assert render(md) == md


def test_task_list_items_become_checkboxes() -> None:
    assert render("- [ ] open\n- [x] done") == "- ☐ open\n- ☑ done"


def test_blockquote_is_kept_and_its_heading_bolded() -> None:
    assert render("> quoted *text*\n> # Head") == "> quoted *text*\n> **Head**"


def test_code_block_is_verbatim_with_language() -> None:
    md = (
        "Intro\n\n```python\n# not a heading\n<b>not html</b>\n| a | b |\n|---|---|\n"
        "![img](x.png)\n---\n```\nafter"
    )
    out = render(md)
    assert (
        "```python\n# not a heading\n<b>not html</b>\n| a | b |\n|---|---|\n![img](x.png)\n---\n```"
        in out
    )
    assert to_teams_markdown(md).tables == []


def test_indented_and_tilde_fences_are_code_too() -> None:
    md = "1. step\n   ```bash\n   echo <b>\n   ```\n~~~~\n# x\n~~~~"
    assert render(md) == md


def test_inline_code_is_untouched() -> None:
    assert render("x `<script>alert(1)</script>` y") == "x `<script>alert(1)</script>` y"
    assert render("``a ` <b> ``") == "``a ` <b> ``"


def test_raw_html_is_escaped_to_text() -> None:
    out = render("<script>alert(1)</script> <b>bold</b> <at>Everyone</at> <!-- c -->")
    assert "<" not in out.replace("&lt;", "")
    assert (
        out
        == "&lt;script>alert(1)&lt;/script> &lt;b>bold&lt;/b> &lt;at>Everyone&lt;/at> &lt;!-- c -->"
    )


def test_comparison_signs_and_autolinks() -> None:
    assert render("a < b and c > d") == "a < b and c > d"
    assert render("see <https://x.io/a>") == "see [https://x.io/a](https://x.io/a)"
    assert render("line<br>break") == "line\nbreak"


def test_image_becomes_link() -> None:
    assert render('![a cat](https://x.io/cat.png "Cat")') == "[a cat](https://x.io/cat.png)"
    assert render("![](https://x.io/c.png)") == "[image](https://x.io/c.png)"
    assert render("[![logo](https://x.io/l.png)](https://x.io)") == "[logo](https://x.io)"


def test_control_characters_and_crlf() -> None:
    assert render("a\r\nb\x00\x1b[0m\tc") == "a\nb[0m\tc"


# ---------------------------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------------------------

TABLE = (
    "Intro\n\n| Name | Size | Note |\n|:-----|-----:|:----:|\n"
    "| a.txt | 1 KB | `<ok>` |\n| b | 2 |\n\nAfter"
)


def test_a_table_is_shown_once_in_place_in_the_final() -> None:
    [payload] = final_message_payload(Reply(text_parts=[TABLE]))
    assert payload.text == "Intro"  # the text before the table; the card goes on from there
    assert payload.in_place  # not the streamed (flattened) text: a stream replaces it
    [attachment] = payload.attachments
    card = json.loads(json.dumps(attachment["content"]))  # plain JSON
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.5"
    table, after = card["body"]
    assert after == {"type": "TextBlock", "text": "After", "wrap": True}  # after the table
    assert table["type"] == "Table"
    assert table["firstRowAsHeader"] is True
    assert [c.get("horizontalCellContentAlignment") for c in table["columns"]] == [
        None,
        "Right",
        "Center",
    ]
    assert [c["width"] for c in table["columns"]] == [5, 4, 6]  # sized to the content
    header, first, second = table["rows"]
    assert [c["items"][0]["text"] for c in header["cells"]] == ["Name", "Size", "Note"]
    # A code cell is code: a verbatim monospace run, not Markdown.
    assert first["cells"][2]["items"] == [
        {
            "type": "RichTextBlock",
            "inlines": [{"type": "TextRun", "text": "<ok>", "fontType": "Monospace"}],
        }
    ]
    assert second["cells"][2]["items"] == []
    assert "**Name**" not in json.dumps(card)  # the flattened rows are gone: the table once
    assert all(len(row["cells"]) == len(table["columns"]) for row in table["rows"])


def test_code_after_a_table_stays_code_in_the_card() -> None:
    md = "| Method | Command |\n|---|---|\n| PS | `Restart-Service -Name Spooler -Force` |\n\n"
    md += "Then:\n\n```powershell\nGet-Service *spool* | Format-List\n```\n\nDone [1]."
    [payload] = final_message_payload(Reply(text_parts=[md]))
    assert payload.text == ""  # the answer starts with the table
    body = payload.attachments[0]["content"]["body"]
    assert [b["type"] for b in body] == ["Table", "TextBlock", "Container", "TextBlock"]
    code = body[2]["items"][0]["inlines"][0]
    assert code == {
        "type": "TextRun",
        "text": "Get-Service *spool* | Format-List",
        "fontType": "Monospace",
    }
    widths = [c["width"] for c in body[0]["columns"]]
    assert widths[1] > 4 * widths[0]  # the command's column is not squeezed


def test_table_has_readable_text_fallback() -> None:
    out = render(TABLE)
    assert "|" not in out
    assert "**Name**: a.txt · **Size**: 1 KB · **Note**: `<ok>`\n\n**Name**: b · **Size**: 2" in out
    assert out.startswith("Intro\n\n")
    assert out.endswith("\n\nAfter")


def test_pipes_without_delimiter_row_are_not_a_table() -> None:
    assert render("a | b\nc | d") == "a | b\nc | d"
    assert to_teams_markdown("a | b\n---").tables == []


# ---------------------------------------------------------------------------------------------
# Streaming: partial input.
# ---------------------------------------------------------------------------------------------


def test_unclosed_fence_during_streaming_does_not_raise() -> None:
    for md in ("```", "```py\nprint(1)\n# <b>", "| a |\n|--", "**bo", "`x", "![a](", "<scr"):
        assert isinstance(render(md), str)
    assert render("```py\n# x <b>") == "```py\n# x <b>"


def test_prefix_ending_at_blank_line_renders_to_a_prefix() -> None:
    # The cumulative streaming rule (§1.1): what was streamed must stay a prefix of the final text.
    full = "# T\n\nSome <b>x</b>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\n# c\n```\n\nend"
    for cut in [m.end() for m in re.finditer(r"\n\n", full)]:
        assert render(full).startswith(render(full[:cut]))


# ---------------------------------------------------------------------------------------------
# Splitting.
# ---------------------------------------------------------------------------------------------


def test_short_text_is_one_piece() -> None:
    assert split_for_teams("hello") == ["hello"]
    assert split_for_teams("  \n\n ") == []


def test_300kb_answer_splits_at_paragraphs_and_preserves_content() -> None:
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 40 for i in range(280)]
    text = "\n\n".join(paragraphs)
    assert utf16_size(text) > 300_000
    pieces = split_for_teams(text)
    assert len(pieces) >= 4
    assert all(utf16_size(p) <= LIMIT for p in pieces)
    assert "".join(pieces) == text
    assert all(p.startswith("Paragraph ") for p in pieces)  # cut at paragraph boundaries


def test_huge_code_block_is_closed_and_reopened() -> None:
    body = [f"    value_{i} = compute({i})  # <b>" for i in range(6000)]
    text = "Before\n\n```python\n" + "\n".join(body) + "\n```\n\nAfter"
    assert utf16_size(text) > 200_000
    pieces = split_for_teams(text)
    assert len(pieces) >= 3
    for n, piece in enumerate(pieces):
        assert utf16_size(piece) <= LIMIT
        assert fence_balanced(piece), f"piece {n} ends inside a code block"
        if n > 0:
            assert piece.startswith("```python\n")
        if n < len(pieces) - 1:
            assert piece.endswith("```")
    code_lines = [line for p in pieces for line in p.split("\n") if line.startswith("    value_")]
    assert code_lines == body
    assert pieces[0].startswith("Before\n\n```python\n")
    assert pieces[-1].endswith("```\n\nAfter")


def test_code_block_that_fits_is_moved_whole() -> None:
    code = "```\n" + "x = 1\n" * 3000 + "```\n"
    text = "a" * 30_000 + "\n\n" + code
    pieces = split_for_teams(text)
    assert pieces == ["a" * 30_000 + "\n\n", code]


def test_enormous_line_is_hard_split() -> None:
    text = "word " * 40_000
    pieces = split_for_teams(text)
    assert all(utf16_size(p) <= LIMIT for p in pieces)
    assert "".join(pieces) == text
    assert all(p.endswith(" ") for p in pieces[:-1])  # cut after a space


def test_emoji_and_cjk_count_as_utf16() -> None:
    emoji = "😀" * 30_000  # 2 UTF-16 units each: 120,000 bytes
    assert utf16_size(emoji) == 120_000
    pieces = split_for_teams(emoji)
    assert len(pieces) == 2
    assert all(utf16_size(p) <= LIMIT for p in pieces)
    assert "".join(pieces) == emoji
    cjk = "漢字かな" * 12_000  # 48,000 BMP characters: 96,000 bytes
    assert len(split_for_teams(cjk)) == 2
    assert split_for_teams("😀" * 20_000) == ["😀" * 20_000]  # exactly 80,000 bytes


def test_limit_too_small_is_rejected() -> None:
    with pytest.raises(ValueError, match="limit_bytes"):
        split_for_teams("x", 10)


# ---------------------------------------------------------------------------------------------
# Citations, AI entity, feedback.
# ---------------------------------------------------------------------------------------------


def test_existing_markers_are_kept_and_only_cited_sources_used() -> None:
    sources = [Source("s1", url="https://a.io/1", title="One"), Source("s2", url="https://b.io")]
    text, citations = build_citations("Fact [2]. Code `x[1]`.", sources)
    assert text == "Fact [2]. Code `x[1]`."
    assert [c["position"] for c in citations] == [2]
    assert citations[0] == {
        "@type": "Claim",
        "position": 2,
        "appearance": {
            "@type": "DigitalDocument",
            "name": "b.io",
            "abstract": "b.io",  # no title, no snippet: never the URL a second time
            "url": "https://b.io",
            "keywords": ["b.io"],
        },
    }


def test_markers_are_appended_when_missing() -> None:
    sources = [
        Source("a", url="https://a.io"),
        Source("b", url="https://a.io"),
        Source("c", title="T"),
    ]
    text, citations = build_citations("Answer.", sources)
    assert text == "Answer.\n\n[1] [3]"  # the duplicate URL is listed once
    assert [c["position"] for c in citations] == [1, 3]
    assert build_citations("```\ncode", sources[:1])[0] == "```\ncode\n```\n\n[1]"


def test_citations_limits_and_truncation() -> None:
    sources = [
        Source(f"s{i}", url=f"https://x.io/{i}", title="T" * 300, media_type="application/pdf" * 3)
        for i in range(30)
    ]
    text, citations = build_citations("text", sources)
    assert len(citations) == 20
    assert text.endswith(" ".join(f"[{n}]" for n in range(1, 21)))
    for c in citations:
        appearance = c["appearance"]
        assert len(appearance["name"]) <= 80
        assert len(appearance["abstract"]) <= 160
        assert len(appearance["keywords"]) <= 3
        assert all(len(k) <= 28 for k in appearance["keywords"])
        assert appearance["name"].endswith("…")


def test_citation_popover_headline_is_the_title_and_summary_a_snippet() -> None:
    kb = "https://learn.example.com/windows/print-spooler"
    sources = [
        Source("s1", url=kb, title="Restart the Print Spooler", snippet="Open services.msc …"),
        Source("s2", url=kb + "/2", title="Print Spooler troubleshooting"),
    ]
    _, (with_snippet, titled) = build_citations("Restart it [1] [2].", sources)
    assert with_snippet["appearance"]["name"] == "Restart the Print Spooler"
    assert with_snippet["appearance"]["abstract"] == "Open services.msc …"
    assert with_snippet["appearance"]["url"] == kb
    assert titled["appearance"]["name"] == titled["appearance"]["abstract"]
    assert kb not in titled["appearance"]["abstract"]


@pytest.mark.parametrize(
    ("action_value", "comment"),
    [
        ({"reaction": "dislike", "feedback": '{"feedbackText": "Wrong printer"}'}, "Wrong printer"),
        ({"reaction": "dislike", "feedback": "Wrong printer"}, "Wrong printer"),  # plain text
        ({"reaction": "dislike", "feedback": {"feedbackText": "Wrong printer"}}, "Wrong printer"),
        ({"reaction": "dislike", "feedbackText": "Wrong printer"}, "Wrong printer"),
        ({"reaction": "dislike", "feedback": '"Wrong printer"'}, "Wrong printer"),
        ({"reaction": "like"}, ""),
    ],
)
def test_feedback_comment_is_kept_however_teams_sends_it(
    action_value: dict[str, Any], comment: str
) -> None:
    assert feedback_comment(action_value) == comment


def test_source_document_without_url() -> None:
    _, (citation,) = build_citations("x", [Source("d", filename="report.pdf", url="javascript:x")])
    assert citation["appearance"] == {
        "@type": "DigitalDocument",
        "name": "report.pdf",
        "abstract": "report.pdf",
    }


def test_ai_entity_always_present_and_single() -> None:
    entity = ai_message_entity([])
    assert entity == {
        "type": "https://schema.org/Message",
        "@type": "Message",
        "@context": "https://schema.org",
        "@id": "",
        "additionalType": ["AIGeneratedContent"],
    }
    payloads = final_message_payload(Reply(text_parts=["hi"]))
    assert all(len(p.entities) == 1 for p in payloads)
    assert payloads[0].entities[0]["additionalType"] == ["AIGeneratedContent"]


def test_feedback_channel_data_shape() -> None:
    assert feedback_channel_data() == {"feedbackLoop": {"type": "default"}}
    assert feedback_channel_data("custom") == {"feedbackLoop": {"type": "custom"}}
    with pytest.raises(ValueError, match="feedback mode"):
        feedback_channel_data("thumbs")


# ---------------------------------------------------------------------------------------------
# Files and the final payload.
# ---------------------------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 100


def test_file_links() -> None:
    small = "data:image/png;base64," + base64.b64encode(PNG).decode()
    big = "data:image/png;base64," + base64.b64encode(PNG + b"\0" * (1024 * 1024)).decode()
    files = [
        FilePart("https://files.io/out/report%20final.pdf", "application/pdf"),
        FilePart(small, "image/png"),
        FilePart(big, "image/png"),
        FilePart("data:text/csv;base64,YSxi", "text/csv"),
        FilePart("data:image/png;base64,bm90IGEgcG5n", "image/png"),  # not really a PNG
    ]
    attachments, text = file_links(files)
    assert attachments == [{"contentType": "image/png", "contentUrl": small, "name": "image-1.png"}]
    assert text.split("\n\n") == [
        "[report final.pdf](https://files.io/out/report%20final.pdf)",
        "(file omitted: image/png)",
        "(file omitted: text/csv)",
        "(file omitted: image/png)",
    ]


def test_final_payload_pieces_citations_feedback_and_cards() -> None:
    long_text = "\n\n".join(f"Para {i} [1] " + "x" * 2000 for i in range(40)) + "\n\nEnd [2]"
    reply = Reply(
        text_parts=[long_text, TABLE],
        sources=[Source("a", url="https://a.io"), Source("b", url="https://b.io")],
        files=[FilePart("data:image/png;base64," + base64.b64encode(PNG).decode(), "image/png")],
    )
    payloads = final_message_payload(reply)
    text_payloads = [p for p in payloads if p.text]
    assert len(text_payloads) >= 2
    for p in payloads:
        cards = [a for a in p.attachments if "content" in a]  # base64 images do not count (§6.1)
        wire = json.dumps([p.entities, p.channel_data, cards], ensure_ascii=False)
        size = utf16_size(p.text) + utf16_size(wire)
        assert size <= LIMIT
        assert len(p.entities) == 1
        assert p.entities[0]["@type"] == "Message"
    assert [c["position"] for c in text_payloads[0].entities[0]["citation"]] == [1]
    assert [c["position"] for c in text_payloads[-1].entities[0]["citation"]] == [1, 2]
    assert [p.channel_data for p in text_payloads] == [{}] * (len(text_payloads) - 1) + [
        {"feedbackLoop": {"type": "default"}}
    ]
    # One bubble: the image and the table card ride on the last text piece, nothing after it.
    assert payloads == text_payloads
    card, image = text_payloads[-1].attachments  # the tables' card continues the text
    assert image["contentType"] == "image/png"
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["content"]["version"] == "1.5"
    assert all(p.attachments == [] for p in text_payloads[:-1])


def test_empty_reply_gets_neutral_text() -> None:
    (payload,) = final_message_payload(Reply(), feedback_mode=None)
    assert payload.text == NO_TEXT_ANSWER
    assert payload.channel_data == {}
    (payload,) = final_message_payload(
        Reply(files=[FilePart("https://x.io/a.zip", "application/zip")])
    )
    assert payload.text == "[a.zip](https://x.io/a.zip)"


def test_final_payload_closes_unclosed_fence() -> None:
    (payload,) = final_message_payload(Reply(text_parts=["```py\nx = 1"]))
    assert payload.text == "```py\nx = 1\n```"


# ---------------------------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------------------------

_TOKENS = st.sampled_from(
    [
        "\n",
        "\n\n",
        " ",
        "a",
        "word ",
        "é",
        "😀",
        "漢",
        "|",
        "-",
        "#",
        "# ",
        "**",
        "_",
        "`",
        "```",
        "```py\n",
        "\n```\n",
        "~~~",
        ">",
        "> ",
        "<b>",
        "</b>",
        "<at>",
        "![x](u)",
        "[1]",
        "|---|",
        "\r",
        "1. ",
        "- ",
        "\t",
        "\\",
        "*",
        "<br>",
        "\x00",
    ]
)
_MARKDOWN = st.lists(_TOKENS | st.text(max_size=5), max_size=80).map("".join)


@settings(max_examples=200, deadline=None)
@given(_MARKDOWN)
def test_to_teams_markdown_is_total(md: str) -> None:
    rendered = to_teams_markdown(md)
    assert isinstance(rendered.text, str)
    head, card = split_at_first_table(rendered)  # the final's tables-in-place card, too
    assert rendered.text.startswith(head)
    json.dumps(card)


@settings(max_examples=200, deadline=None)
@given(_MARKDOWN, st.integers(min_value=64, max_value=600))
def test_split_respects_limit_and_keeps_text(md: str, limit: int) -> None:
    text = md * 4
    pieces = split_for_teams(text, limit)
    assert all(utf16_size(p) <= limit for p in pieces)
    joined = "".join(pieces)
    original = [ch for ch in text if not ch.isspace()]
    produced = iter(ch for ch in joined if not ch.isspace())
    # Every original character appears in order; extras can only be close/reopen fence lines.
    assert all(ch in produced for ch in original)
    if "`" not in text and "~" not in text:
        assert [ch for ch in joined if not ch.isspace()] == original
    if fence_balanced(text) and all(4 * utf16_size(line) < limit for line in text.split("\n")):
        # Hard-splitting a line longer than the limit is a last resort that may cut "```x```".
        assert all(fence_balanced(p) for p in pieces)


@settings(max_examples=200, deadline=None)
@given(_MARKDOWN)
def test_render_of_a_paragraph_prefix_is_a_prefix(md: str) -> None:
    # What made it to Teams while streaming must stay a prefix of the final text (§1.1).
    full = render(md)
    for m in re.finditer(r"\n\n", md):
        assert full.startswith(render(md[: m.end()]))
