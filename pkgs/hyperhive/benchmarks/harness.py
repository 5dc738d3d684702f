"""Harness benchmark: the overhead of a turn, from a message's ``send`` to Claude Code starting.

    python pkgs/hyperhive/benchmarks/harness.py [--quick]

Runs a real ``hyperhive serve --no-agents`` and a real ``hyperhive agent`` whose Claude Code is the tests' fake
``claude`` (which notes the time as the first thing it does). One message at a time is sent and its turn awaited;
the overhead is the time from just before the ``send`` to the fake ``claude`` starting: the broker waking the
parked ``recv``, the harness writing the settings, system prompt and MCP config, publishing ``turn_start``, and
spawning the process. The floor printed beside it is the start of the same interpreter running the fake directly
(what any harness pays to launch it). Target: p50 under 100 ms.
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
FAKE_CLAUDE = PACKAGE / "tests" / "fake_claude.py"
sys.path.insert(0, str(PACKAGE))

from hyperhive.config import load_config  # noqa: E402
from hyperhive.transport import Client  # noqa: E402

from _common import percentile, start_service  # noqa: E402


def start_harness(directory: Path, config) -> subprocess.Popen:
    agent_json = directory / "agent.json"
    agent_json.write_text(json.dumps({"name": "bench", "role": "agent", "manager": "manager",
                                      "claudeCommand": [sys.executable, str(FAKE_CLAUDE)]}))
    script = directory / "script.json"
    script.write_text(json.dumps([]))
    env = {**os.environ, "PYTHONPATH": str(PACKAGE), "FAKE_CLAUDE_SCRIPT": str(script),
           "FAKE_CLAUDE_LOG": str(directory / "fake")}
    return subprocess.Popen(
        [sys.executable, "-m", "hyperhive", "agent", "--name", "bench", "--socket", str(config.agent_socket("bench")),
         "--agent-config", str(agent_json), "--state-dir", str(directory / "state-bench")],
        env=env, stdout=open(directory / "agent.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def run_record(directory: Path, n: int, timeout: float = 60) -> dict:
    path = directory / "fake" / f"run-{n:03d}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            record = json.loads(path.read_text())
            if "exit" in record:
                return record
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    raise SystemExit(f"turn {n} did not finish; see {directory / 'agent.log'}")


def launch_floor(directory: Path, rounds: int) -> list[float]:
    """Milliseconds from spawning the fake claude to its first line, with nothing else in between."""
    out = []
    for i in range(rounds):
        log = directory / f"floor-{i}"
        before = time.time()
        subprocess.run([sys.executable, str(FAKE_CLAUDE), "--version"], env={**os.environ, "FAKE_CLAUDE_LOG": str(log)},
                       stdout=subprocess.DEVNULL, check=True)
        out.append((json.loads((log / "run-001.json").read_text())["started"] - before) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer turns (a smoke run, figures less steady)")
    args = parser.parse_args()
    rounds = 10 if args.quick else 50
    directory = Path(tempfile.mkdtemp(prefix="hhh", dir="/tmp"))
    service, path, _ = start_service(directory, {"bench": {}})
    config = load_config(path)
    harness = None
    try:
        harness = start_harness(directory, config)
        overheads, turns = [], []
        with Client(config.host_socket) as host:
            host.call("send", to="bench", body="warm-up")  # the harness's first turn pays its imports
            run_record(directory, 1)
            for i in range(rounds):
                time.sleep(0.05)  # let the harness park on recv again, as it would between messages
                before = time.time()
                host.call("send", to="bench", body=f"message {i}")
                record = run_record(directory, i + 2)
                overheads.append((record["started"] - before) * 1000)
                turns.append((record["ended"] - before) * 1000)
        floor = launch_floor(directory, min(rounds, 20))
    finally:
        if harness is not None:
            stop(harness)
        stop(service)
        shutil.rmtree(directory, ignore_errors=True)
    p50 = percentile(overheads, 50)
    rows = [
        ("send -> claude starting, p50 (ms)", f"{p50:.1f}", "target < 100"),
        ("send -> claude starting, p90 (ms)", f"{percentile(overheads, 90):.1f}", ""),
        ("launch floor (spawn -> first line), p50 (ms)", f"{percentile(floor, 50):.1f}",
         "the interpreter starting the fake itself"),
        ("harness's own share, p50 (ms)", f"{p50 - percentile(floor, 50):.1f}", ""),
        ("whole turn with the fake, p50 (ms)", f"{percentile(turns, 50):.0f}",
         "includes starting `hyperhive mcp`"),
    ]
    print(f"harness benchmark ({'quick' if args.quick else 'full'}; {rounds} turns; {os.cpu_count()} cores; "
          f"mean overhead {statistics.mean(overheads):.1f} ms)")
    for name, value, note in rows:
        print(f"  {name:<46} {value:>8}  {note}")
    ok = p50 < 100
    print("target: " + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
