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
from hyperhive.testing.messages_api import MessagesAPI  # noqa: E402
from hyperhive.transport import Client  # noqa: E402

from _common import percentile, start_service  # noqa: E402

PROJECT_CLAUDE = PACKAGE.parent.parent / ".tools" / "npm" / "bin" / "claude"


def claude_path() -> str:
    path = Path(os.environ.get("HYPERHIVE_CLAUDE") or PROJECT_CLAUDE)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SystemExit(f"the Claude Code CLI is not at {path}: run `make claude` or set HYPERHIVE_CLAUDE")
    return str(path)


def start_harness(directory: Path, config, claude: str, env: dict) -> subprocess.Popen:
    agent_json = directory / "agent.json"
    agent_json.write_text(json.dumps({"name": "bench", "role": "agent", "manager": "manager",
                                      "claudeCommand": [claude]}))
    return subprocess.Popen(
        [sys.executable, "-m", "hyperhive", "agent", "--name", "bench", "--socket", str(config.agent_socket("bench")),
         "--agent-config", str(agent_json), "--state-dir", str(directory / "state-bench"),
         "--work-dir", str(directory / "work")],
        env={**os.environ, "PYTHONPATH": str(PACKAGE), **env}, stdout=open(directory / "agent.log", "wb"),
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
        ("harness's own share, p50 (ms)", f"{p50 - floor50:.1f}", "target < 100"),
        ("send -> answer back, p50 (ms)", f"{percentile(turns, 50):.0f}", "one model round trip"),
    ]
    print(f"harness benchmark ({'quick' if args.quick else 'full'}; {rounds} turns; {os.cpu_count()} cores; "
          f"mean send -> request {statistics.mean(overheads):.1f} ms)")
    for name, value, note in rows:
        print(f"  {name:<50} {value:>8}  {note}")
    ok = p50 - floor50 < 100
    print("target: " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
