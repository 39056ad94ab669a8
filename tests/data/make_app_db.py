"""How tests/data/app-db-09f5f29.sqlite was made: the app database as qscope at commit 09f5f29 wrote it (before
migrations: every table made by SQLAlchemy's create_all, no alembic_version), filled through that version's own
HTTP API on the tiny default, a few rows of each kind. tests/integration/test_appdb_upgrade.py upgrades a copy of it.

Run it with that commit's code on the path, e.g. (at 09f5f29 the folder app/ was the package itself):

    git worktree add --detach /tmp/old 09f5f29
    ln -s /tmp/old/templates /tmp/old/app/templates; ln -s /tmp/old/static /tmp/old/app/static
    mkdir /tmp/oldpkg; ln -s /tmp/old/app /tmp/oldpkg/qscope
    PYTHONPATH=/tmp/oldpkg python tests/data/make_app_db.py /work/cache/tiny.duckdb tests/data/app-db-09f5f29.sqlite

The rows it writes are listed in tests/data/app-db-09f5f29.json (what the upgrade test looks for).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"


def _wait(client, url: str, key: str) -> dict:
    for _ in range(3000):
        job = client.get(url).json()
        if job[key] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise RuntimeError(f"{url} never finished")


def main(tiny_db: Path, out: Path) -> None:
    import torch
    from fastapi.testclient import TestClient

    from qscope.config import Settings
    from qscope.web import create_app

    torch.set_num_threads(1)
    out.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp())
    shutil.copy(tiny_db, tmp / "tiny.duckdb")
    settings = Settings(
        device="cpu",
        cache_dir=tmp / "cache",
        app_db_url=f"sqlite:///{out.resolve()}",
        rate_steer_per_min=0,
        rate_inspect_per_min=0,
        rate_share_per_min=0,
        discover_max_tokens=48,
    )
    made: dict[str, Any] = {"runs": [], "notes": [], "lists": [], "recipes": [], "discoveries": [], "detectors": []}
    with TestClient(create_app([tmp / "tiny.duckdb"], settings, warm_search=False)) as c:
        model_id = next(iter(c.app.state.catalog.models))
        for prompt, strength in (("The cat sat on the", 4.0), ("Once upon a time", -2.0)):
            spec = {
                "prompt": prompt,
                "features": [{"sae_id": SAE, "feature": 40, "mode": "add", "strength": strength}],
                "temperature": 0.8,
                "seed": 5,
                "max_new_tokens": 6,
            }
            run = c.post("/api/steer", json=spec).json()
            shared = c.post("/api/steer/share", json={"run": run["run"]}).json()
            made["runs"].append({"url": shared["url"], "prompt": prompt, "steered": run["steered"]["text"]})
        for feature, kind, text in ((5, "explanation", "fires on <b>closing</b> brackets & parens"), (7, "note", "ümlaut")):
            body = {"sae_id": SAE, "feature": feature, "kind": kind, "text": text, "author": "Ada"}
            note = c.post("/api/notes", json=body).json()
            made["notes"].append({"url": note["url"], "feature": feature, "text": text})
        for name, features in (("Brackets <i>", [7, 9]), ("Empty-ish", [11])):
            body = {
                "name": name,
                "description": f"{name} & friends",
                "features": [{"sae_id": SAE, "feature": f, "note": f"note on {f}"} for f in features],
            }
            lst = c.post("/api/lists", json=body).json()
            made["lists"].append({"url": lst["url"], "name": name, "features": features})
        eval_body = {
            "spec": {
                "features": [{"sae_id": SAE, "feature": 40, "mode": "add", "strength": 1}],
                "temperature": 0.8,
                "max_new_tokens": 4,
                "seed": 1,
            },
            "prompts": ["The cat sat on the", "Once upon a time"],
            "strengths": [0, 4],
            "seeds": 1,
            "random_controls": 1,
        }
        started = c.post("/api/steer-eval", json=eval_body).json()
        job = _wait(c, started["json_url"], "status")
        assert job["status"] == "done", job
        made["recipes"].append({"url": started["recipe_url"], "verdict": job["result"]["verdict"]["status"]})
        discovery = c.post(
            "/api/discover",
            json={"demo": "code-vs-prose", "demo_n": 30, "wait": True, "options": {"top": 6, "n_shuffles": 2}},
        ).json()
        made["discoveries"].append({"url": discovery["url"], "id": discovery["id"]})
        terms = [{"sae_id": s["sae_id"], "feature": s["feature"]} for s in discovery["ranking"]["a_side"][:2]]
        for spec in ({"kind": "rule", "combine": "any", "terms": terms}, {"kind": "logreg"}):
            det = c.post("/api/detectors", json={"discovery": discovery["id"], "spec": spec}).json()
            made["detectors"].append({"url": det["url"], "id": det["id"], "kind": det["detector"]["kind"]})
        made["model_id"] = model_id
    out.with_suffix(".json").write_text(json.dumps(made, indent=1, ensure_ascii=False) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
