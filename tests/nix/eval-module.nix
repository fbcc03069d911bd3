# Evaluates modules/ (the whole services.chatmail module) with nixpkgs' module system against
# the stubs in ./stubs (one of the two services.dovecot2 generations), and returns what the tests
# look at, including main.cf, master.cf, dovecot.conf and nginx.conf written the way nixpkgs'
# modules write them.
#
#   nix-instantiate --eval --strict --json tests/nix/eval-module.nix \
#     --arg nixpkgsLib /path/to/nixpkgs/lib --arg configFile ./config.json \
#     --argstr dovecotGeneration typed -A summary
{
  nixpkgsLib,
  # JSON: the NixOS configuration to evaluate (e.g. { "services": { "chatmail": { … } } }).
  configFile,
  # which services.dovecot2 stub: "pr500271" or "typed" (stubs/dovecot-<generation>.nix)
  dovecotGeneration ? "typed",
}:

let
  lib = import nixpkgsLib;
  inherit (lib) filterAttrs mapAttrs;

  eval = lib.evalModules {
    modules = import ./stubs dovecotGeneration ++ [
      ../../modules
      { _module.args.pkgs = import ./stubs/pkgs.nix { inherit lib; }; }
      (lib.importJSON configFile)
    ];
  };
  inherit (eval) config;

  defined = filterAttrs (_: value: value != null);
  # a virtual host as the tests look at it (sslCertificate has no default: only hosts with their
  # own certificate files have one; nginx's module fills it in for ACME ones)
  vhostSummary =
    vhost:
    removeAttrs vhost [
      "sslCertificate"
      "sslCertificateKey"
    ]
    // lib.optionalAttrs (vhost.onlySSL && vhost.useACMEHost == null && !vhost.enableACME) {
      inherit (vhost) sslCertificate sslCertificateKey;
    };
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  summary = {
    postfix = {
      inherit (config.services.postfix) enable;
      main = defined config.services.postfix.settings.main;
      master = mapAttrs (_: entry: entry.defined) config.services.postfix.settings.master;
      mainCf = config.services.postfix.writtenMainCf;
      masterCf = config.services.postfix.writtenMasterCf;
    };
    dovecot = {
      inherit (config.services.dovecot2) enable enablePAM createMailUser;
      packageVersion = config.services.dovecot2.package.version;
      packageOverrides = config.services.dovecot2.package.overrideArgs;
      # paths as strings (toString copies nothing to the store)
      packagePatches = map toString config.services.dovecot2.package.patches;
      inherit (config.services.dovecot2) settings;
      conf = config.services.dovecot2.configFile.text;
    };
    services = mapAttrs (_: service: {
      inherit (service)
        description
        wantedBy
        requiredBy
        before
        after
        script
        serviceConfig
        ;
    }) config.systemd.services;
    timers = mapAttrs (_: timer: { inherit (timer) wantedBy timerConfig; }) config.systemd.timers;
    etc = mapAttrs (_: file: file.text) (filterAttrs (_: file: file.text != null) config.environment.etc);
    inherit (config.systemd.tmpfiles) rules;
    users = mapAttrs (_: user: { inherit (user) isSystemUser group; }) config.users.users;
    groups = lib.attrNames config.users.groups;
    firewallPorts = config.networking.firewall.allowedTCPPorts;
    firewallUdp = {
      ports = config.networking.firewall.allowedUDPPorts;
      ranges = config.networking.firewall.allowedUDPPortRanges;
    };
    coturn = config.services.coturn;
    inherit (config.boot.kernel) sysctl;
    acme = mapAttrs (_: cert: {
      inherit (cert)
        directory
        email
        listenHTTP
        reloadServices
        ;
    }) config.security.acme.certs;
    nginx = {
      inherit (config.services.nginx) enable streamConfig appendHttpConfig;
      virtualHosts = mapAttrs (_: vhostSummary) config.services.nginx.virtualHosts;
      conf = config.services.nginx.configText;
    };
    opendkim = lib.optionalAttrs config.services.opendkim.enable {
      inherit (config.services.opendkim)
        enable
        socket
        domains
        keyPath
        selector
        configFile
        ;
    };
    acmeCerts = config.security.acme.certs;
    # files from build commands (runCommand stub): their script
    etcBuilt = mapAttrs (_: file: file.source.script) (
      filterAttrs (_: file: (file.source or null) ? script) config.environment.etc
    );
    userGroups = mapAttrs (_: user: user.extraGroups) config.users.users;
    groupMembers = mapAttrs (_: group: group.members) config.users.groups;
    journald = { inherit (config.services.journald) storage extraConfig; };
    inherit (config) warnings;
    rendered = lib.optionalAttrs config.services.chatmail.enable {
      inherit (config.services.chatmail.rendered) paths daemons;
    };
  };

  # Option declarations for scripts/options-table and the docs test.
  options = lib.optionAttrSetToDocList eval.options.services.chatmail;
}
