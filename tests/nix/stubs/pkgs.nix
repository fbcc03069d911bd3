# Stand-ins for the packages modules/ uses: derivation-shaped attrsets with fake store paths.
# `override` and `overrideAttrs` behave as nixpkgs' (lib.makeOverridable over a mkDerivation whose
# overrideAttrs merges new attributes over the old ones, passthru landing on the result), so that
# both compose as they do for real packages; the arguments given to `override` are kept in
# `overrideArgs` for the tests.
{ lib }:
let
  mkDerivation =
    attrs:
    removeAttrs attrs [ "passthru" ]
    // attrs.passthru or { }
    // {
      type = "derivation";
      outPath = "/nix/store/00000000000000000000000000000000-${attrs.pname}-${attrs.version}";
      overrideAttrs = change: mkDerivation (attrs // (if lib.isFunction change then change attrs else change));
    };
  package =
    name: version:
    lib.makeOverridable (
      overrideArgs:
      mkDerivation {
        inherit name version overrideArgs;
        pname = name;
        patches = [ ];
        meta.mainProgram = name;
      }
    ) { };
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
