# The module every agent container imports (declared by the host module, or built from the meta flake for a deploy):
# the agent's policy as options `hyperhive.*`, Claude Code's managed settings rendered from them, and the harness,
# `hive-agent.service`, which talks to the broker over /run/hive/mcp.sock.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption mkIf mkDefault types literalExpression optional;

  hlib = import ./lib.nix;
  shared = import ./options.nix { inherit lib; };
  d = hlib.defaults;
  cfg = config.hyperhive;
  json = pkgs.formats.json { };
  # The manager's only git is this executable's `git` subcommand (hyperhive/manager_git.py); its Bash rule names
  # it by this absolute path, in the managed settings and in agent.json alike.
  hyperhiveCommand = "${cfg.package}/bin/hyperhive";
in
{
  ###### interface

  options.hyperhive = shared.commonOptions // {
    enable = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Whether this system runs the hive harness. On by default: this module is only imported into agent
        containers.
      '';
    };

    name = mkOption {
      type = shared.nameType;
      example = "alice";
      description = "The agent's name (its container is `h-<name>`; the manager's is `hm1nd`).";
    };

    role = mkOption {
      type = types.enum [ "agent" "manager" ];
      default = "agent";
      description = "`manager` for the hive's manager, `agent` for everyone else.";
    };

    allowedRecipients = shared.allowedRecipientsOption;

    privateUsers = mkOption {
      type = types.bool;
      default = d.privateUsers;
      example = false;
      description = ''
        Whether the host runs this container in its own user namespace (container root an unprivileged host uid).
        The host applies it: the host module for declared agents, the service for agents spawned at run time.
      '';
    };

    managerName = mkOption {
      type = shared.nameType;
      default = d.manager;
      example = "boss";
      description = "The name of the hive's manager (what this agent sends to when it reports).";
    };

    operatorPronouns = mkOption {
      type = types.str;
      default = d.operatorPronouns;
      example = "she/her";
      description = "How the agent refers to the operator.";
    };

    package = mkOption {
      type = types.package;
      defaultText = literalExpression "hyperhive.packages.\${system}.hyperhive (set by the flake's nixosModules.agent)";
      description = "The hyperhive package whose `hyperhive agent` is the harness.";
    };

    socket = mkOption {
      type = shared.absolutePath;
      default = d.socket;
      description = "The broker socket bind-mounted into this container; it is the agent's identity.";
    };

    claudeCommand = mkOption {
      type = types.nullOr (types.nonEmptyListOf types.str);
      default = d.claudeCommand;
      example = [ "python3" "/etc/hyperhive/fake_claude.py" ];
      description = "Command the harness runs in place of `claude`; null runs `claude` from PATH.";
    };

    claudePackage = mkOption {
      type = types.nullOr types.package;
      default = null;
      example = literalExpression "pkgs.claude-code";
      description = "A package providing `claude`, put on the harness's PATH.";
    };

    git = {
      name = mkOption {
        type = types.str;
        default = "${cfg.name} (hyperhive)";
        defaultText = literalExpression ''"''${config.hyperhive.name} (hyperhive)"'';
        description = "Git author name of the commits the agent makes (system-wide, so Claude Code's root has it).";
      };
      email = mkOption {
        type = types.str;
        default = "${cfg.name}@hyperhive.invalid";
        defaultText = literalExpression ''"''${config.hyperhive.name}@hyperhive.invalid"'';
        description = "Git author email of the commits the agent makes.";
      };
    };

    policy = mkOption {
      type = types.attrsOf types.anything;
      readOnly = true;
      description = ''
        The agent's policy as hive.json spells it (`agents.<name>`, or `managerSettings` for the manager), plus
        `name` and `role`: what the service reads with `nix eval --json` for an agent spawned at run time.
        The harness reads it, with the hive facts it needs, from /etc/hyperhive/agent.json (`--agent-config`).
      '';
    };
  };

  ###### implementation

  config = lib.mkMerge [
    { hyperhive.policy = hlib.renderPolicy cfg; }

    (mkIf cfg.enable {
      assertions = [
        {
          assertion = !(cfg.extraMcpServers ? hyperhive);
          message = "hyperhive.extraMcpServers.hyperhive: the name \"hyperhive\" is taken by the hive's own tools";
        }
        {
          assertion = cfg.role == "agent" || cfg.allowedRecipients == null;
          message = "hyperhive.allowedRecipients: the manager may always send anywhere; leave it null for role \"manager\"";
        }
        {
          assertion = cfg.role == "manager" || !(builtins.elem cfg.name hlib.reservedNames);
          message = "hyperhive.name: \"${cfg.name}\" is reserved (${lib.concatStringsSep ", " hlib.reservedNames}) and cannot name an agent";
        }
      ];

      boot.isNspawnContainer = mkDefault true;
      system.stateVersion = mkDefault "25.05";

      # The container shares the host's network namespace; the host's firewall is the one that applies.
      networking.firewall.enable = mkDefault false;

      environment.etc = {
        "claude-code/managed-settings.json".source =
          json.generate "managed-settings.json"
            (hlib.renderClaudeSettings (cfg // { inherit hyperhiveCommand; }));
        "hyperhive/agent.json".source = json.generate "agent.json" (cfg.policy // {
          manager = cfg.managerName;
          inherit (cfg) claudeCommand operatorPronouns;
          inherit hyperhiveCommand;
          stateDir = "/state";
        });
      };

      environment.systemPackages =
        [ cfg.package pkgs.git ] ++ cfg.packages ++ optional (cfg.claudePackage != null) cfg.claudePackage;

      # Claude Code runs as root in the container; /etc/gitconfig gives it (and the manager's commits) an identity.
      programs.git = {
        enable = true;
        config = {
          user = { inherit (cfg.git) name email; };
          init.defaultBranch = "main";
        };
      };

      systemd.services.hive-agent = {
        description = "hyperhive harness of ${cfg.role} ${cfg.name}";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        path = [ cfg.package pkgs.git pkgs.bash pkgs.coreutils ] ++ cfg.packages
          ++ optional (cfg.claudePackage != null) cfg.claudePackage;
        environment = {
          HOME = "/root";
          HYPERHIVE_SOCKET = cfg.socket;
          HYPERHIVE_AGENT_NAME = cfg.name;
        };
        restartTriggers = [
          config.environment.etc."hyperhive/agent.json".source
          config.environment.etc."claude-code/managed-settings.json".source
        ];
        unitConfig.RequiresMountsFor = [ "/state" ];
        serviceConfig = {
          ExecStart = lib.escapeShellArgs [
            "${cfg.package}/bin/hyperhive" "agent"
            "--name" cfg.name
            "--socket" cfg.socket
            "--agent-config" "/etc/hyperhive/agent.json"
            "--state-dir" "/state"
          ];
          WorkingDirectory = "/state";
          # The broker may be restarting or not up yet: the harness exits and comes back.
          Restart = "always";
          RestartSec = "5s";
        };
      };
    })
  ];
}
