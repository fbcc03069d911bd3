"""How Dovecot 2.3 counts quota for mail it stores compressed, with the quota and zlib settings
of the rendered configuration (modules/render.nix: ``mail_plugins = zlib quota``,
``zlib_save = gz``, ``quota = maildir``, ``quota_grace = 0``).

Measured here: Dovecot counts the uncompressed size (the message as stored, LF line ends: the
``S=`` of the maildir file name), not the gzip file on disk. A mailbox of 1000 KiB takes two
armored messages of 256,000 payload bytes (about 347 KB each) and refuses the third with LMTP
552, although the three gzip files (about 264 KB each) would fit; nixos-tests/basic.nix and the
harness's quota test expect exactly that.
"""

from __future__ import annotations

import gzip
import imaplib
import re
import shutil
import smtplib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatmaild import testmail
import test_doveauth_dovecot
from test_doveauth_dovecot import Dovecot

pytestmark = test_doveauth_dovecot.pytestmark  # root and Dovecot, else skipped

LIMIT_KIB = 1000
USER, PASSWORD = "quotauser@chat.example.org", "secret1234"

QUOTA_CONF = """\
protocols = imap lmtp
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = {dir}/users
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={dir}/home/%u
}}
mail_location = maildir:{dir}/home/%u
mail_plugins = zlib quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
}}
plugin {{
  zlib_save = gz
  quota = maildir:User quota
  quota_rule = *:storage={limit}K
  quota_grace = 0
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"""


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    # world-traversable: Dovecot's mail processes (nobody) work below it
    workdir = Path(tempfile.mkdtemp(prefix="dovecot-quota-"))
    workdir.chmod(0o755)
    (workdir / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    dovecot = None
    try:
        dovecot = Dovecot(workdir, QUOTA_CONF.replace("{limit}", str(LIMIT_KIB)))
        yield dovecot
    finally:
        if dovecot is not None:
            dovecot.stop()
        shutil.rmtree(workdir)


def deliver(dovecot: Dovecot, message: bytes) -> tuple[int, str]:
    """LMTP delivery as Postfix does it: (reply code, text)."""
    with smtplib.LMTP("127.0.0.1", dovecot.lmtp_port, timeout=20) as lmtp:
        try:
            lmtp.sendmail("sender@other.example", [USER], message)
        except smtplib.SMTPRecipientsRefused as e:
            ((code, text),) = e.recipients.values()
            return code, text.decode()
        except smtplib.SMTPDataError as e:
            return e.smtp_code, e.smtp_error.decode()
    return 250, ""


def test_quota_counts_uncompressed_sizes_of_gzip_stored_mail(dovecot):
    messages = [
        testmail.to_bytes(testmail.make_encrypted_message(
            "sender@other.example", [USER], payload_size=LIMIT_KIB * 1024 // 4))
        for _ in range(3)
    ]
    replies = [deliver(dovecot, m) for m in messages]
    assert [code for code, _ in replies] == [250, 250, 552], (replies, dovecot.log())
    assert "Quota exceeded" in replies[2][1]

    files = sorted((dovecot.dir / "home" / USER / "new").iterdir())
    assert len(files) == 2
    uncompressed = []
    for path in files:
        stored = gzip.decompress(path.read_bytes())  # stored as gzip
        # a delivered message with LF line ends, after the headers LMTP adds (Return-Path, ...)
        assert any(stored.endswith(m.replace(b"\r\n", b"\n")) for m in messages[:2])
        assert int(re.search(r",S=(\d+)", path.name).group(1)) == len(stored)
        assert path.stat().st_size < 0.8 * len(stored)
        uncompressed.append(len(stored))
    # compressed, the third message would have fitted: the quota does not count that way
    on_disk = sum(path.stat().st_size for path in files)
    assert on_disk + on_disk // 2 < LIMIT_KIB * 1024

    used = sum(uncompressed)
    maildirsize = (dovecot.dir / "home" / USER / "maildirsize").read_text().splitlines()
    assert maildirsize[0] == f"{LIMIT_KIB * 1024}S"
    assert sum(int(line.split()[0]) for line in maildirsize[1:]) == used
    with imaplib.IMAP4("127.0.0.1", dovecot.port, timeout=10) as imap:
        imap.login(USER, PASSWORD)
        _, (_, quota) = imap.getquotaroot("INBOX")
    assert quota == [f'"User quota" (STORAGE {round(used / 1024)} {LIMIT_KIB})'.encode()], quota
