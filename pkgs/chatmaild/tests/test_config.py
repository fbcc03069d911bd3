from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from chatmaild.config import (
    DEFAULT_NOCREATE_PATH,
    ConfigError,
    nocreate_path,
    parse_params,
    read_config,
)

# upstream's chatmail.ini template (values as shipped), comments and blank lines included
UPSTREAM_STYLE_INI = """\
[params]

# mail domain (MUST be set to fully qualified chat mail domain)
mail_domain = chat.example.org

max_user_send_per_minute = 60
max_user_send_burst_size = 10
max_mailbox_size = 500M
max_message_size = 31457280
delete_mails_after = 20
delete_large_after = 7
delete_inactive_users_after = 90
username_min_length = 9
username_max_length = 9
password_min_length = 9
passthrough_senders =
passthrough_recipients =
#www_folder = www
filtermail_smtp_port = 10080
postfix_reinject_port = 10025
filtermail_smtp_port_incoming = 10081
postfix_reinject_port_incoming = 10026
disable_ipv6 = False
acme_email = 
# iroh_relay =
# mtail_address = 127.0.0.1
imap_rawlog = false 
imap_compress = false
#max_load_1m = 5
#min_available_memory = 200M
#min_free_disk_space = 1G
#max_imap_connections = 10000
#max_smtp_connections = 1000

privacy_postal =
privacy_mail =
privacy_pdo =
privacy_supervisor =
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatmail.ini"
    path.write_text(text)
    return path


def test_upstream_template_gives_upstream_defaults(tmp_path):
    config = read_config(write(tmp_path, UPSTREAM_STYLE_INI))
    assert config.mail_domain == "chat.example.org"
    assert config.max_user_send_per_minute == 60
    assert config.max_user_send_burst_size == 10
    assert config.max_mailbox_size == "500M"
    assert config.max_message_size == 31457280
    assert (config.delete_mails_after, config.delete_large_after) == (20, 7)
    assert config.delete_inactive_users_after == 90
    assert (config.username_min_length, config.username_max_length) == (9, 9)
    assert config.password_min_length == 9
    assert config.www_folder == ""
    assert (config.filtermail_smtp_port, config.postfix_reinject_port) == (10080, 10025)
    assert config.filtermail_smtp_port_incoming == 10081
    assert config.postfix_reinject_port_incoming == 10026
    # upstream's key for /mxdeliv's loopback port, and this relay's own two
    assert config.filtermail_http_port_incoming == 10082
    assert (config.postfix_mxdeliv_port, config.mxdeliv_fallback_port) == (10027, 10084)
    assert config.disable_ipv6 is False
    assert config.acme_email == ""
    assert config.iroh_relay == "https://chat.example.org" and config.enable_iroh_relay
    assert config.mtail_address is None
    assert config.imap_rawlog is False and config.imap_compress is False
    assert config.privacy_postal == config.privacy_mail == ""
    assert config.privacy_pdo == config.privacy_supervisor == ""
    assert config.mailboxes_dir == Path("/home/vmail/mail/chat.example.org")
    assert config.inipath == tmp_path / "chatmail.ini"
    # the system limits of upstream 1.12
    assert config.max_load_1m == 5.0
    assert (config.min_available_memory, config.min_free_disk_space) == ("200M", "1G")
    assert (config.max_imap_connections, config.max_smtp_connections) == (10000, 1000)


def test_system_limits_are_typed(make_config):
    config = make_config(max_load_1m="2.5", min_available_memory="1G", min_free_disk_space="512",
                         max_imap_connections="20", max_smtp_connections="5", max_mailbox_size="2G")
    assert config.max_load_1m == 2.5
    assert (config.min_available_memory, config.min_free_disk_space) == ("1G", "512")
    assert (config.max_imap_connections, config.max_smtp_connections) == (20, 5)
    assert config.max_mailbox_size_bytes == 2 * 1024**3


def test_only_mail_domain_gives_the_same_config(tmp_path):
    full = read_config(write(tmp_path, UPSTREAM_STYLE_INI))
    minimal = read_config(write(tmp_path, "[params]\nmail_domain = chat.example.org\n"))
    assert minimal == full


def test_values_are_typed(make_config):
    config = make_config(
        max_user_send_per_minute=37,
        disable_ipv6="True",
        imap_rawlog="yes",
        imap_compress="1",
        mtail_address="127.0.0.1",
        iroh_relay="https://iroh.example.net",
        www_folder="/srv/www",
        mailboxes_dir="/var/vmail/x",
    )
    assert config.max_user_send_per_minute == 37
    assert config.disable_ipv6 and config.imap_rawlog and config.imap_compress
    assert config.mtail_address == "127.0.0.1"
    assert config.iroh_relay == "https://iroh.example.net" and not config.enable_iroh_relay
    assert config.www_folder == "/srv/www"
    assert config.mailboxes_dir == Path("/var/vmail/x")


def test_empty_iroh_relay_disables_own_relay(make_config):
    config = make_config(iroh_relay="")
    assert config.iroh_relay == "" and not config.enable_iroh_relay


def test_multiline_values_comments_and_no_interpolation(tmp_path):
    text = (
        "[params]\n"
        "mail_domain = _r1.test\n"
        "# a comment\n"
        "privacy_postal =\n"
        "    Some GmbH,\n"
        "    Street 1, 100% Town\n"
        "privacy_mail = privacy@%(mail_domain)s\n"
    )
    config = read_config(write(tmp_path, text))
    assert config.mail_domain == "_r1.test"
    assert config.privacy_postal == "Some GmbH,\nStreet 1, 100% Town"
    assert config.privacy_mail == "privacy@%(mail_domain)s"


def test_config_is_frozen(example_config):
    with pytest.raises(dataclasses.FrozenInstanceError):
        example_config.mail_domain = "other.org"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("filtermail_smtp_port", "ten", "port"),
        ("filtermail_smtp_port", "0", "port"),
        ("postfix_reinject_port_incoming", "70000", "port"),
        ("filtermail_http_port_incoming", "http", "port"),
        ("max_user_send_per_minute", "0", "integer >= 1"),
        ("max_message_size", "30M", "integer"),
        ("username_min_length", "-3", "integer"),
        ("delete_mails_after", "", "integer"),
        ("disable_ipv6", "maybe", "true or false"),
        ("max_mailbox_size", "lots", "size"),
        ("min_free_disk_space", "1.5G", "size"),
        ("max_load_1m", "0", "number greater than 0"),
        ("max_load_1m", "high", "number greater than 0"),
        ("max_smtp_connections", "4", "integer >= 5"),
        ("max_imap_connections", "0", "integer >= 1"),
        ("mailboxes_dir", "relative/dir", "absolute path"),
    ],
)
def test_wrong_value_names_key_value_and_expectation(make_config, key, value, expected):
    with pytest.raises(ConfigError) as excinfo:
        make_config(**{key: value})
    message = str(excinfo.value)
    assert key in message and repr(value) in message and expected in message


@pytest.mark.parametrize("domain", ["Chat.Example.org", "chat example.org", "a/b", "-x.org", "x..org"])
def test_bad_mail_domain(make_config, domain):
    with pytest.raises(ConfigError, match="mail_domain"):
        make_config(mail_domain=domain)


def test_min_length_above_max_length(make_config):
    with pytest.raises(ConfigError, match="username_min_length = 10.*username_max_length = 9"):
        make_config(username_min_length=10)


def test_missing_mail_domain(tmp_path):
    with pytest.raises(ConfigError, match="mail_domain is missing"):
        read_config(write(tmp_path, "[params]\nmax_message_size = 10\n"))
    with pytest.raises(ConfigError, match="mail_domain is missing"):
        read_config(write(tmp_path, "[params]\nmail_domain =\n"))


def test_missing_file_section_or_broken_syntax(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        read_config(tmp_path / "nope.ini")
    with pytest.raises(ConfigError, match=r"no \[params\] section"):
        read_config(write(tmp_path, "[other]\nmail_domain = x.org\n"))
    with pytest.raises(ConfigError, match="not a valid ini file"):
        read_config(write(tmp_path, "mail_domain = x.org\n"))
    with pytest.raises(ConfigError, match="not a valid ini file"):
        read_config(write(tmp_path, "[params]\nmail_domain = x.org\nmail_domain = y.org\n"))


def test_unknown_key_warns(make_config, caplog):
    with caplog.at_level(logging.WARNING):
        config = make_config(filtermail_smpt_port=1)
    assert config.filtermail_smtp_port == 10080
    assert "filtermail_smpt_port" in caplog.text


def test_obsolete_upstream_key_is_silent(caplog):
    with caplog.at_level(logging.WARNING):
        parse_params({"mail_domain": "x.org", "passdb_path": "/home/vmail/passdb.sqlite"})
    assert caplog.text == ""


def test_nocreate_path_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("CHATMAIL_NOCREATE_PATH", raising=False)
    assert nocreate_path() == DEFAULT_NOCREATE_PATH == Path("/etc/chatmail-nocreate")
    monkeypatch.setenv("CHATMAIL_NOCREATE_PATH", str(tmp_path / "nocreate"))
    assert nocreate_path() == tmp_path / "nocreate"
