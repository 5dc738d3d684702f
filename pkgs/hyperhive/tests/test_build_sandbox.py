"""The package's tests as the Nix build sandbox runs them (nix/package.nix): from a lone copy of pkgs/hyperhive, no
repository around it, HYPERHIVE_BUILD_SANDBOX=1, HOME in a temporary directory, no network, and on PATH only what
the check phase has (the Python with the dependencies and pytest, git, and stdenv's shell tools; no nix, Chromium or
Claude Code CLI).

Running the whole suite a second time would double `make test`; what can break only in the sandbox is (a) collecting
a test module (an import, a parametrisation that walks the repository or calls a tool) and (b) a test that reaches
outside the package or for a tool the sandbox lacks. So: every module is collected, and the tests that reach
outside (the markers of tests/conftest.py for the repository, Chromium and the Claude CLI) run -- and must be
skipped, not fail -- along with the modules that used to look above the package (test_config.py's example hive,
test_nix.py's file walk). nix-instantiate is a check input (spawning reads agent.nix with it), so the tests marked
`nix` alone run in the sandbox in full; they are not repeated here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BUILD_SANDBOX, PACKAGE_DIR

# stdenv's tools in the check phase (pkgs/stdenv/generic/common-path.nix: coreutils, findutils, diffutils, sed,
# grep, gawk, tar, gzip, bzip2, xz, bash, patch, make) plus the package's nativeCheckInputs (git, nix).
SANDBOX_TOOLS = ("bash sh env cat ls mkdir rm rmdir cp mv chmod chown ln sleep true false echo printf head tail sort "
                 "uniq wc tr dirname basename readlink realpath id touch test stat date mktemp tee cut uname expr "
                 "sed grep awk gawk find xargs diff cmp tar gzip bzip2 xz patch make git nix nix-instantiate").split()

IGNORED = {"__pycache__", ".pytest_cache", "build", "dist", ".hypothesis"}

pytestmark = pytest.mark.skipif(BUILD_SANDBOX, reason="this test is the build sandbox's setup; not run inside it")


def sandbox_path(bin_dir: Path) -> str:
    bin_dir.mkdir()
    for tool in SANDBOX_TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    # The check phase's Python: this interpreter (with pytest and the dependencies), by absolute path.
    for name in ("python", "python3"):
        wrapper = bin_dir / name
        wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
        wrapper.chmod(0o755)
    return str(bin_dir)


def lone_copy(tmp_path: Path) -> Path:
    # Deep enough that nothing above it looks like the repository (parents[3] of a test is still inside tmp_path).
    copy = tmp_path / "a" / "b" / "c" / "hyperhive"
    shutil.copytree(PACKAGE_DIR, copy, ignore=lambda _d, names: [n for n in names if n in IGNORED])
    return copy


def run_pytest(copy: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": sandbox_path(tmp_path / "bin") if not (tmp_path / "bin").exists() else str(tmp_path / "bin"),
           "HOME": str(home), "TMPDIR": str(tmp_path), "HYPERHIVE_BUILD_SANDBOX": "1", "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1",
           # The check phase's preCheck: git needs an identity.
           "GIT_AUTHOR_NAME": "nixbld", "GIT_AUTHOR_EMAIL": "nixbld@localhost",
           "GIT_COMMITTER_NAME": "nixbld", "GIT_COMMITTER_EMAIL": "nixbld@localhost"}
    subprocess.run(["git", "config", "--global", "init.defaultBranch", "main"], env=env, check=True)
    cmd = ["python3", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args]
    # No network, as in the sandbox, where this machine allows a network namespace (root, or user namespaces).
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        cmd = [unshare, "-rn", *cmd]
    return subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=900)


def test_the_package_tests_pass_from_a_lone_copy(tmp_path):
    copy = lone_copy(tmp_path)
    assert not (copy.parents[2] / "flake.nix").exists()

    collected = run_pytest(copy, tmp_path, "--collect-only")
    assert collected.returncode == 0, collected.stdout[-5000:] + collected.stderr[-3000:]
    assert "error" not in collected.stdout.lower().split("\n")[-2], collected.stdout[-2000:]

    result = run_pytest(copy, tmp_path, "-m", "repo or browser or claude_cli",
                        "tests/test_nix.py", "tests/test_config.py", "tests/test_build_sandbox.py",
                        *sorted(str(p.relative_to(copy)) for p in (copy / "tests").glob("test_*.py")
                                if re.search(r"pytest\.mark\.(browser|claude_cli|repo)\b|claude_cli|repo_root",
                                             p.read_text(encoding="utf-8"))))
    out = result.stdout + result.stderr
    assert result.returncode in (0, 5), out[-6000:]  # 5: every selected test deselected is fine too
    assert " failed" not in out and " error" not in out, out[-6000:]
    # What needs the repository or nix was skipped, saying why.
    assert "not available in the Nix build sandbox" in out, out[-3000:]

    plain = run_pytest(copy, tmp_path, "tests/test_config.py")
    assert plain.returncode == 0, (plain.stdout + plain.stderr)[-6000:]
    assert re.search(r"\d+ passed", plain.stdout) and "1 skipped" in plain.stdout, plain.stdout[-2000:]


def test_outside_the_sandbox_a_missing_requirement_fails_loudly(tmp_path):
    """The same marker that skips in the sandbox is a failure anywhere else (CI never skips silently)."""
    copy = lone_copy(tmp_path)
    env_bin = tmp_path / "bin"
    sandbox_path(env_bin)
    env = {"PATH": str(env_bin), "HOME": str(tmp_path), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(["python3", "-m", "pytest", "-p", "no:cacheprovider", "-q",
                             "tests/test_config.py::test_the_bundled_example_hive_checks"],
                            cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "the repository around pkgs/hyperhive is missing" in result.stdout, result.stdout[-3000:]
    assert os.environ.get("HYPERHIVE_BUILD_SANDBOX") != "1"
