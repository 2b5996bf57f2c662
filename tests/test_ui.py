"""The MLflow UI: the runs-table links ``./reproduce.sh ui`` prints (tracking.ui_links), the
routes of the installed UI they rely on, and docs/ui/make_screenshots.py end to end (a tiny
smoke run, ``mlflow ui``, headless Chromium) where Chromium and Fashion-MNIST are present."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

import tracking
from conftest import REPO, run_if
from tracking import ui_links

UI_JS = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
LINK = re.compile(r"http://127\.0\.0\.1:\d+/#/experiments/(\d+)/runs\?workflowType=machine_learning"
                  r"&viewStateShareKey=runs-by-group")


def test_the_installed_ui_has_the_route_and_parameters_the_link_uses():
    """The link is MLflow 3.17's runs route; its saved view is an experiment tag the UI reads
    by the share key. A newer MLflow that renames any of these fails here, not in a user's browser."""
    js = "".join(p.read_text(errors="replace") for p in UI_JS.glob("*.js"))
    for needed in ('"/experiments/:experimentId/runs"', '"viewStateShareKey"', '"mlflow.sharedViewState."',
                   "Invalid saved-view envelope", '"workflowType"', '"machine_learning"', '"selectedColumns"',
                   '"orderByKey"', '"attributes.start_time"'):
        assert needed in js, f"{needed} is not in MLflow {mlflow.__version__}'s UI"
    assert ui_links.VIEW_TAG.startswith("mlflow.sharedViewState.")
    # the UI's column key for a tag: tags.`<key>` (makeCanonicalSortKey)
    assert re.search(r'\((\w),(\w)\)=>\1\+"\.`"\+\2\+"`"', js), "no tags.`<key>` column keys"
    assert ui_links.RUNS_VIEW["selectedColumns"][0] == "tags.`run_group`"


def test_links_for_every_experiment_with_runs_and_the_view_on_each(tmp_path):
    uri = f"sqlite:///{tmp_path}/ui.db"
    client = MlflowClient(tracking.tracking_uri(uri))
    new = tracking.get_or_create_experiment(client, "smoke")
    view = json.loads(client.get_experiment(new).tags[ui_links.VIEW_TAG])   # the UI's saved-view envelope
    assert view["name"] == "Run groups" and isinstance(view["createdAt"], int)
    assert json.loads(view["state"]) == ui_links.RUNS_VIEW
    assert "holds no runs yet" in ui_links.describe(uri)
    old = client.create_experiment("made-before-the-view")          # no view tag
    client.create_experiment("never-run")
    for exp in (new, old):
        client.create_run(exp, tags={"run_group": "g0"})
    links = ui_links.experiment_links(uri, "http://127.0.0.1:5123")
    assert [(x["name"], x["runs"]) for x in links] == [("made-before-the-view", 1), ("smoke", 1)]
    assert links[1]["link"] == (f"http://127.0.0.1:5123/#/experiments/{new}/runs"
                                "?workflowType=machine_learning&viewStateShareKey=runs-by-group")
    view = json.loads(client.get_experiment(old).tags[ui_links.VIEW_TAG])
    assert json.loads(view["state"])["selectedColumns"] == ["tags.`run_group`", "tags.`seed`"]
    text = ui_links.describe(uri, "http://127.0.0.1:5123")
    assert "smoke" in text and links[1]["link"] in text and "never-run" not in text


def test_no_store_yet_says_which_command_creates_it(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    r = subprocess.run([sys.executable, "-m", "tracking.ui_links", "--store", f"sqlite:///{db}"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "does not exist yet" in r.stdout and "./reproduce.sh" in r.stdout
    assert "http://127.0.0.1:5000/#/experiments/<id>/runs?workflowType=machine_learning" in r.stdout
    assert not db.exists() and not db.parent.exists()      # the helper reads; it creates nothing


def distinct_colours(png: Path) -> tuple[int, float]:
    """(number of colours, share of the most common one) of an image."""
    from PIL import Image
    with Image.open(png) as im:
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 24)
    top = max(n for n, _ in colours)
    return len(colours), top / (rgb.width * rgb.height)


@run_if(fashion_mnist=True)
@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="no chromium on PATH (apt-get install chromium)")
def test_make_screenshots_draws_the_three_pages(tmp_path):
    """The script as a user runs it, into tmp_path: it fails by itself when a page lacks what
    it should show (run_group column, run names, the loaded figure) or shows a temporary path.
    About 150-170 s on two cores shared with a load of 10 (a 70 s run, 30 s of screenshots)."""
    t0 = time.time()
    r = subprocess.run([sys.executable, str(REPO / "docs" / "ui" / "make_screenshots.py"), "--out", str(tmp_path)],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    took = time.time() - t0
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert LINK.search(r.stdout), r.stdout[-2000:]
    for name in ("runs-table.png", "comparison.png", "robustness-overlay.png"):
        png = tmp_path / name
        assert png.stat().st_size > 30_000, f"{name}: {png.stat().st_size} bytes, a blank page's size"
        n, top = distinct_colours(png)
        assert n > 200 and top < 0.9, f"{name}: {n} colours, the commonest covers {top:.0%} (blank?)"
    print(f"make_screenshots.py took {took:.0f} s")
