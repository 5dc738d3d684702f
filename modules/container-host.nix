# The host's part of one agent container's NixOS configuration, as a function of plain data:
#
#   import ./container-host.nix data  ->  a NixOS module
#
# The host module (modules/hyperhive.nix) imports it into every container it declares, and writes the same data
# to /etc/hyperhive/containers.json; the service copies an agent's entry into its meta flake
# (meta/host/<container>.json) and every deploy imports this file with it. So a container built by an approved deploy
# (declared or spawned) gets exactly what the host's declaration gives: nothing host-only is lost on the first deploy.
#
# `data` survives JSON. Packages (the hyperhive package, `packages`, `claudePackage`) are store path strings; read
# back from JSON they have lost their string context, which a pure evaluation (the meta flake) needs to build with
# them. `builtins.appendContext` gives it back without reading anything (unlike `builtins.storePath`, which pure
# evaluation refuses); the paths are alive on the host because /etc/hyperhive/containers.json, in the system
# closure, refers to them. `imports` are module files: the host passes its paths; the meta flake passes the copies
# the service put into the meta repo (pure evaluation may not read arbitrary store paths, only its own inputs).
data:
{ lib, ... }:
let
  inherit (builtins) appendContext hasContext substring stringLength baseNameOf;

  # A store path string with its context (again).
  inStore = p: if hasContext p then p else appendContext p { ${builtins.unsafeDiscardStringContext p} = { path = true; }; };

  # A package from its output path, shaped like lib.toDerivation's result (lib/attrsets.nix) without storePath.
  package = p:
    let
      path = inStore p;
      self = {
        type = "derivation";
        name = substring 33 (stringLength (baseNameOf p)) (baseNameOf p);
        outPath = path;
        outputs = [ "out" ];
        out = self;
        outputName = "out";
        meta = { };
      };
    in
    self;
  optionalPackage = p: if p == null then null else package p;
in
{
  imports = data.imports or [ ];

  # What nixos-containers.nix gives every container it declares (its `extraConfig` of containers.<name>.config),
  # which a flake built by `nixos-container update --flake` does not get by itself.
  boot.isNspawnContainer = true;
  networking.hostName = lib.mkDefault data.container;
  networking.useDHCP = false;

  # Above mkDefault (the flake's nixosModules.agent sets the package with mkDefault; the meta flake's policy file
  # sets claudeCommand with mkDefault, and two list definitions of one priority would be concatenated), below an
  # agent.nix's own plain definitions.
  hyperhive = {
    package = lib.mkOverride 900 (package data.package);
    packages = map package (data.packages or [ ]);
    claudePackage = lib.mkOverride 900 (optionalPackage (data.claudePackage or null));
    claudeCommand = lib.mkOverride 900 (data.claudeCommand or null);
    managerName = data.managerName;
    operatorPronouns = data.operatorPronouns;
  };
}
