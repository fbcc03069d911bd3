# Stand-ins for the packages modules/ uses: derivation-shaped attrsets with fake store paths.
let
  package =
    name: version:
    let
      self = {
        type = "derivation";
        inherit name version;
        pname = name;
        outPath = "/nix/store/00000000000000000000000000000000-${name}-${version}";
        meta.mainProgram = name;
        # as nixpkgs' callPackage results: the arguments given are kept for the tests
        overrideArgs = { };
        override = args: self // { overrideArgs = self.overrideArgs // args; };
      };
    in
    self;
in
{
  chatmaild = package "chatmaild" "0.1.0";
  coreutils = package "coreutils" "9.7";
  iroh-relay = package "iroh-relay" "0.35.0";
  dovecot = package "dovecot" "2.4.5";
  dovecot_2_3 = package "dovecot" "2.3.21.1";
  openssl = package "openssl" "3.5.0";
  postfix = package "postfix" "3.10.5";
  qrencode = package "qrencode" "4.1.1";
  opendkim = package "opendkim" "2.11.0";
  writeText = name: text: {
    type = "derivation";
    inherit name text;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  runCommand = name: env: script: {
    type = "derivation";
    inherit name env script;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
}
