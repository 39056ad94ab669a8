"""Every `qscope ...` command in docs/explain.md runs as written after `make demo` (issue 29, item 5): each is
parsed by the real command line (options and their values checked, nothing run), and the store, model id, SAE ids
and model folder it names are the ones `qscope demo` makes (qscope.cli.demo: data/demo.duckdb, mini-Qwen, the full
spec's SAEs, data/demo/model). Also: the advice of the errors a wrong name gets."""

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from qscope.cli import cli
from qscope.cli.app import DEMO_MODEL_ID
from qscope.config import Settings
from qscope.demo.spec import FULL
from qscope.explain.client import ExplainerError, OpenAIChat
from qscope.harvest.ids import model_id_for
from tests.helpers import ROOT

DOCS = ROOT / "docs"
PAGES = ["explain.md"]


def commands(page: str) -> list[str]:
    """The `qscope` lines of a page's fenced bash blocks, continuation lines joined, comments and `&` dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", (DOCS / page).read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip().rstrip("&").strip()
            if line.startswith("qscope "):
                out.append(line)
    return out


def demo_names(settings: Settings) -> dict[str, object]:
    """What `make demo` (`qscope demo`) makes, as cli/demo.py names it."""
    demo = settings.paths.demo_dir
    return {
        "db": str(settings.paths.data_dir / f"{model_id_for(str(demo / 'model'))}.duckdb"),
        "model": DEMO_MODEL_ID,
        "saes": {f"{FULL.sae_release}__layer{n}" for n in FULL.sae_layers},
        "hf": str(demo / "model"),
    }


def parse(line: str) -> tuple[str, dict]:
    """The subcommand and its parsed options, by the real command line; a usage error when it does not parse."""
    group = typer.main.get_command(cli)  # typer's own click: its Group is not click.Group
    name, *args = shlex.split(line)[1:]
    command = group.commands.get(name)  # type: ignore[attr-defined]
    assert command is not None, f"no command {name!r}: {line}"
    with command.make_context(name, args) as ctx:
        return name, dict(ctx.params)


@pytest.mark.parametrize("page", PAGES)
def test_every_command_in_the_docs_runs_after_make_demo(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the docs' relative paths, as from the repository root
    settings = Settings()
    (settings.paths.demo_dir / "model").mkdir(parents=True)  # as build-demo leaves it: the store is named by its folder
    names = demo_names(settings)
    found = commands(page)
    assert len(found) >= 3, found
    for line in found:
        name, params = parse(line)
        if "db" in params:
            got = params["db"] if isinstance(params["db"], Path) else params["db"][0]
            assert str(got) == names["db"], line
        if params.get("explainer_model") is not None:
            assert params["explainer_model"] == names["model"], line
        for sae in params.get("sae") or []:
            assert sae in names["saes"], line
        if params.get("hf") is not None:
            assert params["hf"] == names["hf"], line
        if params.get("endpoint") is not None:
            assert params["endpoint"] == "http://127.0.0.1:8000/v1", line  # where make demo serves


def test_a_misspelt_store_names_the_stores_beside_it(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "demo.duckdb").write_bytes(b"")  # a name is all the message reads
    result = CliRunner().invoke(
        cli, ["explain", "--db", str(tmp_path / "data" / "mini-qwen.duckdb"), "--hf", "x", "--no-score"]
    )
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "demo.duckdb" in text and "qscope harvest" not in text


def test_a_wrong_model_id_says_so_not_that_the_endpoint_is_wrong(tiny_db, tmp_path_factory):
    from tests.helpers.server import serving

    with serving(tiny_db, tmp_path_factory, OMP_NUM_THREADS="1") as base:
        chat = OpenAIChat(base + "/v1", "mini-qwen", retries=0)
        with pytest.raises(ExplainerError) as err:
            chat.chat([{"role": "user", "content": "hi"}], max_tokens=2)
    message = str(err.value)
    assert "--explainer-model 'mini-qwen' is not served there" in message and "/v1/models" in message
    from qscope.store.queries import Store

    served = Store(tiny_db).model_ids[0]  # the demo folder's name: a session's own build or a given one
    assert "ending in /v1" not in message and served in message  # the server's message lists what it serves
