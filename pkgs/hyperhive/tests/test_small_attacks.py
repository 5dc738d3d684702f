"""Small attacks of issue 11 through the real service: reserved names, telemetry stamped in the future, terminal
escapes printed by the CLI."""

from __future__ import annotations

import time

import pytest

from conftest import refused
from standins.support import commit_change
from harness_support import get_json
from hyperhive.config import ConfigError, parse_config


@pytest.mark.parametrize("name", ["hive", "system", "operator"])
def test_a_name_the_service_uses_cannot_name_an_agent(name):
    with pytest.raises(ConfigError) as info:
        parse_config({"version": 1, "agents": {name: {}}}, "hive.json")
    assert f"agents.{name}: \"{name}\" is reserved" in str(info.value)


def test_the_manager_cannot_take_a_reserved_name_or_the_managers():
    with pytest.raises(ConfigError) as info:
        parse_config({"version": 1, "manager": "hive"}, "hive.json")
    assert "manager:" in str(info.value) and "reserved" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config({"version": 1, "manager": "boss", "agents": {"boss": {}}}, "hive.json")
    assert "agents.boss:" in str(info.value)


def test_an_agent_named_hive_cannot_be_spawned_and_host_wide_series_stay_the_services(start_broker):
    hive = start_broker(env={"HYPERHIVE_TELEMETRY_INTERVAL": "0.2"})
    manager = hive.client("manager")
    for op in ("request_spawn", "request_spawn_draft"):
        assert "reserved" in refused(lambda: manager.call(op, name="hive"), "bad_request")
    result = hive.cli("spawn", "hive", check=False)
    assert result.returncode != 0 and "reserved" in result.stderr


def test_telemetry_stamped_far_in_the_future_is_refused(start_broker):
    hive = start_broker()
    alice = hive.client("alice")
    future = time.time() + 10 * 365 * 86400
    message = refused(lambda: alice.call("stats", samples=[
        {"key": "turn.duration_s", "value": 1, "ts": future}]), "bad_request")
    assert "samples[0].ts" in message and "future" in message
    for past in (-1e308, 0, time.time() - 40 * 86400):  # nor far in the past: every chart would start in year 1
        message = refused(lambda: alice.call("stats", samples=[{"key": "turn.duration_s", "value": 1, "ts": past}]),
                          "bad_request")
        assert "samples[0].ts" in message and "past" in message
    message = refused(lambda: alice.call("turn_record", turn={"started_at": 1.0, "ended_at": time.time()}),
                      "bad_request")
    assert "started_at" in message and "past" in message
    # a sample stamped now, or a little ahead (rounding), is stored
    alice.call("stats", samples=[{"key": "turn.duration_s", "value": 2, "ts": time.time() + 1},
                                 {"key": "turn.duration_s", "value": 3}])
    rows = get_json(f"{hive.dashboard_url}/api/stats?agent=alice&key=turn.duration_s")
    assert sorted(r["value"] for r in rows) == [2, 3]
    assert all(r["ts"] < time.time() + 60 for r in rows)


FORGE = "\x1b[1A\x1b[2K\r#1 2026-01-01T00:00:00.000Z operator -> alice [message]\x9b2J\u202egnp.exe"


def _no_raw_controls(text: str) -> None:
    for c in ("\x1b", "\r", "\x9b", "\u202e"):
        assert c not in text, f"{c!r} reached the terminal: {text!r}"


def test_the_cli_prints_agent_text_with_its_control_characters_escaped(start_broker):
    hive = start_broker()
    alice, manager = hive.client("alice"), hive.client("manager")
    alice.call("send", to="operator", body="look:" + FORGE)
    alice.call("ask_operator", question="approve?" + FORGE, options=["yes\n#2 forged line", "no" + FORGE])

    inbox = hive.cli("inbox").stdout
    _no_raw_controls(inbox)
    assert "look:\\x1b[1A\\x1b[2K\\x0d#1 2026" in inbox and "\\x9b2J\\u202egnp.exe" in inbox
    assert not any(line.startswith("#1 2026-01-01") for line in inbox.splitlines())

    listed = hive.cli("questions").stdout
    _no_raw_controls(listed)
    assert "yes\\x0a#2 forged line" in listed and not any(l.startswith("#2 forged") for l in listed.splitlines())
    _no_raw_controls(hive.cli("questions", "--json").stdout)

    # the diff of a proposal shows a file's escape sequences as text
    manager.call("request_spawn_draft", name="dora")
    sha = commit_change(hive, "dora", "# " + FORGE + "\n{ ... }: { }\n", filename="agent.nix")
    manager.call("request_spawn_commit", name="dora", commit=sha)
    pending = hive.cli("pending", "--diff").stdout
    _no_raw_controls(pending)
    assert "\\x1b[1A" in pending
    _no_raw_controls(hive.cli("pending", "--diff", "--json").stdout)
    _no_raw_controls(hive.cli("list").stdout)


def test_a_future_turn_already_stored_does_not_hide_a_stuck_agent(start_hive):
    from hyperhive.store import Store, run_sql

    hive = start_hive()  # alice's harness runs (an agent that is stopped is never called stuck)
    now = time.time()
    store = Store(hive.config.db_path)  # what an older version let a harness store
    try:
        run_sql(store, "INSERT INTO stats (agent, ts, key, value) VALUES ('alice', ?, 'turn.duration_s', 1)",
                (now + 10 * 365 * 86400,))
        # a message leased two hours ago and never acknowledged (a turn that hangs): the harness cannot take it
        run_sql(store, "INSERT INTO messages (sender, recipient, kind, body, sent_at, lease_until, deliveries) "
                       "VALUES ('bob', 'alice', 'message', 'waiting two hours', ?, ?, 1)", (now - 7200, now + 86400))
    finally:
        store.close()
    state = get_json(f"{hive.dashboard_url}/api/state")
    alice = next(a for a in state["agents"] if a["name"] == "alice")
    assert alice["state"] == "running", alice
    assert alice["stuck"] is True and "no turn yet" in alice["stuck_reason"], alice
