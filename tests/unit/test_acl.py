"""The Redis ACL rules and the redis.conf `make up` writes (crewbox.acl)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

from crewbox import acl


def test_a_persona_reaches_only_its_own_keys_by_name() -> None:
    rules = acl.persona_rules("marie")
    # the run's budget ledger and the credentials' concurrency limits are shared
    shared = {"~crewbox:run:*:spend", "~crewbox:limit:*"}
    patterns = [r for r in rules if ("~" in r or r.startswith("&")) and r not in shared]
    assert all("marie" in p or not p.startswith("~") for p in patterns), patterns
    assert "~rq:queue:marie" in rules and "&rq:pubsub:marie.*" in rules
    assert not any("anga" in r or r in ("~*", "~rq:*", "allkeys") for r in rules)
    assert "-@dangerous" in rules


@pytest.mark.parametrize("name", ["a*", "x.y", "a:b", "", "Marie", "a b", "dev_"])
def test_a_name_that_would_widen_a_pattern_is_refused(name: str) -> None:
    with pytest.raises(acl.ACLError):
        acl.persona_rules(name)


def test_the_conf_holds_hashes_and_turns_default_off(tmp_path: Path) -> None:
    conf = acl.write_redis_conf(tmp_path, ["marie", "anga"])
    text = conf.read_text()
    assert "user default off" in text and "appendonly yes" in text
    for user in ("orchestrator", "client", "marie", "anga"):
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
