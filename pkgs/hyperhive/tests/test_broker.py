"""The broker, end to end: a real ``hyperhive serve`` process and its Unix sockets.

The service runs with ``--no-agents`` here: the tests themselves play the agents on the sockets.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time

import pytest

from conftest import HiveProcess, wait_for, write_config
from hyperhive.errors import HiveError
from hyperhive.transport import Client


def stored_messages(hp) -> list[tuple]:
    db = sqlite3.connect(hp.config.db_path)
    try:
        return db.execute("SELECT sender, recipient, kind, body FROM messages ORDER BY id").fetchall()
    finally:
        db.close()


def raw_exchange(path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(payload)
        return json.loads(s.makefile("rb").readline())


def test_message_crosses_from_one_agent_to_another(start_broker):
    hp = start_broker()
    alice, bob = hp.client("alice"), hp.client("bob")
    assert alice.call("whoami") == {"name": "alice", "role": "agent"}
    sent = alice.call("send", to="bob", body="the docs need a section on recv")
    got = bob.call("recv", wait_seconds=0)
    assert [m["id"] for m in got["messages"]] == [sent["id"]]
    message = got["messages"][0]
    assert (message["from"], message["to"], message["kind"], message["body"]) == (
        "alice", "bob", "message", "the docs need a section on recv")
    assert message["sent_at"].endswith("Z")
    assert bob.call("ack", ids=[sent["id"]]) == {"acked": 1}
    assert bob.call("status") == {"unread": 0, "leased": 0}


def test_messages_come_oldest_first_and_max_limits_a_batch(start_broker):
    hp = start_broker()
    alice, bob = hp.client("alice"), hp.client("bob")
    ids = [alice.call("send", to="bob", body=f"m{i}")["id"] for i in range(5)]
    first = bob.call("recv", max=3)
    assert [m["id"] for m in first["messages"]] == ids[:3]
    assert first["unread"] == 2
    rest = bob.call("recv", max=10)
    assert [m["id"] for m in rest["messages"]] == ids[3:]
    assert bob.call("status") == {"unread": 0, "leased": 5}


def test_peek_on_an_empty_inbox_returns_at_once(start_broker):
    hp = start_broker()
    bob = hp.client("bob")
    for wait in (None, 0):
        started = time.monotonic()
        args = {} if wait is None else {"wait_seconds": wait}
        assert bob.call("recv", **args) == {"messages": [], "unread": 0}
        assert time.monotonic() - started < 1.0


def test_parked_recv_wakes_on_send(start_broker):
    hp = start_broker()
    bob, alice = hp.client("bob"), hp.client("alice")
    result = {}

    def park():
        started = time.monotonic()
        result["got"] = bob.call("recv", wait_seconds=30)
        result["waited"] = time.monotonic() - started

    waiter = threading.Thread(target=park)
    waiter.start()
    time.sleep(0.3)  # let it park
    assert waiter.is_alive(), "recv with wait_seconds must park when the inbox is empty"
    sent_at = time.monotonic()
    alice.call("send", to="bob", body="wake up")
    waiter.join(10)
    assert not waiter.is_alive()
    assert [m["body"] for m in result["got"]["messages"]] == ["wake up"]
    assert result["waited"] < 29  # woke on the send, not at the end of the wait
    assert time.monotonic() - sent_at < 2


def test_parked_recv_with_nothing_sent_returns_empty_after_its_wait(start_broker):
    hp = start_broker()
    bob = hp.client("bob")
    started = time.monotonic()
    assert bob.call("recv", wait_seconds=0.5) == {"messages": [], "unread": 0}
    assert 0.45 <= time.monotonic() - started < 5


def test_wait_is_capped_by_recv_max_wait_seconds(start_broker):
    hp = start_broker(broker={"recvMaxWaitSeconds": 1})
    bob = hp.client("bob")
    started = time.monotonic()
    assert bob.call("recv", wait_seconds=3600) == {"messages": [], "unread": 0}
    assert 0.9 <= time.monotonic() - started < 5


def test_a_denied_send_leaves_nothing_stored(start_broker):
    hp = start_broker(agents={"alice": {"allowedRecipients": ["manager"]}, "bob": {}})
    alice = hp.client("alice")
    with pytest.raises(HiveError) as denied:
        alice.call("send", to="bob", body="not allowed")
    assert denied.value.code == "forbidden"
    assert '"bob"' in denied.value.message and "manager" in denied.value.message
    assert stored_messages(hp) == []
    assert hp.client("bob").call("recv") == {"messages": [], "unread": 0}
    # the manager is never restricted, and alice may still write where her policy allows
    hp.client("manager").call("send", to="bob", body="from the manager")
    alice.call("send", to="manager", body="allowed")
    assert [r[3] for r in stored_messages(hp)] == ["from the manager", "allowed"]


def test_nobody_can_send_as_another_agent(start_broker):
    hp = start_broker()
    alice = hp.client("alice")
    # a sender named in the request is refused, and the socket decides who sent
    with pytest.raises(HiveError) as refused:
        alice.call("send", to="bob", body="forged", **{"from": "manager"})
    assert refused.value.code == "bad_request"
    response = alice.request({"op": "send", "to": "bob", "body": "hello"})
    assert response["ok"]
    assert hp.client("bob").call("recv")["messages"][0]["from"] == "alice"
    assert hp.client("bob").call("whoami")["name"] == "bob"
    # an agent cannot use the operator's socket: it is root's only
    assert hp.config.host_socket.stat().st_mode & 0o777 == 0o600


def test_a_leased_message_that_is_never_acked_comes_again(start_broker):
    hp = start_broker()
    hp.client("alice").call("send", to="bob", body="do it")
    bob = hp.client("bob")
    first = bob.call("recv", lease_seconds=0.3)["messages"]
    assert [m["body"] for m in first] == ["do it"]
    assert bob.call("recv")["messages"] == []  # leased: not handed out twice at once
    # a parked recv wakes when the lease lapses, without anyone sending
    again = bob.call("recv", wait_seconds=10)["messages"]
    assert [m["id"] for m in again] == [first[0]["id"]]
    bob.call("ack", ids=[first[0]["id"]])
    time.sleep(0.1)
    assert bob.call("recv", wait_seconds=0.5)["messages"] == []


def test_acks_only_touch_the_callers_own_messages(start_broker):
    hp = start_broker()
    msg = hp.client("alice").call("send", to="bob", body="for bob")
    assert hp.client("manager").call("ack", ids=[msg["id"]]) == {"acked": 0}
    assert hp.client("bob").call("status") == {"unread": 1, "leased": 0}


def test_kill_9_after_a_burst_of_acknowledged_sends_loses_nothing(start_broker):
    hp = start_broker(limits={"maxUnackedPerSender": 1000})
    alice = hp.client("alice")
    ids = [alice.call("send", to="bob", body=f"burst {i}")["id"] for i in range(300)]
    leased = hp.client("bob").call("recv", max=10)["messages"]
    hp.kill9()
    hp.start()
    got = hp.client("bob").call("recv", max=1000)["messages"]
    # every acknowledged send survived, and what was leased before the crash was requeued at start
    assert [m["id"] for m in got] == ids
    assert leased[0]["id"] == ids[0]


@pytest.mark.parametrize("payload, code", [
    (b"this is not json\n", "bad_request"),
    (b"[1, 2, 3]\n", "bad_request"),
    (b'"a string"\n', "bad_request"),
    (b"\xff\xfe\n", "bad_request"),
    (b'{"op": "no_such_op"}\n', "bad_request"),
    (b'{"to": "bob"}\n', "bad_request"),
    (b'{"op": "send", "to": "carl", "body": "x"}\n', "not_found"),
    (b'{"op": "send", "to": "bob"}\n', "bad_request"),
    (b'{"op": "send", "to": "bob", "body": 5}\n', "bad_request"),
    (b'{"op": "send", "to": "bob", "body": ""}\n', "bad_request"),
    (b'{"op": "recv", "wait_seconds": -1}\n', "bad_request"),
    (b'{"op": "ack", "ids": ["x"]}\n', "bad_request"),
    (b'{"op": "request_spawn", "name": "zed"}\n', "forbidden"),
])
def test_bad_requests_get_their_error_and_the_connection_still_works(start_broker, payload, code):
    hp = start_broker()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(hp.config.agent_socket("alice")))
        f = s.makefile("rb")
        s.sendall(payload)
        response = json.loads(f.readline())
        if code == "forbidden" and response["error"]["code"] == "bad_request":
            pytest.skip("request_spawn is not built into this tree")
        assert response["ok"] is False
        assert response["error"]["code"] == code
        assert response["error"]["message"]
        s.sendall(b'{"op": "whoami"}\n')
        assert json.loads(f.readline()) == {"ok": True, "result": {"name": "alice", "role": "agent"}}


def test_unknown_recipient_names_the_known_ones(start_broker):
    hp = start_broker()
    with pytest.raises(HiveError) as e:
        hp.client("alice").call("send", to="carl", body="hi")
    assert e.value.code == "not_found"
    assert '"carl"' in e.value.message and "bob" in e.value.message


def test_an_empty_message_is_refused_and_stores_nothing(start_broker):
    """An empty or blank body would wake its recipient into a model turn about nothing: the agent's socket and the
    operator's CLI refuse it (as the dashboard does), and nothing is stored."""
    hp = start_broker()
    for body in ("", "  \n\t "):
        with pytest.raises(HiveError) as e:
            hp.client("alice").call("send", to="bob", body=body)
        assert e.value.code == "bad_request" and '"body" is empty' in e.value.message
        refused = hp.cli("send", "bob", body, check=False)
        assert refused.returncode != 0 and '"body" is empty' in refused.stderr
    assert stored_messages(hp) == []
    assert hp.client("bob").call("status") == {"unread": 0, "leased": 0}
    hp.client("alice").call("send", to="bob", body=" x ")  # blank around text is text
    assert [r[3] for r in stored_messages(hp)] == [" x "]


def test_oversized_requests_are_refused_and_the_connection_survives(start_broker):
    hp = start_broker(broker={"maxMessageBytes": 1024})
    alice = hp.client("alice")
    # a body over the limit inside a well-framed request: too_large, nothing stored
    with pytest.raises(HiveError) as e:
        alice.call("send", to="bob", body="x" * 1025)
    assert e.value.code == "too_large" and "1024" in e.value.message
    # a line far past the limit plus envelope: too_large, the rest of the line is skipped
    huge = json.dumps({"op": "send", "to": "bob", "body": "y" * 200_000}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(hp.config.agent_socket("alice")))
        f = s.makefile("rb")
        s.sendall(huge + b'{"op": "status"}\n')
        assert json.loads(f.readline())["error"]["code"] == "too_large"
        assert json.loads(f.readline()) == {"ok": True, "result": {"unread": 0, "leased": 0}}
    alice.call("send", to="bob", body="x" * 1024)  # exactly the limit is fine
    assert [len(r[3]) for r in stored_messages(hp)] == [1024]


def test_many_requests_on_one_connection(start_broker):
    hp = start_broker()
    alice = hp.client("alice")
    for i in range(50):
        alice.call("send", to="bob", body=str(i))
    assert hp.client("bob").call("status") == {"unread": 50, "leased": 0}


def test_operator_verbs_over_the_host_socket(start_broker):
    hp = start_broker()
    listed = hp.cli("list").stdout
    assert "alice" in listed and "bob" in listed and "manager" in listed
    sent = hp.cli("send", "bob", "hello from the operator").stdout
    assert "sent #" in sent
    got = hp.client("bob").call("recv")["messages"][0]
    assert (got["from"], got["body"]) == ("operator", "hello from the operator")
    hp.client("bob").call("send", to="operator", body="hello operator")
    inbox = hp.cli("inbox").stdout
    assert "bob -> operator" in inbox and "hello operator" in inbox
    as_json = json.loads(hp.cli("inbox", "--json").stdout)
    assert as_json["messages"][-1]["body"] == "hello operator"
    refused = hp.cli("send", "carl", "x", check=False)
    assert refused.returncode != 0 and 'unknown recipient "carl"' in refused.stderr


def test_cli_says_clearly_when_the_service_is_not_running(hive_dir):
    import subprocess
    import sys

    path = write_config(hive_dir)
    result = subprocess.run([sys.executable, "-m", "hyperhive", "list", "--config", str(path)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "cannot connect" in result.stderr and "hyperhive serve" in result.stderr


def test_agent_client_cli(start_broker):
    import subprocess
    import sys

    hp = start_broker()
    sock = str(hp.config.agent_socket("alice"))

    def client(*args):
        r = subprocess.run([sys.executable, "-m", "hyperhive", "client", "--socket", sock, *args],
                           capture_output=True, text=True, timeout=30)
        return r

    assert json.loads(client("send", "bob", "via cli").stdout)["id"] == 1
    assert json.loads(client("status").stdout) == {"unread": 0, "leased": 0}
    denied = client("send", "carl", "x")
    assert denied.returncode != 0 and "not_found" in denied.stderr
    bob = subprocess.run([sys.executable, "-m", "hyperhive", "client", "--socket",
                          str(hp.config.agent_socket("bob")), "recv", "--ack"], capture_output=True, text=True)
    assert json.loads(bob.stdout)["messages"][0]["body"] == "via cli"
    assert hp.client("bob").call("status") == {"unread": 0, "leased": 0}


def test_a_hundred_parked_receivers_all_wake(hive_dir):
    agents = {f"a{i}": {} for i in range(100)}
    # the first start of a hive of 100 creates 100 config repos: give it time on a busy machine
    hp = HiveProcess(write_config(hive_dir, agents), args=("--no-agents",)).start(timeout=300)
    results: dict[str, list] = {}

    def park(name):
        with Client(hp.config.agent_socket(name), timeout=60) as c:
            results[name] = c.call("recv", wait_seconds=30)["messages"]

    try:
        threads = [threading.Thread(target=park, args=(n,)) for n in agents]
        for t in threads:
            t.start()
        time.sleep(0.5)
        manager = hp.client("manager")
        for name in agents:
            manager.call("send", to=name, body=f"hello {name}")
        for t in threads:
            t.join(30)
    finally:
        hp.stop()
    assert {n: [m["body"] for m in msgs] for n, msgs in results.items()} == {
        n: [f"hello {n}"] for n in agents}


def test_a_parked_recv_whose_client_hung_up_leases_nothing(start_broker):
    hp = start_broker()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(hp.config.agent_socket("bob")))
        s.sendall(b'{"op": "recv", "wait_seconds": 60}\n')
        time.sleep(0.3)  # parked
    time.sleep(1.5)  # the broker notices the hang-up within a second
    hp.client("alice").call("send", to="bob", body="for whoever asks next")
    got = hp.client("bob").call("recv")["messages"]
    assert [m["body"] for m in got] == ["for whoever asks next"]


def test_a_half_closed_client_still_gets_its_parked_answer(start_broker):
    hp = start_broker()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(hp.config.agent_socket("bob")))
        s.sendall(b'{"op": "recv", "wait_seconds": 5}\n')
        s.shutdown(socket.SHUT_WR)  # as `printf ... | socat - UNIX-CONNECT:...` does
        time.sleep(1.5)
        hp.client("alice").call("send", to="bob", body="still there")
        response = json.loads(s.makefile("rb").readline())
    assert [m["body"] for m in response["result"]["messages"]] == ["still there"]


# --- leases die with their connection (issue 9) ------------------------------------------------------------


def test_a_lease_is_released_when_its_connection_closes_without_ack(start_broker):
    hp = start_broker()
    sent = hp.client("alice").call("send", to="bob", body="deployed")
    first = Client(hp.config.agent_socket("bob"), timeout=10)
    got = first.call("recv")["messages"]  # leased for the full leaseSeconds (600 s)
    assert [m["id"] for m in got] == [sent["id"]]
    second = hp.client("bob")
    assert second.call("recv")["messages"] == []  # held while its connection lives
    first.close()
    # released at once: the next recv gets it without waiting for the lease to lapse
    again = wait_for(lambda: second.call("recv")["messages"], timeout=5, message="the released message")
    assert [m["id"] for m in again] == [sent["id"]]
    second.call("ack", ids=[sent["id"]])
    assert second.call("status") == {"unread": 0, "leased": 0}


def test_a_closing_connection_wakes_a_parked_recv(start_broker):
    hp = start_broker()
    sent = hp.client("alice").call("send", to="bob", body="killed")
    holder = Client(hp.config.agent_socket("bob"), timeout=10)
    assert holder.call("recv")["messages"][0]["id"] == sent["id"]
    result = {}

    def park():
        with Client(hp.config.agent_socket("bob"), timeout=60) as c:
            started = time.monotonic()
            result["messages"] = c.call("recv", wait_seconds=30)["messages"]
            result["waited"] = time.monotonic() - started

    waiter = threading.Thread(target=park)
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()
    holder.close()
    waiter.join(20)
    assert [m["id"] for m in result["messages"]] == [sent["id"]]
    assert result["waited"] < 10  # woken by the close, not by the 600 s lease or the 30 s wait


def test_an_acknowledged_message_stays_acknowledged_when_its_connection_closes(start_broker):
    hp = start_broker()
    ids = [hp.client("alice").call("send", to="bob", body=f"m{i}")["id"] for i in range(3)]
    with Client(hp.config.agent_socket("bob"), timeout=10) as c:
        got = [m["id"] for m in c.call("recv", max=3)["messages"]]
        assert got == ids
        c.call("ack", ids=ids[:2])
    # only the one not acknowledged comes again
    again = wait_for(lambda: hp.client("bob").call("recv", max=10)["messages"], timeout=5,
                     message="the unacknowledged message")
    assert [m["id"] for m in again] == ids[2:]


def test_a_lapsed_lease_taken_by_another_connection_is_not_released_by_the_first(start_broker):
    hp = start_broker()
    sent = hp.client("alice").call("send", to="bob", body="once")
    first = Client(hp.config.agent_socket("bob"), timeout=10)
    assert first.call("recv", lease_seconds=0.2)["messages"][0]["id"] == sent["id"]
    second = hp.client("bob")
    # the lease lapses by time (a hung but connected harness) and the message comes again to another connection
    got = second.call("recv", wait_seconds=10)["messages"]
    assert [m["id"] for m in got] == [sent["id"]]
    first.close()  # the first holder's close must not take the second's lease away
    time.sleep(0.5)
    assert hp.client("bob").call("status") == {"unread": 0, "leased": 1}
    assert hp.client("bob").call("recv")["messages"] == []


def test_a_killed_harness_process_releases_its_lease(start_broker):
    import subprocess
    import sys

    hp = start_broker()
    sent = hp.client("alice").call("send", to="bob", body="work")
    script = (
        "import sys, time\n"
        "from hyperhive.transport import Client\n"
        "c = Client(sys.argv[1], timeout=10)\n"
        "print(c.call('recv')['messages'][0]['id'], flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(hp.config.agent_socket("bob"))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert int(proc.stdout.readline()) == sent["id"]
        bob = hp.client("bob")
        assert bob.call("status") == {"unread": 0, "leased": 1}
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    again = bob.call("recv", wait_seconds=10)["messages"]
    assert [m["id"] for m in again] == [sent["id"]]


def test_a_parked_recv_whose_client_hung_up_leases_nothing_when_a_send_wakes_it(start_broker):
    # the send woke the dead client's recv, which leased the message to nobody: it was hidden from a live recv
    # until the service noticed the hang-up
    hp = start_broker()
    bob = hp.client("bob")
    for round_ in range(5):
        gone = socket.socket(socket.AF_UNIX)
        gone.connect(str(hp.config.agent_socket("bob")))
        gone.sendall(json.dumps({"op": "recv", "wait_seconds": 60}).encode() + b"\n")
        time.sleep(0.2)  # parked
        gone.close()
        sent = hp.client("alice").call("send", to="bob", body=f"for a live recv {round_}")["id"]
        assert [m["id"] for m in bob.call("recv", max=10)["messages"]] == [sent], round_
        bob.call("ack", ids=[sent])


def test_kill_9_of_the_service_requeues_what_a_live_connection_held(start_broker):
    hp = start_broker()
    sent = hp.client("alice").call("send", to="bob", body="survive")
    holder = Client(hp.config.agent_socket("bob"), timeout=10)
    assert holder.call("recv")["messages"][0]["id"] == sent["id"]
    hp.kill9()
    holder.close()
    hp.start()
    got = hp.client("bob").call("recv")["messages"]
    assert [m["id"] for m in got] == [sent["id"]]


# --- group commit and counts that do not read the backlog (issue 13) -------------------------------------------


def test_kill_9_during_an_eight_client_burst_loses_no_acknowledged_send(start_broker):
    agents = {**{f"s{i}": {} for i in range(8)}, "sink": {}}
    hp = start_broker(agents=agents, limits={"maxUnackedPerSender": 10**6})
    acknowledged: dict[int, str] = {}
    lock = threading.Lock()
    enough = threading.Event()

    def burst(k):
        try:
            with Client(hp.config.agent_socket(f"s{k}"), timeout=30) as c:
                for i in range(100_000):
                    body = f"s{k} #{i}"
                    msg_id = c.call("send", to="sink", body=body)["id"]
                    with lock:
                        acknowledged[msg_id] = body
                        if len(acknowledged) >= 2000:
                            enough.set()
        except (ConnectionError, OSError, ValueError):
            return  # the service died under us: what was answered before counts

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    assert enough.wait(120), "the burst did not get going"
    hp.kill9()  # mid-burst: sends are in flight on all eight connections
    for t in threads:
        t.join(30)
    hp.start()
    stored = dict(sqlite3.connect(hp.config.db_path).execute("SELECT id, body FROM messages").fetchall())
    lost = {i: b for i, b in acknowledged.items() if stored.get(i) != b}
    assert not lost, f"{len(lost)} acknowledged sends lost, e.g. {sorted(lost.items())[:3]}"
    assert len(stored) >= len(acknowledged) >= 2000
    # and the recipient's counts agree with what is stored
    assert hp.client("sink").call("status") == {"unread": len(stored), "leased": 0}


def test_unread_and_leased_counts_follow_sends_acks_and_restarts(start_broker):
    hp = start_broker()
    alice, bob = hp.client("alice"), hp.client("bob")
    ids = [alice.call("send", to="bob", body=f"m{i}")["id"] for i in range(5)]
    assert bob.call("status") == {"unread": 5, "leased": 0}
    got = bob.call("recv", max=2)
    assert got["unread"] == 3 and [m["id"] for m in got["messages"]] == ids[:2]
    assert bob.call("status") == {"unread": 3, "leased": 2}
    assert bob.call("ack", ids=[ids[0], ids[0], 999999]) == {"acked": 1}
    assert bob.call("status") == {"unread": 3, "leased": 1}
    assert bob.call("ack", ids=[ids[0]]) == {"acked": 0}  # twice counts once
    hp.stop()
    hp.start()  # counted again from the database; the lease was requeued
    assert hp.client("bob").call("status") == {"unread": 4, "leased": 0}
    assert hp.client("bob").call("recv", max=10)["unread"] == 0


def test_client_recv_ack_acknowledges_on_the_connection_that_leased(start_broker):
    """``hyperhive client recv --ack`` must not give a message back between its recv and its ack: a receiver
    parked on the same inbox would get it a second time. Both park; a message comes; whoever takes it, it is
    delivered once. (With the recv and the ack on two connections, the first one's close released the lease and
    woke the other receiver before the ack came.)"""
    import subprocess
    import sys
    import threading

    hive = start_broker({"alice": {}, "bob": {}})
    for round_ in range(3):
        cli = subprocess.Popen([sys.executable, "-m", "hyperhive", "client", "--socket",
                                str(hive.config.agent_socket("alice")), "recv", "--wait", "4", "--ack"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # the CLI parks first
        got = []
        other = hive.client("alice", timeout=30)
        t = threading.Thread(target=lambda: got.extend(other.call("recv", wait_seconds=3)["messages"]))
        t.start()
        time.sleep(0.2)
        hive.client("bob").call("send", to="alice", body=f"exactly once {round_}")
        out, err = cli.communicate(timeout=30)
        t.join(10)
        if got:
            other.call("ack", ids=[m["id"] for m in got])
        by_cli = json.loads(out)["messages"] if cli.returncode == 0 else []
        assert cli.returncode == 0, err
        assert len(by_cli) + len(got) == 1, (by_cli, got)
        assert hive.client("alice").call("status") == {"unread": 0, "leased": 0}
