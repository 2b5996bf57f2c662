"""NIR export of converted SNNs and the round trip through snnTorch's own importer:
every exportable method gives the suite's predictions at every t and its spike counts per
image, layer and step; the rest is refused with one line."""
import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")
pytest.importorskip("snntorch")
pytest.importorskip("nirtorch")

from annsnn import convert, models  # noqa: E402
from annsnn.neurons import IFNeuron  # noqa: E402
from interop import ExportError, check_exportable, export_snn  # noqa: E402
from interop.nir_export import read_metadata  # noqa: E402
from interop.roundtrip import import_snntorch, roundtrip, snntorch_trace  # noqa: E402

EXPORTABLE = ["maxnorm", "robustnorm", "robustnorm-all", "opi", "qcfs", "steprelu-single",
              "steprelu-cap1"]
MULTI_SPIKE = ["steprelu", "steprelu-cap2", "steprelu-cap4"]
ACT = {"maxnorm": "relu", "robustnorm": "relu", "robustnorm-all": "relu", "opi": "relu",
       "qcfs": "qcfs", "steprelu-single": "steprelu", "steprelu-cap1": "steprelu",
       "steprelu": "steprelu", "steprelu-cap2": "steprelu", "steprelu-cap4": "steprelu"}
T = 8


def _fit_thresholds(ann, x):
    """Set each QCFS/StepReLU layer's clip to its input's 99th percentile, layer by layer, so
    that every spiking layer of the untrained net fires (random weights, random images)."""
    acts = [m for m in ann.modules() if type(m).__name__ in ("QCFS", "StepReLU")]
    for a in acts:
        seen = []
        h = a.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach()))
        with torch.no_grad():
            ann(x)
        h.remove()
        top = float(torch.quantile(seen[0].flatten(), 0.99))
        with torch.no_grad():
            if hasattr(a, "lam"):
                a.lam.fill_(top)
            else:
                a.theta.fill_(top / a.L)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (96,), generator=g)
    return x, y


@pytest.fixture(scope="module")
def anns(data):
    x, _ = data
    torch.manual_seed(0)
    out = {}
    for act in ("relu", "qcfs", "steprelu"):
        spec = {"name": "steprelu", "L": 4} if act == "steprelu" else act
        ann = models.build("cnn-small", spec, 10, 1, 28, mean=[0.286], std=[0.353], width=4).eval()
        _fit_thresholds(ann, x[:32])
        out[act] = ann
    return out


def _snn(anns, data, method, **kw):
    x, y = data
    return convert(anns[ACT[method]], method, [(x[:32], y[:32])], **kw)


def _loader(data):
    x, y = data
    return [(x[32:64], y[32:64]), (x[64:], y[64:])]


def _assert_identical(r):
    assert r["images_identical_all_t"] == r["n_images"], r
    assert r["images_identical_per_t"] == [r["n_images"]] * r["T"], r
    for layer in r["layers"]:
        assert layer["cells_equal"] == layer["cells"], r
        assert layer["spikes_suite"] > 0, f"layer {layer['suite']} never fired: the check is empty"
    assert r["identical"]


@pytest.mark.parametrize("method", EXPORTABLE)
def test_roundtrip_through_snntorch_is_identical(anns, data, method, tmp_path):
    snn = _snn(anns, data, method)
    meta = {"preset": "test", "seed": 3, "method": method}
    r = roundtrip(snn, _loader(data), T, (1, 28, 28), path=tmp_path / f"{method}.nir", metadata=meta)
    _assert_identical(r)
    g = nir.read(str(tmp_path / f"{method}.nir"))
    md = read_metadata(g)
    assert (md["preset"], md["seed"], md["method"]) == ("test", 3, method)
    assert md["commit"]
    neurons = [n for n in g.nodes.values() if isinstance(n, nir.IF)]
    assert len(neurons) == 3


def test_leaky_neurons_export_as_lif_and_round_trip(anns, data):
    snn = _snn(anns, data, "maxnorm", leak=0.9)
    r = roundtrip(snn, _loader(data), T, (1, 28, 28))
    _assert_identical(r)
    from interop import to_nir
    graph = to_nir(snn, (1, 28, 28))
    lifs = [n for n in graph.nodes.values() if isinstance(n, nir.LIF)]
    assert len(lifs) == 3
    # snnTorch's convention: beta = 1 - dt/tau with r*dt/tau = 1
    from interop.nir_export import DT
    assert np.allclose(1 - DT / lifs[0].tau, 0.9) and np.allclose(lifs[0].r * DT / lifs[0].tau, 1)


def test_initial_potential_is_the_shifted_rest(anns, data):
    from interop import to_nir
    snn = _snn(anns, data, "qcfs")
    graph = to_nir(snn, (1, 28, 28))
    ifs = [n for n in graph.nodes.values() if isinstance(n, nir.IF)]
    neurons = [m for m in snn.modules() if isinstance(m, IFNeuron)]
    for node, m in zip(ifs, neurons):
        theta = float(m.theta)
        assert np.all(node.v_threshold == np.float32(0.5 * theta))
        assert np.all(node.v_reset == np.float32(-0.5 * theta))


def test_weights_carry_the_presynaptic_threshold(anns, data):
    from interop import to_nir
    snn = _snn(anns, data, "maxnorm")
    graph = to_nir(snn, (1, 28, 28))
    theta1 = float(snn[3].theta)
    w = snn[4][0].weight.detach().double() * theta1
    assert np.array_equal(graph.nodes["conv2"].weight, w.numpy().astype(np.float32))
    # the first conv sees the image: its weights are the folded ones, unscaled
    assert np.array_equal(graph.nodes["conv1"].weight, snn[1][0].weight.detach().numpy())


@pytest.mark.parametrize("method", MULTI_SPIKE)
def test_multi_spike_neurons_are_refused_with_one_line(anns, data, method):
    snn = _snn(anns, data, method)
    with pytest.raises(ExportError) as err:
        check_exportable(snn)
    msg = str(err.value)
    assert "\n" not in msg and "spikes per step" in msg and "at most one" in msg


def test_other_refusals_are_one_line(anns, data):
    cases = [(_snn(anns, data, "maxnorm", leak=0.9, leak_mode="linear"), "linear leak"),
             (_snn(anns, data, "opi", leak=0.9), "initial potential"),
             (convert(models.build("resnet20", "relu", 10, 3, 32, width=0.25).eval(), "maxnorm",
                      [(torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))]),
              "not a sequence of layers")]
    for snn, words in cases:
        with pytest.raises(ExportError) as err:
            check_exportable(snn)
        assert "\n" not in str(err.value) and words in str(err.value), str(err.value)


def test_snntorch_importer_alone_does_not_run_the_graph(anns, data):
    """What the repairs are for: snnTorch 1.0.0 imports nir.IF as Leaky(beta=0.9,
    init_hidden=False), whose (spikes, membrane) tuple reaches the next layer."""
    from interop import to_nir
    graph = to_nir(_snn(anns, data, "maxnorm"), (1, 28, 28))
    net, repairs = import_snntorch(graph, repair=False)
    assert repairs == []
    with pytest.raises(TypeError):
        snntorch_trace(net, graph, _loader(data), 2)
    _, repairs = import_snntorch(graph)
    assert any("beta=0.9" in r for r in repairs) and any("Flatten(0, -1)" in r for r in repairs)


def test_threshold_tie_needs_at_or_above():
    """A membrane that lands exactly on the threshold: the suite fires (floor(u) >= 1), a
    strict v > threshold fires a step later. The round trip reads the node's 'fires_at'."""
    fc1 = nn.Linear(1, 1)
    fc2 = nn.Linear(1, 2)
    with torch.no_grad():
        fc1.weight.fill_(0.5)
        fc1.bias.zero_()
        fc2.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        fc2.bias.copy_(torch.tensor([0.0, 0.25]))
    snn = nn.Sequential(fc1, IFNeuron(1.0), fc2).eval()
    loader = [(torch.ones(1, 1), torch.zeros(1, dtype=torch.long))]
    _assert_identical(roundtrip(snn, loader, 4, (1,)))
    strict = roundtrip(snn, loader, 4, (1,), ge=False)
    assert not strict["identical"] and strict["first_mismatch"]["t"] == 2


def test_export_cli_from_a_runner_checkpoint(anns, data, tmp_path, capsys):
    """The checkpoint as the runner writes it (Lightning: hyper_parameters + state_dict under
    'model.'); the file records preset, seed, method and commit; a refusal is one line, exit 2."""
    from interop.cli import export_main
    hp = {"arch": "cnn-small", "activation": {"name": "steprelu", "L": 4}, "num_classes": 10,
          "in_channels": 1, "image_size": 28, "mean": [0.286], "std": [0.353],
          "arch_kwargs": {"width": 4}}
    ckpt = tmp_path / "last.ckpt"
    torch.save({"hyper_parameters": hp,
                "state_dict": {f"model.{k}": v for k, v in anns["steprelu"].state_dict().items()}}, ckpt)
    out = tmp_path / "single.nir"
    args = ["--preset", "smoke", "--seed", "1", "--checkpoint", str(ckpt)]
    assert export_main(args + ["--method", "steprelu-single", "--out", str(out)]) == 0
    md = read_metadata(nir.read(str(out)))
    assert (md["preset"], md["seed"], md["method"], md["arch"]) == ("smoke", 1, "steprelu-single", "cnn-small")
    assert md["commit"] != "unknown"
    capsys.readouterr()
    assert export_main(args + ["--method", "steprelu", "--out", str(tmp_path / "x.nir")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "spikes per step" in err and not (tmp_path / "x.nir").exists()
    assert export_main(args + ["--method", "maxnorm", "--out", str(tmp_path / "y.nir")]) == 2
    assert "calibrat" in capsys.readouterr().err


def test_bench_export_finds_the_runners_checkpoint_and_logs_on_the_methods_run(anns, tmp_path, capsys,
                                                                               monkeypatch):
    """``python -m bench export``: the checkpoint where the runner leaves it
    (runs/<preset>/seed<k>/<activation>/last.ckpt), the file logged on the method's nested run
    ``<method>-leak<l>`` under the ANN's run that state.json records, one line either way."""
    import json

    from mlflow.tracking import MlflowClient

    import tracking
    from bench.__main__ import main as cli
    from bench.run.layout import checkpoint_path, seed_dir
    monkeypatch.setenv("ANNSNN_RUNS_DIR", str(tmp_path / "runs"))
    hp = {"arch": "cnn-small", "activation": {"name": "steprelu", "L": 4}, "num_classes": 10,
          "in_channels": 1, "image_size": 28, "mean": [0.286], "std": [0.353], "arch_kwargs": {"width": 4}}
    ckpt = checkpoint_path("smoke", 1, "steprelu")
    ckpt.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": hp,
                "state_dict": {f"model.{k}": v for k, v in anns["steprelu"].state_dict().items()}}, ckpt)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ["export", "--preset", "smoke", "--seed", "1", "--method", "steprelu-single", "--tracking-uri", uri]
    # no store there: written, not logged, and the store is not created
    assert cli(base + ["--out", str(tmp_path / "a.nir")]) == 0
    said = capsys.readouterr().out.strip().splitlines()
    assert said[0].startswith(f"wrote {tmp_path / 'a.nir'}: steprelu-single")
    assert said[1].startswith("not logged in MLflow: no tracking store at ") and len(said) == 2
    assert read_metadata(nir.read(str(tmp_path / "a.nir")))["checkpoint"] == str(ckpt)
    assert not (tmp_path / "mlflow.db").exists()
    # the run as the runner records it: the ANN's run in state.json, the method's run nested under it
    client = MlflowClient(tracking.tracking_uri(uri))
    exp = tracking.get_or_create_experiment(client, "smoke")
    parent = client.create_run(exp, run_name="cnn-small-steprelu-seed1").info.run_id
    other = tracking.start_child_run(client, parent, "steprelu-leak1")
    child = tracking.start_child_run(client, parent, "steprelu-single-leak1")
    (seed_dir("smoke", 1) / "state.json").write_text(json.dumps(
        {"preset": {"name": "smoke"}, "seed": 1, "groups": {"seed1/steprelu": {"run_id": parent, "records": []}}}))
    assert cli(base + ["--out", str(tmp_path / "b.nir")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"logged b.nir on MLflow run {child} (steprelu-single-leak1, artifact interop/)")
    assert [a.path for a in client.list_artifacts(child, "interop")] == ["interop/b.nir"]
    assert client.list_artifacts(other, "interop") == []
    # a method this run did not evaluate has no run: said, not logged elsewhere
    assert cli(base[:6] + ["steprelu-cap1", "--tracking-uri", uri, "--out", str(tmp_path / "c.nir")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"not logged in MLflow: no run steprelu-cap1-leak1 under the ANN's run {parent}")
    assert [a.path for a in client.list_artifacts(child, "interop")] == ["interop/b.nir"]
    # a method NIR cannot express: one line, exit 2, nothing written
    assert cli(base[:6] + ["steprelu", "--tracking-uri", uri, "--out", str(tmp_path / "d.nir")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "spikes per step" in err and not (tmp_path / "d.nir").exists()
