"""`qscope fix` without a server, on the tiny default: the ranking on stdout (JSON line last), the whole result
written with --out, the discovery, recipe and fix saved with --save, and bad input as one line with exit 2."""

import pytest

from qscope.discover.store import DiscoverStore
from qscope.fix.ranking import is_intervention
from qscope.fix.result import FixResult
from qscope.steer.evaluate.recipes import RecipeStore
from tests.helpers.cli import last_json, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = ["--per-sae", "1", "--max-prompts", "3", "--seeds", "1", "--random-controls", "1", "--max-new-tokens", "6"]


def test_fix_demo_ranks_saves_and_writes(tiny_db, tmp_path, app_db):
    out = tmp_path / "fix.json"
    args = ["fix", "--db", str(tiny_db), "--demo", "code-vs-prose", "--demo-n", "12", *SMALL]
    result, text = run(*args, "--strengths", "0,2", "--save", "--out", str(out))
    assert result.exit_code == 0, text
    summary = last_json(text)
    assert sorted(summary["ranked"]) == ["candidate-1", "diffmean", "intervention"]
    saved = FixResult.model_validate_json(out.read_text())
    assert saved.id == summary["fix"] and summary["fix_url"] == f"/fix/{saved.id}"
    store = DiscoverStore(app_db)
    assert FixResult.model_validate_json(store.get("fix", saved.id) or "").interventions == saved.interventions
    assert store.get("discovery", saved.discovery) is not None
    store.close()
    recipes = RecipeStore(app_db)
    assert [(r.id, r.title.split(" + ")[1]) for r in recipes.recipes()] == [(saved.recipe, "1 candidate · 3 prompts")]
    recipe = recipes.recipe(saved.recipe)
    assert recipe is not None and recipe.comparison is not None
    assert [x.arm for x in saved.interventions] == [b.arm for b in recipe.comparison.arms if is_intervention(b.arm)]
    assert "arms compared:" in text and "seconds:" in text


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--goal", "sideways"], "goal"),
        (["--strengths", "0,x"], "--strengths"),
        (["--per-sae", "9"], "per_sae"),
        (["--strengths", "0,0"], "non-zero"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_db, app_db, extra, says):
    result, text = run("fix", "--db", str(tiny_db), "--demo", "code-vs-prose", "--demo-n", "12", *SMALL, *extra)
    assert result.exit_code == 2, text
    assert says in text and "Traceback" not in text
