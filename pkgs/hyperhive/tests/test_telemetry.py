"""Telemetry end to end: harness turns send the agreed keys over the socket, the service stores them, and
``GET /api/stats`` returns them; the service samples the approval queue itself."""

from __future__ import annotations

import time

from conftest import wait_for
from harness_support import fake_hive, get_json, wait_runs

TURN_KEYS = {"turn.duration_s", "turn.tool_calls", "turn.exit_status", "inbox.depth", "sent.agent", "sent.manager",
             "sent.operator", "notes.bytes"}


def latest(series: list[dict]) -> dict[str, float]:
    return {row["key"]: row["value"] for row in series}


def test_each_turn_sends_the_agreed_keys_and_api_stats_returns_them(start_hive, hive_dir):
    script = {"rules": [{"when": {"agent": "alice"}, "steps": [
        {"tool": "send", "args": {"to": "bob", "body": "one"}},
        {"tool": "send", "args": {"to": "manager", "body": "two"}},
        {"tool": "send", "args": {"to": "operator", "body": "three"}},
        {"tool": "send", "args": {"to": "carl", "body": "refused: no such agent"}},
        {"tool": "list_agents"},
        {"append": "notes.md", "content": "- a short note\n"}]}],
        "default": [{"say": "ok"}]}
    hp = fake_hive(start_hive, hive_dir, script)
    url = hp.dashboard_url
    before = time.time()
    hp.host().call("send", to="alice", body="go")
    wait_runs(hive_dir, "alice", 1)
    series = wait_for(lambda: (s := get_json(f"{url}/api/stats?agent=alice")) and
                      TURN_KEYS <= {r["key"] for r in s} and s, message="the turn's telemetry")
    assert all(r["agent"] == "alice" and r["ts"] >= before for r in series)
    values = latest(series)
    assert values["turn.tool_calls"] == 6  # five hive tools and the notes edit
    assert values["tool.send"] == 4 and values["tool.list_agents"] == 1 and values["tool.Edit"] == 1
    assert (values["sent.agent"], values["sent.manager"], values["sent.operator"]) == (1, 1, 1)  # not the refused one
    assert values["turn.exit_status"] == 0 and values["inbox.depth"] == 1
    assert values["notes.bytes"] == len("- a short note\n")
    assert 0 < values["turn.duration_s"] < 30
    assert "turn.since_last_s" not in values  # the first turn has no previous one

    hp.host().call("send", to="alice", body="again")
    wait_runs(hive_dir, "alice", 2)
    since_last = wait_for(lambda: get_json(f"{url}/api/stats?agent=alice&key=turn.since_last_s"),
                          message="time since the last turn")
    assert [r["key"] for r in since_last] == ["turn.since_last_s"] and since_last[0]["value"] > 0
    recent = get_json(f"{url}/api/stats?agent=alice&key=turn.duration_s&since={since_last[0]['ts'] - 60}")
    assert len(recent) == 2
    later = get_json(f"{url}/api/stats?agent=alice&key=turn.duration_s&since={time.time() + 60}")
    assert later == []


def test_the_service_samples_the_approval_queue(start_broker):
    hp = start_broker(env={"HYPERHIVE_TELEMETRY_INTERVAL": "0.2"})
    url = hp.dashboard_url
    first = wait_for(lambda: get_json(f"{url}/api/stats?agent=hive&key=approvals.queue"),
                     message="a first approvals.queue sample")
    assert first[-1]["value"] == 0
    hp.client("manager").call("request_spawn", name="carol")
    wait_for(lambda: get_json(f"{url}/api/stats?agent=hive&key=approvals.queue")[-1]["value"] == 1,
             message="the queue of one")
    time.sleep(0.6)  # a few sampling rounds: an unchanged queue adds no rows
    rows = get_json(f"{url}/api/stats?agent=hive&key=approvals.queue")
    assert [r["value"] for r in rows] == [0, 1]
