import argparse

import pytest

from chatmaild import metadata, turn
from chatmaild.cliargs import positive_float, positive_int


def test_positive_values_pass() -> None:
    assert positive_int("1") == 1
    assert positive_float("0.25") == 0.25


@pytest.mark.parametrize(("parse", "text"), [(positive_int, "0"), (positive_int, "-3"),
                                             (positive_float, "0"), (positive_float, "nan")])
def test_zero_negative_and_nan_are_refused(parse, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be"):
        parse(text)


@pytest.mark.parametrize(("main", "argv"), [
    (turn.main, ["/run/turn.sock", "--lifetime", "0"]),
    (metadata.main, ["/run/metadata.sock", "/etc/chatmail.ini", "--workers", "0"]),
    (metadata.main, ["/run/metadata.sock", "/etc/chatmail.ini", "--retry-delay", "-1"]),
])
def test_console_scripts_refuse_non_positive_values_as_usage_errors(main, argv, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "must be" in capsys.readouterr().err
