# The hyperhive Python package, built with nixpkgs' buildPythonApplication from pkgs/hyperhive.
{ lib, python3Packages, git }:
let
  src = ../pkgs/hyperhive;
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

  dependencies = with python3Packages; [ pluggy tomli-w gitpython flask sqlalchemy watchdog click ];

  # The service drives git (config repos) itself.
  makeWrapperArgs = [ "--prefix" "PATH" ":" (lib.makeBinPath [ git ]) ];

  nativeCheckInputs = [ python3Packages.pytestCheckHook python3Packages.hypothesis git ];

  # The dashboard's browser tests (marker `browser`) need a headless Chromium driven by playwright, which the
  # build sandbox does not have: they are deselected here and run by `make test`. The Nix parse/eval tests
  # (test_nix.py) run as their own check, `checks.<system>.nix-eval`, with nix-instantiate available.
  pytestFlagsArray = [ "-m" "not browser" ];
  preCheck = ''
    export HOME=$TMPDIR HYPERHIVE_SKIP_NIX=1
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
