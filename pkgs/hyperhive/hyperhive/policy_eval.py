"""The policy of an agent spawned at run time, read from its own ``agent.nix`` at deploy time.

The policy the broker enforces must be the one the agent runs with; it is read from the configuration being
deployed (the applied repo's ``main``, already at the approved commit), never from anything else:

- ``nixos-container``: the real module system. ``nix eval --json <meta>#nixosConfigurations."<n>".config.hyperhive.policy``
  evaluates the very configuration the deploy builds (the meta flake pins the agent's input to the approved commit).
  Flake evaluation is pure: it reads only the flake's locked inputs (the proposal's own tree, hyperhive, nixpkgs,
  the meta repo), no environment, no host file. Imports, ``mkMerge``, ``mkIf``, ``config.*`` references all mean
  exactly what they mean in the container.
- ``local`` (``hyperhive up``, tests; no NixOS): a documented subset, evaluated by ``nix-instantiate`` in restricted
  mode over a copy of the proposal's tree (nothing else is readable). ``agent.nix`` is an attribute set, or a
  function of ``{ pkgs, lib, ... }`` returning one, that sets ``hyperhive.<option>`` to plain values (strings,
  numbers, booleans, null, lists, attribute sets), directly or under ``config``. Anything the subset cannot give the
  module system's meaning for -- ``imports``, ``lib.mkIf``, ``lib.mkMerge``, ``lib.mkDefault``/``mkForce``/
  ``mkOverride``/``mkBefore``/``mkAfter``/``mkOrder``, a ``config.*`` reference, ``pkgs`` in a policy value, an
  unknown ``hyperhive.*`` option -- fails the deploy closed, naming what it met. Never "unrestricted by accident".

Either way, before evaluating: the proposal's tree may hold no symbolic link (an ``agent.nix`` linked to a host file
is refused) and no submodule, and what goes back to the manager (the ``failed/<id>`` note) names the problem without
quoting anything from outside the proposal: paths are shown relative to it, and output is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

EVAL_TIMEOUT = 120
MAX_ERROR = 4000

# The options of modules/agent.nix an agent.nix may set (the policy and the rest); anything else under hyperhive.*
# is an error there too ("The option `hyperhive.x' does not exist").
POLICY_KEYS = ("allowedRecipients", "bashAllow", "model", "prompt", "notesCompactBytes", "turnTimeoutSeconds",
               "extraMcpServers", "privateUsers")
KNOWN_OPTIONS = ("allowedRecipients", "bash", "model", "prompt", "notesCompactBytes", "turnTimeoutSeconds",
                 "extraMcpServers", "privateUsers", "packages", "git", "enable", "claudePackage")

# The local subset (see the module docstring). `path` is the proposal's agent.nix inside the restricted copy.
SUBSET_EXPR = r"""
path:
let
  outside = what: throw "hyperhive-subset: ${what} is outside the subset of agent.nix that the local backend evaluates (literal hyperhive.* values); the nixos-container backend evaluates it with the module system";
  lib = {
    mkIf = _: _: outside "lib.mkIf";
    mkMerge = _: outside "lib.mkMerge";
    mkDefault = _: outside "lib.mkDefault";
    mkForce = _: outside "lib.mkForce";
    mkOverride = _: _: outside "lib.mkOverride";
    mkBefore = _: outside "lib.mkBefore";
    mkAfter = _: outside "lib.mkAfter";
    mkOrder = _: _: outside "lib.mkOrder";
    optional = c: v: if c then [ v ] else [ ];
    optionals = c: v: if c then v else [ ];
  };
  pkgs = outside "pkgs (a package in a policy value)";
  config = outside "a config.* reference";
  options = outside "an options.* reference";
  raw = import path;
  m = if builtins.isFunction raw
      then raw { inherit lib pkgs config options; modulesPath = outside "modulesPath"; name = "agent"; }
      else raw;
  check = cond: what: if cond then true else outside what;
  ok = check (builtins.isAttrs m) "agent.nix that is not a module (an attribute set or a function returning one)"
    && check (!(m ? imports) || m.imports == [ ]) "imports"
    && check (!(m ? options)) "declaring options"
    && check (!(m ? _type)) "a lib.mk* module";
  # A module with a top-level config (or options) may hold nothing else but these (nixpkgs lib/modules.nix,
  # unifyModuleSyntax, which throws "has an unsupported attribute"); reading only m.config would take
  # { hyperhive = ...; config = { }; } for a module that sets no policy, i.e. unrestricted.
  stray = builtins.attrNames (builtins.removeAttrs m [ "_class" "_file" "key" "disabledModules" "imports" "options" "config" "meta" "freeformType" ]);
  okSyntax = if m ? config && stray != [ ]
    then throw "hyperhive-subset: agent.nix sets `${builtins.head stray}' next to a top-level `config' (the module system refuses such a module: move all of them into `config'), so it is outside the subset too"
    else true;
  # config itself may be no lib.mk* value either (a hand-written { _type = "merge"; ... } has no hyperhive to read)
  c = if m ? config then (if builtins.isAttrs m.config && !(m.config ? _type) then m.config else outside "config set through lib.mk*") else m;
  h0 = c.hyperhive or { };
  h = if builtins.isAttrs h0 && !(h0 ? _type) then h0 else outside "hyperhive set through lib.mk*";
  known = [ KNOWN ];
  unknown = builtins.filter (k: !(builtins.elem k known)) (builtins.attrNames h);
  okKeys = check (unknown == [ ]) "hyperhive.${builtins.head unknown} (not an option of hyperhive's agent module)";
  # A value is plain when it is data all the way down: no lib.mk* wrapper anywhere.
  plain = v: if builtins.isAttrs v then (if v ? _type then outside "lib.mk* (in a hyperhive value)" else builtins.all plain (builtins.attrValues v))
    else if builtins.isList v then builtins.all plain v
    else if builtins.isFunction v then outside "a function as a hyperhive value"
    else true;
  get = p: builtins.foldl' (acc: k: if acc != null && builtins.isAttrs acc && acc ? ${k} then acc.${k} else null) h p;
  read = p: let v = get p; in builtins.seq (plain v) v;
  policy = {
    allowedRecipients = read [ "allowedRecipients" ];
    bashAllow = read [ "bash" "allow" ];
    model = read [ "model" ];
    prompt = read [ "prompt" ];
    notesCompactBytes = read [ "notesCompactBytes" ];
    turnTimeoutSeconds = read [ "turnTimeoutSeconds" ];
    extraMcpServers = read [ "extraMcpServers" ];
    privateUsers = read [ "privateUsers" ];
  };
in builtins.seq ok (builtins.seq okSyntax (builtins.seq okKeys (builtins.deepSeq policy policy)))
""".replace("KNOWN", " ".join(f'"{k}"' for k in KNOWN_OPTIONS))


class PolicyError(Exception):
    """The policy cannot be read; the message is safe to show the manager."""


# --- the proposal's tree ---------------------------------------------------------------------------------------

def _commit_tree(repo_dir: Path, rev: str):
    """The tree of the commit ``rev`` of the config repo ``repo_dir``."""
    from . import repos

    repo = repos.open_repo(repo_dir)
    try:
        return repo.commit(rev).tree
    except Exception:
        raise PolicyError(f"the config repo has no commit at {rev}") from None


def check_tree(repo_dir: Path, rev: str = "main") -> list[tuple[str, bytes]]:
    """The regular files of the commit ``rev`` of the applied repo ``repo_dir``, as (path, content); a symbolic
    link or a submodule anywhere is refused (evaluation never follows a link out of the proposal)."""
    tree = _commit_tree(repo_dir, rev)
    files: list[tuple[str, bytes]] = []
    for item in tree.traverse():
        mode = item.mode
        if item.type == "submodule" or mode == 0o160000:
            raise PolicyError(f"{item.path} is a submodule; a config repo must hold its files itself")
        if item.type != "blob":
            continue
        if mode == 0o120000:
            raise PolicyError(f"{item.path} is a symbolic link; a config repo may hold no links "
                              "(evaluation never follows one out of the proposal)")
        files.append((item.path, item.data_stream.read()))
    if "agent.nix" not in {p for p, _ in files}:
        raise PolicyError("agent.nix is missing from the config repo")
    return files


def _sanitize(text: str, *roots: Path) -> str:
    """Nix's error, with the temporary and state paths replaced by the proposal's relative names, bounded."""
    for root in roots:
        text = text.replace(str(root) + "/", "").replace(str(root), ".")
    text = re.sub(r"/nix/store/[0-9a-z]{32}-source/", "", text)
    text = re.sub(r"/nix/store/[0-9a-z]{32}-", "<store>/", text)
    text = text.strip()
    if len(text) > MAX_ERROR:
        text = "...\n" + text[-MAX_ERROR:]
    return text


def _validate(policy: dict) -> dict:
    policy = {key: value for key, value in policy.items() if value is not None}
    # Checked the way hive.json is, so a bad value fails the deploy instead of the broker.
    from .config import _agent, _Reader

    reader = _Reader()
    _agent(reader, dict(policy), "agent.nix: hyperhive", "x", "agent")
    if reader.errors:
        raise PolicyError("agent.nix sets an invalid policy:\n" + "\n".join(reader.errors))
    return policy


# --- local: the subset -----------------------------------------------------------------------------------------

def _restricted_eval(nix: str, files, expr: str, entry: str, what: str, failed: str) -> str:
    """``(expr) <proposal/entry>`` evaluated to JSON by nix-instantiate over a private copy of ``files`` ((path,
    bytes) pairs of the proposal), in restricted mode: only that copy is readable, no URI is fetched, no
    environment variable is seen. ``what`` names it when it takes too long, ``failed`` heads an evaluation error
    (paths in it shown relative to the proposal)."""
    with tempfile.TemporaryDirectory(prefix="hyperhive-eval-") as tmp:
        root = Path(tmp) / "proposal"
        for path, data in files:
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp, "NIX_PATH": "", "NIX_STATE_DIR": str(Path(tmp) / "nix"),
               "NIX_REMOTE": "dummy://", "LANG": "C.UTF-8"}
        cmd = [nix, "--eval", "--strict", "--json", "--option", "restrict-eval", "true", "--option", "allowed-uris", "",
               "--option", "allow-import-from-derivation", "false", "-I", f"proposal={root}",
               "--expr", f"({expr}) <proposal/{entry}>"]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=EVAL_TIMEOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise PolicyError(f"evaluating {what} took longer than {EVAL_TIMEOUT} seconds") from None
        if result.returncode != 0:
            raise PolicyError(f"{failed}:\n" + _sanitize(result.stderr, root, Path(tmp)))
    return result.stdout


def read_subset(repo_dir: Path, rev: str = "main") -> dict:
    """The policy of the agent.nix at ``rev`` of ``repo_dir`` through the documented subset (local backend)."""
    files = check_tree(repo_dir, rev)
    nix = shutil.which("nix-instantiate")
    if nix is None:
        raise PolicyError("evaluating a spawned agent's agent.nix needs nix-instantiate (Debian's nix-bin): without "
                          "it the policy cannot be read, and the deploy fails rather than run the agent unrestricted")
    stdout = _restricted_eval(nix, files, SUBSET_EXPR, "agent.nix", "agent.nix", "agent.nix does not evaluate")
    try:
        policy = json.loads(stdout)
    except ValueError:
        raise PolicyError("agent.nix evaluated to something that is not a policy") from None
    return _validate(policy)


# --- the flake's inputs ------------------------------------------------------------------------------------------
#
# The meta flake imports each agent's config repo as a flake, and `nix flake lock --update-input agent-<n>` (run by the
# service, as root, before any build) locks that flake's own inputs too. An input on the host -- `git+file://` of the
# manager's proposed repo, `path:/etc`, a bare `/abs/path`, an indirect `nixpkgs` the host's registry maps -- is read
# by root with nothing of it in the diff: Nix runs `git` in a git+file repo, so the manager's `.git/config`
# (core.fsmonitor) ran as root at lock time, and a `path:` input copied host files into the store and the container.
# So a config repo's flake may only take inputs from a remote (github:, gitlab:, sourcehut:, https, ssh) or follow
# another input; its flake.lock may only pin such inputs. Its flake.nix's `inputs` is evaluated (restricted, over a
# copy of the tree) to the literal data Nix reads: Nix requires input attributes to be constants.

REMOTE_TYPES = ("github", "gitlab", "sourcehut")
URL_TYPES = ("git", "tarball", "file", "mercurial")
# A remote input's URL: a forge shorthand (whose `host` query parameter is read below), or https/ssh with an
# authority (`scheme:host/...` without `//`, which curl reads as a host too, is not taken).
FORGE_URL = re.compile(r"^(github|gitlab|sourcehut):([^?#]*)(?:\?([^#]*))?", re.I)
NET_URL = re.compile(r"^(?:git\+|tarball\+|file\+|hg\+)?(?:https|ssh)://([^/?#]*)", re.I)
# The authority this check reads the host from: anything else in it (a backslash, a second `@`, `%`-escapes in the
# host) is refused rather than guessed at, since curl, git and ssh need not split it the way Python does.
AUTHORITY = re.compile(r"^(?:[A-Za-z0-9._~+-]+(?::[A-Za-z0-9._~+-]*)?@)?"
                       r"(\[[0-9A-Fa-f:.]+(?:%25[A-Za-z0-9._~-]+)?\]|[A-Za-z0-9.-]+)(?::[0-9]{0,5})?$")
HOST_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")
NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
LOCAL_SUFFIXES = ("localhost", "local", "localdomain")  # loopback by name (RFC 6761), mDNS on the local link
GIT_FETCHES_MORE = ("submodules", "lfs")  # git then fetches what the remote repo names (.gitmodules, .lfsconfig)
INPUTS_EXPR = r"""
flake:
let f = import flake; in
if builtins.isAttrs f && f ? inputs then f.inputs else { }
"""


def host_problem(host: str) -> str | None:
    """Why Nix fetching from ``host`` (as root, on this host) would reach this host or its local network rather
    than a remote, or None. Refused: a loopback, unspecified, link-local, private or otherwise non-public address in
    any form the resolver takes (``127.1``, ``2130706433``, ``0x7f000001``, ``[::1]``, ``[::ffff:127.0.0.1]``), a
    name without a dot (``localhost``, this host's own name, a search-domain or ssh_config alias), ``*.localhost``,
    ``*.local``, ``*.localdomain`` -- a trailing dot changes nothing."""
    import ipaddress
    import socket

    if host.startswith("[") and host.endswith("]"):
        literal = host[1:-1].split("%", 1)[0]
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            return f"{json.dumps(host)}, which is not an address"
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return None if address.is_global else f"{json.dumps(host)}, {_address_kind(address)} address"
    name = host.lower().rstrip(".")
    if not HOST_NAME.match(name):
        return f"{json.dumps(host)}, which is not a host name"
    labels = name.split(".")
    if NUMERIC_LABEL.match(labels[-1]):  # an IPv4 address in one of the forms inet_aton reads, or none at all
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(name))
        except (OSError, ValueError):
            return f"{json.dumps(host)}, which is not an address"
        if address.is_global:
            return None
        shown = "" if str(address) == name else f"which is {address}, "
        return f"{json.dumps(host)}, {shown}{_address_kind(address)} address"
    if labels[-1] in LOCAL_SUFFIXES:
        return f"{json.dumps(host)}, which names this host or its local network"
    if len(labels) == 1:
        return (f"{json.dumps(host)}, a name without a dot (the resolver's search domains, /etc/hosts, this host's "
                "own name or an ssh alias decide where it goes)")
    return None


def _address_kind(address) -> str:
    for kind in ("loopback", "unspecified", "link_local", "private", "multicast", "reserved"):
        if getattr(address, f"is_{kind}", False):
            kind = kind.replace("_", "-")
            return ("an " if kind[0] in "aeiou" else "a ") + kind
    return "a non-public"


def url_problem(url) -> str | None:
    """Why ``url`` (a flake input's, or one pinned in flake.lock) is not a remote input, or None."""
    from urllib.parse import parse_qsl

    if not isinstance(url, str):
        return "is not a string"
    forge = FORGE_URL.match(url)
    if forge:
        if forge.group(2).startswith("/"):
            return "is not a remote input"
        for key, value in parse_qsl(forge.group(3) or "", keep_blank_values=True):
            if key == "host":
                problem = host_problem(value)
                if problem:
                    return f"has host {problem}"
            elif key in GIT_FETCHES_MORE:
                return f"asks for {key} (fetched from wherever the remote repo says, outside the diff)"
        return None
    net = NET_URL.match(url)
    if not net:
        return "is not a remote input"
    authority = AUTHORITY.match(net.group(1))
    if not authority:
        return f"has an authority {json.dumps(net.group(1))} that is not [user@]host[:port]"
    problem = host_problem(authority.group(1))
    if problem:
        return f"has host {problem}"
    query = url.partition("#")[0].partition("?")[2]
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in GIT_FETCHES_MORE and value not in ("0", "false", ""):
            return f"asks for {key} (fetched from wherever the remote repo says, outside the diff)"
    return None


def _ref_problems(where: str, ref: dict) -> list[str]:
    """What is wrong with the attributes of a flake reference (an input of flake.nix, or a node of flake.lock) Nix
    would fetch: its url, a forge's `host`, git's submodules. Checked whatever its type, since Nix reads them by
    type and a type this check does not take is refused anyway."""
    problems = []
    if "url" in ref:
        problem = url_problem(ref["url"])
        if problem:
            problems.append(f"{where}.url = {json.dumps(ref['url'])} {problem}")
    if "host" in ref:
        host = ref["host"]
        problem = host_problem(host) if isinstance(host, str) else f"{json.dumps(host)}, not a string"
        if problem:
            problems.append(f"{where}.host is {problem}")
    for key in GIT_FETCHES_MORE:
        if ref.get(key) not in (None, False, 0, "0", "false"):
            problems.append(f"{where}.{key} is set (git fetches from wherever the remote repo says, outside the diff)")
    return problems


def _check_input(where: str, spec, problems: list[str], nested: bool = False) -> None:
    """One input of flake.nix; ``nested``: an override of an input's own input (``inputs.a.inputs.b``), which may
    name no url (it then changes only how that input's pinned dependency is fetched)."""
    if not isinstance(spec, dict):
        problems.append(f"{where} is not an attribute set")
        return
    problems.extend(_ref_problems(where, spec))
    url, kind = spec.get("url"), spec.get("type")
    if kind is not None and kind not in REMOTE_TYPES:
        if kind not in URL_TYPES:
            problems.append(f"{where} has type {json.dumps(kind)}, which is not a remote input")
        elif url is None:
            problems.append(f"{where} has type {json.dumps(kind)} and no url")
    elif url is None and kind is None and "follows" not in spec and not nested:
        # no url and no type: an indirect input, looked up in the host's flake registry
        problems.append(f"{where} names no url (an indirect input, looked up in the host's flake registry)")
    subs = spec.get("inputs")
    for sub, sub_spec in (subs.items() if isinstance(subs, dict) else ()):
        _check_input(f"{where}.inputs.{sub}", sub_spec, problems, nested=True)


def _check_lock(data: bytes, problems: list[str]) -> None:
    try:
        lock = json.loads(data)
        nodes = lock["nodes"]
        root = lock.get("root", "root")
        assert isinstance(nodes, dict)
    except Exception:
        problems.append("flake.lock is not a flake lock file (JSON with nodes)")
        return
    for key, node in nodes.items():
        if key == root:
            continue
        for part in ("locked", "original"):
            ref = node.get(part) if isinstance(node, dict) else None
            if ref is None:
                continue
            if not isinstance(ref, dict):
                problems.append(f"flake.lock: nodes.{key}.{part} is not an attribute set")
                continue
            kind, url = ref.get("type"), ref.get("url")
            if kind in REMOTE_TYPES or (kind in URL_TYPES and url is not None):
                problems.extend(_ref_problems(f"flake.lock: nodes.{key}.{part}", ref))
                continue
            problems.append(f"flake.lock: nodes.{key}.{part} pins a {json.dumps(kind)} input"
                            + (f" at {json.dumps(url)}" if url is not None else "")
                            + (f" at {json.dumps(ref.get('path'))}" if ref.get("path") is not None else "")
                            + " (only remote inputs are taken)")


def check_flake_inputs(repo_dir: Path, rev: str = "main") -> None:
    """Refuse (PolicyError, naming each) the inputs of the config repo's flake at ``rev`` that Nix would read from
    this host when it locks the meta flake (see above)."""
    tree = _commit_tree(repo_dir, rev)
    problems: list[str] = []
    try:
        lock = tree / "flake.lock"
    except KeyError:
        lock = None
    if lock is not None and lock.type == "blob":
        _check_lock(lock.data_stream.read(), problems)
    try:
        flake = tree / "flake.nix"
    except KeyError:
        flake = None
    if flake is not None and flake.type == "blob" and flake.mode != 0o120000:
        inputs = _eval_inputs(tree)
        if not isinstance(inputs, dict):
            problems.append("flake.nix: inputs is not an attribute set")
        else:
            for name, spec in inputs.items():
                if name == "self":
                    continue
                _check_input(f"flake.nix: inputs.{name}", spec, problems)
                if isinstance(spec, dict) and "follows" not in spec and spec.get("flake", True) is not False:
                    # Nix locks a flake input's own inputs too, as its repository's flake.nix and flake.lock say
                    problems.append(f"flake.nix: inputs.{name} is a flake (flake = true, the default), whose own "
                                    "inputs Nix locks too, as that repository names them, outside the diff; give "
                                    "it flake = false")
    if problems:
        raise PolicyError("the config's flake takes inputs Nix would read from this host (as root, when it locks "
                          "them, outside what the diff shows); only remote ones are taken (github:, gitlab:, "
                          "sourcehut:, git+https://, git+ssh://, https:// -- on a public host, named with a dot) or "
                          "follows: " + "; ".join(problems))


def _eval_inputs(tree):
    nix = shutil.which("nix-instantiate")
    if nix is None:
        raise PolicyError("checking the inputs of a config repo's flake.nix needs nix-instantiate")
    # no link is made in the copy: restricted evaluation reads the proposal's own files only
    files = [(item.path, item.data_stream.read()) for item in tree.traverse()
             if item.type == "blob" and item.mode != 0o120000]
    stdout = _restricted_eval(nix, files, INPUTS_EXPR, "flake.nix", "flake.nix's inputs",
                              "flake.nix's inputs do not evaluate (Nix takes only constant inputs)")
    try:
        return json.loads(stdout)
    except ValueError:
        raise PolicyError("flake.nix's inputs evaluated to something that is not data") from None


# --- nixos-container: the real module system ---------------------------------------------------------------------

def read_deployed(meta_dir: Path, name: str, repo_dir: Path, cwd: Path, timeout: float = 600) -> dict:
    """The policy of agent ``name`` from the meta flake's configuration (already locked to the deployed commit):
    the module system's own ``config.hyperhive.policy``."""
    check_tree(repo_dir)
    nix = shutil.which("nix")
    if nix is None:
        raise PolicyError("`nix` is not installed (needed by the nixos-container backend)")
    attr = f'{meta_dir}#nixosConfigurations."{name}".config.hyperhive.policy'
    cmd = [nix, "--extra-experimental-features", "nix-command flakes", "eval", "--json", "--no-write-lock-file", attr]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                cwd=str(cwd))
    except subprocess.TimeoutExpired:
        raise PolicyError(f"evaluating {name}'s configuration took longer than {timeout:g} seconds") from None
    if result.returncode != 0:
        raise PolicyError(f"{name}'s configuration does not evaluate:\n"
                          + _sanitize(result.stderr, meta_dir, repo_dir))
    try:
        policy = json.loads(result.stdout)
    except ValueError:
        raise PolicyError(f"{name}'s hyperhive.policy is not JSON") from None
    if not isinstance(policy, dict):
        raise PolicyError(f"{name}'s hyperhive.policy is not an attribute set")
    return _validate({k: policy.get(k) for k in POLICY_KEYS})


def read_policy(hive, name: str) -> dict:
    """The policy to enforce for spawned agent ``name``, from the configuration being deployed, by the running
    backend's rule. Raises ``BuildError`` naming the problem (the deploy fails closed)."""
    from . import repos
    from .backends import BuildError

    backend = hive.extensions.get("backend")
    repo_dir = repos.applied_path(hive, name)
    try:
        if backend is not None and backend.name == "nixos-container":
            return read_deployed(repos.meta_path(hive), name, repo_dir, cwd=backend.build_dir())
        return read_subset(repo_dir)
    except PolicyError as e:
        raise BuildError(str(e)) from None
