"""``hyperhive mcp`` against the MCP specification: raw JSON-RPC lines to the real server process, which forwards
to a real service (``serve --no-agents``: the test plays the other agents on their sockets)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import wait_for
from harness_support import McpPeer, broker_only

AGENT_TOOLS = ["send", "recv", "ask_operator", "list_agents", "remind"]
MANAGER_TOOLS = AGENT_TOOLS[:4] + ["request_spawn", "request_spawn_draft", "request_spawn_commit",
                                   "request_apply_commit", "kill", "start", "restart", "update", "remind",
                                   "get_logs"]


@pytest.fixture(scope="module")
def shared_hive():
    """One service for the tests that change nothing in it (the protocol itself)."""
    with broker_only() as hp:
        yield hp


@pytest.fixture
def peer(shared_hive):
    p = McpPeer(shared_hive.config.agent_socket("alice"))
    yield p
    p.close()


@pytest.fixture
def hive(start_broker):
    """A service of its own, for tests that send and receive."""
    return start_broker()


@pytest.fixture
def own_peer(hive):
    p = McpPeer(hive.config.agent_socket("alice"))
    yield p
    p.close()


def test_initialize_answers_the_clients_version_when_supported(peer):
    answer = peer.request("initialize", {"protocolVersion": "2025-03-26", "capabilities": {"roots": {}},
                                         "clientInfo": {"name": "claude-code", "version": "2.0.0"}})
    result = answer["result"]
    assert answer["jsonrpc"] == "2.0"
    assert result["protocolVersion"] == "2025-03-26"
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert result["serverInfo"]["name"] == "hyperhive" and result["serverInfo"]["version"]


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"])
def test_every_supported_version_is_answered_as_asked(peer, version):
    assert peer.initialize(version)["result"]["protocolVersion"] == version


@pytest.mark.parametrize("asked", ["1999-01-01", "2026-07-28"])
def test_initialize_answers_its_latest_handshake_version_when_the_clients_is_not_one(peer, asked):
    # 2026-07-28 is served per request (no handshake), so an initialize naming it gets the latest legacy version.
    answer = peer.initialize(asked)
    assert answer["result"]["protocolVersion"] == "2025-11-25"


def test_initialize_without_a_version_is_invalid_params_and_the_server_stays_usable(peer):
    answer = peer.request("initialize", {"capabilities": {}})
    assert answer["error"]["code"] == -32602 and "protocolVersion" in answer["error"]["message"]
    assert peer.initialize()["result"]["protocolVersion"] == "2025-06-18"


def test_initialized_notification_gets_no_answer_and_ping_works_before_and_after(peer):
    assert peer.request("ping", rid="p1") == {"jsonrpc": "2.0", "id": "p1", "result": {}}
    peer.request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "t", "version": "1"}})
    peer.notify("notifications/initialized")
    assert peer.quiet()
    assert peer.request("ping")["result"] == {}


def test_requests_other_than_ping_before_initialize_are_refused(peer):
    answer = peer.request("tools/list")
    assert answer["error"]["code"] == -32600 and "initialize" in answer["error"]["message"]


def test_tools_list_of_an_agent_has_no_manager_tools_and_each_tool_has_a_schema(peer):
    peer.initialize()
    tools = peer.request("tools/list")["result"]["tools"]
    assert [t["name"] for t in tools] == AGENT_TOOLS
    for tool in tools:
        assert tool["inputSchema"]["type"] == "object" and len(tool["description"]) > 40
    recv = next(t for t in tools if t["name"] == "recv")
    assert "peek" in recv["description"] and "50 seconds" in recv["description"]
    assert recv["inputSchema"]["properties"]["wait_seconds"]["type"] == "number"


def test_tools_list_of_the_manager_has_its_tools(shared_hive):
    peer = McpPeer(shared_hive.config.agent_socket("manager"))
    try:
        peer.initialize()
        assert [t["name"] for t in peer.request("tools/list")["result"]["tools"]] == MANAGER_TOOLS
    finally:
        peer.close()


def test_a_manager_tool_called_by_an_agent_is_an_unknown_tool(peer):
    peer.initialize()
    answer = peer.call("kill", {"name": "bob"})
    assert answer["error"]["code"] == -32602 and 'unknown tool "kill"' in answer["error"]["message"]


def test_send_is_stored_and_reaches_the_recipient(hive, own_peer):
    own_peer.initialize()
    answer = own_peer.call("send", {"to": "bob", "body": "the docs need a recv section"})
    result = answer["result"]
    assert result["isError"] is False
    message_id = result["structuredContent"]["id"]
    assert json.loads(result["content"][0]["text"])["id"] == message_id
    got = hive.client("bob").call("recv")["messages"]
    assert [(m["id"], m["from"], m["body"]) for m in got] == [(message_id, "alice", "the docs need a recv section")]


def test_a_send_the_broker_refuses_is_a_tool_error_with_the_brokers_sentence(peer):
    peer.initialize()
    result = peer.call("send", {"to": "carl", "body": "hi"})["result"]
    assert result["isError"] is True
    assert 'unknown recipient "carl"' in result["content"][0]["text"]
    assert "structuredContent" not in result


def test_a_policy_denial_names_the_allowed_recipients(start_broker):
    hive = start_broker({"alice": {"allowedRecipients": ["manager"]}, "bob": {}})
    peer = McpPeer(hive.config.agent_socket("alice"))
    try:
        peer.initialize()
        result = peer.call("send", {"to": "bob", "body": "hi"})["result"]
        assert result["isError"] is True
        assert "forbidden" in result["content"][0]["text"] and "allows only manager" in result["content"][0]["text"]
    finally:
        peer.close()


@pytest.mark.parametrize("arguments, problem", [
    ({"to": "bob"}, 'missing argument "body"'),
    ({"to": "bob", "body": 7}, 'argument "body" must be string'),
    ({"to": "bob", "body": "x", "cc": "carl"}, 'unknown argument "cc"'),
])
def test_arguments_that_do_not_fit_the_schema_are_a_tool_error_naming_the_problem(peer, arguments, problem):
    peer.initialize()
    result = peer.call("send", arguments)["result"]
    assert result["isError"] is True and problem in result["content"][0]["text"]


def test_a_tools_call_without_a_name_or_with_non_object_arguments_is_invalid_params(peer):
    peer.initialize()
    assert peer.request("tools/call", {"arguments": {}})["error"]["code"] == -32602
    assert peer.request("tools/call", {"name": "send", "arguments": [1]})["error"]["code"] == -32602


def test_malformed_json_is_a_parse_error_and_the_server_goes_on(peer):
    peer.write("{not json")
    answer = peer.read()
    assert answer["id"] is None and answer["error"]["code"] == -32700
    assert peer.initialize()["result"]


@pytest.mark.parametrize("message", [
    {"id": 1, "method": "ping"},                                  # no "jsonrpc"
    {"jsonrpc": "1.0", "id": 1, "method": "ping"},                # the wrong version
    {"jsonrpc": "2.0", "id": 1, "method": 42},                    # a method that is not a string
    {"jsonrpc": "2.0", "id": 1},                                  # no method at all
])
def test_invalid_requests_are_answered_with_invalid_request(peer, message):
    peer.write(message)
    answer = peer.read()
    assert answer["error"]["code"] == -32600 and answer["id"] == 1


@pytest.mark.parametrize("raw", ['[1, 2]', '"a string"', '{"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}',
                                 '{"jsonrpc": "2.0", "id": true, "method": "ping"}'])
def test_messages_that_are_no_request_at_all_get_invalid_request_with_a_null_id(peer, raw):
    peer.write(raw)
    answer = peer.read()
    assert answer["error"]["code"] == -32600 and answer["id"] is None


def test_a_message_nested_too_deeply_is_a_parse_error_and_the_server_goes_on(peer):
    """Deep nesting made the decoder raise RecursionError, which ended the server: the model lost the hive's tools
    for the rest of its session."""
    peer.write("[" * 100_000 + "]" * 100_000)
    answer = peer.read()
    assert answer["id"] is None and answer["error"]["code"] == -32700 and "nested" in answer["error"]["message"]
    assert peer.initialize()["result"]


def batch(peer, items: list, timeout: float = 10):
    peer.write(items)
    answer = peer.read(timeout)
    assert isinstance(answer, list), answer
    return {json.dumps(a.get("id")): a for a in answer}


def test_a_batch_under_2025_03_26_is_answered_with_one_array_and_what_recv_returned_is_acknowledged(
        hive, own_peer):
    """2025-03-26 (basic/index): implementations MUST support receiving JSON-RPC batches; the answer is one array
    of the requests' responses (JSON-RPC 2.0, "Batch"), notifications answered by nothing."""
    assert own_peer.initialize("2025-03-26")["result"]["protocolVersion"] == "2025-03-26"
    sent = hive.client("bob").call("send", to="alice", body="in a batch")["id"]
    answers = batch(own_peer, [
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": "r", "method": "tools/call", "params": {"name": "recv", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "list_agents", "arguments": {}}},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": 1}},
        {"jsonrpc": "2.0", "id": 4, "method": "nope"},
        {"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {"protocolVersion": "2025-03-26"}},
        7,
    ])
    assert sorted(answers) == sorted(json.dumps(i) for i in (1, "r", 3, 4, 5, None))
    assert answers["1"]["result"] == {}
    recv = json.loads(answers['"r"']["result"]["content"][0]["text"])
    assert [m["id"] for m in recv["messages"]] == [sent]
    assert "alice" in answers["3"]["result"]["content"][0]["text"]
    assert answers["4"]["error"]["code"] == -32601
    assert answers["5"]["error"]["code"] == -32600 and "batch" in answers["5"]["error"]["message"]
    assert answers["null"]["error"]["code"] == -32600
    alice = hive.client("alice")
    wait_for(lambda: alice.call("status") == {"unread": 0, "leased": 0}, message="the batch's recv acknowledged")
    # a batch of notifications alone gets nothing; an empty one is one Invalid Request error
    own_peer.write([{"jsonrpc": "2.0", "method": "notifications/initialized"}])
    assert own_peer.quiet(0.5)
    own_peer.write([])
    assert own_peer.read()["error"]["code"] == -32600


def test_a_batch_with_a_parked_recv_is_answered_once_the_recv_is(
        hive, own_peer):
    own_peer.initialize("2025-03-26")
    bob = hive.client("bob")
    threading.Timer(0.5, lambda: bob.call("send", to="alice", body="late")).start()
    answers = batch(own_peer, [
        {"jsonrpc": "2.0", "id": "wait", "method": "tools/call",
         "params": {"name": "recv", "arguments": {"wait_seconds": 20}}},
        {"jsonrpc": "2.0", "id": "now", "method": "ping"},
    ], timeout=20)
    assert answers['"now"']["result"] == {}
    assert json.loads(answers['"wait"']["result"]["content"][0]["text"])["messages"][0]["body"] == "late"


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18", "2024-11-05"])
def test_a_batch_under_a_version_without_batches_is_refused_naming_the_version(peer, version):
    peer.initialize(version)
    peer.write([{"jsonrpc": "2.0", "id": 1, "method": "ping"}])
    answer = peer.read()
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert version in answer["error"]["message"] and "2025-03-26" in answer["error"]["message"]
    assert peer.request("ping")["result"] == {}


def test_params_that_are_not_an_object_are_invalid_params(peer):
    peer.initialize()
    assert peer.request("tools/list", [1, 2])["error"]["code"] == -32602


def test_an_unknown_method_is_method_not_found_and_an_unknown_notification_is_ignored(peer):
    peer.initialize()
    assert peer.request("resources/list")["error"]["code"] == -32601
    peer.notify("notifications/something_new", {"x": 1})
    assert peer.quiet()


def test_recv_peeks_without_wait_seconds_and_acknowledges_what_it_returns(hive, own_peer):
    own_peer.initialize()
    started = time.monotonic()
    empty = own_peer.call("recv")["result"]["structuredContent"]
    assert empty == {"messages": [], "unread": 0} and time.monotonic() - started < 2
    bob = hive.client("bob")
    ids = [bob.call("send", to="alice", body=f"m{i}")["id"] for i in range(3)]
    got = own_peer.call("recv", {"max": 2})["result"]["structuredContent"]
    assert [m["id"] for m in got["messages"]] == ids[:2] and got["unread"] == 1
    # What the model has seen is acknowledged (just after the result is written): it never comes again; the
    # third is still waiting.
    alice = hive.client("alice")
    wait_for(lambda: alice.call("status") == {"unread": 1, "leased": 0}, message="the two acknowledged")


def test_recv_with_wait_seconds_parks_keeps_the_client_informed_and_wakes_on_a_send(hive, own_peer):
    own_peer.initialize()
    bob = hive.client("bob")
    threading.Timer(0.5, lambda: bob.call("send", to="alice", body="there you are")).start()
    started = time.monotonic()
    answer = own_peer.call("recv", {"wait_seconds": 20}, _meta={"progressToken": "tok-1"})
    waited = time.monotonic() - started
    assert 0.4 < waited < 5
    assert [m["body"] for m in answer["result"]["structuredContent"]["messages"]] == ["there you are"]
    progress = [n for n in own_peer.notes if n.get("method") == "notifications/progress"]
    assert progress and progress[0]["params"]["progressToken"] == "tok-1"
    assert [p["params"]["progress"] for p in progress] == sorted({p["params"]["progress"] for p in progress})


def test_a_negative_wait_is_a_tool_error(peer):
    peer.initialize()
    result = peer.call("recv", {"wait_seconds": -1})["result"]
    assert result["isError"] is True and "wait_seconds" in result["content"][0]["text"]


def test_a_cancelled_recv_is_not_answered_and_gives_back_what_it_got(hive, own_peer):
    own_peer.initialize()
    own_peer.write({"jsonrpc": "2.0", "id": "c1", "method": "tools/call",
                    "params": {"name": "recv", "arguments": {"wait_seconds": 40}, "_meta": {"progressToken": 1}}})
    assert own_peer.read()["method"] == "notifications/progress"
    parked_on = wait_for(lambda: broker_sockets(own_peer.proc.pid), message="the recv's broker connection")
    own_peer.notify("notifications/cancelled", {"requestId": "c1", "reason": "the user pressed Esc"})
    # The broker wait ends at once: its connection is cut, long before the 40 s wait would be over.
    wait_for(lambda: not parked_on & broker_sockets(own_peer.proc.pid), message="the parked recv's line cut")
    sent = hive.client("bob").call("send", to="alice", body="too late for that call")["id"]
    alice = hive.client("alice")
    wait_for(lambda: alice.call("status") == {"unread": 1, "leased": 0}, message="the message given back")
    assert own_peer.request("ping", rid="after")["id"] == "after"
    assert all(n.get("id") != "c1" for n in own_peer.notes) and own_peer.quiet(0.5)
    got = own_peer.call("recv")["result"]["structuredContent"]["messages"]
    assert [m["id"] for m in got] == [sent]


def test_an_unreachable_hive_is_reported_when_the_tools_are_listed(hive_dir):
    peer = McpPeer(hive_dir / "no-such.sock")
    try:
        assert peer.initialize()["result"]["protocolVersion"] == "2025-06-18"
        answer = peer.request("tools/list")
        assert answer["error"]["code"] == -32603 and "cannot reach the hive" in answer["error"]["message"]
    finally:
        peer.close()


def test_the_server_exits_when_its_client_closes_stdin(peer):
    peer.initialize()
    peer.proc.stdin.close()
    assert peer.proc.wait(5) == 0



def test_the_server_exits_at_once_when_its_client_closes_stdin_under_a_parked_recv(hive, own_peer):
    # it lingered until the recv's wait ran out (here 40 s): a client that closes stdin and waits for the exit, as
    # the MCP stdio transport says, had to kill it; and what it then got is given back, not lost
    own_peer.initialize()
    own_peer.write({"jsonrpc": "2.0", "id": "r1", "method": "tools/call",
                    "params": {"name": "recv", "arguments": {"wait_seconds": 40}}})
    wait_for(lambda: broker_sockets(own_peer.proc.pid), message="the recv's broker connection")
    time.sleep(0.3)
    started = time.monotonic()
    own_peer.proc.stdin.close()
    assert own_peer.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    sent = hive.client("bob").call("send", to="alice", body="for whoever comes next")["id"]
    got = hive.client("alice").call("recv", max=10)["messages"]
    assert sent in [m["id"] for m in got]

PLUGIN = '''
from hyperhive.hookspecs import hookimpl
from hyperhive.mcp import Tool, schema


def shout(ctx, args):
    me = ctx.call("whoami")
    return {"text": args["text"].upper(), "by": me["name"]}


@hookimpl
def harness_tools(role):
    return [
        Tool("shout", "Repeat TEXT in capitals (a plugin's tool).", schema({"text": {"type": "string"}}, ("text",)),
             shout),
        Tool("send", "A plugin trying to replace the hive's send.", schema(), lambda ctx, args: "hijacked"),
        Tool("boss_only", "Only for the manager.", schema(), lambda ctx, args: "ok", frozenset({"manager"})),
    ]
'''


def test_plugins_add_tools_through_the_harness_tools_hook(shared_hive, tmp_path):
    peer = McpPeer(shared_hive.config.agent_socket("alice"), env=install_plugin(tmp_path, PLUGIN))
    try:
        peer.initialize()
        tools = {t["name"]: t for t in peer.request("tools/list")["result"]["tools"]}
        assert list(tools) == AGENT_TOOLS + ["shout"]  # the built-in send wins; boss_only is the manager's
        assert "Send a message" in tools["send"]["description"]
        result = peer.call("shout", {"text": "hello"})["result"]
        assert result["structuredContent"] == {"text": "HELLO", "by": "alice"}
    finally:
        peer.close()


# --- sturdiness ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"\xff\xfe\n", b'{"jsonrpc": "2.0", "id": 5, "method": "p\xe9ng"}\n',
                                 b"\xc3\x28 half a character\n"])
def test_a_line_that_is_not_utf8_is_a_parse_error_and_the_server_goes_on(peer, raw):
    peer.proc.stdin.write(raw)
    peer.proc.stdin.flush()
    answer = peer.read()
    assert answer["id"] is None and answer["error"]["code"] == -32700 and "UTF-8" in answer["error"]["message"]
    assert peer.proc.poll() is None
    assert peer.initialize()["result"]["protocolVersion"] == "2025-06-18"
    assert [t["name"] for t in peer.request("tools/list")["result"]["tools"]] == AGENT_TOOLS


@pytest.mark.parametrize("raw", ['{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": NaN}}',
                                 '{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": 1e999}}'])
def test_numbers_json_does_not_have_are_a_parse_error(peer, raw):
    peer.write(raw)
    assert peer.read()["error"]["code"] == -32700
    assert peer.request("ping")["result"] == {}


def test_integer_arguments_follow_json_schema(hive, own_peer):
    """JSON Schema 2020-12: an integer is a number with a zero fractional part (5.0 is one); a boolean is not."""
    own_peer.initialize()
    bob = hive.client("bob")
    for i in range(3):
        bob.call("send", to="alice", body=f"m{i}")
    got = own_peer.call("recv", {"max": 2.0})["result"]
    assert got["isError"] is False and len(got["structuredContent"]["messages"]) == 2
    for bad, said in ((2.5, "the number 2.5"), (True, "a boolean"), ("2", "a string")):
        result = own_peer.call("recv", {"max": bad})["result"]
        assert result["isError"] is True
        assert f'argument "max" must be integer, not {said}' in result["content"][0]["text"]
    result = own_peer.call("recv", {"wait_seconds": False})["result"]
    assert result["isError"] is True and "must be number, not a boolean" in result["content"][0]["text"]
    # Nothing of the refused calls reached the broker: the third message is still there, unleased.
    alice = hive.client("alice")
    wait_for(lambda: alice.call("status") == {"unread": 1, "leased": 0}, message="the two acknowledged")
    assert own_peer.call("recv")["result"]["structuredContent"]["messages"][0]["body"] == "m2"


UNENCODABLE_PLUGIN = '''
from hyperhive.hookspecs import hookimpl
from hyperhive.mcp import Tool, schema


@hookimpl
def harness_tools(role):
    return [
        Tool("weird", "Returns what JSON cannot hold.", schema(), lambda ctx, args: {"ids": {1, 2}}),
        Tool("nan", "Returns NaN.", schema(), lambda ctx, args: {"x": float("nan")}),
        Tool("lone", "Returns a lone surrogate.", schema(), lambda ctx, args: {"text": "half \\ud800 a pair"}),
    ]
'''


def install_plugin(tmp_path, source: str, name: str = "hhplug") -> dict:
    (tmp_path / f"{name}.py").write_text(source)
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[hyperhive]\n{name} = {name}\n")
    return {"PYTHONPATH": str(tmp_path)}


def test_every_call_is_answered_even_when_its_result_cannot_be_encoded(shared_hive, tmp_path):
    peer = McpPeer(shared_hive.config.agent_socket("alice"), env=install_plugin(tmp_path, UNENCODABLE_PLUGIN))
    try:
        peer.initialize()
        for tool in ("weird", "nan"):
            result = peer.call(tool)["result"]
            assert result["isError"] is True and "could not be encoded" in result["content"][0]["text"]
        # A lone surrogate is valid JSON text (an escape) though not UTF-8: written escaped, not dropped.
        assert peer.call("lone")["result"]["structuredContent"] == {"text": "half \ud800 a pair"}
        assert peer.request("ping")["result"] == {}
    finally:
        peer.close()


def broker_sockets(pid: int) -> set[str]:
    """The Unix sockets process ``pid`` holds open (its stdio are pipes)."""
    import os

    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def test_one_broker_connection_is_kept_for_the_calls_of_a_process(hive, own_peer):
    own_peer.initialize()
    own_peer.request("tools/list")
    first = broker_sockets(own_peer.proc.pid)
    assert len(first) == 1
    for i in range(5):
        assert own_peer.call("send", {"to": "bob", "body": f"n{i}"})["result"]["isError"] is False
        own_peer.call("recv")
        assert broker_sockets(own_peer.proc.pid) == first  # the same connection, not one per call
    assert hive.client("bob").call("status")["unread"] == 5


def test_a_parked_recv_does_not_hold_up_other_calls(hive, own_peer):
    own_peer.initialize()
    own_peer.write({"jsonrpc": "2.0", "id": "parked", "method": "tools/call",
                    "params": {"name": "recv", "arguments": {"wait_seconds": 30}}})
    started = time.monotonic()
    assert own_peer.call("send", {"to": "bob", "body": "while waiting"})["result"]["isError"] is False
    assert own_peer.call("list_agents")["result"]["isError"] is False
    assert time.monotonic() - started < 10
    hive.client("bob").call("send", to="alice", body="wake up")
    answer = own_peer.response("parked", timeout=20)
    assert [m["body"] for m in answer["result"]["structuredContent"]["messages"]] == ["wake up"]


def test_without_a_broker_the_tools_say_so_and_the_server_keeps_running(hive_dir):
    peer = McpPeer(hive_dir / "no-such.sock")
    try:
        answer = peer.initialize("2025-11-25")["result"]
        assert answer["protocolVersion"] == "2025-11-25" and answer["instructions"]
        listed = peer.request("tools/list")
        assert listed["error"]["code"] == -32603 and "cannot reach the hive" in listed["error"]["message"]
        assert str(hive_dir / "no-such.sock") in listed["error"]["message"]
        result = peer.call("send", {"to": "bob", "body": "hi"})["result"]
        assert result["isError"] is True and "not reachable" in result["content"][0]["text"]
        assert peer.request("ping")["result"] == {} and peer.proc.poll() is None
    finally:
        peer.close()


def test_the_server_survives_the_broker_restarting_under_it(hive, own_peer):
    own_peer.initialize()
    assert own_peer.call("send", {"to": "bob", "body": "before"})["result"]["isError"] is False
    hive.stop()
    result = own_peer.call("send", {"to": "bob", "body": "while down"})["result"]
    assert result["isError"] is True and "not reachable" in result["content"][0]["text"]
    hive.start()
    after = own_peer.call("send", {"to": "bob", "body": "after"})["result"]
    assert after["isError"] is False, after
    assert [m["body"] for m in hive.client("bob").call("recv", max=10)["messages"]] == ["before", "after"]
    assert own_peer.proc.poll() is None


def test_a_broker_killed_between_calls_is_reconnected_to_without_a_failed_call(hive, own_peer):
    own_peer.initialize()
    assert own_peer.call("send", {"to": "bob", "body": "one"})["result"]["isError"] is False
    hive.kill9()
    hive.start()
    # The kept connection died with the old broker; the next call notices before using it.
    assert own_peer.call("send", {"to": "bob", "body": "two"})["result"]["isError"] is False
    assert [m["body"] for m in hive.client("bob").call("recv", max=10)["messages"]] == ["one", "two"]


# --- tools: annotations, output schemas, instructions, reason -----------------------------------------------

def test_tools_carry_titles_annotations_and_output_schemas(shared_hive):
    peer = McpPeer(shared_hive.config.agent_socket("manager"))
    try:
        peer.initialize("2025-11-25")
        tools = {t["name"]: t for t in peer.request("tools/list")["result"]["tools"]}
    finally:
        peer.close()
    for tool in tools.values():
        assert tool["title"] and tool["annotations"]["title"] == tool["title"]
        assert tool["outputSchema"]["type"] == "object"
        assert set(tool["annotations"]) >= {"readOnlyHint", "destructiveHint", "idempotentHint"}
    assert tools["list_agents"]["annotations"]["readOnlyHint"] is True
    assert tools["send"]["annotations"]["readOnlyHint"] is False
    assert tools["send"]["annotations"]["destructiveHint"] is False
    assert tools["kill"]["annotations"]["destructiveHint"] is True
    for name in ("request_apply_commit", "request_spawn_commit"):
        assert tools[name]["inputSchema"]["properties"]["reason"]["type"] == "string"
        assert "reason" not in tools[name]["inputSchema"]["required"]


@pytest.mark.parametrize("version, fields", [
    ("2024-11-05", {"name", "description", "inputSchema"}),
    ("2025-03-26", {"name", "description", "inputSchema", "annotations"}),
    ("2025-06-18", {"name", "title", "description", "inputSchema", "outputSchema", "annotations"}),
])
def test_each_version_gets_the_tool_fields_its_schema_has(peer, version, fields):
    peer.initialize(version)
    for tool in peer.request("tools/list")["result"]["tools"]:
        assert set(tool) == fields


def test_structured_content_and_progress_messages_only_where_the_version_has_them(hive, own_peer):
    own_peer.initialize("2024-11-05")
    result = own_peer.call("send", {"to": "bob", "body": "x"})["result"]
    assert "structuredContent" not in result and json.loads(result["content"][0]["text"])["id"]
    threading.Timer(0.3, lambda: hive.client("bob").call("send", to="alice", body="y")).start()
    own_peer.call("recv", {"wait_seconds": 10}, _meta={"progressToken": 7})
    progress = [n for n in own_peer.notes if n.get("method") == "notifications/progress"]
    assert progress and all("message" not in p["params"] for p in progress)


def test_instructions_are_written_for_the_role(shared_hive):
    said = {}
    for who in ("alice", "manager"):
        peer = McpPeer(shared_hive.config.agent_socket(who))
        try:
            said[who] = peer.initialize()["result"]["instructions"]
        finally:
            peer.close()
    assert "request_apply_commit" in said["manager"] and "operator approves" in said["manager"]
    assert "request_apply_commit" not in said["alice"] and "recv" in said["alice"]


# --- the stateless revision (2026-07-28) --------------------------------------------------------------------

MODERN = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
          "io.modelcontextprotocol/clientCapabilities": {},
          "io.modelcontextprotocol/clientInfo": {"name": "test", "version": "1"}}


def test_server_discover_answers_without_a_handshake(peer):
    result = peer.request("server/discover", {"_meta": MODERN})["result"]
    assert result["resultType"] == "complete"
    assert result["supportedVersions"][0] == "2026-07-28" and "2025-11-25" in result["supportedVersions"]
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "hyperhive"
    assert result["ttlMs"] >= 0 and result["cacheScope"] in ("public", "private")
    assert "recv" in result["instructions"]


def test_modern_requests_are_served_one_by_one_with_their_meta(hive, own_peer):
    listed = own_peer.request("tools/list", {"_meta": MODERN})["result"]
    assert listed["resultType"] == "complete" and listed["cacheScope"] == "private" and listed["ttlMs"] >= 0
    assert [t["name"] for t in listed["tools"]] == AGENT_TOOLS
    assert all("outputSchema" in t and "annotations" in t for t in listed["tools"])
    sent = own_peer.request("tools/call", {"name": "send", "arguments": {"to": "bob", "body": "modern"},
                                           "_meta": MODERN})["result"]
    assert sent["resultType"] == "complete" and sent["isError"] is False
    assert sent["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "hyperhive"
    got = hive.client("bob").call("recv")["messages"]
    assert [(m["id"], m["body"]) for m in got] == [(sent["structuredContent"]["id"], "modern")]
    # A legacy request after them still needs the handshake: nothing was negotiated for the process.
    assert own_peer.request("tools/list")["error"]["code"] == -32600


def test_an_unsupported_modern_version_names_the_supported_ones(peer):
    meta = {**MODERN, "io.modelcontextprotocol/protocolVersion": "2099-01-01"}
    error = peer.request("server/discover", {"_meta": meta})["error"]
    assert error["code"] == -32022
    assert error["data"]["requested"] == "2099-01-01" and "2026-07-28" in error["data"]["supported"]


def test_a_modern_request_without_client_capabilities_is_invalid_params(peer):
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
    error = peer.request("tools/list", {"_meta": meta})["error"]
    assert error["code"] == -32602 and "clientCapabilities" in error["message"]
    assert peer.request("server/discover", {})["error"]["code"] == -32602


def test_ping_is_gone_in_the_modern_revision_and_kept_for_the_legacy_one(peer):
    assert peer.request("ping", {"_meta": MODERN})["error"]["code"] == -32601
    assert peer.request("ping")["result"] == {}


def test_both_eras_on_one_process(hive, own_peer):
    own_peer.initialize("2025-11-25")
    legacy = own_peer.call("send", {"to": "bob", "body": "old"})["result"]
    modern = own_peer.request("tools/call", {"name": "send", "arguments": {"to": "bob", "body": "new"},
                                             "_meta": MODERN})["result"]
    assert "resultType" not in legacy and modern["resultType"] == "complete"
    assert [m["body"] for m in hive.client("bob").call("recv", max=5)["messages"]] == ["old", "new"]


def test_the_managers_reason_reaches_the_operators_review(hive):
    from standins.support import agent_nix, commit_change, git, state_dir

    manager = McpPeer(hive.config.agent_socket("manager"))
    try:
        manager.initialize("2025-11-25")
        sha = commit_change(hive, "alice", agent_nix("Tighter docs."), message="alice: tighter docs")
        applied = manager.call("request_apply_commit", {"agent": "alice", "commit": sha,
                                                        "reason": "alice wanders off"})["result"]
        assert applied["isError"] is False, applied
        draft = manager.call("request_spawn_draft", {"name": "carol"})["result"]["structuredContent"]
        assert draft["name"] == "carol"
        repo = state_dir(hive) / "agents" / "carol" / "config"
        (repo / "agent.nix").write_text(agent_nix("Carol tests."))
        git(repo, "commit", "-q", "-am", "carol: her prompt")
        spawned = manager.call("request_spawn_commit", {"name": "carol", "commit": git(repo, "rev-parse", "HEAD"),
                                                        "reason": "we need a tester"})["result"]
        assert spawned["isError"] is False, spawned
    finally:
        manager.close()
    host = hive.host()
    assert host.call("approval", id=applied["structuredContent"]["approval_id"])["reason"] == "alice wanders off"
    assert host.call("approval", id=spawned["structuredContent"]["approval_id"])["reason"] == "we need a tester"


def test_a_recv_result_that_could_not_be_written_is_not_acknowledged(hive):
    """The client went away mid-wait (its end of stdout closed, no cancellation sent): the message the parked recv
    then got was never delivered, so it is given back, not acknowledged, and the next recv has it."""
    import subprocess
    import sys

    from harness_support import db_rows

    proc = subprocess.Popen([sys.executable, "-m", "hyperhive", "mcp", "--socket",
                             str(hive.config.agent_socket("alice"))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        def write(message):
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            proc.stdin.flush()

        write({"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                          "clientInfo": {"name": "t", "version": "1"}}})
        assert json.loads(proc.stdout.readline())["id"] == 1
        write({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "recv", "arguments": {"wait_seconds": 30}, "_meta": {"progressToken": "p"}}})
        assert json.loads(proc.stdout.readline())["method"] == "notifications/progress"  # it is waiting
        proc.stdout.close()
        sent = hive.client("bob").call("send", to="alice", body="not lost")["id"]
        wait_for(lambda: db_rows(hive, "SELECT deliveries FROM messages WHERE id = ?", (sent,))[0][0] >= 1,
                 message="the parked recv to take the message")
        alice = hive.client("alice")
        wait_for(lambda: alice.call("status")["leased"] == 0, message="the message given back")
        assert db_rows(hive, "SELECT acked_at FROM messages WHERE id = ?", (sent,)) == [(None,)]
        assert proc.poll() is None
    finally:
        proc.stdin.close()
        proc.wait(10)
    peer = McpPeer(hive.config.agent_socket("alice"))
    try:
        peer.initialize()
        got = peer.call("recv")["result"]["structuredContent"]["messages"]
        assert [m["id"] for m in got] == [sent]
    finally:
        peer.close()


# --- the real Claude Code CLI as the client -------------------------------------------------------------------

@pytest.mark.claude_cli
def test_the_real_claude_code_cli_lists_and_calls_the_tools_through_this_server(claude_hive, model_api):
    """Claude Code's own MCP client starts ``hyperhive mcp`` (per the harness's --mcp-config), offers the tools to
    the model under mcp__hyperhive__<tool> with our schemas, and calls them: results come back as tool_results."""
    from hyperhive.testing.messages_api import hive as hive_tool
    from hyperhive.testing.messages_api import text_of

    hp = claude_hive({"alice": {}, "bob": {}})
    model_api.script("alice", [hive_tool("recv"), hive_tool("send", to="bob", body="from the real CLI"),
                               hive_tool("list_agents"), hive_tool("send", to="nobody", body="x"),
                               {"text": "done"}])
    hp.host().call("send", to="alice", body="please greet bob")
    requests = model_api.wait_requests("alice", 5, timeout=120)
    offered = [t for t in requests[0]["tools"] if t.startswith("mcp__hyperhive__")]
    assert sorted(offered) == sorted(f"mcp__hyperhive__{n}" for n in AGENT_TOOLS)
    results = []
    for request in requests[1:]:
        block = [b for m in request["messages"] if isinstance(m.get("content"), list) for b in m["content"]
                 if b.get("type") == "tool_result"][-1]
        results.append((bool(block.get("is_error")), text_of(block.get("content"))))
    assert [error for error, _ in results] == [False, False, False, True]
    # The CLI hands the model our structuredContent (as compact JSON) where a result has it.
    assert json.loads(results[0][1]) == {"messages": [], "unread": 0}
    assert json.loads(results[1][1])["note"] == "stored; bob will get it"
    assert "alice" in [a["name"] for a in json.loads(results[2][1])["agents"]]
    assert 'unknown recipient "nobody"' in results[3][1]
    from harness_support import db_rows

    stored = db_rows(hp, "SELECT id, body FROM messages WHERE sender = 'alice' AND recipient = 'bob'")
    assert [(json.loads(results[1][1])["id"], "from the real CLI")] == stored


def test_a_lone_surrogate_in_a_tool_argument_is_the_brokers_refusal(peer):
    """JSON may escape half a surrogate pair, which no UTF-8 line can carry: the server sends it on escaped, and the
    broker's refusal names it (a tool error, not an internal error)."""
    peer.initialize()
    result = peer.call("send", {"to": "bob", "body": "x\ud800y"})["result"]
    assert result["isError"] is True and "lone surrogate" in result["content"][0]["text"], result
