# Pure helpers shared by the host module, the agent module and the tests.
#
# Builtins only (no nixpkgs, no lib): `nix-instantiate --eval --strict --json` can evaluate everything here on a
# machine that has Nix but neither nixpkgs nor NixOS. The input of `renderHive` is the evaluated `config.hyperhive`
# of the host module (or a partial attrset of the same shape: missing keys take the defaults below), and its output
# is the attrset written to /etc/hyperhive/hive.json, the schema the Python loader (`hyperhive.config`) reads.
let
  inherit (builtins)
    all attrNames concatLists concatStringsSep elem filter foldl' getAttr hasAttr hashString isAttrs isBool isInt
    isList isString length listToAttrs map mapAttrs match stringLength substring toJSON;

  # The schema version of hive.json this file renders.
  version = 1;

  # Agent names: the container is `h-<name>` and nixos-container allows eleven characters. The container's host
  # name is `h-<name>` too (modules/container-host.nix), and nixpkgs' networking.hostName is a DNS label that ends
  # with a letter or digit (nixos/modules/tasks/network-interfaces.nix: `^$|^[[:alnum:]]([[:alnum:]_-]{0,61}
  # [[:alnum:]])?$`; systemd's machine names refuse a trailing '-' as well): so a name ends with one.
  namePattern = "[a-z]([a-z0-9-]{0,7}[a-z0-9])?";
  # the names the service uses for itself (config.py RESERVED_NAMES): "hive" holds host-wide telemetry
  reservedNames = [ "manager" "operator" "system" "hive" ];
  managerContainer = "hm1nd";
  containerName = name: "h-${name}";

  # The longest broker times (config.py MAX_RECV_WAIT_SECONDS, MAX_LEASE_SECONDS): a parked recv of more than a day,
  # or a lease of more than a week, helps nobody, and 1e12 would overflow the service's waits.
  maxSeconds = {
    recvMaxWaitSeconds = 86400;
    leaseSeconds = 604800;
  };

  # Defaults, the single source for the options of both modules and for partial inputs here.
  defaults = {
    stateDir = "/var/lib/hyperhive";
    runDir = "/run/hyperhive";
    manager = "manager";
    backend = "nixos-container";
    backends = [ "nixos-container" "local" ];
    operatorPronouns = "they/them";
    listenAddress = "127.0.0.1";
    listenPort = 8080;
    tokenFile = null;
    maxMessageBytes = 65536;
    recvMaxWaitSeconds = 180;
    leaseSeconds = 600;
    maxConnectionsPerAgent = 32;
    idleTimeoutSeconds = 900;
    failedMaxAgeDays = 14;
    deniedMaxAgeDays = 14;
    dropIntermediateTags = true;
    sessionMaxAgeSeconds = 43200;
    maxUnackedPerSender = 100;
    maxPendingQuestions = 20;
    maxPendingApprovals = 20;
    maxPendingReminders = 50;
    maxDrafts = 10;
    # Daily (UTC) spending limits, hive-wide and per agent: null is no limit.
    dailyUsd = null;
    dailyTokens = null;
    claudeCommand = null;
    allowedRecipients = null;
    bashAllow = [ ];
    privateUsers = true;
    model = null;
    prompt = "";
    notesCompactBytes = 65536;
    turnTimeoutSeconds = 1800;
    # Host uid ranges for user-namespaced agents: base + slot * 65536, the slot taken from a hash of the name
    # (stable when agents are added or removed). See `uidRanges` below for why they start at 0x70000000.
    privateUsersBase = 1879048192;
    socket = "/run/hive/mcp.sock";
  };

  # `set.a.b` or `default` when any step is missing (partial inputs, e.g. the examples under nix/examples).
  attrPath = path: default: set:
    if path == [ ] then set
    else if isAttrs set && hasAttr (builtins.head path) set
    then attrPath (builtins.tail path) default (getAttr (builtins.head path) set)
    else default;

  isName = n: isString n && match namePattern n != null;

  # Option paths as the module system prints them, agent names always quoted so a bad name reads clearly.
  agentPath = name: "hyperhive.agents.${toJSON name}";

  hexDigits = {
    "0" = 0; "1" = 1; "2" = 2; "3" = 3; "4" = 4; "5" = 5; "6" = 6; "7" = 7;
    "8" = 8; "9" = 9; "a" = 10; "b" = 11; "c" = 12; "d" = 13; "e" = 14; "f" = 15;
  };
  hexToInt = s: foldl' (acc: i: acc * 16 + getAttr (substring i 1 s) hexDigits) 0 (builtins.genList (i: i) (stringLength s));

  # Where the uid ranges of user-namespaced agents may lie. systemd's UID allocation (docs/UIDS-GIDS.md, and
  # src/basic/uid-classification.h: CONTAINER_UID_BASE_MIN/MAX) gives 0x00080000-0x6FFFFFFF to container ranges:
  # `systemd-nspawn --private-users=pick` (nixos-containers.nix's `privateUsers = "pick"`) hashes the machine name
  # into that region and takes any range there that looks free, so a fixed range we chose inside it could be picked
  # by another container before ours starts (or ours could take one it picked). 0x70000000-0x7FFFFFFF is unused by
  # systemd except the foreign UID range 0x7FFE0000-0x7FFEFFFF (systemd 257+), and uids from 2^31 on are "HIC SVNT
  # LEONES" (signed 32-bit trouble). So hashed ranges lie in [0x70000000, 0x7FFE0000): 4094 ranges of 65536, none
  # of which pick can choose, none foreign, all below 2^31.
  uidRanges = {
    pickMin = 524288;          # 0x00080000, first uid nspawn's pick may use
    pickEnd = 1879048192;      # 0x70000000, first uid after the last range pick may use (0x6FFF0000 + 65536)
    foreignMin = 2147352576;   # 0x7FFE0000
    foreignEnd = 2147418112;   # 0x7FFF0000
    hashedEnd = 2147352576;    # hashed ranges end below the foreign range
    limit = 2147483648;        # 2^31
  };

  # Whether the range [base, base + 65536) is one hyperhive may use: a multiple of 65536, above the 16-bit uids,
  # outside nspawn's pick region and the foreign range, below 2^31.
  uidRangeProblem = base:
    let r = uidRanges; end = base + 65536; in
    if !(isInt base) || base - 65536 * (base / 65536) != 0 then "must be a multiple of 65536"
    else if base < 65536 then "must be at least 65536 (container root must not be a host user)"
    else if end > r.pickMin && base < r.pickEnd then
      "lies in systemd-nspawn's --private-users=pick region 0x00080000-0x6FFFFFFF, where another container may take it"
    else if end > r.foreignMin && base < r.foreignEnd then "lies in systemd's foreign UID range 0x7FFE0000-0x7FFEFFFF"
    else if end > r.limit then "must end below 2^31"
    else null;

  # How many hashed ranges fit from `base` to the foreign range.
  uidSlots = base: (uidRanges.hashedEnd - base) / 65536;

  # The first host uid of an agent's user namespace (container root is this uid on the host). The Python side
  # (hyperhive/backends/nixos_container.py: uid_base) computes the same for agents spawned at run time.
  uidBase = cfg: name:
    let
      explicit = attrPath [ "agents" name "uidBase" ] null cfg;
      base = attrPath [ "privateUsersBase" ] defaults.privateUsersBase cfg;
      slots = uidSlots base;
      hash = hexToInt (substring 0 4 (hashString "sha256" name));
    in
    if explicit != null then explicit
    else base + 65536 * (hash - slots * (hash / slots));

  managerName = cfg: attrPath [ "manager" "name" ] defaults.manager cfg;
  agentNames = cfg: attrNames (attrPath [ "agents" ] { } cfg);

  listen = cfg:
    let
      address = attrPath [ "dashboard" "listen" "address" ] defaults.listenAddress cfg;
      port = attrPath [ "dashboard" "listen" "port" ] defaults.listenPort cfg;
      host = if match ".*:.*" address != null then "[${address}]" else address;
    in
    "${host}:${toString port}";

  renderMcp = servers: mapAttrs
    (_: s: {
      command = s.command;
      args = attrPath [ "args" ] [ ] s;
      env = attrPath [ "env" ] { } s;
    })
    servers;

  # A daily budget (`hyperhive.budget`, `hyperhive.agents.<n>.budget`, `hyperhive.manager.budget`) as hive.json
  # spells it; the service enforces it before each turn (hyperhive/insight.py).
  renderBudget = a: {
    dailyUsd = attrPath [ "budget" "dailyUsd" ] defaults.dailyUsd a;
    dailyTokens = attrPath [ "budget" "dailyTokens" ] defaults.dailyTokens a;
  };

  # The per-agent keys shared by agents and the manager; `a` is one agent's (or the manager's) options.
  renderCommon = a: {
    bashAllow = attrPath [ "bash" "allow" ] defaults.bashAllow a;
    model = attrPath [ "model" ] defaults.model a;
    prompt = attrPath [ "prompt" ] defaults.prompt a;
    notesCompactBytes = attrPath [ "notesCompactBytes" ] defaults.notesCompactBytes a;
    turnTimeoutSeconds = attrPath [ "turnTimeoutSeconds" ] defaults.turnTimeoutSeconds a;
    extraMcpServers = renderMcp (attrPath [ "extraMcpServers" ] { } a);
    budget = renderBudget a;
  };

  renderAgent = a: renderCommon a // {
    allowedRecipients = attrPath [ "allowedRecipients" ] defaults.allowedRecipients a;
    privateUsers = attrPath [ "privateUsers" ] defaults.privateUsers a;
  };

  # Every problem of `cfg`, one sentence each, led by the option path. Empty when the configuration is usable.
  # The host module turns these into `assertions`; `renderHive` refuses to render while there is any.
  problems = cfg:
    let
      manager = managerName cfg;
      names = agentNames cfg;
      known = names ++ [ manager "operator" ];
      agent = name: getAttr name cfg.agents;

      nameProblems = concatLists (map
        (name:
          if !isName name then
            [ "${agentPath name}.name: invalid agent name ${toJSON name}: use 1 to 9 characters, a lowercase letter first, then lowercase letters, digits or '-', and a letter or digit last (the container is h-<name>)" ]
          else if name == manager then
            [ "${agentPath name}: ${toJSON name} is the manager's name (hyperhive.manager.name); the manager is not declared as an agent" ]
          else if elem name reservedNames then
            [ "${agentPath name}.name: ${toJSON name} is reserved (${concatStringsSep ", " reservedNames}) and cannot name an agent" ]
          else [ ])
        names);

      managerProblems =
        if !isName manager then
          [ "hyperhive.manager.name: invalid name ${toJSON manager}: use 1 to 9 characters, a lowercase letter first, then lowercase letters, digits or '-', and a letter or digit last" ]
        else if elem manager [ "operator" "system" "hive" ] then
          [ "hyperhive.manager.name: ${toJSON manager} is reserved for the hive itself" ]
        else [ ];

      recipientProblems = concatLists (map
        (name:
          let to = attrPath [ "allowedRecipients" ] null (agent name); in
          if to == null then [ ]
          else if !isList to then [ "${agentPath name}.allowedRecipients: must be null or a list of names" ]
          else map
            (r: "${agentPath name}.allowedRecipients: unknown recipient ${toJSON r} (known: ${concatStringsSep ", " known})")
            (filter (r: !elem r known) to))
        names);

      mcpProblems = path: a:
        let servers = attrPath [ "extraMcpServers" ] { } a; in
        (if hasAttr "hyperhive" servers
        then [ "${path}.extraMcpServers.hyperhive: the name \"hyperhive\" is taken by the hive's own tools" ]
        else [ ])
        ++ concatLists (map
          (s:
            if !(isAttrs (getAttr s servers) && isString (attrPath [ "command" ] null (getAttr s servers)))
            then [ "${path}.extraMcpServers.${toJSON s}.command: must be a string" ] else [ ])
          (attrNames servers));

      numberProblems = path: a: concatLists (map
        (key:
          let v = attrPath [ key ] 1 a; in
          if isInt v && v > 0 then [ ] else [ "${path}.${key}: must be a positive integer, got ${toJSON v}" ])
        [ "notesCompactBytes" "turnTimeoutSeconds" ]);

      perAgentProblems = concatLists (map
        (name: mcpProblems (agentPath name) (agent name) ++ numberProblems (agentPath name) (agent name)
          ++ (if isBool (attrPath [ "privateUsers" ] true (agent name)) then [ ]
          else [ "${agentPath name}.privateUsers: must be a boolean" ]))
        names)
      ++ mcpProblems "hyperhive.manager" (attrPath [ "manager" ] { } cfg)
      ++ numberProblems "hyperhive.manager" (attrPath [ "manager" ] { } cfg);

      # Two user-namespaced agents must not share a host uid range.
      namespaced = filter (n: isName n && attrPath [ "privateUsers" ] defaults.privateUsers (agent n) == true) names;
      base = attrPath [ "privateUsersBase" ] defaults.privateUsersBase cfg;
      baseProblems =
        if !(isInt base) || base < uidRanges.pickEnd || base >= uidRanges.hashedEnd || uidRangeProblem base != null then
          [ "hyperhive.privateUsersBase: must be a multiple of 65536 from 0x70000000 (1879048192) up to below 0x7FFE0000, above systemd-nspawn's --private-users=pick region, got ${toJSON base}" ]
        else [ ];
      explicitProblems = concatLists (map
        (n:
          let explicit = attrPath [ "uidBase" ] null (agent n); problem = if explicit == null then null else uidRangeProblem explicit; in
          if problem == null then [ ] else [ "${agentPath n}.uidBase: ${toJSON explicit} ${problem}" ])
        namespaced);
      uidProblems = baseProblems ++ explicitProblems ++ concatLists (map
        (n:
          let clash = filter (m: m < n && uidBase cfg m == uidBase cfg n) namespaced; in
          if clash == [ ] then [ ]
          else [ "${agentPath n}.uidBase: the host uid range ${toString (uidBase cfg n)} is also ${agentPath (builtins.head clash)}'s; set uidBase of one of them explicitly (a multiple of 65536)" ])
        namespaced);

      port = attrPath [ "dashboard" "listen" "port" ] defaults.listenPort cfg;
      backend = attrPath [ "backend" ] defaults.backend cfg;
      claudeCommand = attrPath [ "harness" "claudeCommand" ] defaults.claudeCommand cfg;
      absolute = key: default:
        let v = attrPath [ key ] default cfg; in
        if isString v && match "/.*" v != null then [ ] else [ "hyperhive.${key}: must be an absolute path, got ${toJSON v}" ];
      tokenFile = attrPath [ "dashboard" "tokenFile" ] null cfg;
      address = attrPath [ "dashboard" "listen" "address" ] defaults.listenAddress cfg;
      loopback = elem address [ "localhost" "::1" ] || match "127[.][0-9.]+" address != null;
      intFrom = lo: hi: section: key:
        let v = attrPath [ section key ] (getAttr key defaults) cfg; in
        if isInt v && v >= lo && (hi == null || v <= hi) then [ ]
        else [ "hyperhive.${section}.${key}: must be an integer ${if hi == null then "of ${toString lo} or more" else "from ${toString lo} to ${toString hi}"}, got ${toJSON v}" ];
    in
    nameProblems ++ managerProblems ++ recipientProblems ++ perAgentProblems ++ uidProblems
    ++ intFrom 1 maxSeconds.recvMaxWaitSeconds "broker" "recvMaxWaitSeconds"
    ++ intFrom 1 maxSeconds.leaseSeconds "broker" "leaseSeconds"
    ++ intFrom 0 null "retention" "failedMaxAgeDays" ++ intFrom 0 null "retention" "deniedMaxAgeDays"
    ++ absolute "stateDir" defaults.stateDir ++ absolute "runDir" defaults.runDir
    ++ (if isInt port && port > 0 && port < 65536 then [ ]
    else [ "hyperhive.dashboard.listen.port: must be a port from 1 to 65535, got ${toJSON port}" ])
    ++ (if elem backend defaults.backends then [ ]
    else [ "hyperhive.backend: unknown backend ${toJSON backend} (known: ${concatStringsSep ", " defaults.backends})" ])
    ++ (if claudeCommand == null || (isList claudeCommand && claudeCommand != [ ] && all isString claudeCommand) then [ ]
    else [ "hyperhive.harness.claudeCommand: must be null (claude on PATH) or a non-empty list of strings" ])
    ++ (if tokenFile == null || (isString tokenFile && match "/.*" tokenFile != null) then [ ]
    else [ "hyperhive.dashboard.tokenFile: must be null or an absolute path, got ${toJSON tokenFile}" ])
    ++ (if loopback || tokenFile != null then [ ]
    else [ "hyperhive.dashboard.listen.address: ${toJSON address} is not a loopback address and hyperhive.dashboard.tokenFile is not set: the dashboard would be open to the network without a token" ]);

  # options -> hive.json (an attrset; the host module writes it with pkgs.formats.json).
  renderHive = cfg:
    let
      found = problems cfg;
      manager = managerName cfg;
    in
    if found != [ ] then
      throw "hyperhive: the configuration cannot be rendered to hive.json:\n- ${concatStringsSep "\n- " found}"
    else {
      inherit version manager;
      stateDir = attrPath [ "stateDir" ] defaults.stateDir cfg;
      runDir = attrPath [ "runDir" ] defaults.runDir cfg;
      backend = attrPath [ "backend" ] defaults.backend cfg;
      operatorPronouns = attrPath [ "operatorPronouns" ] defaults.operatorPronouns cfg;
      dashboard = {
        listen = listen cfg;
        tokenFile = attrPath [ "dashboard" "tokenFile" ] defaults.tokenFile cfg;
        sessionMaxAgeSeconds = attrPath [ "dashboard" "sessionMaxAgeSeconds" ] defaults.sessionMaxAgeSeconds cfg;
      };
      budget = renderBudget cfg;
      limits = {
        maxUnackedPerSender = attrPath [ "limits" "maxUnackedPerSender" ] defaults.maxUnackedPerSender cfg;
        maxPendingQuestions = attrPath [ "limits" "maxPendingQuestions" ] defaults.maxPendingQuestions cfg;
        maxPendingApprovals = attrPath [ "limits" "maxPendingApprovals" ] defaults.maxPendingApprovals cfg;
        maxPendingReminders = attrPath [ "limits" "maxPendingReminders" ] defaults.maxPendingReminders cfg;
        maxDrafts = attrPath [ "limits" "maxDrafts" ] defaults.maxDrafts cfg;
      };
      broker = {
        maxMessageBytes = attrPath [ "broker" "maxMessageBytes" ] defaults.maxMessageBytes cfg;
        recvMaxWaitSeconds = attrPath [ "broker" "recvMaxWaitSeconds" ] defaults.recvMaxWaitSeconds cfg;
        leaseSeconds = attrPath [ "broker" "leaseSeconds" ] defaults.leaseSeconds cfg;
        maxConnectionsPerAgent = attrPath [ "broker" "maxConnectionsPerAgent" ] defaults.maxConnectionsPerAgent cfg;
        idleTimeoutSeconds = attrPath [ "broker" "idleTimeoutSeconds" ] defaults.idleTimeoutSeconds cfg;
      };
      retention = {
        failedMaxAgeDays = attrPath [ "retention" "failedMaxAgeDays" ] defaults.failedMaxAgeDays cfg;
        deniedMaxAgeDays = attrPath [ "retention" "deniedMaxAgeDays" ] defaults.deniedMaxAgeDays cfg;
        dropIntermediateTags = attrPath [ "retention" "dropIntermediateTags" ] defaults.dropIntermediateTags cfg;
      };
      harness.claudeCommand = attrPath [ "harness" "claudeCommand" ] defaults.claudeCommand cfg;
      managerSettings = renderCommon (attrPath [ "manager" ] { } cfg);
      agents = mapAttrs (_: renderAgent) (attrPath [ "agents" ] { } cfg);
    };

  # The policy of one agent as the agent module renders it inside its container (`config.hyperhive.policy`):
  # the same keys as hive.json's `agents.<name>` (the manager: `managerSettings`), plus its name and role.
  renderPolicy = a:
    let role = attrPath [ "role" ] "agent" a; in
    (if role == "manager" then renderCommon a else renderAgent a) // {
      name = a.name;
      inherit role;
    };

  # Claude Code's managed settings (/etc/claude-code/managed-settings.json) for one agent: the same rules as the
  # harness gives Claude Code through --settings (hyperhive/harness.py: permission_rules and
  # permission_deny_rules), with the container's paths (`/state`, and the manager's `/agents`): its Bash
  # allow-list, the hive's tools and those of its extra MCP servers, Edit of its own /state; the manager also
  # Read/Edit on the proposed config repos and state directories under /agents and `<hyperhive> git *` (the
  # absolute path of the hyperhive executable, `hyperhiveCommand`: its `git` subcommand is the manager's only git),
  # and denies Read/Edit of the config repos' `.git` (deny wins over allow). `//` anchors a path rule at the
  # filesystem root. Anything else is refused unasked (dontAsk).
  renderClaudeSettings = a:
    let
      role = attrPath [ "role" ] "agent" a;
      agents = "/agents";
      hyperhive = attrPath [ "hyperhiveCommand" ] "hyperhive" a;
      manager = role == "manager";
    in
    {
      permissions = {
        allow = map (rule: "Bash(${rule})") (attrPath [ "bash" "allow" ] [ ] a)
          ++ [ "mcp__hyperhive__*" ]
          ++ map (server: "mcp__${server}__*") (attrNames (attrPath [ "extraMcpServers" ] { } a))
          ++ [ "Edit(//state/**)" ]
          ++ (if manager then [
            "Read(/${agents}/*/config/**)" "Read(/${agents}/*/state/**)"
            "Edit(/${agents}/*/config/**)" "Edit(/${agents}/*/state/**)"
            "Bash(${hyperhive} git *)"
          ] else [ ]);
        defaultMode = "dontAsk";
      } // (if manager then {
        deny = [
          "Read(/${agents}/*/config/.git/**)" "Read(/${agents}/*/config/**/.git/**)"
          "Edit(/${agents}/*/config/.git/**)" "Edit(/${agents}/*/config/**/.git/**)"
        ];
      } else { });
    }
    // (let model = attrPath [ "model" ] null a; in if model == null then { } else { inherit model; });
in
{
  inherit version namePattern reservedNames managerContainer containerName defaults maxSeconds isName uidBase
    uidRanges uidRangeProblem uidSlots problems
    renderHive renderPolicy renderClaudeSettings listen;
}
