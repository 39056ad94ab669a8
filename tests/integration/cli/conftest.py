"""What the in-process CLI tests share: an app database of their own, named by QSCOPE_APP_DB_URL."""

import pytest

from qscope.config import get_settings


@pytest.fixture
def app_db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("QSCOPE_APP_DB_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
