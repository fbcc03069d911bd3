# crypt_r: the `crypt` module that Python 3.13 removed, as a separate package (chatmaild hashes
# passwords with it); nixpkgs has none. The hash is that of PyPI's crypt_r-3.13.1.tar.gz
# (checked 2026-12-01); its C extension links libcrypt (libxcrypt).
{
  lib,
  buildPythonPackage,
  fetchPypi,
  setuptools,
  libxcrypt,
}:

buildPythonPackage rec {
  pname = "crypt-r";
  version = "3.13.1";
  pyproject = true;

  src = fetchPypi {
    pname = "crypt_r";
    inherit version;
    hash = "sha256-W9Rq1R9bf+Xw7PSdi6LK/W+9Q6o7te+8qmtE32NAwaY=";
  };

  build-system = [ setuptools ];
  buildInputs = [ libxcrypt ];

  pythonImportsCheck = [ "crypt_r" ];

  meta = {
    description = "Fork of the crypt module removed from the Python standard library in 3.13";
    license = lib.licenses.psfl;
  };
}
