# chatmaild: doveauth, filtermail and the other daemons of the chatmail relay.
{
  lib,
  python3Packages,
  bind,
  opendkim,
  openssl,
}:

let
  # nixpkgs has no crypt-r (no copy of it found, 2026-12-01): always the one in ../crypt-r,
  # so every nixpkgs revision builds the same, checked package.
  crypt-r = python3Packages.callPackage ../crypt-r { };
  # Programs the DNS zone tests call (DKIM key generation and zone checks).
  checkTools = [
    openssl
    opendkim
    bind
  ];
in
python3Packages.buildPythonApplication {
  pname = "chatmaild";
  version = (lib.importTOML ./pyproject.toml).project.version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.unions [
      ./pyproject.toml
      ./src
      ./tests
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = [
    python3Packages.aiosmtpd
    python3Packages.filelock
    python3Packages.dkimpy
    python3Packages.dnspython
    crypt-r
  ];

  nativeCheckInputs = [
    python3Packages.pytestCheckHook
    python3Packages.hypothesis
    python3Packages.imapclient
  ]
  ++ checkTools;

  # The console scripts land in $out/bin, not beside the interpreter that runs the tests here;
  # checks.chatmaild-pytest runs this test against the installed package.
  disabledTests = [ "test_console_script_is_installed" ];

  passthru = { inherit checkTools; };

  pythonImportsCheck = [
    "chatmaild.doveauth"
    "chatmaild.filtermail"
  ];

  meta = {
    description = "Daemons that turn Postfix and Dovecot into a chatmail relay for Delta Chat";
    mainProgram = "doveauth";
    platforms = lib.platforms.linux;
  };
}
