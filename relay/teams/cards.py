"""Adaptive Cards for technician approvals: the request, and the same card once it is decided.

Teams renders Adaptive Cards up to version 1.5 (teams-platform.md §6.3), so the cards declare 1.5
and use nothing newer. The buttons are classic ``Action.Submit``: Teams delivers a click as a
``message`` activity whose ``value`` is the button's ``data`` and whose ``replyToId`` is the card's
own message id (§3), which is what lets the relay replace the card in place with the outcome.
``data`` carries ``action`` and ``til_request_id`` (plus a short summary, so the replaced card can
still say what was decided without any lookup). Pure functions: JSON in, JSON out.
"""

from __future__ import annotations

from typing import Any

from relay.approvals import DecisionView, Outcome
from relay.domain import ApprovalRequest
from relay.neo.chunk_parts import humanize_tool_name

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.5"
MAX_SUMMARY = 300  # keeps the card (and the Action.Submit data echoed back) small

_DEFAULT_SUMMARY = "The agent wants to take an action that needs a technician's approval."
_NO_DECISION_API = (
    "This approval can't be decided from Teams: Neo offers no way to record it here. "
    "Please decide it in Neo, where the agent's pending approvals are listed."
)


def _summary(text: str | None) -> str:
    clean = " ".join((text or "").split())
    if not clean:
        return _DEFAULT_SUMMARY
    return clean if len(clean) <= MAX_SUMMARY else clean[: MAX_SUMMARY - 1] + "…"


def _card(body: list[dict[str, Any]], actions: list[dict[str, Any]]) -> dict[str, Any]:
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return {"contentType": CARD_CONTENT_TYPE, "content": card}


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _buttons(til_request_id: str, summary: str) -> list[dict[str, Any]]:
    def button(title: str, action: str, style: str) -> dict[str, Any]:
        data = {"action": action, "til_request_id": til_request_id, "summary": summary}
        return {"type": "Action.Submit", "title": title, "style": style, "data": data}

    return [button("Approve", "approve", "positive"), button("Reject", "reject", "destructive")]


def approval_title(approval: ApprovalRequest) -> str:
    """The action in words: its description, else a readable form of the tool's name."""
    text = " ".join((approval.description or "").split())
    if not text and approval.tool_name:
        text = humanize_tool_name(approval.tool_name)
    text = text[:1].upper() + text[1:]
    return (text if len(text) <= 120 else text[:119] + "…") or "An action by the agent"


def decidable_approvals(approvals: list[ApprovalRequest]) -> list[ApprovalRequest]:
    """One card per action: a tool approval that a TIL request also describes is left out.

    Neo announces a technician approval as a TIL request (decidable from Teams) and the agent's
    tool call may carry its own AI SDK approval request (not decidable here) for the same
    action. Same action: the same words, the tool's name in the TIL text, or one of each.
    """
    tils = [a for a in approvals if a.til_request_id is not None]
    tools = [a for a in approvals if a.til_request_id is None]
    if not tils or not tools:
        return approvals
    if len(tils) == 1 and len(tools) == 1:
        return tils
    til_texts = [approval_title(t).lower() for t in tils]
    kept = [
        a
        for a in tools
        if not any(
            approval_title(a).lower() == t or (a.tool_name and humanize_tool_name(a.tool_name) in t)
            for t in til_texts
        )
    ]
    return [a for a in approvals if a.til_request_id is not None or a in kept]


def approval_card(approval: ApprovalRequest) -> dict[str, Any]:
    """The card attachment for a pending approval (read-only when it has no TIL request id)."""
    summary = _summary(approval.description or approval_title(approval))
    body = [_text("Approval needed", weight="Bolder", size="Medium"), _text(summary)]
    if approval.tool_name:
        action = humanize_tool_name(approval.tool_name)
        action = action[:1].upper() + action[1:]
        body.append({"type": "FactSet", "facts": [{"title": "Action", "value": action}]})
    if approval.til_request_id is None:
        body.append(_text(_NO_DECISION_API, isSubtle=True))
        return _card(body, [])
    return _card(body, _buttons(approval.til_request_id, summary))


_HEADLINES = {
    Outcome.APPROVED: "✅ Approved",
    Outcome.REJECTED: "❌ Rejected",
    Outcome.ALREADY_DECIDED: "This request was already decided.",
    Outcome.NOT_ALLOWED: "Approval needed",
    Outcome.FAILED: "Approval needed",
}


def decision_card(view: DecisionView) -> dict[str, Any]:
    """The card that replaces an approval card after a click.

    A decision (or "already decided") removes the buttons for everyone. "Not allowed" and a failed
    call keep them, with a note, because another technician may still decide, or a retry succeed.
    """
    summary = _summary(view.summary)
    headline = _HEADLINES[view.outcome]
    if view.outcome in (Outcome.APPROVED, Outcome.REJECTED) and view.actor:
        headline = f"{headline} by {view.actor}"
    body = [_text(headline, weight="Bolder", size="Medium"), _text(summary)]
    if view.note:
        body.append(_text(view.note, color="Attention"))
    keep_buttons = view.outcome in (Outcome.NOT_ALLOWED, Outcome.FAILED)
    return _card(body, _buttons(view.til_request_id, summary) if keep_buttons else [])


def parse_click(value: Any) -> tuple[str, str, str | None] | None:
    """``(til_request_id, action, summary)`` from a card click's ``value``/``data``, else None."""
    if not isinstance(value, dict):
        return None
    action, rid = value.get("action"), value.get("til_request_id")
    if action not in ("approve", "reject") or isinstance(rid, bool):
        return None
    if not isinstance(rid, str | int) or not str(rid).strip():
        return None
    summary = value.get("summary")
    return str(rid).strip(), str(action), summary if isinstance(summary, str) else None
