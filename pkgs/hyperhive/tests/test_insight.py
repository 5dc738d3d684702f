"""What the swarm costs and does, through the real service and its sockets: turns with tokens and cost tied to
the deployed tag, the stats report and CLI, budgets that hold turns back and the operator's question, run-time
models, durable reminders, and agent logs."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest
from conftest import refused, wait_for

AGENTS = {"alice": {"allowedRecipients": ["bob", "manager", "operator"], "model": "claude-sonnet-4-5"},
          "bob": {}}


def turn(cost=0.25, inp=1000, out=200, cread=50, cwrite=10, status="ok", kind="turn", started=None, **extra):
    started = time.time() - 2 if started is None else started
    return {"kind": kind, "started_at": started, "ended_at": started + 1.5, "status": status, "exit_status": 0,
            "model": "claude-sonnet-4-5",
            "wake": {"kind": "message", "from": "bob", "message_ids": [1]},
            "tokens": {"input": inp, "output": out, "cache_read": cread, "cache_write": cwrite},
            "cost_usd": cost, "num_turns": 2, "duration_api_ms": 900.0,
            "model_usage": {"claude-sonnet-4-5": {"inputTokens": inp, "outputTokens": out, "costUSD": cost}},
            "tools": {"mcp__hyperhive__send": 1, "Bash": 2}, **extra}


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def test_a_recorded_turn_is_kept_with_its_tokens_cost_and_deployed_tag(start_broker):
    hive = start_broker(AGENTS)
    alice = hive.client("alice")
    turn_id = alice.call("turn_record", turn=turn(cost=0.125, inp=1234, out=567, cread=89, cwrite=10))["id"]
    assert turn_id >= 1
    [row] = hive.host().call("turns", agent="alice")["turns"]
    assert row["tokens"] == {"input": 1234, "output": 567, "cache_read": 89, "cache_write": 10}
    assert row["cost_usd"] == pytest.approx(0.125)
    assert row["model"] == "claude-sonnet-4-5" and row["wake"]["kind"] == "message"
    assert row["deployed_tag"] == "deployed/0" and len(row["deployed_sha"]) == 40
    samples = get_json(f"{hive.dashboard_url}/api/stats?agent=alice")
    got = {s["key"]: s["value"] for s in samples if s["key"].startswith("turn.")}
    assert got == {"turn.tokens.input": 1234, "turn.tokens.output": 567, "turn.tokens.cache_read": 89,
                   "turn.tokens.cache_write": 10, "turn.cost_usd": 0.125}
    # a compaction is counted under its own keys
    alice.call("turn_record", turn=turn(kind="compaction", cost=0.01, inp=10, out=5, cread=0, cwrite=0))
    keys = {s["key"] for s in get_json(f"{hive.dashboard_url}/api/stats?agent=alice")}
    assert {"compaction.cost_usd", "compaction.tokens.input"} <= keys


@pytest.mark.parametrize("bad, problem", [
    ({"started_at": 10, "ended_at": 5}, "before"),
    ({"cost_usd": -1}, "cost_usd"),
    ({"cost_usd": float("inf")}, None),  # refused by the transport (NaN/Infinity are not JSON)
    ({"tokens": {"input": 1.5}}, "whole number"),
    ({"status": "exploded"}, "status"),
    ({"ended_at": time.time() + 86400, "started_at": time.time()}, "future"),
    ({"surprise": 1}, "unknown turn field"),
    ({"status": "failed", "error": 7}, '"error" must be a string'),
    ({"status": "ok", "error": "it broke"}, "status"),
])
def test_a_bad_turn_record_is_refused_naming_the_field(start_broker, bad, problem):
    hive = start_broker(AGENTS)
    alice = hive.client("alice")
    message = refused(lambda: alice.call("turn_record", turn={**turn(), **bad}), "bad_request")
    if problem:
        assert problem in message
    assert hive.host().call("turns", agent="alice")["turns"] == []


def test_the_report_and_the_stats_cli_agree_on_cost_tokens_and_mixes(start_broker):
    hive = start_broker(AGENTS)
    alice, bob = hive.client("alice"), hive.client("bob")
    alice.call("turn_record", turn=turn(cost=0.5))
    alice.call("turn_record", turn=turn(cost=0.25, status="failed"))
    bob.call("turn_record", turn=turn(cost=1.0, wake={"kind": "reminder", "from": "system", "message_ids": []}))
    report = hive.host().call("report", agent="alice", window="24h")
    assert report["totals"]["turns"] == 2 and report["totals"]["cost_usd"] == pytest.approx(0.75)
    assert report["results"] == {"ok": 1, "failed": 1}
    assert report["top_tools"][0] == {"tool": "Bash", "calls": 4}
    assert sum(b["turns"] for b in report["buckets"]) == 2 and len(report["buckets"]) in (24, 25)
    hive_wide = json.loads(hive.cli("stats", "--json").stdout)
    assert hive_wide["totals"]["cost_usd"] == pytest.approx(1.75)
    assert hive_wide["wakes"] == {"message": 2, "reminder": 1}
    text = hive.cli("stats", "alice", "--window", "7d").stdout
    assert "$0.7500" in text and "turns      2" in text and len(report["buckets"]) in (24, 25)
    one = hive.cli("stats", "bob").stdout  # counts read as words: "1 turn", not "1 turns"
    assert "(and 0 compactions)" in one and "(1 turn, $1.0000)" in one and " 1 turns" not in one, one
    week = hive.host().call("report", agent="alice", window="7d")
    assert len(week["buckets"]) in (7, 8)
    assert "window" in refused(lambda: hive.host().call("report", window="1y"), "bad_request")
    assert "no agent" in refused(lambda: hive.host().call("report", agent="carol"), "not_found")


def test_a_budget_holds_the_next_turn_back_until_the_operator_raises_it(start_broker):
    hive = start_broker({**AGENTS, "alice": {**AGENTS["alice"], "budget": {"dailyUsd": 1.0}}})
    alice, host = hive.client("alice"), hive.client("bob")
    assert hive.client("alice").call("turn_ready")["ready"] is True
    alice.call("turn_record", turn=turn(cost=0.6))
    # spent 0.60; the next turn is estimated at what the last cost (0.60): 1.20 would cross 1.00
    ready = alice.call("turn_ready", wait_seconds=0)
    assert ready["ready"] is False and "$1.0000" in ready["reason"], ready
    host.call("send", to="alice", body="work for you")
    # its message waits, unread and unleased
    assert hive.host().call("list_agents") and alice.call("status") == {"unread": 1, "leased": 0}
    questions = hive.host().call("questions")["questions"]
    [q] = [q for q in questions if q["asker"] == "system"]
    assert "alice" in q["question"] and q["options"][0].startswith("raise")
    listed = {a["name"]: a for a in hive.host().call("agents_overview")["agents"]}
    assert listed["alice"]["over_budget"] == ready["reason"] and listed["alice"]["cost_today_usd"] == 0.6
    assert listed["bob"]["over_budget"] is None
    assert "OVER BUDGET" in next(line for line in hive.cli("list").stdout.splitlines() if line.startswith("alice"))
    # asked once a day, not on every check
    alice.call("turn_ready", wait_seconds=0)
    assert len([q for q in hive.host().call("questions")["questions"] if q["asker"] == "system"]) == 1
    # a parked turn_ready wakes when the operator raises the limit
    import threading
    answer = {}
    parked = threading.Thread(target=lambda: answer.update(hive.client("alice").call("turn_ready", wait_seconds=20)))
    parked.start()
    time.sleep(0.3)
    hive.host().call("answer", id=q["id"], answer=q["options"][0])
    parked.join(15)
    assert answer.get("ready") is True, answer
    got = alice.call("recv", wait_seconds=1)
    assert [m["body"] for m in got["messages"]] == ["work for you"]  # nothing was lost


def test_keeping_the_limit_keeps_the_agent_waiting_and_the_hive_budget_applies_to_all(start_broker):
    hive = start_broker(AGENTS, budget={"dailyTokens": 5000})
    alice, bob = hive.client("alice"), hive.client("bob")
    alice.call("turn_record", turn=turn(inp=3000, out=0, cread=0, cwrite=0))
    state = bob.call("turn_ready")
    assert state["ready"] is True  # bob has no turn of its own yet to estimate from
    bob.call("turn_record", turn=turn(inp=2500, out=0, cread=0, cwrite=0))
    state = bob.call("turn_ready")
    assert state["ready"] is False and "the hive" in state["reason"] and "5,000" in state["reason"]
    [q] = [q for q in hive.host().call("questions")["questions"] if q["asker"] == "system"]
    hive.host().call("answer", id=q["id"], answer="keep the limit")
    assert bob.call("turn_ready")["ready"] is False
    hive.cli("budget", "--tokens", "100000")
    assert bob.call("turn_ready")["ready"] is True


def test_the_operator_sets_a_model_for_the_next_turn_and_resets_it(start_broker):
    hive = start_broker(AGENTS)
    alice = hive.client("alice")
    assert alice.call("turn_ready")["model"] == "claude-sonnet-4-5"
    hive.cli("model", "alice", "claude-opus-4-1")
    assert alice.call("turn_ready")["model"] == "claude-opus-4-1"
    assert "set by the operator" in hive.cli("model", "alice").stdout
    hive.stop()
    hive.start()  # survives a restart
    assert hive.client("alice").call("turn_ready")["model"] == "claude-opus-4-1"
    hive.cli("model", "alice", "--reset")
    assert hive.client("alice").call("turn_ready")["model"] == "claude-sonnet-4-5"
    assert "not both" in hive.cli("model", "alice", "x", "--reset", check=False).stderr
    assert "model" in refused(lambda: hive.host().call("model", name="alice", model="two words"), "bad_request")


def test_a_reminder_arrives_as_an_event_and_one_set_before_a_kill_arrives_after_restart(start_broker):
    hive = start_broker(AGENTS)
    alice = hive.client("alice")
    set_at = time.monotonic()
    first = alice.call("remind", body="check the build", in_seconds=2)
    assert first["id"] >= 1 and first["due_at"].endswith("Z")
    pending = hive.host().call("reminders", agent="alice")["reminders"]
    assert [r["body"] for r in pending] == ["check the build"]
    got = alice.call("recv", wait_seconds=15)
    [m] = got["messages"]
    assert m["kind"] == "event" and m["from"] == "system" and "check the build" in m["body"]
    assert m["data"]["what"] == "reminder" and m["data"]["reminder_id"] == first["id"]
    assert time.monotonic() - set_at >= 1.9
    alice.call("ack", ids=[m["id"]])
    second = alice.call("remind", body="after the crash", in_seconds=3)
    cancelled = alice.call("remind", body="never", in_seconds=3)
    hive.cli("reminders", "--cancel", str(cancelled["id"]))
    hive.kill9()
    time.sleep(3.5)  # it falls due while the service is down
    hive.start()
    alice = hive.client("alice")
    got = alice.call("recv", wait_seconds=10, max=10)
    assert [m["data"]["reminder_id"] for m in got["messages"]] == [second["id"]]
    statuses = {r["id"]: r["status"] for r in hive.host().call("reminders", status="all")["reminders"]}
    assert statuses == {first["id"]: "delivered", second["id"]: "delivered", cancelled["id"]: "cancelled"}


def test_reminders_are_limited_per_agent_and_checked(start_broker):
    hive = start_broker(AGENTS, limits={"maxPendingReminders": 2})
    alice = hive.client("alice")
    alice.call("remind", body="one", in_seconds=600)
    when = int(time.time()) + 86400
    tomorrow = time.strftime("%Y-%m-%dT%H:%M:%S+01:00", time.gmtime(when + 3600))
    due = alice.call("remind", body="two", at=tomorrow)["due_at"]  # +01:00 is read as its zone says
    assert due == time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(when))
    assert "limits.maxPendingReminders = 2" in refused(lambda: alice.call("remind", body="three", in_seconds=5), "conflict")
    assert "exactly one" in refused(lambda: alice.call("remind", body="x"), "bad_request")
    assert "zone" in refused(lambda: hive.client("bob").call("remind", body="x", at="2030-01-01T10:00:00"),
                             "bad_request")
    assert "366 days" in refused(lambda: hive.client("bob").call("remind", body="x", in_seconds=10 ** 9),
                                 "bad_request")


def test_the_manager_reads_an_agents_log_and_the_operator_follows_it(start_hive):
    hive = start_hive(AGENTS)
    wait_for(lambda: hive.host().call("logs", name="alice", lines=50)["lines"], timeout=20,
             message="alice's harness to write its log")
    got = hive.client("manager").call("get_logs", agent="alice", lines=5)
    assert 0 < len(got["lines"]) <= 5 and got["source"].endswith("agent.log")
    assert "not your own" in refused(lambda: hive.client("manager").call("get_logs", agent="manager"), "forbidden")
    assert "not available" in refused(lambda: hive.client("bob").call("get_logs", agent="alice"), "forbidden")
    cursor = hive.host().call("logs", name="alice", lines=10)["cursor"]
    log_path = hive.config.state_dir / "agents" / "alice" / "agent.log"
    with open(log_path, "a") as f:
        f.write("a line the operator is looking for\n")
    after = hive.host().call("logs", name="alice", lines=100, cursor=cursor)["lines"]
    assert "a line the operator is looking for" in after
    found = hive.host().call("logs", name="alice", lines=100, search="LOOKING FOR")["lines"]
    assert found == ["a line the operator is looking for"]
    out = hive.cli("logs", "alice", "-n", "1").stdout
    assert out == "a line the operator is looking for\n"


def test_a_log_swapped_for_a_link_is_not_read(start_broker, tmp_path):
    hive = start_broker(AGENTS)
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    log_path = hive.config.state_dir / "agents" / "alice" / "agent.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    os.symlink(secret, log_path)
    message = refused(lambda: hive.host().call("logs", name="alice"), "forbidden")
    assert "host secret" not in message


# --- with the real Claude Code CLI ------------------------------------------------------------------------------

def cli_result_event(hive, agent: str, timeout: float = 60) -> dict:
    """The ``result`` event the real CLI printed for the agent's turn, as the live turn stream replays it."""
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{hive.dashboard_url}/api/agents/{agent}/turns/stream", timeout=3) as r:
                for raw in r:
                    line = raw.decode("utf-8", "replace")
                    if not line.startswith("data: "):
                        continue
                    item = json.loads(line[6:])
                    event = (item.get("data") or {}).get("event") or {}
                    if event.get("type") == "result":
                        return event
        except (socket.timeout, TimeoutError, urllib.error.URLError):
            pass
    raise AssertionError(f"no result event from {agent}'s turn")


def test_a_real_cli_turn_stores_exactly_the_tokens_and_cost_it_reported(claude_hive, model_api):
    from hyperhive.testing.messages_api import hive as tool

    hive = claude_hive({"alice": {"model": "claude-sonnet-4-5"}})
    usage = {"input_tokens": 1200, "output_tokens": 340, "cache_read_input_tokens": 5000,
             "cache_creation_input_tokens": 700}
    model_api.script("alice", [tool("send", to="operator", body="on it"), {"text": "done", "usage": usage}])
    hive.host().call("send", to="alice", body="please report")
    result = cli_result_event(hive, "alice")
    row = wait_for(lambda: hive.host().call("turns", agent="alice")["turns"], timeout=30,
                   message="alice's turn to be recorded")[0]
    reported = result["usage"]
    assert row["tokens"] == {"input": reported["input_tokens"], "output": reported["output_tokens"],
                             "cache_read": reported["cache_read_input_tokens"],
                             "cache_write": reported["cache_creation_input_tokens"]}
    assert reported["cache_read_input_tokens"] >= 5000  # our script's figures reached the CLI's sum
    assert row["cost_usd"] == pytest.approx(result["total_cost_usd"]) and row["cost_usd"] > 0
    assert row["model"] == "claude-sonnet-4-5" and row["status"] == "ok"
    assert row["wake"] == {"kind": "operator", "from": "operator", "message_ids": row["wake"]["message_ids"]}
    assert row["deployed_tag"] == "deployed/0" and row["tools"] == {"mcp__hyperhive__send": 1}
    samples = {s["key"]: s["value"] for s in get_json(f"{hive.dashboard_url}/api/stats?agent=alice")}
    assert samples["turn.tokens.input"] == reported["input_tokens"]
    assert samples["turn.tokens.cache_write"] == reported["cache_creation_input_tokens"]
    assert samples["turn.cost_usd"] == pytest.approx(result["total_cost_usd"])


def test_the_operators_model_reaches_the_next_real_cli_request_and_reset_restores_it(claude_hive, model_api):
    hive = claude_hive({"alice": {"model": "claude-sonnet-4-5"}})
    model_api.script("alice", [{"text": "one"}, {"text": "two"}])
    hive.cli("model", "alice", "claude-opus-4-1")  # a retired name: Claude Code must not swap it for another
    hive.host().call("send", to="alice", body="first")
    [first] = model_api.wait_requests("alice", 1)
    assert first["model"] == "claude-opus-4-1"
    wait_for(lambda: hive.host().call("turns", agent="alice")["turns"], timeout=30, message="the first turn")
    hive.cli("model", "alice", "--reset")
    hive.host().call("send", to="alice", body="second")
    requests = model_api.wait_requests("alice", 2)
    assert requests[1]["model"] == "claude-sonnet-4-5"


def test_an_agent_over_budget_starts_no_real_cli_turn_until_raised(claude_hive, model_api):
    hive = claude_hive({"alice": {"model": "claude-sonnet-4-5", "budget": {"dailyTokens": 3000}}})
    model_api.script("alice", [{"text": "first", "usage": {"input_tokens": 2000, "output_tokens": 100}},
                               {"text": "second"}])
    hive.host().call("send", to="alice", body="first job")
    wait_for(lambda: hive.host().call("turns", agent="alice")["turns"], timeout=30, message="the first turn")
    hive.host().call("send", to="alice", body="second job")
    question = wait_for(lambda: [q for q in hive.host().call("questions")["questions"] if q["asker"] == "system"],
                        timeout=20, message="the budget question")[0]
    assert "alice" in question["question"] and "3,000" in question["question"]
    time.sleep(1.0)
    assert len(model_api.requests("alice")) == 1  # no second turn started
    inbox = hive.host().call("list_agents")
    assert inbox
    hive.host().call("answer", id=question["id"], answer=question["options"][0])
    second = model_api.wait_requests("alice", 2)[1]
    assert "second job" in json.dumps(second["messages"])


def test_the_agents_table_reads_deployed_tags_without_git_and_agrees_with_git(start_hive):
    """``hyperhive list`` and the dashboard read each agent's deployed tag from the approvals and the applied
    repo's ref files (no git process per agent); they must say what git says, after a seed and after a deploy."""
    from standins.support import AGENT_ENV, agent_nix, commit_change, wait_status

    hive = start_hive(agents={"alice": {}, "bob": {}}, env=AGENT_ENV)
    sha = commit_change(hive, "alice", agent_nix("Deployed."), message="alice: deployed")
    approval_id = hive.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    hive.host().call("approve", id=approval_id)
    assert wait_status(hive.host(), approval_id)["status"] == "deployed"
    commit_change(hive, "bob", agent_nix("Proposed, not deployed."), message="bob: pending")
    rows = {a["name"]: a for a in hive.host().call("agents_overview")["agents"]}
    assert rows["alice"]["deployed_tag"] == f"deployed/{approval_id}" and rows["alice"]["deployed_sha"] == sha
    assert rows["bob"]["deployed_tag"] == "deployed/0" and rows["bob"]["stale"] is True
    assert rows["alice"]["stale"] is False
    import subprocess
    for name, row in rows.items():
        applied = hive.config.state_dir / "applied" / name
        git_main = subprocess.run(["git", "-C", str(applied), "rev-parse", "refs/heads/main"], capture_output=True,
                                  text=True).stdout.strip()
        tags = subprocess.run(["git", "-C", str(applied), "tag", "--points-at", git_main, "--list", "deployed/*"],
                              capture_output=True, text=True).stdout.split()
        assert row["deployed_sha"] == git_main and row["deployed_tag"] in tags, (name, row, tags)


def test_agent_text_in_the_insight_verbs_cannot_drive_the_terminal(start_broker):
    hive = start_broker(AGENTS)
    alice = hive.client("alice")
    alice.call("remind", body="fine\x1b[2J\x1b[1;1Hforged line", in_seconds=600)
    alice.call("turn_record", turn=turn(tools={"Bash\x1b[31m": 1}, model="m\x1b]0;x\x07"))
    for args in (("reminders",), ("turns",), ("stats",)):
        out = hive.cli(*args).stdout
        assert "\x1b" not in out and "\x07" not in out, (args, out)
    assert "\\x1b[2J" in hive.cli("reminders").stdout
    log_path = hive.config.state_dir / "agents" / "alice" / "agent.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("turn ok\x1b[2K\rforged\n")
    out = hive.cli("logs", "alice").stdout
    assert "\x1b" not in out and "\r" not in out and "\\x1b[2K" in out


def test_a_turn_and_its_samples_are_stored_together_or_not_at_all(start_broker):
    """Whoever reads a recorded turn reads its token and cost samples too (one transaction): a turn whose samples
    cannot be stored is refused whole, so the harness's retry does not store it twice."""
    import sqlite3

    hive = start_broker(AGENTS)
    alice = hive.client("alice")
    con = sqlite3.connect(hive.config.db_path)
    con.execute("CREATE TRIGGER no_samples BEFORE INSERT ON stats BEGIN SELECT RAISE(ABORT, 'the disk is full'); END")
    con.commit()
    refused(lambda: alice.call("turn_record", turn=turn(cost=0.5)), "internal")
    assert hive.host().call("turns", agent="alice")["turns"] == []
    con.execute("DROP TRIGGER no_samples")
    con.commit()
    con.close()
    alice.call("turn_record", turn=turn(cost=0.5))
    assert len(hive.host().call("turns", agent="alice")["turns"]) == 1
    samples = {s["key"]: s["value"] for s in get_json(f"{hive.dashboard_url}/api/stats?agent=alice")}
    assert samples["turn.cost_usd"] == 0.5 and samples["turn.tokens.input"] == 1000


def test_turns_reminders_and_cancel_refuse_a_name_that_never_was_an_agent(start_broker):
    """As `stats nobody` does: a typo is not_found, not "nothing there". A name that was an agent is known: a
    destroyed one (its tombstone), or one whose turns are stored though the config no longer declares it."""
    hive = start_broker()
    for verb in (("turns", "nobody"), ("reminders", "nobody"), ("cancel", "--all", "--asker", "nobody")):
        result = hive.cli(*verb, check=False)
        assert result.returncode == 1 and 'not_found: no agent "nobody"' in result.stderr, (verb, result)
    assert "(no turns yet)" in hive.cli("turns", "bob").stdout
    assert "(no pending reminders)" in hive.cli("reminders", "bob").stdout
    assert "cancelled 0 question(s) of bob" in hive.cli("cancel", "--all", "--asker", "bob").stdout
    from browser import http  # the dashboard's "cancel all of one asker" too

    refused = http(hive.dashboard_url, "POST", "/api/questions/cancel", json={"asker": "nobody"})
    assert refused.status == 404 and 'no agent "nobody"' in refused.error["message"], refused
    assert http(hive.dashboard_url, "POST", "/api/questions/cancel", json={"asker": "bob"}).json()["cancelled"] == 0

    hive.cli("spawn", "dora")
    hive.cli("destroy", "dora")
    # a destroyed agent is known (rc 0: cli() checks it); its stand-in may have run a turn on its spawn's event
    # before the destroy, so it lists that turn or none
    listed = hive.cli("turns", "dora").stdout
    assert "(no turns yet)" in listed or " UTC dora " in listed, listed
    hive.client("alice").call("turn_record", turn=turn())
    path = hive.config_path
    path.write_text(json.dumps({**json.loads(path.read_text()), "agents": {"bob": {}}}))
    wait_for(lambda: "config reloaded" in hive.log(), timeout=15, message="alice no longer declared")
    assert "alice" in hive.cli("turns", "alice").stdout


def test_the_dashboards_budget_route_refuses_what_is_not_a_limit_or_an_agent(start_broker):
    """`{"tokens": true}` set the hive's limit to 1 token (every agent stopped), 1.5 tokens to 1, 1e999 dollars
    to Infinity (and a reply that is not JSON), and an unknown agent got a limit stored under its name."""
    from browser import http

    hive = start_broker(AGENTS)
    alice = hive.client("alice")
    alice.call("turn_record", turn=turn(cost=0.5, inp=400, out=0, cread=0, cwrite=0))
    for raw, status, problem in (('{"tokens": true}', 400, '"tokens" must be a whole number of tokens'),
                                 ('{"tokens": 1.5}', 400, '"tokens" must be a whole number of tokens'),
                                 ('{"tokens": -3}', 400, '"tokens" must be a whole number of tokens'),
                                 ('{"usd": 1e999}', 400, '"usd" must be a finite number of dollars'),
                                 ('{"usd": NaN}', 400, '"usd" must be a finite number of dollars'),
                                 ('{"usd": "lots"}', 400, '"usd" must be a number, not "lots"'),
                                 ('{"agent": "carol", "usd": 5}', 404, 'no agent "carol"'),
                                 ('{"agent": ["alice"], "usd": 5}', 400, '"agent" must be an agent')):
        reply = http(hive.dashboard_url, "POST", "/api/budget", data=raw,
                     headers={"Content-Type": "application/json"})
        assert reply.status == status and problem in reply.error["message"], (raw, reply.status, reply.body)
    assert alice.call("turn_ready")["ready"] is True  # nothing above set a limit
    ok = http(hive.dashboard_url, "POST", "/api/budget", json={"agent": "alice", "tokens": 300})
    assert ok.status == 200 and ok.json()["limit"] == {"dailyUsd": None, "dailyTokens": 300}
    assert alice.call("turn_ready")["ready"] is False
    # an agent's sessions: a name that never was an agent is not "no turns yet"
    assert http(hive.dashboard_url, "GET", "/api/agents/carol/turn-records").status == 404
    assert len(http(hive.dashboard_url, "GET", "/api/agents/alice/turn-records").json()["turns"]) == 1


def test_a_limit_set_directly_answers_the_days_budget_question_and_a_later_answer_cannot_undo_it(start_broker):
    """`hyperhive budget alice --usd 50` left the budget question pending; answering it "keep the limit" later
    put alice back under $1 without a word. A limit given in one unit also said nothing of the other in force."""
    hive = start_broker({**AGENTS, "alice": {**AGENTS["alice"], "budget": {"dailyUsd": 1.0}}})
    alice = hive.client("alice")
    alice.call("turn_record", turn=turn(cost=0.6))
    assert alice.call("turn_ready")["ready"] is False
    [q] = [q for q in hive.host().call("questions")["questions"] if q["asker"] == "system"]
    said = hive.cli("budget", "alice", "--tokens", "900000").stdout
    assert "limit is now $1.00 and 900,000 tokens" in said, said  # the configured $1 still holds
    said = hive.cli("budget", "alice", "--usd", "50").stdout
    assert "limit is now $50.00 and 900,000 tokens" in said, said  # and the tokens set before stay
    assert alice.call("turn_ready")["ready"] is True
    [done] = [x for x in hive.host().call("questions", status="all")["questions"] if x["id"] == q["id"]]
    assert done["status"] == "answered" and "set today's limit to $1.00 and 900,000 tokens" in done["answer"], done
    assert not [q for q in hive.host().call("questions")["questions"] if q["asker"] == "system"]
    message = refused(lambda: hive.host().call("answer", id=q["id"], answer="keep the limit"), "conflict")
    assert "no longer pending" in message
    assert alice.call("turn_ready")["ready"] is True  # still raised
    bad = hive.cli("budget", "--usd", "nan", check=False)
    assert bad.returncode == 2 and "nan is not a number of dollars" in bad.stderr, bad.stderr


def test_the_stats_series_of_a_name_that_never_was_an_agent_is_not_found(start_broker):
    """`/api/stats?agent=alcie` answered [] as for an agent with no samples yet; the telemetry of the hive and of
    an agent that no longer is declared are still read."""
    from browser import http

    hive = start_broker(AGENTS)
    hive.client("alice").call("turn_record", turn=turn(cost=0.25))
    typo = http(hive.dashboard_url, "GET", "/api/stats?agent=alcie")
    assert typo.status == 404 and 'no agent "alcie"' in typo.error["message"], typo.body
    assert http(hive.dashboard_url, "GET", "/api/stats?agent=bob").json() == []  # an agent, no samples yet
    assert http(hive.dashboard_url, "GET", "/api/stats?agent=hive").status == 200
    samples = http(hive.dashboard_url, "GET", "/api/stats?agent=alice&key=turn.cost_usd").json()
    assert [s["value"] for s in samples] == [0.25]
    path = hive.config_path
    path.write_text(json.dumps({**json.loads(path.read_text()), "agents": {"bob": {}}}))
    wait_for(lambda: "config reloaded" in hive.log(), timeout=15, message="alice no longer declared")
    samples = http(hive.dashboard_url, "GET", "/api/stats?agent=alice&key=turn.cost_usd").json()
    assert [s["value"] for s in samples] == [0.25]


def test_a_budget_question_is_answered_in_words_its_raise_suffices_and_it_ends_with_the_day(start_broker):
    """The raise it proposed was twice the limit, which did not let a turn start whose estimate (yesterday's last
    turn) was larger; a free-text "now please, make it $20" kept the limit (only "raise..." raised, to the proposed
    amount); and a question about today's limit stayed pending for good after the day was over."""
    import datetime

    hive = start_broker({name: {"budget": {"dailyUsd": 1.0}} for name in ("alice", "bob", "carol")})
    alice, bob, carol = hive.client("alice"), hive.client("bob"), hive.client("carol")
    alice.call("turn_record", turn=turn(cost=3.0, started=time.time() - 86400 - 60))  # yesterday's big turn
    bob.call("turn_record", turn=turn(cost=0.6))
    carol.call("turn_record", turn=turn(cost=0.6))
    for agent in (alice, bob, carol):
        assert agent.call("turn_ready")["ready"] is False
    asked = {q["question"].split()[1]: q for q in hive.host().call("questions")["questions"] if q["asker"] == "system"}
    assert sorted(asked) == ["alice", "bob", "carol"], asked
    midnight = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).strftime("%Y-%m-%d")
    for q in asked.values():
        assert q["expires_at"].startswith(f"{midnight}T00:00:0"), q  # (the store's ISO form, UTC)
        assert "$20" in q["question"]  # it says a limit may be written
    q = asked["alice"]
    hive.host().call("answer", id=q["id"], answer=q["options"][0])  # "raise today's limit to $6.00"
    assert alice.call("turn_ready")["ready"] is True, q["options"][0]
    hive.host().call("answer", id=asked["bob"]["id"], answer="now please, make it $20")
    assert bob.call("turn_ready")["ready"] is True
    bob.call("turn_record", turn=turn(cost=9.0))  # $9.60 spent, about $9 next: within $20, not a proposed $2.40
    assert bob.call("turn_ready")["ready"] is True
    hive.host().call("answer", id=asked["carol"]["id"], answer="no, not today")
    assert carol.call("turn_ready")["ready"] is False


def test_a_harness_cannot_break_the_stats_view_with_a_model_usage_that_is_not_numbers(start_broker):
    """One turn_record whose model_usage said `"costUSD": "lots"` made /stats, /api/insight and `hyperhive stats`
    fail with an internal error for everyone."""
    import sqlite3

    from browser import http

    hive = start_broker(AGENTS)
    alice = hive.client("alice")
    for usage in ({"m": {"costUSD": "lots"}}, {"m": {"costUSD": [1]}}, {"m": {"costUSD": -1}}, {"m": "x"}):
        message = refused(lambda: alice.call("turn_record", turn=turn(model_usage=usage)), "bad_request")
        assert '"model_usage.m"' in message and "costUSD" in message, message
    alice.call("turn_record", turn=turn(cost=0.25))
    # a row an older version stored unchecked is read as far as it is numbers
    with sqlite3.connect(hive.config.state_dir / "hive.db") as db:
        db.execute("UPDATE turns SET model_usage = ?", (json.dumps({"m": {"costUSD": "lots"}}),))
    report = http(hive.dashboard_url, "GET", "/api/insight")
    assert report.status == 200 and report.json()["totals"]["cost_usd"] == 0.25, report.body
    assert report.json()["models"] == {"m": {"turns": 1, "cost_usd": 0.0}}
    assert http(hive.dashboard_url, "GET", "/stats").status == 200
    assert "$0.2500" in hive.cli("stats").stdout


def test_the_dashboards_insight_routes_refuse_a_name_that_never_was_an_agent_and_keep_one_that_was(start_broker):
    """/api/reminders?agent=alcie answered [] and /api/agents/alcie/logs "no log yet", as for a quiet agent;
    and the stats of an agent no longer declared were not_found though its turns are listed."""
    from browser import http

    hive = start_broker(AGENTS)
    hive.client("alice").call("turn_record", turn=turn(cost=0.25))
    url = hive.dashboard_url
    for path in ("/api/reminders?agent=alcie", "/api/agents/alcie/logs", "/api/agents/alcie/logs/stream",
                 "/api/insight?agent=alcie", "/stats?agent=alcie"):
        reply = http(url, "GET", path)
        said = reply.error["message"] if path.startswith("/api/") else reply.body.decode()
        assert reply.status == 404 and ("no agent &#34;alcie&#34;" in said or 'no agent "alcie"' in said), (
            path, reply.status, reply.body[:300])
    assert http(url, "GET", "/api/reminders?agent=bob").json() == {"reminders": []}
    assert http(url, "GET", "/api/agents/bob/logs").status == 200
    path = hive.config_path
    path.write_text(json.dumps({**json.loads(path.read_text()), "agents": {"bob": {}}}))
    wait_for(lambda: "config reloaded" in hive.log(), timeout=15, message="alice no longer declared")
    report = http(url, "GET", "/api/insight?agent=alice")
    assert report.status == 200 and report.json()["totals"]["cost_usd"] == 0.25, report.body
    assert "$0.2500" in hive.cli("stats", "alice").stdout
    page = http(url, "GET", "/stats?agent=alice").body.decode()
    assert '<option value="alice" selected' in page and "$0.2500" in page
