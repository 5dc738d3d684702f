"""Harness benchmark: the overhead of a turn, from a message's ``send`` to Claude Code asking the model.

    python pkgs/hyperhive/benchmarks/harness.py [--quick]

Runs a real ``hyperhive serve --no-agents`` and a real ``hyperhive agent`` whose Claude Code is the real CLI
(``$HYPERHIVE_CLAUDE``, else the one ``make claude`` installs in ``.tools/npm``) against the stand-in Messages API
(``hyperhive.testing.messages_api``), which notes when each request comes. One message at a time is sent and its
turn awaited. The time from just before the ``send`` to the CLI's first request to the model is the broker waking
the parked ``recv``, the harness writing the settings, system prompt and MCP config, publishing ``turn_start`` and
spawning the process, plus the CLI starting (with its ``hyperhive mcp`` server). The floor printed beside it is the
same CLI started directly with the same files, to its first request: what any harness pays to launch it. Target:
the harness's own share (the difference of the medians) under 100 ms.

It also prints what a turn costs the model in context, measured in the requests the real CLI sent in this run (the
stand-in logs each body) and split by :func:`hyperhive.testing.messages_api.context_cost`, for the agent's turns
and for one turn of the manager (more tools, another prompt): the request body; the hive's own tool definitions
(``mcp__hyperhive__*``, their count and JSON bytes) beside the CLI's built-in ones; the system prompt, the hive's
part (the file the harness passes with ``--system-prompt-file``, found verbatim) beside the CLI's own; the context
the CLI adds to the messages itself (environment, subagent types, skills, the MCP servers' instructions, of which
the hive's), and the hive's share of it all. Tokens are bytes/4, an estimate. These are context figures, not
targets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
sys.path.insert(0, str(PACKAGE))

from hyperhive.config import load_config  # noqa: E402
from hyperhive.harness import AGENT_HEADER  # noqa: E402
from hyperhive.mcp import SERVER_NAME  # noqa: E402
from hyperhive.testing.messages_api import MessagesAPI, context_cost  # noqa: E402
from hyperhive.transport import Client  # noqa: E402

from _common import percentile, start_service  # noqa: E402

PROJECT_CLAUDE = PACKAGE.parent.parent / ".tools" / "npm" / "bin" / "claude"


def claude_path() -> str:
    path = Path(os.environ.get("HYPERHIVE_CLAUDE") or PROJECT_CLAUDE)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SystemExit(f"the Claude Code CLI is not at {path}: run `make claude` or set HYPERHIVE_CLAUDE")
    return str(path)


def start_harness(directory: Path, config, claude: str, env: dict, name: str = "bench",
                  work: str = "work") -> subprocess.Popen:
    """``hyperhive agent`` for ``name`` (the manager's role when it is the hive's manager), writing the files it
    hands the CLI into ``directory / work``."""
    agent_json = directory / f"agent-{name}.json"
    agent_json.write_text(json.dumps({"name": name, "role": "manager" if name == config.manager else "agent",
                                      "manager": config.manager, "claudeCommand": [claude]}))
    return subprocess.Popen(
        [sys.executable, "-m", "hyperhive", "agent", "--name", name, "--socket", str(config.agent_socket(name)),
         "--agent-config", str(agent_json), "--state-dir", str(directory / f"state-{name}"),
         "--work-dir", str(directory / work)],
        env={**os.environ, "PYTHONPATH": str(PACKAGE), **env}, stdout=open(directory / f"agent-{name}.log", "wb"),
        stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def launch_floor(api: MessagesAPI, directory: Path, claude: str, env: dict, rounds: int) -> list[float]:
    """Milliseconds from spawning the CLI, with the harness's own files, to its first request to the model."""
    work = directory / "work"
    argv = [claude, "--print", "--verbose", "--output-format", "stream-json", "--settings",
            str(work / "settings.json"), "--system-prompt-file", str(work / "system-prompt.md"), "--mcp-config",
            str(work / "mcp.json"), "--strict-mcp-config", "--setting-sources", ""]
    cwd = directory / "floor"
    cwd.mkdir(exist_ok=True)
    out = []
    for _ in range(rounds):
        seen = len(api.requests("bench-floor"))
        api.script("bench-floor", [{"text": "ok"}])
        before = time.time()
        subprocess.run(argv, input=b"hello", cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, **env, "ANTHROPIC_CUSTOM_HEADERS": f"{AGENT_HEADER}: bench-floor"},
                       check=True, timeout=120)
        out.append((api.requests("bench-floor")[seen]["at"] - before) * 1000)
    return out


def mcp_instructions(socket: Path) -> str:
    """The instructions a real ``hyperhive mcp`` on ``socket`` gives at ``initialize``: what the CLI got from it."""
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                        "clientInfo": {"name": "benchmark", "version": "0"}}}
    done = subprocess.run([sys.executable, "-m", "hyperhive", "mcp", "--socket", str(socket)],
                          input=json.dumps(hello) + "\n", capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(PACKAGE)})
    return json.loads(done.stdout.splitlines()[0])["result"].get("instructions") or ""


def manager_requests(api: MessagesAPI, directory: Path, config, claude: str, env: dict) -> list[dict]:
    """One turn of the manager's harness (the real CLI with the manager's tools and prompt): its requests."""
    harness = start_harness(directory, config, claude, env, name=config.manager, work="work-manager")
    try:
        api.script(config.manager, [{"text": "ok"}])
        with Client(config.host_socket) as host:
            host.call("send", to=config.manager, body="a message to take the measure of a turn")
        return api.wait_requests(config.manager, 1, timeout=120)
    finally:
        stop(harness)


def costs(requests: list[dict], work: Path, socket: Path) -> list[dict]:
    """The context breakdown of each request, the hive's parts being the system prompt the harness wrote into
    ``work`` and the instructions its MCP server gives (each counted only where found verbatim in a request)."""
    system = (work / "system-prompt.md").read_text(encoding="utf-8")
    instructions = mcp_instructions(socket)
    return [context_cost(r, hive_system=system, hive_instructions=instructions) for r in requests]


def _bytes(values: list[int]) -> str:
    low, high = min(values), max(values)
    span = f"{low:,}" if low == high else f"{low:,}-{high:,}"
    tokens = f"{low / 4:,.0f}" if low == high else f"{low / 4:,.0f}-{high / 4:,.0f}"
    return f"{span} B ~{tokens} tok"


CONTEXT_ROWS = [
    ("request body", lambda c: c["body"], None),
    (f"the hive's tools (mcp__{SERVER_NAME}__*)", lambda c: c["hive_tools"]["bytes"],
     lambda c: c["hive_tools"]["count"]),
    ("the CLI's built-in tools", lambda c: c["builtin_tools"]["bytes"], lambda c: c["builtin_tools"]["count"]),
    ("system prompt: the hive's (--system-prompt-file)", lambda c: c["hive_system"], None),
    ("system prompt: the CLI's own", lambda c: c["cli_system"], None),
    ("context the CLI adds to the messages", lambda c: c["cli_context"], None),
    ("  of which the hive's MCP server instructions", lambda c: c["hive_instructions"], None),
    ("the hive's share (tools, prompt, instructions)",
     lambda c: c["hive_tools"]["bytes"] + c["hive_system"] + c["hive_instructions"], None),
]


def print_context(columns: list[tuple[str, list[dict]]]) -> None:
    """Per request of each run: what the real CLI sent the model, by part; a range where requests differed."""
    print("context per model request, measured in the real CLI's requests of this run "
          "(text as UTF-8, tools as the JSON sent; tok = bytes/4, an estimate of what the model is billed)")
    heads = [f"{name} ({len(cs)} request{'' if len(cs) == 1 else 's'})" for name, cs in columns]
    print(f"  {'':<50}" + "".join(f" {head:>32}" for head in heads))
    for label, value, count in CONTEXT_ROWS:
        cells = []
        for _, cs in columns:
            cell = _bytes([value(c) for c in cs]) if cs else "not measured"
            if count and cs:
                counts = sorted({count(c) for c in cs})
                cell = f"{'/'.join(map(str, counts))} tools, {cell}"
            cells.append(f" {cell:>32}")
        print(f"  {label:<50}" + "".join(cells))
    for name, cs in columns:
        share = [(c["hive_tools"]["bytes"] + c["hive_system"] + c["hive_instructions"]) / c["body"] for c in cs]
        missing = [part for part, key in (("system prompt", "hive_system_found"),
                                          ("MCP server instructions", "hive_instructions_found"))
                   if not all(c[key] for c in cs)]
        if cs:
            low, high = f"{min(share):.1%}", f"{max(share):.1%}"
            print(f"  {name}: the hive's share is {low if low == high else f'{low}-{high}'} of a request body"
                  + (f"; the hive's {' and '.join(missing)} NOT found verbatim in every request" if missing else
                     "; the hive's system prompt and MCP instructions found verbatim in every request"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer turns (a smoke run, figures less steady)")
    args = parser.parse_args()
    rounds = 5 if args.quick else 20
    claude = claude_path()
    directory = Path(tempfile.mkdtemp(prefix="hhh", dir="/tmp"))
    service, path, _ = start_service(directory, {"bench": {}})
    config = load_config(path)
    api = MessagesAPI().start()
    config_dir = directory / "claude-config"
    config_dir.mkdir()
    env = api.claude_env(str(config_dir))
    harness = None
    try:
        harness = start_harness(directory, config, claude, env)
        overheads, turns = [], []
        with Client(config.host_socket) as host:
            api.script("bench", [{"text": "ok"}])
            host.call("send", to="bench", body="warm-up")  # the harness's first turn pays its imports
            api.wait_requests("bench", 1, timeout=120)
            for i in range(rounds):
                time.sleep(0.3)  # let the harness ack and park on recv again, as it would between messages
                api.script("bench", [{"text": "ok"}])
                before = time.time()
                host.call("send", to="bench", body=f"message {i}")
                request = api.wait_requests("bench", i + 2, timeout=120)[i + 1]
                overheads.append((request["at"] - before) * 1000)
                turns.append((time.time() - before) * 1000)
        floor = launch_floor(api, directory, claude, env, rounds)
        agent_costs = costs(api.requests("bench"), directory / "work", config.agent_socket("bench"))
        try:
            manager_costs = costs(manager_requests(api, directory, config, claude, env), directory / "work-manager",
                                  config.agent_socket(config.manager))
        except AssertionError as e:  # no request came: say so beside the agent's figures
            print(f"the manager's turn was not measured: {e}", file=sys.stderr)
            manager_costs = []
    finally:
        if harness is not None:
            stop(harness)
        stop(service)
        api.stop()
        shutil.rmtree(directory, ignore_errors=True)
    p50, floor50 = percentile(overheads, 50), percentile(floor, 50)
    rows = [
        ("send -> the CLI's first request, p50 (ms)", f"{p50:.1f}", ""),
        ("send -> the CLI's first request, p90 (ms)", f"{percentile(overheads, 90):.1f}", ""),
        ("launch floor (spawn -> first request), p50 (ms)", f"{floor50:.1f}", "the CLI started directly"),
        ("harness's own share, p50 (ms)", f"{p50 - floor50:.1f}",
         "target < 100" + ("; below zero: smaller than the spread of the CLI's own start" if p50 < floor50 else "")),
        ("send -> answer back, p50 (ms)", f"{percentile(turns, 50):.0f}", "one model round trip"),
    ]
    print(f"harness benchmark ({'quick' if args.quick else 'full'}; {rounds} turns; {os.cpu_count()} cores; "
          f"mean send -> request {statistics.mean(overheads):.1f} ms)")
    for name, value, note in rows:
        print(f"  {name:<50} {value:>8}  {note}")
    print_context([("agent", agent_costs), ("manager", manager_costs)])
    ok = p50 - floor50 < 100
    print("target: " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
