# A CA and one certificate per domain, made at build time for the VM tests (test-only keys,
# in the world-readable store). Strict verifiers (Python >= 3.13) need keyUsage on the CA and
# key identifiers, which OpenSSL 3 adds by itself.
{
  lib,
  runCommand,
  openssl,
  domains,
}:

runCommand "chatmail-test-certificates" { nativeBuildInputs = [ openssl ]; } ''
  mkdir $out
  cd $out
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=chatmail test CA" -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout ca-key.pem -out ca.pem
  ${lib.concatMapStrings (domain: ''
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj "/CN=${domain}" -keyout ${domain}.key -out ${domain}.csr
    printf 'subjectAltName=DNS:${domain}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' > ${domain}.ext
    openssl x509 -req -in ${domain}.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
      -days 3650 -extfile ${domain}.ext -out ${domain}.pem
  '') domains}
''
