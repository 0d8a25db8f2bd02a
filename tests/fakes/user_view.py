"""What a Teams user ends up seeing in one conversation, for "nothing lost, nothing doubled" tests.

``TeamsConnectorEmulator.visible_text`` lists accepted ``message`` activities (updates applied in
place, a stream's final under its stream id); a stream a crashed relay never finished is still on
the user's screen with its last streamed text, so it is added here from the emulator's stream
table.
"""

from __future__ import annotations

import json
from typing import Any

from relay.devtools.teams_connector import TeamsConnectorEmulator
from relay.teams.cards import CARD_CONTENT_TYPE


def user_view(teams: TeamsConnectorEmulator, conversation_id: str) -> list[str]:
    """Every separately visible bubble's text: messages and finals, then unfinished streams."""
    shown = list(teams.visible_text(conversation_id))
    for stream in teams._streams.values():  # the emulator's record of streams
        if stream.conversation_id == conversation_id and not stream.finished and stream.text:
            shown.append(stream.text)
    return shown


def assert_each_once(shown: list[str], words: list[str]) -> None:
    """Each of ``words`` appears exactly once across everything the user sees, in order."""
    everything = "\n".join(shown)
    for word in words:
        assert everything.count(word) == 1, (word, everything.count(word), shown)
    positions = [everything.index(w) for w in words]
    if len(shown) == 1:
        assert positions == sorted(positions), shown


def posted_approval_cards(
    teams: TeamsConnectorEmulator, conversation_id: str
) -> list[dict[str, Any]]:
    """Activities *posted* into the conversation (updates are PUTs) carrying an approval card."""
    return [
        r.activity
        for r in teams.received
        if r.method == "POST"
        and r.status < 300
        and r.conversation_id == conversation_id
        and any(
            a.get("contentType") == CARD_CONTENT_TYPE and "Approval needed" in json.dumps(a)
            for a in r.activity.get("attachments") or []
        )
    ]
