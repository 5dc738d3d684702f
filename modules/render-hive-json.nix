# hive.json from the host options, as a pure function (builtins only, no nixpkgs):
#
#   import ./render-hive-json.nix config.hyperhive  ->  the attrset written to /etc/hyperhive/hive.json
#
# It refuses (throws, naming every offending option path) a configuration the host module's assertions would refuse,
# so the tests can evaluate it with a bare `nix-instantiate --eval --strict --json` and still see those checks.
(import ./lib.nix).renderHive
