"""The dashboard benchmark runs end to end (with small numbers) and prints its figures."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import PACKAGE_DIR


def test_dashboard_benchmark_runs_and_prints_its_figures():
    result = subprocess.run(
        [sys.executable, str(PACKAGE_DIR / "benchmarks" / "dashboard.py"), "--agents", "3", "--questions", "5",
         "--messages", "2000", "--requests", "20", "--start-agents", "3", "--json"],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "GET /api/state  p50" in out and "p99" in out and "target:" in out
    assert "start-up: 3 agents: first start" in out and "restart ready in" in out, out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["agents"] == 3 and figures["pending_questions"] == 5 and figures["messages"] == 2000
    assert 0 < figures["state_p50_ms"] <= figures["state_p99_ms"]
