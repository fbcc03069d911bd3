# A stand-in for `import nixpkgs { system; overlays; }`, for evaluating flake.nix offline:
# the few functions and packages the flake, pkgs/ and nixos-tests/ call, returning
# derivation-shaped attrsets that record their arguments. `lib` is nixpkgs' real lib.
{
  system,
  overlays ? [ ],
  lib ? import (builtins.getEnv "NIXPKGS_LIB"),
}:

let
  drv =
    name: attrs:
    attrs
    // {
      type = "derivation";
      inherit name system;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
    };
  leaves = import ../pkgs.nix { inherit lib; };

  base =
    self:
    leaves
    // {
      inherit lib system;
      callPackage = lib.callPackageWith self;
      libxcrypt = drv "libxcrypt" { };
      bind = drv "bind" { pname = "bind"; };
      opendkim = drv "opendkim" { pname = "opendkim"; };
      mkShell = attrs: drv "shell" attrs;
      nixfmt = drv "nixfmt" { };
      runCommand = name: env: script: drv name { inherit env script; };
      testers.runNixOSTest = test: drv "vm-test-${test.name}" { inherit test; };
      python3 = {
        sitePackages = "lib/python3.13/site-packages";
        pkgs = self.python3Packages;
        withPackages = select: drv "python3-env" { packages = select self.python3Packages; };
      };
      python3Packages =
        let
          scope = {
            callPackage = lib.callPackageWith (self // scope);
            buildPythonPackage = attrs: drv attrs.pname attrs;
            buildPythonApplication = attrs: drv attrs.pname attrs;
            fetchPypi = attrs: drv "${attrs.pname}-${attrs.version}.tar.gz" attrs;
            toPythonModule = package: package // { pythonModule = true; };
          }
          // lib.genAttrs [
            # present here so that the tests see pkgs/chatmaild use its own crypt-r regardless
            "crypt-r"
            "aiosmtpd"
            "dkimpy"
            "dnspython"
            "filelock"
            "hypothesis"
            "imapclient"
            "pytest"
            "pytestCheckHook"
            "setuptools"
          ] (name: drv name { pname = name; });
        in
        scope;
    };
in
lib.fix (lib.foldl' (acc: overlay: lib.extends overlay acc) base overlays)
