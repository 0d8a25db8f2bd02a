"""The turn journal's state machine: which state may follow which, and the check that says so.

A turn's journal row is what a restarted relay trusts (DESIGN.md invariant 5), so a write that
skips a step — tailing a turn never posted, posting a turn already posted, reopening a finished
one — would make recovery repeat or lose a visible effect. Every state change the pipeline makes
goes through :func:`check_transition`; an illegal one raises :class:`IllegalTransition`, a bug
rather than an upstream condition. Plain data, no I/O: ``relay.turns`` and ``relay.commands`` can
both use it.
"""

from __future__ import annotations

from relay.domain import Turn, TurnState

_R, _S, _P, _T = (
    TurnState.RECEIVED,
    TurnState.SESSION_READY,
    TurnState.POSTED,
    TurnState.STREAMING,
)
_D, _F, _C = TurnState.DELIVERED, TurnState.FAILED, TurnState.CANCELLED

# Which state may follow which. Failing or cancelling is possible from anywhere unfinished; a final
# state is never left (a re-delivered or resumed final turn is simply not run again). RECEIVED →
# DELIVERED exists for command turns (/help, /reset, install greeting: relay.commands), which are
# answered without a Neo turn; :func:`check_transition` refuses it for ordinary messages.
TRANSITIONS: dict[TurnState, frozenset[TurnState]] = {
    _R: frozenset({_S, _D, _F, _C}),
    _S: frozenset({_P, _F, _C}),
    _P: frozenset({_T, _F, _C}),
    _T: frozenset({_D, _F, _C}),
    _D: frozenset(),
    _F: frozenset(),
    _C: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A journal write that the state machine forbids: a bug, never an upstream condition."""


def check_transition(turn: Turn, new: TurnState) -> None:
    """Raise :class:`IllegalTransition` unless ``turn`` may move from its state to ``new``.

    Staying in an unfinished state is allowed (progress checkpoints rewrite the same state).
    """
    old = turn.state
    if old == new and not old.is_final:
        return
    allowed = new in TRANSITIONS[old]
    if allowed and old is TurnState.RECEIVED and new is TurnState.DELIVERED:
        allowed = turn.command is not None
    if not allowed:
        raise IllegalTransition(f"turn {turn.turn_id}: {old.value} -> {new.value} is not allowed")
