"""The nixos-container backend, run for real against stand-in ``nix`` and ``nixos-container`` executables on PATH
that record their arguments (and fail when told): the commands a deploy runs, a failed build, a crashed
container."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import refused, wait_for
from standins.support import commit_change, agent_nix, git, needs_nix, nixos_env, state_dir, tag_message, tags, \
    wait_event, wait_status


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
    assert all(c["cwd"] == str(meta) for c in calls(hive_dir) if c["argv"][0] == "nix" and "lock" in c["argv"])
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


def test_a_killed_container_that_came_up_with_the_host_is_stopped_again_at_the_start(hive, hive_dir):
    """Declared containers have autoStart (modules/hyperhive.nix): systemd boots them with the host, before the
    service. One that was killed is stopped again when the service starts, and stays so until it is started or
    an approved deploy runs it."""
    from conftest import HiveProcess

    hive.cli("kill", "alice")
    assert container(hive_dir, "h-alice")["status"] == "down"
    hive.stop()
    (hive_dir / "standin" / "containers" / "h-alice" / "status").write_text("up")  # the host booted it

    again = HiveProcess(hive.config_path, env=hive.env).start()
    try:
        assert container(hive_dir, "h-alice")["status"] == "down"
        assert "alice stays stopped: operator killed it" in again.log()
        assert {a["name"]: a["state"] for a in again.host().call("list_agents")["agents"]} == \
            {"manager": "running", "alice": "stopped"}
        sha = commit_change(again, "alice", agent_nix("approved while killed"))
        approval_id = again.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
        assert f"deployed/{approval_id}" in again.cli("approve", str(approval_id)).stdout
        assert container(hive_dir, "h-alice")["status"] == "up"  # the deploy runs it
        rows = {a["name"]: a for a in again.host().call("agents_overview")["agents"]}
        assert "killed_by" not in rows["alice"]
    finally:
        again.stop()


def conf(hive_dir: Path, container_name: str) -> dict:
    path = hive_dir / "standin" / "etc" / f"{container_name}.conf"
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@needs_nix
def test_a_spawned_agents_approved_change_of_privateusers_reaches_its_container(hive, hive_dir):
    """A spawned agent's user namespace is its agent.nix's `privateUsers`, applied through the conf the service
    writes for its container (nixos-containers.nix starts nspawn from it). An approved change of it must reach that
    conf and restart the container on it, at every deploy and not only at the first: else the container keeps running
    as the host's root after the operator approved `privateUsers = true` (or the other way round), while the
    dashboard shows the policy approved."""
    from hyperhive.backends.nixos_container import uid_base

    manager = hive.client("manager")
    approval_id = manager.call("request_spawn", name="carol")["approval_id"]
    hive.cli("approve", str(approval_id))
    assert wait_status(hive.host(), approval_id, timeout=60)["status"] == "deployed"
    uid = uid_base("carol", 0x70000000)
    assert conf(hive_dir, "h-carol")["PRIVATE_USERS"] == str(uid)

    for private, expected in ((False, "no"), (True, str(uid))):
        text = agent_nix("carol").replace("  };\n}", f"    privateUsers = {str(private).lower()};\n  }};\n}}")
        sha = commit_change(hive, "carol", text)
        approval_id = manager.call("request_apply_commit", agent="carol", commit=sha)["approval_id"]
        (hive_dir / "standin.log").write_text("")
        hive.cli("approve", str(approval_id))
        assert wait_status(hive.host(), approval_id, timeout=60)["status"] == "deployed"
        assert conf(hive_dir, "h-carol")["PRIVATE_USERS"] == expected, private
        run = argvs(hive_dir)
        # nspawn takes a conf at its start only: the running container is stopped and started again on it
        assert run.index("nixos-container update h-carol --flake " + str(state_dir(hive) / "meta") + "#carol") \
            < run.index("nixos-container stop h-carol") < run.index("nixos-container start h-carol"), run
        assert container(hive_dir, "h-carol")["status"] == "up"


def standin_container_cli(hive, *args: str) -> subprocess.CompletedProcess:
    """What the operator runs by hand on the host (`nixos-container destroy h-bob`): the stand-in, as the service
    runs it."""
    return subprocess.run(["nixos-container", *args], env=hive.env, capture_output=True, text=True, timeout=60)


def test_starting_an_agent_whose_container_is_gone_does_not_take_another_agents_build(start_hive, hive_dir):
    """nixos-container.pl's buildFlake builds into a link `.tmp` of its working directory and reads the system back
    from it (pkgs/by-name/ni/nixos-container/nixos-container.pl). `hyperhive start` of an agent whose container is
    gone creates it while an approved deploy of another agent may be building: the two builds must not share that
    link, or one container boots the other agent's system (its prompt, its policy)."""
    hive = start_hive(agents={"alice": {}, "bob": {}}, backend="nixos-container", env=nixos_env(hive_dir))
    sd = state_dir(hive)
    meta = sd / "meta"
    assert standin_container_cli(hive, "destroy", "h-bob").returncode == 0  # the operator removed it by hand
    sha = commit_change(hive, "alice", agent_nix("alice, changed"))
    approval_id = hive.client("manager").call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    # alice's build lingers after writing its result link, before nixos-container reads it back
    (hive_dir / "standin.fail").write_text(
        f'nix build -o .tmp -- {meta}#nixosConfigurations."alice"\tsleep-after:3\n')
    hive.host().call("approve", id=approval_id)
    wait_for(lambda: any('"alice"' in a for a in argvs(hive_dir) if a.startswith("nix build")),
             message="alice's build running")
    started = hive.cli("start", "bob", check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    assert wait_status(hive.host(), approval_id, timeout=60)["status"] == "deployed"
    assert container(hive_dir, "h-alice") == {"status": "up", "flake": f"{meta}#alice", "rev": sha}
    bob = git(sd / "applied" / "bob", "rev-parse", "main")
    assert container(hive_dir, "h-bob") == {"status": "up", "flake": f"{meta}#bob", "rev": bob}
    # each build had a working directory of its own, gone after it (with the `.tmp` link nixos-container.pl leaves)
    builds = [c["cwd"] for c in calls(hive_dir) if c["argv"][:2] == ["nix", "build"]]
    assert len(builds) == len(set(builds)) >= 2 and not any(Path(cwd).exists() for cwd in builds), builds


def test_starting_an_agent_whose_container_is_gone_waits_for_its_deploy_in_flight(start_hive, hive_dir):
    """Creating a missing container at a start builds what meta's lock pins, which an approved deploy in flight has
    just moved to its commit (and puts back if its build fails): the start waits for that deploy instead of building
    the commit beside it, so that what runs is what the approval says."""
    hive = start_hive(agents={"alice": {}, "bob": {}}, backend="nixos-container", env=nixos_env(hive_dir))
    sd = state_dir(hive)
    meta = sd / "meta"
    old = git(sd / "applied" / "bob", "rev-parse", "main")
    assert standin_container_cli(hive, "destroy", "h-bob").returncode == 0
    sha = commit_change(hive, "bob", agent_nix("bob, changed"))
    approval_id = hive.client("manager").call("request_apply_commit", agent="bob", commit=sha)["approval_id"]
    (hive_dir / "standin.fail").write_text("nixos-container create h-bob\tsleep:3\n")
    hive.host().call("approve", id=approval_id)
    wait_for(lambda: any(a.startswith("nixos-container create h-bob") for a in argvs(hive_dir)),
             message="bob's deploy building")
    started = hive.cli("start", "bob", check=False)
    assert started.returncode == 0, started.stdout + started.stderr
    approval = wait_status(hive.host(), approval_id, timeout=60)
    assert approval["status"] == "deployed", approval
    assert container(hive_dir, "h-bob") == {"status": "up", "flake": f"{meta}#bob", "rev": sha}
    assert git(sd / "applied" / "bob", "rev-parse", "main") == sha != old


def test_a_container_whose_conf_the_service_cannot_find_after_its_create_is_not_run(start_hive, hive_dir):
    """nixos-container writes a created container's conf into its configurationDirectory; the service rewrites it
    with the container's bind mounts and user namespace. Where the service looks elsewhere (the directory of another
    stateVersion) it finds none: the create fails naming the file, and no container runs without its settings (on
    nixos-container's private network, without its socket and state)."""
    elsewhere = hive_dir / "standin" / "containers-conf"
    env = {**nixos_env(hive_dir), "HYPERHIVE_STANDIN_CONF_DIR": str(elsewhere)}
    hive = start_hive(agents={"alice": {}}, backend="nixos-container", env=env)
    wanted = Path(env["HYPERHIVE_NIXOS_CONTAINERS_DIR"]) / "h-alice.conf"
    log = hive.log()
    assert f"could not start alice: {wanted} does not exist after `nixos-container create h-alice`" in log, log
    assert "HYPERHIVE_NIXOS_CONTAINERS_DIR" in log
    # the half-made container is gone: nothing to start later on nixos-container's own settings
    assert not (hive_dir / "standin" / "containers" / "h-alice").exists()
    assert not (elsewhere / "h-alice.conf").exists()
    assert {a["name"]: a["state"] for a in hive.host().call("list_agents")["agents"]}["alice"] != "running"
    assert "nixos-container start h-alice" not in argvs(hive_dir)


def test_a_container_without_its_profile_never_boots_the_agent_named_container(start_hive, hive_dir):
    """nixos-containers.nix's start script runs `nixos-container update <c>` when the conf has FLAKE and the
    container's profile is missing, and nixos-container.pl builds that FLAKE with the attribute "container"
    (pkgs/by-name/ni/nixos-container/nixos-container.pl, `update`). The conf the service writes has no FLAKE: such a
    start fails, rather than booting the agent named "container" in alice's container, and a rebuild mends it."""
    hive = start_hive(agents={"alice": {}, "container": {}}, backend="nixos-container", env=nixos_env(hive_dir))
    sd = state_dir(hive)
    meta = sd / "meta"
    assert "FLAKE" not in conf(hive_dir, "h-alice")
    (hive_dir / "standin" / "containers" / "h-alice" / "system.json").unlink()  # its profile is gone
    restarted = hive.cli("restart", "alice", check=False)
    profile = hive_dir / "standin" / "containers" / "h-alice" / "system.json"
    assert not profile.exists(), f"alice's container was built again from its conf: {profile.read_text()}"
    assert restarted.returncode != 0 and "failed to start container" in restarted.stderr, restarted
    assert not any(a.startswith("nixos-container update h-alice") and "--flake" not in a for a in argvs(hive_dir))
    hive.cli("rebuild", "alice")
    alice = git(sd / "applied" / "alice", "rev-parse", "main")
    assert container(hive_dir, "h-alice") == {"status": "up", "flake": f"{meta}#alice", "rev": alice}


def test_a_failed_create_leaves_no_container_to_boot_from_its_conf(start_hive, hive_dir):
    """nixos-container.pl keeps the conf it wrote when the flake's build fails (FLAKE=<meta>, no profile): started
    later, nixos-containers.nix's start script would build `<meta>#nixosConfigurations."container"` into it. The
    service removes what the failed create left, so the next start creates the container from its own attribute."""
    from conftest import HiveProcess

    (hive_dir / "standin.fail").parent.mkdir(parents=True, exist_ok=True)
    meta = hive_dir / "state" / "meta"
    (hive_dir / "standin.fail").write_text(
        'nix build -o .tmp -- ' + str(meta) + '#nixosConfigurations."alice"\terror: builder for alice failed\n')
    hive = start_hive(agents={"alice": {}, "container": {}}, backend="nixos-container", env=nixos_env(hive_dir))
    assert state_dir(hive) / "meta" == meta
    assert "could not start alice" in hive.log() and "builder for alice failed" in hive.log()
    assert not (hive_dir / "standin" / "containers" / "h-alice").exists()
    assert not (hive_dir / "standin" / "etc" / "h-alice.conf").exists()
    hive.stop()
    (hive_dir / "standin.fail").unlink()
    again = HiveProcess(hive.config_path, env=hive.env).start()
    try:
        alice = git(meta.parent / "applied" / "alice", "rev-parse", "main")
        assert container(hive_dir, "h-alice") == {"status": "up", "flake": f"{meta}#alice", "rev": alice}
    finally:
        again.stop()


@needs_nix
@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to other uids takes root")
def test_a_spawned_agents_directories_follow_its_privateusers_like_a_declared_ones(hive, hive_dir):
    """A declared container's prepare unit (modules/hyperhive.nix) gives its directories, and all in them, to its
    root uid whenever that changed; nspawn's --private-users-ownership=auto never touches a bind mount, and does
    nothing without a user namespace. A spawned agent's directories follow an approved change of `privateUsers`
    the same way: back to root when it is turned off (not left to a uid range no longer its own), and what the
    agent wrote meanwhile to its namespaced root when it is turned on again (else it could not write its own files,
    nor reach its socket)."""
    from hyperhive.backends.nixos_container import uid_base

    sd = state_dir(hive)
    manager = hive.client("manager")
    approval_id = manager.call("request_spawn", name="carol")["approval_id"]
    hive.cli("approve", str(approval_id))
    assert wait_status(hive.host(), approval_id, timeout=60)["status"] == "deployed"
    base = uid_base("carol", 0x70000000)
    dirs = [sd / "agents" / "carol" / "state", sd / "claude" / "carol", hive.config.agent_socket("carol").parent]

    def owners() -> dict[str, int]:
        out = {}
        for top in dirs:
            for path in [top, *top.rglob("*")]:
                out[str(path)] = path.lstat().st_uid
        return out

    wait_for(lambda: hive.config.agent_socket("carol").exists(), message="carol's socket")
    assert set(owners().values()) == {base}, owners()
    for private, uid in ((False, 0), (True, base)):
        # what the agent wrote as its root of the moment
        note = dirs[0] / f"notes-{private}"
        note.mkdir()
        (note / "today.md").write_text("written in the container\n")
        (note / "link").symlink_to("/etc/hostname")
        for path in (note, note / "today.md"):
            os.chown(path, base if not private else 0, base if not private else 0)
        text = agent_nix("carol").replace("  };\n}", f"    privateUsers = {str(private).lower()};\n  }};\n}}")
        approval_id = manager.call("request_apply_commit", agent="carol", commit=commit_change(hive, "carol", text))
        hive.cli("approve", str(approval_id["approval_id"]))
        assert wait_status(hive.host(), approval_id["approval_id"], timeout=60)["status"] == "deployed"
        assert conf(hive_dir, "h-carol")["PRIVATE_USERS"] == (str(uid) if uid else "no")
        assert set(owners().values()) == {uid}, (private, owners())
        assert os.stat("/etc/hostname").st_uid == 0  # a link is given, not what it points at
        assert (hive.config.agent_socket("carol").parent.stat().st_mode & 0o777) == 0o700


def proposal_refused(hive, text: str, filename: str = "agent.nix") -> str:
    """What the service answers the manager's proposal of alice's config with ``text`` committed as ``filename``:
    a refusal (bad_request), its message."""
    sha = commit_change(hive, "alice", text, filename=filename)
    return refused(lambda: hive.client("manager").call("request_apply_commit", agent="alice", commit=sha),
                   "bad_request")


def nothing_pending_nor_locked(hive, hive_dir: Path) -> None:
    assert hive.cli("pending").stdout.strip() == "nothing pending"
    assert not any("flake lock" in a for a in argvs(hive_dir))


def lock_pinning_x(locked: dict) -> str:
    """A flake.lock whose input x (github:NixOS/nixpkgs/nixos-24.05 as written) is pinned as ``locked`` says."""
    return json.dumps({"root": "root", "version": 7, "nodes": {
        "root": {"inputs": {"x": "x"}},
        "x": {"flake": False, "locked": locked,
              "original": {"type": "github", "owner": "NixOS", "repo": "nixpkgs", "ref": "nixos-24.05"}}}})


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
        message = proposal_refused(hive, FLAKE_WITH_INPUT.format(url=url), filename="flake.nix")
        assert "inputs Nix would read from this host" in message and named in message, message
    (config / "flake.nix").write_text("{ inputs.nixpkgs = { }; outputs = _: { }; }\n")
    message = proposal_refused(hive, agent_nix("indirect"))
    assert "inputs.nixpkgs names no url" in message, message
    remote = FLAKE_WITH_INPUT.format(url='"github:NixOS/nixpkgs/nixos-24.05"')
    (config / "flake.lock").write_text(lock_pinning_x({"type": "path", "path": "/etc", "narHash": "sha256-x"}))
    message = proposal_refused(hive, remote, filename="flake.nix")
    assert 'flake.lock: nodes.x.locked pins a "path" input at "/etc"' in message, message
    nothing_pending_nor_locked(hive, hive_dir)

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


@pytest.mark.nix  # the flake's inputs are read with nix-instantiate
def test_a_flake_input_fetched_from_this_host_over_the_network_is_refused(hive, hive_dir):
    """A remote-looking input whose host is this host or its local network (loopback, unspecified, link-local or
    private, in any form the resolver reads; a name without a dot; a forge's `host`; git submodules the remote
    names) made root fetch from local services (the dashboard on 127.0.0.1, a git daemon) when Nix locked the agent
    flake. Such a proposal is refused naming each input; remote ones on public hosts still deploy."""
    manager = hive.client("manager")
    config = state_dir(hive) / "agents" / "alice" / "config"
    (hive_dir / "standin.log").write_text("")
    local = {
        "a": "git+ssh://git@localhost/srv/repo", "b": "https://localhost/x.tar.gz", "c": "https://localhost./x.tar.gz",
        "d": "git+https://127.0.0.1:8080/x", "e": "https://[::1]/x.tar.gz", "f": "https://0.0.0.0/x.tar.gz",
        "g": "https://2130706433/x.tar.gz", "h": "tarball+https://0x7f000001/x", "i": "file+https://127.1/x",
        "j": "github:o/r?host=localhost", "k": "gitlab:o/r/main?host=local%68ost", "l": "sourcehut:~o/r?host=vm",
        "m": "https://169.254.169.254/latest", "n": "https://[::ffff:127.0.0.1]/x", "o": "git+ssh://vm/srv/repo",
        "p": "https://github.com@127.0.0.1/x", "q": "https://a.localhost/x", "r": "https://10.0.0.1/x",
        "s": "git+https://github.com/o/r?submodules=1", "t": "http://127.0.0.1:8080/x",
    }
    inputs = "".join(f"  inputs.{k} = {{ url = {json.dumps(u)}; flake = false; }};\n" for k, u in local.items())
    inputs += ('  inputs.u = { type = "github"; owner = "o"; repo = "r"; host = "127.0.0.1"; flake = false; };\n'
               '  inputs.v = { type = "git"; url = "ssh://localhost/srv/repo"; flake = false; };\n')
    message = proposal_refused(hive, "{\n" + inputs + "  outputs = _: { };\n}\n", filename="flake.nix")
    for k, u in local.items():
        assert f"inputs.{k}.url = {json.dumps(u)}" in message, (k, message)
    assert 'inputs.u.host is "127.0.0.1", a loopback address' in message, message
    assert 'has host "2130706433", which is 127.0.0.1, a loopback address' in message, message
    assert 'has host "vm", a name without a dot' in message, message
    assert 'inputs.v.url = "ssh://localhost/srv/repo"' in message, message

    # a flake.lock pinning a forge input at a local host is refused as well
    remote = FLAKE_WITH_INPUT.format(url='"github:NixOS/nixpkgs/nixos-24.05"')
    (config / "flake.lock").write_text(lock_pinning_x({"type": "github", "owner": "NixOS", "repo": "nixpkgs",
                                                        "host": "localhost", "rev": "0" * 40, "narHash": "sha256-x"}))
    message = proposal_refused(hive, remote, filename="flake.nix")
    assert 'flake.lock: nodes.x.locked.host is "localhost"' in message, message
    nothing_pending_nor_locked(hive, hive_dir)

    (config / "flake.lock").unlink()
    public = ["github:NixOS/nixpkgs/nixos-24.05", "https://github.com/NixOS/nixpkgs/archive/master.tar.gz",
              "git+https://git.sr.ht/~o/r?ref=main", "git+ssh://git@github.com/o/r", "github:o/r?host=github.example.com",
              "https://github.com./o/r/archive/main.tar.gz", "tarball+https://8.8.8.8/x"]
    inputs = "".join(f"  inputs.r{i} = {{ url = {json.dumps(u)}; flake = false; }};\n" for i, u in enumerate(public))
    sha = commit_change(hive, "alice", "{\n" + inputs + "  outputs = _: { };\n}\n", filename="flake.nix")
    approval_id = manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    assert f"deployed/{approval_id}" in hive.cli("approve", str(approval_id)).stdout
    assert "nix --extra-experimental-features nix-command flakes flake lock --update-input agent-alice" in \
        argvs(hive_dir)


@pytest.mark.nix  # the flake's inputs are read with nix-instantiate
def test_a_flake_input_that_is_itself_a_flake_is_refused(hive, hive_dir):
    """A remote input that is a flake (the default) brings its own inputs, and Nix locks them (as root, before any
    build) as that repository's flake.nix says: `github:someone/evil` naming `git+file://` of the proposed repo or
    `https://127.0.0.1:8080/` passed every check of the proposal's own flake.nix. Such an input is refused, naming
    it and the way out (flake = false), which still deploys."""
    manager = hive.client("manager")
    (hive_dir / "standin.log").write_text("")
    flake = """{{
  inputs.evil.url = "github:someone/evil";
  inputs.pinned = {{ url = "github:NixOS/nixpkgs/nixos-24.05"; flake = {flag}; }};
  outputs = _: {{ }};
}}
"""
    message = proposal_refused(hive, flake.format(flag="true"), filename="flake.nix")
    assert "inputs.evil is a flake (flake = true, the default)" in message and "give it flake = false" in message
    assert "inputs.pinned is a flake" in message, message
    assert not any("flake lock" in a for a in argvs(hive_dir))

    sha = commit_change(hive, "alice", flake.format(flag="false").replace('inputs.evil.url = "github:someone/evil";',
                                                                          'inputs.evil = { url = "github:someone/evil"; '
                                                                          'flake = false; };'), filename="flake.nix")
    approval_id = manager.call("request_apply_commit", agent="alice", commit=sha)["approval_id"]
    assert f"deployed/{approval_id}" in hive.cli("approve", str(approval_id)).stdout
