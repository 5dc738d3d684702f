# Evaluate the host module (and, through its containers, the agent module) with nixpkgs' `lib.evalModules` against
# stand-ins for the NixOS options they set, without nixpkgs' packages or NixOS itself. Used by
# pkgs/hyperhive/tests/test_nix.py when HYPERHIVE_NIXPKGS_LIB points at a checkout of nixpkgs' lib:
#
#   nix-instantiate --eval --strict --json nix/eval-modules.nix \
#     --arg lib 'import /path/to/nixpkgs.lib/lib' --arg hive 'import nix/examples/policies.nix'
#
# Only the parts the test compares are forced (the fake packages cannot be built).
{ lib, hive, template ? ../templates/agent/agent.nix }:
let
  inherit (lib) mkOption types;

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
    formats.json = { }: {
      type = types.anything;
      generate = name: value: fakePackage name // { inherit value; };
    };
  };

  anyAttrs = types.attrsOf types.anything;

  # Stand-ins for the NixOS options both modules set, with types close to NixOS's own.
  common = {
    options = {
      assertions = mkOption { type = types.listOf anyAttrs; default = [ ]; };
      environment.etc = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            source = mkOption { type = types.anything; };
            mode = mkOption { type = types.str; default = "symlink"; };
          };
        });
        default = { };
      };
      environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
      systemd.services = mkOption {
        type = types.attrsOf (types.submodule {
          freeformType = anyAttrs;
          options = {
            restartTriggers = mkOption { type = types.listOf types.anything; default = [ ]; };
            reloadTriggers = mkOption { type = types.listOf types.anything; default = [ ]; };
            path = mkOption { type = types.listOf (types.either types.package types.str); default = [ ]; };
            environment = mkOption { type = types.attrsOf types.str; default = { }; };
            serviceConfig = mkOption { type = anyAttrs; default = { }; };
            unitConfig = mkOption { type = anyAttrs; default = { }; };
          };
        });
        default = { };
      };
    };
  };

  containerSystem = {
    imports = [ common ];
    options = {
      boot.isNspawnContainer = mkOption { type = types.bool; default = false; };
      system.stateVersion = mkOption { type = types.str; };
      networking.firewall.enable = mkOption { type = types.bool; default = true; };
      programs.git = {
        enable = mkOption { type = types.bool; default = false; };
        config = mkOption { type = anyAttrs; default = { }; };
      };
      # A stand-in for the built system: a name that changes with the agent's policy.
      system.build.toplevel = mkOption { type = types.str; };
    };
  };

  evalContainer = modules: (lib.evalModules {
    modules = [
      containerSystem
      ({ config, ... }: {
        system.build.toplevel = "/nix/store/${builtins.hashString "sha256" (builtins.toJSON config.hyperhive.policy)}-nixos-system";
        boot.isNspawnContainer = true;
      })
    ] ++ modules;
    specialArgs = { inherit pkgs; };
  }).config;

  host = {
    imports = [ common ];
    options = {
      nix.package = mkOption { type = types.package; default = fakePackage "nix"; };
      nix.settings = mkOption { type = types.attrsOf types.anything; default = { }; };
      systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      containers = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            autoStart = mkOption { type = types.bool; default = false; };
            privateNetwork = mkOption { type = types.bool; default = false; };
            privateUsers = mkOption {
              type = types.either types.ints.u32 (types.enum [ "no" "identity" "pick" ]);
              default = "no";
            };
            extraFlags = mkOption { type = types.listOf types.str; default = [ ]; };
            path = mkOption { type = types.path; };
            bindMounts = mkOption {
              type = types.attrsOf (types.submodule ({ name, ... }: {
                options = {
                  mountPoint = mkOption { type = types.str; default = name; };
                  hostPath = mkOption { type = types.nullOr types.str; default = null; };
                  isReadOnly = mkOption { type = types.bool; default = true; };
                };
              }));
              default = { };
            };
            # Like NixOS's: the definitions are a NixOS configuration, evaluated here against the stand-ins.
            config = mkOption {
              type = lib.mkOptionType {
                name = "Toplevel NixOS config (stand-in)";
                merge = _loc: defs: evalContainer (map (def: def.value) defs);
              };
            };
          };
        });
        default = { };
      };
    };
  };

  fakeHyperhive = fakePackage "hyperhive";

  hostConfig = (lib.evalModules {
    modules = [
      host
      ../modules/hyperhive.nix
      { hyperhive = hive // { enable = true; package = fakeHyperhive; }; }
    ];
    specialArgs = { inherit pkgs; };
  }).config;

  failed = conf: map (a: a.message) (builtins.filter (a: !a.assertion) conf.assertions);

  # The agent template evaluated on its own, as the meta flake would for a spawned agent.
  templateConfig = evalContainer [
    ../modules/agent.nix
    template
    { hyperhive = { name = "spawned"; package = fakeHyperhive; }; }
  ];
in
{
  failedAssertions = failed hostConfig;
  rendered = hostConfig.environment.etc."hyperhive/hive.json".source.value;
  hiveJsonMode = hostConfig.environment.etc."hyperhive/hive.json".mode;
  pure = import ../modules/render-hive-json.nix hive;
  service = {
    inherit (hostConfig.systemd.services.hyperhive) environment serviceConfig;
    reloadTriggers = map (t: t.name) hostConfig.systemd.services.hyperhive.reloadTriggers;
  };
  units = builtins.attrNames hostConfig.systemd.services;
  tmpfiles = hostConfig.systemd.tmpfiles.rules;
  firewall = hostConfig.networking.firewall.allowedTCPPorts;
  prepare = builtins.mapAttrs (_: s: s.script or null) hostConfig.systemd.services;
  containers = builtins.mapAttrs
    (_: c: {
      inherit (c) autoStart privateNetwork privateUsers extraFlags bindMounts path;
      failedAssertions = failed c.config;
      policy = c.config.hyperhive.policy;
      agentJson = c.config.environment.etc."hyperhive/agent.json".source.value;
      claudeSettings = c.config.environment.etc."claude-code/managed-settings.json".source.value;
      inherit (c.config.systemd.services.hive-agent) environment;
      execStart = c.config.systemd.services.hive-agent.serviceConfig.ExecStart;
      inherit (c.config.hyperhive) managerName operatorPronouns;
      git = c.config.programs.git.config;
      isNspawnContainer = c.config.boot.isNspawnContainer;
    })
    hostConfig.containers;
  template = {
    failedAssertions = failed templateConfig;
    inherit (templateConfig.hyperhive) policy;
    claudeSettings = templateConfig.environment.etc."claude-code/managed-settings.json".source.value;
    packages = map (p: p.name) templateConfig.hyperhive.packages;
  };
}
