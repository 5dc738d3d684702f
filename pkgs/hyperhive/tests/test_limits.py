"""Quotas against floods (issue 11), through the real service on its sockets and the CLI: a sender's unacknowledged
messages per recipient, an asker's pending questions, a requester's pending approvals, and the bulk cancel."""

from __future__ import annotations

import pytest

from conftest import event_about, refused, wait_for
from hyperhive.config import ConfigError, parse_config

LIMITS = {"maxUnackedPerSender": 3, "maxPendingQuestions": 2, "maxPendingApprovals": 2, "maxDrafts": 2}


def test_a_sender_cannot_flood_a_recipient_and_others_still_get_through(start_broker):
    hive = start_broker(limits=LIMITS)
    alice, bob, manager = hive.client("alice"), hive.client("bob"), hive.client("manager")
    for i in range(3):
        alice.call("send", to="bob", body=f"flood {i}")
    message = refused(lambda: alice.call("send", to="bob", body="one more"), "conflict")
    assert "limits.maxUnackedPerSender" in message and "3" in message and "bob" in message
    # another sender is not starved by alice's flood, and alice can still write to someone else
    manager.call("send", to="bob", body="from the manager")
    alice.call("send", to="manager", body="hello")
    # the operator (and system events) are not limited
    for i in range(4):
        hive.host().call("send", to="bob", body=f"operator {i}")

    # leased is not acknowledged: the quota frees up only when bob acks
    got = bob.call("recv", max=2)["messages"]
    refused(lambda: alice.call("send", to="bob", body="still too many"), "conflict")
    bob.call("ack", ids=[m["id"] for m in got])
    alice.call("send", to="bob", body="room again")
    bodies = [m["body"] for m in bob.call("recv", max=100)["messages"]]
    assert "room again" in bodies and "one more" not in bodies and "from the manager" in bodies


def test_concurrent_sends_cannot_slip_past_the_quota_together(start_broker):
    import threading

    from hyperhive.errors import HiveError

    hive = start_broker(limits={"maxUnackedPerSender": 25})
    clients = [hive.client("alice") for _ in range(8)]
    stored, refusals = [], []

    def flood(client):
        for i in range(10):
            try:
                stored.append(client.call("send", to="bob", body=f"race {i}")["id"])
            except HiveError as e:
                refusals.append(e.code)

    threads = [threading.Thread(target=flood, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(stored) == 25 and len(refusals) == 55 and set(refusals) == {"conflict"}
    assert hive.client("bob").call("status") == {"unread": 25, "leased": 0}


def test_the_operators_inbox_is_limited_until_marked_read(start_broker):
    hive = start_broker(limits=LIMITS)
    alice = hive.client("alice")
    ids = [alice.call("send", to="operator", body=f"note {i}")["id"] for i in range(3)]
    message = refused(lambda: alice.call("send", to="operator", body="note 4"), "conflict")
    assert "limits.maxUnackedPerSender" in message and "mark" in message
    out = hive.cli("inbox", "--mark-read").stdout
    assert "3" in out
    alice.call("send", to="operator", body="note 4")
    assert [m["body"] for m in hive.host().call("inbox")["messages"]][-1] == "note 4"
    assert hive.host().call("mark_read", up_to=ids[0])["marked"] == 0  # already read


def test_an_asker_cannot_flood_the_operator_with_questions_and_bulk_cancel_ends_them(start_broker):
    hive = start_broker(limits=LIMITS)
    alice, bob = hive.client("alice"), hive.client("bob")
    asked = [alice.call("ask_operator", question=f"q{i}?")["id"] for i in range(2)]
    message = refused(lambda: alice.call("ask_operator", question="q3?"), "conflict")
    assert "limits.maxPendingQuestions" in message and "2" in message
    bob_q = bob.call("ask_operator", question="bob's?")["id"]  # another asker is not blocked

    out = hive.cli("cancel", "--all", "--asker", "alice").stdout
    assert "cancelled 2" in out
    events = wait_for(lambda: [m for m in alice.call("recv", max=10)["messages"] if m["kind"] == "event"],
                      message="alice's events")
    events += alice.call("recv", max=10)["messages"]
    assert sorted(m["data"]["question_id"] for m in events) == asked
    assert {m["data"]["status"] for m in events} == {"cancelled"}
    assert [q["id"] for q in hive.host().call("questions")["questions"]] == [bob_q]
    alice.call("ask_operator", question="room again?")

    result = hive.host().call("cancel_questions")
    assert result["cancelled"] == 2
    assert hive.host().call("questions")["questions"] == []
    assert event_about(bob, bob_q)["data"]["answer"] == "[cancelled]"


def test_the_manager_cannot_flood_the_approval_queue(start_broker):
    hive = start_broker(limits=LIMITS)
    manager = hive.client("manager")
    manager.call("request_spawn", name="carl")
    manager.call("request_spawn", name="dora")
    message = refused(lambda: manager.call("request_spawn", name="erin"), "conflict")
    assert "limits.maxPendingApprovals" in message and "2" in message
    # the operator is not limited
    hive.host().call("deny", id=1, note="no")
    manager.call("request_spawn", name="erin")
    wait_for(lambda: len(hive.host().call("pending", status="pending")["approvals"]) == 2)


def test_the_manager_cannot_flood_the_page_with_drafts(start_broker):
    hive = start_broker(limits=LIMITS)
    manager = hive.client("manager")
    manager.call("request_spawn_draft", name="carl")
    manager.call("request_spawn_draft", name="dora")
    message = refused(lambda: manager.call("request_spawn_draft", name="erin"), "conflict")
    assert "limits.maxDrafts" in message and "2" in message
    assert not (hive.config.state_dir / "agents" / "erin").exists()
    hive.cli("destroy", "carl", "--purge")  # the operator purges one: room again
    manager.call("request_spawn_draft", name="erin")


@pytest.mark.parametrize("key", sorted(LIMITS))
def test_limits_are_checked_by_name(key):
    with pytest.raises(ConfigError) as info:
        parse_config({"version": 1, "limits": {key: 0}}, "hive.json")
    assert f"limits.{key}: must be positive" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"version": 1, "limits": {"maxUnacked": 5}}, "hive.json")
    assert "limits.maxUnacked: unknown key" in str(info.value)
    assert getattr(parse_config({"version": 1, "limits": {key: 7}}).limits,
                   {"maxUnackedPerSender": "max_unacked_per_sender", "maxPendingQuestions": "max_pending_questions",
                    "maxPendingApprovals": "max_pending_approvals", "maxDrafts": "max_drafts"}[key]) == 7
