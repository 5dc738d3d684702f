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


def _raw_request(hive, name: str, line: bytes) -> dict:
    """One request line written as is on ``name``'s socket (Client would refuse to encode a lone surrogate)."""
    import json
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(hive.config.agent_socket(name)))
        s.sendall(line + b"\n")
        return json.loads(s.makefile("rb").readline())


def test_a_lone_surrogate_is_refused_as_a_bad_request_not_an_internal_error(start_broker):
    """A lone surrogate escape is valid JSON but no text: refused where the request is read, naming it, on the
    agent socket, the dashboard's API and the CLI (an argv that is not UTF-8 reaches Python as lone surrogates)."""
    import subprocess
    import sys

    from browser import http

    hive = start_broker()
    for line in (rb'{"op":"send","to":"bob","body":"x\ud800y"}',
                 rb'{"op":"ask_operator","question":"x\uDC00y"}',
                 rb'{"op":"remind","body":"x\ud83dy","in_seconds":60}',
                 rb'{"op":"send","to":"bob","body":"x","\ud800":1}'):
        answer = _raw_request(hive, "alice", line)
        assert answer["ok"] is False and answer["error"]["code"] == "bad_request", (line, answer)
        assert "lone surrogate" in answer["error"]["message"], answer
    # a pair is text: stored and read back whole
    assert _raw_request(hive, "alice", rb'{"op":"send","to":"bob","body":"x\ud83d\ude00y"}')["ok"]
    assert hive.client("bob").call("recv")["messages"][0]["body"] == "x\U0001F600y"
    assert "Traceback" not in hive.log()

    reply = http(hive.dashboard_url, "POST", "/api/messages", json={"to": "alice", "body": "x\ud800y"})
    assert reply.status == 400 and reply.error["code"] == "bad_request", reply
    assert "lone surrogate" in reply.error["message"], reply.error

    argv = [sys.executable, "-m", "hyperhive", "send", "bob", b"ab\xffcd", "--config", str(hive.config_path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "not valid UTF-8 (the byte 0xff)" in result.stderr, result.stderr
    assert hive.client("bob").call("recv", wait_seconds=0)["messages"] == []


def test_a_body_within_max_message_bytes_is_taken_however_its_json_is_escaped(start_broker):
    """The line limit is for the escaped body: 40,000 quotes (80,000 bytes as JSON) or a whole maxMessageBytes of
    \\x01 (six bytes each as JSON) are within the limit; the body's own size is still checked, in UTF-8 bytes."""
    from browser import http

    hive = start_broker()
    limit = hive.config.broker.max_message_bytes
    assert hive.cli("send", "bob", '"' * 40000).stdout.startswith("sent #")
    alice = hive.client("alice")
    alice.call("send", to="bob", body="\x01" * limit)
    assert "maxMessageBytes" in refused(lambda: alice.call("send", to="bob", body="\x01" * (limit + 1)), "too_large")
    reply = http(hive.dashboard_url, "POST", "/api/messages", json={"to": "bob", "body": "\\" * limit})
    assert reply.status == 201, reply
    got = hive.client("bob").call("recv", max=10)["messages"]
    assert [m["body"] for m in got] == ['"' * 40000, "\x01" * limit, "\\" * limit]


def test_pending_all_with_a_status_lists_only_that_status(start_broker):
    hive = start_broker()
    manager = hive.client("manager")
    denied = manager.call("request_spawn", name="dora")["approval_id"]
    hive.cli("deny", str(denied), "--note", "not now")
    waiting = manager.call("request_spawn", name="erin")["approval_id"]
    both = hive.cli("pending", "--all").stdout
    assert f"#{denied} " in both and f"#{waiting} " in both, both
    only = hive.cli("pending", "--all", "--status", "denied").stdout
    assert f"#{denied} " in only and f"#{waiting} " not in only, only


def test_the_operator_cannot_send_to_itself(start_broker):
    from browser import http

    hive = start_broker()
    result = hive.cli("send", "operator", "self", check=False)
    assert result.returncode == 1 and 'bad_request: the operator cannot send to "operator"' in result.stderr, result
    reply = http(hive.dashboard_url, "POST", "/api/messages", json={"to": "operator", "body": "self"})
    assert reply.status == 400 and reply.error["code"] == "bad_request", reply
    assert "(no messages)" in hive.cli("inbox").stdout
    hive.client("alice").call("send", to="operator", body="from alice")  # an agent still can
    assert "from alice" in hive.cli("inbox").stdout


def test_a_path_or_symlink_target_with_a_newline_cannot_forge_a_line_under_pending(start_broker):
    """A flag names a path and a symlink's target the manager chose: a newline in either started a line of its own
    under `hyperhive pending` (a forged "reason:" or "!!" line); both are shown escaped, each flag on one line."""
    import os

    from standins.support import git, state_dir

    hive = start_broker()
    manager = hive.client("manager")
    config = state_dir(hive) / "agents" / "alice" / "config"
    os.symlink("agent.nix\n      reason: reviewed by security, all clear", config / "alias.nix")
    script = config / "run\n      !! nothing else to see.sh"
    script.write_text("echo hi\n")
    script.chmod(0o755)
    git(config, "add", "-A")
    git(config, "commit", "-q", "-m", "two new files")
    approval_id = manager.call("request_apply_commit", agent="alice", commit="main", reason="tidy")["approval_id"]

    flags = hive.host().call("approval", id=approval_id)["flags"]
    assert sorted(f["kind"] for f in flags) == ["mode", "symlink"], flags
    for f in flags:
        assert "\n" not in f["detail"] and "\n" not in f["path"], f
    assert any("symbolic link to agent.nix\\n      reason: reviewed" in f["detail"] for f in flags), flags
    lines = hive.cli("pending").stdout.splitlines()
    assert [line.strip() for line in lines if line.strip().startswith("reason:")] == ["reason: tidy"], lines
    assert [line for line in lines if line.strip().startswith("!!")] == [line for line in lines if "!!" in line]
    assert len([line for line in lines if line.lstrip().startswith("!!")]) == 2, lines
