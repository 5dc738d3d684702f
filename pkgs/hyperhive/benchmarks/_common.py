"""What the benchmarks share: a real ``hyperhive serve --no-agents`` in a temporary directory, and percentiles."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def start_service(directory: Path, agents: dict) -> tuple[subprocess.Popen, Path, dict]:
    """``hyperhive serve --no-agents`` on a new ``hive.json`` in ``directory`` declaring ``agents``: the process,
    the config's path and the line the service prints once it is ready."""
    config = {"version": 1, "stateDir": str(directory / "state"), "runDir": str(directory / "run"),
              "backend": "local", "dashboard": {"listen": "127.0.0.1:0"}, "agents": agents}
    path = directory / "hive.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([sys.executable, "-m", "hyperhive", "serve", "--no-agents", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=open(directory / "serve.log", "wb"),
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(PACKAGE)})
    line = proc.stdout.readline()
    if not line.startswith(b"{"):
        raise SystemExit(f"service did not start: {(directory / 'serve.log').read_text()}")
    return proc, path, json.loads(line)


def stop_service(proc: subprocess.Popen, wait: float) -> None:
    """SIGTERM, and SIGKILL to its process group when it has not ended after ``wait`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
