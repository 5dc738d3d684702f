# The option declarations of a hyperhive module as plain data, with builtins only (no nixpkgs): the module is
# applied to a small stand-in `lib` whose `mkOption` and `types` record what they are given. Only the interface is
# read, never `config`, so the tests can check every option's type, description and default on a machine without
# nixpkgs (pkgs/hyperhive/tests/test_nix.py):
#
#   nix-instantiate --eval --strict --json nix/options-dump.nix --arg module ./modules/hyperhive.nix
{ module }:
let
  inherit (builtins) isAttrs isFunction isList isPath mapAttrs tryEval toString;

  type = name: extra: { _type = "optionType"; inherit name; } // extra;
  wrap = name: elemType: type name { inherit elemType; };

  types = {
    anything = type "anything" { };
    bool = type "bool" { };
    str = type "str" { };
    lines = type "lines" { };
    path = type "path" { };
    package = type "package" { };
    port = type "port" { };
    number = type "number" { };  # nixpkgs lib/types.nix: number = either int float
    deferredModule = type "deferredModule" { };
    ints = {
      positive = type "positiveInt" { };
      unsigned = type "unsignedInt" { };
      u32 = type "u32" { };
      between = lo: hi: type "intBetween" { inherit lo hi; };
    };
    strMatching = pattern: type "strMatching" { inherit pattern; };
    enum = values: type "enum" { inherit values; };
    nullOr = wrap "nullOr";
    listOf = wrap "listOf";
    nonEmptyListOf = wrap "nonEmptyListOf";
    attrsOf = wrap "attrsOf";
    addCheck = elemType: _check: wrap "addCheck" elemType;
    coercedTo = from: _f: to: type "coercedTo" { inherit from; elemType = to; };
    submodule = m: type "submodule" {
      options = (if isFunction m then m { name = "<name>"; } else m).options;
    };
  };

  lib = {
    inherit types;
    mkOption = attrs: { _type = "option"; } // attrs;
    mkEnableOption = what: {
      _type = "option";
      type = types.bool;
      default = false;
      description = "Whether to enable ${what}.";
    };
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    mod = a: b: a - b * (a / b);
    # Used only by `config`, which is never read here.
    hasPrefix = _: _: false;
  };

  # Paths become strings (toJSON would copy them into the store); functions and failures are marked.
  plain = v:
    let r = tryEval v; in
    if !r.success then { _unevaluable = true; }
    else if isPath r.value then toString r.value
    else if isFunction r.value then { _function = true; }
    else if isList r.value then map plain r.value
    else if isAttrs r.value then mapAttrs (_: plain) r.value
    else r.value;

  describeType = t:
    if t ? elemType then t // { elemType = describeType t.elemType; }
    else if t.name == "submodule" then t // { options = walk t.options; }
    else t;

  walk = options: mapAttrs
    (_: o:
      if isAttrs o && (o._type or null) == "option" then
        {
          _option = true;
          type = if o ? type then describeType o.type else null;
          description = o.description or null;
          hasDefault = o ? default;
          default = if o ? default then plain o.default else null;
          hasExample = o ? example;
          readOnly = o.readOnly or false;
        }
      else walk o)
    options;

  evaluated = (import module) {
    inherit lib;
    config = throw "options-dump reads only the interface";
    pkgs = throw "options-dump reads only the interface";
  };
in
walk evaluated.options
