"""The dashboard's JSON API and pages over real HTTP, against a real ``hyperhive serve``: every route, good and
bad input."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from browser import EventStream, http
from conftest import HiveProcess, refused, wait_for, write_config


@pytest.fixture(scope="module")
def hive():
    # One service for the module (starting one takes seconds); each test makes the data it looks at.
    directory = Path(tempfile.mkdtemp(prefix="hh", dir="/tmp"))
    config = write_config(directory, broker={"maxMessageBytes": 4000})
    process = HiveProcess(config, args=("--no-agents",)).start()
    yield process
    process.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def url(hive):
    return hive.dashboard_url


def get(url, path, **kw):
    return http(url, "GET", path, **kw)


def post(url, path, payload=None, **kw):
    return http(url, "POST", path, json=payload if payload is not None else {}, **kw)


def drain(client) -> list[dict]:
    result = client.call("recv", max=100)
    if result["messages"]:
        client.call("ack", ids=[m["id"] for m in result["messages"]])
    return result["messages"]


def assert_error(reply, status: int, code: str, *words: str) -> str:
    assert reply.status == status, reply
    assert reply.headers["Content-Type"].startswith("application/json"), reply.headers
    error = reply.error
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], error
    return error["message"]


# --- /api/state -------------------------------------------------------------------------------------------

def test_state_has_every_section(hive, url):
    asked = hive.client("alice").call("ask_operator", question="state check?", options=["a", "b"])["id"]
    hive.client("bob").call("send", to="operator", body="hello operator")
    state = get(url, "/api/state").json()
    assert list(state)[:7] == ["agents", "tombstones", "drafts", "questions", "inbox", "approvals", "errors"]
    assert state["errors"] == []
    names = [a["name"] for a in state["agents"]]
    assert names[0] == "manager" and set(names) == {"manager", "alice", "bob"}
    alice = next(a for a in state["agents"] if a["name"] == "alice")
    for key in ("state", "deployed_tag", "stale", "stuck", "unread", "leased", "last_turn_at"):
        assert key in alice
    assert alice["deployed_tag"] == "deployed/0" and alice["stale"] is False and alice["stuck"] is False
    question = next(q for q in state["questions"] if q["id"] == asked)
    assert question["asker"] == "alice" and question["options"] == ["a", "b"] and question["multi"] is False
    assert any(m["body"] == "hello operator" and m["from"] == "bob" for m in state["inbox"])
    hive.host().call("cancel", id=asked)


def test_a_section_that_fails_is_reported_and_the_others_still_load(hive, url):
    hive.client("alice").call("ask_operator", question="still listed while approvals break?")
    db = sqlite3.connect(hive.config.db_path)
    try:
        db.execute("ALTER TABLE approvals RENAME TO approvals_away")
        db.commit()
        state = get(url, "/api/state").json()
    finally:
        db.execute("ALTER TABLE approvals_away RENAME TO approvals")
        db.commit()
        db.close()
    assert [e["section"] for e in state["errors"]] == ["approvals"]
    assert "approvals" in state["errors"][0]["error"]  # the cause: no such table
    assert state["approvals"] == []
    assert any(q["question"] == "still listed while approvals break?" for q in state["questions"])
    assert len(state["agents"]) == 3
    assert wait_for(lambda: "section approvals failed to load" in hive.log(), message="the warning in the log")
    assert get(url, "/api/state").json()["errors"] == []
    for q in hive.host().call("questions")["questions"]:
        hive.host().call("cancel", id=q["id"])


def test_a_stopped_agent_with_old_messages_is_not_stuck(hive, url):
    db = sqlite3.connect(hive.config.db_path)
    try:
        db.execute("INSERT INTO messages (sender, recipient, kind, body, sent_at, deliveries) "
                   "VALUES ('manager', 'bob', 'message', 'are you there?', ?, 0)", (time.time() - 7200,))
        db.commit()
    finally:
        db.close()
    bob = next(a for a in get(url, "/api/state").json()["agents"] if a["name"] == "bob")
    assert bob["state"] != "running" and bob["unread"] >= 1 and bob["stuck"] is False  # serve --no-agents
    drain(hive.client("bob"))


def test_a_running_agent_whose_harness_takes_nothing_is_stuck(start_hive):
    # The agent's process runs but never receives: a hung harness.
    hung = f"{sys.executable} -c 'import time; time.sleep(600)'"
    hive = start_hive(env={"HYPERHIVE_AGENT_COMMAND": hung})
    url = hive.dashboard_url
    wait_for(lambda: all(a["state"] == "running" for a in get(url, "/api/state").json()["agents"]),
             message="every agent running")
    db = sqlite3.connect(hive.config.db_path)
    try:
        db.execute("INSERT INTO messages (sender, recipient, kind, body, sent_at, deliveries) "
                   "VALUES ('manager', 'bob', 'message', 'are you there?', ?, 0)", (time.time() - 7200,))
        db.execute("INSERT INTO stats (agent, ts, key, value) VALUES ('alice', ?, 'turn.duration_s', 3)",
                   (time.time() - 30,))
        db.commit()
    finally:
        db.close()
    hive.client("manager").call("send", to="alice", body="just sent: not stuck yet")
    agents = {a["name"]: a for a in get(url, "/api/state").json()["agents"]}
    assert agents["bob"]["stuck"] is True
    assert agents["bob"]["stuck_reason"] == "1 message(s) waiting for 2 h; no turn yet"
    assert agents["alice"]["stuck"] is False and agents["alice"]["unread"] == 1
    assert agents["alice"]["last_turn_at"] is not None
    page = get(url, "/").text
    assert 'class="flag bad" title="1 message(s) waiting for 2 h; no turn yet">STUCK' in page


def test_an_agent_whose_turns_keep_failing_is_stuck_with_the_reason(start_hive, hive_dir, claude_cli):
    """The real Claude Code CLI with no login (no account, no API key): every turn fails at once and ends, so no
    clock would call the agent stuck. Three failed turns in a row while its message waits do, with the CLI's
    own reason, in /api/state, the header and `hyperhive list`; a turn that succeeds clears it."""
    config_dir = hive_dir / "no-login"
    config_dir.mkdir()
    hive = start_hive({"alice": {}}, env={"CLAUDE_CONFIG_DIR": str(config_dir)},
                      harness={"claudeCommand": [claude_cli]})
    url = hive.dashboard_url
    hive.host().call("send", to="alice", body="are you there?")
    alice = wait_for(lambda: next((a for a in get(url, "/api/state").json()["agents"]
                                   if a["name"] == "alice" and a["stuck"]), None), timeout=90,
                     message="alice called stuck after three failed turns")
    assert alice["stuck_reason"].startswith("its last 3 turns failed (claude exited with status 1: "), alice
    assert "Not logged in" in alice["stuck_reason"] and alice["stuck_reason"].endswith("1 message(s) waiting")
    assert "alice" in [a["name"] for a in get(url, "/api/attention").json()["stuck"]]  # (the manager's fail too)
    assert "STUCK (its last 3 turns failed (claude exited with status 1: " in hive.cli("list").stdout
    # Each failed turn keeps its reason: `hyperhive turns` says it, and a restarted service still knows it.
    failed = [t for t in hive.host().call("turns", agent="alice")["turns"] if t["status"] == "failed"]
    assert len(failed) >= 3 and all("Not logged in" in t["error"] for t in failed), failed
    assert "Not logged in" in hive.cli("turns", "alice").stdout
    hive.stop()
    hive = start_hive({"alice": {}}, run_agents=False)
    url = hive.dashboard_url
    assert "Not logged in" in hive.cli("turns", "alice").stdout
    page = get(url, "/agents/alice").text  # the agent page's turns table
    assert "failed <span class=\"dim\">(claude exited with status 1: " in page and "Not logged in" in page
    now = time.time()  # a turn that went well (the next retry is seconds away) clears it
    hive.client("alice").call("turn_record", turn={"started_at": now, "ended_at": now + 1, "status": "ok"})
    assert next(a for a in get(url, "/api/state").json()["agents"] if a["name"] == "alice")["stuck"] is False


# --- messages ---------------------------------------------------------------------------------------------

def test_operator_sends_a_message_and_bad_ones_are_refused(hive, url):
    drain(hive.client("alice"))
    reply = post(url, "/api/messages", {"to": "alice", "body": "from the dashboard API"})
    assert reply.status == 201, reply
    msg_id = reply.json()["id"]
    got = drain(hive.client("alice"))
    assert [(m["id"], m["from"], m["body"]) for m in got] == [(msg_id, "operator", "from the dashboard API")]

    assert_error(post(url, "/api/messages", {"to": "nobody", "body": "x"}), 404, "not_found", "nobody")
    assert_error(post(url, "/api/messages", {"to": "alice", "body": "  "}), 400, "bad_request", "body")
    assert_error(post(url, "/api/messages", {"body": "x"}), 400, "bad_request", "to")
    assert_error(post(url, "/api/messages", {"to": "alice", "body": 5}), 400, "bad_request", "body")
    assert_error(http(url, "POST", "/api/messages", data="{not json", headers={"Content-Type": "application/json"}),
                 400, "bad_request", "not valid JSON")
    assert_error(http(url, "POST", "/api/messages", json=["alice", "hi"]), 400, "bad_request", "JSON object")
    # a body over maxMessageBytes (4000 here) but inside the envelope: the broker's limit, named
    assert_error(post(url, "/api/messages", {"to": "alice", "body": "x" * 4500}), 413, "too_large",
                 "maxMessageBytes")
    # a request over maxMessageBytes plus the envelope is refused before it is read
    assert_error(post(url, "/api/messages", {"to": "alice", "body": "x" * 20000}), 413, "too_large")
    assert drain(hive.client("alice")) == []  # nothing half-sent


def test_message_stream_is_live_and_replays_after_an_id(hive, url):
    first = hive.client("bob").call("send", to="operator", body="before the stream")["id"]
    with EventStream(url, "/api/messages/stream") as stream:
        assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")

        def later():
            time.sleep(0.2)
            hive.client("alice").call("send", to="bob", body="live one")

        threading.Thread(target=later).start()
        event = stream.next_matching(lambda e: e["data"].get("body") == "live one")
        assert event["data"]["from"] == "alice" and event["data"]["to"] == "bob"
        assert int(event["id"]) == event["data"]["id"]
    with EventStream(url, f"/api/messages/stream?since={first - 1}") as stream:
        replayed = stream.next_event()
        assert replayed["data"]["id"] == first and replayed["data"]["body"] == "before the stream"
    with EventStream(url, "/api/messages/stream", headers={"Last-Event-ID": str(first)}) as stream:
        assert stream.next_event()["data"]["id"] > first
    with EventStream(url, "/api/messages/stream?state=1") as stream:
        hive.client("alice").call("ask_operator", question="state event?")
        event = stream.next_matching(lambda e: e["event"] == "state")
        assert event["data"]["section"] == "questions"
    assert_error(get(url, "/api/messages/stream?since=abc"), 400, "bad_request", "since")
    drain(hive.client("bob"))


# --- questions --------------------------------------------------------------------------------------------

def test_question_routes(hive, url):
    alice = hive.client("alice")
    drain(alice)
    qid = alice.call("ask_operator", question="Ship it?", options=["ship", "hold"])["id"]
    assert get(url, f"/api/questions/{qid}").json()["question"] == "Ship it?"
    assert qid in [q["id"] for q in get(url, "/api/questions").json()["questions"]]

    assert_error(post(url, f"/api/questions/{qid}/answer", {"answer": ""}), 400, "bad_request", "answer")
    assert_error(post(url, f"/api/questions/{qid}/answer", {}), 400, "bad_request", "answer")
    assert_error(post(url, f"/api/questions/{qid}/answer", {"answer": 7}), 400, "bad_request", "answer")
    assert_error(post(url, "/api/questions/99999/answer", {"answer": "x"}), 404, "not_found", "#99999")
    assert_error(post(url, "/api/questions/abc/answer", {"answer": "x"}), 400, "bad_request", "abc")
    assert_error(get(url, f"/api/questions/{qid}/answer"), 405, "bad_request", "POST")
    assert_error(get(url, "/api/questions?status=weird"), 400, "bad_request", "weird")

    reply = post(url, f"/api/questions/{qid}/answer", {"answer": "ship"})
    assert reply.status == 200 and reply.json()["status"] == "answered" and reply.json()["answer"] == "ship"
    events = [m for m in drain(alice) if m["kind"] == "event"]
    assert [(e["data"]["question_id"], e["data"]["answer"]) for e in events] == [(qid, "ship")]
    assert_error(post(url, f"/api/questions/{qid}/answer", {"answer": "hold"}), 409, "conflict")
    assert_error(post(url, f"/api/questions/{qid}/cancel"), 409, "conflict")

    multi = alice.call("ask_operator", question="Pick", options=["x", "y", "z"], multi=True)["id"]
    assert post(url, f"/api/questions/{multi}/answer", {"answer": ["x", "z"]}).json()["answer"] == "x, z"
    other = alice.call("ask_operator", question="Cancel me")["id"]
    assert post(url, f"/api/questions/{other}/cancel").json()["status"] == "cancelled"
    assert_error(post(url, "/api/questions/424242/cancel"), 404, "not_found")
    answers = [m["data"]["answer"] for m in drain(alice) if m["kind"] == "event"]
    assert answers == ["x, z", "[cancelled]"]


# --- approvals, spawn, agent actions ----------------------------------------------------------------------

def test_approval_routes(hive, url):
    approval_id = hive.client("manager").call("request_spawn", name="carol")["approval_id"]
    assert_error(post(url, "/api/spawn", {"name": "carol"}), 409, "conflict", "already")
    assert_error(post(url, "/api/spawn", {"name": "Bad Name"}), 400, "bad_request", "invalid agent name")
    assert_error(post(url, "/api/spawn", {"name": "abcdefghij"}), 400, "bad_request", "1 to 9 characters")
    assert_error(post(url, "/api/spawn", {}), 400, "bad_request", "name")

    listed = get(url, "/api/approvals").json()["approvals"]
    assert [(a["id"], a["kind"], a["agent"], a["requested_by"]) for a in listed if a["id"] == approval_id] == [
        (approval_id, "spawn", "carol", "manager")]
    one = get(url, f"/api/approvals/{approval_id}").json()
    assert one["status"] == "pending" and "agent.nix" in one["diff"]
    assert approval_id in [a["id"] for a in get(url, "/api/state").json()["approvals"]]

    denied = post(url, f"/api/approvals/{approval_id}/deny", {"reason": "not today"})
    assert denied.status == 200 and denied.json()["status"] == "denied" and denied.json()["note"] == "not today"
    assert_error(post(url, f"/api/approvals/{approval_id}/deny", {"reason": "again"}), 409, "conflict")
    assert_error(post(url, f"/api/approvals/{approval_id}/approve"), 409, "conflict")
    assert_error(post(url, "/api/approvals/5555/approve"), 404, "not_found", "5555")
    assert_error(get(url, "/api/approvals/5555"), 404, "not_found")
    assert_error(post(url, "/api/approvals/x/deny"), 400, "bad_request")
    assert_error(post(url, f"/api/approvals/{approval_id}/deny", {"reason": ["a"]}), 400, "bad_request", "reason")
    assert_error(get(url, f"/api/approvals/{approval_id}/approve"), 405, "bad_request")
    manager_events = [m for m in drain(hive.client("manager")) if m["kind"] == "event"]
    assert any("not today" in m["body"] for m in manager_events)

    assert_error(post(url, f"/api/approvals/{approval_id}/deny", {}), 400, "bad_request", "note")
    second = hive.client("manager").call("request_spawn", name="dave")["approval_id"]
    approved = post(url, f"/api/approvals/{second}/approve")
    assert approved.status == 200 and approved.json()["status"] in ("approved", "building", "deployed")
    assert wait_for(lambda: get(url, f"/api/approvals/{second}").json().get("status") in ("deployed", "failed"),
                    timeout=60, interval=0.2, message="the deploy to finish")


def test_agent_action_routes(hive, url):
    drain(hive.client("manager"))
    reply = post(url, "/api/agents/bob/kill")
    assert reply.status == 200, reply
    assert reply.json()["name"] == "bob"
    assert any("bob was killed by operator" in m["body"] for m in drain(hive.client("manager")))
    assert_error(post(url, "/api/agents/bob/explode"), 400, "bad_request", "explode")
    assert_error(post(url, "/api/agents/zed/kill"), 404, "not_found", "zed")
    assert_error(post(url, "/api/agents/BAD!/kill"), 400, "bad_request")
    assert_error(post(url, "/api/agents/alice/destroy"), 409, "conflict", "declared")
    assert_error(get(url, "/api/agents/bob/kill"), 405, "bad_request")


# --- telemetry, turns, notes ------------------------------------------------------------------------------

def test_stats_route(hive, url):
    now = time.time()
    hive.client("alice").call("stats", samples=[
        {"key": "notes.bytes", "value": 4.5, "ts": now - 100},
        {"key": "turn.tool_calls", "value": 3, "ts": now - 100},
        {"key": "notes.bytes", "value": 6, "ts": now - 10}])
    series = get(url, f"/api/stats?agent=alice&key=notes.bytes&since={now - 200}").json()
    assert [(s["agent"], s["key"], s["value"]) for s in series] == [
        ("alice", "notes.bytes", 4.5), ("alice", "notes.bytes", 6.0)]
    assert series[0]["ts"] == pytest.approx(now - 100)
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 50))
    assert [s["value"] for s in get(url, f"/api/stats?agent=alice&key=notes.bytes&since={iso}").json()] == [6.0]
    keys = {s["key"] for s in get(url, f"/api/stats?agent=alice&since={now - 200}").json()}
    assert {"notes.bytes", "turn.tool_calls"} <= keys
    assert get(url, f"/api/stats?agent=bob&key=notes.bytes&since={now - 200}").json() == []
    assert_error(get(url, "/api/stats?since=yesterday"), 400, "bad_request", "since")
    assert_error(get(url, "/api/stats?limit=0"), 400, "bad_request", "limit")
    assert_error(get(url, "/api/stats?agent=../etc"), 400, "bad_request")


def test_the_model_route_refuses_a_model_with_reset_as_the_socket_does(hive, url):
    """{"model": "x", "reset": true} silently reset: the operator's model was dropped without a word."""
    model = "/api/agents/alice/model"
    assert post(url, model, {"model": "claude-opus-4-1"}).json()["override"] == "claude-opus-4-1"
    for payload in ({"model": "claude-haiku-4-5", "reset": True}, {"model": "", "reset": True}):
        message = assert_error(post(url, model, payload), 400, "bad_request", '"model"', '"reset"')
        # the same words as the host socket's op
        assert message == refused(lambda: hive.host().call("model", name="alice", **payload), "bad_request")
        assert get(url, model).json()["override"] == "claude-opus-4-1"  # nothing changed
    # as a plain form: a model typed with reset is refused too; an empty model field with reset is a reset
    page = get(url, "/agents/alice")
    sid = re.search(r"hh_sid=([^;]+)", page.headers["Set-Cookie"]).group(1)
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)
    form = {"headers": {"Cookie": f"hh_sid={sid}", "Accept": "application/json"}}
    assert_error(http(url, "POST", model, data={"csrf_token": csrf, "model": "claude-haiku-4-5", "reset": "1"},
                      **form), 400, "bad_request", '"model"', '"reset"')
    assert get(url, model).json()["override"] == "claude-opus-4-1"
    reply = http(url, "POST", model, data={"csrf_token": csrf, "model": " ", "reset": "1"}, **form)
    assert reply.status == 200 and reply.json()["override"] is None, reply
    post(url, model, {"model": "claude-opus-4-1"})
    assert post(url, model, {"reset": True}).json()["override"] is None


def test_turn_stream_sends_history_then_live_events(hive, url):
    alice = hive.client("alice")
    alice.call("turn_event", event={"type": "turn_start", "data": {"from": "bob"}})
    with EventStream(url, "/api/agents/alice/turns/stream") as stream:
        first = stream.next_event()["data"]
        assert first["agent"] == "alice" and first["type"] == "turn_start"
        alice.call("turn_event", event={"type": "event", "data": {"type": "assistant", "message": {
            "content": [{"type": "text", "text": "thinking about docs"}]}}})
        live = stream.next_matching(lambda e: e["data"]["type"] == "event")["data"]
        assert live["data"]["message"]["content"][0]["text"] == "thinking about docs"
    assert_error(get(url, "/api/agents/nobody/turns/stream"), 404, "not_found", "nobody")


def test_notes_route(hive, url):
    notes = hive.config.state_dir / "agents" / "alice" / "state" / "notes.md"
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text("# alice's notes\n<script>alert(1)</script>\n", encoding="utf-8")
    reply = get(url, "/api/agents/alice/notes")
    assert reply.status == 200 and reply.text.startswith("# alice's notes")
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert "sandbox" in reply.headers["Content-Security-Policy"]
    page = get(url, "/agents/alice").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert_error(get(url, "/api/agents/bob/notes"), 404, "not_found", "no notes")


def test_notes_are_only_the_agents_own_regular_file(hive, url, tmp_path):
    """An agent writes its own state dir: a notes.md that is a symlink (to a host file) or a FIFO is refused by the
    route and the page, never followed, and never leaves a request hanging."""
    notes = hive.config.state_dir / "agents" / "carol" / "state" / "notes.md"
    notes.parent.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "host-secret"
    secret.write_text("host secret\n")
    notes.symlink_to(secret)
    try:
        reply = get(url, "/api/agents/carol/notes")
        assert reply.status in (403, 404) and b"host secret" not in reply.body, reply
        assert reply.error["code"] in ("forbidden", "not_found")
        page = get(url, "/agents/carol")
        assert page.status == 200 and "host secret" not in page.text
        notes.unlink()
        os.mkfifo(notes)
        reply = get(url, "/api/agents/carol/notes", timeout=5)
        assert reply.status in (403, 404), reply
        assert get(url, "/agents/carol", timeout=5).status == 200
    finally:
        notes.unlink(missing_ok=True)


# --- the config repo browser ------------------------------------------------------------------------------

def test_repo_browser_routes(hive, url):
    tags = get(url, "/api/agents/alice/repo/tags").json()
    assert [t["name"] for t in tags["deployed"]] == ["deployed/0"]
    log = get(url, "/api/agents/alice/repo/log").json()
    assert log and {"sha", "short", "author", "date", "message"} <= set(log[0])
    sha = log[0]["sha"]
    diff = get(url, f"/api/agents/alice/repo/diff/{sha}").json()
    assert diff["rev"] == sha and "agent.nix" in diff["diff"]
    assert "agent.nix" in get(url, "/api/agents/alice/repo/diff/deployed/0").json()["diff"]
    raw = get(url, f"/api/agents/alice/repo/file/{sha}/agent.nix")
    assert raw.status == 200 and "hyperhive" in raw.text
    assert raw.headers["Content-Type"].startswith("text/plain")
    assert "sandbox" in raw.headers["Content-Security-Policy"]
    assert get(url, "/api/agents/alice/repo/file/deployed/0/agent.nix").text == raw.text
    assert get(url, "/api/agents/alice/repo/log?rev=main&limit=1").json()[0]["sha"] == sha

    assert_error(get(url, "/api/agents/nobody/repo/tags"), 404, "not_found", "nobody")
    assert_error(get(url, "/api/agents/alice/repo/diff/no-such-rev"), 404, "not_found")
    assert_error(get(url, "/api/agents/alice/repo/file/main/missing.nix"), 404, "not_found")
    assert_error(get(url, "/api/agents/alice/repo/file/main/..%2F..%2Fhive.db"), 400, "bad_request")
    assert_error(get(url, "/api/agents/alice/repo/log?limit=abc"), 400, "bad_request", "limit")
    meta = get(url, "/api/meta/log").json()
    assert any("deploy alice deployed/0" in c["message"] for c in meta)
    assert_error(get(url, "/api/meta/log?limit=-1"), 400, "bad_request")


def test_an_unreadable_repo_fails_its_panels_and_the_agent_page_still_renders(hive, url):
    notes = hive.config.state_dir / "agents" / "alice" / "state" / "notes.md"
    notes.parent.mkdir(parents=True, exist_ok=True)
    notes.write_text("notes beside a broken repo\n", encoding="utf-8")
    applied = hive.config.state_dir / "applied" / "alice"
    (applied / ".git").rename(applied / ".git-away")
    try:
        (applied / ".git").mkdir()  # there, but not a repository
        reply = get(url, "/agents/alice")
        assert_error(get(url, "/api/agents/alice/repo/tags"), 404, "not_found", "no git repository")
    finally:
        (applied / ".git").rmdir()
        (applied / ".git-away").rename(applied / ".git")
    assert reply.status == 200
    assert reply.text.count(f'<p class="note bad">no git repository at {applied}</p>') == 2  # tags and log
    assert "notes beside a broken repo" in reply.text
    assert "deployed/0" in get(url, "/agents/alice").text


# --- pages and the HTTP edges -----------------------------------------------------------------------------

# What needs the operator first; each heading's plain name is its text (the leet name is decoration).
SECTIONS = ["Questions for you", "Approvals waiting", "Your inbox", "Agents", "Drafts", "Destroyed agents, kept",
            "Live message flow"]


def test_pages_render_with_sections_in_order(hive, url):
    page = get(url, "/")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    found = [re.search(r'<span class="title"[^>]*>' + re.escape(s) + '</span>', page.text) for s in SECTIONS]
    positions = [m.start() if m else -1 for m in found]
    assert all(p > 0 for p in positions) and positions == sorted(positions), positions
    assert 'name="csrf-token"' in page.text
    assert get(url, "/agents/alice").status == 200
    assert get(url, "/agents/manager").status == 200
    assert get(url, "/agents/nobody").status == 404
    assert get(url, "/agents/..").status in (400, 404)
    approval_id = hive.client("manager").call("request_spawn", name="erin")["approval_id"]
    approval = get(url, f"/approvals/{approval_id}")
    assert approval.status == 200 and "agent.nix" in approval.text and "approve" in approval.text
    assert get(url, "/approvals/777").status == 404
    meta = get(url, "/meta")
    assert meta.status == 200 and "deploy alice deployed/0" in meta.text
    assert get(url, "/favicon.ico").headers["Content-Type"].startswith("image/svg+xml")
    fragment = get(url, "/fragments/home").text
    assert "C0NTAINERS" in fragment and "<html" not in fragment
    sha = get(url, "/api/agents/alice/repo/log").json()[0]["sha"]
    with_diff = get(url, f"/agents/alice?rev={sha}").text
    assert re.search(r'class="dl (add|file)"', with_diff)
    post(url, f"/api/approvals/{approval_id}/deny", {"reason": "page test"})


def test_unknown_routes_and_wrong_methods_answer_json(url):
    assert_error(get(url, "/api/nothing"), 404, "not_found")
    assert_error(http(url, "DELETE", "/api/state"), 405, "bad_request", "GET")
    assert_error(get(url, "/api/messages"), 405, "bad_request", "POST")
    assert_error(http(url, "PUT", "/api/questions/1/answer", json={"answer": "x"}), 405, "bad_request")
    missing_page = get(url, "/no/such/page")
    assert missing_page.status == 404 and missing_page.headers["Content-Type"].startswith("text/html")


def test_a_state_directory_swapped_for_a_link_is_not_read(hive, url, tmp_path):
    """The manager's container writes agents/: a state directory replaced by a link to a host directory is not
    read through, by the notes route or the agent page."""
    state = hive.config.state_dir / "agents" / "carol" / "state"
    state.parent.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "notes.md").write_text("host secret\n")
    if state.exists():
        shutil.rmtree(state)
    state.symlink_to(outside)
    try:
        reply = get(url, "/api/agents/carol/notes")
        assert reply.status == 403 and b"host secret" not in reply.body, reply
        assert "symbolic link" in reply.error["message"]
        page = get(url, "/agents/carol")
        assert page.status == 200 and "host secret" not in page.text and "symbolic link" in page.text
    finally:
        state.unlink()
