"""Tables shown once, where they stand: a final answer from its first table on, as one card.

Teams renders no tables in Markdown text (reference teams-platform.md §6.2), and a message's
attachments show after its text, so a table card sent beside the text (with the table also
flattened into the text) showed every table twice, and out of place. The final message of an
answer with tables therefore carries the text *before* the first table as its text, and one
Adaptive Card (1.5, §6.3) holding the first table and everything after it in order: text blocks,
tables with columns sized to their content and code cells as code, and code blocks as verbatim
monospace runs (a ``TextRun`` is not Markdown, so code keeps its bytes). While streaming, tables
are flattened rows (``relay.teams.markdown``); the final replaces them.
"""

from __future__ import annotations

from typing import Any

from relay.teams.markdown import (
    ADAPTIVE_CARD_CONTENT_TYPE,
    ADAPTIVE_CARD_VERSION,
    BR,
    IMAGE,
    Fence,
    RenderedText,
    Table,
    code_segments,
    image_to_link,
    is_fence_close,
    match_fence_open,
)

__all__ = ["split_at_first_table", "table_element"]


def split_at_first_table(rendered: RenderedText) -> tuple[str, dict[str, Any] | None]:
    """``(text before the first table, card attachment with the rest)``; no tables: the whole
    text and None."""
    if not rendered.tables:
        return rendered.text, None
    lines = rendered.text.split("\n")
    head = "\n".join(lines[: rendered.tables[0].lines[0]]).rstrip()
    body: list[dict[str, Any]] = []
    pos = rendered.tables[0].lines[0]
    for table in rendered.tables:
        body += _text_elements(lines[pos : table.lines[0]])
        body.append(table_element(table))
        pos = table.lines[1]
    body += _text_elements(lines[pos:])
    card = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": ADAPTIVE_CARD_VERSION,
        "body": body,
    }
    return head, {"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "content": card}


def _text_elements(lines: list[str]) -> list[dict[str, Any]]:
    """Rendered Markdown lines as TextBlocks (Markdown subset) and code blocks as code."""
    out: list[dict[str, Any]] = []
    text: list[str] = []
    code: list[str] = []
    fence: Fence | None = None

    def flush_text() -> None:
        chunk = "\n".join(text).strip()
        if chunk:
            out.append({"type": "TextBlock", "text": chunk, "wrap": True})
        text.clear()

    for line in lines:
        if fence is not None:
            if is_fence_close(line, fence):
                out.append(_code_block("\n".join(code)))
                fence, code = None, []
            else:
                code.append(line)
            continue
        fence = match_fence_open(line)
        if fence is not None:
            flush_text()
        else:
            text.append(line)
    flush_text()
    if fence is not None and code:
        out.append(_code_block("\n".join(code)))  # an unclosed fence: its code still shows
    return out


def _code_block(code: str) -> dict[str, Any]:
    run = {"type": "TextRun", "text": code, "fontType": "Monospace"}
    return {
        "type": "Container",
        "style": "emphasis",
        "items": [{"type": "RichTextBlock", "inlines": [run]}],
    }


def _cell(text: str, bold: bool) -> dict[str, Any]:
    """A cell that is one code span shows as code (monospace, verbatim); other cells are
    TextBlocks, whose Markdown has no code spans (backticks dropped) and renders no HTML."""
    items: list[dict[str, Any]] = []
    segments = code_segments(text.strip())
    if len(segments) == 1 and segments[0][0]:
        run = {
            "type": "TextRun",
            "text": segments[0][1].strip("`").strip(),
            "fontType": "Monospace",
        }
        items.append({"type": "RichTextBlock", "inlines": [run]})
    elif text.strip():
        plain = "".join(
            t[1:-1].strip("`").strip() if is_code else IMAGE.sub(image_to_link, BR.sub(" ", t))
            for is_code, t in segments
        )
        block: dict[str, Any] = {"type": "TextBlock", "text": plain, "wrap": True}
        if bold:
            block["weight"] = "Bolder"
        items.append(block)
    return {"type": "TableCell", "items": items}


def _widths(rows: list[list[str]]) -> list[int]:
    """Relative column widths from the longest cell (4..40 characters): a command column is
    not squeezed to wrap over four lines beside a one-word column."""
    return [max(4, min(40, max(len(row[i].strip()) for row in rows))) for i in range(len(rows[0]))]


def table_element(table: Table) -> dict[str, Any]:
    """An Adaptive Card ``Table`` element (schema 1.5) for one GFM table."""
    columns: list[dict[str, Any]] = []
    for align, width in zip(table.aligns, _widths([table.header, *table.rows]), strict=False):
        column: dict[str, Any] = {"width": width}
        if align:
            column["horizontalCellContentAlignment"] = align
        columns.append(column)
    rows = [
        {"type": "TableRow", "cells": [_cell(c, bold) for c in row]}
        for bold, row in [(True, table.header), *((False, r) for r in table.rows)]
    ]
    return {
        "type": "Table",
        "columns": columns,
        "rows": rows,
        "firstRowAsHeader": True,
        "showGridLines": True,
    }
