"""Property: whatever bytes or JSON arrive on a socket, the service answers each line with a well-formed
response and keeps running."""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CODES = {"bad_request", "forbidden", "not_found", "too_large", "conflict", "internal"}
OPS = ["whoami", "send", "recv", "ack", "status", "list_agents", "stats", "ask_operator", "request_spawn",
       "kill", "nope", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20)

requests = st.fixed_dictionaries(
    {"op": st.sampled_from(OPS)},
    optional={"to": st.sampled_from(["bob", "alice", "manager", "operator", "carl", ""]) | json_values,
              "body": st.text(max_size=300) | json_values,
              "wait_seconds": st.sampled_from([0, None, -1, 0.01, "x", True]),
              "max": json_values, "ids": json_values, "samples": json_values, "name": json_values,
              "question": json_values})

lines = st.one_of(
    requests.map(lambda r: json.dumps(r).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=400).map(lambda b: b.replace(b"\n", b"")),
)


def well_formed(response: dict) -> bool:
    if response.get("ok") is True:
        return set(response) == {"ok", "result"}
    error = response.get("error")
    return (response.get("ok") is False and isinstance(error, dict) and error.get("code") in CODES
            and isinstance(error.get("message"), str) and error["message"] != "")


@pytest.fixture(scope="module")
def fuzz_hive(tmp_path_factory):
    import tempfile
    from pathlib import Path

    from conftest import HiveProcess, write_config

    d = Path(tempfile.mkdtemp(prefix="hhf", dir="/tmp"))
    hp = HiveProcess(write_config(d, broker={"maxMessageBytes": 256, "recvMaxWaitSeconds": 0.05}),
                     args=("--no-agents",)).start()
    yield hp
    hp.stop()
    import shutil

    shutil.rmtree(d, ignore_errors=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(lines, min_size=1, max_size=5))
def test_every_line_gets_a_well_formed_response(fuzz_hive, batch):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(fuzz_hive.config.agent_socket("alice")))
        f = s.makefile("rb")
        s.sendall(b"".join(line + b"\n" for line in batch))
        for _ in batch:
            line = f.readline()
            assert line.endswith(b"\n"), "the service closed the connection or cut a response"
            response = json.loads(line)
            assert well_formed(response), response
            assert response.get("error", {}).get("code") != "internal", response
        s.sendall(b'{"op": "whoami"}\n')
        assert json.loads(f.readline())["result"]["name"] == "alice"
    assert fuzz_hive.proc.poll() is None


@pytest.mark.parametrize("line", [
    b'{"op": "recv", "wait_seconds": NaN}', b'{"op": "recv", "lease_seconds": Infinity}',
    b'{"op": "recv", "lease_seconds": NaN}', b'{"op": "stats", "samples": [{"key": "k", "value": NaN}]}',
    b'{"op": "send", "to": "bob", "body": "hi", "x": -Infinity}', b'{"op": "recv", "lease_seconds": 1e999}',
    b'{"op": "recv", "wait_seconds": 1' + b'0' * 400 + b'}', b'{"op": "ack", "ids": [99999999999999999999]}',
])
def test_numbers_json_does_not_have_are_not_json(fuzz_hive, line):
    """NaN and Infinity are not JSON (RFC 8259), and no argument holds a number beyond 64 bits: such a line is
    bad_request, never a lease that never ends, a parked request or an internal error."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(fuzz_hive.config.agent_socket("alice")))
        f = s.makefile("rb")
        s.sendall(line + b"\n")
        response = json.loads(f.readline())
        assert response["ok"] is False and response["error"]["code"] == "bad_request", response
        s.sendall(b'{"op": "whoami"}\n')
        assert json.loads(f.readline())["result"]["name"] == "alice"
