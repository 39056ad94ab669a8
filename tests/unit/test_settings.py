"""Settings in groups (qscope.config): every QSCOPE_* variable users and docs name is read, into its group, from the
environment or .env, and `Settings(name=value)` means what the variable QSCOPE_NAME means."""

import re
from pathlib import Path

import pytest

from qscope.config import Settings, env_names
from tests.helpers import ROOT

# variables of the containers and the test suite, not of the app's Settings
NOT_SETTINGS = {"QSCOPE_DB_PASSWORD", "QSCOPE_VARIANT", "QSCOPE_GPUS", "QSCOPE_TORCH", "QSCOPE_SERVE_DBS"}
NOT_SETTINGS |= {"QSCOPE_MODEL", "QSCOPE_SAE", "QSCOPE_CORPUS", "QSCOPE_STORE", "QSCOPE_TOKENS"}  # compose's harvest

# variables as they were named before the groups (one per group, and the two whose name is not the group's prefix)
SAMPLES = {
    "QSCOPE_DATA_DIR": ("paths", "data_dir", "/srv/data", Path("/srv/data")),
    "QSCOPE_DEVICE": ("runtime", "device", "cuda:1", "cuda:1"),
    "QSCOPE_ALLOWED_HOSTS": ("server", "allowed_hosts", '["a.example"]', ["a.example"]),
    "QSCOPE_LIVE_WAIT_S": ("live", "wait_s", "2.5", 2.5),
    "QSCOPE_MAX_CHARS": ("live", "max_chars", "77", 77),
    "QSCOPE_SEARCH_THREADS": ("search", "threads", "3", 3),
    "QSCOPE_STEER_MAX_NEW_TOKENS": ("steer", "max_new_tokens", "9", 9),
    "QSCOPE_OPENAI_MAX_PROMPT_TOKENS": ("steer", "openai_max_prompt_tokens", "99", 99),
    "QSCOPE_STEER_EVAL_MAX_ROWS": ("steer_eval", "max_rows", "11", 11),
    "QSCOPE_DISCOVER_MAX_FILE_ROWS": ("discover", "max_file_rows", "12", 12),
    "QSCOPE_RATE_STEER_PER_MIN": ("rates", "steer_per_min", "1.5", 1.5),
    "QSCOPE_APP_DB_URL": ("app_db", "url", "sqlite:///x.db", "sqlite:///x.db"),
    "QSCOPE_EXPLAIN_API_KEY": ("explain", "api_key", "k", "k"),
}


def test_every_variable_the_docs_name_is_read():
    texts = [
        ROOT / "README.md",
        ROOT / "Dockerfile",
        ROOT / "docker-compose.yml",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    named = {m for p in texts for m in re.findall(r"QSCOPE_[A-Z0-9_]*[A-Z0-9]\b(?!\*)", p.read_text())}
    named = {n for n in named if not n.startswith("QSCOPE_TEST_")} - NOT_SETTINGS
    assert named and named <= set(env_names()), sorted(named - set(env_names()))


@pytest.mark.parametrize("variable", sorted(SAMPLES))
def test_a_variable_lands_in_its_group(monkeypatch, tmp_path, variable):
    group, field, raw, expected = SAMPLES[variable]
    monkeypatch.chdir(tmp_path)  # no .env of the working tree
    monkeypatch.setenv(variable, raw)
    assert getattr(getattr(Settings(), group), field) == expected
    assert env_names()[variable] == (group, field)
    monkeypatch.delenv(variable)  # the same value given by its variable's name, as tests write it: the same setting
    assert getattr(getattr(Settings(**{variable.removeprefix("QSCOPE_").lower(): expected}), group), field) == expected


def test_dot_env_is_read_and_a_bare_field_name_is_not(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("QSCOPE_RATE_WRITE_BURST=3\nQSCOPE_LIVE_WAIT_S=4\n")
    monkeypatch.setenv("WAIT_S", "99")  # a group reads QSCOPE_ names only
    monkeypatch.setenv("URL", "sqlite:///elsewhere.db")
    s = Settings()
    assert s.rates.write_burst == 3 and s.live.wait_s == 4.0 and s.app_db.url == "sqlite:///data/qscope-app.db"


def test_a_value_given_by_name_keeps_the_groups_other_variables(monkeypatch):
    monkeypatch.setenv("QSCOPE_RATE_SHARE_BURST", "2")
    s = Settings(rate_steer_per_min=0)
    assert s.rates.steer_per_min == 0 and s.rates.share_burst == 2
    with pytest.raises(ValueError, match="rate_stear"):
        Settings(rate_stear_per_min=0)  # a misspelt name is refused, not ignored
