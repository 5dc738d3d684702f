"""The Nix side without NixOS: every .nix file parses, the modules' options are well formed, the pure renderer turns
example hives into a hive.json the Python loader accepts, and broken inputs are refused naming the option path.

Needs ``nix-instantiate`` (Debian's ``nix-bin`` is enough; ``make test`` installs it) and the repository around the
package: without them these tests fail saying so, and are skipped only in the Nix build sandbox
(HYPERHIVE_BUILD_SANDBOX=1, tests/conftest.py). When HYPERHIVE_NIXPKGS_LIB points at nixpkgs' ``lib`` directory
(e.g. a checkout of nix-community/nixpkgs.lib), the host and agent modules are also evaluated with
``lib.evalModules`` against stand-ins for the NixOS options they set (nix/eval-modules.nix), and the flake's outputs
against a stand-in nixpkgs built on that lib (nix/flake-outputs.nix); without it, a documented minimal lib
(nix/minimal-lib.nix) stands in for the flake check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import BUILD_SANDBOX, REPO_ROOT, has_repository, require
from hyperhive.config import NAME_RE, RESERVED_NAMES, ConfigError, load_config

pytestmark = [pytest.mark.repo, pytest.mark.nix]
MODULES = REPO_ROOT / "modules"
EXAMPLES = REPO_ROOT / "nix" / "examples"
RENDER = MODULES / "render-hive-json.nix"
SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "result", "__pycache__", ".pytest_cache"}

GOOD_EXAMPLES = ["minimal", "policies"]
# example -> the option path its error must name
BROKEN_EXAMPLES = {
    "bad-name": 'hyperhive.agents."Bad".name',
    "bad-recipient": 'hyperhive.agents."alice".allowedRecipients',
    "manager-as-agent": 'hyperhive.agents."boss"',
}


# ---------------------------------------------------------------------------------------------------- helpers


def nix_instantiate() -> str:
    """The nix-instantiate executable, or skip/fail the test with a message saying how to get one."""
    found = shutil.which("nix-instantiate")
    require("nix-instantiate", found is not None, "apt-get install nix-bin (make test does)")
    return found


def run_nix(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run nix-instantiate from the repository root (so relative paths in expressions work)."""
    proc = subprocess.run([nix_instantiate(), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"nix-instantiate {' '.join(args)} failed:\n{proc.stderr}", pytrace=False)
    return proc


def nix_eval_json(expr: str, *args: str, check: bool = True):
    """Evaluate a Nix expression strictly; the parsed JSON, or the failed process when check is False."""
    proc = run_nix("--eval", "--strict", "--json", "--expr", expr, *args, check=check)
    return json.loads(proc.stdout) if proc.returncode == 0 else proc


def nix_string(path: Path) -> str:
    """A Nix path literal for an absolute path."""
    return str(path) if re.fullmatch(r"[A-Za-z0-9._/+-]+", str(path)) else json.dumps(str(path))


def render(example: str, check: bool = True):
    """hive.json (as a dict) from nix/examples/<example>.nix through the pure renderer."""
    return nix_eval_json(f"import {nix_string(RENDER)} (import {nix_string(EXAMPLES / (example + '.nix'))})",
                         check=check)


def load(rendered: dict, tmp_path: Path):
    """Write ``rendered`` to a temporary hive.json and load it with the Python loader."""
    path = tmp_path / "hive.json"
    path.write_text(json.dumps(rendered, indent=2), encoding="utf-8")
    return load_config(path)


def options_of(module: str) -> dict:
    """The option declarations of modules/<module>.nix as data (nix/options-dump.nix)."""
    dump = REPO_ROOT / "nix" / "options-dump.nix"
    return nix_eval_json(f"import {nix_string(dump)} {{ module = {nix_string(MODULES / module)}; }}")["hyperhive"]


def walk_options(tree: dict, prefix: str = "hyperhive"):
    """Yield (path, option) for every option, descending into submodules as `<name>`."""
    for key, value in tree.items():
        path = f"{prefix}.{key}"
        if value.get("_option"):
            yield path, value
            inner = value["type"]
            while inner and "elemType" in inner:
                inner = inner["elemType"]
            if inner and inner.get("name") == "submodule":
                sub = path + (".<name>" if value["type"].get("name") == "attrsOf" else "")
                yield from walk_options(inner["options"], sub)
        else:
            yield from walk_options(value, path)


def nix_files() -> list[Path]:
    """Every .nix file of the repository, new ones included without listing them.

    In a git checkout, what git tracks or would track: a hive's state under a git-ignored directory (the agents'
    config repos that `make up` creates) is not the project's. Elsewhere (a copy in the Nix store) a walk. Nothing
    without the repository (a lone copy of the package, as the build sandbox has it): collecting must neither walk
    whatever directory happens to be above the copy nor need git.
    """
    if not has_repository():
        return []
    git = shutil.which("git")
    listed = subprocess.run([git, "-C", str(REPO_ROOT), "ls-files", "--cached", "--others", "--exclude-standard",
                             "-z", "--", "*.nix"], capture_output=True) if git and (REPO_ROOT / ".git").exists() else None
    if listed is not None and listed.returncode == 0:
        return sorted(REPO_ROOT / p for p in listed.stdout.decode().split("\0") if p and (REPO_ROOT / p).exists())
    found = []
    for root, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found += [Path(root) / f for f in sorted(files) if f.endswith(".nix")]
    return found


# ---------------------------------------------------------------------------------------------------- parsing


def test_the_nix_files_are_found():
    names = {p.relative_to(REPO_ROOT).as_posix() for p in nix_files()}
    for expected in ("flake.nix", "modules/hyperhive.nix", "modules/agent.nix", "modules/render-hive-json.nix",
                     "templates/agent/flake.nix", "templates/agent/agent.nix"):
        assert expected in names


@pytest.mark.parametrize("path", nix_files(), ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_nix_file_parses(path):
    run_nix("--parse", str(path))


def test_a_syntax_error_is_caught(tmp_path):
    broken = tmp_path / "broken.nix"
    broken.write_text("{ a = 1; b = ; }\n")
    proc = run_nix("--parse", str(broken), check=False)
    assert proc.returncode != 0
    assert "syntax error" in proc.stderr


# ---------------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("module", ["hyperhive.nix", "agent.nix"])
def test_every_option_has_a_type_and_a_description(module):
    options = dict(walk_options(options_of(module)))
    assert options
    for path, option in options.items():
        assert option["type"], f"{path} has no type"
        assert option["description"] and option["description"].strip(), f"{path} has no description"


def test_host_options_cover_the_design():
    options = dict(walk_options(options_of("hyperhive.nix")))
    for path in ["enable", "package", "stateDir", "runDir", "operatorPronouns", "backend",
                 "dashboard.listen.address", "dashboard.listen.port", "dashboard.tokenFile", "dashboard.openFirewall",
                 "broker.maxMessageBytes", "broker.recvMaxWaitSeconds", "broker.leaseSeconds",
                 "retention.failedMaxAgeDays", "retention.deniedMaxAgeDays", "retention.dropIntermediateTags",
                 "harness.claudeCommand", "manager.name", "manager.prompt", "manager.bash.allow",
                 "agents.<name>.name", "agents.<name>.allowedRecipients", "agents.<name>.bash.allow",
                 "agents.<name>.privateUsers", "agents.<name>.model", "agents.<name>.prompt",
                 "agents.<name>.packages", "agents.<name>.extraMcpServers", "agents.<name>.config",
                 "agents.<name>.notesCompactBytes", "agents.<name>.turnTimeoutSeconds"]:
        assert f"hyperhive.{path}" in options, f"hyperhive.{path} is not declared"
    assert options["hyperhive.dashboard.listen.port"]["type"]["name"] == "port"
    assert options["hyperhive.backend"]["type"] == {"_type": "optionType", "name": "enum",
                                                    "values": ["nixos-container", "local"]}


def test_name_types_match_the_loader():
    options = dict(walk_options(options_of("hyperhive.nix")))
    pattern = options["hyperhive.agents.<name>.name"]["type"]["pattern"]
    assert f"^{pattern}$" == NAME_RE.pattern
    assert options["hyperhive.manager.name"]["type"]["pattern"] == pattern
    recipients = options["hyperhive.agents.<name>.allowedRecipients"]["type"]
    assert recipients["name"] == "nullOr" and recipients["elemType"]["elemType"]["pattern"] == pattern


def test_broker_time_and_retention_bounds_match_the_loader(tmp_path):
    """The NixOS options, the renderer and the loader bound recvMaxWaitSeconds, leaseSeconds and the retention ages
    alike: what the options accept loads, one past a bound is refused by all three naming the key."""
    from hyperhive.config import MAX_LEASE_SECONDS, MAX_RECV_WAIT_SECONDS

    options = dict(walk_options(options_of("hyperhive.nix")))
    bounds = {"recvMaxWaitSeconds": MAX_RECV_WAIT_SECONDS, "leaseSeconds": MAX_LEASE_SECONDS}
    for key, most in bounds.items():
        assert options[f"hyperhive.broker.{key}"]["type"] == {"_type": "optionType", "name": "intBetween",
                                                               "lo": 1, "hi": most}, key
    for key in ("failedMaxAgeDays", "deniedMaxAgeDays"):
        assert options[f"hyperhive.retention.{key}"]["type"]["name"] == "unsignedInt", key
    hive = render("minimal")
    hive["broker"].update(bounds)
    hive["retention"].update(failedMaxAgeDays=0, deniedMaxAgeDays=0)
    load(hive, tmp_path)
    for section, key, bad in (("broker", "recvMaxWaitSeconds", MAX_RECV_WAIT_SECONDS + 1),
                              ("broker", "leaseSeconds", MAX_LEASE_SECONDS + 1),
                              ("retention", "failedMaxAgeDays", -1), ("retention", "deniedMaxAgeDays", -1)):
        proc = nix_eval_json(f"import {nix_string(RENDER)} ({{ {section}.{key} = {bad}; }})", check=False)
        assert isinstance(proc, subprocess.CompletedProcess) and f"hyperhive.{section}.{key}" in proc.stderr, key
        broken = render("minimal")
        broken[section][key] = bad
        with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
            load(broken, tmp_path)


def test_agent_module_declares_the_same_policy_options_as_the_host():
    host = dict(walk_options(options_of("hyperhive.nix")))
    agent = dict(walk_options(options_of("agent.nix")))
    prefix = "hyperhive.agents.<name>."
    policy = [p[len(prefix):] for p in host if p.startswith(prefix) and p[len(prefix):] not in
              ("name", "config", "uidBase") and not p[len(prefix):].startswith("extraMcpServers.")]
    assert "bash.allow" in policy
    for key in policy:
        assert f"hyperhive.{key}" in agent, f"agent.nix lacks hyperhive.{key}"
        assert agent[f"hyperhive.{key}"]["type"] == host[prefix + key]["type"], key
        assert agent[f"hyperhive.{key}"]["default"] == host[prefix + key]["default"], key


def test_option_defaults_are_what_the_renderer_writes():
    options = dict(walk_options(options_of("hyperhive.nix")))
    hive = render("minimal")

    def default(path):
        return options[f"hyperhive.{path}"]["default"]

    assert hive["stateDir"] == default("stateDir")
    assert hive["runDir"] == default("runDir")
    assert hive["backend"] == default("backend")
    assert hive["operatorPronouns"] == default("operatorPronouns")
    assert hive["manager"] == default("manager.name")
    assert hive["dashboard"] == {"listen": f"{default('dashboard.listen.address')}:{default('dashboard.listen.port')}",
                                 "tokenFile": default("dashboard.tokenFile"),
                                 "sessionMaxAgeSeconds": default("dashboard.sessionMaxAgeSeconds")}
    for section in ("broker", "retention", "limits"):
        assert hive[section] == {k: default(f"{section}.{k}") for k in hive[section]}
    assert hive["harness"]["claudeCommand"] == default("harness.claudeCommand")
    alice = hive["agents"]["alice"]
    for key, path in {"allowedRecipients": "allowedRecipients", "bashAllow": "bash.allow",
                      "privateUsers": "privateUsers", "model": "model", "prompt": "prompt",
                      "notesCompactBytes": "notesCompactBytes", "turnTimeoutSeconds": "turnTimeoutSeconds",
                      "extraMcpServers": "extraMcpServers"}.items():
        assert alice[key] == default(f"agents.<name>.{path}"), key
        if key not in ("allowedRecipients", "privateUsers"):
            assert hive["managerSettings"][key] == default(f"manager.{path}"), key


# ---------------------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("example", GOOD_EXAMPLES)
def test_the_loader_reads_back_what_nix_renders(example, tmp_path):
    hive = render(example)
    config = load(hive, tmp_path)
    # Every key the Nix side writes is read back with the same value.
    assert config.to_json() == hive


def test_minimal_hive_has_the_defaults(tmp_path):
    config = load(render("minimal"), tmp_path)
    assert list(config.agents) == ["alice"]
    alice = config.agents["alice"]
    assert alice.allowed_recipients is None
    assert alice.bash_allow == ()
    assert alice.private_users is True
    assert config.manager == "manager"
    assert config.backend == "nixos-container"
    assert str(config.state_dir) == "/var/lib/hyperhive"
    assert config.agent_socket("alice") == Path("/run/hyperhive/agents/alice/mcp.sock")
    assert config.agent_socket("manager") == Path("/run/hyperhive/manager/mcp.sock")


def test_policies_hive_has_its_policies(tmp_path):
    config = load(render("policies"), tmp_path)
    assert sorted(config.agents) == ["alice", "bob"]
    alice, bob = config.agents["alice"], config.agents["bob"]
    assert alice.allowed_recipients == ("bob", "boss", "operator")
    assert alice.bash_allow == ("git *", "nix build .*")
    assert alice.notes_compact_bytes == 1024 and alice.turn_timeout_seconds == 60
    assert dict(alice.extra_mcp_servers)["search"].to_claude() == {
        "command": "/bin/search-mcp", "args": ["--index", "/state/index"], "env": {"SEARCH_LIMIT": "10"}}
    assert bob.allowed_recipients is None
    assert bob.private_users is False
    assert bob.model == "claude-sonnet-4-5"
    assert config.manager == "boss"
    assert config.manager_settings.bash_allow == ("git *",)
    assert config.manager_settings.model == "claude-opus-4-1"
    assert config.dashboard.listen == "[::1]:9090" and config.dashboard.port == 9090
    assert config.dashboard.token_file == "/run/secrets/hyperhive-token"
    assert config.broker.max_message_bytes == 4096
    assert config.retention.drop_intermediate_tags is False
    assert config.claude_command == ("python3", "/opt/fake_claude.py")
    assert config.operator_pronouns == "she/her"
    assert config.agent_socket("alice") == Path("/run/hive-test/agents/alice/mcp.sock")


@pytest.mark.parametrize("example", sorted(BROKEN_EXAMPLES))
def test_broken_hives_are_refused_naming_the_option(example):
    proc = render(example, check=False)
    assert isinstance(proc, subprocess.CompletedProcess), f"{example} rendered without an error"
    assert proc.returncode != 0
    assert "cannot be rendered to hive.json" in proc.stderr, proc.stderr
    assert BROKEN_EXAMPLES[example] in proc.stderr, proc.stderr


@pytest.mark.parametrize("expr, path", [
    ('{ agents.system = { }; }', 'hyperhive.agents."system".name'),
    ('{ agents.hive = { }; }', 'hyperhive.agents."hive".name'),  # host-wide telemetry is recorded as "hive"
    ('{ manager.name = "hive"; }', "hyperhive.manager.name"),
    ('{ agents.abcdefghij = { }; }', 'hyperhive.agents."abcdefghij".name'),
    # its container's host name h-<name> would end with '-': nixpkgs' networking.hostName refuses it
    ('{ agents."bob-" = { }; }', 'hyperhive.agents."bob-".name'),
    ('{ manager.name = "m-"; }', "hyperhive.manager.name"),
    ('{ manager.name = "operator"; }', "hyperhive.manager.name"),
    ('{ agents.a.extraMcpServers.hyperhive.command = "x"; }', 'hyperhive.agents."a".extraMcpServers.hyperhive'),
    ('{ agents.a.turnTimeoutSeconds = 0; }', 'hyperhive.agents."a".turnTimeoutSeconds'),
    ('{ dashboard.listen.address = "0.0.0.0"; }', "hyperhive.dashboard.listen.address"),
    ('{ dashboard.listen.port = 70000; }', "hyperhive.dashboard.listen.port"),
    ('{ backend = "docker"; }', "hyperhive.backend"),
    ('{ stateDir = "relative"; }', "hyperhive.stateDir"),
    ('{ harness.claudeCommand = [ ]; }', "hyperhive.harness.claudeCommand"),
    ('{ broker.recvMaxWaitSeconds = 86401; }', "hyperhive.broker.recvMaxWaitSeconds"),
    ('{ broker.leaseSeconds = 604801; }', "hyperhive.broker.leaseSeconds"),
    ('{ retention.failedMaxAgeDays = -3; }', "hyperhive.retention.failedMaxAgeDays"),
    ('{ agents.a.uidBase = 1879113728; agents.b.uidBase = 1879113728; }', 'hyperhive.agents."b".uidBase'),
])
def test_the_renderer_names_each_problem(expr, path):
    proc = nix_eval_json(f"import {nix_string(RENDER)} ({expr})", check=False)
    assert isinstance(proc, subprocess.CompletedProcess), f"{expr} rendered without an error"
    assert path in proc.stderr, proc.stderr


def test_the_loader_also_refuses_what_the_renderer_refuses(tmp_path):
    """A hand-made hive.json with the bad-recipient mistake: the Python loader names the same key."""
    hive = render("minimal")
    hive["agents"]["alice"]["allowedRecipients"] = ["carl"]
    with pytest.raises(ConfigError, match=r"agents\.alice\.allowedRecipients"):
        load(hive, tmp_path)


def test_the_modules_reserve_the_names_the_loader_reserves():
    lib = nix_string(MODULES / "lib.nix")
    assert sorted(nix_eval_json(f"(import {lib}).reservedNames")) == sorted(RESERVED_NAMES)


def test_user_namespace_ranges_are_stable_and_distinct():
    lib = nix_string(MODULES / "lib.nix")
    bases = nix_eval_json(f"let l = import {lib}; in map (l.uidBase {{ }}) [ \"alice\" \"bob\" \"carol\" ]")
    assert len(set(bases)) == 3
    again = nix_eval_json(f"let l = import {lib}; in map (l.uidBase {{ agents.zed = {{ }}; }}) [ \"alice\" \"bob\" \"carol\" ]")
    assert again == bases  # adding an agent moves nobody


def test_hashed_uid_ranges_never_meet_nspawns_pick_region():
    """systemd-nspawn --private-users=pick takes ranges in 0x00080000-0x6FFFFFFF (systemd docs/UIDS-GIDS.md,
    src/basic/uid-classification.h); the foreign range is 0x7FFE0000-0x7FFEFFFF; 2^31 and up is avoided. Every
    hashed range lies in [0x70000000, 0x7FFE0000), and an explicit uidBase in the pick region is refused."""
    lib = nix_string(MODULES / "lib.nix")
    names = [f"a{i}" for i in range(600)] + ["alice", "bob", "carol", "manager-x"]
    bases = nix_eval_json(f"let l = import {lib}; in map (l.uidBase {{ }}) {json.dumps(names).replace(',', ' ')}")
    for base in bases:
        assert base % 65536 == 0
        assert 0x70000000 <= base and base + 65536 <= 0x7FFE0000, hex(base)
    assert len(set(bases)) > 500  # spread over the 4094 slots
    # The Python side (agents spawned at run time) hashes the same way.
    from hyperhive.backends.nixos_container import uid_base
    assert [uid_base(n, 0x70000000) for n in names] == bases
    for explicit, why in [(0x00080000, "pick"), (0x20000000, "pick"), (0x6FFF0000, "pick"),
                          (0x7FFE0000, "foreign"), (0x80000000, "2^31"), (0, "65536")]:
        proc = nix_eval_json(f"import {nix_string(RENDER)} {{ agents.a.uidBase = {explicit}; }}", check=False)
        assert isinstance(proc, subprocess.CompletedProcess), hex(explicit)
        assert 'hyperhive.agents."a".uidBase' in proc.stderr and why in proc.stderr, proc.stderr
    proc = nix_eval_json(f"import {nix_string(RENDER)} {{ privateUsersBase = 536870912; }}", check=False)
    assert isinstance(proc, subprocess.CompletedProcess) and "hyperhive.privateUsersBase" in proc.stderr
    assert nix_eval_json(f"(import {nix_string(RENDER)} {{ agents.a.uidBase = {0x70010000}; }}).agents.a.privateUsers")


# ---------------------------------------------------------------------------------------------------- evalModules


def nixpkgs_lib() -> Path:
    value = os.environ.get("HYPERHIVE_NIXPKGS_LIB")
    if not value:
        pytest.skip("HYPERHIVE_NIXPKGS_LIB is not set (a path to nixpkgs' lib/ directory): the modules are not "
                    "evaluated with lib.evalModules")
    path = Path(value)
    if (path / "lib" / "default.nix").exists():
        path = path / "lib"
    if not (path / "default.nix").exists():
        pytest.fail(f"HYPERHIVE_NIXPKGS_LIB={value} has no default.nix (point it at nixpkgs' lib/)", pytrace=False)
    return path


def eval_modules(example: str, attr: str | None = None, check: bool = True, hive: str | None = None,
                 host: str = "{ }"):
    """nix/eval-modules.nix on an example, or on the Nix expression ``hive`` (only ``attr`` of its result, when
    given, is forced); ``host`` is more of the host's configuration (a NixOS module, as Nix text)."""
    lib = nixpkgs_lib()
    driver = REPO_ROOT / "nix" / "eval-modules.nix"
    hive = hive if hive is not None else f"import {nix_string(EXAMPLES / (example + '.nix'))}"
    expr = f"(import {nix_string(driver)} {{ lib = import {nix_string(lib)}; hive = {hive}; hostExtra = {host}; }})"
    return nix_eval_json(expr + (f".{attr}" if attr else ""), check=check)


@pytest.mark.parametrize("example", GOOD_EXAMPLES)
def test_modules_render_what_the_pure_function_renders(example, tmp_path):
    result = eval_modules(example)
    assert result["failedAssertions"] == []
    assert result["rendered"] == result["pure"]
    assert result["rendered"] == render(example)
    assert load(result["rendered"], tmp_path).to_json() == result["rendered"]
    assert result["hiveJsonMode"] != "symlink"  # a copy, so the service's file watch sees it replaced


def test_modules_declare_the_containers_and_mounts():
    result = eval_modules("policies")
    hive = result["pure"]
    state, run = hive["stateDir"], hive["runDir"]
    containers = result["containers"]
    assert sorted(containers) == ["h-alice", "h-bob", "hm1nd"]

    def mounts(name):
        return {point: (m["hostPath"], m["isReadOnly"]) for point, m in containers[name]["bindMounts"].items()}

    assert mounts("h-alice") == {
        "/run/hive": (f"{run}/agents/alice", False),
        "/state": (f"{state}/agents/alice/state", False),
        "/root/.claude": (f"{state}/claude/alice", False),
    }
    assert mounts("hm1nd") == {
        "/run/hive": (f"{run}/manager", False),
        "/state": (f"{state}/manager/state", False),
        "/root/.claude": (f"{state}/claude/boss", False),
        "/agents": (f"{state}/agents", False),
        "/applied": (f"{state}/applied", True),
        "/meta": (f"{state}/meta", True),
    }
    for name, container in containers.items():
        assert container["failedAssertions"] == [], name
        assert container["autoStart"] and not container["privateNetwork"]
        assert container["isNspawnContainer"]
        assert container["environment"]["HYPERHIVE_SOCKET"] == "/run/hive/mcp.sock"
        assert container["execStart"].endswith(
            f"/bin/hyperhive agent --name {container['policy']['name']} --socket /run/hive/mcp.sock "
            "--agent-config /etc/hyperhive/agent.json --state-dir /state")
        # What the harness reads: the policy plus the hive facts the service's own agent.json carries.
        assert container["agentJson"] == {**container["policy"], "manager": hive["manager"],
                                          "claudeCommand": hive["harness"]["claudeCommand"],
                                          "operatorPronouns": hive["operatorPronouns"], "stateDir": "/state",
                                          "hyperhiveCommand": container["execStart"].split(" ")[0]}
        # programs.git.config merges to a list (nixos/modules/programs/git.nix), written to /etc/gitconfig in order.
        assert container["git"][0]["user"]["email"] == f"{container['policy']['name']}@hyperhive.invalid"
    # User namespaces: alice's root is an unprivileged host uid, bob (privateUsers = false) and the manager share.
    assert isinstance(containers["h-alice"]["privateUsers"], int)
    assert containers["h-alice"]["privateUsers"] >= 0x70000000  # above nspawn's pick region
    assert containers["h-alice"]["extraFlags"] == ["--private-users-ownership=auto"]
    assert containers["h-bob"]["privateUsers"] == "no"
    assert containers["hm1nd"]["privateUsers"] == "no"
    uid = containers["h-alice"]["privateUsers"]
    prepare = result["prepare"]["hyperhive-prepare-h-alice"]
    assert f"chown -R {uid}:{uid}" in prepare and f"{state}/agents/alice/state" in prepare
    # The socket directory belongs to the container's root uid, 0700: the broker gives the 0600 socket to the
    # directory's owner (transport.SocketServer), so alice's root reaches it and no other local user does.
    assert f"install -d -m 0700 {run}/agents/alice" in prepare and f"chown {uid}:{uid} {run}/agents/alice" in prepare
    assert f"d {run}/agents 0700 root root -" in result["tmpfiles"]


def resolve_inside(container: str, path: str, binds: list[dict]) -> str | None:
    """The host path that ``path``, seen inside ``container``, is (through nspawn's bind mounts), or None when it is
    on the container's own root (where nothing of the host's /nix/var/nix exists)."""
    best = None
    for b in binds:
        inside = b["inside"].rstrip("/")
        if path == inside or path.startswith(inside + "/"):
            if best is None or len(inside) > len(best["inside"]):
                best = b
    if best is None:
        return None
    return best["host"].replace("$INSTANCE", container) + path[len(best["inside"].rstrip("/")):]


def test_the_container_init_resolves_inside_the_container():
    """nixos-containers.nix starts `systemd-nspawn ... "$SYSTEM_PATH/init"`: a path nspawn resolves inside the
    container, whose /nix/var/nix/profiles is the host's per-container/<c>. It must land on the profile the prepare
    unit seeds (and `nixos-container update` sets), not on a host path absent in there (issue 10, defect 4)."""
    result = eval_modules("policies")
    for name, c in result["containers"].items():
        init = c["nspawn"]["init"]
        host_path = resolve_inside(name, init, c["nspawn"]["binds"])
        assert host_path == f"/nix/var/nix/profiles/per-container/{name}/system/init", (name, init, host_path)
        prepare = result["prepare"][f"hyperhive-prepare-{name}"]
        assert f"profile=/nix/var/nix/profiles/per-container/{name}" in prepare
        assert 'nix-env --profile "$profile/system" --set' in prepare
        # ExecReload's switch-to-configuration takes the same SYSTEM_PATH, also inside the container.
        assert resolve_inside(name, c["conf"]["SYSTEM_PATH"] + "/bin/switch-to-configuration",
                              c["nspawn"]["binds"]).startswith(f"/nix/var/nix/profiles/per-container/{name}/system/")


def test_user_namespaced_containers_bind_the_store_idmapped():
    """With privateUsers a uid, nixos-containers.nix binds /nix/store and the profiles with `:idmap` (a VM test
    therefore needs a store that can be id-mapped, see nixos-tests/common.nix)."""
    containers = eval_modules("policies")["containers"]
    assert containers["h-alice"]["nspawn"]["idmap"] is True
    assert all(b["options"] == ":idmap" for b in containers["h-alice"]["nspawn"]["binds"])
    assert containers["h-bob"]["nspawn"]["idmap"] is False and containers["hm1nd"]["nspawn"]["idmap"] is False
    assert containers["h-alice"]["conf"]["PRIVATE_USERS"] == str(containers["h-alice"]["privateUsers"])
    assert "PRIVATE_NETWORK" not in containers["h-alice"]["conf"]  # the host's network: the Claude API is reachable


def test_the_deploy_working_directory_is_writable():
    """nixos-container.pl's buildFlake runs `nix build -o "$systemPath.tmp"` relative to the working directory, and
    create/update write /etc/nixos-containers, the per-container profiles and gcroots and /run/lock: under
    ProtectSystem=strict only ReadWritePaths, StateDirectory and RuntimeDirectory are writable (defect 5)."""
    for example in ("minimal", "policies"):
        result = eval_modules(example)
        service = result["service"]["serviceConfig"]
        assert service["ProtectSystem"] == "strict"
        writable = [p.lstrip("-") for p in service["ReadWritePaths"]]
        if "StateDirectory" in service:
            writable.append("/var/lib/" + service["StateDirectory"])
        if "RuntimeDirectory" in service:
            writable.append("/run/" + service["RuntimeDirectory"])
        cwd = service.get("WorkingDirectory")
        assert cwd, "no WorkingDirectory: systemd's default is /, read-only under ProtectSystem=strict"
        assert any(cwd == w or cwd.startswith(w.rstrip("/") + "/") for w in writable), (cwd, writable)
        for needed in ("/etc/nixos-containers", "/var/lib/nixos-containers", "/nix/var/nix/profiles/per-container",
                       "/nix/var/nix/gcroots/per-container", "/run/lock"):
            assert needed in writable, needed
        assert result["service"]["environment"]["HYPERHIVE_CONTAINERS"] == "/etc/hyperhive/containers.json"


def test_the_service_writes_the_container_directories_of_the_hosts_state_version():
    """nixos-containers.nix names its directories after the host's system.stateVersion (`configurationPrefix`:
    /etc/nixos-containers and /var/lib/nixos-containers from 22.05, /etc/containers and /var/lib/containers
    before), and builds the host's `nixos-container` with them. A host installed before 22.05 keeps its old
    stateVersion: the service must be able to write those (create, destroy) and look for a created container's conf
    there, or a spawned agent keeps the private network without NAT and no mounts that `create` wrote."""
    for version, prefix in (("21.11", ""), ("22.05", "nixos-"), ("25.05", "nixos-")):
        result = eval_modules("policies", host=f'{{ system.stateVersion = "{version}"; }}')
        service = result["service"]
        writable = [p.lstrip("-") for p in service["serviceConfig"]["ReadWritePaths"]]
        assert f"/etc/{prefix}containers" in writable and f"/var/lib/{prefix}containers" in writable, (version, writable)
        stale = {"/etc/nixos-containers", "/var/lib/nixos-containers"} - {f"/etc/{prefix}containers",
                                                                         f"/var/lib/{prefix}containers"}
        assert not stale & set(writable), (version, writable)
        assert service["environment"]["HYPERHIVE_NIXOS_CONTAINERS_DIR"] == f"/etc/{prefix}containers"
        assert service["environment"]["HYPERHIVE_NIXOS_CONTAINERS_STATE_DIR"] == f"/var/lib/{prefix}containers"
    # the local backend declares no containers and writes none of it
    local = eval_modules("policies", hive=f"import {nix_string(EXAMPLES / 'policies.nix')} // {{ backend = \"local\"; }}",
                         host='{ system.stateVersion = "21.11"; }')
    assert "HYPERHIVE_NIXOS_CONTAINERS_DIR" not in local["service"]["environment"]


HOST_ONLY_HIVE = """
  let pkg = name: { type = "derivation"; inherit name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
  in {
    harness.claudePackage = pkg "claude-code";
    manager.config = MANAGER_EXTRA;
    agents.alice = {
      allowedRecipients = [ "manager" ];
      packages = [ (pkg "jq") ];
      config = ALICE_EXTRA;
    };
    agents.bob.privateUsers = false;
  }"""


def host_only_hive(tmp_path: Path) -> str:
    (tmp_path / "manager-extra.nix").write_text('{ environment.etc."manager-extra".text = "m"; }\n')
    (tmp_path / "alice-extra.nix").write_text('{ environment.etc."alice-extra".text = "a"; }\n')
    return (HOST_ONLY_HIVE.replace("MANAGER_EXTRA", nix_string(tmp_path / "manager-extra.nix"))
            .replace("ALICE_EXTRA", nix_string(tmp_path / "alice-extra.nix")))


def test_a_deploy_keeps_every_host_only_setting(tmp_path):
    """The meta flake's configuration of a container (agent module, its config flake, the host's data read back
    from JSON) equals the host's declaration: packages, harness.claudePackage, agents.<n>.config, and what
    nixos-containers.nix sets for every container (networking.useDHCP = false, the host name) (defect 8)."""
    result = eval_modules("", hive=host_only_hive(tmp_path))
    assert result["failedAssertions"] == []
    for name, declared in result["containers"].items():
        deployed = result["deployedContainers"][name]
        for key in ("packages", "claudePackage", "systemPackages", "servicePath", "hostName", "useDHCP",
                    "isNspawnContainer", "managerName", "operatorPronouns", "policy", "agentJson", "claudeSettings",
                    "etc", "git", "environment", "execStart"):
            assert deployed[key] == declared[key], (name, key, deployed[key], declared[key])
        assert declared["useDHCP"] is False and declared["hostName"] == name
        assert "claude-code" in declared["servicePath"] and declared["claudePackage"] == "claude-code"
    assert "jq" in result["containers"]["h-alice"]["systemPackages"]
    assert "alice-extra" in result["deployedContainers"]["h-alice"]["etc"]
    assert "manager-extra" in result["deployedContainers"]["hm1nd"]["etc"]
    # containers.json pins deploys to the host's own nixpkgs (pkgs.path), never hyperhive's input.
    assert result["containersJson"]["nixpkgs"] == "/nix/store/11111111111111111111111111111111-source"


def test_in_container_policy_matches_hive_json():
    result = eval_modules("policies")
    hive = result["pure"]
    for name, agent in hive["agents"].items():
        policy = dict(result["containers"][f"h-{name}"]["policy"])
        assert policy.pop("name") == name and policy.pop("role") == "agent"
        assert policy == agent, name
    manager = dict(result["containers"]["hm1nd"]["policy"])
    assert manager.pop("name") == hive["manager"] and manager.pop("role") == "manager"
    assert manager == hive["managerSettings"]
    settings = result["containers"]["h-alice"]["claudeSettings"]
    assert settings["permissions"]["defaultMode"] == "dontAsk"
    assert settings["permissions"]["allow"][:3] == ["Bash(git *)", "Bash(nix build .*)", "mcp__hyperhive__*"]


def test_managed_settings_carry_the_harness_rules(tmp_path):
    """modules/agent.nix's managed settings list exactly the rules the harness gives Claude Code
    (harness.permission_rules, permission_deny_rules) for the agent.json the container holds: the manager's
    Read/Edit on /agents/*/config and state, which its container mounts (bindMounts /agents), its git only as
    `<the package's hyperhive> git`, never Read/Edit of a config repo's .git; an agent's own /state only."""
    from hyperhive.harness import load_agent_settings, permission_deny_rules, permission_rules

    result = eval_modules("policies")
    for name, c in result["containers"].items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(c["agentJson"]))
        settings = load_agent_settings(path, c["policy"]["name"], "/state")
        assert c["claudeSettings"]["permissions"]["allow"] == permission_rules(settings), name
        assert c["claudeSettings"]["permissions"].get("deny", []) == permission_deny_rules(settings), name
    manager = result["containers"]["hm1nd"]
    hyperhive = manager["execStart"].split(" ")[0]
    assert hyperhive.startswith("/nix/store/") and hyperhive.endswith("/bin/hyperhive")
    assert f"Bash({hyperhive} git *)" in manager["claudeSettings"]["permissions"]["allow"]
    assert not any(r.startswith("Bash(git -C") for r in manager["claudeSettings"]["permissions"]["allow"])
    assert "Edit(//agents/*/config/.git/**)" in manager["claudeSettings"]["permissions"]["deny"]
    assert "Edit(//agents/*/config/**)" in result["containers"]["hm1nd"]["claudeSettings"]["permissions"]["allow"]
    assert result["containers"]["hm1nd"]["bindMounts"]["/agents"]["isReadOnly"] is False
    assert not any("agents" in r for r in result["containers"]["h-alice"]["claudeSettings"]["permissions"]["allow"])


def test_service_unit_is_hardened_and_reloads_on_change():
    result = eval_modules("policies")
    service = result["service"]["serviceConfig"]
    assert service["ExecStart"].endswith("/bin/hyperhive serve --config /etc/hyperhive/hive.json")
    assert service["Restart"] == "on-failure"
    assert service["ProtectSystem"] == "strict"
    assert service["RuntimeDirectory"] == "hive-test" and service["RuntimeDirectoryPreserve"] == "yes"
    assert "StateDirectory" not in service  # /srv/hive is not under /var/lib: tmpfiles creates it
    assert result["service"]["reloadTriggers"] == ["hive.json"]
    assert result["service"]["environment"]["HYPERHIVE_AGENT_TEMPLATE"].endswith("-agent")
    minimal = eval_modules("minimal")["service"]["serviceConfig"]
    assert minimal["StateDirectory"] == "hyperhive" and minimal["RuntimeDirectory"] == "hyperhive"


def test_the_agent_template_evaluates_against_the_agent_module():
    template = eval_modules("minimal")["template"]
    assert template["failedAssertions"] == []
    assert template["policy"]["name"] == "spawned"
    assert template["policy"]["bashAllow"]
    assert template["claudeSettings"]["permissions"]["defaultMode"] == "dontAsk"


@pytest.mark.parametrize("example", sorted(BROKEN_EXAMPLES))
def test_module_assertions_name_the_option(example):
    failed = eval_modules(example, "failedAssertions")
    assert any(BROKEN_EXAMPLES[example] in message for message in failed), failed


def flake_outputs() -> tuple[dict, bool]:
    """nix/flake-outputs.nix: the flake's outputs against a stand-in nixpkgs, every derivation's arguments forced.
    With nixpkgs' real lib when HYPERHIVE_NIXPKGS_LIB is set (then the VM tests' nodes are evaluated too), else the
    documented minimal lib (nix/minimal-lib.nix)."""
    value = os.environ.get("HYPERHIVE_NIXPKGS_LIB")
    real = bool(value)
    lib = f"import {nix_string(nixpkgs_lib())}" if real else f"import {nix_string(REPO_ROOT / 'nix' / 'minimal-lib.nix')}"
    driver = nix_string(REPO_ROOT / "nix" / "flake-outputs.nix")
    return nix_eval_json(f"import {driver} {{ lib = {lib}; repo = {nix_string(REPO_ROOT)}; "
                         f"realLib = {'true' if real else 'false'}; }}"), real


def test_flake_outputs_evaluate_with_every_derivation_forced():
    outputs, real = flake_outputs()
    for key in ("nixosModules", "packages", "checks", "templates", "devShells", "apps"):
        assert key in outputs["topLevel"]
    assert outputs["nixosModules"] == {"hyperhive": True, "agent": True, "default": True}
    assert outputs["templates"]["agent"]["path"] == str(REPO_ROOT / "templates" / "agent")
    for system in ("x86_64-linux", "aarch64-linux"):
        package = outputs["packages"][system]["hyperhive"]
        assert package["kind"] == "buildPythonApplication"
        args = package["args"]
        assert args["pname"] == "hyperhive" and args["pyproject"] is True
        assert {d["derivation"] for d in args["dependencies"]} >= {"pluggy", "flask", "sqlalchemy", "gitpython"}
        assert {"git", "nix"} <= {d["derivation"] for d in args["nativeCheckInputs"]}
        assert "HYPERHIVE_BUILD_SANDBOX=1" in args["preCheck"]
        checks = outputs["checks"][system]
        assert set(checks) >= {"vm-hive", "vm-deploy", "package", "nix-eval"}
        nix_eval = checks["nix-eval"]["args"]
        inputs = nix_eval["nativeBuildInputs"]
        assert {"nix", "git"} <= {d["derivation"] for d in inputs}  # test_nix.py calls git (defect 3)
        env = next(d for d in inputs if d["kind"] == "python-env")
        # The package is importable there: wrapped by the package set's toPythonModule (defect 1).
        assert any(p.get("derivation", "").startswith("hyperhive") for p in env["args"]["packages"])
        for vm in ("vm-hive", "vm-deploy"):
            assert checks[vm]["kind"] == "nixosTest"
            script = checks[vm]["args"]["testScript"]
            if real:  # the script was rendered with the evaluated node, as nixos/lib/testing does
                assert "def wait_for_hive" in script and "subtest" in script
        assert outputs["devShells"][system]["default"]["kind"] == "mkShell"
        assert outputs["apps"][system]["default"]["type"] == "app"
    if real:
        for system, checks in outputs["vmNodes"].items():
            for vm in ("vm-hive", "vm-deploy"):
                host = checks[vm]["host"]
                assert host["assertions"] == [], host["assertions"]
                assert host["containers"] == ["h-alice", "h-bob", "hm1nd"]
                # A store that systemd-nspawn can bind with :idmap (see nixos-tests/common.nix).
                assert host["virtualisation"].get("useBootLoader") is True



def test_a_spawned_container_gets_a_declared_ones_settings(tmp_path):
    """The conf the service writes for a container it creates at run time (hyperhive/backends/nixos_container.py)
    has the values nixos-containers.nix renders for a declared one: the host's network (no PRIVATE_NETWORK, which
    `nixos-container create` sets with no NAT), the same user namespace (uid from the same hash), the same mounts,
    SYSTEM_PATH resolved inside the container (defect 10)."""
    from types import SimpleNamespace

    from hyperhive.backends.nixos_container import container_conf, uid_base

    result = eval_modules("policies")
    hive = SimpleNamespace(config=load(result["rendered"], tmp_path))
    base = result["containersJson"]["privateUsersBase"]

    def normal(conf):
        return {**conf, "EXTRA_NSPAWN_FLAGS": sorted(conf["EXTRA_NSPAWN_FLAGS"].split())}

    for name in ("alice", "bob"):
        declared = result["containers"][f"h-{name}"]
        uid = 0 if declared["privateUsers"] == "no" else declared["privateUsers"]
        if hive.config.agents[name].private_users:
            assert uid == uid_base(name, base)
        assert normal(container_conf(hive, name, f"h-{name}", uid)) == normal(declared["conf"]), name
    # The manager too (its container is declared, but the backend creates it when it is missing).
    manager = hive.config.manager
    assert normal(container_conf(hive, manager, "hm1nd", 0)) == normal(result["containers"]["hm1nd"]["conf"])
    # The host data a spawned agent's deploy imports is the declared ones' minus what is per agent.
    spawned = result["containersJson"]["spawned"]
    alice = result["containersJson"]["containers"]["h-alice"]
    for key in ("package", "claudePackage", "claudeCommand", "managerName", "operatorPronouns"):
        assert spawned[key] == alice[key], key


# ---------------------------------------------------------------------------------------------------- the meta flake


def nix_flakes_env(store: Path) -> dict:
    """`nix` on flakes, offline, on a store of its own under ``store`` (a chroot store: nothing of the machine's)."""
    require("nix (the flakes CLI)", shutil.which("nix") is not None, "apt-get install nix-bin (make test does)")
    require("a Nix store of the test's own", not BUILD_SANDBOX, "run outside the Nix build sandbox")
    return {**os.environ, "NIX_CONFIG": f"store = local?root={store}\nexperimental-features = nix-command flakes\n"
            "substituters =\nflake-registry =\n", "HOME": str(store.parent)}


def standin_nixpkgs(tmp_path: Path) -> Path:
    """A stand-in nixpkgs flake: nixpkgs' real lib, and `lib.nixosSystem` evaluating the modules against the
    NixOS stand-ins of nix/standin-nixos.nix."""
    root = tmp_path / "nixpkgs"
    root.mkdir()
    shutil.copytree(nixpkgs_lib(), root / "lib")
    shutil.copy(REPO_ROOT / "nix" / "standin-nixos.nix", root / "standin-nixos.nix")
    (root / "flake.nix").write_text(
        '{ outputs = { self }: let lib = import ./lib; standin = import ./standin-nixos.nix { inherit lib; };\n'
        '  in { lib = lib // { inherit (standin) nixosSystem; }; }; }\n')
    return root


def hyperhive_flake_copy(tmp_path: Path) -> Path:
    """The repository's flake without the Python package's tests and tools (what a `path:` input would copy)."""
    root = tmp_path / "hyperhive"
    for part in ("modules", "nix", "templates", "nixos-tests", "examples"):
        shutil.copytree(REPO_ROOT / part, root / part)
    shutil.copy(REPO_ROOT / "flake.nix", root / "flake.nix")
    (root / "pkgs" / "hyperhive").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "pkgs" / "hyperhive" / "pyproject.toml", root / "pkgs" / "hyperhive" / "pyproject.toml")
    return root


def git_repo(path: Path, files: dict[str, str]) -> str:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "config"]):
        subprocess.run(["git", "-C", str(path), *cmd], check=True, env=env, capture_output=True)
    return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


AGENT_POLICY_FILES = {
    "flake.nix": (REPO_ROOT / "templates" / "agent" / "flake.nix").read_text() if has_repository() else "",
    "agent.nix": ('{ config, lib, pkgs, ... }:\n{\n  imports = [ ./policy.nix ];\n'
                  '  hyperhive = lib.mkMerge [\n    { bash.allow = [ "git *" ]; }\n'
                  '    (lib.mkIf (config.hyperhive.name == "ada") { allowedRecipients = [ "alice" ]; })\n  ];\n}\n'),
    "policy.nix": '{ lib, ... }: { hyperhive.allowedRecipients = [ "manager" ]; hyperhive.prompt = lib.mkDefault "p"; }\n',
}


def test_the_meta_flake_gives_the_module_systems_policy_and_the_hosts_nixpkgs(tmp_path):
    """On the nixos-container backend the policy is `config.hyperhive.policy` of the very configuration deployed
    (hyperhive/policy_eval.py: nix eval of the locked meta flake): imports, mkMerge, mkIf and config references mean
    what they mean in the container, and the harness's agent.json in that container carries the same
    allowedRecipients. The meta flake's nixpkgs is the host's (containers.json), hyperhive's follows it, and the
    host data reaches the configuration (defects 7, 8, 9)."""
    from types import SimpleNamespace

    from hyperhive import meta_flake, policy_eval

    store = tmp_path / "store"
    env = nix_flakes_env(store)
    nixpkgs = standin_nixpkgs(tmp_path)
    hyperhive = hyperhive_flake_copy(tmp_path)
    state = tmp_path / "state"
    git_repo(state / "applied" / "ada", AGENT_POLICY_FILES)
    # bea is declared: its repo is the seed the service gives it (repos._template_files) while the config said
    # "old *"; the config then says "new *". The container must run what the config says now.
    from hyperhive import repos

    seeded_by = tmp_path / "seeded-by.json"
    seeded_by.write_text(json.dumps({"version": 1, "stateDir": str(state), "manager": "boss",
                                     "agents": {"bea": {"bashAllow": ["old *"], "prompt": "old prompt"}}}))
    seed = repos._template_files(SimpleNamespace(config=load_config(seeded_by)), "bea")
    git_repo(state / "applied" / "bea", {"flake.nix": AGENT_POLICY_FILES["flake.nix"],
                                         "agent.nix": seed["agent.nix"].decode()})
    meta = state / "meta"
    meta.mkdir(parents=True)
    extra = tmp_path / "extra.nix"
    extra.write_text('{ environment.etc."from-host".text = "h"; }\n')
    settings = {"nixpkgs": str(nixpkgs), "privateUsersBase": 0x70000000,
                "containers": {"h-ada": {"container": "h-ada", "package": "/nix/store/" + "0" * 32 + "-hyperhive",
                                         "packages": [], "claudePackage": None, "claudeCommand": None,
                                         "managerName": "boss", "operatorPronouns": "she/her",
                                         "imports": [str(extra)]}}}
    settings["containers"]["h-bea"] = {**settings["containers"]["h-ada"], "container": "h-bea", "imports": []}
    hive = SimpleNamespace(config=SimpleNamespace(state_dir=state))
    agents = [("ada", "agent"), ("bea", "agent")]
    (meta / "flake.nix").write_text(meta_flake.flake_text(hive, agents, f"path:{hyperhive}", "x86_64-linux", settings))
    (meta / "policy").mkdir()
    (meta / "policy" / "ada.json").write_text(json.dumps({"name": "ada", "role": "agent", "managerName": "boss"}))
    seeded_by.write_text(json.dumps({"version": 1, "stateDir": str(state), "manager": "boss", "agents": {"bea": {
        "bashAllow": ["new *"], "prompt": "new prompt", "allowedRecipients": ["boss"]}}}))  # the config now
    now = SimpleNamespace(config=load_config(seeded_by))
    (meta / "policy" / "bea.json").write_text(json.dumps(repos._policy_for_meta(now, "bea", "agent")))
    meta_flake.write_host_files(hive, meta, agents, settings)
    assert (meta / "host" / "ada.json").exists() and len(list((meta / "host" / "ada").iterdir())) == 1
    git_repo_meta = ["git", "-C", str(meta)]
    subprocess.run(git_repo_meta + ["init", "-q", "-b", "main"], check=True)
    subprocess.run(git_repo_meta + ["add", "-A"], check=True)
    lock = subprocess.run(["nix", "flake", "lock"], cwd=meta, env=env, capture_output=True, text=True, timeout=300)
    assert lock.returncode == 0, lock.stderr
    locked = json.loads((meta / "flake.lock").read_text())
    # The host's nixpkgs, and hyperhive's own nixpkgs input follows it (nothing fetched from hyperhive's pin).
    assert locked["nodes"]["nixpkgs"]["original"] == {"path": str(nixpkgs), "type": "path"}
    assert locked["nodes"]["hyperhive"]["inputs"]["nixpkgs"] == ["nixpkgs"]

    old = os.environ.get("NIX_CONFIG")
    os.environ["NIX_CONFIG"] = env["NIX_CONFIG"]
    try:
        policy = policy_eval.read_deployed(meta, "ada", state / "applied" / "ada", cwd=tmp_path)
        bea = policy_eval.read_deployed(meta, "bea", state / "applied" / "bea", cwd=tmp_path)
    finally:
        if old is None:
            os.environ.pop("NIX_CONFIG", None)
        else:
            os.environ["NIX_CONFIG"] = old
    # listOf merges the import's, mkMerge's and mkIf's definitions, in module order.
    assert sorted(policy["allowedRecipients"]) == ["alice", "manager"]
    assert policy["bashAllow"] == ["git *"] and policy["prompt"] == "p"
    # the declared agent runs its config as it is now, not as it was when its repo was seeded
    assert bea["bashAllow"] == ["new *"] and bea["prompt"] == "new prompt" and bea["allowedRecipients"] == ["boss"]

    def evaluate(attr, *apply):
        proc = subprocess.run(["nix", "eval", "--json", f'{meta}#nixosConfigurations."ada".config.{attr}', *apply],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    # (hyperhiveCommand names the package's store path, which this test's stand-in package does not build)
    agent_json = evaluate('environment.etc."hyperhive/agent.json".source.value', "--apply",
                          'v: builtins.removeAttrs v [ "hyperhiveCommand" ]')
    assert agent_json["allowedRecipients"] == policy["allowedRecipients"]  # what the running harness reads
    assert agent_json["manager"] == "boss" and agent_json["operatorPronouns"] == "she/her"
    assert evaluate("networking.useDHCP") is False and evaluate("networking.hostName") == "h-ada"
    assert "from-host" in evaluate("environment.etc", "--apply", "builtins.attrNames")  # agents.<n>.config reached the deploy


def test_a_container_the_service_creates_gets_the_declared_settings(start_hive, hive_dir):
    """Through the service and the nixos-container backend (stand-in `nixos-container`, whose `create` writes a
    conf as nixos-container.pl does, with a private network): the conf of a container the service created holds
    the declared ones' settings (no PRIVATE_NETWORK, SYSTEM_PATH inside the container, the user namespace from the
    shared hash above nspawn's pick region, the mounts), and its directories belong to its root uid."""
    from standins.support import nixos_env, state_dir

    from conftest import wait_for
    from hyperhive.backends.nixos_container import uid_base

    hp = start_hive(agents={"alice": {}}, backend="nixos-container", env=nixos_env(hive_dir))
    conf_path = hive_dir / "standin" / "etc" / "h-alice.conf"
    wait_for(lambda: conf_path.exists() and "SYSTEM_PATH" in conf_path.read_text(), timeout=60,
             message="h-alice created")
    conf = dict(line.split("=", 1) for line in conf_path.read_text().splitlines() if "=" in line)
    assert "PRIVATE_NETWORK" not in conf, conf
    # nixos-container.pl's veth addresses would make nixos-containers.nix's startScript add --network-veth
    assert not {"HOST_ADDRESS", "LOCAL_ADDRESS", "HOST_BRIDGE", "HOST_PORT"} & set(conf), conf
    # the startScript copies the host's resolv.conf only with COPY_RESOLV_CONF=1: without it the agent resolves no
    # name (not the Claude API's either)
    assert conf["COPY_RESOLV_CONF"] == "1", conf
    assert conf["SYSTEM_PATH"] == "/nix/var/nix/profiles/system"
    uid = uid_base("alice", 0x70000000)
    assert conf["PRIVATE_USERS"] == str(uid) and uid >= 0x70000000
    flags = conf["EXTRA_NSPAWN_FLAGS"].strip('"').split()
    sd = state_dir(hp)
    assert f"--bind={sd / 'agents' / 'alice' / 'state'}:/state" in flags
    assert f"--bind={hp.config.agent_socket('alice').parent}:/run/hive" in flags
    assert "--private-users-ownership=auto" in flags
    if os.geteuid() == 0:
        assert (sd / "agents" / "alice" / "state").stat().st_uid == uid
        assert hp.config.agent_socket("alice").parent.stat().st_uid == uid
    # The manager shares host uids, like the declared hm1nd.
    manager = dict(line.split("=", 1) for line in (hive_dir / "standin" / "etc" / "hm1nd.conf").read_text().splitlines()
                   if "=" in line)
    assert manager["PRIVATE_USERS"] == "no" and manager["COPY_RESOLV_CONF"] == "1"


def test_a_containers_log_is_read_from_the_hosts_container_roots(start_hive, hive_dir, tmp_path):
    """An agent's log is its container's journal under the root nixos-containers.nix keeps for it: the host module
    tells the service where (HYPERHIVE_NIXOS_CONTAINERS_STATE_DIR, /var/lib/containers on a host whose stateVersion
    predates 22.05). Stand-in `journalctl` reading the journal directory it is given."""
    from standins.support import nixos_env

    from conftest import wait_for

    roots = tmp_path / "var-lib-containers"
    journal = roots / "h-alice" / "var" / "log" / "journal"
    journal.mkdir(parents=True)
    (journal / "standin.jsonl").write_text(json.dumps({"MESSAGE": "alice took a turn",
                                                       "__REALTIME_TIMESTAMP": "1"}) + "\n")
    hp = start_hive(agents={"alice": {}}, backend="nixos-container",
                    env={**nixos_env(hive_dir), "HYPERHIVE_NIXOS_CONTAINERS_STATE_DIR": str(roots)})
    wait_for(lambda: (hive_dir / "standin" / "containers" / "h-alice").exists(), timeout=60, message="h-alice created")
    got = hp.host().call("logs", name="alice", lines=10)
    assert got["lines"] == ["alice took a turn"], got
