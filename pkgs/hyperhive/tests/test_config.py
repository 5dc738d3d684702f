"""The config loader, `hyperhive init`, `hyperhive config check`, and live reload in the running service."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for, write_config
from hyperhive.config import ConfigError, check_name, load_config, parse_config
from hyperhive.errors import HiveError


def errors_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(raw, "hive.toml")
    return e.value.errors


def test_design_example_loads(tmp_path):
    path = tmp_path / "hive.json"
    path.write_text(json.dumps({
        "version": 1, "stateDir": "/var/lib/hyperhive", "runDir": "/run/hyperhive", "manager": "manager",
        "backend": "nixos-container", "dashboard": {"listen": "127.0.0.1:8080", "tokenFile": None},
        "broker": {"maxMessageBytes": 65536, "recvMaxWaitSeconds": 180},
        "retention": {"failedMaxAgeDays": 14, "deniedMaxAgeDays": 14, "dropIntermediateTags": True},
        "agents": {"alice": {"allowedRecipients": None, "bashAllow": ["git *", "nix build .*"],
                             "privateUsers": True, "model": None, "prompt": "You maintain the docs.",
                             "notesCompactBytes": 65536, "turnTimeoutSeconds": 1800}},
    }))
    config = load_config(path)
    alice = config.agents["alice"]
    assert alice.allowed_recipients is None
    assert alice.bash_allow == ("git *", "nix build .*")
    assert config.agent_socket("alice").as_posix() == "/run/hyperhive/agents/alice/mcp.sock"
    assert config.agent_socket("manager").as_posix() == "/run/hyperhive/manager/mcp.sock"
    assert config.host_socket.as_posix() == "/run/hyperhive/host.sock"


def test_errors_name_the_key_and_the_file():
    errors = errors_of({"agents": {"bob": {"allowedRecipients": ["alice", "manager", "carl"]}, "alice": {}}})
    assert errors == ['agents.bob.allowedRecipients[2]: unknown agent "carl"']
    with pytest.raises(ConfigError) as e:
        parse_config({"agents": {"bob": {"allowedRecipients": ["carl"]}}}, "/etc/hyperhive/hive.json")
    assert str(e.value) == '/etc/hyperhive/hive.json: agents.bob.allowedRecipients[0]: unknown agent "carl"'


def test_every_error_is_reported_at_once():
    errors = errors_of({
        "agents": {"Bad": {}, "manager": {}, "ok": {"bashAllow": "git *", "turnTimeoutSeconds": -5,
                                                    "colour": "blue", "privateUsers": "yes"}},
        "broker": {"maxMessageBytes": "big"},
        "dashboard": {"listen": "localhost"},
        "backend": "docker",
        "surprise": 1,
    })
    text = "\n".join(errors)
    for fragment in ['agents.Bad: invalid agent name "Bad"', 'agents.manager: "manager" is reserved',
                     "agents.ok.bashAllow: must be a list", "agents.ok.turnTimeoutSeconds: must be positive",
                     "agents.ok.colour: unknown key", "agents.ok.privateUsers: must be a boolean",
                     "broker.maxMessageBytes: must be an integer", 'dashboard.listen: must be "HOST:PORT"',
                     'backend: unknown backend "docker"', "surprise: unknown key"]:
        assert fragment in text, fragment


@pytest.mark.parametrize("name, ok", [
    ("a", True), ("alice", True), ("a-1", True), ("abcdefghi", True), ("abcdefghij", False),
    ("1abc", False), ("Alice", False), ("al_ice", False), ("", False), ("-a", False), ("a.b", False),
    ("bob-", False), ("abcdefgh-", False), ("a--b", True), ("a9", True),
    ("manager", False), ("operator", False), ("system", False), ("../x", False),
])
def test_agent_names(name, ok):
    assert (check_name(name) is None) == ok


def test_extra_mcp_server_named_hyperhive_is_refused():
    errors = errors_of({"agents": {"a": {"extraMcpServers": {"hyperhive": {"command": "x"}}}}})
    assert errors == ['agents.a.extraMcpServers.hyperhive: the name "hyperhive" is taken by the hive\'s own tools']


def test_broken_files_name_the_problem(tmp_path):
    bad_json = tmp_path / "hive.json"
    bad_json.write_text('{"agents": {')
    with pytest.raises(ConfigError, match=r"hive.json: not valid JSON"):
        load_config(bad_json)
    bad_toml = tmp_path / "hive.toml"
    bad_toml.write_text("[agents\n")
    with pytest.raises(ConfigError, match=r"hive.toml: not valid TOML"):
        load_config(bad_toml)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.toml")
    top_list = tmp_path / "list.json"
    top_list.write_text("[]")
    with pytest.raises(ConfigError, match="must be a table"):
        load_config(top_list)


def test_relative_dirs_are_taken_relative_to_the_file(hive_dir):  # a short path: sockets go under it
    (hive_dir / "sub").mkdir()
    path = hive_dir / "sub" / "hive.toml"
    path.write_text('stateDir = "state"\n')
    config = load_config(path)
    assert config.state_dir == (hive_dir / "sub" / "state").resolve()
    assert config.run_dir == config.state_dir / "run"


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hyperhive", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def test_init_writes_a_hive_toml_that_checks(hive_dir):  # a short path: sockets go under it
    result = run_cli("init", str(hive_dir))
    assert result.returncode == 0, result.stderr
    text = (hive_dir / "hive.toml").read_text()
    assert text.startswith("# hive.toml")
    config = load_config(hive_dir / "hive.toml")
    assert set(config.agents) == {"alice", "bob"} and config.manager == "manager"
    assert config.agents["bob"].allowed_recipients is None
    again = run_cli("init", str(hive_dir))
    assert again.returncode != 0 and "exists" in again.stderr
    check = run_cli("config", "check", str(hive_dir / "hive.toml"))
    assert check.returncode == 0 and "ok" in check.stdout


def test_config_check_lists_errors_and_fails(tmp_path):
    path = tmp_path / "hive.toml"
    path.write_text('[agents.bob]\nallowedRecipients = ["alice", "manager", "carl"]\n[agents.alice]\n')
    result = run_cli("config", "check", str(path))
    assert result.returncode == 1
    assert f'{path}: agents.bob.allowedRecipients[2]: unknown agent "carl"' in result.stderr


def test_a_tightened_policy_is_enforced_on_the_next_send(start_broker, hive_dir):
    hp = start_broker()
    alice = hp.client("alice")
    alice.call("send", to="bob", body="allowed now")
    write_config(hive_dir, {"alice": {"allowedRecipients": ["manager"]}, "bob": {}})

    def refused():
        try:
            alice.call("send", to="bob", body="probe")
        except HiveError as e:
            return e.code == "forbidden"
        return False

    wait_for(refused, timeout=10, interval=0.1, message="the new policy to take effect")


def test_a_broken_config_is_refused_and_the_old_one_stays(start_broker, hive_dir):
    hp = start_broker()
    path = hive_dir / "hive.json"
    good = path.read_text()
    path.write_text('{"agents": {"alice": {"allowedRecipients": ["nobody"]}}}')
    wait_for(lambda: "refused the new config" in hp.log(), timeout=10, message="the refusal in the log")
    assert 'agents.alice.allowedRecipients[0]: unknown agent "nobody"' in hp.log()
    alice = hp.client("alice")
    alice.call("send", to="bob", body="old config still in force")
    assert hp.client("bob").call("recv")["messages"][0]["body"] == "old config still in force"
    path.write_text(good)


def test_an_added_agent_gets_its_socket(start_broker, hive_dir):
    hp = start_broker()
    write_config(hive_dir, {"alice": {}, "bob": {}, "carol": {}})
    sock = hp.config.agent_socket("carol")
    wait_for(sock.exists, timeout=10, message="carol's socket")
    assert hp.client("carol").call("whoami") == {"name": "carol", "role": "agent"}
    hp.client("alice").call("send", to="carol", body="welcome")
    time.sleep(0.05)
    assert hp.client("carol").call("recv")["messages"][0]["body"] == "welcome"


def test_the_bundled_example_hive_checks(repo_root):
    REPO_ROOT = repo_root
    config = load_config(REPO_ROOT / "examples" / "hive.toml")
    assert config.backend == "local" and set(config.agents) == {"alice", "bob"}
    assert config.state_dir == (REPO_ROOT / "examples" / "state").resolve()
    assert config.agents["alice"].allowed_recipients == ("bob", "manager", "operator")


def test_a_run_directory_too_long_for_socket_paths_is_named_before_anything_starts(tmp_path):
    """A Unix socket path has at most 107 bytes: `hyperhive up` in a deep directory stops with the config error
    (before, the agents' sockets failed one by one in the log and the host socket's failure was a traceback)."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    init = run_cli("init", str(deep / "h"))  # written, and said what keeps it from running there
    assert init.returncode == 1 and "wrote " in init.stderr and "runDir: " in init.stderr, init
    assert (deep / "h" / "hive.toml").exists()
    for args in (["up", "--config", str(deep / "h" / "hive.toml")], ["config", "check", str(deep / "h" / "hive.toml")]):
        run = run_cli(*args)
        assert run.returncode == 1, run
        assert "runDir: " in run.stderr + run.stdout and "a Unix socket path may have at most 107" in run.stderr + run.stdout
        assert re.search(r"mcp\.sock: \d+ bytes", run.stderr)  # names the socket that would not fit, and its length
        assert "(it defaults to <stateDir>/run)" in run.stderr + run.stdout and "Traceback" not in run.stderr
    assert not (deep / "h" / "state").exists()  # nothing was started
    # the limit is exact, and counts the agents the hive has: a 9-character name needs 26 bytes past runDir
    fits = "/" + "r" * 80
    assert len(str(parse_config({"runDir": fits, "agents": {"abcdefghi": {}}}).agent_socket("abcdefghi"))) == 107
    assert errors_of({"runDir": fits + "r", "agents": {"abcdefghi": {}}}) == [
        f"runDir: {fits}r is too long for the socket of abcdefghi ({fits}r/agents/abcdefghi/mcp.sock: 108 bytes; a "
        "Unix socket path may have at most 107): set runDir to a directory of at most 81 bytes"]
    assert parse_config({"runDir": fits + "r", "agents": {"alice": {}}}).run_dir == Path(fits + "r")


def test_a_host_socket_that_cannot_be_made_is_one_sentence_not_a_traceback(hive_dir):  # a short path: sockets go under it
    assert run_cli("init", str(hive_dir)).returncode == 0
    (hive_dir / "state" / "run" / "host.sock").mkdir(parents=True)  # something in its place
    (hive_dir / "state" / "run" / "host.sock" / "kept").write_text("not ours")
    toml = hive_dir / "hive.toml"
    toml.write_text(toml.read_text().replace("127.0.0.1:8080", "127.0.0.1:0"))
    run = run_cli("up", "--config", str(toml))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run
    assert f"cannot put the socket at {hive_dir / 'state' / 'run' / 'host.sock'}: Is a directory" in run.stderr
    assert (hive_dir / "state" / "run" / "host.sock" / "kept").read_text() == "not ours"


def test_an_edit_that_does_not_validate_leaves_the_operator_the_running_hive(start_broker):
    """The service refuses the edit and keeps its last good config; the operator's verbs still reach it (with the
    file's errors on stderr), as they did not before. A file whose stateDir or runDir cannot be read is still an
    error: there is no socket to find."""
    hive = start_broker()
    path = hive.config_path
    good = json.loads(path.read_text())
    path.write_text(json.dumps({**good, "agents": {"alice": {"allowedRecipients": ["nobody"]}}}))
    wait_for(lambda: "refused the new config" in hive.log(), timeout=15, message="the refusal logged")
    listed = hive.cli("list")
    assert "alice" in listed.stdout and "bob" in listed.stdout  # the running config, not the refused one
    assert 'agents.alice.allowedRecipients[0]: unknown agent "nobody"' in listed.stderr
    assert "keeps its last good config" in listed.stderr
    assert hive.cli("send", "bob", "still here").stdout.startswith("sent #")
    path.write_text(json.dumps({**good, "runDir": 5}))
    broken = hive.cli("list", check=False)
    assert broken.returncode == 1 and "runDir: must be a string" in broken.stderr, broken.stderr


def test_a_hive_toml_that_does_not_parse_leaves_the_operator_the_running_hive(hive_dir):
    """A TOML syntax error, like an edit that does not validate: the service keeps its last good config and the
    operator's verbs reach it at the socket the file's stateDir line names, with the error as a warning. When that
    line itself is broken, the verb fails naming the file, and says the running service is unaffected."""
    from conftest import HiveProcess

    assert run_cli("init", str(hive_dir)).returncode == 0
    path = hive_dir / "hive.toml"
    good = path.read_text().replace("127.0.0.1:8080", "127.0.0.1:0")
    path.write_text(good)
    hive = HiveProcess(path, args=("--no-agents",)).start()
    try:
        path.write_text(good + "\n[agents.carl\n")
        wait_for(lambda: "refused the new config" in hive.log(), timeout=15, message="the refusal logged")
        listed = hive.cli("list")
        assert "alice" in listed.stdout and "bob" in listed.stdout, listed.stdout
        assert "not valid TOML" in listed.stderr and "keeps its last good config" in listed.stderr, listed.stderr
        assert hive.cli("send", "bob", "still here").stdout.startswith("sent #")
        path.write_text(good.replace('stateDir = "state"', 'stateDir = "state'))
        broken = hive.cli("list", check=False)
        assert broken.returncode == 1 and "Traceback" not in broken.stderr, broken.stderr
        assert f"{path}: not valid TOML" in broken.stderr and "unaffected" in broken.stderr, broken.stderr
    finally:
        hive.stop()


def test_hyperhive_config_beats_a_hive_toml_in_the_current_directory(start_broker, hive_dir):
    """The order the help and DESIGN.md give: --config, then $HYPERHIVE_CONFIG, then ./hive.toml, then /etc."""
    import os

    import hyperhive

    hive = start_broker()
    here = hive_dir / "elsewhere"
    here.mkdir()
    (here / "hive.toml").write_text(f'version = 1\nstateDir = "{hive_dir / "other"}"\nbackend = "local"\n')
    env = {**os.environ, "PYTHONPATH": str(Path(hyperhive.__file__).parent.parent),  # this checkout's code
           "HYPERHIVE_CONFIG": str(hive.config_path)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "hyperhive", *args], capture_output=True, text=True, cwd=here,
                              env=env, timeout=60)

    listed = cli("list")
    assert listed.returncode == 0 and "alice" in listed.stdout, listed.stderr
    del env["HYPERHIVE_CONFIG"]
    other = cli("list")
    assert other.returncode == 1 and "./hive.toml in the current directory" in other.stderr, other.stderr
    for help_text in (cli("list", "--help").stdout, cli("--help").stdout):
        flat = " ".join(help_text.split())
        assert re.search(r"\$HYPERHIVE_CONFIG, else \./hive\.toml .*, else /etc/hyperhive/hive\.json", flat), flat


def test_renaming_the_manager_in_a_running_hive_is_refused_and_the_running_config_kept(start_hive):
    """The running manager's harness serves the old name's socket: a rename at reload would orphan it (out of reach
    of `hyperhive kill` under either name). Refused, as a changed stateDir is, until the service restarts."""
    hive = start_hive()
    wait_for(lambda: "manager" in hive.cli("list").stdout and hive.config.agent_socket("manager").exists(),
             message="the manager running")
    path = hive.config_path
    renamed = {**json.loads(path.read_text()), "manager": "boss",
               "agents": {"alice": {"allowedRecipients": ["bob", "boss", "operator"]}, "bob": {}}}
    path.write_text(json.dumps(renamed))
    wait_for(lambda: "refused the new config" in hive.log(), timeout=15, message="the refusal logged")
    # (said in the log and the dashboard's config_errors; the log is read here: this test also runs in the build
    # sandbox's copy, without a network to reach the dashboard through)
    assert 'manager renamed from "manager" to "boss"; restart the service to rename it' in hive.log()
    assert hive.client("manager").call("whoami") == {"name": "manager", "role": "manager"}
    listed = hive.cli("list").stdout
    assert "boss" not in listed and listed.splitlines()[1].split()[:2] == ["manager", "manager"], listed
    assert "stopped" in hive.cli("kill", "manager").stdout


def test_broker_times_and_retention_ages_have_sane_bounds(hive_dir):
    """A negative age would drop every failed or denied tag at once; an infinite or huge wait or lease overflows
    the service's waits. Each is refused naming its key (the NixOS options declare the same bounds: test_nix)."""
    assert run_cli("init", str(hive_dir)).returncode == 0
    path = hive_dir / "hive.toml"
    text = path.read_text()
    for old, new in (("failedMaxAgeDays = 14", "failedMaxAgeDays = -3"),
                     ("deniedMaxAgeDays = 14", "deniedMaxAgeDays = inf"),
                     ("recvMaxWaitSeconds = 180", "recvMaxWaitSeconds = inf"),
                     ("leaseSeconds = 600", "leaseSeconds = 1e12")):
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    check = run_cli("config", "check", str(path))
    assert check.returncode == 1 and "Traceback" not in check.stderr, check
    out = check.stdout + check.stderr
    for problem in ("retention.failedMaxAgeDays: must be 0 or more days, got -3",
                    "retention.deniedMaxAgeDays: must be 0 or more days, got inf",
                    "broker.recvMaxWaitSeconds: must be at most 86400, got inf",
                    "broker.leaseSeconds: must be at most 604800, got 1000000000000.0"):
        assert problem in out, out
    bounds = {"broker": {"recvMaxWaitSeconds": 86400, "leaseSeconds": 604800},
              "retention": {"failedMaxAgeDays": 0, "deniedMaxAgeDays": 0}}
    config = parse_config({"version": 1, **bounds}, "hive.json")  # the bounds themselves are fine
    assert (config.broker.recv_max_wait_seconds, config.broker.lease_seconds) == (86400, 604800)
    assert (config.retention.failed_max_age_days, config.retention.denied_max_age_days) == (0, 0)
