"""`qscope serve` (the explorer over one or more feature stores, checked before it binds) and `qscope health`."""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from qscope.cli.app import cli, say
from qscope.config import get_settings


def _stores(db: list[Path]) -> list[Path]:
    """The --db arguments with each folder replaced by the .duckdb files in it."""
    paths = []
    for p in db:
        found = sorted(p.glob("*.duckdb")) if p.is_dir() else [p]
        if not found:
            say(
                f"error: no .duckdb file in {p}: harvest one into it with `qscope harvest --out {p}/NAME.duckdb`", "red"
            )
            raise typer.Exit(2)
        paths += found
    return paths


@cli.command("serve")
def serve_cmd(
    db: Annotated[
        list[Path], typer.Option("--db", help="Feature store (.duckdb) or a folder of them to serve; repeatable.")
    ],
    host: Annotated[str | None, typer.Option(help="Address to bind (default: QSCOPE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: QSCOPE_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Server processes (each opens the stores once).")] = 1,
) -> None:
    """Serve the explorer (feature dashboards, search, inspect, steering) for one or more feature stores.

    Every store, and the model and SAE files it records, is checked first: a missing or damaged one stops the
    server with one line saying which file and why. The app database is then upgraded to the newest schema
    revision (a line names it); one from a newer qscope stops the server, untouched."""
    import uvicorn

    from qscope.appdb import AppDbError
    from qscope.cli.app_db import upgrade_line
    from qscope.search.semantic import has_cached_index
    from qscope.store.preflight import PreflightError, preflight
    from qscope.store.queries import StoreError

    settings = get_settings()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    db = _stores(db)
    try:
        for warning in preflight(db):
            say(f"warning: {warning}", "yellow")
    except PreflightError as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    try:  # before any worker starts: the schema is brought to the newest revision once, here
        say(upgrade_line(settings.app_db.url))
    except AppDbError as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    for path in db:
        if not has_cached_index(path, settings.paths.cache_dir):
            say(
                f"search: {path.name} has no semantic index yet (harvested without one): text search answers at once, "
                "the semantic index is being built in the background"
            )
    host, port = host or settings.server.host, port or settings.server.port
    # the Host check answers the bound address by name too; worker processes read it from the environment
    settings = settings.model_copy(update={"server": settings.server.model_copy(update={"host": host})})
    os.environ["QSCOPE_HOST"] = host
    if host in ("0.0.0.0", "::") and not settings.server.allowed_hosts:
        say(
            f"hosts: bound to {host}, but only 127.0.0.1, localhost and [::1] are answered (others get 400); name "
            """the server's public names with QSCOPE_ALLOWED_HOSTS='["qscope.example.org"]' (or '["*"]' for any)""",
            "yellow",
        )
    run = partial(uvicorn.run, host=host, port=port, log_level="warning", server_header=False)
    if workers > 1:
        # each worker process builds its own app from these paths (uvicorn needs an import string)
        os.environ["QSCOPE_SERVE_DBS"] = json.dumps([str(p.resolve()) for p in db])
        run("qscope.web:app_from_env", factory=True, workers=workers)
        return
    from qscope.web import create_app

    url = f"http://{host}:{port}/"
    first = (
        f'open {url} and try first what its "Start here" list links: a search, a feature page, /steer, why this token?'
    )

    def ready(line: str) -> None:  # search ready: the last line a start prints, so the next step is said again
        say(line)
        say(first)

    try:
        app = create_app(db, settings, say=ready)
    except StoreError as err:
        say(f"error: {err}", "red")
        raise typer.Exit(2) from err
    say(f"serving {len(db)} store(s) on {url} (search gets ready in the background: a line says when)")
    say(first)
    run(app)


@cli.command("health")
def health_cmd(
    url: Annotated[str | None, typer.Option(help="URL to ask (default: /-/health on QSCOPE_PORT here).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 5.0,
) -> None:
    """Exit 0 when the server answers its health URL with 200, else 1 (for container healthchecks)."""
    import urllib.request

    url = url or f"http://127.0.0.1:{get_settings().server.port}/-/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            ok = r.status == 200
    except OSError as err:
        say(f"unhealthy: {url}: {err}", "red")
        raise typer.Exit(1) from err
    if not ok:
        raise typer.Exit(1)
