"""Settings from the environment and from *_FILE secret files."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_password_comes_from_a_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "db_password"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("APP_DATABASE_PASSWORD_FILE", str(secret))
    settings = Settings()
    assert settings.database_password is not None
    assert settings.database_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_unreadable_secret_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_DATABASE_PASSWORD_FILE", "/nonexistent/db_password")
    with pytest.raises(ValueError, match="APP_DATABASE_PASSWORD_FILE=/nonexistent/db_password"):
        Settings()


def test_invalid_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_DB_POOL_MAX_SIZE", "0")
    with pytest.raises(ValidationError, match="db_pool_max_size"):
        Settings()
