"""flake.nix called with a stand-in nixpkgs (./stubs/nixpkgs, nixpkgs' real lib): the outputs,
the package's inputs, and the VM tests' nodes evaluated with the module stubs.

Needs NIXPKGS_LIB=/path/to/nixpkgs/lib; reported as skipped without it.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nix_tools import REPO, eval_json

NIXPKGS_LIB = os.environ.get("NIXPKGS_LIB")
if not NIXPKGS_LIB:
    print("tests/nix/test_flake.py: NIXPKGS_LIB is not set; flake evaluation skipped")
    pytest.skip("NIXPKGS_LIB (nixpkgs' lib directory) is not set", allow_module_level=True)

SYSTEMS = ["aarch64-linux", "x86_64-linux"]


# the VM test nodes are evaluated with each services.dovecot2 generation (stubs/dovecot-*.nix)
@pytest.fixture(scope="module", params=("pr500271", "typed"), ids=lambda g: f"dovecot-{g}")
def flake(request: pytest.FixtureRequest) -> dict[str, Any]:
    return eval_json(
        f"(import {REPO / 'tests' / 'nix' / 'eval-flake.nix'} {{ nixpkgsLib = {NIXPKGS_LIB};"
        f" dovecotGeneration = \"{request.param}\"; }}).summary"
    )


def test_outputs(flake):
    outputs = flake["outputs"]
    assert outputs["nixosModules"] == ["chatmail", "default"]
    assert outputs["overlays"] == ["default", "dovecot"]
    for name in ("packages", "checks", "formatter", "devShells"):
        assert outputs[name] == SYSTEMS, name
    assert sorted(flake["checkNames"]) == ["basic", "chatmaild", "chatmaild-pytest", "federation",
                                          "realtime"]


def test_chatmaild_package(flake):
    package = flake["chatmaild"]
    assert (package["pname"], package["version"], package["pyproject"]) == ("chatmaild", "0.1.0", True)
    assert package["dependencies"] == ["aiosmtpd", "filelock", "dkimpy", "dnspython", "crypt-r"]
    assert package["buildSystem"] == ["setuptools"]
    assert {"pytestCheckHook", "hypothesis", "imapclient",
            "openssl", "opendkim", "bind"} <= set(package["checkInputs"])
    assert package["sameAsDefault"]


def test_crypt_r_is_the_packaged_one(flake):
    # the stand-in nixpkgs has a python3Packages.crypt-r of its own: it must not be picked
    assert flake["chatmaild"]["cryptR"] == {
        "pname": "crypt-r", "version": "3.13.1", "pythonImportsCheck": ["crypt_r"],
        "src": {"pname": "crypt_r", "version": "3.13.1",
                # sha256 of PyPI's crypt_r-3.13.1.tar.gz, measured 2026-12-01
                "hash": "sha256-W9Rq1R9bf+Xw7PSdi6LK/W+9Q6o7te+8qmtE32NAwaY="},
        "buildInputs": ["libxcrypt"]}


def test_dovecot_package_is_patched_once(flake):
    patch = str(REPO / "pkgs" / "dovecot" / "no-notify-delay.patch")
    for package in (flake["dovecot"]["package"], flake["dovecot"]["nixpkgsWithOverlay"]):
        assert package == {"patches": [patch], "overrideArgs": {"withLua": True}}


def test_installed_package_pytest_check(flake):
    script = flake["pytestScript"]
    assert "-m pytest" in script and "/tests " in script and "touch $out" in script


FEDERATION_RELAYS = {"relay1": "chat1.test", "relay2": "chat2.test"}


@pytest.mark.parametrize(("test", "relays", "others"), [
    ("basic", {"server": "chat1.test"}, {"client"}),
    ("federation", FEDERATION_RELAYS, {"client", "dns"}),
])
def test_vm_test_nodes_evaluate_cleanly(flake, test, relays, others):
    vm_test = flake["tests"][test]
    assert vm_test["name"] == f"chatmail-{test}"
    nodes = vm_test["nodes"]
    assert set(nodes) == {*others, *relays}
    for name, node in nodes.items():
        assert node["failedAssertions"] == [], name
    for name, domain in relays.items():
        chatmail = nodes[name]["chatmail"]
        assert chatmail["domain"] == domain and chatmail["openFirewall"]
    assert "chatmail-scenarios" in nodes["client"]["etc"]


def test_basic_finds_its_relay_through_hosts(flake):
    for name, node in flake["tests"]["basic"]["nodes"].items():
        assert sum(node["hosts"].values(), []) == ["chat1.test"], name
        assert node["nameservers"] == [], name  # as the test instrumentation leaves it


def test_federation_finds_everything_through_its_dns_node(flake):
    """As in production: no relay domain in /etc/hosts; the relays and the client ask the DNS
    node, which the test instrumentation's empty nameserver list (mkOverride 150) does not undo;
    Postfix looks up MX records (no smtp_host_lookup override), DKIM is on."""
    nodes = flake["tests"]["federation"]["nodes"]
    for name in ("relay1", "relay2", "client"):
        assert nodes[name]["hosts"] == {}, name
        assert nodes[name]["nameservers"] == [nodes["dns"]["address"]], name
    for name, domain in FEDERATION_RELAYS.items():
        chatmail = nodes[name]["chatmail"]
        assert chatmail["dkim"], name
        assert "smtp_host_lookup" not in chatmail["postfixMain"], name
        assert "smtp_dns_support_level" not in chatmail["postfixMain"], name
        assert chatmail["postfixMain"]["smtp_tls_security_level"] == "verify"
        assert chatmail["tls"] == "manual"
        assert chatmail["tlsCert"].endswith(f"-chatmail-test-certificates/{domain}.pem")
        assert nodes[name]["pki"][0].endswith("-chatmail-test-certificates/ca.pem")
    bind = nodes["dns"]["bind"]
    assert bind["enable"] and bind["wantedBy"] == []  # started by the test script
    assert bind["zones"] == {domain: {"master": True, "file": f"/var/lib/chatmail-zones/{domain}.zone"}
                             for domain in FEDERATION_RELAYS.values()}
    assert 53 in nodes["dns"]["firewall"]["tcp"] and 53 in nodes["dns"]["firewall"]["udp"]


def federation_relays(flake) -> list[dict]:
    """The facts the federation test script has per relay (its Python literal of them)."""
    script = flake["tests"]["federation"]["testScript"]
    found = re.findall(r"\((relay\d), (\{[^}]*\})\)", script)
    assert [name for name, _ in found] == ["relay1", "relay2"], script
    return [{"node": name, **json.loads(facts)} for name, facts in found]


def test_federation_zones_load_in_bind(flake, tmp_path):
    """What the DNS node loads: chatmail-dns-zone (this venv's) run as the test script runs it
    on each relay, with that relay's chatmail.ini and a fresh key, made a zone by
    nixos-tests/zone_file.py, checked with BIND's named-checkzone."""
    zone_file = runpy.run_path(str(REPO / "nixos-tests" / "zone_file.py"))["zone_file"]
    nodes = flake["tests"]["federation"]["nodes"]
    script = flake["tests"]["federation"]["testScript"]
    assert "def zone_file(" in script  # the same function is part of the test script
    dns_zone = Path(sys.executable).with_name("chatmail-dns-zone")
    for relay in federation_relays(flake):
        domain, node = relay["domain"], nodes[relay["node"]]
        assert relay["ipv4"] == node["address"] and relay["dnsZone"].endswith("/bin/chatmail-dns-zone")
        assert relay["ini"] == "/etc/chatmail/chatmail.ini"
        assert relay["dkimKey"] == "/var/lib/opendkim/keys/opendkim.private"
        ini, key = tmp_path / f"{domain}.ini", tmp_path / f"{domain}.private"
        ini.write_text(node["chatmail"]["ini"])
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                       capture_output=True, timeout=60)
        sts_id = re.search(r"--sts-id (\S+)", script).group(1)
        records = subprocess.run(
            [str(dns_zone), str(ini), "--dkim-key", str(key), "--ipv4", relay["ipv4"],
             "--ipv6", relay["ipv6"], "--sts-id", sts_id],
            capture_output=True, text=True, check=True, timeout=60).stdout
        zone = tmp_path / f"{domain}.zone"
        zone.write_text(zone_file(domain, records))
        dump = subprocess.run(["named-checkzone", "-D", domain, str(zone)],
                              capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0, dump.stdout + dump.stderr
        lines = {tuple(line.split()[3:]) for line in dump.stdout.splitlines() if " IN " in line}
        assert ("MX", "10", f"{domain}.") in lines
        assert ("A", relay["ipv4"]) in lines and ("AAAA", relay["ipv6"]) in lines
        assert any(line[0] == "TXT" and "v=DKIM1" in line[1] for line in lines), lines


@pytest.mark.parametrize("test", ["basic", "federation", "realtime"])
def test_vm_tests_run_existing_scenarios(flake, test):
    script = flake["tests"][test]["testScript"]
    used = set(re.findall(r'scenario\("(\w+\.py)', script))
    assert used, script
    used |= set(re.findall(r'/etc/chatmail-scenarios/(\w+\.py)', script))
    for name in used:
        assert (REPO / "nixos-tests" / "scenarios" / name).is_file(), name
    # the scenarios' own command line (nixos-tests/scenarios/*.py docstrings)
    for option in re.findall(r'"(--[a-z]+) ', script):
        assert option in ("--domain", "--from", "--to", "--ca", "--accounts", "--count",
                          "--iroh-relay"), option


@pytest.mark.parametrize("test", ["basic", "federation", "realtime"])
def test_vm_test_scripts_are_python(flake, test):
    # The test driver runs testScript as Python; a syntax error would only show in the VM run.
    compile(flake["tests"][test]["testScript"], f"{test}.testScript", "exec")


def test_vm_test_certificates_pass_strict_verification(flake, tmp_path):
    # Python >= 3.13 (the VM tests' client) verifies in X509 strict mode; run the build
    # script with this host's openssl and check the result the same way.
    out = tmp_path / "out"
    subprocess.run(["bash", "-euo", "pipefail", "-c", flake["testCertificatesScript"]],
                   env={**os.environ, "out": str(out)}, cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    for domain in ("chat1.test", "chat2.test"):
        proc = subprocess.run(["openssl", "verify", "-x509_strict", "-purpose", "sslserver",
                               "-CAfile", str(out / "ca.pem"), str(out / f"{domain}.pem")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        text = subprocess.run(["openssl", "x509", "-in", str(out / f"{domain}.pem"), "-noout",
                               "-ext", "subjectAltName"], capture_output=True, text=True,
                              check=True, timeout=60).stdout
        assert f"DNS:{domain}" in text


def test_realtime_vm_test_serves_turn_and_the_iroh_relay(flake):
    server = flake["tests"]["realtime"]["nodes"]["server"]
    assert "iroh_relay = https://chat1.test\n" in server["chatmail"]["ini"]
    assert {"coturn", "iroh-relay", "chatmail-turn-credentials"} <= set(server["services"])
    assert '"--iroh-relay"' in flake["tests"]["realtime"]["testScript"]
