"""``hyperhive git``: the one way the manager's Claude Code runs git, on one agent's proposed config repo.

The manager edits ``<agents>/<name>/config`` and commits there. A permission rule allowing ``git -C <agents>/* *``
let it run any program (``-c core.fsmonitor=...``, ``--exec-path``, a second ``-C``, a hook or a ``.git/config`` it
edited: an fsmonitor, a clean filter, ``diff.external``, ``gpg.program``, an include ...). This entry point is
narrow instead:

- ``hyperhive git -C <agents>/<name>/config <subcommand> [options] [--] [args]``: the repo must be exactly that
  directory (absolute, no ``.`` or ``..``, no link on the way, a valid agent name) with a real ``.git``
  directory in it (not a gitfile, no ``commondir``, no alternates);
- only the subcommands a manager needs to edit and commit, each with an allow-list of options (exact spellings,
  no abbreviations): nothing that runs a program (pager, editor, external diff, textconv, gpg, hooks), reads or
  writes a file outside the repo (``--output``, ``-F``, ``--template``, ``--pathspec-from-file``,
  ``--no-index``), or points git elsewhere (``-c``, ``--git-dir``, ``--work-tree``, ``--exec-path``); a path or
  value argument may not be absolute nor climb out with ``..``;
- the repo's own ``.git/config`` may hold only a few keys (what ``git init``, a clone and a commit identity
  write); any other key is refused by name, not applied;
- git runs with an environment of its own: no inherited ``GIT_*`` (but the commit identity), no system or global
  config, no hooks, no fsmonitor, no pager or editor, no submodule recursion, no transport, no terminal prompt.

Nothing here trusts the caller: it is what a hostile manager's Bash may run.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .config import NAME_RE

AGENTS_DIR_ENV = "HYPERHIVE_AGENTS_DIR"
DEFAULT_AGENTS_DIR = "/agents"

USAGE = ("usage: hyperhive git -C <agents>/<name>/config <subcommand> [options] [--] [paths]\n"
         "subcommands: {subcommands}")


class Refused(Exception):
    """A request this entry point does not run; the message says what was wrong."""


# --- what may be asked ------------------------------------------------------------------------------------

FLAG, VALUE, OPTIONAL, TEXT, OPTIONAL_TEXT = "flag", "value", "optional", "text", "optional text"
# FLAG: no value. VALUE: a value (attached with = or the next argument), checked like a path. OPTIONAL: a value
# only when attached (--stat=...). TEXT: a value git always takes (the next argument too), free text: a message, a
# format, a pattern (never a file name). OPTIONAL_TEXT: free text, only when attached (--pretty=format:...).


@dataclass(frozen=True)
class Spec:
    long: dict[str, str]
    short: dict[str, str]
    numbers: bool = False  # log -3


_DIFF_LONG = {
    "--patch": FLAG, "--no-patch": FLAG, "--stat": OPTIONAL, "--numstat": FLAG, "--shortstat": FLAG,
    "--compact-summary": FLAG, "--summary": FLAG, "--name-only": FLAG, "--name-status": FLAG, "--raw": FLAG,
    "--check": FLAG, "--unified": VALUE, "--color": OPTIONAL, "--no-color": FLAG, "--word-diff": OPTIONAL,
    "--color-words": OPTIONAL, "--no-renames": FLAG, "--find-renames": OPTIONAL, "--ignore-all-space": FLAG,
    "--ignore-space-change": FLAG, "--ignore-blank-lines": FLAG, "--ignore-space-at-eol": FLAG,
    "--diff-filter": VALUE, "--minimal": FLAG, "--patience": FLAG, "--histogram": FLAG, "--text": FLAG,
    "--no-ext-diff": FLAG, "--no-textconv": FLAG, "--exit-code": FLAG, "--quiet": FLAG, "--abbrev": OPTIONAL,
    "--full-index": FLAG, "--binary": FLAG, "--relative": OPTIONAL, "--no-relative": FLAG, "-R": FLAG,
}
_DIFF_SHORT = {"p": FLAG, "u": FLAG, "s": FLAG, "U": OPTIONAL, "w": FLAG, "b": FLAG, "M": OPTIONAL, "a": FLAG,
               "z": FLAG, "R": FLAG, "W": FLAG}
_LOG_LONG = {
    **_DIFF_LONG, "--oneline": FLAG, "--format": TEXT, "--pretty": OPTIONAL_TEXT, "--max-count": VALUE, "--skip": VALUE,
    "--since": TEXT, "--until": TEXT, "--after": TEXT, "--before": TEXT, "--author": TEXT, "--committer": TEXT,
    "--grep": TEXT, "--all": FLAG, "--branches": OPTIONAL, "--tags": OPTIONAL, "--graph": FLAG,
    "--decorate": OPTIONAL, "--no-decorate": FLAG, "--follow": FLAG, "--reverse": FLAG, "--first-parent": FLAG,
    "--abbrev-commit": FLAG, "--no-abbrev-commit": FLAG, "--no-merges": FLAG, "--merges": FLAG, "--date": TEXT,
    "--topo-order": FLAG, "--date-order": FLAG, "--full-history": FLAG, "--left-right": FLAG, "--cherry-pick": FLAG,
    "--boundary": FLAG, "--ignore-case": FLAG, "--regexp-ignore-case": FLAG, "--fixed-strings": FLAG,
    "--invert-grep": FLAG, "--name-rev": FLAG, "--parents": FLAG, "--children": FLAG, "--no-walk": OPTIONAL,
    "--walk-reflogs": FLAG, "--first-parent-only": FLAG,
}
_LOG_SHORT = {**_DIFF_SHORT, "n": VALUE, "i": FLAG, "F": FLAG, "g": FLAG}

SUBCOMMANDS: dict[str, Spec] = {
    "status": Spec({"--short": FLAG, "--branch": FLAG, "--porcelain": OPTIONAL, "--long": FLAG, "--verbose": FLAG,
                    "--untracked-files": OPTIONAL, "--ignored": OPTIONAL, "--no-renames": FLAG, "--renames": FLAG,
                    "--show-stash": FLAG, "--ahead-behind": FLAG, "--no-ahead-behind": FLAG, "--null": FLAG},
                   {"s": FLAG, "b": FLAG, "v": FLAG, "z": FLAG, "u": OPTIONAL}),
    "diff": Spec({**_DIFF_LONG, "--cached": FLAG, "--staged": FLAG, "--merge-base": FLAG}, _DIFF_SHORT),
    "log": Spec(_LOG_LONG, _LOG_SHORT, numbers=True),
    "show": Spec(_LOG_LONG, _LOG_SHORT, numbers=True),
    "add": Spec({"--all": FLAG, "--update": FLAG, "--dry-run": FLAG, "--verbose": FLAG, "--force": FLAG,
                 "--intent-to-add": FLAG, "--no-all": FLAG, "--ignore-removal": FLAG, "--ignore-errors": FLAG,
                 "--refresh": FLAG, "--chmod": VALUE, "--sparse": FLAG},
                {"A": FLAG, "u": FLAG, "n": FLAG, "v": FLAG, "f": FLAG, "N": FLAG}),
    "rm": Spec({"--cached": FLAG, "--force": FLAG, "--dry-run": FLAG, "--quiet": FLAG, "--ignore-unmatch": FLAG,
                "--sparse": FLAG},
               {"r": FLAG, "f": FLAG, "n": FLAG, "q": FLAG}),
    "mv": Spec({"--force": FLAG, "--dry-run": FLAG, "--verbose": FLAG, "--sparse": FLAG},
               {"f": FLAG, "k": FLAG, "n": FLAG, "v": FLAG}),
    "restore": Spec({"--staged": FLAG, "--worktree": FLAG, "--source": VALUE, "--ours": FLAG, "--theirs": FLAG,
                     "--merge": FLAG, "--overlay": FLAG, "--no-overlay": FLAG, "--quiet": FLAG,
                     "--ignore-unmerged": FLAG, "--progress": FLAG, "--no-progress": FLAG},
                    {"S": FLAG, "W": FLAG, "s": VALUE, "q": FLAG, "m": FLAG}),
    "commit": Spec({"--message": TEXT, "--all": FLAG, "--amend": FLAG, "--allow-empty": FLAG,
                    "--allow-empty-message": FLAG, "--author": TEXT, "--date": TEXT, "--quiet": FLAG,
                    "--verbose": FLAG, "--no-verify": FLAG, "--no-edit": FLAG, "--only": FLAG, "--include": FLAG,
                    "--signoff": FLAG, "--no-signoff": FLAG, "--dry-run": FLAG, "--short": FLAG,
                    "--porcelain": FLAG, "--reset-author": FLAG, "--reuse-message": VALUE, "--fixup": VALUE,
                    "--squash": VALUE, "--cleanup": VALUE, "--trailer": TEXT, "--no-gpg-sign": FLAG,
                    "--status": FLAG, "--no-status": FLAG, "--untracked-files": OPTIONAL, "--null": FLAG},
                   {"m": TEXT, "a": FLAG, "q": FLAG, "v": FLAG, "n": FLAG, "s": FLAG, "o": FLAG, "i": FLAG,
                    "C": VALUE, "z": FLAG, "u": OPTIONAL}),
    "rev-parse": Spec({"--verify": FLAG, "--short": OPTIONAL, "--abbrev-ref": OPTIONAL, "--symbolic": FLAG,
                       "--symbolic-full-name": FLAG, "--quiet": FLAG, "--show-toplevel": FLAG,
                       "--show-prefix": FLAG, "--is-inside-work-tree": FLAG, "--end-of-options": FLAG},
                      {"q": FLAG}),
    "ls-files": Spec({"--cached": FLAG, "--deleted": FLAG, "--modified": FLAG, "--others": FLAG, "--stage": FLAG,
                      "--unmerged": FLAG, "--killed": FLAG, "--exclude-standard": FLAG, "--directory": FLAG,
                      "--no-empty-directory": FLAG, "--full-name": FLAG, "--error-unmatch": FLAG,
                      "--deduplicate": FLAG, "--eol": FLAG},
                     {"c": FLAG, "d": FLAG, "m": FLAG, "o": FLAG, "s": FLAG, "u": FLAG, "k": FLAG, "t": FLAG,
                      "z": FLAG, "v": FLAG, "f": FLAG}),
    "branch": Spec({"--list": FLAG, "--all": FLAG, "--remotes": FLAG, "--verbose": FLAG, "--show-current": FLAG,
                    "--delete": FLAG, "--move": FLAG, "--copy": FLAG, "--force": FLAG, "--contains": VALUE,
                    "--no-contains": VALUE, "--merged": VALUE, "--no-merged": VALUE, "--sort": TEXT,
                    "--format": TEXT, "--points-at": VALUE, "--quiet": FLAG, "--ignore-case": FLAG,
                    "--no-track": FLAG},
                   {"l": FLAG, "a": FLAG, "r": FLAG, "v": FLAG, "d": FLAG, "D": FLAG, "m": FLAG, "M": FLAG,
                    "c": FLAG, "C": FLAG, "f": FLAG, "q": FLAG, "i": FLAG}),
    "switch": Spec({"--create": VALUE, "--force-create": VALUE, "--detach": FLAG, "--discard-changes": FLAG,
                    "--force": FLAG, "--merge": FLAG, "--quiet": FLAG, "--orphan": VALUE, "--no-guess": FLAG,
                    "--no-track": FLAG, "--no-progress": FLAG, "--progress": FLAG},
                   {"c": VALUE, "C": VALUE, "d": FLAG, "f": FLAG, "m": FLAG, "q": FLAG}),
}

# Options asked for by name that are refused with the reason (any other unknown option is refused too).
WHY_NOT = {
    "-c": "sets git configuration", "--config-env": "sets git configuration", "--git-dir": "points git elsewhere",
    "--work-tree": "points git elsewhere", "--exec-path": "runs programs from another directory",
    "--namespace": "points git elsewhere", "--super-prefix": "points git elsewhere",
    "--upload-pack": "runs a program", "--receive-pack": "runs a program", "--ext-diff": "runs a program",
    "--textconv": "runs a program", "--output": "writes a file outside the repo", "--no-index": "reads files "
    "outside the repo", "--file": "reads a file outside the repo", "--template": "reads a file outside the repo",
    "--pathspec-from-file": "reads a file outside the repo", "--edit": "runs an editor", "--interactive":
    "runs an editor", "--patch": "needs a terminal", "--gpg-sign": "runs a program", "--show-signature":
    "runs a program", "--recurse-submodules": "runs git in another repository", "--ignore-submodules":
    "runs git in another repository", "--paginate": "runs a pager", "--exclude-from": "reads a file outside "
    "the repo", "--open-files-in-pager": "runs a program", "--reedit-message": "runs an editor",
    "--edit-description": "runs an editor", "--orderfile": "reads a file outside the repo",
}

# What a repo's .git/config may hold: `git init`, a clone, a branch's upstream, a commit identity. Anything else
# (core.fsmonitor, core.hooksPath, core.pager, core.editor, core.worktree, filter.*, diff.*, gpg.*, include.*,
# alias.*, extensions.* ...) is refused by name.
CONFIG_KEYS = re.compile(
    r"core\.(repositoryformatversion|filemode|bare|logallrefupdates|symlinks|ignorecase|precomposeunicode)"
    r"|user\.(name|email)|remote\.[^\n]+\.(url|fetch)|branch\.[^\n]+\.(remote|merge)|init\.defaultbranch")
CONFIG_VALUES = {"core.bare": {"false"}, "core.repositoryformatversion": {"0", "1"}}


@dataclass(frozen=True)
class Request:
    repo: Path
    name: str
    subcommand: str
    args: list[str]


def _path_like(value: str, what: str) -> None:
    """A path or revision argument stays inside the repo and out of its ``.git``: not absolute, no ``..``
    component, no ``.git`` component."""
    parts = [p.lower() for p in re.split(r"[/:]", value)]
    if value.startswith(("/", "~")) or ".." in parts or ".git" in parts or "\0" in value:
        raise Refused(f"{what} {value!r}: only paths inside the repo (relative, no '..', not in .git) and "
                      "revisions")


def _text(name: str, value: str) -> None:
    """A format may not ask for signatures (``%G...`` runs gpg)."""
    if name in ("--format", "--pretty") and re.search(r"%G", value.replace("%%", "")):
        raise Refused(f"{name}: %G... (signature checks) runs a program")


def _unknown(subcommand: str, option: str) -> None:
    reason = WHY_NOT.get(option)
    raise Refused(f"git {subcommand} {option}: " + (f"refused ({reason})" if reason else
                                                    "not an option hyperhive git allows"))


def _value(subcommand: str, option: str, kind, value: str, given: bool, args: list[str], i: int) -> int:
    """Check the value of ``option`` (taken from ``args[i]`` when it needs one and none was ``given`` with it);
    the index of the next argument."""
    if kind in (VALUE, TEXT) and not given:
        if i >= len(args):
            raise Refused(f"git {subcommand} {option} needs a value")
        value, i = args[i], i + 1
    if kind in (VALUE, OPTIONAL) and value:
        _path_like(value, f"the value of {option}")
    elif kind in (TEXT, OPTIONAL_TEXT):
        _text(option, value)
    return i


def check_args(subcommand: str, args: list[str]) -> None:
    spec = SUBCOMMANDS[subcommand]
    i = 0
    positional_only = False
    while i < len(args):
        arg = args[i]
        i += 1
        if positional_only or arg == "-" or not arg.startswith("-"):
            _path_like(arg, "argument")
            continue
        if arg in ("--", "--end-of-options"):
            positional_only = True
            continue
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            kind = spec.long.get(name)
            if kind is None:
                _unknown(subcommand, name)
            if kind == FLAG and eq:
                raise Refused(f"git {subcommand} {name} takes no value")
            i = _value(subcommand, name, kind, value, bool(eq), args, i)
            continue
        if spec.numbers and arg[1:].isdigit():
            continue
        j = 1
        while j < len(arg):  # a cluster of short options: -am, -U5, -uno
            c = arg[j]
            kind = spec.short.get(c)
            if kind is None:
                _unknown(subcommand, f"-{c}")
            rest = arg[j + 1:]
            if kind == FLAG:
                j += 1
                continue
            i = _value(subcommand, f"-{c}", kind, rest, bool(rest), args, i)
            break


def agents_dir() -> Path:
    raw = os.environ.get(AGENTS_DIR_ENV) or DEFAULT_AGENTS_DIR
    if not os.path.isabs(raw):
        raise Refused(f"{AGENTS_DIR_ENV} must be an absolute path, not {raw!r}")
    return Path(os.path.normpath(raw))


def parse(argv: list[str], agents: Path) -> Request:
    """The request ``argv`` (what follows ``hyperhive git``) makes, or :class:`Refused` naming what is wrong."""
    subs = ", ".join(SUBCOMMANDS)
    if len(argv) < 3 or argv[0] != "-C":
        first = argv[0] if argv else "(nothing)"
        if first in WHY_NOT or first.split("=", 1)[0] in WHY_NOT:
            raise Refused(f"{first.split('=', 1)[0]}: refused ({WHY_NOT[first.split('=', 1)[0]]}); "
                          + USAGE.format(subcommands=subs))
        raise Refused(USAGE.format(subcommands=subs))
    raw, subcommand, args = argv[1], argv[2], argv[3:]
    if subcommand.startswith("-"):
        reason = WHY_NOT.get(subcommand.split("=", 1)[0])
        raise Refused(f"{subcommand.split('=', 1)[0]}: " + (f"refused ({reason})" if reason else
                      "only -C <repo> may come before the subcommand"))
    if subcommand not in SUBCOMMANDS:
        raise Refused(f"git {subcommand}: not a subcommand hyperhive git runs (it runs: {subs})")
    repo = check_repo_path(raw, agents)
    check_args(subcommand, args)
    return Request(repo=repo, name=repo.parent.name, subcommand=subcommand, args=list(args))


def check_repo_path(raw: str, agents: Path) -> Path:
    want = f"{agents.as_posix().rstrip('/')}/<name>/config"
    path = raw.rstrip("/") if raw != "/" else raw
    parts = path.split("/")
    if (not path.startswith("/") or any(p in ("", ".", "..") for p in parts[1:])
            or Path(path).parent.parent != agents or Path(path).name != "config"):
        raise Refused(f"-C {raw}: the repo must be {want}, spelled out (absolute, no '.', '..' or '//')")
    name = Path(path).parent.name
    if not NAME_RE.match(name):
        raise Refused(f"-C {raw}: {name!r} is not an agent name")
    real_agents = os.path.realpath(agents)
    for rel in (name, f"{name}/config", f"{name}/config/.git"):
        try:
            st = os.lstat(os.path.join(real_agents, rel))
        except FileNotFoundError:
            raise Refused(f"-C {raw}: {agents}/{rel} does not exist") from None
        if not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise Refused(f"-C {raw}: {agents}/{rel} is {kind}")
    return Path(real_agents) / name / "config"


def check_git_dir(repo: Path, git: str, env: dict) -> None:
    """The repo's ``.git`` borrows nothing from elsewhere and its config holds only allowed keys."""
    gitdir = repo / ".git"
    shown = f"{repo.parent.name}/config/.git"
    for rel in ("commondir", "objects/info/alternates", "config.worktree"):
        if os.path.lexists(gitdir / rel):
            raise Refused(f"{shown}/{rel}: a repo that borrows from another one is refused; ask the operator to "
                          "remove it")
    config = gitdir / "config"
    try:
        st = os.lstat(config)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{shown}/config is not a regular file")
    listed = _config_query(git, ["--file", str(config), "--no-includes", "--list", "-z"], env)
    if listed.returncode != 0:
        raise Refused(f"{shown}/config cannot be read: {listed.stderr.decode(errors='replace').strip()}")
    for entry in listed.stdout.split(b"\0"):
        if not entry:
            continue
        key, _, value = entry.decode(errors="replace").partition("\n")
        if not CONFIG_KEYS.fullmatch(key) or (key in CONFIG_VALUES and value not in CONFIG_VALUES[key]):
            raise Refused(f"{shown}/config sets {key}{'=' + value if key in CONFIG_VALUES else ''}, which hyperhive "
                          "git does not run with (it could start a program or point git elsewhere); ask the "
                          "operator to remove it")


# The configuration git runs with, on its command line (above anything a repo says).
HARDENED_CONFIG = (
    "core.hooksPath=/dev/null", "core.fsmonitor=false", "core.pager=cat", "core.editor=:",
    "core.attributesFile=/dev/null", "core.untrackedCache=false", "protocol.allow=never", "submodule.recurse=false",
    "diff.ignoreSubmodules=all", "status.submoduleSummary=false", "commit.gpgSign=false", "tag.gpgSign=false",
    "log.showSignature=false", "gc.auto=0", "maintenance.auto=false", "sequence.editor=:",
)
IDENTITY_ENV = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


def base_env(source: dict) -> dict:
    """The environment git runs in: the caller's, without its GIT_* (but the commit identity) and pager/editor."""
    env = {k: v for k, v in source.items()
           if not k.startswith("GIT_") and k not in ("PAGER", "LESS", "EDITOR", "VISUAL", "LESSOPEN")}
    env.update({k: source[k] for k in IDENTITY_ENV if k in source})
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0",
                "GIT_PAGER": "cat", "PAGER": "cat", "GIT_EDITOR": ":", "GIT_SEQUENCE_EDITOR": ":",
                "GIT_ATTR_NOSYSTEM": "1", "GIT_ALLOW_PROTOCOL": "", "GIT_PROTOCOL_FROM_USER": "0",
                "GIT_OPTIONAL_LOCKS": "0"})
    return env


def _config_query(git: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    """``git config ARGS`` run outside any repository (an empty directory, discovery stopped above it)."""
    with tempfile.TemporaryDirectory(prefix="hyperhive-git-") as empty:
        env = {**env, "GIT_CEILING_DIRECTORIES": os.path.dirname(empty)}
        return subprocess.run([git, "config", *args], env=env, cwd=empty, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=60)


def identity(git: str, source: dict) -> list[str]:
    """``user.name``/``user.email`` from the operator's global and system config (the NixOS container's
    /etc/gitconfig names the manager), read as plain values (no include followed) -- those files are not read
    when git runs here. Not needed when the environment names the author and committer."""
    if all(source.get(k) for k in IDENTITY_ENV):
        return []
    env = {k: v for k, v in source.items() if not k.startswith("GIT_")}
    out = []
    for key in ("user.name", "user.email"):
        for scope in ("--global", "--system"):
            got = _config_query(git, [scope, "--no-includes", "--get", key], env)
            value = got.stdout.decode(errors="replace").strip()
            if got.returncode == 0 and value and "\n" not in value:
                out += ["-c", f"{key}={value}"]
                break
    return out


def command(request: Request, git: str, source: dict) -> tuple[list[str], dict]:
    env = base_env(source)
    check_git_dir(request.repo, git, env)
    env.update({"GIT_DIR": str(request.repo / ".git"), "GIT_WORK_TREE": str(request.repo),
                "GIT_CEILING_DIRECTORIES": str(request.repo.parent)})
    argv = [git, "--no-pager", "--no-replace-objects"]
    for item in HARDENED_CONFIG:
        argv += ["-c", item]
    argv += identity(git, source)
    return [*argv, request.subcommand, *request.args], env


def main(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"], []):
        print(USAGE.format(subcommands=", ".join(SUBCOMMANDS)))
        return 0 if argv else 2
    git = shutil.which("git")
    try:
        if git is None:
            raise Refused("git is not on PATH")
        request = parse(argv, agents_dir())
        cmd, env = command(request, git, dict(os.environ))
    except Refused as e:
        print(f"hyperhive git: {e}", file=sys.stderr)
        return 2
    try:
        return subprocess.run(cmd, env=env, cwd=str(request.repo), stdin=subprocess.DEVNULL).returncode
    except KeyboardInterrupt:
        return 130
