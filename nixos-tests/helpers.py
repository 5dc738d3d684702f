# Shared by the testScripts of the hyperhive VM tests (prepended to each). `host`, `STATE` and `PORT` are defined
# by the test before these are used.
import json
import shlex


def inside(container, command):
    """A host command running the shell `command` as root inside `container`."""
    return f"nixos-container run {container} -- bash -lc {shlex.quote(command)}"


def client(container, args):
    """`hyperhive client` on the container's own socket (the socket is the agent's identity)."""
    return inside(container, f"hyperhive client --socket /run/hive/mcp.sock {args}")


def call(container, op, **args):
    """One request of the agent protocol from inside `container`; its result."""
    return json.loads(host.succeed(client(container, f"call {op} {shlex.quote(json.dumps(args))}")))


def failing(command):
    """Run `command`, which must fail; its combined output, to check why."""
    status, out = host.execute(command + " 2>&1")
    assert status != 0, f"expected failure, got success: {command}\n{out}"
    return out


def tags(agent, pattern):
    return host.succeed(f"git -C {STATE}/applied/{agent} tag -l {shlex.quote(pattern)}").split()


def quarantine_tags(agent, pattern):
    """proposal/ and denied/ tags live in the quarantine repo, which no container mounts."""
    return host.succeed(f"git -C {STATE}/quarantine/{agent}.git tag -l {shlex.quote(pattern)}").split()


def main_sha(agent):
    return host.succeed(f"git -C {STATE}/applied/{agent} rev-parse main").strip()


def propose(agent, edit, message):
    """The manager edits `agent`'s config repo from its container, commits, and proposes the commit."""
    sha = host.succeed(inside("hm1nd", f"cd /agents/{agent}/config && {edit} && git commit -qam {shlex.quote(message)}"
                                        " && git rev-parse HEAD")).strip()
    return call("hm1nd", "request_apply_commit", agent=agent, commit=sha)["approval_id"], sha


def api(method, path, token=None, body=None):
    """The dashboard's JSON API over loopback: (HTTP status, body)."""
    auth = f"-H {shlex.quote('Authorization: Bearer ' + token)} " if token else ""
    data = f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))} " if body is not None else ""
    out = host.succeed(f"curl -sS -o /tmp/api.out -w '%{{http_code}}' -X {method} {auth}{data}"
                       f"http://127.0.0.1:{PORT}{path}; echo; cat /tmp/api.out")
    status, _, text = out.partition("\n")
    return int(status), text


def wait_for_hive():
    host.wait_for_unit("hyperhive.service")
    host.wait_for_file("/run/hyperhive/host.sock")
    for container in ["hm1nd", "h-alice", "h-bob"]:
        host.wait_for_unit(f"container@{container}.service")
        host.wait_until_succeeds(inside(container, "systemctl is-active hive-agent.service"), timeout=300)
    for agent in ["alice", "bob"]:
        host.wait_until_succeeds(f"git -C {STATE}/agents/{agent}/config rev-parse HEAD", timeout=300)
