# A minimal stand-in for nixpkgs' lib: only what flake.nix and nix/package.nix call while their outputs are
# evaluated (nix/flake-outputs.nix), each with nixpkgs' meaning (lib/attrsets.nix, lib/meta.nix, lib/strings.nix,
# lib/sources.nix, lib/modules.nix). Used when no session brought nixpkgs' real lib (HYPERHIVE_NIXPKGS_LIB); it
# cannot evaluate modules, so the VM tests' nodes are evaluated only with the real lib.
let
  inherit (builtins) listToAttrs map concatStringsSep filter;
in
rec {
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
  # lib/meta.nix: the main program of a package.
  getExe = p: "${p}/bin/${p.meta.mainProgram or (builtins.parseDrvName p.name).name}";
  makeBinPath = ps: concatStringsSep ":" (map (p: "${p}/bin") (filter (p: p != null) ps));
  # lib/sources.nix: the source with its filter (not applied here: nothing is copied).
  cleanSourceWith = { src, filter ? _: _: true, name ? null }: {
    _isLibCleanSourceWith = true;
    origSrc = src;
    inherit filter name;
    outPath = toString src;
  };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;
  licenses.mit = { spdxId = "MIT"; shortName = "mit"; };
  platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
}
