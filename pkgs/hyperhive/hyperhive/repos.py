"""The config repos (GitPython): where they live, seeding them, the meta flake, and the read-only repo browser.

Under ``stateDir``: ``agents/<n>/config`` (the proposed repo the manager commits to, with a remote ``applied``),
``agents/<n>/state`` (the agent's ``/state``; the manager's is ``manager/state``), ``applied/<n>`` (what was
approved, branch ``main``, with the tags ``approved/ building/ deployed/ failed/``), ``quarantine/<n>.git``
(proposals copied out of the proposed repo, tagged ``proposal/`` and ``denied/``, mounted in no container),
``meta/`` (a flake with one input ``agent-<n>`` per agent and one ``nixosConfigurations.<n>`` each) and ``.work/``
(the service's scratch space).

Every git command the service runs carries its own identity and config (no attributes, no hooks, fsck on fetch),
so nothing depends on a global git config. git never runs on a proposed repo: it is the manager's, and so are its
``.git/config``, hooks, attributes and any link inside it; what a proposal needs is copied out of it first
(``import_proposed``), and what the service writes under ``agents/`` goes through ``nofollow``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import posixpath
import re
import shutil
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import git

from . import nofollow, review
from . import store as db
from .config import check_name
from .errors import HiveError, bad_request, conflict, not_found

log = logging.getLogger(__name__)

IDENTITY_NAME = "hyperhive"
IDENTITY_EMAIL = "hyperhive@localhost"
GIT_ENV = {
    "GIT_AUTHOR_NAME": IDENTITY_NAME, "GIT_AUTHOR_EMAIL": IDENTITY_EMAIL,
    "GIT_COMMITTER_NAME": IDENTITY_NAME, "GIT_COMMITTER_EMAIL": IDENTITY_EMAIL,
    # Command-line config (protected): repos written by an agent's uid are still ours to read and fetch from.
    # The manager writes the proposed repos' .git/config too, so nothing it could set there may run a command
    # here: command-line config wins over the repo's (and diffs are shown with --no-textconv --no-ext-diff).
    # Attributes never change what the operator sees or what is built: none from the system, the user or the
    # repos themselves (attr.tree names no tree, so newer git reads an empty one; diffs also pass --text
    # --no-textconv). Replace refs never substitute objects; fetched objects are checked; no hook runs.
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_CONFIG_COUNT": "12",
    "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*",
    "GIT_CONFIG_KEY_1": "tag.gpgSign", "GIT_CONFIG_VALUE_1": "false",
    "GIT_CONFIG_KEY_2": "commit.gpgSign", "GIT_CONFIG_VALUE_2": "false",
    "GIT_CONFIG_KEY_3": "log.showSignature", "GIT_CONFIG_VALUE_3": "false",
    "GIT_CONFIG_KEY_4": "core.fsmonitor", "GIT_CONFIG_VALUE_4": "false",
    "GIT_CONFIG_KEY_5": "core.attributesFile", "GIT_CONFIG_VALUE_5": "/dev/null",
    "GIT_CONFIG_KEY_6": "attr.tree", "GIT_CONFIG_VALUE_6": "refs/hyperhive/no-attributes",
    "GIT_CONFIG_KEY_7": "core.hooksPath", "GIT_CONFIG_VALUE_7": "/dev/null",
    "GIT_CONFIG_KEY_8": "fetch.fsckObjects", "GIT_CONFIG_VALUE_8": "true",
    "GIT_CONFIG_KEY_9": "gc.auto", "GIT_CONFIG_VALUE_9": "0",
    "GIT_CONFIG_KEY_10": "core.symlinks", "GIT_CONFIG_VALUE_10": "true",
    # A tree entry's mode is one of git's own (100644, 100755, 120000, 040000, 160000) or the fetch is refused:
    # git reads 120755 as a symlink (the review says "symbolic link to ...") where libgit2, which Nix's git
    # fetcher uses, reads it as an executable file (any x bit wins), so the build would differ from the review.
    "GIT_CONFIG_KEY_11": "fetch.fsck.badFilemode", "GIT_CONFIG_VALUE_11": "error",
    "GIT_TERMINAL_PROMPT": "0",
}
TAG_STATES = ("proposal", "approved", "building", "deployed", "failed", "denied")
TERMINAL_TAG_STATES = ("deployed", "failed", "denied")
META_LOCK = "flake.lock"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's well-known empty tree
DEFAULT_HYPERHIVE_FLAKE = "github:hyperhive/hyperhive"

# Git operations on one repo must not interleave (index.lock); the meta repo is shared by every deploy.
_repo_locks: dict[str, threading.RLock] = {}
_repo_locks_guard = threading.Lock()


def repo_lock(path: Path) -> threading.RLock:
    with _repo_locks_guard:
        return _repo_locks.setdefault(str(Path(path).resolve()), threading.RLock())


# --- where things are --------------------------------------------------------------------------------------

def config_path(hive, name: str) -> Path:
    return hive.config.state_dir / "agents" / name / "config"


def state_path(hive, name: str) -> Path:
    if name == hive.config.manager:
        return hive.config.state_dir / "manager" / "state"
    return hive.config.state_dir / "agents" / name / "state"


def applied_path(hive, name: str) -> Path:
    return hive.config.state_dir / "applied" / name


def meta_path(hive) -> Path:
    return hive.config.state_dir / "meta"


def agent_json_path(hive, name: str) -> Path:
    return hive.config.state_dir / "agents" / name / "agent.json"


def agent_template_dir() -> Path | None:
    """The template a new agent's config repo starts from: $HYPERHIVE_AGENT_TEMPLATE, package data, or the
    checkout's ``templates/agent``."""
    env = os.environ.get("HYPERHIVE_AGENT_TEMPLATE")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates" / "agent", here.parents[2] / "templates" / "agent"):
        if (candidate / "agent.nix").is_file():
            return candidate
    return None


# Used only when no template can be found at all (a broken install), so that a spawn still gets a repo.
FALLBACK_TEMPLATE = {
    "flake.nix": '{\n  description = "A hyperhive agent\'s configuration";\n  outputs = { self }: {\n'
                 '    nixosModules.default = { imports = [ ./agent.nix ]; };\n  };\n}\n',
    "agent.nix": '{ pkgs, ... }:\n{\n  hyperhive = {\n    prompt = "You are a new agent of this hive.";\n'
                 '    allowedRecipients = [ "manager" "operator" ];\n  };\n}\n',
}


# --- git plumbing ------------------------------------------------------------------------------------------

def open_repo(path: Path) -> git.Repo:
    try:
        repo = git.Repo(str(path))
    except (git.NoSuchPathError, git.InvalidGitRepositoryError):
        raise not_found(f"no git repository at {path}") from None
    repo.git.update_environment(**GIT_ENV)
    return repo


def init_repo(path: Path) -> git.Repo:
    path.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(str(path), initial_branch="main")
    repo.git.update_environment(**GIT_ENV)
    return repo


def rev_sha(repo: git.Repo, rev: str) -> str | None:
    """The commit ``rev`` names in ``repo``, or None."""
    try:
        return repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    except git.GitCommandError:
        return None


def main_sha(repo: git.Repo) -> str | None:
    return rev_sha(repo, "refs/heads/main")


def tag(repo: git.Repo, name: str, sha: str, message: str, *, force: bool = False) -> None:
    """An annotated tag: it carries its date (for retention) and a message (the note, the build error)."""
    args = ["-a", name, sha, "-m", message or name]
    if force:
        args.insert(0, "-f")
    repo.git.tag(*args)


def set_main(repo: git.Repo, sha: str) -> None:
    """Point ``main`` (checked out) at ``sha`` and make the work tree match it."""
    repo.git.checkout("-q", "-B", "main", sha)
    repo.git.reset("-q", "--hard", sha)


def unset_main(repo: git.Repo) -> None:
    """No ``main`` any more (a first deploy that failed): an empty work tree on an unborn ``main``."""
    if main_sha(repo) is None:
        return
    repo.git.update_ref("-d", "refs/heads/main")
    repo.git.read_tree("--empty")
    repo.git.clean("-fdxq")


def fetch_commit(target: git.Repo, source: Path, sha: str) -> None:
    """Copy ``sha`` (and what it needs) from ``source``, a repo of the service's own (never a proposed repo)."""
    target.git.fetch("-q", "--no-tags", str(source), sha)


def has_object(repo: git.Repo, sha: str | None) -> bool:
    if not sha:
        return False
    try:
        repo.git.cat_file("-e", f"{sha}^{{commit}}")
        return True
    except git.GitCommandError:
        return False


def _work_dir(hive) -> Path:
    """A private directory of the service (0700, outside what any container mounts) for building repos before
    they are moved into place and for copies of proposed repos."""
    path = hive.config.state_dir / ".work"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise HiveError("internal", f"{path} is not a directory")
    os.chmod(path, 0o700)
    return path


@contextmanager
def _scratch(hive, prefix: str):
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=_work_dir(hive)))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def clean_work_dir(hive) -> None:
    """What a crash left in the work directory (half-built repos, copies) goes."""
    path = hive.config.state_dir / ".work"
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() and not child.is_symlink() \
                else child.unlink(missing_ok=True)


# --- the quarantine: proposals before the operator approves them -------------------------------------------
#
# A proposal's commit is copied out of the manager's proposed repo into ``quarantine/<n>.git`` (a bare repo of the
# service's, mounted in no container), tagged there ``proposal/<id>`` (and ``denied/<id>`` when denied); it reaches
# ``applied/<n>`` only when the operator approves it. The copy never reads the proposed repo through git: the
# files of its ``.git`` that hold history (HEAD, refs, packed-refs, objects) are read one by one with O_NOFOLLOW
# into a private directory, refusing any link, FIFO or device on the way and any alternates, and git fetches from
# that copy (fsck on), with none of the manager's config, hooks or attributes.

PROPOSED_COPY_LIMIT = 256 * 1024 * 1024
# git's own repos stay far below these: gc --auto packs loose objects past 6,700 (gc.auto), and a ref is a few
# names deep (refs/heads/a/b).
PROPOSED_COPY_ENTRIES = 20_000
PROPOSED_COPY_DEPTH = 32
_HEX = re.compile(r"^[0-9a-f]+$")


def quarantine_path(hive, name: str) -> Path:
    return hive.config.state_dir / "quarantine" / f"{name}.git"


def ensure_quarantine(hive, name: str) -> git.Repo:
    path = quarantine_path(hive, name)
    with repo_lock(path):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        if (path / "HEAD").exists():
            return open_repo(path)
        repo = git.Repo.init(str(path), bare=True, initial_branch="main")
        repo.git.update_environment(**GIT_ENV)
        return repo


def _proposed_git_rel(name: str) -> str:
    return f"agents/{name}/config/.git"


def _open_proposed_git(hive, name: str) -> int:
    """A descriptor of ``agents/<n>/config/.git``: a real directory, reached through no link."""
    rel = _proposed_git_rel(name)
    base = hive.config.state_dir
    try:
        with nofollow.directory(base, f"agents/{name}/config") as cfg:
            st = nofollow.lstat(cfg, ".git")
            if st is None:
                raise not_found(f"{name} has no proposed config repo (agents/{name}/config)")
            if stat.S_ISLNK(st.st_mode):
                raise HiveError("forbidden", f"{base / rel} is a symbolic link; refusing to follow it "
                                             "(keep the proposed repo's .git a plain directory)")
            if not stat.S_ISDIR(st.st_mode):
                raise HiveError("forbidden", f"{base / rel} is not a directory (a gitdir: file would point "
                                             "elsewhere); refusing to read it")
        return nofollow.open_dir(base, rel)
    except FileNotFoundError:
        raise not_found(f"{name} has no proposed config repo (agents/{name}/config)") from None


class _Copy:
    """The walk counts entries and depth, not only bytes: 200,000 empty files under .git/refs held a proposal for
    33 s (and every agent page for minutes), and 1,200 nested directories overflowed a recursive walk."""

    def __init__(self, root: Path | None, where: Path, limit: int):
        self.root, self.where, self.limit, self.total, self.entries = root, where, limit, 0, 0
        self.seen = hashlib.sha256()  # what was found, as lstat tells it (root None: nothing is read or copied)

    def file(self, dir_fd: int, name: str, rel: str, st: os.stat_result) -> None:
        # the inode's ctime changes with every write and every utime, and no one can set it back
        self.seen.update(f"{rel}\0{st.st_ino} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns}\0".encode(
            "utf-8", "surrogateescape"))
        if self.root is None:
            return
        data = nofollow.read_regular(dir_fd, name, self.where / rel, self.limit)
        self.total += len(data)
        if self.total > self.limit:
            raise HiveError("too_large", f"the proposed repo's history is larger than {self.limit >> 20} MiB; "
                                         "refusing to copy it")
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)

    def tree(self, dir_fd: int, rel: str, accept=None) -> None:
        """Every regular file under ``dir_fd`` (``accept(rel)`` picks), refusing links and special files, more than
        PROPOSED_COPY_ENTRIES entries in all and directories nested deeper than PROPOSED_COPY_DEPTH."""
        if rel.count("/") >= PROPOSED_COPY_DEPTH:
            raise HiveError("too_large", f"{self.where / rel} is nested more than {PROPOSED_COPY_DEPTH} "
                                         "directories deep; refusing to copy it")
        entries = []
        with os.scandir(dir_fd) as it:
            for e in it:
                self.entries += 1
                if self.entries > PROPOSED_COPY_ENTRIES:
                    raise HiveError("too_large", f"{self.where} holds more than {PROPOSED_COPY_ENTRIES} files and "
                                                 f"directories (under {rel}); refusing to copy it (git gc packs "
                                                 "loose objects; remove what is not history)")
                entries.append(e.name)
        for entry in sorted(entries):
            sub = f"{rel}/{entry}"
            st = nofollow.lstat(dir_fd, entry)
            if st is None:
                continue
            if stat.S_ISLNK(st.st_mode):
                raise nofollow.refused(self.where / sub, "is a symbolic link")
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(entry, nofollow.DIR_FLAGS, dir_fd=dir_fd)
                try:
                    self.tree(fd, sub, accept)
                finally:
                    os.close(fd)
            elif stat.S_ISREG(st.st_mode):
                if accept is None or accept(sub):
                    self.file(dir_fd, entry, sub, st)
            else:
                raise nofollow.refused(self.where / sub, "is not a regular file or directory")


def _object_file(rel: str) -> bool:
    parts = rel.split("/")
    if len(parts) == 3 and len(parts[1]) == 2 and _HEX.match(parts[1]) and _HEX.match(parts[2]) \
            and len(parts[2]) in (38, 62):
        return True
    return (len(parts) == 3 and parts[1] == "pack" and parts[2].startswith("pack-")
            and parts[2].endswith((".pack", ".idx")))


def _copy_proposed(hive, name: str, dest: Path | None) -> str:
    """A bare repo at ``dest`` holding the proposed repo's HEAD, refs and objects, copied without following any
    link (see above); returns a digest of what was found (name, inode, size, times of each file). With ``dest``
    None nothing is read or copied: only the digest is made."""
    where = hive.config.state_dir / _proposed_git_rel(name)
    gfd = _open_proposed_git(hive, name)
    try:
        for redirect in ("commondir", "objects/info/alternates", "objects/info/http-alternates"):
            head, _, leaf = redirect.rpartition("/")
            try:
                with (nofollow.directory(hive.config.state_dir, f"{_proposed_git_rel(name)}/{head}")
                      if head else _same(gfd)) as fd:
                    present = nofollow.lstat(fd, leaf) is not None
            except (FileNotFoundError, HiveError):
                present = False
            if present:
                raise HiveError("forbidden", f"{where / redirect} borrows objects from another repository; "
                                             "remove it to propose from this repo")
        copy = _Copy(dest, where, PROPOSED_COPY_LIMIT)
        if dest is not None:
            dest.mkdir(parents=True)
        for top in ("HEAD", "packed-refs"):
            st = nofollow.lstat(gfd, top)
            if st is not None:
                copy.file(gfd, top, top, st)
        for top, accept in (("refs", None), ("objects", _object_file)):
            st = nofollow.lstat(gfd, top)
            if st is None:
                continue
            if stat.S_ISLNK(st.st_mode):
                raise nofollow.refused(where / top, "is a symbolic link")
            fd = os.open(top, nofollow.DIR_FLAGS, dir_fd=gfd)
            try:
                copy.tree(fd, top, accept)
            finally:
                os.close(fd)
    except FileNotFoundError as e:
        raise conflict(f"the proposed repo of {name} changed while it was copied ({e.filename or e}); "
                       "try again") from None
    except OSError as e:  # a directory swapped for a link (ELOOP) or a file (ENOTDIR) while it was walked
        raise HiveError("forbidden", f"{where} changed under the copy ({e.strerror}: {e.filename or ''}); "
                                     "refusing to read it") from None
    finally:
        os.close(gfd)
    if dest is None:
        return copy.seen.hexdigest()
    (dest / "refs" / "heads").mkdir(parents=True, exist_ok=True)
    (dest / "refs" / "tags").mkdir(parents=True, exist_ok=True)
    (dest / "objects" / "info").mkdir(parents=True, exist_ok=True)
    (dest / "objects" / "pack").mkdir(parents=True, exist_ok=True)
    if not (dest / "HEAD").is_file() or not (dest / "HEAD").read_bytes().startswith(b"ref: refs/"):
        (dest / "HEAD").write_text("ref: refs/heads/main\n")
    (dest / "config").write_text("[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
    return copy.seen.hexdigest()


@contextmanager
def _same(fd: int):
    yield fd


def import_proposed(hive, name: str, ref: str | None = None) -> str | None:
    """Bring the proposed repo's branches (as ``refs/heads/*``) and, with ``ref``, the commit it names into the
    quarantine repo; returns that commit's sha (None without ``ref``). Raises not_found when ``ref`` names no
    commit there."""
    quarantine = ensure_quarantine(hive, name)
    # A page view (no ``ref``) copies nothing when no file of the proposed .git changed since the last copy
    # (200,000 files took minutes on every view of the agent page): a walk of lstat alone tells.
    seen = hive.extensions.setdefault("proposed_seen", {})
    here = os.stat(quarantine_path(hive, name)).st_ino  # (a quarantine made again holds nothing yet)
    if ref is None and name in seen and seen[name] == (here, _copy_proposed(hive, name, None)):
        return None
    seen.pop(name, None)
    with _scratch(hive, f"copy-{name}-") as scratch:
        copy_dir = scratch / "proposed.git"
        digest = _copy_proposed(hive, name, copy_dir)
        copy = git.Repo(str(copy_dir))
        copy.git.update_environment(**GIT_ENV)
        sha = None
        if ref is not None:
            sha = rev_sha(copy, ref)
            if sha is None:
                raise not_found(f'commit "{ref}" is not in the proposed repo of {name} (agents/{name}/config): '
                                "commit there first")
            copy.git.update_ref("refs/hyperhive/want", sha)
        with repo_lock(quarantine_path(hive, name)):
            try:
                # the manager's branches, except any named like the service's tags (proposal/3 ...), which the
                # browser would otherwise find under that name
                quarantine.git.fetch("-q", "--no-tags", "--prune", "--no-write-fetch-head", str(copy_dir),
                                     "+refs/heads/*:refs/heads/*", *(f"^refs/heads/{s}/*" for s in TAG_STATES),
                                     *(["+refs/hyperhive/want:refs/hyperhive/want"] if sha else []))
            except git.GitCommandError as e:
                detail = (e.stderr or "").strip().replace(str(copy_dir), f"agents/{name}/config")[-2000:]
                if "badFilemode" in detail:
                    detail = ("a tree holds an entry whose mode is not one of 100644, 100755, 120000 (symlink), "
                              "040000 (directory): git and Nix's fetcher read such a mode differently, so the "
                              f"review could not show what is built; commit the files again with git add ({detail})")
                raise bad_request(f"the proposed repo of {name} cannot be read: {detail}") from None
    seen[name] = (here, digest)
    return sha


def promote(hive, name: str, sha: str) -> git.Repo:
    """Bring an approved commit from the quarantine into ``applied/<n>`` (nothing else comes with it)."""
    applied = ensure_applied_repo(hive, name)
    with repo_lock(applied_path(hive, name)):
        if not has_object(applied, sha):
            fetch_commit(applied, quarantine_path(hive, name), sha)
    return applied


def sync_quarantine_from_applied(hive, name: str) -> git.Repo:
    """The quarantine also holds what is applied (diffs are computed there, never in a repo with a work tree)."""
    quarantine = ensure_quarantine(hive, name)
    path = applied_path(hive, name)
    if (path / ".git").is_dir():
        with repo_lock(quarantine_path(hive, name)):
            quarantine.git.fetch("-q", "--no-tags", "--no-write-fetch-head", str(path),
                                 "+refs/heads/*:refs/applied/heads/*", "+refs/tags/*:refs/applied/tags/*")
    return quarantine


def _read_ref_text(hive, name: str, refname: str) -> str | None:
    """The sha ``refname`` holds in the proposed repo, read as text without following any link (no git runs)."""
    try:
        gfd = _open_proposed_git(hive, name)
    except (HiveError, OSError):
        return None
    where = hive.config.state_dir / _proposed_git_rel(name)
    try:
        head, _, leaf = refname.rpartition("/")
        try:
            fd = _open_sub(gfd, head)
            try:
                text = nofollow.read_regular(fd, leaf, where / refname, 4096).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
            if text.startswith("ref: "):
                return None if refname != "HEAD" else _read_ref_text(hive, name, text[5:].strip())
            return text if _HEX.match(text) and len(text) in (40, 64) else None
        except (OSError, HiveError):
            pass
        try:
            packed = nofollow.read_regular(gfd, "packed-refs", where / "packed-refs", 16 << 20)
        except (OSError, HiveError):
            return None
        for line in packed.decode("utf-8", "replace").splitlines():
            sha, _, ref = line.partition(" ")
            if ref.strip() == refname and _HEX.match(sha):
                return sha
        return None
    finally:
        os.close(gfd)


def _open_sub(dir_fd: int, rel: str) -> int:
    """``rel`` under ``dir_fd``, each component opened without following a link."""
    fd = os.dup(dir_fd)
    for part in [p for p in rel.split("/") if p]:
        if part in (".", ".."):
            os.close(fd)
            raise FileNotFoundError(rel)
        try:
            nxt = os.open(part, nofollow.DIR_FLAGS, dir_fd=fd)
        finally:
            os.close(fd)
        fd = nxt
    return fd


def _has_commit_refs(hive, name: str) -> bool:
    """Whether the proposed repo names any commit at all (HEAD, a branch, or packed refs)."""
    if _read_ref_text(hive, name, "HEAD") is not None:
        return True
    try:
        gfd = _open_proposed_git(hive, name)
    except (HiveError, OSError):
        return False
    try:
        try:
            fd = _open_sub(gfd, "refs/heads")
            try:
                with os.scandir(fd) as it:
                    if any(True for _ in it):
                        return True
            finally:
                os.close(fd)
        except OSError:
            pass
        st = nofollow.lstat(gfd, "packed-refs")
        return st is not None and st.st_size > 0
    finally:
        os.close(gfd)


def proposed_main(hive, name: str) -> str | None:
    """What the proposed repo's ``main`` points at (for the stale marker and the drafts list)."""
    return _read_ref_text(hive, name, "refs/heads/main")


# --- seeding -----------------------------------------------------------------------------------------------
#
# The service builds every repo it seeds in its private work directory and moves it into place: nothing is
# written through a link the manager planted under agents/. ``applied/<n>`` is seeded first (its ``deployed/0`` is
# the template, or the declared policy, never what someone left in agents/), then a missing proposed repo is made
# from it. A crash at any point leaves a state the next start completes: half-built repos sit only in the work
# directory, and an ``applied/<n>`` without ``main`` is seeded again.

def _template_files(hive, name: str) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    template = agent_template_dir()
    if template is not None and template.is_dir():
        for p in sorted(template.rglob("*")):
            rel = p.relative_to(template)
            if ".git" in rel.parts or p.is_symlink() or not p.is_file():
                continue
            files[str(rel)] = p.read_bytes()
    else:
        log.warning("no agent template found (set HYPERHIVE_AGENT_TEMPLATE); %s starts from a minimal one", name)
        files = {k: v.encode() for k, v in FALLBACK_TEMPLATE.items()}
    if name == hive.config.manager or name in hive.config.agents:
        # A declared agent runs its config's policy (the first deploy changes nothing), and later changes of the
        # config reach it: its agent.nix sets no policy (see render_agent_nix).
        files["agent.nix"] = render_agent_nix(name).encode()
    return files


def _build_seed(hive, name: str, dest: Path, source: str | None) -> git.Repo:
    """A fresh repo at ``dest`` holding ``source`` (``applied/<n>`` main) when given, else the template's first
    commit."""
    repo = init_repo(dest)
    applied = applied_path(hive, name)
    if source:
        fetch_commit(repo, applied, source)
        set_main(repo, source)
    else:
        for rel, data in _template_files(hive, name).items():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o644)
        repo.git.add("-A")
        declared = name == hive.config.manager or name in hive.config.agents
        origin = "hive.json and templates/agent" if declared else "templates/agent"
        repo.git.commit("-q", "-m", f"{name}: initial config from {origin}")
    repo.create_remote("applied", str(applied))
    return repo


def seed_config_repo(hive, name: str, prebuilt: Path | None = None) -> bool:
    """Create ``agents/<n>/config`` (built privately, then renamed into place) unless a usable one is there:
    ``prebuilt`` (the seed just given to ``applied/<n>``) when given, else a repo at ``applied/<n>`` main, else
    the template's first commit.

    A link or a file planted at ``config`` is refused; a repo a crash left without any commit is moved aside
    (``config.incomplete-<time>``) and made again."""
    path = config_path(hive, name)
    with repo_lock(path):
        with nofollow.directory(hive.config.state_dir, f"agents/{name}", create=True) as agent_fd:
            st = nofollow.lstat(agent_fd, "config")
            if st is not None:
                if stat.S_ISLNK(st.st_mode):
                    raise nofollow.refused(path, "is a symbolic link")
                if not stat.S_ISDIR(st.st_mode):
                    raise nofollow.refused(path, "is not a directory")
                if _has_commit_refs(hive, name):
                    return False
                with nofollow.directory(hive.config.state_dir, f"agents/{name}/config") as cfg:
                    if nofollow.lstat(cfg, ".git") is None and not list(os.scandir(cfg)):
                        os.rmdir(path)  # an empty directory: made here below
                        st = None
                if st is not None:
                    aside = f"config.incomplete-{int(time.time())}"
                    log.warning("%s holds no commit (an interrupted seed?): moved to %s and made again", path, aside)
                    nofollow.move_aside(agent_fd, "config", aside)
            if prebuilt is not None:
                nofollow.place(prebuilt, agent_fd, "config", path)
                return True
            applied = applied_path(hive, name)
            source = main_sha(open_repo(applied)) if (applied / ".git").is_dir() else None
            with _scratch(hive, f"seed-{name}-") as scratch:
                _build_seed(hive, name, scratch / "config", source)
                nofollow.place(scratch / "config", agent_fd, "config", path)
        return True


def refuse_links(hive, path: Path, what: str) -> None:
    """Refuse ``path`` when it, or a directory between it and stateDir, is a symbolic link.

    The manager's container writes ``<stateDir>/agents``: a link planted there must not make the service mount,
    read or fetch anything outside it.
    """
    base = hive.config.state_dir
    p = Path(path)
    while p != base and base in p.parents:
        if p.is_symlink():
            raise HiveError("forbidden", f"{what}: {p} is a symbolic link; refusing to follow it "
                                         "(replace it with a plain directory)")
        p = p.parent


def ensure_state_dir(hive, name: str) -> Path:
    """The agent's state directory, made (no link followed) when missing."""
    path = state_path(hive, name)
    rel = path.relative_to(hive.config.state_dir)
    try:
        with nofollow.directory(hive.config.state_dir, rel, create=True):
            pass
    except HiveError as e:
        raise HiveError("forbidden", f"the state directory of {name}: {e.message}") from None
    return path


def ensure_applied_repo(hive, name: str) -> git.Repo:
    path = applied_path(hive, name)
    with repo_lock(path):
        if (path / ".git").exists():
            return open_repo(path)
        return init_repo(path)


def seed_agent(hive, name: str) -> str | None:
    """Give ``name`` every repo it needs; an ``applied/<n>`` without ``main`` gets the seed tagged ``deployed/0``.

    Returns the seed's sha when it was seeded now, None when it already had its repos."""
    seeded = None
    path = applied_path(hive, name)
    fresh = not (path / ".git").exists()
    applied = ensure_applied_repo(hive, name)
    with _scratch(hive, f"seed-{name}-") as scratch:
        prebuilt = None
        with repo_lock(path):
            if fresh or main_sha(applied) is None:
                seed = _build_seed(hive, name, scratch / "config", None)
                sha = seed.git.rev_parse("HEAD")
                fetch_commit(applied, scratch / "config", sha)
                if fresh:  # an empty work tree: checking out is all
                    applied.git.checkout("-q", "-B", "main", sha)
                else:  # what a crash left in it goes
                    set_main(applied, sha)
                    applied.git.clean("-fdxq")
                tag(applied, "deployed/0", sha, f"seed of {name}", force=True)
                prebuilt = scratch / "config"  # the proposed repo starts as this very repo
                seeded = sha
        try:  # what the manager planted under agents/ may refuse these; the deployed seed stands regardless
            seed_config_repo(hive, name, prebuilt)
            ensure_state_dir(hive, name)
        except HiveError as e:
            if seeded is None:
                raise
            log.error("seeding %s: %s", name, e.message)
    return seeded


def render_agent_nix(name: str) -> str:
    """agent.nix of a declared agent: its policy is the hive's config's, so the file sets none of it.

    The meta flake gives the config's policy to the container at lib.mkDefault (allowedRecipients and privateUsers
    forced: the broker enforces those), so a value written here would outlive every later change of the config:
    a seed that copied the config's values literally kept the container on them for good, whatever the host's
    options said after. Only what the manager proposes, and the operator approves, takes their place."""
    return "\n".join([
        f"# {name}'s container. The manager proposes changes to this file; the operator approves them before they",
        "# are built and deployed. Options: hyperhive's modules/agent.nix (`hyperhive.*`) and any NixOS option.",
        f"# {name} is declared in the hive's config, which gives its policy (prompt, bash.allow, model, ...). In a",
        "# NixOS container a value set here takes the config's place, except allowedRecipients and privateUsers,",
        "# which stay the config's (the broker enforces them); the local backend runs the config's policy alone.",
        "{ pkgs, ... }:",
        "{",
        "  hyperhive = { };",
        "}",
        "",
    ])


# --- the meta flake ----------------------------------------------------------------------------------------

def hyperhive_flake_ref() -> str:
    return os.environ.get("HYPERHIVE_FLAKE") or DEFAULT_HYPERHIVE_FLAKE


def host_system() -> str:
    """The Nix system of this host (the containers share its kernel)."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine) + "-linux"


def meta_agents(hive) -> list[tuple[str, str]]:
    """(name, role) of every agent the meta flake describes: the manager, declared and spawned (active)."""
    names = [(hive.config.manager, "manager")]
    names += [(n, "agent") for n in sorted(hive.agent_configs())]
    return names


def _policy_for_meta(hive, name: str, role: str) -> dict:
    """The ``hyperhive.*`` options meta sets for an agent: its name and role, and for declared agents (and the
    manager) the policy of hive.json; spawned agents carry theirs in their own agent.nix."""
    out: dict = {"name": name, "role": role, "managerName": hive.config.manager,
                 "operatorPronouns": hive.config.operator_pronouns,
                 "claudeCommand": None if hive.config.claude_command is None else list(hive.config.claude_command)}
    declared = hive.config.manager_settings if role == "manager" else hive.config.agents.get(name)
    if declared is not None:
        j = declared.to_json()
        if role != "manager":
            out["allowedRecipients"] = j["allowedRecipients"]
            out["privateUsers"] = j["privateUsers"]
        out["bash"] = {"allow": j["bashAllow"]}
        for key in ("model", "prompt", "notesCompactBytes", "turnTimeoutSeconds", "extraMcpServers"):
            out[key] = j[key]
    return out


def meta_flake_text(hive, agents: list[tuple[str, str]]) -> str:
    from . import meta_flake

    return meta_flake.flake_text(hive, agents, hyperhive_flake_ref(), host_system(), meta_flake.settings())


def ensure_meta_repo(hive) -> git.Repo:
    path = meta_path(hive)
    with repo_lock(path):
        if (path / ".git").exists():
            return open_repo(path)
        return init_repo(path)


def sync_meta(hive, message: str = "meta: agents changed") -> bool:
    """Regenerate the meta flake for the current agents; commit only when something changed."""
    repo = ensure_meta_repo(hive)
    path = meta_path(hive)
    with repo_lock(path):
        agents = meta_agents(hive)
        (path / "flake.nix").write_text(meta_flake_text(hive, agents), encoding="utf-8")
        from . import meta_flake

        meta_flake.write_host_files(hive, path, agents, meta_flake.settings())
        policy_dir = path / "policy"
        policy_dir.mkdir(exist_ok=True)
        wanted = {f"{n}.json" for n, _ in agents}
        for f in policy_dir.glob("*.json"):
            if f.name not in wanted:
                f.unlink()
        for name, role in agents:
            (policy_dir / f"{name}.json").write_text(
                json.dumps(_policy_for_meta(hive, name, role), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _prune_lock(path, {f"agent-{n}" for n, _ in agents})
        return commit_meta(repo, message, allow_empty=False)


def commit_meta(repo: git.Repo, message: str, *, allow_empty: bool) -> bool:
    with repo_lock(Path(repo.working_tree_dir)):
        repo.git.add("-A")
        has_head = rev_sha(repo, "HEAD") is not None
        changed = not has_head or bool(repo.git.status("--porcelain"))
        if not changed and not allow_empty:
            return False
        repo.git.commit("-q", "--allow-empty", "-m", message)
        return True


def _read_lock(path: Path) -> dict:
    try:
        return json.loads((path / META_LOCK).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"nodes": {"root": {"inputs": {}}}, "root": "root", "version": 7}


def _write_lock(path: Path, lock: dict) -> None:
    tmp = path / (META_LOCK + ".tmp")
    tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path / META_LOCK)


def _prune_lock(path: Path, inputs: set[str]) -> None:
    if not (path / META_LOCK).exists():
        return
    lock = _read_lock(path)
    nodes = lock.get("nodes", {})
    root = nodes.get(lock.get("root", "root"), {}).get("inputs", {})
    gone = [k for k in root if k.startswith("agent-") and k not in inputs]
    if not gone:
        return
    for k in gone:
        node = root.pop(k)
        if isinstance(node, str):
            nodes.pop(node, None)
    _write_lock(path, lock)


def lock_input_in_python(hive, name: str) -> str:
    """Pin meta's input ``agent-<n>`` to ``applied/<n>`` main, in flake.lock's own format (the local backend
    has no Nix to do it)."""
    path = meta_path(hive)
    applied = open_repo(applied_path(hive, name))
    sha = main_sha(applied)
    if sha is None:
        raise HiveError("internal", f"applied/{name} has no main branch to lock")
    commit = applied.commit(sha)
    url = f"file://{applied_path(hive, name)}"
    with repo_lock(path):
        lock = _read_lock(path)
        nodes = lock.setdefault("nodes", {})
        root = nodes.setdefault(lock.setdefault("root", "root"), {}).setdefault("inputs", {})
        key = f"agent-{name}"
        root[key] = key
        nodes[key] = {
            "locked": {"lastModified": commit.committed_date, "ref": "refs/heads/main", "rev": sha,
                       "revCount": int(applied.git.rev_list("--count", sha)), "type": "git", "url": url},
            "original": {"ref": "main", "type": "git", "url": url},
        }
        _write_lock(path, lock)
    return sha


def locked_rev(hive, name: str) -> str | None:
    lock = _read_lock(meta_path(hive))
    node = lock.get("nodes", {}).get(f"agent-{name}", {})
    return node.get("locked", {}).get("rev")


def restore_meta_lock(hive) -> None:
    """Put flake.lock back as the last meta commit has it (after a failed deploy)."""
    repo = ensure_meta_repo(hive)
    path = meta_path(hive)
    with repo_lock(path):
        try:
            repo.git.cat_file("-e", f"HEAD:{META_LOCK}")
        except git.GitCommandError:
            (path / META_LOCK).unlink(missing_ok=True)
            return
        repo.git.checkout("HEAD", "--", META_LOCK)


# --- the read-only browser ---------------------------------------------------------------------------------

MAX_REV_LEN = 200
REV_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@^~{}:+-]*$")


def _known_agent(hive, agent) -> str:
    if not isinstance(agent, str):
        raise bad_request("agent must be a string")
    if agent != hive.config.manager:
        problem = check_name(agent)
        if problem:
            raise bad_request(problem)
    if agent == hive.config.manager or agent in hive.config.agents:
        return agent
    with hive.store.read() as conn:
        row = conn.execute(db.agents.select().where(db.agents.c.name == agent)).first()
    if row is None:
        raise not_found(f'unknown agent "{agent}"')
    return agent


def _browse_repos(hive, agent: str, rev: str | None = None) -> list[git.Repo]:
    """The applied repo (tags, deployed history) first, then the quarantine (proposals, denied ones, and the
    proposed repo's branches as last copied, for drafts). The proposed repo itself is never read by git: when
    ``rev`` is in neither, its branches are copied again (without following links) first."""
    agent = _known_agent(hive, agent)
    found = []
    if (applied_path(hive, agent) / ".git").is_dir():
        found.append(open_repo(applied_path(hive, agent)))
    quarantine = quarantine_path(hive, agent)
    settled = rev is not None and (re.fullmatch(r"[0-9a-f]{40}", rev) or rev.split("/", 1)[0] in TAG_STATES) \
        and (quarantine / "HEAD").is_file() and rev_sha(open_repo(quarantine), rev)  # a tag or sha: no copy needed
    if not settled and (rev is None or not any(rev_sha(r, rev) for r in found)):
        if config_path(hive, agent).is_dir():
            try:
                import_proposed(hive, agent)
            except HiveError as e:
                log.warning("copying the proposed repo of %s: %s", agent, e.message)
    if (quarantine_path(hive, agent) / "HEAD").is_file():
        found.append(open_repo(quarantine_path(hive, agent)))
    if not found:
        raise not_found(f"{agent} has no config repo yet")
    return found


def _check_rev(rev) -> str:
    if not isinstance(rev, str) or not rev:
        raise bad_request("a revision must be a non-empty string")
    if len(rev) > MAX_REV_LEN or not REV_RE.match(rev) or ".." in rev:
        raise bad_request(f'"{rev[:MAX_REV_LEN]}" is not a revision (a sha, a tag such as deployed/3, or main)')
    return rev


def _resolve(hive, agent: str, rev) -> tuple[git.Repo, str]:
    rev = _check_rev(rev)
    for repo in _browse_repos(hive, agent, rev):
        sha = rev_sha(repo, rev)
        if sha:
            return repo, sha
    raise not_found(f'no revision "{rev}" in the config repo of {agent}')


def _check_path(path) -> str:
    if not isinstance(path, str) or not path.strip("/"):
        raise bad_request("a file path must be a non-empty string")
    if "\0" in path or path.startswith("/") or "\\" in path:
        raise bad_request(f'"{path}" is not a path inside the repo (use a relative path such as agent.nix)')
    parts = path.split("/")
    if any(p in ("..", ".") for p in parts) or any(p == ".git" for p in parts):
        raise bad_request(f'"{path}" is not a path inside the repo ("..", "." and .git are not allowed)')
    return "/".join(p for p in parts if p)


def repo_tags(hive, agent: str) -> dict[str, list[dict]]:
    """The applied repo's tags grouped by state (proposal, approved, building, deployed, failed, denied), newest
    first."""
    agent = _known_agent(hive, agent)
    out: dict[str, list[dict]] = {state: [] for state in TAG_STATES}
    fmt = "%(refname:strip=2)%00%(objectname)%00%(*objectname)%00%(creatordate:unix)%00%(contents)%01"
    raw = ""
    seen: set[str] = set()
    # applied/ holds approved/ building/ deployed/ failed/; the quarantine proposal/ and denied/ (and, from
    # before the quarantine existed, applied/ may hold some of those too)
    for path, marker in ((applied_path(hive, agent), ".git"), (quarantine_path(hive, agent), "HEAD")):
        if (path / marker).exists():
            raw += open_repo(path).git.for_each_ref("refs/tags", f"--format={fmt}", strip_newline_in_stdout=False)
    for record in raw.split("\x01"):
        record = record.lstrip("\n")
        if not record:
            continue
        name, obj, peeled, date, message = (record.split("\0") + [""] * 5)[:5]
        state = name.split("/", 1)[0]
        if state not in out or name in seen:
            continue
        seen.add(name)
        ts = float(date) if date.strip().isdigit() else None
        out[state].append({"name": name, "sha": peeled or obj, "date": db.iso(ts), "message": message.strip(),
                           "id": _tag_id(name), "ts": ts})
    for items in out.values():
        items.sort(key=lambda t: (t["id"] if t["id"] is not None else -1), reverse=True)
        for t in items:
            t.pop("ts")
    return out


def _tag_id(name: str) -> int | None:
    tail = name.split("/", 1)[1] if "/" in name else ""
    return int(tail) if tail.isdigit() else None


def tag_dates(repo: git.Repo) -> dict[str, float]:
    """Tag name to its date (the tagger's for annotated tags), for retention."""
    raw = repo.git.for_each_ref("refs/tags", "--format=%(refname:strip=2) %(creatordate:unix)")
    out = {}
    for line in raw.splitlines():
        name, _, ts = line.rpartition(" ")
        if name and ts.isdigit():
            out[name] = float(ts)
    return out


def repo_log(hive, agent: str, rev: str = "main", limit: int = 50) -> list[dict]:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise bad_request("limit must be an integer from 1 to 1000")
    repo, sha = _resolve(hive, agent, rev)
    raw = repo.git.log(f"-n{limit}", "--format=%H%x00%h%x00%an <%ae>%x00%aI%x00%s%x01", sha)
    out = []
    for record in raw.split("\x01"):
        record = record.strip("\n")
        if record:
            full, short, author, date, message = record.split("\0")
            out.append({"sha": full, "short": short, "author": author, "date": date, "message": message})
    return out


def repo_diff(hive, agent: str, rev: str) -> str:
    """One commit: its header and its unified diff against its first parent."""
    repo, sha = _resolve(hive, agent, rev)
    return review.show(repo, sha)


def proposed_history(hive, agent: str, limit: int = 50) -> dict:
    """What the manager committed to ``agents/<n>/config`` (its ``main``, newest first) beside what is deployed,
    for the agent page. The proposed repo is hostile, so it is never read through git: its history is copied into
    the quarantine (import_proposed: no link followed, none of its config, hooks or attributes), what is applied
    is fetched there too, and the log and the diff are computed in the quarantine.

    ``{"commits": [{sha, short, author, date, message}], "main", "deployed", "compare"}``: ``compare`` is the
    diff from the deployed commit to the proposed ``main`` (None when they are the same)."""
    agent = _known_agent(hive, agent)
    import_proposed(hive, agent)
    try:
        quarantine = sync_quarantine_from_applied(hive, agent)
    except git.GitCommandError:  # a broken applied repo is the applied panel's error, not this one's
        quarantine = ensure_quarantine(hive, agent)
    main = rev_sha(quarantine, "refs/heads/main")
    deployed = rev_sha(quarantine, "refs/applied/heads/main")
    commits = []
    if main:
        raw = quarantine.git.log(f"-n{limit}", "--no-show-signature",
                                 "--format=%H%x00%h%x00%an <%ae>%x00%aI%x00%s%x01", main)
        for record in raw.split("\x01"):
            record = record.strip("\n")
            if record:
                full, short, author, date, message = (record.split("\0") + [""] * 5)[:5]
                commits.append({"sha": full, "short": short, "author": author, "date": date, "message": message})
    compare = None
    if main and deployed and main != deployed:
        compare = diff_between(quarantine, deployed, main)
    return {"commits": commits, "main": main, "deployed": deployed, "compare": compare}


def commit_info(repo: git.Repo, sha: str) -> dict:
    """What the author of commit ``sha`` said: subject, body, author and the author's date (ISO 8601, UTC)."""
    raw = repo.git.show("-s", "--no-show-signature", "--format=%an <%ae>%x00%at%x00%s%x00%b", sha,
                        strip_newline_in_stdout=False)
    author, ts, subject, body = (raw.split("\0", 3) + ["", "", "", ""])[:4]
    return {"subject": subject.strip(), "body": body.strip(), "author": author.strip(),
            "date": db.iso(float(ts)) if ts.strip().isdigit() else None}


def diff_between(repo: git.Repo, base: str | None, sha: str) -> str:
    """Unified diff from ``base`` (None: nothing, i.e. every file is new) to ``sha``, every byte shown."""
    return review.diff(repo, base, sha)


def repo_file(hive, agent: str, rev: str, path: str) -> bytes:
    """A file's bytes at a revision; symlinks are followed only while they stay inside the repo."""
    clean = _check_path(path)
    repo, sha = _resolve(hive, agent, rev)
    tree = repo.commit(sha).tree
    seen = 0
    current = clean
    while True:
        try:
            obj = tree / current
        except KeyError:
            raise not_found(f'no file "{clean}" at {rev} in the config repo of {agent}') from None
        if obj.type == "tree":
            entries = ", ".join(sorted(e.name + ("/" if e.type == "tree" else "") for e in obj))
            raise bad_request(f'"{clean}" is a directory (it holds: {entries or "nothing"})')
        if obj.mode & 0o170000 == 0o120000:  # a symlink: its blob is the target
            target = obj.data_stream.read().decode("utf-8", "replace")
            joined = posixpath.normpath(posixpath.join(posixpath.dirname(current), target))
            if target.startswith("/") or joined == ".." or joined.startswith("../"):
                raise bad_request(f'"{clean}" is a symlink pointing outside the repo ({target})')
            seen += 1
            if seen > 10:
                raise bad_request(f'"{clean}": too many levels of symlinks')
            current = _check_path(joined)
            continue
        if obj.type != "blob":
            raise bad_request(f'"{clean}" is not a file')
        return obj.data_stream.read()


def meta_log(hive, limit: int = 100) -> list[dict]:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise bad_request("limit must be an integer from 1 to 1000")
    path = meta_path(hive)
    if not (path / ".git").exists():
        return []
    repo = open_repo(path)
    if rev_sha(repo, "HEAD") is None:
        return []
    raw = repo.git.log(f"-n{limit}", "--format=%H%x00%aI%x00%s%x01", "HEAD")
    out = []
    for record in raw.split("\x01"):
        record = record.strip("\n")
        if record:
            sha, date, message = record.split("\0")
            out.append({"sha": sha, "date": date, "message": message})
    return out

