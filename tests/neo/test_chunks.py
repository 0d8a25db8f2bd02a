"""ReplyAssembler against real AI SDK v6 streams and hand-made edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from relay.devtools.neo_emulator_streams import read_sse_chunks
from relay.domain import ReplyOutcome
from relay.neo.chunk_parts import (
    humanize_tool_name,
    status_label,
    til_request_from_data,
    tool_label,
)
from relay.neo.chunks import ReplyAssembler, assemble


def test_full_fixture_matches_the_sdk_golden_message(aisdk_fixtures: Path) -> None:
    golden = json.loads((aisdk_fixtures / "full.final-message.json").read_text())
    expected = "\n\n".join(p["text"] for p in golden["parts"] if p["type"] == "text")

    reply = assemble(read_sse_chunks(aisdk_fixtures / "full.sse"))

    assert reply.text == expected
    assert reply.outcome is ReplyOutcome.COMPLETE
    assert reply.finish_reason == "stop"
    assert reply.metadata == golden["metadata"]
    assert reply.message_id  # from `start`, random per run
    assert [(s.source_id, s.url, s.title) for s in reply.sources] == [
        ("src1", "https://example.com/wx", "Example WX")
    ]
    tool = reply.tools["call_1"]
    assert (tool.tool_name, tool.state) == ("getWeather", "output-available")
    assert tool.input == {"city": "Berlin"}
    assert tool.output == {"city": "Berlin", "tempC": 21, "sky": "sunny"}
    # Non-transient data part replaced in place; the transient one is never stored.
    assert reply.data == {"data-status:status-1": {"phase": "done"}}
    assert "Thinking…" in reply.progress
    assert "Running Get weather…" in reply.progress
    assert "Searching…" in reply.progress
    assert "User wants weather" not in reply.text  # reasoning stays out of visible text


def test_error_fixture_keeps_partial_text(aisdk_fixtures: Path) -> None:
    reply = assemble(read_sse_chunks(aisdk_fixtures / "error.sse"))
    assert reply.outcome is ReplyOutcome.ERROR
    assert reply.text == "Partial ans"
    assert reply.error_text == "model error: rate limited"
    assert reply.finish_reason == "error"


def test_abort_fixture(aisdk_fixtures: Path) -> None:
    assembler = ReplyAssembler()
    for chunk in read_sse_chunks(aisdk_fixtures / "abort.sse"):
        assembler.feed(chunk)
    reply = assembler.reply
    assert assembler.done
    assert reply.outcome is ReplyOutcome.ABORTED
    assert reply.abort_reason == "user pressed stop"
    assert reply.text.startswith("w0 w1 ")
    assert reply.text.endswith("w15 ")


def test_raw_writer_fixture(aisdk_fixtures: Path) -> None:
    reply = assemble(read_sse_chunks(aisdk_fixtures / "raw-writer.sse"))
    assert reply.message_id == "msg-1"
    assert reply.text == "Hi"
    # An error after finish still fails the turn, as useChat does; the text is kept.
    assert reply.outcome is ReplyOutcome.ERROR
    assert reply.error_text == "An error occurred."
    assert reply.tools["c1"].tool_name == "lookup"
    assert reply.tools["c1"].output == {"hits": 3}
    assert [(f.url, f.media_type) for f in reply.files] == [
        ("data:text/plain;base64,SGk=", "text/plain")
    ]
    doc = reply.sources[0]
    assert (doc.source_id, doc.media_type, doc.title, doc.filename) == (
        "d1",
        "application/pdf",
        "Spec",
        "spec.pdf",
    )
    assert reply.metadata == {"model": "x"}
    assert "Searching…" in reply.progress


def test_every_fixture_assembles_without_skips(aisdk_fixtures: Path) -> None:
    for path in sorted(aisdk_fixtures.glob("*.sse")):
        assembler = ReplyAssembler()
        for chunk in read_sse_chunks(path):
            assembler.feed(chunk)
        assert assembler.skipped == 0, path.name
        assert assembler.done, path.name


def test_delta_without_start_and_reused_ids_across_steps() -> None:
    reply = assemble(
        [
            {"type": "text-delta", "id": "0", "delta": "Hello"},
            {"type": "text-delta", "id": "0", "delta": " there"},
            {"type": "finish-step"},
            {"type": "start-step"},
            {"type": "text-start", "id": "0"},
            {"type": "text-delta", "id": "0", "delta": "Second"},
            {"type": "text-end", "id": "0"},
        ]
    )
    assert reply.text_parts == ["Hello there", "Second"]
    assert reply.outcome is ReplyOutcome.INCOMPLETE


def test_interleaved_text_ids() -> None:
    reply = assemble(
        [
            {"type": "text-start", "id": "a"},
            {"type": "text-start", "id": "b"},
            {"type": "text-delta", "id": "a", "delta": "A1"},
            {"type": "text-delta", "id": "b", "delta": "B1"},
            {"type": "text-delta", "id": "a", "delta": "A2"},
        ]
    )
    assert reply.text_parts == ["A1A2", "B1"]


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "text-delta", "id": "t", "delta": 5},
        {"type": "text-delta", "id": None, "delta": "x"},
        {"type": "tool-input-start", "toolCallId": 1, "toolName": "x"},
        {"type": "source-url", "sourceId": "s", "url": ["x"]},
        {"type": "file", "url": "u"},
        {"type": 7},
        {"no": "type"},
    ],
)
def test_wrong_field_types_skip_the_chunk(bad: dict[str, Any]) -> None:
    assembler = ReplyAssembler()
    assembler.feed({"type": "text-delta", "id": "t", "delta": "ok"})
    assembler.feed(bad)
    assert assembler.reply.text == "ok"
    assert assembler.skipped == 1
    assert not assembler.reply.sources
    assert not assembler.reply.files


def test_unknown_types_and_fields_and_v7_types_are_tolerated() -> None:
    assembler = ReplyAssembler()
    chunks: list[dict[str, Any]] = [
        {"type": "start", "messageId": "m", "brandNew": {"x": 1}},
        {"type": "start-step"},
        {"type": "text-start", "id": "t", "futureField": True},
        {"type": "text-delta", "id": "t", "delta": "kept", "citations": []},
        {"type": "text-end", "id": "t"},
        {"type": "totally-new-chunk", "payload": 1},
        {"type": "custom", "kind": "x.y"},
        {"type": "reasoning-file", "url": "data:,", "mediaType": "text/plain"},
        {"type": "steering-message", "id": "s", "parts": []},
        {"type": "tool-approval-response", "approvalId": "nope", "approved": True},
        {"type": "finish", "finishReason": "interrupted", "unknown": 1},
    ]
    for chunk in chunks:
        assembler.feed(chunk)
    assert assembler.skipped == 0
    assert assembler.reply.text == "kept"
    assert assembler.reply.outcome is ReplyOutcome.COMPLETE


def test_reset_step_drops_the_current_steps_text() -> None:
    reply = assemble(
        [
            {"type": "start-step"},
            {"type": "text-delta", "id": "t", "delta": "step one"},
            {"type": "finish-step"},
            {"type": "start-step"},
            {"type": "text-delta", "id": "t", "delta": "discarded"},
            {"type": "reset-step"},
            {"type": "text-delta", "id": "t", "delta": "retry"},
        ]
    )
    assert reply.text_parts == ["step one", "retry"]


def test_tool_lifecycle_approval_and_errors() -> None:
    reply = assemble(
        [
            {"type": "tool-input-start", "toolCallId": "c", "toolName": "reset_password"},
            {"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": '{"user":"bob"}'},
            {
                "type": "tool-input-available",
                "toolCallId": "c",
                "toolName": "reset_password",
                "input": {"user": "bob"},
                "title": "Password reset",
            },
            {"type": "tool-approval-request", "approvalId": "ap1", "toolCallId": "c"},
            {"type": "tool-approval-request", "approvalId": "ap1", "toolCallId": "c"},
            {"type": "tool-output-denied", "toolCallId": "c"},
            {
                "type": "tool-input-error",
                "toolCallId": "bad",
                "toolName": "getWeather",
                "input": {"town": 1},
                "errorText": "invalid",
            },
            {"type": "tool-output-error", "toolCallId": "bad", "errorText": "tool failed"},
            {"type": "tool-output-available", "toolCallId": "p", "output": 1, "preliminary": True},
            {"type": "tool-output-available", "toolCallId": "p", "output": 2},
        ]
    )
    assert len(reply.approvals) == 1
    approval = reply.approvals[0]
    assert (approval.approval_id, approval.tool_call_id, approval.tool_name) == (
        "ap1",
        "c",
        "reset_password",
    )
    assert reply.tools["c"].state == "output-denied"
    assert reply.tools["bad"].state == "output-error"
    assert reply.tools["bad"].error_text == "tool failed"
    assert reply.tools["p"].output == 2
    assert "Password reset…" in reply.progress
    assert "Waiting for approval…" in reply.progress


def test_progress_labels_never_contain_tool_inputs_or_outputs() -> None:
    secret_input, secret_output = "hunter2-password", "ssn-123-45-6789"
    reply = assemble(
        [
            {"type": "start-step"},
            {"type": "reasoning-start", "id": "r"},
            {"type": "reasoning-delta", "id": "r", "delta": f"use {secret_input}"},
            {"type": "tool-input-start", "toolCallId": "c", "toolName": "setUserPassword"},
            {"type": "tool-input-delta", "toolCallId": "c", "inputTextDelta": secret_input},
            {
                "type": "tool-input-available",
                "toolCallId": "c",
                "toolName": "setUserPassword",
                "input": {"password": secret_input, "status": secret_input},
            },
            {"type": "tool-output-available", "toolCallId": "c", "output": {"ssn": secret_output}},
            {"type": "finish-step"},
            {"type": "start-step"},
        ]
    )
    joined = " | ".join(reply.progress)
    assert secret_input not in joined
    assert secret_output not in joined
    assert reply.progress == [
        "Working…",
        "Thinking…",
        "Running Set user password…",
    ]
    assert secret_input not in reply.text


def test_data_parts_status_labels_and_storage() -> None:
    long_text = "x" * 121
    reply = assemble(
        [
            {"type": "data-progress", "id": "p", "data": {"status": "Looking up your tickets"}},
            {"type": "data-progress", "id": "p", "data": {"status": "Looking up your tickets"}},
            {"type": "data-progress", "id": "p", "data": {"label": "Checking licences."}},
            {"type": "data-note", "data": {"text": long_text}},
            {"type": "data-status", "data": {"phase": "done"}},
            {"type": "data-ping", "data": {"message": "Almost there"}, "transient": True},
            {"type": "data-raw", "data": ["not", "a", "dict"]},
            {"type": "data-session-title", "data": {"title": "Printer trouble"}},
            {"type": "data-citation", "id": "c1", "data": {"title": "KB-12", "text": "Quote"}},
        ]
    )
    assert reply.progress == ["Looking up your tickets…", "Checking licences.", "Almost there…"]
    assert reply.data["data-progress:p"] == {"label": "Checking licences."}
    assert reply.data["data-status"] == {"phase": "done"}
    assert reply.data["data-raw"] == ["not", "a", "dict"]
    assert "data-ping" not in reply.data


@pytest.mark.parametrize(
    ("part_type", "data", "expected_id"),
    [
        ("data-til", {"til_request_id": 42, "description": "Reset MFA for Bob"}, "42"),
        ("data-til", "77", "77"),
        ("data-approval", {"id": "a-1", "title": "Approve?"}, "a-1"),
        ("data-til-request", {"request_id": 9}, "9"),
        ("data-approval-request", {"requestId": "r9"}, "r9"),
        ("data-neo-card", {"tilRequestId": "x5"}, "x5"),
        ("data-card", {"type": "TIL", "id": 12}, "12"),
        ("data-card", {"type": "approval", "request_id": "q"}, "q"),
    ],
)
def test_til_detection_accepts_documented_shapes(
    part_type: str, data: Any, expected_id: str
) -> None:
    approval = til_request_from_data(part_type, data)
    assert approval is not None
    assert approval.til_request_id == expected_id
    assert approval.approval_id == f"til-{expected_id}"


@pytest.mark.parametrize(
    ("part_type", "data"),
    [
        ("data-status", {"id": 5, "status": "working"}),
        ("data-card", {"type": "info", "id": 1}),
        ("data-til", {"nothing": True}),
        ("data-til", True),
        ("data-other", "123"),
    ],
)
def test_til_detection_rejects_other_parts(part_type: str, data: Any) -> None:
    assert til_request_from_data(part_type, data) is None


def test_til_part_becomes_one_approval_with_description() -> None:
    reply = assemble(
        [
            {"type": "data-til", "id": "t", "data": {"til_request_id": 42, "title": "Reset MFA"}},
            {"type": "data-til", "id": "t", "data": {"til_request_id": 42, "title": "Reset MFA?"}},
        ]
    )
    assert len(reply.approvals) == 1
    assert reply.approvals[0].description == "Reset MFA?"
    assert "Reset MFA" not in " ".join(reply.progress)


def test_label_helpers() -> None:
    assert humanize_tool_name("getWeather") == "get weather"
    assert humanize_tool_name("search_tickets") == "search tickets"
    assert humanize_tool_name("HTTPRequest") == "http request"
    assert tool_label("getWeather") == "Running Get weather…"
    assert tool_label("x", "Weather lookup") == "Weather lookup…"
    assert tool_label("searchDocumentation") == "Searching documentation…"
    assert tool_label("kb.search-docs") == "Running Kb search docs…"
    assert tool_label("x", "Searching documentation") == "Searching documentation…"
    assert tool_label("___") is None
    assert status_label({"phase": "searching"}) == "Searching…"
    assert status_label({"status": "Done"}) is None
    assert status_label("searching") is None


def test_outcome_precedence_and_metadata_merge() -> None:
    reply = assemble(
        [
            {"type": "start", "messageMetadata": {"a": {"x": 1}, "keep": 1}},
            {"type": "message-metadata", "messageMetadata": {"a": {"y": 2}}},
            {"type": "error", "errorText": "first"},
            {"type": "error", "errorText": "second"},
            {"type": "finish", "finishReason": "stop", "messageMetadata": {"a": {"x": 3}}},
            {"type": "abort"},
        ]
    )
    assert reply.metadata == {"a": {"x": 3, "y": 2}, "keep": 1}
    assert reply.error_text == "first"
    assert reply.outcome is ReplyOutcome.ABORTED


def test_sources_deduped_by_source_id() -> None:
    reply = assemble(
        [
            {"type": "source-url", "sourceId": "s", "url": "https://a"},
            {"type": "source-url", "sourceId": "s", "url": "https://b"},
        ]
    )
    assert [s.url for s in reply.sources] == ["https://a"]


def test_a_source_snippet_is_kept_for_the_citation_popover() -> None:
    reply = assemble(
        [
            {"type": "source-url", "sourceId": "a", "url": "https://x.io", "snippet": " A  b "},
            {
                "type": "source-url",
                "sourceId": "b",
                "url": "https://y.io",
                "providerMetadata": {"neo": {"excerpt": "From the KB"}},
            },
            {"type": "source-url", "sourceId": "c", "url": "https://z.io"},
        ]
    )
    assert [s.snippet for s in reply.sources] == ["A b", "From the KB", None]
