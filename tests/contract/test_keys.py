"""Key and channel names, and the job id rule (docs/api.md, The job snapshot; docs/workers.md, Other
languages)."""

from __future__ import annotations

import pytest

from gateway.contract import keys, script
from gateway.errors import InvalidUpdate


@pytest.mark.parametrize("job_id,valid", [
    ("a", True), ("A-z_0-9", True), ("x" * 128, True), ("x" * 129, False), ("", False),
    ("a/b", False), ("a*", False), ("a b", False), ("ä", False), ("a\n", False),
])
def test_the_job_id_rule(job_id: str, valid: bool) -> None:
    assert keys.valid_job_id(job_id) is valid


def test_every_key_of_a_tenant_shares_its_hash_tag() -> None:
    names = [*keys.script_keys("acme", "j1"), keys.tenant_channel("acme"),
             keys.job_channel("acme", "j1")]
    assert all(name.startswith("gw:{acme}:") for name in names)
    assert keys.job_channel("acme", "j1") == keys.job_key("acme", "j1") == "gw:{acme}:job:j1"


def test_channels_parse_back() -> None:
    assert keys.parse_job_channel("gw:{acme}:job:j1") == ("acme", "j1")
    assert keys.parse_tenant_channel("gw:{acme}:jobs") == "acme"
    assert keys.parse_job_channel("gw:{acme}:jobs") is None
    assert keys.parse_tenant_channel("gw:{acme}:job:j1") is None
    assert keys.job_of_channel(b"gw:{acme}:job:j1") == "j1"
    assert keys.job_of_channel(b"gw:{acme}:jobs") is None
    assert keys.job_of_channel(b"gw:probe:abc") is None


@pytest.mark.parametrize("tenant", ["acme", "a", "default", "team-7_eu", "0" * 64])
def test_a_tenant_name_fits_in_a_hash_tag(tenant: str) -> None:
    assert keys.valid_tenant(tenant) and keys.check_tenant(tenant) == tenant


@pytest.mark.parametrize("tenant", ["", "Acme", "a}b", "{a}", "_auth", "-x", "a b", "0" * 65,
                                    "é"])
def test_anything_else_is_no_tenant(tenant: str) -> None:
    """A brace would move a key out of its tenant's hash tag; a leading '_' is kept for the
    gateway's own keys; upper case would make two tenants of one by accident."""
    assert not keys.valid_tenant(tenant)
    with pytest.raises(ValueError, match="tenant"):
        keys.check_tenant(tenant)


def test_no_call_of_the_update_script_is_made_for_a_bad_tenant() -> None:
    with pytest.raises(InvalidUpdate, match="tenant"):
        script.call("create", "j", {}, tenant="a}b", lifetimes=script.Lifetimes())
