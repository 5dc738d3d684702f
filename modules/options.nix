# Option declarations shared by the host module (hyperhive.agents.<name>, hyperhive.manager) and the agent module
# (hyperhive.* inside a container), so both describe an agent's policy the same way.
{ lib }:
let
  inherit (lib) mkOption types literalExpression;
  hlib = import ./lib.nix;
  d = hlib.defaults;
in
rec {
  # 1 to 9 characters, the last a letter or digit: the container is `h-<name>` (nixos-container allows eleven
  # characters), and its host name too (see lib.nix).
  nameType = types.strMatching hlib.namePattern;

  absolutePath = types.strMatching "/.*";

  mcpServerType = types.submodule {
    options = {
      command = mkOption {
        type = types.str;
        example = "/run/current-system/sw/bin/mcp-server-fetch";
        description = "Executable of the MCP server, started by Claude Code over stdio inside the container.";
      };
      args = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--root" "/state" ];
        description = "Arguments passed to the MCP server.";
      };
      env = mkOption {
        type = types.attrsOf types.str;
        default = { };
        example = { LOG_LEVEL = "warning"; };
        description = "Environment of the MCP server.";
      };
    };
  };

  # A daily (UTC) spending limit: hive.json's `budget` (the whole hive) and `agents.<name>.budget`.
  budgetOption = what: {
    dailyUsd = mkOption {
      type = types.nullOr (types.addCheck types.number (n: n >= 0) // { description = "number of 0 or more"; });
      default = d.dailyUsd;
      example = 5;
      description = ''
        Dollars ${what} may spend per UTC day (Claude Code's `total_cost_usd`, summed over turns and compactions);
        null is no limit. Before each turn the service checks that the day's spending plus the last turn's cost
        stays within it; otherwise no turn starts, messages wait, and the operator is asked whether to raise it.
      '';
    };
    dailyTokens = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = d.dailyTokens;
      example = 2000000;
      description = ''
        Tokens (input, output, cache read and cache write) ${what} may use per UTC day; null is no limit. Checked
        like `dailyUsd`.
      '';
    };
  };

  # The per-agent settings that agents and the manager share (hive.json's `agents.<name>` / `managerSettings`).
  commonOptions = {
    budget = budgetOption "the agent";
    model = mkOption {
      type = types.nullOr types.str;
      default = d.model;
      example = "claude-sonnet-4-5";
      description = "Model passed to Claude Code with `--model`; null uses Claude Code's default.";
    };
    prompt = mkOption {
      type = types.lines;
      default = d.prompt;
      example = "You maintain the docs. Ask bob when you need facts about the code.";
      description = "The agent's standing instructions, given to Claude Code as its system prompt.";
    };
    bash.allow = mkOption {
      type = types.listOf types.str;
      default = d.bashAllow;
      example = [ "git *" "nix build .*" ];
      description = ''
        Commands the agent may run through Claude Code's Bash tool, as Claude Code permission patterns (each
        becomes a rule `Bash(<pattern>)`). Anything else is refused without asking (`defaultMode` `dontAsk`).
      '';
    };
    notesCompactBytes = mkOption {
      type = types.ints.positive;
      default = d.notesCompactBytes;
      example = 131072;
      description = "Size of `/state/notes.md` above which the harness compacts the notes after a turn.";
    };
    turnTimeoutSeconds = mkOption {
      type = types.ints.positive;
      default = d.turnTimeoutSeconds;
      example = 600;
      description = "Longest one Claude Code turn may run before the harness stops it.";
    };
    extraMcpServers = mkOption {
      type = types.attrsOf mcpServerType;
      default = { };
      example = literalExpression ''
        { fetch = { command = "''${pkgs.mcp-server-fetch}/bin/mcp-server-fetch"; }; }
      '';
      description = ''
        MCP servers offered to Claude Code besides the hive's own tools (their tools are allowed as
        `mcp__<name>`). The name `hyperhive` is taken by the hive's tools.
      '';
    };
    packages = mkOption {
      type = types.listOf types.package;
      default = [ ];
      example = literalExpression "[ pkgs.ripgrep pkgs.jq ]";
      description = "Packages installed in the agent's container and put on the harness's PATH.";
    };
  };

  # Who an agent may send to (hive.json's `agents.<name>.allowedRecipients`).
  allowedRecipientsOption = mkOption {
    type = types.nullOr (types.listOf nameType);
    default = d.allowedRecipients;
    example = [ "bob" "manager" "operator" ];
    description = ''
      Whom the agent may `send` to: agent names, the manager's name, `operator`. null leaves it unrestricted;
      a list restricts it (the broker refuses anything else, naming the allowed list).
    '';
  };
}
