# Evaluates modules/ (the whole services.chatmail module) with nixpkgs' module system against
# the stubs in ./stubs, and returns what the tests look at, including main.cf, master.cf and
# dovecot.conf written the way nixpkgs' modules write them.
#
#   nix-instantiate --eval --strict --json tests/nix/eval-module.nix \
#     --arg nixpkgsLib /path/to/nixpkgs/lib --arg configFile ./config.json -A summary
{
  nixpkgsLib,
  # JSON: the NixOS configuration to evaluate (e.g. { "services": { "chatmail": { … } } }).
  configFile,
}:

let
  lib = import nixpkgsLib;
  inherit (lib)
    concatMapStringsSep
    concatStringsSep
    filterAttrs
    isAttrs
    isBool
    isList
    mapAttrs
    mapAttrsToList
    splitString
    ;

  eval = lib.evalModules {
    modules = [
      ./stubs/nixos.nix
      ./stubs/postfix.nix
      ./stubs/dovecot.nix
      ./stubs/nginx.nix
      ../../modules
      { _module.args.pkgs = import ./stubs/pkgs.nix; }
      (lib.importJSON configFile)
    ];
  };
  inherit (eval) config;

  defined = filterAttrs (_: value: value != null);
  yesNo = b: if b then "yes" else "no";

  # main.cf as nixpkgs' postfix module writes it.
  mainCf = concatStringsSep "\n" (
    mapAttrsToList (
      name: value:
      "${name} ="
      + (
        if isList value then
          "\n  " + concatStringsSep ",\n  " value
        else
          " " + (if isBool value then yesNo value else toString value)
      )
    ) (defined config.services.postfix.settings.main)
  );

  # master.cf as nixpkgs writes it ("-" for fields left undefined).
  masterCf = concatStringsSep "\n" (
    mapAttrsToList (
      _: entry:
      let
        column = value: render: if value == null then "-" else render value;
        yn = b: if b then "y" else "n";
      in
      concatStringsSep "  " [
        entry.name
        entry.type
        (column entry.private yn)
        (column entry.privileged (b: yn (!b)))
        (column entry.chroot yn)
        (column entry.wakeup (
          w: toString w + (if entry.wakeupUnusedComponent == false then "?" else "")
        ))
        (column entry.maxproc toString)
        (
          entry.command
          + " "
          + concatMapStringsSep " " (
            arg: (if lib.hasPrefix "-" arg then "\n  " else "") + arg
          ) entry.args
        )
      ]
    ) config.services.postfix.settings.master
  );

  # dovecot.conf as nixpkgs' dovecot module writes `settings`: a section key is split at its
  # space into type and name, null values become empty lines, string lists are joined by spaces.
  dovecotEntry =
    indent: name: value:
    if value == null then
      ""
    else if isAttrs value then
      let
        words = splitString " " name;
        sectionName = if builtins.length words == 2 then builtins.elemAt words 1 else "";
      in
      concatStringsSep "\n" (
        [ "${indent}${builtins.head words} ${sectionName}${if sectionName != "" then " " else ""}{" ]
        ++ mapAttrsToList (dovecotEntry "${indent}  ") value
        ++ [ "${indent}}" ]
      )
    else if isList value then
      "${indent}${name} = ${concatStringsSep " " value}"
    else
      "${indent}${name} = ${if isBool value then yesNo value else toString value}";
  dovecotConf = concatStringsSep "\n" (
    mapAttrsToList (dovecotEntry "") config.services.dovecot2.settings
  );
in
{
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  summary = {
    postfix = {
      inherit (config.services.postfix) enable;
      main = defined config.services.postfix.settings.main;
      master = mapAttrs (_: defined) config.services.postfix.settings.master;
      inherit mainCf masterCf;
    };
    dovecot = {
      inherit (config.services.dovecot2) enable enablePAM createMailUser;
      packageVersion = config.services.dovecot2.package.version;
      packageOverrides = config.services.dovecot2.package.overrideArgs;
      inherit (config.services.dovecot2) settings;
      conf = dovecotConf;
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
    acme = mapAttrs (_: cert: {
      inherit (cert)
        directory
        email
        listenHTTP
        reloadServices
        ;
    }) config.security.acme.certs;
    nginx = {
      inherit (config.services.nginx) enable streamConfig virtualHosts;
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
    rendered = lib.optionalAttrs config.services.chatmail.enable {
      inherit (config.services.chatmail.rendered) paths daemons;
    };
  };

  # Option declarations for scripts/options-table and the docs test.
  options = lib.optionAttrSetToDocList eval.options.services.chatmail;
}
