"""Settings: the app's configuration, one group per concern, every value read from a ``QSCOPE_*`` variable.

``get_settings().steer.max_new_tokens`` is ``QSCOPE_STEER_MAX_NEW_TOKENS``: each group is a pydantic-settings class
that reads its own variables (its ``env_prefix`` + the field's name; the two fields whose variable is older than
their group say theirs as a ``validation_alias``) from the environment or a ``.env`` file. Code is handed the group
it needs (`Steering(settings.steer, ...)`), not fields copied out of a flat object; the request bounds a group sets
are built from it in one place each (`steer_limits`, `eval_limits`, the live `Limits` in create_app).

Why groups that read the environment themselves, rather than nested models under one reader: pydantic-settings
would name nested values ``QSCOPE_STEER__MAX_NEW_TOKENS``, and every variable users and docs name
(``QSCOPE_RATE_STEER_PER_MIN``) must keep working as it is. A group with a prefix reads exactly those names with no
translation code. `Settings` itself reads nothing: it holds the groups, and also takes a value by its variable's
name (`Settings(rate_steer_per_min=0)` sets ``QSCOPE_RATE_STEER_PER_MIN``), as tests and scripts write it.
The CLI reuses these values as its defaults, so a flag and a variable always mean the same thing.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "QSCOPE_"


class SettingsGroup(BaseSettings):
    """A group of settings, each read from its env_prefix (``QSCOPE_`` unless the group says more) + the field's
    name; frozen, as one object is shared by the whole app."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=".env", extra="ignore", populate_by_name=True, frozen=True
    )


class PathSettings(SettingsGroup):
    """Where files go (QSCOPE_DATA_DIR, ...)."""

    data_dir: Path = Field(Path("data"), description="Where built artefacts (demo model, databases) live.")
    demo_dir: Path = Field(Path("data/demo"), description="Where `qscope build-demo` writes mini-Qwen.")
    cache_dir: Path | None = Field(
        None,
        description="Where search indexes go when the folder of a database is read-only, and the static embedder's "
        "token table (default: ~/.cache/qscope).",
    )


class RuntimeSettings(SettingsGroup):
    """How models run (QSCOPE_DEVICE, QSCOPE_DTYPE, QSCOPE_SEED)."""

    device: str = Field("auto", description="torch device: 'auto' (cuda if present, else cpu), 'cpu', 'cuda:0'.")
    dtype: str = Field("auto", description="torch dtype: 'auto' (bf16 on cuda, fp32 on cpu), 'float32', ...")
    seed: int = Field(0, description="Seed for everything deterministic (demo build, sampling defaults).")


class ServerSettings(SettingsGroup):
    """`qscope serve`: where it binds, what it answers, how it shows paths (app/qscope/web/security.py)."""

    host: str = Field("127.0.0.1", description="Address `qscope serve` binds.")
    port: int = Field(8000, description="Port `qscope serve` binds.")
    query_timeout_s: float = Field(5.0, description="A DuckDB query of the server is interrupted after this.")
    max_body_bytes: int = Field(64_000, description="Largest request body; past it: 413.")
    max_url_chars: int = Field(8_000, description="Longest path + query string; past it: 414.")
    cors_origins: list[str] = Field(
        [], description="Origins allowed to call the API from a browser (JSON list); empty: CORS off."
    )
    allowed_hosts: list[str] = Field(
        [],
        description="Host names the server answers besides 127.0.0.1, localhost, [::1] and QSCOPE_HOST (JSON "
        "list; '*.example.org' for subdomains, '*' for any host); a request for another Host gets 400.",
    )
    show_paths: bool = Field(
        False,
        description="Show the absolute paths of the model, corpus and SAE files on pages, .json twins and error "
        "bodies (a server only its operator uses); off: names relative to the store's folder.",
    )


class LiveSettings(SettingsGroup):
    """Bounds on the model runs of /inspect, /attribute and /search (and discover's texts)."""

    max_chars: int = Field(4000, description="Longest text /search and /inspect run the model on (characters).")
    max_tokens: int = Field(256, description="Most tokens one such model run may take (per text).")
    max_texts: int = Field(8, description="Most texts per side in /inspect's compare mode.")
    attribute_max_tokens: int = Field(
        1024, description="Longest sequence /attribute explains a token of (a text, or a run's prompt + completion)."
    )
    wait_s: float = Field(
        30.0,
        validation_alias="qscope_live_wait_s",
        description="An /inspect run waits this long for the model, then 503.",
    )


class SearchSettings(SettingsGroup):
    """/search (QSCOPE_SEARCH_*)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "SEARCH_")

    threads: int = Field(
        4,
        ge=1,
        description="Searches answered at once; more wait their turn without taking the threads pages are served by.",
    )


class SteerSettings(SettingsGroup):
    """Steering (/steer, POST /api/steer, /v1): limits of one request, the worker's queue (QSCOPE_STEER_*)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "STEER_")

    max_prompt_tokens: int = Field(512, description="Longest steering prompt, in tokens.")
    max_new_tokens: int = Field(256, description="Most tokens one steering request may generate per row.")
    max_features: int = Field(8, description="Most features one steering request may steer with.")
    max_strength: float = Field(200.0, description="Largest |strength| a steering feature may have.")
    timeout_s: float = Field(
        60.0, description="A steering request's rows stop after generating for this many seconds (queue wait apart)."
    )
    queue_size: int = Field(16, description="Steering requests that may wait; past it: 503 + Retry-After.")
    queue_per_client: int = Field(
        8,
        description="Steering requests (/api/steer, /v1) of one client IP that may wait; past it: 429 + Retry-After "
        "for that client (0: no share, only the queue size). Waiting requests are served fairly across clients.",
    )
    queue_wait_s: float = Field(
        30.0, description="A steering request still queued after this many seconds gets 503 + Retry-After."
    )
    max_batch_rows: int = Field(32, description="Most rows (2 per request) one batched generation runs.")
    batch_wait_ms: float = Field(
        10.0, description="A batch that is not full waits this long for more requests (0: takes what is queued)."
    )
    scheduler: Literal["static", "continuous"] = Field(
        "static",
        description="static: a batch runs until its longest row ends; continuous: requests join and leave the "
        "running batch at every step (qscope.steer.continuous_worker).",
    )
    openai_max_prompt_tokens: int = Field(
        4096,
        validation_alias="qscope_openai_max_prompt_tokens",
        description="Longest prompt of an OpenAI-compatible /v1 completion, in tokens (explainers send ~1,000).",
    )


class SteerEvalSettings(SettingsGroup):
    """Steering evaluations (/steer-eval, POST /api/steer-eval, `qscope steer-eval`) (QSCOPE_STEER_EVAL_*)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "STEER_EVAL_")

    max_prompts: int = Field(64, description="Most prompts in one evaluation's prompt set.")
    max_prompt_chars: int = Field(2000, description="Longest prompt of an evaluation (characters).")
    max_seeds: int = Field(8, description="Most sampling seeds per prompt in one evaluation.")
    max_strengths: int = Field(12, description="Most strengths in one evaluation's sweep.")
    max_random_controls: int = Field(8, description="Most random-feature control sets per evaluation.")
    max_rows: int = Field(
        4096, description="Most generated rows per evaluation (prompts x seeds x arm-strength points)."
    )
    batch_rows: int = Field(64, description="Rows of one evaluation batch (one batched generation).")
    max_waiting: int = Field(4, description="Evaluations that may wait for their turn; past it: 503.")
    waiting_per_client: int = Field(
        2, description="Evaluations of one client IP that may wait for their turn; past it: 429 (0: no share)."
    )


class DiscoverSettings(SettingsGroup):
    """Discover (/discover, /detectors, /footprints, `qscope discover`, `qscope footprint`) (QSCOPE_DISCOVER_*)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "DISCOVER_")

    max_examples: int = Field(2000, description="Most examples per set (a discovery or a footprint).")
    max_tokens: int = Field(128, description="Examples longer than this many tokens are cut to it.")
    max_file_bytes: int = Field(2_000_000, description="Largest example or footprint file read (bytes).")
    max_file_rows: int = Field(
        100_000, ge=1, description="Most rows of an uploaded footprint file (per table); more: 422."
    )
    max_body_bytes: int = Field(
        6_000_000, description="Largest request body of the discover API (files travel inside it); past it: 413."
    )
    max_detect_texts: int = Field(64, description="Most texts one POST /api/detect may score.")
    batch_tokens: int = Field(4096, description="Padded tokens per forward pass of a discovery.")
    queue_size: int = Field(8, description="Discover and footprint jobs that may wait; past it: 503.")
    queue_per_client: int = Field(
        2, description="Discover and footprint jobs of one client IP that may wait; past it: 429 (0: no share)."
    )


class RateSettings(SettingsGroup):
    """Per-client rates: token buckets of the routes that declare them (qscope.web.rates) (QSCOPE_RATE_*)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "RATE_")

    steer_per_min: float = Field(30.0, description="Steering requests per client IP per minute; 0: no limit.")
    steer_burst: int = Field(6, description="Steering requests a client may make at once before the rate.")
    inspect_per_min: float = Field(
        60.0, description="Model runs (/inspect, /attribute, /search with 'fires') per client IP per minute; 0: none."
    )
    inspect_burst: int = Field(10, description="Model runs (as QSCOPE_RATE_INSPECT_PER_MIN) a client may make at once.")
    share_per_min: float = Field(10.0, description="Shares (POST /api/steer/share) per client IP per minute.")
    share_burst: int = Field(5, description="Shares a client may make at once before the rate applies.")
    openai_per_min: float = Field(
        600.0, description="OpenAI-compatible completions (POST /v1/*) per client IP per minute; 0: no limit."
    )
    openai_burst: int = Field(64, description="/v1 completions a client may make at once (an explainer's batch).")
    write_per_min: float = Field(
        20.0, description="Writes of notes and lists (create, edit, delete) per client IP per minute; 0: no limit."
    )
    write_burst: int = Field(10, description="Writes of notes and lists a client may make at once.")


class AppDbSettings(SettingsGroup):
    """The app database (QSCOPE_APP_DB_URL)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "APP_DB_")

    url: str = Field(
        "sqlite:///data/qscope-app.db",
        description="SQLAlchemy URL of the app database (shared steering runs, evaluation jobs and recipes).",
    )


class ExplainSettings(SettingsGroup):
    """`qscope explain` (QSCOPE_EXPLAIN_API_KEY)."""

    model_config = SettingsConfigDict(env_prefix=PREFIX + "EXPLAIN_")

    api_key: str | None = Field(None, description="API key sent to `qscope explain --endpoint` (a bearer).")


class Settings(BaseModel):
    """Every group. Reads nothing itself: each group reads its variables when built (when not given)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    paths: PathSettings = Field(default_factory=PathSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    steer: SteerSettings = Field(default_factory=SteerSettings)
    steer_eval: SteerEvalSettings = Field(default_factory=SteerEvalSettings)
    discover: DiscoverSettings = Field(default_factory=DiscoverSettings)
    rates: RateSettings = Field(default_factory=RateSettings)
    app_db: AppDbSettings = Field(default_factory=AppDbSettings)
    explain: ExplainSettings = Field(default_factory=ExplainSettings)

    @model_validator(mode="before")
    @classmethod
    def _by_variable_names(cls, data: Any) -> Any:
        """`Settings(rate_steer_per_min=0)`: values named as their variables are, put into their groups (each
        group given such a value is built here, reading its other variables from the environment)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        given: dict[str, dict[str, Any]] = {}  # group -> {field: value}
        for name in [k for k in data if PREFIX + k.upper() in env_names()]:
            group, field = env_names()[PREFIX + name.upper()]
            given.setdefault(group, {})[field] = data.pop(name)
        for group, values in given.items():
            if group in data:
                raise ValueError(f"{group}: give the group or values by their variables' names, not both")
            data[group] = cls.model_fields[group].annotation(**values)  # type: ignore[misc]
        return data


@cache
def env_names() -> dict[str, tuple[str, str]]:
    """Every variable the settings read, as (group, field): {'QSCOPE_RATE_STEER_PER_MIN': ('rates', ...), ...}."""
    names = {}
    for group, info in Settings.model_fields.items():
        cls = info.annotation
        assert isinstance(cls, type) and issubclass(cls, SettingsGroup)
        prefix = cls.model_config.get("env_prefix", PREFIX)
        for field, f in cls.model_fields.items():
            env = f.validation_alias if isinstance(f.validation_alias, str) else prefix + field
            names[env.upper()] = (group, field)
    return names


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
