"""``hyperhive mcp`` driven by the official MCP Python SDK (``mcp`` from PyPI) as its client, over stdio, against a
real ``hyperhive serve`` on its sockets.

Versions: the SDK's ``Client`` negotiates 2025-11-25 (``mode="legacy"``) and 2026-07-28 (``mode="auto"``: the
``server/discover`` probe of the stateless revision). For 2024-11-05, 2025-03-26 and 2025-06-18 the SDK has no
switch, so its ``ClientSession`` sends the ``initialize`` request with that version itself and adopts the answer; the
SDK's own models still parse and check every message.
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager

import os

import pytest

try:  # test-only dependencies, from pyproject's [test] extra
    import anyio
    import jsonschema
    from mcp import Client, ClientSession, StdioServerParameters, stdio_client, types
    from mcp.shared.exceptions import MCPError
except ImportError:
    if not os.environ.get("HYPERHIVE_BUILD_SANDBOX"):
        raise  # anywhere but the build sandbox a missing SDK is a failure, never a silent skip
    pytest.skip("the MCP Python SDK is not in the build sandbox", allow_module_level=True)

from conftest import wait_for  # noqa: E402
from harness_support import broker_only  # noqa: E402
from test_mcp import broker_sockets  # noqa: E402

VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"]
# the built-in tools, then those of the built-in plugins (remind for all; get_logs for the manager)
AGENT_TOOLS = ["send", "recv", "ask_operator", "list_agents", "remind"]
MANAGER_TOOLS = AGENT_TOOLS[:4] + ["request_spawn", "request_spawn_draft", "request_spawn_commit",
                                   "request_apply_commit", "kill", "start", "restart", "update", "remind",
                                   "get_logs"]


def server(socket_path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "hyperhive", "mcp", "--socket", str(socket_path)])


class Session:
    """What the tests use of either SDK entry point: the negotiated version, list and call."""

    def __init__(self, session: ClientSession, version: str, client: Client | None = None):
        self.session = session
        self.version = version
        self.client = client

    async def list_tools(self) -> list[types.Tool]:
        return (await (self.client or self.session).list_tools()).tools

    async def call(self, name: str, arguments: dict | None = None, **kw) -> types.CallToolResult:
        if self.client is not None:  # Client.call_tool also checks structuredContent against outputSchema
            return await self.client.call_tool(name, arguments or {}, **kw)
        result = await self.session.call_tool(name, arguments or {}, **kw)
        if not result.is_error:
            await self.session.validate_tool_result(name, result)
        return result


@asynccontextmanager
async def connect(socket_path, version: str):
    if version in ("2025-11-25", "2026-07-28"):
        mode = "legacy" if version == "2025-11-25" else "auto"
        async with Client(server(socket_path), mode=mode) as client:
            assert client.protocol_version == version
            yield Session(client.session, version, client)
        return
    async with stdio_client(server(socket_path)) as (read, write):
        async with ClientSession(read, write) as session:
            answer = await session.send_request(types.InitializeRequest(params=types.InitializeRequestParams(
                protocol_version=version, capabilities=types.ClientCapabilities(),
                client_info=types.Implementation(name="conformance", version="1"))), types.InitializeResult)
            assert answer.protocol_version == version
            session.adopt(answer)
            await session.send_notification(types.InitializedNotification())
            yield Session(session, version)


def server_pid() -> int:
    """The ``hyperhive mcp`` process the SDK started for this test (a child of this process)."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"hyperhive\0mcp" in cmdline:
            return int(proc.name)
    raise AssertionError("no hyperhive mcp child process")


def run(coroutine_function, *args):
    return anyio.run(coroutine_function, *args)


@pytest.fixture(scope="module")
def shared_hive():
    with broker_only() as hp:
        yield hp


def check_schema(schema: dict) -> None:
    """Valid under JSON Schema 2020-12, the dialect MCP assumes without ``$schema``."""
    assert "$schema" not in schema
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("version", VERSIONS)
def test_each_protocol_version_lists_and_calls_the_tools(shared_hive, version):
    async def scenario():
        async with connect(shared_hive.config.agent_socket("alice"), version) as s:
            tools = {t.name: t for t in await s.list_tools()}
            assert list(tools) == AGENT_TOOLS
            for tool in tools.values():
                check_schema(tool.input_schema)
                if version >= "2025-06-18":
                    check_schema(tool.output_schema)
                    assert tool.annotations.title == tool.title
                elif version == "2025-03-26":
                    assert tool.output_schema is None and tool.annotations is not None
                else:
                    assert tool.output_schema is None and tool.annotations is None
            sent = await s.call("send", {"to": "bob", "body": f"over {version}"})
            assert sent.is_error is not True
            if version >= "2025-06-18":
                jsonschema.validate(sent.structured_content, tools["send"].output_schema)
                assert isinstance(sent.structured_content["id"], int)
            agents = await s.call("list_agents")
            assert "alice" in agents.content[0].text
            # Invalid calls: arguments that do not fit are a tool error the model can read...
            for arguments, problem in (({"to": "bob"}, 'missing argument "body"'),
                                       ({"to": "bob", "body": 5}, 'argument "body" must be string'),
                                       ({"max": 1.5}, None)):
                name = "recv" if "max" in arguments else "send"
                bad = await s.call(name, arguments)
                assert bad.is_error is True
                assert problem is None or problem in bad.content[0].text
            # ...and a tool that does not exist is a protocol error.
            with pytest.raises(MCPError) as info:
                await s.session.call_tool("kill", {"name": "bob"})
            assert info.value.error.code == -32602

    run(scenario)
    bob = shared_hive.client("bob")
    bodies = [m["body"] for m in bob.call("recv", max=100)["messages"]]
    assert f"over {version}" in bodies


def test_the_manager_gets_its_tools_with_valid_schemas(shared_hive):
    async def scenario():
        async with connect(shared_hive.config.agent_socket("manager"), "2026-07-28") as s:
            tools = await s.list_tools()
            assert [t.name for t in tools] == MANAGER_TOOLS
            for tool in tools:
                check_schema(tool.input_schema)
                check_schema(tool.output_schema)
            assert "request_apply_commit" in s.client.instructions
            refused = await s.call("request_apply_commit", {"agent": "nobody", "commit": "0" * 40,
                                                             "reason": "tidy the prompt"})
            assert refused.is_error is True and "nobody" in refused.content[0].text

    run(scenario)


@pytest.mark.parametrize("version", ["2025-11-25", "2026-07-28"])
def test_recv_through_the_sdk_delivers_and_acknowledges(start_broker, version):
    hive = start_broker()

    async def scenario():
        async with connect(hive.config.agent_socket("alice"), version) as s:
            peek = await s.call("recv")
            assert peek.structured_content == {"messages": [], "unread": 0}
            bob = hive.client("bob")
            ids = [bob.call("send", to="alice", body=f"m{i}")["id"] for i in range(3)]
            got = await s.call("recv", {"max": 2.0})  # 2.0 is an integer in JSON Schema
            assert [m["id"] for m in got.structured_content["messages"]] == ids[:2]
            assert got.structured_content["unread"] == 1
            rest = await s.call("recv", {"wait_seconds": 20, "max": 5})  # m2 is waiting: no wait at all
            assert [m["body"] for m in rest.structured_content["messages"]] == ["m2"]
            progress = []

            async def on_progress(value, total, message):
                progress.append(value)

            async def later():
                await anyio.sleep(0.5)
                await anyio.to_thread.run_sync(lambda: bob.call("send", to="alice", body="parked for"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(later)
                parked = await s.call("recv", {"wait_seconds": 20}, progress_callback=on_progress)
            assert [m["body"] for m in parked.structured_content["messages"]] == ["parked for"]
            assert progress  # the keep-alive that holds the client's timeout off began at once

    run(scenario)
    # What the SDK got was acknowledged: only what it has not been handed is left.
    assert hive.client("alice").call("status") == {"unread": 0, "leased": 0}


@pytest.mark.parametrize("version", ["2025-11-25", "2026-07-28"])
def test_a_recv_the_sdk_cancels_mid_wait_loses_nothing(start_broker, version):
    """The SDK abandons the call (its cancel scope ends) and sends notifications/cancelled; the message sent right
    after is not lost to the abandoned call: the next recv delivers it."""
    hive = start_broker()
    alice = hive.client("alice")

    async def scenario():
        async with connect(hive.config.agent_socket("alice"), version) as s:
            pid = server_pid()
            parked_on: set = set()

            async def parked(value, total, message):  # the recv is under way: note its broker connection
                parked_on.update(broker_sockets(pid))

            with anyio.move_on_after(1.0) as scope:
                await s.call("recv", {"wait_seconds": 40}, progress_callback=parked)
            assert scope.cancelled_caught and parked_on
            # The cancellation cuts the parked recv's broker connection at once. (A message that crosses the
            # cancellation on the wire, answered before the server reads it, is the client's to drop: the spec
            # asks clients to ignore answers to what they cancelled. So the test sends once the cut is seen.)
            await anyio.to_thread.run_sync(lambda: wait_for(lambda: not parked_on & broker_sockets(pid),
                                                            message="the parked recv's broker line cut"))
            sent = await anyio.to_thread.run_sync(lambda: hive.client("bob").call("send", to="alice", body="kept"))
            await anyio.to_thread.run_sync(lambda: wait_for(
                lambda: alice.call("status") == {"unread": 1, "leased": 0}, timeout=15,
                message="the message waiting, leased to nobody"))
            got = await s.call("recv", {"wait_seconds": 10})
            assert [(m["id"], m["body"]) for m in got.structured_content["messages"]] == [(sent["id"], "kept")]

    run(scenario)
    assert alice.call("status") == {"unread": 0, "leased": 0}
