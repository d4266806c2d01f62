"""Secrets read once, then out of reach: Settings.with_secrets_loaded, crewbox.privileges,
and the Bash tool's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crewbox.config import Settings
from crewbox.errors import UserError
from crewbox.privileges import (
    SECRET_ENV,
    drop_privileges,
    forget_secret_environment,
    parse_run_as,
)
from worker.tools.bash import tool_environment


def test_secrets_are_read_into_memory_and_their_paths_dropped(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("sk-file\n")
    (tmp_path / "pw").write_text("redis-pw\nsecond line\n")
    cfg = Settings(anthropic_api_key_file=tmp_path / "key", redis_password_file=tmp_path / "pw")
    loaded = cfg.with_secrets_loaded()
    (tmp_path / "key").unlink()
    (tmp_path / "pw").unlink()
    assert loaded.anthropic_key() == "sk-file" and loaded.redis_secret() == "redis-pw"
    assert loaded.anthropic_api_key_file is None and loaded.redis_password_file is None


@pytest.mark.parametrize("value", ["0:0", "abc", "1:2:3", ""])
def test_a_bad_run_as_is_one_clear_error(value: str) -> None:
    with pytest.raises(UserError, match="CREWBOX_RUN_AS"):
        parse_run_as(value)


def test_run_as_names_uid_and_gid() -> None:
    assert parse_run_as("10001:10002") == (10001, 10002)
    assert parse_run_as("10001") == (10001, 10001)


@pytest.mark.skipif(os.geteuid() == 0, reason="as root it would switch the test process")
def test_not_root_stays_as_it_is() -> None:
    uid = os.geteuid()
    drop_privileges("10001:10001")
    assert os.geteuid() == uid


def test_a_bash_command_inherits_no_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("CREWBOX_REDIS_PASSWORD_FILE", "/run/secrets/redis_password")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = tool_environment()
    assert "ANTHROPIC_API_KEY" not in env and not any(k.startswith("CREWBOX_") for k in env)
    assert env["LC_ALL"] == "C.UTF-8" and "PATH" in env


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as a worker container starts")
def test_after_the_drop_a_secret_file_cannot_be_read_again(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-secret")
    secret.chmod(0o600)
    tmp_path.chmod(0o755)
    probe = (
        "import os, sys\n"
        "from crewbox.privileges import drop_privileges\n"
        "drop_privileges('10001:10001')\n"
        "print(os.geteuid(), os.getegid())\n"
        "try:\n    open(sys.argv[1]).read(); print('READ')\n"
        "except PermissionError:\n    print('DENIED')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(secret)], capture_output=True, text=True, check=False
    )
    assert done.stdout.split() == ["10001", "10001", "DENIED"], done.stderr


def secret_variables_of_settings() -> set[str]:
    """Every environment name a SecretStr setting (or its ``_file`` companion) is read from."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        if "SecretStr" not in str(field.annotation):
            continue
        for setting in (name, f"{name}_file"):
            if setting not in Settings.model_fields:
                continue
            names.add(f"CREWBOX_{setting.upper()}")
            alias = Settings.model_fields[setting].validation_alias
            names.update(getattr(alias, "choices", []))
    return names


def test_every_secret_setting_is_forgotten() -> None:
    assert secret_variables_of_settings() <= set(SECRET_ENV)
    assert "ANTHROPIC_API_KEY" in secret_variables_of_settings()


def test_forget_secret_environment_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("CREWBOX_REDIS_PASSWORD_FILE", "/run/secrets/redis_password")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("CREWBOX_MODEL", "claude-sonnet-4-6")
    cfg = Settings().with_secrets_loaded()
    forgotten = forget_secret_environment()
    assert sorted(forgotten) == ["ANTHROPIC_API_KEY", "CREWBOX_REDIS_PASSWORD_FILE"]
    assert "ANTHROPIC_API_KEY" not in os.environ and os.environ["CREWBOX_MODEL"]
    assert cfg.anthropic_key() == "sk-secret"
