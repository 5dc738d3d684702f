# Stand-ins for the NixOS options hyperhive's modules set and the few `pkgs` attributes they use, with nixpkgs' own
# types and defaults (each citing its nixpkgs file). Shared by nix/eval-modules.nix (lib.evalModules of the host and
# agent modules) and by the stand-in nixpkgs flake of pkgs/hyperhive/tests/test_nix.py (its `lib.nixosSystem`
# evaluates a meta flake's configurations against these).
{ lib }:
let
  inherit (lib) mkOption mkDefault types;
in
rec {
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  # The few `pkgs` attributes the modules use; `formats.json.generate` keeps the value so the test can read it.
  pkgs = {
    git = fakePackage "git";
    bash = fakePackage "bash";
    coreutils = fakePackage "coreutils";
    ripgrep = fakePackage "ripgrep";
    claude-code = fakePackage "claude-code";
    # pkgs/top-level/all-packages.nix: `path = ./..;` (the nixpkgs source tree the host was evaluated from)
    path = "/nix/store/11111111111111111111111111111111-source";
    formats.json = { }: {
      type = types.anything;
      generate = name: value: fakePackage name // { inherit value; };
    };
  };

  anyAttrs = types.attrsOf types.anything;

  # Stand-ins for the NixOS options both the host and a container set.
  common = {
    options = {
      # nixos/modules/misc/assertions.nix
      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      # nixos/modules/misc/version.nix: a string, the release when unset (with a warning there)
      system.stateVersion = mkOption { type = types.str; default = lib.trivial.release; };
      # nixos/modules/system/etc/etc.nix: `source`, `text` and `mode` (default "symlink")
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            source = mkOption { type = types.anything; };
            text = mkOption { type = types.nullOr types.lines; default = null; };
            mode = mkOption { type = types.str; default = "symlink"; };
          };
        });
        default = { };
      };
      # nixos/modules/config/system-path.nix
      environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
      # nixos/lib/systemd-unit-options.nix (the options used here)
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule {
          freeformType = anyAttrs;
          options = {
            restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
            reloadTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
            path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; };
            environment = mkOption { type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ])); default = { }; };
            serviceConfig = mkOption { type = anyAttrs; default = { }; };
            unitConfig = mkOption { type = anyAttrs; default = { }; };
          };
        });
        default = { };
      };
    };
  };

  # A NixOS system inside a container.
  containerSystem = {
    imports = [ common ];
    options = {
      # nixos/modules/virtualisation/nixos-containers.nix
      boot.isNspawnContainer = mkOption { type = types.bool; default = false; };
      boot.isContainer = mkOption { type = types.bool; default = false; };
      # nixos/modules/tasks/network-interfaces.nix: hostName is a `strMatching` of a host name label; useDHCP
      networking.hostName = mkOption {
        type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
        default = "nixos";
      };
      networking.useDHCP = mkOption { type = types.bool; default = true; };
      # nixos/modules/services/networking/firewall.nix
      networking.firewall.enable = mkOption { type = types.bool; default = true; };
      # nixos/modules/programs/git.nix: `config` is `either gitini (listOf gitini)` whose merge returns a LIST,
      # `[ (merged attrset definitions) ] ++ (list definitions)`, default [ ].
      programs.git = {
        enable = mkOption { type = types.bool; default = false; };
        config = mkOption {
          type =
            let gitini = types.attrsOf (types.attrsOf types.anything); in
            types.either gitini (types.listOf gitini) // {
              merge = loc: defs:
                let
                  split = builtins.foldl'
                    (acc: { value, ... }@x: acc // (if builtins.isList value
                    then { ordered = acc.ordered ++ value; }
                    else { unordered = acc.unordered ++ [ x ]; }))
                    { ordered = [ ]; unordered = [ ]; }
                    defs;
                in
                [ (gitini.merge loc split.unordered) ] ++ split.ordered;
            };
          default = [ ];
        };
      };
      # A stand-in for the built system: a name that changes with the agent's policy.
      system.build.toplevel = mkOption { type = types.str; };
    };
  };


  # nixosSystem's stand-in: lib.evalModules of the modules against the container stand-ins.
  nixosSystem = { modules, ... }: lib.evalModules {
    modules = [ containerSystem ] ++ modules;
    specialArgs = { inherit pkgs; modulesPath = "/standin/nixos/modules"; };
  };
}
