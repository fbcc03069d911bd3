# Calls flake.nix's outputs with a stand-in nixpkgs (./stubs/nixpkgs, real nixpkgs lib) and
# evaluates the VM tests' nodes with the module stubs; returns what the tests look at.
#
#   NIXPKGS_LIB=/path/to/nixpkgs/lib nix-instantiate --eval --strict --json tests/nix/eval-flake.nix \
#     --arg nixpkgsLib /path/to/nixpkgs/lib --argstr dovecotGeneration typed -A summary
{
  nixpkgsLib,
  # which services.dovecot2 stub the VM test nodes are evaluated with (stubs/default.nix)
  dovecotGeneration ? "typed",
}:

let
  lib = import nixpkgsLib;
  flake = import ../../flake.nix;
  nixpkgs = {
    inherit lib;
    outPath = ./stubs/nixpkgs;
  };
  self = flake.outputs { inherit self nixpkgs; };
  system = "x86_64-linux";
  pkgs = import ./stubs/nixpkgs {
    inherit system lib;
    overlays = [ self.overlays.default ];
  };

  # A VM test's nodes, evaluated like tests/nix/eval-module.nix does for the module alone, with
  # the addresses nixpkgs' test framework gives them (numbered in name order) and each other's
  # configuration as the `nodes` argument, as in a real test.
  evalNodes =
    test:
    let
      numbers = lib.listToAttrs (lib.imap1 (i: name: lib.nameValuePair name i) (lib.attrNames test.nodes));
      configs = lib.mapAttrs (
        name: node:
        (lib.evalModules {
          modules = import ./stubs dovecotGeneration ++ [
            ./stubs/test-nodes.nix
            {
              networking.primaryIPAddress = "192.168.1.${toString numbers.${name}}";
              networking.primaryIPv6Address = "2001:db8:1::${toString numbers.${name}}";
              _module.args = {
                inherit pkgs;
                nodes = configs;
              };
            }
            node
          ];
        }).config
      ) test.nodes;
    in
    configs;

  nodeSummary = config: {
    failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
    hosts = config.networking.hosts;
    inherit (config.networking) nameservers;
    address = config.networking.primaryIPAddress;
    chatmail = lib.optionalAttrs (config.services.chatmail.enable or false) {
      inherit (config.services.chatmail) domain openFirewall;
      tls = config.services.chatmail.tls.mode;
      tlsCert = config.services.chatmail.rendered.paths.tlsCert;
      postfixMain = config.services.postfix.settings.main;
      ini = config.services.chatmail.rendered.chatmailIni;
      dkim = config.services.opendkim.enable;
    };
    bind = {
      inherit (config.services.bind) enable zones;
      wantedBy = config.systemd.services.bind.wantedBy or [ ];
    };
    firewall = {
      tcp = config.networking.firewall.allowedTCPPorts;
      udp = config.networking.firewall.allowedUDPPorts;
    };
    services = lib.attrNames config.systemd.services;
    etc = lib.attrNames config.environment.etc;
    pki = config.security.pki.certificateFiles;
  };

  vmTest = name: self.checks.${system}.${name}.test;
in
{
  summary = {
    outputs = lib.mapAttrs (_: value: lib.attrNames value) {
      inherit (self)
        nixosModules
        overlays
        packages
        checks
        formatter
        devShells
        ;
    };
    systems = {
      packages = lib.attrNames self.packages;
      checks = lib.attrNames self.checks;
    };
    chatmaild =
      let
        package = self.packages.${system}.chatmaild;
      in
      {
        inherit (package) pname version pyproject;
        dependencies = map (d: d.pname) package.dependencies;
        checkInputs = map (d: d.pname) package.nativeCheckInputs;
        buildSystem = map (d: d.pname) package.build-system;
        sameAsDefault = package == self.packages.${system}.default;
        cryptR =
          let
            crypt-r = lib.findFirst (d: d.pname == "crypt-r") null package.dependencies;
          in
          {
            inherit (crypt-r) pname version pythonImportsCheck;
            src = { inherit (crypt-r.src) pname version hash; };
            buildInputs = map (d: d.name) crypt-r.buildInputs;
          };
      };
    checkNames = lib.mapAttrs (_: check: check.name) self.checks.${system};
    # the Dovecot the module runs by default, and the same where nixpkgs has overlays.dovecot
    dovecot =
      let
        withOverlay = import ./stubs/nixpkgs {
          inherit system lib;
          overlays = [ self.overlays.dovecot ];
        };
        summarise = package: {
          patches = map toString package.patches;
          inherit (package) overrideArgs;
        };
      in
      {
        package = summarise self.packages.${system}.dovecot;
        nixpkgsWithOverlay = summarise (import ../../pkgs/dovecot { inherit (withOverlay) dovecot_2_3; });
      };
    testCertificatesScript =
      (pkgs.callPackage ../../nixos-tests/test-certificates.nix {
        domains = [
          "chat1.test"
          "chat2.test"
        ];
      }).script;
    pytestScript = self.checks.${system}.chatmaild-pytest.script;
    tests = lib.genAttrs [ "basic" "federation" "realtime" ] (
      name:
      let
        test = vmTest name;
        nodes = evalNodes test;
      in
      {
        inherit (test) name;
        # a function of the nodes, as nixpkgs' test framework allows
        testScript =
          if lib.isFunction test.testScript then test.testScript { inherit nodes; } else test.testScript;
        nodes = lib.mapAttrs (_: nodeSummary) nodes;
      }
    );
  };
}
