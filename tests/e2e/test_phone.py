"""Every page at 1280 px and at 390 px (a phone), in Debian's Chromium, on `qscope serve` of the tiny default:
the fixed pages and the ones a job makes (a steering evaluation and its recipe, a discovery, a detector, a
footprint comparison, a fix, a note and a list). No page is wider than the window: a wide table scrolls inside its own
box, never the page. Screenshots go to tests/artifacts/phone_*.png."""

import json
import time
import urllib.request

import pytest

from tests.helpers.browser import ARTIFACTS, chromium
from tests.helpers.server import serving

pytestmark = pytest.mark.slow
WIDTHS = (1280, 390)
SAE = "SAE-Res-mini-qwen-W512-L0_16__layer1"
MEASURE = """() => {
  const clipped = e => { for (let a = e.parentElement; a; a = a.parentElement)
    if (a !== document.body && a !== document.documentElement && getComputedStyle(a).overflowX !== 'visible')
      return true;
    return false; };
  return {
    width: window.innerWidth,
    scroll: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    wide: [...document.querySelectorAll('body *')]
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !clipped(e))
      .slice(0, 3).map(e => e.tagName + '.' + e.className),
  };
}"""


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def _get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=60) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tiny_db, tmp_path_factory):
    app_db = f"sqlite:///{tmp_path_factory.mktemp('appdb') / 'app.db'}"
    with serving(tiny_db, tmp_path_factory, QSCOPE_APP_DB_URL=app_db) as base:
        yield base


def _made_by_jobs(base: str) -> list[str]:
    """Run one of each job on the server (small ones) and return the pages they made."""
    spec = {"features": [{"sae_id": SAE, "feature": 40}], "max_new_tokens": 8, "temperature": 0}
    prompts = ["The cat sat on the", "Once upon a time", "The weather today is", "In the morning we"]
    started = _post(base, "/api/steer-eval", {"spec": spec, "prompts": prompts, "strengths": [0, 4], "seeds": 1})
    for _ in range(3000):
        job = _get(base, started["json_url"])
        if job["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.2)
    assert job["status"] == "done", job
    discovery = _post(base, "/api/discover", {"demo": "code-vs-prose", "demo_n": 24, "wait": True})
    detector = _post(base, "/api/detectors", {"discovery": discovery["id"], "spec": {"kind": "logreg"}})
    footprint = _post(base, "/api/footprints", {"demo": "code-vs-prose", "demo_n": 24, "wait": True})
    small = {"per_sae": 1, "max_prompts": 2, "seeds": 1, "random_controls": 1, "max_new_tokens": 4, "strengths": [0, 2]}
    fixed = _post(base, "/api/fix", {"demo": "code-vs-prose", "demo_n": 12, "fix": small, "wait": True})
    note = _post(base, "/api/notes", {"sae_id": SAE, "feature": 40, "text": "a note " * 40})
    user_list = _post(base, "/api/lists", {"name": "a list", "features": [{"sae_id": SAE, "feature": 40}]})
    return [
        started["url"],
        started["recipe_url"],
        discovery["url"],
        detector["url"],
        footprint["url"],
        fixed["url"],
        note["url"],
        user_list["url"],
    ]


def _pages(base: str) -> list[str]:
    model = _get(base, "/.json")["models"][0]
    model_id = model["model_id"]
    return [
        "/",
        f"/{model_id}/{SAE}",
        f"/{model_id}/{SAE}/40",
        "/search?q=the",
        "/inspect?text=def+add(x,+y):+return+x",
        "/attribute?pos=4&text=The+cat+sat+on+the+mat",
        "/steer",
        "/steer-eval",
        f"/steer-eval?sae_id={SAE}&feature=40",
        "/recipes",
        "/discover",
        "/fix",
        "/detectors",
        "/footprints",
        "/lists",
        "/-/docs",
        *_made_by_jobs(base),
    ]


def test_every_page_and_every_page_a_job_makes_fits_the_window(server, tmp_path):
    paths = _pages(server)
    problems = []
    with chromium() as browser:
        for width in WIDTHS:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.set_default_timeout(120_000)
            for i, path in enumerate(paths):
                page.goto(server + path)
                page.wait_for_timeout(300)  # what scripts add on load (plots, rows)
                got = page.evaluate(MEASURE)
                if got["scroll"] > got["width"]:
                    problems.append(f"{width}px {path}: {got['scroll']} px wide {got['wide']}")
                page.screenshot(path=str(ARTIFACTS / f"phone_{width}_{i:02d}.png"), full_page=True)
            page.close()
    assert problems == [], "\n".join(problems)
    assert len(paths) == 24
