"""The service side of the harness on the real sockets: op ``turn_event`` (the live turn stream and the manager's
notice of a failed turn) and op ``lease`` (heartbeat and giving messages back)."""

from __future__ import annotations

import time

import pytest

from harness_support import TurnStream, broker_only, db_rows
from hyperhive.errors import HiveError


@pytest.fixture(scope="module")
def shared_hive():
    with broker_only() as hp:
        yield hp


def test_turn_events_reach_the_live_stream_of_the_sender_only(shared_hive):
    hp = shared_hive
    alice_view, bob_view = TurnStream(hp.dashboard_url, "alice"), TurnStream(hp.dashboard_url, "bob")
    try:
        alice = hp.client("alice")
        assert alice.call("turn_event", event={"type": "turn_start", "data": {"turn": 1}}) == {"published": True}
        alice.call("turn_event", event={"type": "event", "data": {"event": {"type": "system"}}})
        alice.call("turn_event", event={"type": "turn_end", "data": {"ok": True}})
        alice_view.wait_type("turn_end")
        assert [(i["agent"], i["type"], i["data"]) for i in alice_view.items] == [
            ("alice", "turn_start", {"turn": 1}), ("alice", "event", {"event": {"type": "system"}}),
            ("alice", "turn_end", {"ok": True})]
        time.sleep(0.3)
        assert bob_view.items == []
    finally:
        alice_view.close()
        bob_view.close()


@pytest.mark.parametrize("event, problem", [
    ({"type": "party"}, "event.type must be one of turn_start, event, turn_end, error"),
    ({"type": "event", "data": [1]}, "event.data must be an object"),
    ({"type": "event", "agent": "bob"}, "unknown event field(s) agent"),
    ("turn_start", 'argument "event" must be an object'),
])
def test_a_malformed_turn_event_is_refused_naming_the_problem(shared_hive, event, problem):
    with pytest.raises(HiveError) as refused:
        shared_hive.client("alice").call("turn_event", event=event)
    assert refused.value.code == "bad_request" and problem in refused.value.message


def test_the_operator_socket_cannot_speak_for_a_harness(shared_hive):
    with pytest.raises(HiveError) as refused:
        shared_hive.host().call("turn_event", event={"type": "error", "data": {}})
    assert refused.value.code == "forbidden"


def test_an_error_tells_the_manager_at_most_once_a_minute_and_never_the_failing_agent(start_broker):
    hp = start_broker()
    alice = hp.client("alice")
    for i in range(3):
        alice.call("turn_event", event={"type": "error", "data": {"reason": f"claude exited with status {i}"}})
    hp.client("manager").call("turn_event", event={"type": "error", "data": {"reason": "the manager's own"}})
    rows = db_rows(hp, "SELECT recipient, body FROM messages WHERE sender = 'system'")
    assert rows == [("manager", "alice: a turn failed (claude exited with status 0); its message(s) will be "
                                 "retried.")]


def test_lease_renews_and_gives_back_only_what_the_caller_holds(start_broker):
    hp = start_broker()
    alice, bob = hp.client("alice"), hp.client("bob")
    sent = bob.call("send", to="alice", body="hold this")["id"]
    assert [m["id"] for m in alice.call("recv", lease_seconds=1)["messages"]] == [sent]
    assert bob.call("lease", ids=[sent], seconds=0) == {"leased": 0, "lost": []}  # not bob's to give back
    assert alice.call("lease", ids=[sent], seconds=30) == {"leased": 1, "lost": []}
    time.sleep(1.2)  # past the first lease: the renewal holds it
    assert alice.call("status") == {"unread": 0, "leased": 1}
    assert alice.call("lease", ids=[sent], seconds=0) == {"leased": 1, "lost": []}
    assert alice.call("status") == {"unread": 1, "leased": 0}
    again = alice.call("recv")["messages"]
    assert [m["id"] for m in again] == [sent]
    alice.call("ack", ids=[sent])
    assert alice.call("lease", ids=[sent], seconds=30) == {"leased": 0, "lost": []}  # acknowledged stays so


def test_lease_after_a_restart_takes_back_what_nobody_holds_and_names_what_was_handed_out_again(start_broker):
    """The service requeues every leased message when it starts: a harness whose turn outlived the restart renews
    its messages on a new connection; they were no longer leased, so the renewal took nothing and another
    connection of the agent was handed them again in the middle of the turn."""
    hp = start_broker()
    host = hp.host()
    first, second, never = (host.call("send", to="alice", body=b)["id"] for b in ("first", "second", "never"))
    assert [m["id"] for m in hp.client("alice").call("recv", max=2)["messages"]] == [first, second]
    hp.stop()
    hp.start()
    turn, other, bob = hp.client("alice"), hp.client("alice"), hp.client("bob")
    assert other.call("status") == {"unread": 3, "leased": 0}
    assert bob.call("lease", ids=[first, second], seconds=30) == {"leased": 0, "lost": []}  # never another's
    assert [m["id"] for m in other.call("recv")["messages"]] == [first]  # handed out again before the harness
    assert turn.call("lease", ids=[first, second, never], seconds=30) == {"leased": 1, "lost": [first]}
    assert other.call("status") == {"unread": 1, "leased": 2}  # "never" was never received: not taken
    assert [m["id"] for m in other.call("recv", max=10)["messages"]] == [never]
    # what another live connection holds stays with it: neither renewed nor given back by this one
    assert turn.call("lease", ids=[first], seconds=0) == {"leased": 0, "lost": [first]}
    assert other.call("lease", ids=[second], seconds=30) == {"leased": 0, "lost": [second]}
    assert db_rows(hp, "SELECT id, deliveries FROM messages WHERE recipient = 'alice' ORDER BY id") == [
        (first, 2), (second, 1), (never, 1)]
    # a harness that dies keeps nothing: what it took back goes with its connection, at once
    turn.close()
    assert [m["id"] for m in other.call("recv", max=10, wait_seconds=10)["messages"]] == [second]


def test_lease_refuses_a_length_beyond_the_hives_lease(shared_hive):
    with pytest.raises(HiveError) as refused:
        shared_hive.client("alice").call("lease", ids=[1], seconds=100_000)
    assert "from 0 to 600" in refused.value.message
