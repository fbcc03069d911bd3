"""local-relay's --params merge rule (pure; no root)."""

from __future__ import annotations

from harness_lib import load_local_relay

lr = load_local_relay()


def test_params_merge_objects_key_by_key_and_replace_other_values() -> None:
    base = {"domain": "a.test", "settings": {"x": 1, "y": 2}, "postfixMaster": {"submission": {"args": ["-o", "a=b"]}}}
    override = {"settings": {"y": 3}, "postfixMaster": {"submission": {"args": ["-o", "c=d"]}, "smtp_inet": None}}
    assert lr.merged_params(base, override) == {
        "domain": "a.test",
        "settings": {"x": 1, "y": 3},
        "postfixMaster": {"submission": {"args": ["-o", "c=d"]}, "smtp_inet": None},
    }
    assert base["settings"] == {"x": 1, "y": 2}  # the base is not changed


def test_params_merge_replaces_an_object_with_a_scalar() -> None:
    assert lr.merged_params({"a": {"b": 1}}, {"a": None}) == {"a": None}
