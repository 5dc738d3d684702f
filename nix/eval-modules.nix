# Evaluate the host module (and, through its containers, the agent module) with nixpkgs' `lib.evalModules` against
# stand-ins for the NixOS options they set, without nixpkgs' packages or NixOS itself. Used by
# pkgs/hyperhive/tests/test_nix.py when HYPERHIVE_NIXPKGS_LIB points at a checkout of nixpkgs' lib:
#
#   nix-instantiate --eval --strict --json nix/eval-modules.nix \
#     --arg lib 'import /path/to/nixpkgs.lib/lib' --arg hive 'import nix/examples/policies.nix'
#
# Each stand-in mirrors the nixpkgs option it replaces (type, default, and what nixpkgs does with the value that our
# tests rely on), citing the nixpkgs file. Only the parts the tests compare are forced (the fake packages cannot be
# built).
# `hostExtra` is more of the host's NixOS configuration (e.g. its system.stateVersion).
{ lib, hive, template ? ../templates/agent/agent.nix, hostExtra ? { } }:
let
  inherit (lib) mkOption mkDefault types;

  standin = import ./standin-nixos.nix { inherit lib; };
  inherit (standin) fakePackage pkgs anyAttrs common containerSystem;

  evalContainer = modules: (lib.evalModules {
    modules = [
      containerSystem
      ({ config, ... }: {
        system.build.toplevel = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" (builtins.toJSON config.hyperhive.policy))}-nixos-system";
      })
    ] ++ modules;
    specialArgs = { inherit pkgs; };
  }).config;

  # nixos/modules/virtualisation/nixos-containers.nix, the parts a hyperhive container depends on.
  containerOptions = { name, config, options, ... }: {
    options = {
      autoStart = mkOption { type = types.bool; default = false; };
      privateNetwork = mkOption { type = types.bool; default = false; };
      privateUsers = mkOption {
        type = types.either types.ints.u32 (types.enum [ "no" "identity" "pick" ]);
        default = "no";
      };
      extraFlags = mkOption { type = types.listOf types.str; default = [ ]; };
      copyResolvConf = mkOption { type = types.bool; default = true; };
      interfaces = mkOption { type = types.listOf types.str; default = [ ]; };
      macvlans = mkOption { type = types.listOf types.str; default = [ ]; };
      path = mkOption { type = types.path; };
      nixpkgs = mkOption { type = types.path; default = pkgs.path; };
      bindMounts = mkOption {
        type = types.attrsOf (types.submodule ({ name, ... }: {
          options = {
            mountPoint = mkOption { type = types.str; };
            hostPath = mkOption { type = types.nullOr types.str; default = null; };
            isReadOnly = mkOption { type = types.bool; default = true; };
          };
          config.mountPoint = mkDefault name;
        }));
        default = { };
      };
      # The definitions are a NixOS configuration, evaluated (here against the stand-ins) after nixos-containers'
      # own `extraConfig`: boot.isNspawnContainer, networking.hostName = mkDefault <name>, useDHCP = false.
      config = mkOption {
        type = lib.mkOptionType {
          name = "Toplevel NixOS config (stand-in)";
          merge = _loc: defs: evalContainer ([{
            boot.isNspawnContainer = true;
            networking.hostName = mkDefault name;
            networking.useDHCP = false;
          }] ++ map (def: def.value) defs);
        };
      };
    };
    # nixos-containers.nix: `path` defaults to the evaluated config's toplevel when `config` is defined.
    config.path = lib.mkIf options.config.isDefined config.config.system.build.toplevel;
  };

  # nixos-containers.nix renders /etc/nixos-containers/<name>.conf from these options (the EnvironmentFile of
  # container@<name>.service); the service renders the same keys for containers it creates at run time. The values
  # are as systemd reads them (`INTERFACES=""` is the empty string). Its startScript copies the host's resolv.conf
  # into the container only when COPY_RESOLV_CONF is 1 (`copyResolvConf`, default true); a container shares the
  # host's network but resolves names only through that copy (container-config.nix: networking.useHostResolvConf).
  containerConf = name: cfg: {
    SYSTEM_PATH = toString cfg.path;
    COPY_RESOLV_CONF = if cfg.copyResolvConf then "1" else "0";
    PRIVATE_USERS = toString cfg.privateUsers;
    INTERFACES = toString cfg.interfaces;
    MACVLANS = toString cfg.macvlans;
    EXTRA_NSPAWN_FLAGS = builtins.concatStringsSep " " (
      map (d: (if d.isReadOnly then "--bind-ro=" else "--bind=") + (if d.hostPath != null then "${d.hostPath}:${d.mountPoint}" else d.mountPoint))
        (builtins.attrValues cfg.bindMounts)
      ++ cfg.extraFlags);
  } // lib.optionalAttrs cfg.privateNetwork { PRIVATE_NETWORK = "1"; }
  // lib.optionalAttrs cfg.autoStart { AUTO_START = "1"; };

  # nixos-containers.nix's startScript: what systemd-nspawn gets from a conf. The store and the profiles are bound
  # with `:idmap` when PRIVATE_USERS is `pick` or a positive number; `init` is resolved inside the container.
  nspawn = conf:
    let
      privateUsers = conf.PRIVATE_USERS or "";
      idmap = privateUsers == "pick" || (builtins.match "[0-9]+" privateUsers != null && privateUsers != "0");
      opt = if idmap then ":idmap" else "";
    in
    {
      inherit idmap;
      binds = [
        { host = "/nix/store"; inside = "/nix/store"; options = opt; }
        { host = "/nix/var/nix/db"; inside = "/nix/var/nix/db"; options = opt; }
        { host = "/nix/var/nix/daemon-socket"; inside = "/nix/var/nix/daemon-socket"; options = opt; }
        { host = "/nix/var/nix/profiles/per-container/$INSTANCE"; inside = "/nix/var/nix/profiles"; options = opt; }
        { host = "/nix/var/nix/gcroots/per-container/$INSTANCE"; inside = "/nix/var/nix/gcroots"; options = opt; }
      ];
      init = "${if (conf.SYSTEM_PATH or "") != "" then conf.SYSTEM_PATH else "/nix/var/nix/profiles/system"}/init";
    };

  host = {
    imports = [ common ];
    options = {
      nix.package = mkOption { type = types.package; default = fakePackage "nix"; };
      nix.settings = mkOption { type = types.attrsOf types.anything; default = { }; };
      systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };
      networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      containers = mkOption { type = types.attrsOf (types.submodule containerOptions); default = { }; };
    };
  };

  fakeHyperhive = fakePackage "hyperhive";

  hostConfig = (lib.evalModules {
    modules = [
      host
      ../modules/hyperhive.nix
      { hyperhive = hive // { enable = true; package = fakeHyperhive; }; }
      hostExtra
    ];
    specialArgs = { inherit pkgs; };
  }).config;

  declaredImports = builtins.mapAttrs (_: u: u) (
    (if hive ? manager && hive.manager ? config then { hm1nd = lib.toList hive.manager.config; } else { hm1nd = [ ]; })
    // lib.mapAttrs' (n: a: lib.nameValuePair "h-${n}" (lib.toList (a.config or [ ]))) (hive.agents or { }));

  failed = conf: map (a: a.message) (builtins.filter (a: !a.assertion) conf.assertions);

  containersJson = hostConfig.environment.etc."hyperhive/containers.json".source.value or null;

  # A container as an approved deploy builds it: what the service's meta flake evaluates (hyperhive/meta_flake.py):
  # the agent module, the agent's own config flake module, the host data read back from JSON (as the meta flake reads
  # meta/host/<container>.json), and the per-agent policy JSON the service writes (name, role and, for declared
  # agents, hive.json's policy).
  deployed = container: agentModule: policy:
    let
      # containers.json names the config files by their store copies (toJSON of a path); the service copies them
      # into the meta repo and the meta flake imports those copies: here, the same files.
      original = hostConfig.containers.${container}.config.hyperhive;
      data = builtins.fromJSON (builtins.unsafeDiscardStringContext (builtins.toJSON containersJson.containers.${container})) // {
        imports = declaredImports.${container};
      };
    in
    evalContainer [
      ../modules/agent.nix
      agentModule
      (import ../modules/container-host.nix data)
      policy
    ];

  summary = c: {
    failedAssertions = failed c;
    policy = c.hyperhive.policy;
    agentJson = c.environment.etc."hyperhive/agent.json".source.value;
    claudeSettings = c.environment.etc."claude-code/managed-settings.json".source.value;
    inherit (c.systemd.services.hive-agent) environment;
    servicePath = map (p: p.name or p) c.systemd.services.hive-agent.path;
    etc = builtins.attrNames c.environment.etc;
    execStart = c.systemd.services.hive-agent.serviceConfig.ExecStart;
    inherit (c.hyperhive) managerName operatorPronouns claudeCommand;
    claudePackage = if c.hyperhive.claudePackage == null then null else c.hyperhive.claudePackage.name;
    packages = map (p: p.name) c.hyperhive.packages;
    systemPackages = map (p: p.name) c.environment.systemPackages;
    git = c.programs.git.config;
    isNspawnContainer = c.boot.isNspawnContainer;
    inherit (c.networking) hostName useDHCP;
  };

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
  inherit containersJson;
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
    (name: c: {
      inherit (c) autoStart privateNetwork privateUsers extraFlags bindMounts;
      path = toString c.path;
      conf = containerConf name c;
      nspawn = nspawn (containerConf name c);
    } // summary c.config)
    hostConfig.containers;
  # Each declared container rebuilt as a deploy would, from its seeded agent.nix equivalent (the declared policy).
  deployedContainers = builtins.mapAttrs
    (container: c: summary (deployed container { } {
      hyperhive = builtins.removeAttrs c.config.hyperhive.policy [ "bashAllow" ] // {
        bash.allow = c.config.hyperhive.policy.bashAllow;
      };
    }))
    hostConfig.containers;
  template = {
    failedAssertions = failed templateConfig;
    inherit (templateConfig.hyperhive) policy;
    claudeSettings = templateConfig.environment.etc."claude-code/managed-settings.json".source.value;
    packages = map (p: p.name) templateConfig.hyperhive.packages;
  };
}
