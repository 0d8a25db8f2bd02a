"""Turn AI SDK v6 UI-message-stream chunks into one :class:`relay.domain.Reply`.

Neo only says its SSE tail carries "Vercel AI SDK v6 envelopes" (neo-chat-api.md §a.4 [TAIL]), so
this module re-implements what the SDK's own client (``processUIMessageStream``) does with them,
following ai-sdk-v6-stream.md §2 (every chunk type) and §3 (reassembly and the "Python consumer
sketch"), and keeps renderers away from raw chunks. It is deliberately forgiving, because the
stream is the one part of Neo's contract that is not documented: unknown chunk types (including v7
ones) and unknown fields are ignored, a chunk whose required fields have the wrong type is skipped
whole, and nothing here raises. It also derives short progress labels for the Teams "informative"
updates — from tool *names* and status-like data parts only, never from tool inputs or outputs;
reading those out of a single chunk (and TIL approvals, source passages) is
``relay.neo.chunk_parts``' job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from relay.domain import ApprovalRequest, FilePart, Reply, ReplyOutcome, Source, ToolCall
from relay.neo.chunk_parts import snippet, status_label, til_request_from_data, tool_label

log = logging.getLogger(__name__)

# Chunks after which a turn is over (the stream may still carry a few more, see events.py).
TERMINAL_TYPES = frozenset({"finish", "abort", "error"})
THINKING = "Thinking…"
# Part names that carry content, not status (a session title, a citation…): never a label.
_CONTENT_PARTS = ("title", "citation", "source", "usage", "feedback")
# v7 chunk types (ai-sdk-v6-stream.md §2 "Version differences") that carry nothing for Teams.
_IGNORED_TYPES = {"custom", "reasoning-file", "steering-message"}


class _Skip(Exception):
    """A chunk whose required fields are missing or of the wrong type."""


def _req(chunk: dict[str, Any], key: str) -> str:
    value = chunk.get(key)
    if not isinstance(value, str):
        raise _Skip(key)
    return value


def _opt(chunk: dict[str, Any], key: str) -> str | None:
    value = chunk.get(key)
    return value if isinstance(value, str) else None


def _deep_merge(target: dict[str, Any], source: Any) -> None:
    """The SDK deep-merges start/message-metadata/finish metadata into ``message.metadata``."""
    if not isinstance(source, dict):
        return
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


class ReplyAssembler:
    """Feed chunks in arrival order; read :attr:`reply` at any time.

    Usage::

        assembler = ReplyAssembler()
        async for chunk in tail_turn(...):
            assembler.feed(chunk)
        render(assembler.reply)

    Outcome: ``ABORTED`` after an ``abort``; else ``ERROR`` after an ``error`` chunk or a
    ``finish`` with ``finishReason: "error"``; else ``COMPLETE`` once ``finish`` was seen; else
    ``INCOMPLETE``. Text is kept in every case (ai-sdk-v6-stream.md §3 "What ends a turn").
    ``reset-step`` (v7) drops the text parts of the current step; tools, sources and files already
    seen are kept.

    ``reply.progress`` gets, de-duplicated and in order: "Working…" at the first step (a step
    number means nothing to a user), "Thinking…" on reasoning, :func:`tool_label` on
    tool-input-start/-available, "Waiting for approval…" on approvals, and :func:`status_label` of
    non-TIL ``data-*`` parts whose name does not mention title/citation/source/usage/feedback.
    """

    def __init__(self) -> None:
        self._reply = Reply()
        self._open_text: dict[str, int] = {}  # text id -> index in text_parts, per step
        self._step_start = 0  # index of the current step's first text part
        self._steps = 0
        self._tool_input_text: dict[str, str] = {}  # streamed partial input: never shown
        self._finished = self._errored = self._aborted = False
        self.reasoning_seen = False
        self.skipped = 0  # malformed chunks skipped

    @property
    def reply(self) -> Reply:
        return self._reply

    @property
    def done(self) -> bool:
        """A terminal chunk (``finish``, ``error`` or ``abort``) has been seen."""
        return self._finished or self._errored or self._aborted

    def feed(self, chunk: dict[str, Any]) -> None:
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        if not isinstance(kind, str):
            self.skipped += 1
            log.debug("neo chunk without a string type skipped")
            return
        handler = _HANDLERS.get(kind)
        if handler is None and kind.startswith("data-"):
            handler = ReplyAssembler._data
        if handler is None:
            if kind not in _IGNORED_TYPES:
                log.debug("neo chunk of unknown type %r ignored", kind)
            return
        try:
            handler(self, chunk)
        except _Skip as exc:
            self.skipped += 1
            log.debug("neo %s chunk skipped: bad or missing field %s", kind, exc)
        self._reply.outcome = self._outcome()

    def _outcome(self) -> ReplyOutcome:
        if self._aborted:
            return ReplyOutcome.ABORTED
        if self._errored or self._reply.finish_reason == "error":
            return ReplyOutcome.ERROR
        return ReplyOutcome.COMPLETE if self._finished else ReplyOutcome.INCOMPLETE

    def _label(self, label: str | None) -> None:
        if label and label not in self._reply.progress:
            self._reply.progress.append(label)

    # -- message and steps ----------------------------------------------------------------------

    def _start(self, chunk: dict[str, Any]) -> None:
        # Data parts may precede `start`; unlike readUIMessageStream we never drop them (§3).
        message_id = _opt(chunk, "messageId")
        if message_id:
            self._reply.message_id = message_id
        _deep_merge(self._reply.metadata, chunk.get("messageMetadata"))

    def _start_step(self, chunk: dict[str, Any]) -> None:
        self._steps += 1
        self._step_start = len(self._reply.text_parts)
        if self._steps == 1:
            self._label("Working…")  # later steps keep the label of what they do (a tool)

    def _finish_step(self, chunk: dict[str, Any]) -> None:
        # The SDK resets its open-part maps here, so providers may reuse ids in the next step.
        self._open_text.clear()

    def _reset_step(self, chunk: dict[str, Any]) -> None:
        del self._reply.text_parts[self._step_start :]
        self._open_text.clear()

    def _metadata(self, chunk: dict[str, Any]) -> None:
        _deep_merge(self._reply.metadata, chunk.get("messageMetadata"))

    def _finish(self, chunk: dict[str, Any]) -> None:
        self._reply.finish_reason = _opt(chunk, "finishReason") or self._reply.finish_reason
        _deep_merge(self._reply.metadata, chunk.get("messageMetadata"))
        self._finished = True

    def _error(self, chunk: dict[str, Any]) -> None:
        # The first error is the one useChat surfaces; a malformed one still marks the failure.
        if self._reply.error_text is None:
            self._reply.error_text = _opt(chunk, "errorText") or "An error occurred."
        self._errored = True

    def _abort(self, chunk: dict[str, Any]) -> None:
        self._reply.abort_reason = _opt(chunk, "reason") or self._reply.abort_reason
        self._aborted = True

    # -- text and reasoning ---------------------------------------------------------------------

    def _text_start(self, chunk: dict[str, Any]) -> None:
        text_id = _req(chunk, "id")
        self._reply.text_parts.append("")
        self._open_text[text_id] = len(self._reply.text_parts) - 1

    def _text_delta(self, chunk: dict[str, Any]) -> None:
        text_id, delta = _req(chunk, "id"), _req(chunk, "delta")
        index = self._open_text.get(text_id)
        if index is None:  # the SDK would throw; we open the part instead (§3 sketch)
            self._reply.text_parts.append("")
            index = self._open_text[text_id] = len(self._reply.text_parts) - 1
        self._reply.text_parts[index] += delta

    def _text_end(self, chunk: dict[str, Any]) -> None:
        self._open_text.pop(_req(chunk, "id"), None)

    def _reasoning_chunk(self, chunk: dict[str, Any]) -> None:
        _req(chunk, "id")
        if chunk.get("type") == "reasoning-delta":
            _req(chunk, "delta")  # validated like text, but never kept: users never see it
        self.reasoning_seen = True
        self._label(THINKING)

    # -- tools ----------------------------------------------------------------------------------

    def _tool(self, tool_call_id: str, tool_name: str | None) -> ToolCall:
        tool = self._reply.tools.get(tool_call_id)
        if tool is None:
            tool = ToolCall(tool_call_id=tool_call_id, tool_name=tool_name or "")
            self._reply.tools[tool_call_id] = tool
        elif tool_name and not tool.tool_name:
            tool.tool_name = tool_name
        return tool

    def _tool_input_start(self, chunk: dict[str, Any]) -> None:
        call_id, name, title = (
            _req(chunk, "toolCallId"),
            _req(chunk, "toolName"),
            _opt(chunk, "title"),
        )
        tool = self._tool(call_id, name)
        tool.state, tool.title = "input-streaming", title or tool.title
        self._label(tool_label(name, tool.title))

    def _tool_input_delta(self, chunk: dict[str, Any]) -> None:
        call_id, delta = _req(chunk, "toolCallId"), _req(chunk, "inputTextDelta")
        self._tool_input_text[call_id] = self._tool_input_text.get(call_id, "") + delta

    def _tool_input_available(self, chunk: dict[str, Any]) -> None:
        # May arrive without tool-input-start (tool calls that were not streamed, §2).
        call_id, name, title = (
            _req(chunk, "toolCallId"),
            _req(chunk, "toolName"),
            _opt(chunk, "title"),
        )
        tool = self._tool(call_id, name)
        tool.state, tool.input, tool.title = (
            "input-available",
            chunk.get("input"),
            title or tool.title,
        )
        self._tool_input_text.pop(call_id, None)
        self._label(tool_label(name, tool.title))

    def _tool_input_error(self, chunk: dict[str, Any]) -> None:
        call_id, name = _req(chunk, "toolCallId"), _req(chunk, "toolName")
        error_text = _opt(chunk, "errorText")
        tool = self._tool(call_id, name)
        tool.state, tool.input, tool.error_text = "output-error", chunk.get("input"), error_text

    def _tool_output_available(self, chunk: dict[str, Any]) -> None:
        # `preliminary: true` outputs repeat with newer values; the last one wins either way.
        tool = self._tool(_req(chunk, "toolCallId"), _opt(chunk, "toolName"))
        tool.state, tool.output = "output-available", chunk.get("output")

    def _tool_output_error(self, chunk: dict[str, Any]) -> None:
        tool = self._tool(_req(chunk, "toolCallId"), _opt(chunk, "toolName"))
        tool.state, tool.error_text = "output-error", _opt(chunk, "errorText") or tool.error_text

    def _tool_output_denied(self, chunk: dict[str, Any]) -> None:
        self._tool(_req(chunk, "toolCallId"), None).state = "output-denied"

    def _tool_approval_request(self, chunk: dict[str, Any]) -> None:
        approval_id, call_id = _req(chunk, "approvalId"), _req(chunk, "toolCallId")
        tool = self._tool(call_id, None)
        tool.state = "approval-requested"
        if all(a.approval_id != approval_id for a in self._reply.approvals):
            self._reply.approvals.append(
                ApprovalRequest(
                    approval_id=approval_id,
                    tool_call_id=call_id,
                    tool_name=tool.tool_name or None,
                    description=tool.title,
                )
            )
        self._label("Waiting for approval…")

    def _tool_approval_response(self, chunk: dict[str, Any]) -> None:  # v7
        approval_id = _req(chunk, "approvalId")
        for approval in self._reply.approvals:
            tool = self._reply.tools.get(approval.tool_call_id or "")
            if approval.approval_id == approval_id and tool is not None:
                tool.state = "approval-responded"

    # -- sources, files, data -------------------------------------------------------------------

    def _add_source(self, source: Source) -> None:
        if all(s.source_id != source.source_id for s in self._reply.sources):
            self._reply.sources.append(source)

    def _source_url(self, chunk: dict[str, Any]) -> None:
        self._add_source(
            Source(
                source_id=_req(chunk, "sourceId"),
                url=_req(chunk, "url"),
                title=_opt(chunk, "title"),
                snippet=snippet(chunk),
            )
        )

    def _source_document(self, chunk: dict[str, Any]) -> None:
        self._add_source(
            Source(
                source_id=_req(chunk, "sourceId"),
                media_type=_req(chunk, "mediaType"),
                title=_opt(chunk, "title"),
                filename=_opt(chunk, "filename"),
                snippet=snippet(chunk),
            )
        )

    def _file(self, chunk: dict[str, Any]) -> None:
        self._reply.files.append(
            FilePart(url=_req(chunk, "url"), media_type=_req(chunk, "mediaType"))
        )

    def _data(self, chunk: dict[str, Any]) -> None:
        kind, part_id, data = _req(chunk, "type"), _opt(chunk, "id"), chunk.get("data")
        approval = til_request_from_data(kind, data)
        if approval is not None:
            self._upsert_til(approval)
        elif not any(word in kind for word in _CONTENT_PARTS):
            self._label(status_label(data))
        # Transient parts are "deliver to onData only, never store" (§2 `data-<name>` row);
        # a stored part with the same type+id is replaced in place.
        if chunk.get("transient") is not True:
            self._reply.data[f"{kind}:{part_id}" if part_id else kind] = data

    def _upsert_til(self, approval: ApprovalRequest) -> None:
        for existing in self._reply.approvals:
            if existing.til_request_id == approval.til_request_id:
                existing.description = approval.description or existing.description
                return
        self._reply.approvals.append(approval)
        self._label("Waiting for approval…")


_HANDLERS: dict[str, Callable[[ReplyAssembler, dict[str, Any]], None]] = {
    "start": ReplyAssembler._start,
    "start-step": ReplyAssembler._start_step,
    "finish-step": ReplyAssembler._finish_step,
    "reset-step": ReplyAssembler._reset_step,
    "message-metadata": ReplyAssembler._metadata,
    "finish": ReplyAssembler._finish,
    "error": ReplyAssembler._error,
    "abort": ReplyAssembler._abort,
    "text-start": ReplyAssembler._text_start,
    "text-delta": ReplyAssembler._text_delta,
    "text-end": ReplyAssembler._text_end,
    "reasoning-start": ReplyAssembler._reasoning_chunk,
    "reasoning-delta": ReplyAssembler._reasoning_chunk,
    "reasoning-end": ReplyAssembler._reasoning_chunk,
    "tool-input-start": ReplyAssembler._tool_input_start,
    "tool-input-delta": ReplyAssembler._tool_input_delta,
    "tool-input-available": ReplyAssembler._tool_input_available,
    "tool-input-error": ReplyAssembler._tool_input_error,
    "tool-output-available": ReplyAssembler._tool_output_available,
    "tool-output-error": ReplyAssembler._tool_output_error,
    "tool-output-denied": ReplyAssembler._tool_output_denied,
    "tool-approval-request": ReplyAssembler._tool_approval_request,
    "tool-approval-response": ReplyAssembler._tool_approval_response,
    "source-url": ReplyAssembler._source_url,
    "source-document": ReplyAssembler._source_document,
    "file": ReplyAssembler._file,
}


def assemble(chunks: Iterable[dict[str, Any]]) -> Reply:
    """Feed every chunk to a fresh :class:`ReplyAssembler` and return its reply."""
    assembler = ReplyAssembler()
    for chunk in chunks:
        assembler.feed(chunk)
    return assembler.reply
