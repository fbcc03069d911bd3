# Adds this flake's packages to nixpkgs.
final: prev: {
  chatmaild = final.callPackage ./chatmaild { };
}
