"""The stand-in Messages API the tests run the real Claude Code CLI against: what the CLI makes of its answers
(streamed text and tool calls, errors, usage), and its own HTTP surface (non-streaming, count_tokens, side
requests, the request log)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest

from conftest import claude_env
from hyperhive.harness import AGENT_HEADER
from hyperhive.testing.messages_api import EXHAUSTED, MessagesAPI, tool_use


def post(api: MessagesAPI, path: str, body: dict, agent: str | None = "alice") -> tuple[int, dict]:
    request = urllib.request.Request(api.url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **({AGENT_HEADER: agent}
                                                                                       if agent else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


TOOLS = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]


def run_claude(claude_cli, api, tmp_path, agent="alice", prompt="hello", args=()):
    env = {**os.environ, **claude_env(api, tmp_path), "ANTHROPIC_CUSTOM_HEADERS": f"{AGENT_HEADER}: {agent}"}
    (tmp_path / "work").mkdir(exist_ok=True)
    result = subprocess.run([claude_cli, "--print", "--verbose", "--output-format", "stream-json", *args],
                            input=prompt, capture_output=True, text=True, env=env, cwd=tmp_path / "work",
                            timeout=120)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, events


def test_the_real_cli_runs_a_scripted_tool_call_and_reports_the_scripted_usage(claude_cli, model_api, tmp_path):
    model_api.script("alice", [
        {"tools": [tool_use("Bash", command="echo one"), tool_use("Bash", command="echo two")], "text": "both",
         "usage": {"input_tokens": 100, "output_tokens": 20}},
        {"text": "done", "usage": {"input_tokens": 1234, "output_tokens": 56, "cache_read_input_tokens": 7,
                                   "cache_creation_input_tokens": 8}}])
    result, events = run_claude(claude_cli, model_api, tmp_path, args=("--allowedTools", "Bash(echo *)"))
    assert result.returncode == 0, result.stderr
    end = events[-1]
    assert end["type"] == "result" and end["result"] == "done" and end["is_error"] is False
    # the session's sums over its two API calls
    assert (end["usage"]["input_tokens"], end["usage"]["output_tokens"]) == (1334, 76)
    assert (end["usage"]["cache_read_input_tokens"], end["usage"]["cache_creation_input_tokens"]) == (7, 8)
    first, second = model_api.requests("alice")
    assert first["stream"] and "Bash" in first["tools"] and "hello" in json.dumps(first["messages"])
    calls = [b for b in second["messages"][-2]["content"] if b["type"] == "tool_use"]
    results = [b for b in second["messages"][-1]["content"] if b["type"] == "tool_result"]
    assert [c["input"]["command"] for c in calls] == ["echo one", "echo two"]
    # both ran (the CLI got them whole from the stream), perhaps at once: their results in either order
    output = {r["tool_use_id"]: r["content"].strip() for r in results}
    assert output == {calls[0]["id"]: "one", calls[1]["id"]: "two"}
    assert model_api.pending("alice") == 0
    # with claude_env's switches the CLI calls nothing but the Messages API (2.1.328 otherwise sends HEAD /api/hello)
    assert {r["path"].split("?")[0] for r in model_api.requests(scripted=None)} == {"/v1/messages"}


@pytest.mark.parametrize("status, said", [(500, "API Error: 500"), (529, "API Error: 529"),
                                          (400, "Prompt is too long")])
def test_an_error_step_reaches_the_cli_as_the_apis_error(claude_cli, model_api, tmp_path, status, said):
    model_api.script("alice", [{"error": status, "times": 2}])  # 5xx: the first try and the CLI's one retry
    result, events = run_claude(claude_cli, model_api, tmp_path)
    assert result.returncode == 1
    assert events[-1]["is_error"] is True and said in events[-1]["result"]
    assert events[-1]["api_error_status"] == status
    assert len(model_api.requests("alice")) == (2 if status >= 500 else 1)


def test_non_streaming_count_tokens_side_requests_and_ids(model_api):
    model_api.script("alice", [{"text": "scripted"}, {"tool": "Bash", "input": {"command": "ls"}}])
    status, side = post(model_api, "/v1/messages", {"model": "m", "messages": [{"role": "user", "content": "t"}]})
    assert status == 200 and side["content"][0]["text"] != "scripted"  # no tools offered: a side request
    status, first = post(model_api, "/v1/messages", {"model": "m", "tools": TOOLS, "messages": []})
    assert status == 200 and first["content"] == [{"type": "text", "text": "scripted"}]
    assert first["stop_reason"] == "end_turn" and first["id"].startswith("msg_")
    status, second = post(model_api, "/v1/messages", {"model": "m", "tools": TOOLS, "messages": []})
    assert second["stop_reason"] == "tool_use" and second["content"][0]["id"].startswith("toolu_")
    status, third = post(model_api, "/v1/messages", {"model": "m", "tools": TOOLS, "messages": []})
    assert third["content"][0]["text"] == EXHAUSTED
    assert model_api.requests("alice")[-1]["exhausted"] is True
    assert len({side["id"], first["id"], second["id"], third["id"]}) == 4
    with MessagesAPI() as again:  # another stand-in (a restart) never repeats an id
        again.script("alice", [{"text": "x"}])
        assert post(again, "/v1/messages", {"model": "m", "tools": TOOLS, "messages": []})[1]["id"] != first["id"]
    status, count = post(model_api, "/v1/messages/count_tokens", {"model": "m", "messages": []})
    assert status == 200 and count["input_tokens"] > 0
    status, bad = post(model_api, "/v1/messages", ["not", "an", "object"])
    assert status == 400 and bad["error"]["type"] == "invalid_request_error"
    assert [r["side"] for r in model_api.requests("alice", scripted=None) if r["kind"] == "messages"] == [
        True, False, False, False]


def test_a_step_for_another_request_is_not_taken(model_api):
    model_api.script("bob", [{"text": "for the compaction", "expect": "compact this"}])
    status, other = post(model_api, "/v1/messages", {"model": "m", "tools": TOOLS, "messages": [
        {"role": "user", "content": "a turn"}]}, agent="bob")
    assert "not the one the script expected" in other["content"][0]["text"]
    status, wanted = post(model_api, "/v1/messages", {"model": "m", "tools": TOOLS, "messages": [
        {"role": "user", "content": "compact this: ..."}]}, agent="bob")
    assert wanted["content"][0]["text"] == "for the compaction"


def test_a_bad_step_is_refused_when_scripted(model_api):
    with pytest.raises(ValueError, match="needs one of"):
        model_api.script("alice", [{"say": "hi"}])
