"""Settings: the one pydantic-settings object for the whole app (env prefix ``QSCOPE_``).

Every field can be set in the environment (``QSCOPE_DEVICE=cuda``) or in a ``.env`` file; the CLI
reuses these values as its defaults, so a flag and a variable always mean the same thing.
"""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QSCOPE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("data"), description="Where built artefacts (demo model, databases) live.")
    demo_dir: Path = Field(Path("data/demo"), description="Where `qscope build-demo` writes mini-Qwen.")
    device: str = Field("auto", description="torch device: 'auto' (cuda if present, else cpu), 'cpu', 'cuda:0'.")
    dtype: str = Field("auto", description="torch dtype: 'auto' (bf16 on cuda, fp32 on cpu), 'float32', ...")
    seed: int = Field(0, description="Seed for everything deterministic (demo build, sampling defaults).")
    host: str = Field("127.0.0.1", description="Address `qscope serve` binds.")
    port: int = Field(8000, description="Port `qscope serve` binds.")
    # explorer (qscope serve): bounds on the model runs of /search and /inspect, and the read-only store
    max_chars: int = Field(4000, description="Longest text /search and /inspect run the model on (characters).")
    max_tokens: int = Field(256, description="Most tokens one such model run may take (per text).")
    max_texts: int = Field(8, description="Most texts per side in /inspect's compare mode.")
    attribute_max_tokens: int = Field(
        1024, description="Longest sequence /attribute explains a token of (a text, or a run's prompt + completion)."
    )
    query_timeout_s: float = Field(5.0, description="A DuckDB query of the server is interrupted after this.")
    search_threads: int = Field(
        4,
        ge=1,
        description="Searches answered at once; more wait their turn without taking the threads pages are served by.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Where search indexes go when the folder of a database is read-only, and the static embedder's "
        "token table (default: ~/.cache/qscope).",
    )
    # steering (/steer, POST /api/steer): limits of one request, the worker's queue, the app database
    steer_max_prompt_tokens: int = Field(512, description="Longest steering prompt, in tokens.")
    steer_max_new_tokens: int = Field(256, description="Most tokens one steering request may generate per row.")
    steer_max_features: int = Field(8, description="Most features one steering request may steer with.")
    steer_max_strength: float = Field(200.0, description="Largest |strength| a steering feature may have.")
    steer_timeout_s: float = Field(
        60.0, description="A steering request's rows stop after generating for this many seconds (queue wait apart)."
    )
    steer_queue_size: int = Field(16, description="Steering requests that may wait; past it: 503 + Retry-After.")
    steer_queue_per_client: int = Field(
        8,
        description="Steering requests (/api/steer, /v1) of one client IP that may wait; past it: 429 + Retry-After "
        "for that client (0: no share, only the queue size). Waiting requests are served fairly across clients.",
    )
    steer_queue_wait_s: float = Field(
        30.0, description="A steering request still queued after this many seconds gets 503 + Retry-After."
    )
    steer_max_batch_rows: int = Field(32, description="Most rows (2 per request) one batched generation runs.")
    openai_max_prompt_tokens: int = Field(
        4096, description="Longest prompt of an OpenAI-compatible /v1 completion, in tokens (explainers send ~1,000)."
    )
    steer_batch_wait_ms: float = Field(
        10.0, description="A batch that is not full waits this long for more requests (0: takes what is queued)."
    )
    steer_scheduler: Literal["static", "continuous"] = Field(
        "static",
        description="static: a batch runs until its longest row ends; continuous: requests join and leave the "
        "running batch at every step (qscope.steer.continuous_worker).",
    )
    app_db_url: str = Field(
        "sqlite:///data/qscope-app.db",
        description="SQLAlchemy URL of the app database (shared steering runs, evaluation jobs and recipes).",
    )
    # explanations (`qscope explain`): the key of the explainer's endpoint (else OPENAI_API_KEY is used)
    explain_api_key: str | None = Field(None, description="API key sent to `qscope explain --endpoint` (a bearer).")
    # discover (/discover, /detectors, /footprints, `qscope discover`, `qscope footprint`): bounds and batching
    discover_max_examples: int = Field(2000, description="Most examples per set (a discovery or a footprint).")
    discover_max_tokens: int = Field(128, description="Examples longer than this many tokens are cut to it.")
    discover_max_file_bytes: int = Field(2_000_000, description="Largest example or footprint file read (bytes).")
    discover_max_file_rows: int = Field(
        100_000, ge=1, description="Most rows of an uploaded footprint file (per table); more: 422."
    )
    discover_max_body_bytes: int = Field(
        6_000_000, description="Largest request body of the discover API (files travel inside it); past it: 413."
    )
    discover_max_detect_texts: int = Field(64, description="Most texts one POST /api/detect may score.")
    discover_batch_tokens: int = Field(4096, description="Padded tokens per forward pass of a discovery.")
    discover_queue_size: int = Field(8, description="Discover and footprint jobs that may wait; past it: 503.")
    discover_queue_per_client: int = Field(
        2, description="Discover and footprint jobs of one client IP that may wait; past it: 429 (0: no share)."
    )
    # steering evaluations (/steer-eval, POST /api/steer-eval, `qscope steer-eval`): limits and batching
    steer_eval_max_prompts: int = Field(64, description="Most prompts in one evaluation's prompt set.")
    steer_eval_max_prompt_chars: int = Field(2000, description="Longest prompt of an evaluation (characters).")
    steer_eval_max_seeds: int = Field(8, description="Most sampling seeds per prompt in one evaluation.")
    steer_eval_max_strengths: int = Field(12, description="Most strengths in one evaluation's sweep.")
    steer_eval_max_random_controls: int = Field(8, description="Most random-feature control sets per evaluation.")
    steer_eval_max_rows: int = Field(
        4096, description="Most generated rows per evaluation (prompts x seeds x arm-strength points)."
    )
    steer_eval_batch_rows: int = Field(64, description="Rows of one evaluation batch (one batched generation).")
    steer_eval_max_waiting: int = Field(4, description="Evaluations that may wait for their turn; past it: 503.")
    steer_eval_waiting_per_client: int = Field(
        2, description="Evaluations of one client IP that may wait for their turn; past it: 429 (0: no share)."
    )
    # hardening of the server (app/qscope/web/security.py): sizes, per-client rates, cross-origin access
    live_wait_s: float = Field(30.0, description="An /inspect run waits this long for the model, then 503.")
    max_body_bytes: int = Field(64_000, description="Largest request body; past it: 413.")
    max_url_chars: int = Field(8_000, description="Longest path + query string; past it: 414.")
    rate_steer_per_min: float = Field(30.0, description="Steering requests per client IP per minute; 0: no limit.")
    rate_steer_burst: int = Field(6, description="Steering requests a client may make at once before the rate.")
    rate_inspect_per_min: float = Field(
        60.0, description="Model runs (/inspect, /attribute, /search with 'fires') per client IP per minute; 0: none."
    )
    rate_inspect_burst: int = Field(10, description="Model runs (as rate_inspect_per_min) a client may make at once.")
    rate_share_per_min: float = Field(10.0, description="Shares (POST /api/steer/share) per client IP per minute.")
    rate_share_burst: int = Field(5, description="Shares a client may make at once before the rate applies.")
    show_paths: bool = Field(
        False,
        description="Show the absolute paths of the model, corpus and SAE files on pages, .json twins and error "
        "bodies (a server only its operator uses); off: names relative to the store's folder.",
    )
    rate_openai_per_min: float = Field(
        600.0, description="OpenAI-compatible completions (POST /v1/*) per client IP per minute; 0: no limit."
    )
    rate_openai_burst: int = Field(64, description="/v1 completions a client may make at once (an explainer's batch).")
    cors_origins: list[str] = Field(
        [], description="Origins allowed to call the API from a browser (JSON list); empty: CORS off."
    )
    allowed_hosts: list[str] = Field(
        [],
        description="Host names the server answers besides 127.0.0.1, localhost, [::1] and Settings.host (JSON "
        "list; '*.example.org' for subdomains, '*' for any host); a request for another Host gets 400.",
    )
    rate_write_per_min: float = Field(
        20.0, description="Writes of notes and lists (create, edit, delete) per client IP per minute; 0: no limit."
    )
    rate_write_burst: int = Field(10, description="Writes of notes and lists a client may make at once.")


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
