"""Operator questions over the real sockets and the CLI: ask, answer, cancel, expire, and the events they send."""

from __future__ import annotations

import json
import re
import time

from conftest import HiveProcess, event_about, refused, write_config
from hyperhive.store import Store, run_sql


def test_answer_reaches_the_asker_and_the_manager(start_broker):
    hive = start_broker()
    alice = hive.client("alice")
    question_id = alice.call("ask_operator", question="Deploy the docs now?", options=["yes", "no"])["id"]
    assert isinstance(question_id, int)

    listed = hive.host().call("questions")["questions"]
    assert [(q["id"], q["asker"], q["question"], q["options"], q["status"]) for q in listed] == [
        (question_id, "alice", "Deploy the docs now?", ["yes", "no"], "pending")]

    answered = hive.host().call("answer", id=question_id, answer="yes")
    assert answered["status"] == "answered" and answered["answer"] == "yes"

    event = event_about(alice, question_id)
    assert event["from"] == "system"
    assert event["data"]["question"] == "Deploy the docs now?"
    assert event["data"]["answer"] == "yes"
    assert "Deploy the docs now?" in event["body"] and "yes" in event["body"]
    # DESIGN: the manager hears every event about the agents it manages.
    assert event_about(hive.client("manager"), question_id)["data"]["answer"] == "yes"
    assert hive.host().call("questions")["questions"] == []

    message = refused(lambda: hive.host().call("answer", id=question_id, answer="no"), "conflict")
    assert "already" in message or "no longer pending" in message
    # its time reads as every time the operator sees (CLI, pages), not as stored
    assert re.search(r'answered \("yes"\) at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$', message), message
    refused(lambda: hive.host().call("cancel", id=question_id), "conflict")


def test_multi_choice_answer_is_joined_and_cancel_says_cancelled(start_broker):
    hive = start_broker()
    bob = hive.client("bob")
    multi = bob.call("ask_operator", question="Which platforms?", options=["linux", "macos", "windows"],
                     multi=True)["id"]
    hive.host().call("answer", id=multi, answer=["linux", "windows"])
    assert event_about(bob, multi)["data"]["answer"] == "linux, windows"

    plain = bob.call("ask_operator", question="Still there?")["id"]
    cancelled = hive.host().call("cancel", id=plain)
    assert cancelled["status"] == "cancelled"
    event = event_about(bob, plain)
    assert event["data"]["answer"] == "[cancelled]" and "[cancelled]" in event["body"]


def test_a_lapsed_ttl_answers_expired_without_polling_delay(start_broker):
    hive = start_broker()
    alice = hive.client("alice")
    asked = time.monotonic()
    question_id = alice.call("ask_operator", question="Quick: tabs or spaces?", ttl_seconds=0.4)["id"]
    event = event_about(alice, question_id, wait=10)
    assert event["data"]["answer"] == "[expired]"
    assert time.monotonic() - asked < 5
    status = hive.host().call("questions", status="expired")["questions"]
    assert [q["id"] for q in status] == [question_id]
    refused(lambda: hive.host().call("answer", id=question_id, answer="tabs"), "conflict")


def test_bad_questions_and_answers_are_refused_with_a_reason(start_broker):
    hive = start_broker(broker={"maxMessageBytes": 2000})
    alice = hive.client("alice")
    ask = lambda **a: lambda: alice.call("ask_operator", **a)  # noqa: E731
    assert "question" in refused(ask(question="   "), "bad_request")
    assert "question" in refused(ask(), "bad_request")
    assert "options" in refused(ask(question="q", options="yes,no"), "bad_request")
    assert "options[1]" in refused(ask(question="q", options=["yes", 3]), "bad_request")
    assert "options[0]" in refused(ask(question="q", options=[""]), "bad_request")
    assert "repeat" in refused(ask(question="q", options=["a", "a"]), "bad_request")
    assert "multi" in refused(ask(question="q", multi=True), "bad_request")
    assert "multi" in refused(ask(question="q", options=["a"], multi="yes"), "bad_request")
    assert "ttl_seconds" in refused(ask(question="q", ttl_seconds=-1), "bad_request")
    assert "ttl_seconds" in refused(ask(question="q", ttl_seconds="soon"), "bad_request")
    assert "colour" in refused(ask(question="q", colour="red"), "bad_request")
    assert "2000" in refused(ask(question="x" * 2001), "too_large")

    qid = alice.call("ask_operator", question="ok?")["id"]
    host = hive.host()
    assert "answer" in refused(lambda: host.call("answer", id=qid, answer="  "), "bad_request")
    assert "answer" in refused(lambda: host.call("answer", id=qid, answer=[]), "bad_request")
    assert "answer" in refused(lambda: host.call("answer", id=qid), "bad_request")
    assert "#9999" in refused(lambda: host.call("answer", id=9999, answer="x"), "not_found")
    refused(lambda: host.call("cancel", id=9999), "not_found")
    refused(lambda: host.call("answer", id="one", answer="x"), "bad_request")
    # answering and listing are the operator's, over host.sock only
    refused(lambda: alice.call("answer", id=qid, answer="mine"), "forbidden")
    refused(lambda: alice.call("questions"), "forbidden")
    # nothing was lost: the question is still pending, unanswered
    assert [q["id"] for q in host.call("questions")["questions"]] == [qid]


def test_cli_lists_answers_and_cancels(start_broker):
    hive = start_broker()
    alice = hive.client("alice")
    first = alice.call("ask_operator", question="Merge the refactor?\nIt touches 40 files.",
                       options=["merge", "wait"])["id"]
    second = alice.call("ask_operator", question="Lunch?")["id"]

    out = hive.cli("questions").stdout
    assert f"#{first}" in out and "Merge the refactor?" in out and "It touches 40 files." in out
    assert "merge | wait" in out and f"#{second}" in out
    listed = json.loads(hive.cli("questions", "--json").stdout)["questions"]
    assert [q["id"] for q in listed] == [first, second]

    out = hive.cli("answer", str(first), "merge", "it", "today").stdout
    assert "merge it today" in out
    assert event_about(alice, first)["data"]["answer"] == "merge it today"
    assert "cancelled" in hive.cli("cancel", str(second)).stdout
    assert event_about(alice, second)["data"]["answer"] == "[cancelled]"

    again = hive.cli("answer", str(first), "no", check=False)
    assert again.returncode != 0 and "conflict" in again.stderr
    missing = hive.cli("cancel", "777", check=False)
    assert missing.returncode != 0 and "not_found" in missing.stderr and "#777" in missing.stderr
    assert "(no pending questions)" in hive.cli("questions").stdout
    history = hive.cli("questions", "--status", "all").stdout
    assert "answer: merge it today" in history and "[cancelled]" in history


def test_questions_due_while_the_service_was_down_expire_at_start(hive_dir):
    config = write_config(hive_dir)
    db_path = hive_dir / "state" / "hive.db"
    store = Store(db_path)
    now = time.time()
    run_sql(store, "INSERT INTO questions (asker, question, options, multi, created_at, expires_at, status) "
                   "VALUES ('bob', 'Still need me?', '[]', 0, ?, ?, 'pending')", (now - 60, now - 30))
    run_sql(store, "INSERT INTO questions (asker, question, options, multi, created_at, expires_at, status) "
                   "VALUES ('bob', 'Later?', '[]', 0, ?, ?, 'pending')", (now, now + 3600))
    store.close()
    hive = HiveProcess(config, args=("--no-agents",)).start()
    try:
        event = event_about(hive.client("bob"), 1)
        assert event["data"] == {"question_id": 1, "question": "Still need me?", "answer": "[expired]",
                                 "status": "expired", "agent": "bob"}
        assert [q["id"] for q in hive.host().call("questions")["questions"]] == [2]
    finally:
        hive.stop()
