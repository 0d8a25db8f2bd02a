"""What a Teams user ends up seeing in one conversation, for "nothing lost, nothing doubled" tests.

``TeamsConnectorEmulator.visible_text`` lists accepted ``message`` activities (updates applied in
place, a stream's final under its stream id); a stream a crashed relay never finished is still on
the user's screen with its last streamed text, so it is added here from the emulator's stream
table.
"""

from __future__ import annotations

from relay.devtools.teams_connector import TeamsConnectorEmulator


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
