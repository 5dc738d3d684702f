"""Service verbs: serve, up, init, config check."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
import tomli_w

from ..config import ConfigError, example_config, load_config

INIT_HEADER = """\
# hive.toml: one hive, run by `hyperhive up` (agents as local processes) or rendered from the NixOS module.
#
# stateDir/runDir: relative paths are taken relative to this file. backend: "local" or "nixos-container".
# dashboard.listen stays on loopback unless dashboard.tokenFile names a file holding a bearer token.
# broker: maxMessageBytes caps a message body; recvMaxWaitSeconds caps a parked recv (at most 86400, a day);
#   leaseSeconds is how long a received message stays leased before it comes again unless acknowledged (at most
#   604800, a week).
# retention: how long failed/ and denied/ tags are kept, in days (0 or more); deployed/ tags are always kept.
# agents.<name>: names are 1-9 characters, [a-z][a-z0-9-], a letter or digit last; manager, operator and system
#   are reserved.
#   allowedRecipients: whom the agent may send to (leave it out for anyone);
#   bashAllow: the commands Claude Code may run, as permission rules ("git *" becomes Bash(git *));
#   model: a Claude model name (leave it out for the default); prompt: the agent's standing instructions.
# harness.claudeCommand: the Claude Code command line to run; leave it out to use `claude` from PATH, or the
#   scripted stand-in model when `claude` is not installed.

"""


def hyperhive_command() -> str:
    """How to run this very hyperhive from another shell, as printed: the script that is running (e.g. the
    virtualenv's .venv/bin/hyperhive, which is not on PATH unless the venv is activated), else this Python."""
    script = Path(sys.argv[0])
    if script.name == "hyperhive" and script.is_file():
        return shlex.quote(str(script.resolve()))
    return f"{shlex.quote(sys.executable)} -m hyperhive"


def _drop_nulls(value):
    """TOML has no null: a key left out means null."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _load_or_exit(path: Path):
    try:
        return load_config(path)
    except ConfigError as e:
        raise click.ClickException(f"invalid config:\n{e}") from None


@click.command("serve")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), required=True,
              help="hive.json (from the NixOS module) or hive.toml.")
@click.option("--no-agents", is_flag=True, help="Run the broker and dashboard only; start no agent.")
def serve(config_path, no_agents):
    """Run the broker and the dashboard (the hyperhive.service unit)."""
    from ..service import serve as run

    _load_or_exit(Path(config_path))
    sys.exit(run(Path(config_path), run_agents=not no_agents))


@click.command("up")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default="hive.toml",
              show_default=True, help="The hive.toml to run.")
def up(config_path):
    """Run a whole hive here: the service plus every agent as a local process."""
    from ..service import serve as run

    path = Path(config_path)
    if not path.exists():
        raise click.ClickException(f"{path} not found; create one with `hyperhive init`")
    config = _load_or_exit(path)

    def banner(hive):
        click.echo(f"hyperhive is up ({path})")
        click.echo(f"  state:        {config.state_dir}")
        click.echo(f"  host socket:  {config.host_socket}")
        click.echo(f"  try:          {hyperhive_command()} list --config {shlex.quote(str(path.resolve()))}")
        for name in [config.manager, *sorted(hive.agent_configs())]:
            click.echo(f"  {name + ':':<13} {config.agent_socket(name)}")
        click.echo(f"  dashboard:    {hive.extensions.get('dashboard_url') or 'not running (see the log above)'}")
        if config.dashboard_token_file:
            click.echo(f"  login token:  in {config.dashboard_token_file}")
        if hive.extensions.get("backend") is None:
            click.echo(f"  agents:       not started: {hive.extensions.get('backend_error', 'see the log above')}")
        else:
            click.echo(f"  agents:       {hive.extensions.get('agents_note', 'running as local processes')}")
        click.echo("Ctrl-C stops it.")
        sys.stdout.flush()

    run(path, config=config, on_ready=banner, on_stopping=lambda: click.echo("stopping…"))
    click.echo("stopped.")


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False), default=".")
@click.option("--force", is_flag=True, help="Overwrite an existing hive.toml.")
def init(directory, force):
    """Write a hive.toml (a manager and two agents) into DIRECTORY."""
    target = Path(directory) / "hive.toml"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists; use --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(INIT_HEADER + tomli_w.dumps(_drop_nulls(example_config())), encoding="utf-8")
    try:
        load_config(target)  # what we write loads, unless where it is written does not suit it (a deep runDir)
    except ConfigError as e:
        raise click.ClickException(f"wrote {target}, but it cannot run from there yet; edit it:\n{e}") from None
    click.echo(f"wrote {target}; run it with: hyperhive up --config {target}")


@click.group("config")
def config_group():
    """Work with hive config files."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def check(file):
    """Validate FILE (hive.json or hive.toml); exit non-zero listing every error."""
    try:
        config = load_config(Path(file))
    except ConfigError as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    agents = ", ".join(sorted(config.agents)) or "none"
    click.echo(f"{file}: ok (manager {config.manager}; agents: {agents})")


COMMANDS = [serve, up, init, config_group]
