# The hyperhive Python package, built with nixpkgs' buildPythonApplication from pkgs/hyperhive.
{ lib, python3Packages, git, nix }:
let
  src = ../pkgs/hyperhive;
  # The run-time Python dependencies (DESIGN.md). The result is an application, not a Python module
  # (pkgs/development/interpreters/python/python-packages-base.nix: `toPythonModule = x: x` for
  # buildPythonApplication, so it has no `pythonModule`): an environment that imports it wraps it with the package
  # set's `ps.toPythonModule` in `pkgs.python3.withPackages` (flake.nix's nix-eval check, nixos-tests/common.nix).
  pythonDependencies = ps: with ps; [ pluggy tomli-w gitpython flask sqlalchemy watchdog click ];
  pyproject = builtins.fromTOML (builtins.readFile (src + "/pyproject.toml"));
in
python3Packages.buildPythonApplication {
  pname = "hyperhive";
  inherit (pyproject.project) version;
  pyproject = true;

  src = lib.cleanSourceWith {
    inherit src;
    filter = path: _type: !(builtins.elem (baseNameOf path) [ "__pycache__" ".pytest_cache" "build" "dist" ]);
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = pythonDependencies python3Packages;

  # The service drives git (config repos) itself.
  makeWrapperArgs = [ "--prefix" "PATH" ":" (lib.makeBinPath [ git ]) ];

  # nix: a spawned agent's policy is read from its agent.nix with nix-instantiate (hyperhive/policy_eval.py; a
  # restricted, read-only evaluation that needs no store), and without it a spawn fails closed.
  nativeCheckInputs = [ python3Packages.pytestCheckHook python3Packages.hypothesis git nix ];

  # The tests run from this lone copy of pkgs/hyperhive, without the repository around it, the network, nix,
  # Chromium or the Claude Code CLI. HYPERHIVE_BUILD_SANDBOX=1 lets exactly the tests marked as needing those skip
  # (tests/conftest.py); everywhere else they fail loudly. `make test` runs them all, and runs this lone-copy setup
  # too (tests/test_nix.py::test_the_package_tests_pass_from_a_lone_copy). The Nix parse/eval tests run as their
  # own check, `checks.<system>.nix-eval`, with nix-instantiate and the repository.
  pytestFlagsArray = [ "-p" "no:cacheprovider" ];
  preCheck = ''
    export HOME=$TMPDIR HYPERHIVE_BUILD_SANDBOX=1
    git config --global user.name nixbld
    git config --global user.email nixbld@localhost
    git config --global init.defaultBranch main
  '';

  pythonImportsCheck = [ "hyperhive" "hyperhive.config" ];

  meta = {
    description = "A contained, reviewable swarm of Claude Code agents on one NixOS host";
    license = lib.licenses.mit;
    mainProgram = "hyperhive";
    platforms = lib.platforms.linux;
  };
}
