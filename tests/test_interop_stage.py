"""The interop stage on a tiny finished run (one epoch of four batches, cnn-small of width 4,
100 test images): every method exported and checked in snnTorch or refused in one line,
NeuroBench's figures beside the suite's, interop.json / interop.md written, the summary's
section, each method's MLflow run given the file and the metrics; and ``bench export`` /
``bench interop`` from the command line on the same run."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("nir")
pytest.importorskip("snntorch")
pytest.importorskip("neurobench")

from mlflow.tracking import MlflowClient  # noqa: E402

from bench import interop_stage, presets  # noqa: E402
from bench.__main__ import main as cli  # noqa: E402
from bench.report import interop_page, seeds, summary  # noqa: E402
from bench.run import runner  # noqa: E402
from conftest import run_if  # noqa: E402

pytestmark = run_if(fashion_mnist=True)

METHODS = ("maxnorm", "steprelu", "steprelu-single")
# the smoke preset shrunk to seconds; named smoke so that the command line finds it (the runs
# folder and the store are the test's own)
TINY = ["train.epochs=1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=1",
        "val_fraction=0.9", "test_subset=100", "val_subset=100", "calib_size=100",
        "eval_batch_size=100", "T_max=4", "summary_t=[1,2,4]", "arch_kwargs={width: 4}",
        "trainer.threads=1", "robustness.enabled=false", "deterministic=false",
        f"methods=[{', '.join(METHODS)}]"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("interop-run")
    cfg = presets.load("smoke", TINY)
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    out = tmp / "results"
    n = torch.get_num_threads()
    try:
        runner.run(cfg, tracking_uri=uri, out_dir=out, progress=False)
    finally:
        torch.set_num_threads(n)
    return cfg, uri, out


def _children(uri: str) -> dict:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    return {r.data.tags["mlflow.runName"]: r for r in client.search_runs([exp.experiment_id])
            if "mlflow.parentRunId" in r.data.tags}


def test_the_stage_on_a_tiny_run(tiny_run):
    cfg, uri, out = tiny_run
    seed = cfg["seeds"][0]
    n = torch.get_num_threads()
    try:
        data = interop_stage.run(cfg, seed, images=100, neurobench_images=100, out_dir=out, tracking_uri=uri)
    finally:
        torch.set_num_threads(n)
    assert json.loads((out / "interop.json").read_text()) == data
    assert (data["seed"], data["images"], data["neurobench_images"]) == (seed, 100, 100)
    assert data["versions"]["snntorch"] == "1.0.0" and data["commit"] and data["machine"]["cpu_model"]
    by = {m["method"]: m for m in data["methods"]}
    assert set(by) == set(METHODS)
    for name in ("maxnorm", "steprelu-single"):
        m = by[name]
        rt = m["roundtrip"]
        assert m["export"]["status"] == "verified", m["line"]
        assert m["line"].startswith("exported and verified in snnTorch 1.0.0 (12 NIR nodes): ")
        assert rt["identical_all_t"] == rt["n_images"] == 100 and rt["T"] >= 32
        assert all(v == 100 for v in rt["identical"].values())
        assert rt["spike_cells_equal"] == rt["spike_cells"] > 0
        assert (runner.seed_dir("smoke", seed) / "interop" / m["export"]["file"]).is_file()
    refused = by["steprelu"]
    assert refused["export"]["status"] == "refused" and refused["roundtrip"] is None
    assert refused["line"].startswith("not exported: ") and "spikes per step" in refused["line"]
    assert "\n" not in refused["line"]
    # the SNNs converted again are the run's: right/wrong per image as its records say
    for m in data["methods"]:
        assert m["same_as_records"] == {"images": 100, "t_max": 4, "agree": 100}, m["method"]
    # NeuroBench at t = 1, 4, 32 and at the operating point chosen on validation (records)
    records = {r["method"]: r for r in json.loads((out / "results.json").read_text())}
    from bench.costs import operating_t
    for m in data["methods"]:
        op = operating_t(records[m["method"]], 1.0)
        assert m["operating_t"] == op
        assert set(m["neurobench"]) == {str(t) for t in {1, 4, 32} | ({op} if op else set())}
        for t, nb in m["neurobench"].items():
            suite = m["suite"][t]
            if m["method"] == "steprelu":   # n > 1 spikes in a step: NeuroBench counts MACs
                assert nb["effective_acs"] == 0 and nb["effective_macs"] > suite["first_layer_macs"]
            else:   # the padded border taps: fewer analog MACs than the suite's dense count
                assert 0 < nb["effective_macs"] < suite["first_layer_macs"]
            assert nb["footprint_bytes"] > 0 and 0 <= nb["activation_sparsity"] <= 1
    assert by["steprelu"]["suite"]["4"]["sops"] > 0
    # the page, the summary's section, and what the report renders again
    run = seeds.load(out)
    assert run.interop == data
    assert (out / "interop.md").read_text() == interop_page.render(data)
    text = (out / "summary.md").read_text()
    assert text == summary.render(run.cfg, run.records, run.manifest, interop=data)
    assert "## Interoperability: NIR export, snnTorch, NeuroBench" in text
    assert summary.render(run.cfg, run.records, run.manifest) == text.replace(
        interop_page.section(data), "")
    # MLflow: the file and NeuroBench's figures on each method's nested run
    kids = _children(uri)
    client = MlflowClient(uri)
    for m in data["methods"]:
        run_ = kids[f"{m['method']}-leak1"]
        assert m["mlflow_run_id"] == run_.info.run_id
        hist = client.get_metric_history(run_.info.run_id, "neurobench/effective_macs")
        assert sorted(h.step for h in hist) == sorted(int(t) for t in m["neurobench"])
        arts = [a.path for a in client.list_artifacts(run_.info.run_id, "interop")]
        assert arts == ([f"interop/{m['method']}-leak1.nir"] if m["export"]["file"] else [])
        assert client.get_run(run_.info.run_id).data.tags["interop"] == m["line"]


def test_bench_export_and_interop_from_the_command_line(tiny_run, tmp_path, capsys):
    """maxnorm calibrates: ``bench export`` gives it the run's calibration images, so the
    file's thresholds are those the run recorded for its SNN."""
    cfg, uri, out = tiny_run
    seed = str(cfg["seeds"][0])
    base = ["export", "--preset", "smoke", "--seed", seed, "--tracking-uri", uri]
    nir_file = tmp_path / "maxnorm.nir"
    n = torch.get_num_threads()
    try:
        assert cli(base + ["--method", "maxnorm", "--out", str(nir_file)]) == 0
        said = capsys.readouterr().out.strip().splitlines()
        assert said[-1].startswith("logged maxnorm.nir on MLflow run ") and "(maxnorm-leak1, artifact interop/)" in said[-1]
        run_id = _children(uri)["maxnorm-leak1"].info.run_id
        import nir
        import numpy as np
        record = next(r for r in json.loads((out / "results.json").read_text()) if r["method"] == "maxnorm")
        ifs = [node for node in nir.read(str(nir_file)).nodes.values() if isinstance(node, nir.IF)]
        assert [float(np.unique(node.v_threshold)[0]) for node in ifs] == \
            [float(np.float32(v)) for v in record["thresholds"].values()]
        assert "interop/maxnorm.nir" in [a.path for a in MlflowClient(uri).list_artifacts(run_id, "interop")]
        # not while a run of the same seed holds its folder
        from bench.run.state import LockBusy, RunLock
        with RunLock(runner.seed_dir("smoke", int(seed)), what="a run"):
            with pytest.raises(LockBusy, match="is in use by another run"):
                interop_stage.run(cfg, int(seed), out_dir=tmp_path / "r", tracking_uri=uri)
        assert not (tmp_path / "r" / "interop.json").exists()
        # the stage through the command line: a missing seed is one line, exit 2
        assert cli(["interop", "--preset", "smoke", "--seed", "99", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no run of preset smoke, seed 99" in err
    finally:
        torch.set_num_threads(n)
