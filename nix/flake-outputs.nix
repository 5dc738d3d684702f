# The flake's outputs evaluated against a stand-in `nixpkgs` input, every derivation's attributes forced (used by
# pkgs/hyperhive/tests/test_nix.py):
#
#   nix-instantiate --eval --strict --json nix/flake-outputs.nix --arg lib 'import <nixpkgs lib>' --arg repo ./.
#
# `lib` is nixpkgs' real lib when the session brings one (HYPERHIVE_NIXPKGS_LIB), else nix/minimal-lib.nix. The
# stand-in package set's builders (callPackage, buildPythonApplication, runCommand, mkShell, writeShellScript,
# python3.withPackages, testers.runNixOSTest) return derivation-shaped attribute sets holding every argument they were
# given, so forcing them forces what flake.nix, nix/package.nix and nixos-tests/ pass, as nixpkgs would. With the
# real lib, runNixOSTest also evaluates the test's node with lib.evalModules (the host module, nixos-tests/common.nix,
# the NixOS stand-ins of nix/standin-nixos.nix plus the VM options the tests set) and calls its testScript with those
# `nodes`, as nixos/lib/testing does (nixos/lib/testing/testScript.nix: `testScript` may be a function of { nodes }).
{ lib, repo, realLib ? true }:
let
  inherit (builtins) isAttrs isFunction isList mapAttrs;

  drv = kind: name: args: {
    type = "derivation";
    inherit name kind;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    drvPath = "/nix/store/00000000000000000000000000000000-${name}.drv";
    # What the builder was given (functions are recorded as such when forced to JSON).
    inherit args;
    meta = args.meta or { };
    passthru = args.passthru or { };
  };

  standin = if realLib then import ./standin-nixos.nix { inherit lib; } else null;

  pythonPackages = python: rec {
    inherit python;
    pytestCheckHook = drv "pkg" "pytest-check-hook" { };
    setuptools = drv "pkg" "setuptools" { };
    pytest = drv "pkg" "pytest" { };
    hypothesis = drv "pkg" "hypothesis" { };
    playwright = drv "pkg" "playwright" { };
    pluggy = drv "pkg" "pluggy" { };
    tomli-w = drv "pkg" "tomli-w" { };
    gitpython = drv "pkg" "gitpython" { };
    flask = drv "pkg" "flask" { };
    sqlalchemy = drv "pkg" "sqlalchemy" { };
    watchdog = drv "pkg" "watchdog" { };
    click = drv "pkg" "click" { };
    # python-packages-base.nix: buildPythonApplication's result has no `pythonModule` (toPythonModule = x: x).
    buildPythonApplication = args: drv "buildPythonApplication" "${args.pname}-${args.version}" args;
    # The package set's toPythonModule marks a derivation as a module of this Python.
    toPythonModule = d: d // { pythonModule = python; };
  };

  python3 = rec {
    pname = "python3";
    sitePackages = "lib/python3.12/site-packages";
    pkgs = pythonPackages python3;
    withPackages = f: drv "python-env" "python3-env" { packages = f pkgs; };
  } // drv "pkg" "python3" { };

  legacyPackages = system: rec {
    inherit lib;
    stdenv.hostPlatform.system = system;
    inherit python3;
    python3Packages = python3.pkgs;
    git = drv "pkg" "git" { };
    nix = drv "pkg" "nix" { };
    curl = drv "pkg" "curl" { };
    jq = drv "pkg" "jq" { };
    ripgrep = drv "pkg" "ripgrep" { };
    coreutils = drv "pkg" "coreutils" { };
    bash = drv "pkg" "bash" { };
    nixpkgs-fmt = drv "pkg" "nixpkgs-fmt" { };
    # pkgs/top-level/all-packages.nix: `path = ./..;`
    path = "/nix/store/11111111111111111111111111111111-source";
    callPackage = f: overrides:
      let
        fn = if isFunction f then f else import f;
        wanted = builtins.functionArgs fn;
        scope = { inherit lib python3Packages git nix; } // overrides;
      in
      fn (builtins.intersectAttrs wanted scope);
    writeShellScript = name: text: drv "writeShellScript" name { inherit text; };
    runCommand = name: env: script: drv "runCommand" name (env // { inherit script; });
    mkShell = args: drv "mkShell" "shell" args;
    formats.json = { }: {
      generate = name: value: drv "json" name { inherit value; } // { inherit value; };
    };
    testers.runNixOSTest = test: drv "nixosTest" "vm-test-run-${test.name}" (test // (if realLib then {
      # Evaluated like nixos/lib/testing: the node's configuration, and the test script given `nodes`.
      evaluatedNodes = mapAttrs (_: node: nodeConfig system node) test.nodes;
      testScript =
        if isFunction test.testScript
        then test.testScript { nodes = mapAttrs (_: node: nodeConfig system node) test.nodes; }
        else test.testScript;
    } else { }));
  };

  # A test node: the NixOS stand-ins (host side), the VM options the tests set, and the node's modules.
  nodeConfig = system: node: (lib.evalModules {
    modules = [
      standin.common
      vmOptions
      node
    ];
    specialArgs = { pkgs = legacyPackages system; };
  }).config;

  # nixos/modules/virtualisation/qemu-vm.nix (the options the tests set), nixos/modules/config/nix.nix and
  # nix-flakes.nix (nix.settings, nix.registry), nixos/modules/system/activation/top-level.nix
  # (system.extraDependencies), nixos/modules/virtualisation/nixos-containers.nix (containers), and the host
  # options of nix/eval-modules.nix.
  vmOptions = { lib, ... }: {
    options = with lib; {
      virtualisation = mkOption { type = types.attrsOf types.anything; default = { }; };
      system.includeBuildDependencies = mkOption { type = types.bool; default = false; };
      system.extraDependencies = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      nix.package = mkOption { type = types.package; default = drv "pkg" "nix" { }; };
      nix.settings = mkOption { type = types.attrsOf types.anything; default = { }; };
      nix.registry = mkOption { type = types.attrsOf (types.attrsOf types.unspecified); default = { }; };
      systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      networking.primaryIPAddress = mkOption { type = types.str; default = "192.168.1.1"; };
      containers = mkOption { type = types.attrsOf (types.attrsOf types.unspecified); default = { }; };
    };
  };

  nixpkgs = {
    inherit lib;
    outPath = "/nix/store/11111111111111111111111111111111-source";
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] legacyPackages;
  };

  flake = import (repo + "/flake.nix");
  self = outputs // { outPath = toString repo; };
  outputs = flake.outputs { inherit self nixpkgs; };

  # Force everything, turning functions (modules, builders' hooks) into a marker, derivations into their args.
  force = depth: v:
    if depth > 40 then "<deep>"
    else if isFunction v then "<function>"
    else if isList v then map (force (depth + 1)) v
    else if isAttrs v && (v.type or null) == "derivation" then
      # JSON would show only outPath: record what the builder was given instead.
      { derivation = v.name; kind = v.kind or "package"; args = force (depth + 1) (v.args or { }); }
    else if isAttrs v then
      (if v ? _type && v._type == "option" then "<option>"
      else mapAttrs (_: force (depth + 1)) (builtins.removeAttrs v [ "passthru" "evaluatedNodes" ]))
    else if builtins.isPath v then toString v
    else v;
in
{
  topLevel = builtins.attrNames outputs;
  nixosModules = mapAttrs (_: m: isFunction m || isAttrs m) outputs.nixosModules;
  templates = mapAttrs (_: t: { path = toString t.path; inherit (t) description; }) outputs.templates;
  packages = force 0 outputs.packages;
  apps = force 0 outputs.apps;
  devShells = force 0 outputs.devShells;
  checks = force 0 outputs.checks;
  vmNodes = if realLib then mapAttrs
    (_: system: mapAttrs
      (_: check: if check.kind == "nixosTest" then mapAttrs
        (_: c: {
          hiveJson = c.environment.etc."hyperhive/hive.json".source.value;
          containers = builtins.attrNames c.containers;
          virtualisation = c.virtualisation;
          assertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
        })
        check.args.evaluatedNodes else null)
      system)
    outputs.checks else null;
}
