"""The Redis ACL rules and the redis.conf `make up` writes (crewbox.acl)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from crewbox import acl


def test_a_persona_reaches_only_its_own_keys_by_name() -> None:
    rules = acl.persona_rules("marie")
    # read-only: the run's spend ledgers (its budget sums them), owner leases, cancel flags
    patterns = [r for r in rules if r.startswith("~") or r.startswith("&")]
    assert all("marie" in p for p in patterns), patterns
    assert "~rq:queue:marie" in rules and "&rq:pubsub:marie.*" in rules
    assert "~crewbox:limit:marie:*" in rules and "~crewbox:run:*:spend:marie" in rules
    assert not any("anga" in r or r in ("~*", "~rq:*", "allkeys") for r in rules)
    assert not any((r.startswith("%W") and "spend" in r) or "limit:*" in r for r in rules)


def test_a_persona_has_no_lua_scan_info_or_pubsub_listing() -> None:
    rules = acl.persona_rules("marie")
    for refused in ("-@dangerous", "-@scripting", "-@pubsub", "-scan", "-randomkey", "-select"):
        assert refused in rules
    assert "+info" not in rules and "+@scripting" not in rules
    assert rules.index("-@pubsub") < rules.index("+subscribe")  # only its own channel


@pytest.mark.parametrize("name", ["a*", "x.y", "a:b", "", "Marie", "a b", "dev_"])
def test_a_name_that_would_widen_a_pattern_is_refused(name: str) -> None:
    with pytest.raises(acl.ACLError):
        acl.persona_rules(name)


def test_the_conf_holds_hashes_and_turns_default_off(tmp_path: Path) -> None:
    conf = acl.write_redis_conf(tmp_path, ["marie", "anga"])
    text = conf.read_text()
    assert "appendonly yes" in text and "maxmemory 256mb\nmaxmemory-policy noeviction" in text
    # off (no login) but with every permission: the AOF replays MULTI/EXEC as default
    assert "user default off nopass ~* &* +@all\n" in text
    for user in ("orchestrator", "client", "web", "marie", "anga"):
        password = (tmp_path / "redis" / f"{user}.password").read_text().strip()
        assert password not in text
        assert f"#{hashlib.sha256(password.encode()).hexdigest()}" in text
        mode = (tmp_path / "redis" / f"{user}.password").stat().st_mode
        assert stat.S_IMODE(mode) == 0o600


def test_passwords_are_kept_across_runs(tmp_path: Path) -> None:
    acl.write_redis_conf(tmp_path, ["marie"])
    first = (tmp_path / "redis" / "marie.password").read_text()
    acl.write_redis_conf(tmp_path, ["marie"])
    assert (tmp_path / "redis" / "marie.password").read_text() == first


def test_main_says_what_is_wrong_with_a_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert acl.main(["--secrets", str(tmp_path), "bad.name"]) == 2
    assert "bad.name" in capsys.readouterr().err


def test_maxmemory_is_configurable_and_checked(tmp_path: Path) -> None:
    assert acl.main(["--secrets", str(tmp_path), "--maxmemory", "100mb", "marie"]) == 0
    assert "maxmemory 100mb\n" in (tmp_path / "resolved" / "redis.conf").read_text()
    with pytest.raises(acl.ACLError, match="not a memory size"):
        acl.write_redis_conf(tmp_path, ["marie"], maxmemory="lots\nuser evil on")
