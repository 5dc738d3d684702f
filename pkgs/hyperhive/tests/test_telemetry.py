"""Telemetry end to end: harness turns of the real Claude Code CLI send the agreed keys over the socket, the
service stores them, and ``GET /api/stats`` returns them; the service samples the approval queue itself."""

from __future__ import annotations

import time

from conftest import wait_for
from harness_support import agent_state_dir, get_json
from hyperhive.testing.messages_api import hive, tool_use

TURN_KEYS = {"turn.duration_s", "turn.tool_calls", "turn.exit_status", "inbox.depth", "sent.agent", "sent.manager",
             "sent.operator", "notes.bytes"}


def latest(series: list[dict]) -> dict[str, float]:
    return {row["key"]: row["value"] for row in series}


def test_each_turn_sends_the_agreed_keys_and_api_stats_returns_them(claude_hive, model_api):
    hp = claude_hive()
    notes = agent_state_dir(hp, "alice") / "notes.md"
    model_api.script("alice", [
        hive("send", to="bob", body="one"), hive("send", to="manager", body="two"),
        {"tools": [hive("send", to="operator", body="three"),  # two calls in one answer count as two
                   hive("send", to="carl", body="refused: no such agent")]},
        hive("list_agents"), tool_use("Write", file_path=str(notes), content="- a short note\n"),
        {"text": "done"}, {"text": "again"}])
    url = hp.dashboard_url
    before = time.time()
    hp.host().call("send", to="alice", body="go")
    model_api.wait_requests("alice", 6, timeout=60)
    series = wait_for(lambda: (s := get_json(f"{url}/api/stats?agent=alice")) and
                      TURN_KEYS <= {r["key"] for r in s} and s, message="the turn's telemetry")
    assert all(r["agent"] == "alice" and r["ts"] >= before for r in series)
    values = latest(series)
    # as many as the CLI made: five hive tools and the notes write
    assert values["turn.tool_calls"] == 6
    assert values["tool.send"] == 4 and values["tool.list_agents"] == 1 and values["tool.Write"] == 1
    assert (values["sent.agent"], values["sent.manager"], values["sent.operator"]) == (1, 1, 1)  # not the refused one
    assert values["turn.exit_status"] == 0 and values["inbox.depth"] == 1
    assert values["notes.bytes"] == len("- a short note\n")
    assert 0 < values["turn.duration_s"] < 30
    assert "turn.since_last_s" not in values  # the first turn has no previous one

    hp.host().call("send", to="alice", body="again")
    model_api.wait_requests("alice", 7, timeout=60)
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
