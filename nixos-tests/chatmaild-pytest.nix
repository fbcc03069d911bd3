# chatmaild's tests against the installed package (not the source tree): catches files or
# modules that the package leaves out.
{
  runCommand,
  python3,
  chatmaild,
  projectDir,
}:

let
  python = python3.withPackages (ps: [
    (ps.toPythonModule chatmaild)
    ps.pytest
    ps.hypothesis
    ps.imapclient
  ]);
in
runCommand "chatmaild-pytest" { nativeBuildInputs = chatmaild.passthru.checkTools; } ''
  cp -r ${projectDir}/tests ${projectDir}/pyproject.toml .
  chmod -R u+w .
  ${python}/bin/python -m pytest -p no:cacheprovider -q tests
  touch $out
''
