"""The nixos-container backend, run for real against stand-in ``nix`` and ``nixos-container`` executables on PATH
that record their arguments (and fail when told): the commands a deploy runs, a failed build, a crashed
container."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import refused, wait_for
from standins.support import commit_change, agent_nix, git, nixos_env, state_dir, tag_message, tags, wait_event, \
    wait_status


def calls(hive_dir: Path) -> list[dict]:
    path = hive_dir / "standin.log"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def argvs(hive_dir: Path) -> list[str]:
    return [" ".join(c["argv"]) for c in calls(hive_dir)]


def container(hive_dir: Path, name: str) -> dict:
    home = hive_dir / "standin" / "containers" / name
    return {"status": (home / "status").read_text().strip(), **json.loads((home / "system.json").read_text())}


@pytest.fixture
def hive(start_hive, hive_dir):
    hp = start_hive(agents={"alice": {}}, backend="nixos-container", env=nixos_env(hive_dir))
    return hp


def test_start_creates_and_starts_every_container_from_the_meta_flake(hive, hive_dir):
    sd = state_dir(hive)
    meta = sd / "meta"
    run = argvs(hive_dir)
    flags = "--extra-experimental-features nix-command flakes"
    assert f"nix {flags} flake lock --update-input agent-alice" in run
    assert f"nix {flags} flake lock --update-input agent-manager" in run
    assert all(c["cwd"] == str(meta) for c in calls(hive_dir) if c["argv"][0] == "nix")
    assert f"nixos-container create h-alice --flake {meta}#alice" in run
    assert f"nixos-container create hm1nd --flake {meta}#manager" in run
    assert "nixos-container start h-alice" in run and "nixos-container start hm1nd" in run
    alice = container(hive_dir, "h-alice")
    assert alice["status"] == "up" and alice["rev"] == git(sd / "applied" / "alice", "rev-parse", "main")
    states = {a["name"]: a["state"] for a in hive.host().call("list_agents")["agents"]}
    assert states == {"manager": "running", "alice": "running"}
    # the flake lock was written by (stand-in) nix and committed with the seed
    assert git(meta, "log", "-1", "--format=%s").startswith("deploy ")
    assert git(meta, "status", "--porcelain") == ""
    policy = json.loads((meta / "policy" / "alice.json").read_text())
    assert policy["name"] == "alice" and policy["role"] == "agent" and policy["managerName"] == "manager"


def test_approve_locks_builds_and_switches_the_container(hive, hive_dir):
    sd = state_dir(hive)
    meta = sd / "meta"
    sha = commit_change(hive, "alice", agent_nix("containerised"))
    approval_id = hive.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    (hive_dir / "standin.log").write_text("")
    out = hive.cli("approve", str(approval_id)).stdout
    assert f"deployed/{approval_id}" in out
    run = argvs(hive_dir)
    lock = run.index("nix --extra-experimental-features nix-command flakes flake lock --update-input agent-alice")
    update = run.index(f"nixos-container update h-alice --flake {meta}#alice")
    start = run.index("nixos-container start h-alice")
    assert lock < update < start
    assert container(hive_dir, "h-alice")["rev"] == sha
    assert json.loads((meta / "flake.lock").read_text())["nodes"]["agent-alice"]["locked"]["rev"] == sha
    assert git(meta, "log", "-1", "--format=%s") == f"deploy alice deployed/{approval_id} {sha[:12]}"
    assert tags(sd / "applied" / "alice")[f"deployed/{approval_id}"] == sha


def test_a_failed_build_is_tagged_with_its_error_and_everything_is_put_back(hive, hive_dir):
    sd = state_dir(hive)
    meta = sd / "meta"
    applied = sd / "applied" / "alice"
    old_main = git(applied, "rev-parse", "main")
    old_lock = (meta / "flake.lock").read_text()
    old_meta_head = git(meta, "rev-parse", "HEAD")
    manager = hive.client("manager")
    sha = commit_change(hive, "alice", agent_nix("this one does not build"))
    approval_id = manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    error = "error: builder for '/nix/store/0000-nixos-system-h-alice.drv' failed with exit code 1"
    (hive_dir / "standin.fail").write_text(f"nixos-container update h-alice\t{error}\n")

    result = hive.cli("approve", str(approval_id), check=False)
    assert result.returncode == 1 and "failed" in result.stdout and error in result.stderr
    approval = wait_status(hive.host(), approval_id)
    assert approval["status"] == "failed" and approval["tag"] == f"failed/{approval_id}"
    assert error in approval["error"] and "nixos-container update h-alice" in approval["error"]
    t = tags(applied)
    assert t[f"failed/{approval_id}"] == sha and f"deployed/{approval_id}" not in t
    assert error in tag_message(applied, f"failed/{approval_id}")
    # main, the meta lock and the meta history are as they were; the container still runs the old commit
    assert git(applied, "rev-parse", "main") == old_main
    assert (meta / "flake.lock").read_text() == old_lock
    assert git(meta, "rev-parse", "HEAD") == old_meta_head and git(meta, "status", "--porcelain") == ""
    assert container(hive_dir, "h-alice") == {"status": "up", "flake": f"{meta}#alice", "rev": old_main}
    event = wait_event(manager, lambda m: m["data"].get("approval_id") == approval_id)
    assert event["data"]["status"] == "failed" and error in event["data"]["error"]
    assert "failed to build" in event["body"]

    # once the cause is gone, the same change can be proposed again and deploys
    (hive_dir / "standin.fail").unlink()
    again = manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    hive.host().call("approve", id=again)
    assert wait_status(hive.host(), again)["status"] == "deployed"
    assert container(hive_dir, "h-alice")["rev"] == sha


def test_a_stopped_container_is_reported_as_crashed(hive, hive_dir):
    manager = hive.client("manager")
    (hive_dir / "standin" / "containers" / "h-alice" / "status").write_text("down")
    event = wait_event(manager, lambda m: m["data"].get("event") == "crashed", timeout=6)
    assert event["data"]["agent"] == "alice" and "h-alice" in event["body"]
    assert {a["name"]: a["state"] for a in manager.call("list_agents")["agents"]}["alice"] == "crashed"
    # killed on purpose is not a crash
    manager.call("start", name="alice")
    manager.call("kill", name="alice")
    assert container(hive_dir, "h-alice")["status"] == "down"
    wait_for(lambda: True)
    bodies = [m["body"] for m in manager.call("recv", wait_seconds=1, max=20)["messages"]]
    assert not any("crashed" in b for b in bodies)


def test_a_deploy_cut_short_by_a_crash_of_the_service_is_failed_and_undone_at_the_next_start(hive, hive_dir):
    from conftest import HiveProcess

    sd = state_dir(hive)
    meta = sd / "meta"
    applied = sd / "applied" / "alice"
    old_main = git(applied, "rev-parse", "main")
    old_lock = (meta / "flake.lock").read_text()
    sha = commit_change(hive, "alice", agent_nix("half-deployed"))
    approval_id = hive.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    (hive_dir / "standin.fail").write_text("nixos-container update h-alice\tsleep:30\n")
    hive.host().call("approve", id=approval_id)
    wait_for(lambda: "nixos-container update h-alice" in " ".join(argvs(hive_dir)), message="the build running")
    assert git(applied, "rev-parse", "main") == sha  # main moved, the lock changed: mid-deploy
    assert (meta / "flake.lock").read_text() != old_lock
    hive.kill9()
    (hive_dir / "standin.fail").unlink()

    again = HiveProcess(hive.config_path, env=hive.env).start()
    try:
        approval = again.host().call("approval", id=approval_id)
        assert approval["status"] == "failed" and "interrupted" in approval["error"]
        assert git(applied, "rev-parse", "main") == old_main
        assert (meta / "flake.lock").read_text() == old_lock and git(meta, "status", "--porcelain") == ""
        assert tags(applied)[f"failed/{approval_id}"] == sha
        event = wait_event(again.client("manager"), lambda m: m["data"].get("approval_id") == approval_id)
        assert event["data"]["status"] == "failed"
    finally:
        again.stop()


def test_the_manager_cannot_make_a_deploy_write_through_a_symlink_it_planted(hive, hive_dir):
    """The manager's container sees <stateDir>/agents read-write: a symlink it puts where the service writes an
    agent's agent.json must not make the service (root on the host) overwrite the file it points at."""
    victim = hive_dir / "host-file"
    victim.write_text("the host's own file\n")
    agent_dir = state_dir(hive) / "agents" / "alice"
    (agent_dir / "agent.tmp").unlink(missing_ok=True)
    (agent_dir / "agent.tmp").symlink_to(victim)
    (agent_dir / "agent.json").unlink(missing_ok=True)
    (agent_dir / "agent.json").symlink_to(victim)
    hive.client("manager").call("update", name="alice")
    assert victim.read_text() == "the host's own file\n"
    written = agent_dir / "agent.json"
    assert not written.is_symlink() and json.loads(written.read_text())["name"] == "alice"


def test_without_nixos_container_the_hive_says_so_once_and_pins_nothing(start_hive, hive_dir):
    """The nixos-container backend off NixOS: said once, up front, in the log, the dashboard's alerts and
    /api/state, before any flake lock is tried (each tried the network for seconds) or container started."""
    from browser import http
    from standins.support import without_nixos_container_env

    hive = start_hive(agents={"alice": {}}, backend="nixos-container", env=without_nixos_container_env())
    token = (hive.config.state_dir / "dashboard.token").read_text().strip()  # (this backend's dashboard needs one)
    errors = http(hive.dashboard_url, "GET", "/api/state", token=token).json()["errors"]
    backend = [e for e in errors if e["section"] == "backend"]
    assert len(backend) == 1 and "`nixos-container` not found on PATH" in backend[0]["error"], errors
    assert 'backend = "local"' in backend[0]["error"]
    page = http(hive.dashboard_url, "GET", "/", token=token).text
    assert "agents not started" in page and "not found on PATH" in page
    log = hive.log()
    assert log.count("not found on PATH") == 1 and "flake lock" not in log and "could not start" not in log, log
    assert calls(hive_dir) == []  # no stand-in either: nothing was run


FLAKE_WITH_INPUT = """{{
  inputs.x = {{ url = {url}; flake = false; }};
  outputs = {{ self, x }}: {{ nixosModules.default = {{ imports = [ ./agent.nix ]; }}; }};
}}
"""


@pytest.mark.nix  # the flake's inputs are read with nix-instantiate
def test_a_flake_input_read_from_the_host_is_refused_before_nix_locks_it(hive, hive_dir):
    """`nix flake lock --update-input agent-<n>` (root, before any build) locks the agent flake's own inputs: a
    git+file:// input on the manager's proposed repo made Nix run git there, with the manager's .git/config
    (core.fsmonitor) as root, and a path: input copied host files into the store. Such a proposal is refused,
    naming the input (an escaped string, a bare path, an indirect one, a poisoned flake.lock too); nothing is
    locked; a remote input is still taken."""
    sd = state_dir(hive)
    manager = hive.client("manager")
    config = sd / "agents" / "alice" / "config"
    (hive_dir / "standin.log").write_text("")
    for url, named in ((json.dumps(f"git+file://{config}"), f'inputs.x.url = "git+file://{config}"'),
                       ('"p\\ath:/etc"', 'inputs.x.url = "path:/etc"'),
                       ('"/var/lib"', 'inputs.x.url = "/var/lib"')):
        sha = commit_change(hive, "alice", FLAKE_WITH_INPUT.format(url=url), filename="flake.nix")
        message = refused(lambda: manager.call("request_apply_commit", agent="alice", commit=sha), "bad_request")
        assert "inputs Nix would read from this host" in message and named in message, message
    (config / "flake.nix").write_text("{ inputs.nixpkgs = { }; outputs = _: { }; }\n")
    sha = commit_change(hive, "alice", agent_nix("indirect"))
    message = refused(lambda: manager.call("request_apply_commit", agent="alice", commit=sha), "bad_request")
    assert "inputs.nixpkgs names no url" in message, message
    remote = FLAKE_WITH_INPUT.format(url='"github:NixOS/nixpkgs/nixos-24.05"')
    (config / "flake.lock").write_text(json.dumps({"root": "root", "version": 7, "nodes": {
        "root": {"inputs": {"x": "x"}},
        "x": {"flake": False, "locked": {"type": "path", "path": "/etc", "narHash": "sha256-x"},
              "original": {"type": "github", "owner": "NixOS", "repo": "nixpkgs", "ref": "nixos-24.05"}}}}))
    sha = commit_change(hive, "alice", remote, filename="flake.nix")
    message = refused(lambda: manager.call("request_apply_commit", agent="alice", commit=sha), "bad_request")
    assert 'flake.lock: nodes.x.locked pins a "path" input at "/etc"' in message, message
    assert hive.cli("pending").stdout.strip() == "nothing pending"
    assert not any("flake lock" in a for a in argvs(hive_dir))

    (config / "flake.lock").unlink()
    sha = commit_change(hive, "alice", remote, filename="flake.nix")
    approval_id = manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    assert f"deployed/{approval_id}" in hive.cli("approve", str(approval_id)).stdout
    assert "nix --extra-experimental-features nix-command flakes flake lock --update-input agent-alice" in \
        argvs(hive_dir)


def test_a_deploy_queued_behind_another_that_would_undo_it_is_failed_not_built(hive, hive_dir):
    """Approving checks that what is deployed is what the diff was taken against; deploys queue, so a second
    approval clicked while the first waited its turn passed that check and, once built, undid the first. Its
    deploy checks again under the deploy lock: it fails, naming why, and nothing of it is built."""
    sd = state_dir(hive)
    manager, host = hive.client("manager"), hive.host()
    applied = sd / "applied" / "alice"
    config = sd / "agents" / "alice" / "config"
    deployed = git(applied, "rev-parse", "main")
    slow = commit_change(hive, "manager", "{ ... }: { }\n# the manager's slow build\n")
    git(config, "checkout", "-q", "-b", "fix", deployed)
    fix = commit_change(hive, "alice", (config / "agent.nix").read_text() + "# THE FIX\n")
    git(config, "checkout", "-q", "-b", "tweak", deployed)
    tweak = commit_change(hive, "alice", (config / "flake.nix").read_text() + "# a comment\n", filename="flake.nix")
    ids = [manager.call("request_apply_commit", agent=agent, commit=sha)["approval_id"]
           for agent, sha in (("manager", slow), ("alice", fix), ("alice", tweak))]
    (hive_dir / "standin.fail").write_text("nixos-container update hm1nd\tsleep:3\n")
    for approval_id in ids:  # the second and the third wait behind the first; alice's main has not moved yet
        assert host.call("approve", id=approval_id)["status"] == "approved"
    assert wait_status(host, ids[1])["status"] == "deployed"
    failed = wait_status(host, ids[2])
    assert failed["status"] == "failed" and failed["tag"] == f"failed/{ids[2]}", failed
    assert (f"what is deployed for alice changed between the approval and its build (approved against "
            f"{deployed[:12]}, now {fix[:12]}), and commit {tweak[:12]} does not contain it") in failed["error"]
    assert git(applied, "rev-parse", "main") == fix and container(hive_dir, "h-alice")["rev"] == fix
