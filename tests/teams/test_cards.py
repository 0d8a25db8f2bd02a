"""Approval cards: Adaptive Card ≤ 1.5, the click data round trip, and every decided state."""

from __future__ import annotations

import json

import pytest

from relay.approvals import DecisionView, Outcome
from relay.domain import ApprovalRequest
from relay.teams.cards import CARD_CONTENT_TYPE, approval_card, decision_card, parse_click


def test_a_til_request_gets_approve_and_reject_buttons_that_parse_back() -> None:
    card = approval_card(ApprovalRequest("til-7", til_request_id="7", description="Reset MFA"))
    assert card["contentType"] == CARD_CONTENT_TYPE
    content = card["content"]
    assert tuple(int(p) for p in content["version"].split(".")) <= (1, 5)
    assert [parse_click(a["data"]) for a in content["actions"]] == [
        ("7", "approve", "Reset MFA"),
        ("7", "reject", "Reset MFA"),
    ]
    assert all(a["type"] == "Action.Submit" for a in content["actions"])


def test_a_long_description_is_cut_to_keep_the_card_small() -> None:
    card = approval_card(ApprovalRequest("til-8", til_request_id="8", description="x " * 1000))
    assert len(json.dumps(card)) < 3000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"action": "approve", "til_request_id": 42}, ("42", "approve", None)),
        ({"action": "reject", "til_request_id": " 9 "}, ("9", "reject", None)),
        ({"action": "maybe", "til_request_id": "9"}, None),
        ({"action": "approve"}, None),
        ({"action": "approve", "til_request_id": True}, None),
        ({"action": "approve", "til_request_id": ""}, None),
        ({"action": "rate_answer", "rating": "4"}, None),
        ("approve", None),
        (None, None),
    ],
)
def test_parse_click(value: object, expected: object) -> None:
    assert parse_click(value) == expected


def test_decided_cards_drop_the_buttons_refusals_keep_them() -> None:
    def view(outcome: Outcome, note: str | None = None) -> dict[str, object]:
        return decision_card(DecisionView("5", "Reset MFA", outcome, "Avery", note))["content"]

    approved = view(Outcome.APPROVED)
    assert "Approved by Avery" in json.dumps(approved, ensure_ascii=False)
    assert "actions" not in approved
    assert "actions" not in view(Outcome.REJECTED)
    assert "already decided" in json.dumps(view(Outcome.ALREADY_DECIDED))
    refused = view(Outcome.NOT_ALLOWED, "You're not allowed to decide this request.")
    assert "not allowed" in json.dumps(refused)
    assert len(refused["actions"]) == 2  # type: ignore[arg-type]
    assert len(view(Outcome.FAILED, "try again")["actions"]) == 2  # type: ignore[arg-type]


def test_an_approval_without_a_til_id_is_read_only() -> None:
    content = approval_card(ApprovalRequest("ap-1", tool_call_id="c1", tool_name="wipeDevice"))[
        "content"
    ]
    assert "actions" not in content
    assert "Wipe device" in json.dumps(content)  # the action in words, not the tool's name
