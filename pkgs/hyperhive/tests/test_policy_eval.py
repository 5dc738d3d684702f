"""A spawned agent's policy comes from its own agent.nix, and the broker enforces exactly the policy the agent runs
with (hyperhive/policy_eval.py). Under the local backend a documented subset is evaluated; anything outside it fails
the deploy closed, never "unrestricted by accident"; evaluation reads only the proposal's own tree and what goes
back to the manager quotes nothing from elsewhere. Through the real service and its sockets."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from conftest import HiveProcess, refused, wait_for, write_config
from standins.support import AGENT_ENV, git, standin_info, state_dir, wait_status

pytestmark = pytest.mark.nix

SECRET = "hostsecret-7d1f0c-do-not-echo"


@pytest.fixture
def hive(start_hive):
    hp = start_hive(agents={"alice": {}, "bob": {}}, env=AGENT_ENV)
    wait_for(lambda: standin_info(hp, "manager"), message="manager running")
    return hp


@pytest.fixture(scope="module")
def shared_hive():
    """One hive for the proposals that must fail closed: each spawns an agent of its own name, and a deploy that
    fails closed leaves nothing running that another could meet."""
    directory = Path(tempfile.mkdtemp(prefix="hh", dir="/tmp"))
    hp = HiveProcess(write_config(directory, {"alice": {}, "bob": {}}), env=AGENT_ENV).start()
    try:
        wait_for(lambda: standin_info(hp, "manager"), message="manager running")
        yield hp
    finally:
        hp.stop()
        shutil.rmtree(directory, ignore_errors=True)


REFUSED_NAMES = (f"pol{n}" for n in itertools.count())


def spawn_with(hp, name: str, files: dict[str, str], links: dict[str, str] | None = None) -> dict:
    """The manager drafts ``name``, writes ``files`` (and symbolic ``links``) in its config repo, commits, proposes;
    the operator approves. The approval as it ended (or the refusal of the proposal)."""
    manager = hp.client("manager")
    manager.call("request_spawn_draft", name=name)
    repo = state_dir(hp) / "agents" / name / "config"
    for path, text in files.items():
        (repo / path).write_text(text, encoding="utf-8")
    for path, target in (links or {}).items():
        (repo / path).unlink(missing_ok=True)
        os.symlink(target, repo / path)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{name}: policy")
    sha = git(repo, "rev-parse", "HEAD")
    try:
        approval_id = manager.call("request_spawn_commit", name=name, commit=sha)["approval_id"]
    except Exception as e:  # refused at proposal time (a link is refused there too): nothing deployed
        return {"status": "refused", "error": str(e)}
    hp.cli("approve", str(approval_id), check=False)
    return wait_status(hp.host(), approval_id, timeout=60)


@pytest.mark.parametrize("construct, agent_nix", [
    ("lib.mkIf", '{ lib, ... }: { hyperhive = lib.mkIf true { allowedRecipients = [ "manager" ]; }; }\n'),
    ("lib.mkIf", '{ lib, ... }: { hyperhive.allowedRecipients = lib.mkIf true [ "manager" ]; }\n'),
    ("lib.mkMerge", '{ lib, ... }: { hyperhive = lib.mkMerge [ { allowedRecipients = [ "manager" ]; } '
                    '{ prompt = "x"; } ]; }\n'),
    ("lib.mkDefault", '{ lib, ... }: { hyperhive.allowedRecipients = lib.mkDefault [ "manager" ]; }\n'),
    ("imports", '{ imports = [ ./policy.nix ]; }\n'),
    ("config.* reference", '{ config, ... }: { hyperhive.allowedRecipients = [ config.hyperhive.managerName ]; }\n'),
    ("hyperhive.allowedRecipient", '{ hyperhive.allowedRecipient = [ "manager" ]; }\n'),
    # nixpkgs' lib/modules.nix (unifyModuleSyntax) refuses a module with both: reading config alone was unrestricted
    ("`hyperhive' next to a top-level `config'",
     '{ pkgs, ... }: { hyperhive = { allowedRecipients = [ "manager" "operator" ]; }; config = { }; }\n'),
    ("`hyperhive' next to a top-level `config'",
     '{ hyperhive.allowedRecipients = [ "manager" ]; config.hyperhive.prompt = "x"; }\n'),
    # lib.mkMerge and lib.mkIf written out by hand as config itself: there is no config.hyperhive to read
    ("config set through lib.mk*", '{ config = { _type = "merge"; contents = [ { hyperhive.allowedRecipients = '
                                   '[ "manager" ]; } ]; }; }\n'),
    ("config set through lib.mk*", '{ config = { _type = "if"; condition = true; content = '
                                   '{ hyperhive.allowedRecipients = [ "manager" ]; }; }; }\n'),
])
def test_a_policy_outside_the_local_subset_fails_the_deploy_closed(shared_hive, construct, agent_nix):
    """The old stub read each of these as null, i.e. unrestricted; the module system would restrict. Under the local
    backend the deploy fails naming the construct, and no agent runs with a policy the broker does not know."""
    hive, name = shared_hive, next(REFUSED_NAMES)
    try:
        result = spawn_with(hive, name, {"agent.nix": agent_nix,
                                         "policy.nix": '{ hyperhive.allowedRecipients = [ "manager" ]; }\n'})
        assert result["status"] == "failed", result
        assert construct in result["error"] and "outside the subset" in result["error"], result["error"]
        names = {a["name"] for a in hive.client("manager").call("list_agents")["agents"]}
        assert name not in names
        assert not hive.config.agent_socket(name).exists()
    finally:
        hive.cli("destroy", name, "--purge", check=False)  # its draft goes (limits.maxDrafts counts them)
        hive.close_clients()


def test_the_broker_and_the_running_agent_agree_on_allowed_recipients(hive):
    result = spawn_with(hive, "ada", {"agent.nix": (
        '{ pkgs, lib, ... }:\n{\n  config.hyperhive = {\n    allowedRecipients = [ "manager" "alice" ];\n'
        '    bash.allow = lib.optionals true [ "git *" ];\n    packages = [ pkgs.ripgrep ];\n  };\n}\n')})
    assert result["status"] == "deployed", result
    info = wait_for(lambda: standin_info(hive, "ada"), message="ada running")
    running = info["agent_config"]["allowedRecipients"]
    assert running == ["manager", "alice"]
    ada = hive.client("ada")
    # The broker enforces exactly that list: inside it accepted, outside refused naming the list.
    for to in running:
        assert ada.call("send", to=to, body="hi")["id"]
    message = refused(lambda: ada.call("send", to="bob", body="hi"), "forbidden")
    assert "bob" in message and "alice" in message and "manager" in message
    assert info["agent_config"]["bashAllow"] == ["git *"]


def test_an_agent_nix_linked_to_a_host_file_is_refused_without_echoing_it(hive, hive_dir):
    secret = hive_dir / "host-secret.nix"
    secret.write_text(f'{{ hyperhive.prompt = "{SECRET}"; hyperhive.allowedRecipients = [ "manager" ]; }}\n'
                      f"# {SECRET}\n")
    result = spawn_with(hive, "lnk", {}, links={"agent.nix": str(secret)})
    assert result["status"] in ("failed", "refused"), result
    assert "link" in result["error"], result["error"]
    assert SECRET not in result["error"]
    # Nothing the manager can read mentions it either.
    manager_events = hive.client("manager").call("recv", wait_seconds=0, max=100)["messages"]
    assert all(SECRET not in m["body"] and SECRET not in str(m.get("data")) for m in manager_events)
    assert "lnk" not in {a["name"] for a in hive.client("manager").call("list_agents")["agents"]}


def test_evaluation_reads_nothing_outside_the_proposal(hive, hive_dir):
    secret = hive_dir / "host-secret.txt"
    secret.write_text(SECRET + "\n")
    result = spawn_with(hive, "rd", {"agent.nix": (
        f'{{ hyperhive.prompt = builtins.readFile {secret}; hyperhive.allowedRecipients = [ "manager" ]; }}\n')})
    assert result["status"] == "failed", result
    assert SECRET not in result["error"]
    assert "forbidden" in result["error"] or "restricted" in result["error"], result["error"]
    result = spawn_with(hive, "env", {"agent.nix": (
        '{ hyperhive.prompt = builtins.getEnv "HOME"; hyperhive.allowedRecipients = [ "manager" ]; }\n')})
    # Restricted evaluation sees no environment: the prompt is empty, not the service's HOME.
    assert result["status"] == "deployed", result
    info = wait_for(lambda: standin_info(hive, "env"), message="env running")
    assert info["agent_config"]["prompt"] == ""


def test_without_nix_instantiate_a_spawn_fails_closed(start_hive, hive_dir):
    """No evaluator, no policy: the deploy fails saying why, rather than run the agent unrestricted."""
    bin_dir = hive_dir / "bin"
    bin_dir.mkdir()
    for tool in ("git", "sh", "bash", "env"):
        found = next((Path(d) / tool for d in os.environ.get("PATH", "").split(os.pathsep)
                      if (Path(d) / tool).exists()), None)
        if found:
            (bin_dir / tool).symlink_to(found)
    hp = start_hive(agents={"alice": {}}, env={**AGENT_ENV, "PATH": str(bin_dir)})
    wait_for(lambda: standin_info(hp, "manager"), message="manager running")
    result = spawn_with(hp, "nonix", {"agent.nix": '{ hyperhive.allowedRecipients = [ "manager" ]; }\n'})
    assert result["status"] == "failed" and "nix-instantiate" in result["error"], result
    assert "nonix" not in {a["name"] for a in hp.client("manager").call("list_agents")["agents"]}
