# What the two services.dovecot2 stubs share: the value type of `settings` (a Dovecot section is
# an attribute set; its key "TYPE NAME" gives `_section.type` and `_section.name`), the two ways
# nixpkgs has written dovecot.conf from it, and what both forms define alike (removed options,
# users, the unit, the files). Written for these stubs from the behaviour of
# nixos/modules/services/mail/dovecot.nix (see dovecot-pr500271.nix and dovecot-typed.nix).
lib:

let
  inherit (lib) mkOption types;
  inherit (builtins)
    concatStringsSep
    filter
    isAttrs
    isBool
    isList
    isString
    match
    ;

  titleParts =
    key:
    let
      parts = match "([^ ]+) (.+)" key;
    in
    if parts == null then
      {
        type = key;
        name = null;
      }
    else
      {
        type = builtins.elemAt parts 0;
        name = builtins.elemAt parts 1;
      };

  yesNo = b: if b then "yes" else "no";
  scalar = value: if isBool value then yesNo value else toString value;
  isSection = value: isAttrs value && !(lib.isDerivation value);
  title = value: concatStringsSep " " (filter (part: part != null) [ value._section.type value._section.name ]);
  body = value: removeAttrs value [ "_section" ];
in
rec {
  # readOnly: the typed generation's own sections (plugin, "passdb pam", ...) fix their title.
  sectionModule =
    { withPath, readOnly }:
    { name, ... }:
    {
      options._section = {
        type = mkOption {
          type = types.nonEmptyStr;
          default = (titleParts name).type;
          inherit readOnly;
        };
        name = mkOption {
          type = types.nullOr types.nonEmptyStr;
          default = (titleParts name).name;
          inherit readOnly;
        };
      };
      freeformType = types.attrsOf (value { inherit withPath; });
    };

  # int, str, bool (and, in the typed generation, path) or a section; or a non-empty list of them;
  # or null (not written).
  value =
    { withPath }:
    let
      primitive = types.oneOf (
        [
          types.int
          types.str
          types.bool
        ]
        ++ lib.optional withPath types.path
        ++ [
          (types.submodule (sectionModule {
            inherit withPath;
            readOnly = false;
          }))
        ]
      );
    in
    types.nullOr (
      types.oneOf [
        primitive
        (types.nonEmptyListOf primitive)
      ]
    );

  # PR 500271's writer: entries in key order, sections among them; null leaves an empty line.
  writeInKeyOrder =
    let
      entry =
        indent: key: value:
        if value == null then
          ""
        else if isList value && !(lib.all isString value) then
          map (entry indent key) value
        else if isList value then
          "${indent}${key} = ${concatStringsSep " " value}"
        else if isSection value then
          concatStringsSep "\n" (
            [ "${indent}${title value} {" ]
            ++ lib.flatten (lib.mapAttrsToList (entry "${indent}  ") (body value))
            ++ [ "${indent}}" ]
          )
        else
          "${indent}${key} = ${scalar value}";
    in
    settings: concatStringsSep "\n" (lib.flatten (lib.mapAttrsToList (entry "") settings));

  # The newest writer: at each level the plain settings first, then the sections; null is skipped.
  writeSettingsFirst =
    let
      asList = value: lib.flatten [ value ];
      plainLines =
        indent: key: value:
        let
          plain = filter (v: !isSection v) (asList value);
        in
        lib.optional (value != null && (plain != [ ] || value == [ ])) "${indent}${key} = ${concatStringsSep " " (map scalar plain)}";
      sectionLines =
        indent: key: value:
        map (sectionText indent) (filter isSection (asList value));
      sectionText =
        indent: value:
        concatStringsSep "\n" (
          [ "${indent}${title value} {" ]
          ++ level "${indent}  " (body value)
          ++ [ "${indent}}" ]
        );
      level =
        indent: attrs:
        lib.flatten (lib.mapAttrsToList (plainLines indent) attrs)
        ++ lib.flatten (lib.mapAttrsToList (sectionLines indent) attrs);
    in
    settings: concatStringsSep "\n" (level "" settings);

  removed =
    name: instead:
    lib.mkRemovedOptionModule [
      "services"
      "dovecot2"
      name
    ] instead;

  # users and groups: dovenull, the internal user when it is dovecot2, settings.mail_uid/mail_gid
  # when createMailUser
  accounts =
    {
      cfg,
      internalUser,
      internalGroup,
    }:
    let
      mailUid = cfg.settings.mail_uid or null;
      mailGid = cfg.settings.mail_gid or null;
    in
    {
      users.users =
        {
          dovenull.group = "dovenull";
        }
        // lib.optionalAttrs (internalUser == "dovecot2") { dovecot2.group = internalGroup; }
        // lib.optionalAttrs (mailUid != null && cfg.createMailUser) {
          ${mailUid} = {
            isSystemUser = true;
          }
          // lib.optionalAttrs (mailGid != null) { group = mailGid; };
        };
      users.groups =
        {
          dovenull = { };
        }
        // lib.optionalAttrs (internalGroup == "dovecot2") { dovecot2 = { }; }
        // lib.optionalAttrs (mailGid != null && cfg.createMailUser) { ${mailGid} = { }; };
    };

  # the unit (named dovecot2, later dovecot), the config file in /etc, the package, the warning
  service =
    {
      cfg,
      unit,
      serviceConfig ? { },
    }:
    {
      environment.etc."dovecot/dovecot.conf".source = cfg.configFile;
      environment.systemPackages = [ cfg.package ];
      systemd.services.${unit} = {
        description = "Dovecot IMAP/POP3 server";
        after = [ "network.target" ];
        wantedBy = [ "multi-user.target" ];
        restartTriggers = [ cfg.configFile ];
        serviceConfig = {
          Type = "notify";
          Restart = "on-failure";
          RuntimeDirectory = [ "dovecot2" ];
        }
        // serviceConfig;
      };
      warnings = lib.optional (lib.versionOlder cfg.package.version "2.4") "Dovecot 2.3: a newer version is available in nixpkgs (Dovecot 2.4).";
    };
}
