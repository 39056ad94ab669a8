"""Dockerfile and docker-compose.yml, checked without a Docker engine: both files parse; every command they run
is a real `qscope` subcommand whose options parse (click's own parser); every volume they mount is a folder the
app reads or writes (through Settings or HF_HOME), and every path the app is pointed at lies on a volume; the
services, profiles, GPU reservations and healthchecks are the ones the README describes."""

import json
import re
import shlex
from pathlib import PurePosixPath

import pytest
import typer

from qscope.cli import cli
from qscope.config import env_names
from tests.helpers import ROOT

yaml = pytest.importorskip("yaml", reason="needs PyYAML (pip install -e .[dev])")

OTHER_ENV = {
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "PYTHONUNBUFFERED",
    "TOKENIZERS_PARALLELISM",
    "DEBIAN_FRONTEND",
    "PATH",
    "TORCH_INDEX",
}
APP_PATH_VARS = ("QSCOPE_DATA_DIR", "QSCOPE_DEMO_DIR", "QSCOPE_CACHE_DIR", "HF_HOME")


class ComposeLoader(yaml.SafeLoader):
    """YAML with compose's merge tags (!reset, !override) kept as {tag: value}."""


def _tagged(loader: ComposeLoader, node: yaml.Node) -> dict:
    if isinstance(node, yaml.MappingNode):
        return {node.tag: loader.construct_mapping(node, deep=True)}
    if isinstance(node, yaml.SequenceNode):
        return {node.tag: loader.construct_sequence(node, deep=True)}
    return {node.tag: loader.construct_scalar(node)}


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, _tagged)


def interpolate(value):
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with no environment: the default, else 'x'."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::?([-?])([^}]*))?\}", lambda m: m.group(3) if m.group(2) == "-" else "x", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def load_compose(name: str) -> dict:
    return interpolate(yaml.load((ROOT / name).read_text(), Loader=ComposeLoader))


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose("docker-compose.yml")


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def check_qscope_command(argv: list[str]) -> str:
    """Parse argv as the real CLI would (unknown subcommands or options raise); the subcommand's name."""
    assert argv[0] == "qscope", argv
    group = typer.main.get_command(cli)
    assert argv[1] in group.commands, f"{argv[1]} is not a qscope subcommand ({sorted(group.commands)})"
    group.commands[argv[1]].make_context(argv[1], list(argv[2:]))
    return argv[1]


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(e.split("=", 1) for e in env) if isinstance(env, list) else {k: str(v) for k, v in env.items()}


def test_compose_services_profiles_gpu_and_healthchecks(compose):
    services = compose["services"]
    assert set(services) == {"web", "harvest", "db"}
    assert services["harvest"]["profiles"] == ["harvest"] and "profiles" not in services["web"]
    for name in ("web", "harvest"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
    for name in ("web", "db"):
        assert services[name]["healthcheck"]["test"], name
    assert services["web"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["db"]["image"].startswith("postgres:")


def test_compose_runs_only_real_qscope_commands(compose):
    services = compose["services"]
    assert check_qscope_command(services["web"]["command"]) == "demo"
    assert check_qscope_command(services["harvest"]["command"]) == "harvest"
    test = services["web"]["healthcheck"]["test"]
    assert test[0] == "CMD" and check_qscope_command(test[1:]) == "health"
    from qscope.web.routes.health import router

    url = test[test.index("--url") + 1]
    assert url.endswith(router.routes[0].path)  # the healthcheck asks a route that exists
    port = services["web"]["command"][services["web"]["command"].index("--port") + 1]
    assert f":{port}/" in url and services["web"]["ports"][0].endswith(f":{port}")


def test_compose_mounts_only_what_the_app_uses(compose):
    fields = set(env_names())
    for name in ("web", "harvest"):
        service, env = compose["services"][name], env_of(compose["services"][name])
        assert all(k in fields or k in OTHER_ENV for k in env), (name, env)  # no misspelt setting
        mounts = [PurePosixPath(v.split(":")[1]) for v in service["volumes"]]
        app_paths = [PurePosixPath(env[k]) for k in APP_PATH_VARS]
        app_paths += [PurePosixPath(a) for a in service["command"] if a.startswith("/")]
        for mount in mounts:  # every volume holds something the app reads or writes
            assert any(p == mount or mount in p.parents for p in app_paths), (name, mount)
        for path in app_paths:  # nothing the app writes falls outside a volume (it would vanish with the container)
            assert any(path == m or m in path.parents for m in mounts), (name, path)
        named = {v.split(":")[0] for v in service["volumes"]}
        assert named <= set(compose["volumes"]), named
    assert compose["services"]["db"]["volumes"] == ["pgdata:/var/lib/postgresql/data"]  # Postgres's PGDATA


def test_compose_keeps_secrets_out_and_the_app_db_on_postgres(compose):
    raw = (ROOT / "docker-compose.yml").read_text()
    assert re.search(r"POSTGRES_PASSWORD: \$\{QSCOPE_DB_PASSWORD:\?", raw)  # from .env, never a literal
    url = env_of(compose["services"]["web"])["QSCOPE_APP_DB_URL"]
    assert url.startswith("postgresql+psycopg://qscope:") and url.endswith("@db:5432/qscope")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'postgres = \["psycopg\[binary\]', pyproject)


def test_cpu_override_drops_the_gpu():
    cpu = load_compose("docker-compose.cpu.yml")
    for name in ("web", "harvest"):
        service = cpu["services"][name]
        assert service["build"]["args"]["VARIANT"] == "cpu" and service["deploy"] == {"!reset": {}}
        assert service["environment"]["QSCOPE_DEVICE"] == "cpu"


def test_dockerfile_variants_commands_and_paths():
    steps = dockerfile()
    froms = [args for op, args in steps if op == "FROM"]
    assert {"base-cuda", "base-cpu"} <= {f.split(" AS ")[-1] for f in froms} and froms[-1] == "base-${VARIANT}"
    assert froms[0].startswith("nvidia/cuda:")
    cmd = json.loads(next(args for op, args in steps if op == "CMD"))
    assert check_qscope_command(cmd) == "demo"
    for op, args in steps:  # `qscope ...` inside RUN lines, up to the end of that shell command
        for found in re.findall(r"qscope ([a-z-]+[^;&|]*)", args if op == "RUN" else ""):
            check_qscope_command(["qscope", *shlex.split(found)])
    fields = set(env_names())
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args for op, args in steps if op == "ENV")))
    assert all(k in fields or k in OTHER_ENV for k in env), env
    volumes = [PurePosixPath(v) for v in json.loads(next(args for op, args in steps if op == "VOLUME"))]
    for key in APP_PATH_VARS:
        assert any(m in PurePosixPath(env[key]).parents or m == PurePosixPath(env[key]) for m in volumes), key
    assert env["QSCOPE_APP_DB_URL"].startswith("sqlite:////data/")  # the SQLite app database on the volume


def test_dockerfile_copies_what_the_server_reads():
    steps = dockerfile()
    copied = {src for op, args in steps if op == "COPY" for src in args.split()[:-1]}
    assert {"app", "templates", "static", "pyproject.toml"} <= copied
    assert all((ROOT / c).exists() for c in copied)
    installs = [args for op, args in steps if op == "RUN" and "pip install" in args and "[postgres]" in args]
    assert installs and " -e " not in installs[0]  # an ordinary install: templates and static ship in the wheel
    apt = " ".join(args for op, args in steps if op == "RUN" and "apt-get install" in args)
    for package in ("python3-doc", "fortunes", "jargon-text"):  # the demo corpora (qscope/demo/corpus)
        assert package in apt, package
    assert any(op == "USER" and args != "root" for op, args in steps)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".env", ".git"} <= set(ignored)  # no environment, data or secret in the build context
    assert not any(c == i or c.startswith(i + "/") for c in copied for i in ignored)
