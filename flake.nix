{
  description = "hyperhive: a contained, reviewable swarm of Claude Code agents in NixOS containers";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      packageFor = pkgs: self.packages.${pkgs.stdenv.hostPlatform.system}.hyperhive;
    in
    {
      packages = forAllSystems (pkgs: rec {
        hyperhive = pkgs.callPackage ./nix/package.nix { };
        default = hyperhive;
      });

      overlays.default = final: _prev: { hyperhive = final.callPackage ./nix/package.nix { }; };

      apps = forAllSystems (pkgs:
        let exe = lib.getExe (packageFor pkgs);
        in rec {
          hyperhive = {
            type = "app";
            program = exe;
            meta.description = "The hyperhive command line (serve, up, init, operator verbs)";
          };
          # `nix run`: the bundled example hive, as `make up` runs it; its state goes to ./hyperhive-example
          # because the store copy of examples/hive.toml is read-only.
          up = {
            type = "app";
            program = toString (pkgs.writeShellScript "hyperhive-up" ''
              dir="''${HYPERHIVE_EXAMPLE_DIR:-$PWD/hyperhive-example}"
              mkdir -p "$dir"
              [ -e "$dir/hive.toml" ] || install -m 644 ${./examples/hive.toml} "$dir/hive.toml"
              exec ${exe} up --config "$dir/hive.toml" "$@"
            '');
            meta.description = "Run the example hive (a manager and two agents) as local processes";
          };
          default = up;
        });

      nixosModules = {
        # The host: options hyperhive.*, the service, the containers.
        hyperhive = { pkgs, ... }: {
          imports = [ ./modules/hyperhive.nix ];
          hyperhive.package = lib.mkDefault (packageFor pkgs);
          # The service's meta flake takes the agent module from this very flake, offline (and nixpkgs from the
          # host system: /etc/hyperhive/containers.json).
          hyperhive.flake = lib.mkDefault "path:${self.outPath}";
          nix.registry.hyperhive.flake = lib.mkDefault self;
        };
        default = self.nixosModules.hyperhive;

        # Inside an agent container (what the meta flake imports next to the agent's own config flake).
        agent = { pkgs, ... }: {
          imports = [ ./modules/agent.nix ];
          hyperhive.package = lib.mkDefault (packageFor pkgs);
        };
      };

      templates = rec {
        agent = {
          path = ./templates/agent;
          description = "A hyperhive agent's config flake (agent.nix with its hyperhive.* policy)";
        };
        default = agent;
      };

      checks = forAllSystems (pkgs:
        let
          tests = import ./nixos-tests { inherit pkgs self nixpkgs; };
        in
        tests // {
          package = packageFor pkgs;

          # test_nix.py: every .nix file parses, the options are well formed, the pure renderer's output loads in
          # the Python loader, the modules evaluate with nixpkgs' lib.evalModules against stand-ins of nixpkgs'
          # options, and these very outputs evaluate against a stand-in nixpkgs (nix/flake-outputs.nix).
          nix-eval = pkgs.runCommand "hyperhive-nix-eval"
            {
              nativeBuildInputs = [
                pkgs.nix
                pkgs.git
                # The package is an application, not a module (python-packages-base.nix: `toPythonModule = x: x`
                # for buildPythonApplication): the package set's toPythonModule makes withPackages import it.
                (pkgs.python3.withPackages (ps: [ ps.pytest (ps.toPythonModule (packageFor pkgs)) ]))
              ];
            } ''
            export HOME=$TMPDIR NIX_STATE_DIR=$TMPDIR/nix NIX_REMOTE=dummy://
            # A build sandbox: the test that needs a writable Nix store of its own (a real flake evaluation of the
            # meta flake) skips here; make test runs it.
            export HYPERHIVE_BUILD_SANDBOX=1
            export HYPERHIVE_NIXPKGS_LIB=${nixpkgs}/lib
            cp -r ${self} repo && chmod -R u+w repo && cd repo
            python -m pytest -p no:cacheprovider -q pkgs/hyperhive/tests/test_nix.py
            touch $out
          '';
        });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ (packageFor pkgs) ];
          packages = [
            pkgs.git
            pkgs.nix
            (pkgs.python3.withPackages (ps: with ps; [ pytest hypothesis playwright ]))
          ];
          shellHook = ''
            export PYTHONPATH=$PWD/pkgs/hyperhive''${PYTHONPATH:+:$PYTHONPATH}
          '';
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
