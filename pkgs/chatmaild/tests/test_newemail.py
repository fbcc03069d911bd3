"""/new: random credentials valid for doveauth; pure function, CGI program and HTTP server."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import select
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatmaild.accounts import creation_refusal
from chatmaild.config import NOCREATE_PATH_ENV, Config
from chatmaild.newemail import (
    LOCALPART_ALPHABET,
    PASSWORD_ALPHABET,
    PASSWORD_EXTRA_LENGTH,
    create_newemail_dict,
    dclogin_url,
    main,
    parse_listen_address,
    respond,
)

DOMAIN = "chat.example.org"
NEWEMAIL = [sys.executable, "-m", "chatmaild.newemail"]


@pytest.mark.parametrize(
    "lengths",
    [
        {},  # upstream defaults: 9..9 and 9
        {"username_min_length": 3, "username_max_length": 20, "password_min_length": 12},
        {"username_min_length": 1, "username_max_length": 1, "password_min_length": 1},
    ],
)
def test_new_accounts_are_valid_for_doveauth(
    make_config: Callable[..., Config], lengths: dict[str, int]
):
    config = make_config(**lengths)
    emails = set()
    for _ in range(300):
        creds = create_newemail_dict(config)
        assert set(creds) == {"email", "password"}
        assert creation_refusal(config, creds["email"], creds["password"], nocreate=False) is None
        localpart, domain = creds["email"].split("@")
        assert domain == config.mail_domain
        assert len(localpart) == config.username_max_length
        assert set(localpart) <= set(LOCALPART_ALPHABET)
        assert len(creds["password"]) == config.password_min_length + PASSWORD_EXTRA_LENGTH
        assert set(creds["password"]) <= set(PASSWORD_ALPHABET)
        emails.add(creds["email"])
    if config.username_max_length >= 9:
        assert len(emails) == 300  # 36**9 possible localparts: a repeat means broken randomness


def test_post_returns_json_credentials(example_config: Config):
    response = respond("POST", example_config, nocreate=False)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    creds = json.loads(response.body)
    assert (
        creation_refusal(example_config, creds["email"], creds["password"], nocreate=False) is None
    )


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_get_redirects_to_delta_chat(example_config: Config, method: str):
    response = respond(method, example_config, nocreate=False)
    assert response.status == 301
    assert response.headers["Location"] == f"dcaccount:https://{DOMAIN}/new"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_self_signed_relays_answer_get_with_a_dclogin_url(example_config: Config, method: str):
    response = respond(method, example_config, nocreate=False, self_signed=True)
    assert response.status == 200
    creds = json.loads(response.body)
    assert creds["dclogin_url"] == dclogin_url(creds["email"], creds["password"])
    assert respond(method, example_config, nocreate=True, self_signed=True).status == 403


def test_dclogin_url_quotes_the_password_and_accepts_invalid_certificates():
    url = dclogin_url("abc@_r1.test", "a&b=c?d/e%f g+h#")
    assert url == "dclogin:abc@_r1.test?p=a%26b%3Dc%3Fd%2Fe%25f%20g%2Bh%23&v=1&ic=3"
    assert dclogin_url("abc@[192.0.2.1]", "p") == "dclogin:abc@[192.0.2.1]?p=p&v=1&ic=3"


def test_underscore_domains_are_self_signed_as_upstream(make_ini: Callable[..., Path], tmp_path: Path):
    env = {**os.environ, NOCREATE_PATH_ENV: str(tmp_path / "nocreate"), "REQUEST_METHOD": "GET"}
    for domain, flags, expect_dclogin in (("_r1.test", [], True), (DOMAIN, [], False),
                                          (DOMAIN, ["--self-signed"], True)):
        result = subprocess.run([*NEWEMAIL, str(make_ini(domain)), *flags], env=env,
                                capture_output=True, text=True, timeout=30)
        assert ("dclogin:" in result.stdout) == expect_dclogin, (domain, flags, result.stdout)


def test_post_is_refused_while_nocreate_exists(example_config: Config):
    response = respond("POST", example_config, nocreate=True)
    assert response.status == 403
    assert "nocreate" in response.body
    assert "@" not in response.body  # no credentials handed out


def test_other_methods_are_not_allowed(example_config: Config):
    response = respond("PUT", example_config, nocreate=False)
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD, POST"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:0", ("::1", 0)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
    ],
)
def test_parse_listen_address(text: str, expected: tuple[str, int]):
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize(
    "text", ["127.0.0.1", "localhost:80", "127.0.0.1:x", "127.0.0.1:70000", "::1"]
)
def test_parse_listen_address_rejects(text: str):
    with pytest.raises(ValueError):
        parse_listen_address(text)


# --- CGI -------------------------------------------------------------------------------------


def parse_cgi(output: str) -> tuple[int, dict[str, str], str]:
    head, _, body = output.partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines())
    return int(headers.pop("Status").split()[0]), headers, body


def run_cgi(
    inipath: Path, tmp_path: Path, method: str | None, nocreate: bool = False
) -> tuple[int, dict[str, str], str]:
    env = {k: v for k, v in os.environ.items() if k != "REQUEST_METHOD"}
    nocreate_path = tmp_path / "nocreate"
    if nocreate:
        nocreate_path.touch()
    env[NOCREATE_PATH_ENV] = str(nocreate_path)
    if method is not None:
        env["REQUEST_METHOD"] = method
    proc = subprocess.run(
        [*NEWEMAIL, str(inipath)], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    return parse_cgi(proc.stdout)


def test_cgi_post(
    make_ini: Callable[..., Path], make_config: Callable[..., Config], tmp_path: Path
):
    status, headers, body = run_cgi(make_ini(), tmp_path, "POST")
    assert status == 200 and headers["Content-Type"] == "application/json"
    creds = json.loads(body)
    assert (
        creation_refusal(make_config(), creds["email"], creds["password"], nocreate=False) is None
    )


def test_cgi_run_by_hand_prints_credentials_like_upstream(
    make_ini: Callable[..., Path], tmp_path: Path
):
    status, _, body = run_cgi(make_ini(), tmp_path, None)
    assert status == 200 and json.loads(body)["email"].endswith(f"@{DOMAIN}")


def test_cgi_get_redirects_and_nocreate_refuses(make_ini: Callable[..., Path], tmp_path: Path):
    inipath = make_ini()
    status, headers, _ = run_cgi(inipath, tmp_path, "GET")
    assert (status, headers["Location"]) == (301, f"dcaccount:https://{DOMAIN}/new")
    status, _, body = run_cgi(inipath, tmp_path, "POST", nocreate=True)
    assert status == 403 and "@" not in body


def test_cgi_in_process_writes_status_header(
    make_ini: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv(NOCREATE_PATH_ENV, str(tmp_path / "absent"))
    monkeypatch.setenv("REQUEST_METHOD", "POST")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    main([str(make_ini())])
    status, _, body = parse_cgi(out.getvalue())
    assert status == 200 and "password" in json.loads(body)


# --- HTTP server mode over a real loopback socket ----------------------------------------------


@pytest.fixture
def serve(
    make_ini: Callable[..., Path], tmp_path: Path
) -> Iterator[Callable[[str], tuple[str, int]]]:
    """Start ``chatmail-newemail INI --listen ADDR`` (port 0); returns the address it listens on."""
    procs: list[subprocess.Popen[str]] = []

    def start(listen: str) -> tuple[str, int]:
        env = {**os.environ, NOCREATE_PATH_ENV: str(tmp_path / "nocreate")}
        proc = subprocess.Popen(
            [*NEWEMAIL, str(make_ini()), "--listen", listen],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        ready, _, _ = select.select([proc.stderr], [], [], 20)
        assert ready, "server did not start within 20 s"
        line = proc.stderr.readline()
        match = re.search(r"serving on (\S+) port (\d+)", line)
        assert match, f"unexpected first line: {line!r}"
        return match.group(1), int(match.group(2))

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def request(
    address: tuple[str, int], method: str, path: str, body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def test_server_mode_answers_like_upstream(
    serve, make_config: Callable[..., Config], tmp_path: Path
):
    address = serve("127.0.0.1:0")
    config = make_config()

    status, headers, body = request(address, "POST", "/new")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    first = json.loads(body)
    assert creation_refusal(config, first["email"], first["password"], nocreate=False) is None

    status, _, body = request(address, "POST", "/cgi-bin/newemail.py")  # old QR codes
    assert status == 200 and json.loads(body)["email"] != first["email"]

    status, headers, _ = request(address, "GET", "/new")
    assert (status, headers["Location"]) == (301, f"dcaccount:https://{DOMAIN}/new")

    status, headers, body = request(address, "HEAD", "/new")
    assert (status, headers["Location"], body) == (301, f"dcaccount:https://{DOMAIN}/new", b"")

    # a request body (none is expected) is ignored
    for _ in range(20):
        status, _, body = request(address, "POST", "/new", body=b"x" * 60000)
        assert status == 200 and json.loads(body)["email"].endswith(f"@{DOMAIN}")

    assert request(address, "POST", "/other")[0] == 404
    assert request(address, "DELETE", "/new")[0] == 405

    (tmp_path / "nocreate").touch()  # checked on every request
    status, _, body = request(address, "POST", "/new")
    assert status == 403 and b"@" not in body


def test_server_mode_on_ipv6_loopback(serve):
    address = serve("[::1]:0")
    status, _, body = request(address, "POST", "/new")
    assert status == 200 and json.loads(body)["email"].endswith(f"@{DOMAIN}")
