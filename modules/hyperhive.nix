# The hyperhive host module: options `hyperhive.*`, /etc/hyperhive/hive.json, `hyperhive.service`, and one NixOS
# container per declared agent (`h-<name>`) plus the manager's (`hm1nd`).
{ config, lib, pkgs, ... }:
let
  inherit (lib)
    mkOption mkEnableOption mkIf mkDefault mkForce types literalExpression optional optionals optionalAttrs
    mapAttrs' nameValuePair concatStringsSep escapeShellArg;

  hlib = import ./lib.nix;
  shared = import ./options.nix { inherit lib; };
  d = hlib.defaults;
  cfg = config.hyperhive;

  agentSubmodule = { name, ... }: {
    options = shared.commonOptions // {
      name = mkOption {
        type = shared.nameType;
        default = name;
        readOnly = true;
        description = ''
          The agent's name, from the attribute name: 1 to 9 characters, a lowercase letter first, then lowercase
          letters, digits or `-`; `manager`, `operator`, `system` and `hive` are reserved. Its container is `h-<name>`.
        '';
      };
      allowedRecipients = shared.allowedRecipientsOption;
      privateUsers = mkOption {
        type = types.bool;
        default = d.privateUsers;
        example = false;
        description = ''
          Run the container in its own user namespace: root inside is the unprivileged host uid
          {option}`uidBase` (and the 65535 uids after it). The agent's `/state` and Claude credentials are owned
          by that uid on the host.
        '';
      };
      uidBase = mkOption {
        type = types.nullOr (types.addCheck types.ints.u32 (n: lib.mod n 65536 == 0) // {
          description = "multiple of 65536";
        });
        default = null;
        example = 1879048192;
        description = ''
          First host uid of the agent's user namespace when {option}`privateUsers` is set. null derives a stable
          one from the name: {option}`hyperhive.privateUsersBase` plus 65536 times a slot hashed from the name.
          Two agents cannot share a range, and no range may lie in systemd-nspawn's `--private-users=pick` region
          (0x00080000-0x6FFFFFFF) or the foreign range (an assertion says which to change).
        '';
      };
      config = configFilesOption "h-<name>";
    };
  };

  # A container's extra NixOS configuration. Approved deploys rebuild the container from the service's meta flake,
  # a separate, pure evaluation that cannot see the host's configuration: what reaches it must be files. So this
  # takes NixOS modules as files (paths, copied to the store), which both the host's declaration and every deploy
  # import; an inline module would be lost on the first deploy.
  configFilesOption = container: mkOption {
    type = types.coercedTo types.path (p: [ p ]) (types.listOf types.path);
    default = [ ];
    example = literalExpression "./alice-container.nix";
    description = ''
      Extra NixOS configuration for the container `${container}`: NixOS module files (a path or a list of
      paths; a directory with a `default.nix` brings its neighbours along), imported by the container's
      declaration here and by every approved deploy (the meta flake imports the same store copies). Set the agent's
      policy (prompt, Bash allow-list, recipients) with the options above, not here: hive.json is rendered from
      those.
    '';
  };

  managerSubmodule = {
    options = shared.commonOptions // {
      name = mkOption {
        type = shared.nameType;
        default = d.manager;
        example = "boss";
        description = "The manager's name: what agents send to. Its container is always `hm1nd`.";
      };
      config = configFilesOption "hm1nd";
    };
  };
in
{
  ###### interface

  options.hyperhive = {
    enable = mkEnableOption "hyperhive, a swarm of Claude Code agents in NixOS containers talking through a broker";

    package = mkOption {
      type = types.package;
      defaultText = literalExpression "hyperhive.packages.\${system}.hyperhive (set by the flake's nixosModules.hyperhive)";
      description = "The hyperhive package: the service on the host and the harness in every container.";
    };

    stateDir = mkOption {
      type = shared.absolutePath;
      default = d.stateDir;
      example = "/srv/hyperhive";
      description = ''
        Where the service keeps its database (`hive.db`), the config repos (`agents/<name>/config`, `applied/`,
        `meta/`), every agent's `/state` (`agents/<name>/state`, the manager's `manager/state`) and Claude Code
        credentials (`claude/<name>`).
      '';
    };

    runDir = mkOption {
      type = shared.absolutePath;
      default = d.runDir;
      example = "/run/hive";
      description = ''
        Where the broker creates its sockets: `host.sock` (root only), `agents/<name>/mcp.sock` and
        `manager/mcp.sock`, each directory bind-mounted at `/run/hive` into that one container.
      '';
    };

    backend = mkOption {
      type = types.enum d.backends;
      default = d.backend;
      example = "local";
      description = ''
        How agents run: `nixos-container` (a container per agent, declared here and updated by approved deploys)
        or `local` (agents as processes of the service; no containers are declared).
      '';
    };

    operatorPronouns = mkOption {
      type = types.str;
      default = d.operatorPronouns;
      example = "she/her";
      description = "How the agents refer to the operator.";
    };

    privateUsersBase = mkOption {
      type = types.ints.u32;
      default = d.privateUsersBase;
      example = 1946157056;
      description = ''
        First host uid of the ranges given to user-namespaced agents (see `hyperhive.agents.<name>.uidBase`): a
        multiple of 65536 from 0x70000000 up, so that no range lies in systemd-nspawn's `--private-users=pick`
        region (0x00080000-0x6FFFFFFF, where other containers take theirs); the ranges end below systemd's foreign
        range 0x7FFE0000. The default gives 4094 ranges.
      '';
    };

    flake = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "github:example/hyperhive";
      description = ''
        Flake reference of hyperhive that the service's meta flake takes its agent module (and nixpkgs) from
        (`HYPERHIVE_FLAKE`); the flake's `nixosModules.hyperhive` sets it to its own store path, so deploys
        need no network. null leaves the service's default.
      '';
    };

    agentTemplate = mkOption {
      type = types.path;
      default = ../templates/agent;
      defaultText = literalExpression "\"\${hyperhive}/templates/agent\"";
      description = "The config flake a spawned agent starts from (`HYPERHIVE_AGENT_TEMPLATE` of the service).";
    };

    dashboard = {
      listen = {
        address = mkOption {
          type = types.str;
          default = d.listenAddress;
          example = "0.0.0.0";
          description = "Address the operator's dashboard listens on. Loopback unless you set a token file.";
        };
        port = mkOption {
          type = types.port;
          default = d.listenPort;
          example = 8443;
          description = "TCP port of the operator's dashboard.";
        };
      };
      tokenFile = mkOption {
        type = types.nullOr shared.absolutePath;
        default = d.tokenFile;
        example = "/run/secrets/hyperhive-dashboard-token";
        description = ''
          File holding the dashboard's bearer token; every request needs it. A string path, so the secret is
          never copied into the Nix store. Left null with the nixos-container backend, the service makes
          `<stateDir>/dashboard.token` (0600): the containers share the host's network (privateNetwork = false), so
          the dashboard is never without a token there.
        '';
      };
      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open the dashboard's port in the firewall.";
      };
      sessionMaxAgeSeconds = mkOption {
        type = types.ints.positive;
        default = d.sessionMaxAgeSeconds;
        example = 3600;
        description = "How long a dashboard login lasts before the token is asked for again.";
      };
    };

    budget = shared.budgetOption "the whole hive";

    limits = {
      maxUnackedPerSender = mkOption {
        type = types.ints.positive;
        default = d.maxUnackedPerSender;
        example = 500;
        description = "Unacknowledged messages one sender may have waiting for one recipient (more is `too_large`).";
      };
      maxPendingQuestions = mkOption {
        type = types.ints.positive;
        default = d.maxPendingQuestions;
        example = 50;
        description = "Pending operator questions one agent may have open.";
      };
      maxPendingApprovals = mkOption {
        type = types.ints.positive;
        default = d.maxPendingApprovals;
        example = 50;
        description = "Pending approvals one requester may have queued.";
      };
      maxPendingReminders = mkOption {
        type = types.ints.positive;
        default = d.maxPendingReminders;
        example = 200;
        description = "Reminders (`remind`) one agent may have set that are not yet due.";
      };
      maxDrafts = mkOption {
        type = types.ints.positive;
        default = d.maxDrafts;
        example = 20;
        description = "Two-step spawns (drafts) the manager may have in preparation at once.";
      };
    };

    broker = {
      maxMessageBytes = mkOption {
        type = types.ints.positive;
        default = d.maxMessageBytes;
        example = 262144;
        description = "Largest message body the broker accepts.";
      };
      recvMaxWaitSeconds = mkOption {
        type = types.ints.between 1 hlib.maxSeconds.recvMaxWaitSeconds;
        default = d.recvMaxWaitSeconds;
        example = 60;
        description = "Longest a `recv` may park waiting for a message (at most a day).";
      };
      leaseSeconds = mkOption {
        type = types.ints.between 1 hlib.maxSeconds.leaseSeconds;
        default = d.leaseSeconds;
        example = 1800;
        description = "How long a received, unacknowledged message stays leased before it is delivered again (at most a week).";
      };
      maxConnectionsPerAgent = mkOption {
        type = types.ints.positive;
        default = d.maxConnectionsPerAgent;
        example = 64;
        description = ''
          Connections one agent (or the manager) may hold open on its socket at once; more are refused, so one
          agent cannot take the file descriptors the operator, the dashboard and the other agents need.
        '';
      };
      idleTimeoutSeconds = mkOption {
        type = types.ints.positive;
        default = d.idleTimeoutSeconds;
        example = 3600;
        description = "How long a connection may stay open sending nothing (a parked `recv` is not idle) before it is closed.";
      };
    };

    retention = {
      failedMaxAgeDays = mkOption {
        type = types.ints.unsigned;
        default = d.failedMaxAgeDays;
        example = 30;
        description = "Age in days after which `failed/*` tags are dropped (every `deployed/*` tag is kept).";
      };
      deniedMaxAgeDays = mkOption {
        type = types.ints.unsigned;
        default = d.deniedMaxAgeDays;
        example = 30;
        description = "Age in days after which `denied/*` tags are dropped.";
      };
      dropIntermediateTags = mkOption {
        type = types.bool;
        default = d.dropIntermediateTags;
        description = "Drop `proposal/`, `approved/` and `building/` tags once their approval has a terminal tag.";
      };
    };

    harness = {
      claudeCommand = mkOption {
        type = types.nullOr (types.nonEmptyListOf types.str);
        default = d.claudeCommand;
        example = literalExpression ''[ "''${pkgs.claude-code}/bin/claude" ]'';
        description = ''
          Command (and leading arguments) the harness runs in place of `claude`; null runs `claude` from PATH
          (see {option}`hyperhive.harness.claudePackage`).
        '';
      };
      claudePackage = mkOption {
        type = types.nullOr types.package;
        default = null;
        example = literalExpression "pkgs.claude-code";
        description = "A package providing `claude`, installed in every container (it is unfree in nixpkgs).";
      };
    };

    manager = mkOption {
      type = types.submodule managerSubmodule;
      default = { };
      example = literalExpression ''{ prompt = "You run this hive."; bash.allow = [ "git *" ]; }'';
      description = ''
        The manager agent (container `hm1nd`): it may send to anyone, spawn agents and propose configuration
        changes, which are deployed only once the operator approves. It sees the config repos at `/agents`
        (read-write), `/applied` and `/meta` (read-only). Its container shares host uids (no user namespace)
        because it commits into the config repos the service owns.
      '';
    };

    agents = mkOption {
      type = types.attrsOf (types.submodule agentSubmodule);
      default = { };
      example = literalExpression ''
        {
          alice = {
            prompt = "You maintain the docs.";
            allowedRecipients = [ "bob" "manager" "operator" ];
            bash.allow = [ "git *" ];
          };
          bob.prompt = "You maintain the code.";
        }
      '';
      description = ''
        The declared agents, one container `h-<name>` each. Agents the manager spawns at run time are not
        listed here; they get their policy from their own config repo.
      '';
    };
  };

  ###### implementation

  config = mkIf cfg.enable (
    let
      hive = hlib.renderHive cfg;
      hiveJson = (pkgs.formats.json { }).generate "hive.json" hive;
      containers = cfg.backend == "nixos-container";
      manager = cfg.manager.name;

      # Host uid that is root inside the container (0 without a user namespace).
      rootUid = name: a: if a.privateUsers then hlib.uidBase cfg name else 0;

      # nixos-containers.nix's directories, named after the host's stateVersion (its `configurationPrefix`: "nixos-"
      # from 22.05 on, none before), with which it also builds the host's `nixos-container`.
      containersPrefix = lib.optionalString (lib.versionAtLeast config.system.stateVersion "22.05") "nixos-";
      containersConfDir = "/etc/${containersPrefix}containers";
      containersStateDir = "/var/lib/${containersPrefix}containers";

      profileOf = container: "/nix/var/nix/profiles/per-container/${container}";
      containerSystemPath = "/nix/var/nix/profiles/system";

      # The host's settings of a container as plain data (modules/container-host.nix turns them into a module):
      # the declaration below and every approved deploy (through /etc/hyperhive/containers.json and the meta
      # flake) import the same thing. Store paths are interpolated, so containers.json refers to them; the `config`
      # files stay paths here (imported by the declaration) and become store paths in containers.json (toJSON
      # copies a path to the store), which the service copies into the meta repo.
      hostData = container: a: {
        inherit container;
        package = "${cfg.package}";
        packages = map (p: "${p}") (a.packages or [ ]);
        claudePackage = if cfg.harness.claudePackage == null then null else "${cfg.harness.claudePackage}";
        claudeCommand = cfg.harness.claudeCommand;
        managerName = manager;
        inherit (cfg) operatorPronouns;
        imports = a.config or [ ];
      };

      # What the service needs to create containers at run time exactly like the declared ones, and to build deploys
      # against this host's own nixpkgs (offline, the same nixpkgs as the host): /etc/hyperhive/containers.json.
      containersJson = (pkgs.formats.json { }).generate "hyperhive-containers.json" {
        # nixos-containers.nix evaluates declared containers with `containers.<name>.nixpkgs`, default pkgs.path.
        nixpkgs = toString pkgs.path;
        inherit (cfg) privateUsersBase;
        uidRanges = hlib.uidRanges;
        # Declared containers (their host data) and the template of a spawned agent's (name and container filled in
        # by the service; a spawned agent's packages and extra configuration come from its own agent.nix).
        containers = builtins.mapAttrs (_: u: u.host) units;
        spawned = hostData "" { };
      };

      # Everything one container needs: its mounts, its root uid, and its NixOS configuration.
      units = mapAttrs' (name: a: nameValuePair (hlib.containerName name) {
        inherit name;
        uid = rootUid name a;
        stateDirs = [ "${cfg.stateDir}/agents/${name}/state" "${cfg.stateDir}/claude/${name}" ];
        socketDir = "${cfg.runDir}/agents/${name}";
        bindMounts = {
          "/run/hive" = { hostPath = "${cfg.runDir}/agents/${name}"; isReadOnly = false; };
          "/state" = { hostPath = "${cfg.stateDir}/agents/${name}/state"; isReadOnly = false; };
          "/root/.claude" = { hostPath = "${cfg.stateDir}/claude/${name}"; isReadOnly = false; };
        };
        host = hostData (hlib.containerName name) a;
        module = {
          imports = [ ./agent.nix ];
          hyperhive = {
            inherit name;
            role = "agent";
            inherit (a) allowedRecipients privateUsers bash model prompt notesCompactBytes turnTimeoutSeconds extraMcpServers;
          };
        };
      }) cfg.agents
      // {
        ${hlib.managerContainer} = {
          name = manager;
          uid = 0;
          stateDirs = [ "${cfg.stateDir}/manager/state" "${cfg.stateDir}/claude/${manager}" ];
          socketDir = "${cfg.runDir}/manager";
          bindMounts = {
            "/run/hive" = { hostPath = "${cfg.runDir}/manager"; isReadOnly = false; };
            "/state" = { hostPath = "${cfg.stateDir}/manager/state"; isReadOnly = false; };
            "/root/.claude" = { hostPath = "${cfg.stateDir}/claude/${manager}"; isReadOnly = false; };
            "/agents" = { hostPath = "${cfg.stateDir}/agents"; isReadOnly = false; };
            "/applied" = { hostPath = "${cfg.stateDir}/applied"; isReadOnly = true; };
            "/meta" = { hostPath = "${cfg.stateDir}/meta"; isReadOnly = true; };
          };
          host = hostData hlib.managerContainer cfg.manager;
          module = {
            imports = [ ./agent.nix ];
            hyperhive = {
              name = manager;
              role = "manager";
              inherit (cfg.manager) bash model prompt notesCompactBytes turnTimeoutSeconds extraMcpServers;
            };
          };
        };
      };

      # Before a container starts: its directories exist and belong to its root uid, and its system profile is
      # seeded with the configuration declared here. The container boots from that profile (not from the
      # declared store path) so that a deploy the operator approved (`nixos-container update`, run by the
      # service) survives restarts; a rebuild of the host that changes the declared configuration seeds it again.
      prepareScript = container: u: toplevel: ''
        set -eu
        install -d -m 0700 ${escapeShellArg (dirOf (builtins.head u.stateDirs))}
        install -d -m 0700 ${escapeShellArg u.socketDir}
        chown ${toString u.uid}:${toString u.uid} ${escapeShellArg u.socketDir}
        for dir in ${concatStringsSep " " (map escapeShellArg u.stateDirs)}; do
          # The manager's container writes <stateDir>/agents: never mount or chown through a link planted there.
          for path in "$dir" "$(dirname "$dir")"; do
            if [ -L "$path" ]; then
              echo "$path is a symbolic link; refusing to mount it into ${container} (make it a directory)" >&2
              exit 1
            fi
          done
          install -d -m 0700 "$dir"
          # Re-own what is there when the mapping changed (privateUsers or uidBase switched).
          if [ "$(stat -c %u "$dir")" != ${toString u.uid} ]; then
            chown -R ${toString u.uid}:${toString u.uid} "$dir"
          fi
        done
        profile=${profileOf container}
        seeded=${escapeShellArg "${cfg.stateDir}/seeded/${container}"}
        install -d -m 0755 "$profile" ${escapeShellArg "${cfg.stateDir}/seeded"}
        if [ ! -e "$profile/system" ] || [ "$(cat "$seeded" 2>/dev/null)" != ${toplevel} ]; then
          nix-env --profile "$profile/system" --set ${toplevel}
          echo ${toplevel} > "$seeded"
        fi
      '';

      hardening = {
        ProtectSystem = "strict";
        ReadWritePaths = [ cfg.stateDir cfg.runDir ]
          # What `nixos-container create|update|destroy` and `nix-env --profile` write.
          ++ optionals containers [
          "-${containersConfDir}"
          "-${containersStateDir}"
          "-/nix/var/nix/profiles/per-container"
          "-/nix/var/nix/gcroots/per-container"
          "-/run/lock"
        ];
        ProtectHome = true;
        PrivateTmp = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        UMask = "0022";
      };
      underVarLib = lib.hasPrefix "/var/lib/" cfg.stateDir;
      underRun = lib.hasPrefix "/run/" cfg.runDir;
    in
    {
      assertions = map (message: { assertion = false; inherit message; }) (hlib.problems cfg);

      # A copy (mode set), not a symlink into /etc/static: the service watches this file and sees it replaced.
      environment.etc."hyperhive/hive.json" = { source = hiveJson; mode = "0440"; };
      # Read by the service at each deploy and spawn (hyperhive/backends/nixos_container.py).
      environment.etc."hyperhive/containers.json" = mkIf containers { source = containersJson; };

      environment.systemPackages = [ cfg.package ];

      # The service builds the meta flake for deploys.
      nix.settings.experimental-features = [ "nix-command" "flakes" ];

      systemd.tmpfiles.rules = [
        "d ${cfg.stateDir} 0700 root root -"
        "d ${cfg.stateDir}/agents 0700 root root -"
        "d ${cfg.stateDir}/manager 0700 root root -"
        "d ${cfg.stateDir}/claude 0700 root root -"
        "d ${cfg.stateDir}/applied 0700 root root -"
        # proposals waiting for the operator: mounted in no container (docs/security.md)
        "d ${cfg.stateDir}/quarantine 0700 root root -"
        "d ${cfg.stateDir}/meta 0700 root root -"
        "d ${cfg.runDir} 0755 root root -"
        # The service keeps it 0700 too (transport.private_dir); each agent's own directory below belongs to its
        # container's root uid (the prepare unit), which owns the agent's 0600 socket (transport.SocketServer).
        "d ${cfg.runDir}/agents 0700 root root -"
      ];

      systemd.services = {
        hyperhive = {
          description = "hyperhive broker and operator dashboard";
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" "systemd-tmpfiles-setup.service" ];
          path = [ pkgs.git config.nix.package pkgs.coreutils ]
            # nixos-container (the host's, configured for its state directories) and machinectl.
            ++ optional containers "/run/current-system/sw";
          environment = {
            HYPERHIVE_CONFIG = "/etc/hyperhive/hive.json";
            HYPERHIVE_AGENT_TEMPLATE = "${cfg.agentTemplate}";
          } // optionalAttrs containers {
            HYPERHIVE_CONTAINERS = "/etc/hyperhive/containers.json";
            # Where `nixos-container create` writes a container's conf (which the service rewrites for a spawned
            # agent) and where the containers' roots (their journals) lie.
            HYPERHIVE_NIXOS_CONTAINERS_DIR = containersConfDir;
            HYPERHIVE_NIXOS_CONTAINERS_STATE_DIR = containersStateDir;
          } // optionalAttrs (cfg.flake != null) {
            HYPERHIVE_FLAKE = cfg.flake;
          } // {
            # ProtectSystem makes /nix read-only here: build through the daemon.
            NIX_REMOTE = "daemon";
            # ProtectHome hides /root: git and nix keep their config and caches under the state directory.
            HOME = cfg.stateDir;
            XDG_CACHE_HOME = "${cfg.stateDir}/cache";
          };
          # The service reloads hive.json itself when it changes (an invalid file is refused and the old one
          # kept); a reload on switch checks the new file so that `nixos-rebuild switch` reports a bad one.
          reloadTriggers = [ hiveJson ];
          serviceConfig = hardening // {
            Type = "simple";
            ExecStart = "${cfg.package}/bin/hyperhive serve --config /etc/hyperhive/hive.json";
            ExecReload = "${cfg.package}/bin/hyperhive config check /etc/hyperhive/hive.json";
            # nixos-container.pl's buildFlake runs `nix build -o "$systemPath.tmp"` with a path relative to the
            # working directory (pkgs/tools/virtualization/nixos-container/nixos-container.pl): without one the
            # unit's is `/`, read-only under ProtectSystem=strict, and every deploy and spawn would fail there.
            # The state directory is writable (ReadWritePaths, StateDirectory); the backend also runs its commands
            # in <stateDir>/build.
            WorkingDirectory = cfg.stateDir;
            Restart = "on-failure";
            RestartSec = "5s";
          }
          // optionalAttrs underVarLib {
            StateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir;
            StateDirectoryMode = "0700";
          }
          // optionalAttrs underRun {
            RuntimeDirectory = lib.removePrefix "/run/" cfg.runDir;
            RuntimeDirectoryMode = "0755";
            # The socket directories are bind-mounted into running containers: keep them across restarts.
            RuntimeDirectoryPreserve = "yes";
          };
        };
      }
      // lib.optionalAttrs containers (mapAttrs' (container: u:
        let toplevel = config.containers.${container}.config.system.build.toplevel; in
        nameValuePair "hyperhive-prepare-${container}" {
          description = "Prepare directories and system profile of hyperhive container ${container}";
          requiredBy = [ "container@${container}.service" ];
          before = [ "container@${container}.service" ];
          after = [ "systemd-tmpfiles-setup.service" ];
          path = [ pkgs.coreutils config.nix.package ];
          restartTriggers = [ toplevel ];
          serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
          script = prepareScript container u toplevel;
        }) units)
      // lib.optionalAttrs containers (mapAttrs' (container: _:
        nameValuePair "container@${container}" {
          # Restart the container when the host's declaration of it changes (its profile is seeded again).
          restartTriggers = [ config.containers.${container}.config.system.build.toplevel ];
        }) units);

      containers = mkIf containers (builtins.mapAttrs (container: u: {
        autoStart = true;
        # The host network is shared: the broker is reached through the socket, not over the network.
        privateNetwork = false;
        privateUsers = if u.uid == 0 then "no" else u.uid;
        # Own the container's root tree to its uid range on first boot (bind mounts are chowned above).
        extraFlags = optional (u.uid != 0) "--private-users-ownership=auto";
        inherit (u) bindMounts;
        # Boot the profile the prepare unit seeds and approved deploys update (see prepareScript). nixos-containers.nix
        # writes this as SYSTEM_PATH into /etc/nixos-containers/<c>.conf and starts
        # `systemd-nspawn ... "$SYSTEM_PATH/init"`: nspawn resolves that path INSIDE the container, where
        # /nix/var/nix/profiles is the bind mount of the host's /nix/var/nix/profiles/per-container/<c>. So the
        # container's own `/nix/var/nix/profiles/system` is the seeded profile; the host's per-container path does not
        # exist in there. ExecReload (`switch-to-configuration` after `nixos-container update`) resolves it there too.
        path = mkForce containerSystemPath;
        config = {
          imports = [ u.module (import ./container-host.nix u.host) ];
        };
      }) units);

      networking.firewall.allowedTCPPorts = optional cfg.dashboard.openFirewall cfg.dashboard.listen.port;
    }
  );
}
