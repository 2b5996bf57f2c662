"""Presets: what a typo, a missing key or a --set override does, checked without training."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from annsnn.activations import ACTIVATIONS
from bench import presets
from bench.__main__ import main as cli

REPO = Path(__file__).resolve().parents[1]


def error(*sets, preset="smoke") -> str:
    with pytest.raises(presets.PresetError) as info:
        presets.load(preset, list(sets))
    msg = str(info.value)
    assert "\n" not in msg, f"a preset error is one line, got:\n{msg}"
    return msg


def listed(msg: str) -> list[str]:
    """The comma-separated list after the last ': ' of an error message."""
    return msg.rsplit(": ", 1)[1].split(", ")


def write_preset(tmp_path, **keys) -> str:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(keys))
    return str(path)


# ----------------------------------------------------------------------------- unknown names

def test_unknown_names_are_rejected_with_the_valid_ones():
    assert "steprelu" in listed(error("methods=[stepReLU]"))
    assert "fashion-mnist" in listed(error("dataset=fmnist"))
    assert "resnet20" in listed(error("arch=resnet50"))
    with pytest.raises(presets.PresetError, match="available: .*smoke"):
        presets.load("no-such-preset")


@pytest.mark.parametrize("key, reported, level", [
    ("trian.epochs", "trian", ""), ("train.epoch", "train.epoch", "train"),
    ("trainer.device", "trainer.device", "trainer"),
    ("robustness.leak_modez", "robustness.leak_modez", "robustness"),
    ("activations.step_relu.theta", "activations.step_relu", "activations"),
    ("robustnorm_percentile", "robustnorm_percentile", ""),  # gone: the percentile is robustnorm's own
])
def test_unknown_key_at_any_depth_names_the_valid_keys_of_its_level(key, reported, level):
    msg = error(f"{key}=1")
    node = presets.defaults()
    for part in filter(None, level.split(".")):
        node = node[part]
    assert f"unknown preset key '{reported}'" in msg
    assert sorted(listed(msg)) == sorted(node.keys()) and len(listed(msg)) >= 2


def test_unknown_key_inside_a_preset_file_is_rejected(tmp_path):
    path = write_preset(tmp_path, methods=["steprelu"], train={"epochs": 1, "lr_max": 0.1})
    msg = error(preset=path)
    assert "'train.lr_max'" in msg and "p.yaml" in msg and "epochs" in listed(msg)


@pytest.mark.parametrize("where", ["set", "file"])
def test_activation_knob_typo_lists_the_constructor_parameters(tmp_path, where):
    if where == "set":
        msg = error("activations.steprelu.thetaa=0.1")
    else:
        msg = error(preset=write_preset(tmp_path, methods=["steprelu"],
                                        activations={"steprelu": {"thetaa": 0.1}}))
    assert "'activations.steprelu.thetaa'" in msg and "StepReLU" in msg
    want = [p for p in inspect.signature(ACTIVATIONS["steprelu"]).parameters]
    assert listed(msg) == want and "theta" in want and "L" in want


def test_activation_knobs_that_exist_are_accepted():
    cfg = presets.load("smoke", ["activations.steprelu.theta=0.1", "activations.qcfs.init_lam=8.0"])
    assert cfg["activations"]["steprelu"] == {"theta": 0.1, "L": 20, "phi": 0.0, "clip": True, "learn_theta": False}
    assert cfg["activations"]["qcfs"] == {"L": 8, "init_lam": 8.0}


def test_arch_kwargs_are_free_form_but_must_fit_the_model():
    assert presets.load("smoke", ["arch_kwargs={width: 8}"])["arch_kwargs"] == {"width": 8}
    assert presets.load("smoke", ["arch_kwargs.width=4"])["arch_kwargs"] == {"width": 4}
    msg = error("arch_kwargs.widht=8")
    assert "widht" in msg and "cnn-small" in msg


def test_bad_values_are_one_line_errors():
    assert "T_max" in error("T_max=abc")
    assert "T_max" in error("T_max=0")
    assert "train.epochs" in error("train.epochs=1.5")
    assert "key=value" in error("train.epochs")
    assert "leak" in error("leaks=[1.2]")


# ----------------------------------------------------------------------------- methods

def test_a_preset_without_methods_is_an_error(tmp_path):
    msg = error(preset=write_preset(tmp_path, dataset="mnist"))
    assert "no methods" in msg and "steprelu" in listed(msg)
    assert "no methods" in error("methods=[]")


def test_every_shipped_preset_lists_its_methods_and_loads():
    names = presets.available()
    assert {"smoke", "cpu-cifar10"} <= set(names)
    for name in names:
        raw = yaml.safe_load((presets.PRESET_DIR / f"{name}.yaml").read_text())
        assert raw.get("methods"), f"{name}.yaml does not list its methods"
        cfg = presets.load(name)
        assert cfg["methods"] == raw["methods"] and cfg["T_max"] >= 1 and cfg["name"] == name


@pytest.mark.parametrize("name", ["smoke", "cpu-cifar10", "paper-cifar10-vgg16", "paper-cifar10-resnet20",
                                  "paper-cifar100-vgg16", "paper-imagenet-resnet34"])
def test_reference_presets_run_opi_and_both_robustnorm_conventions(name):
    methods = presets.load(name)["methods"]
    assert methods.index("robustnorm-all") == methods.index("robustnorm") + 1
    assert methods.index("opi") == methods.index("robustnorm-all") + 1


def test_activation_groups_follow_the_recipes():
    cfg = presets.load("smoke", ["methods=[steprelu-single, maxnorm, qcfs, opi, steprelu]"])
    assert presets.activation_groups(cfg) == {"steprelu": ["steprelu-single", "steprelu"],
                                              "relu": ["maxnorm", "opi"], "qcfs": ["qcfs"]}


# ----------------------------------------------------------------------------- --set syntax and result

def test_set_syntax_and_plain_result():
    cfg = presets.load("smoke", ["train.epochs=5", "methods=[steprelu,qcfs]", "test_subset=null",
                                 "T_max=4", "summary_t=[1, 2, 4]", "trainer.devices=auto"])
    assert cfg["train"]["epochs"] == 5 and cfg["methods"] == ["steprelu", "qcfs"]
    assert cfg["test_subset"] is None and cfg["summary_t"] == [1, 2, 4] and cfg["trainer"]["devices"] == "auto"
    # the default summary_t is cut to T_max; one asked for beyond T_max is an error, not a silent cut
    assert presets.load("smoke", ["T_max=4"])["summary_t"] == [1, 2, 4]
    with pytest.raises(presets.PresetError, match="beyond T_max = 4"):
        presets.load("smoke", ["T_max=4", "summary_t=[1, 2, 4, 8]"])

    def plain(v):
        if isinstance(v, dict):
            return type(v) is dict and all(plain(x) for x in v.values())
        if isinstance(v, list):
            return type(v) is list and all(plain(x) for x in v)
        return v is None or type(v) in (str, int, float, bool)
    assert plain(cfg)


def test_values_keep_the_type_the_preset_wrote():
    """The manifest records the preset as run: an 8 stays 8, a 0.0 stays 0.0."""
    cfg = presets.load("smoke")
    raw = yaml.safe_load((presets.PRESET_DIR / "smoke.yaml").read_text())
    assert type(cfg["budget_minutes"]) is type(raw["budget_minutes"])
    assert cfg["budget_minutes"] == raw["budget_minutes"]
    assert type(cfg["train"]["lr"]) is float and type(cfg["T_max"]) is int


# ----------------------------------------------------------------------------- the CLI

@pytest.mark.parametrize("args, words", [
    (["--set", "bogus=1"], "unknown preset key 'bogus'"),
    (["--set", "methods=[nope]"], "unknown method 'nope'"),
    (["--set", "dataset=nope"], "unknown dataset 'nope'"),
    (["--set", "arch=nope"], "unknown architecture 'nope'"),
    (["--set", "activations.steprelu.thetaa=0.1"], "activations.steprelu.thetaa"),
])
def test_cli_bad_preset_exits_2_with_one_line(capsys, monkeypatch, args, words):
    from bench.run import runner

    def must_not_run(*a, **k):
        raise AssertionError("the CLI started a run with a preset it should have rejected")
    monkeypatch.setattr(runner, "run", must_not_run)
    assert cli(["run", "--preset", "smoke", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and err.startswith("error: ")


def test_cli_unknown_preset_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--preset", "no-such"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "available: " in proc.stderr and "Traceback" not in proc.stderr


def test_cli_list_shows_every_preset(capsys):
    assert cli(["list"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == presets.available()
    assert re.search(r"^smoke\s+fashion-mnist\s+cnn-small", out, re.M)


# ----------------------------------------------------------------------------- --set keeps the preset's types

def test_a_nested_override_changes_one_key_and_keeps_its_siblings(tmp_path, monkeypatch):
    cfg = presets.load("smoke", ["activations.steprelu.theta=0.1"])
    assert cfg["activations"]["steprelu"] == {**presets.ACTIVATION_DEFAULTS["steprelu"], "theta": 0.1}
    path = write_preset(tmp_path, methods=["steprelu"], activations={"steprelu": {"L": 7, "phi": 0.5}})
    assert presets.load(path, ["activations.steprelu.theta=0.2"])["activations"]["steprelu"] == \
        {**presets.ACTIVATION_DEFAULTS["steprelu"], "theta": 0.2, "L": 7, "phi": 0.5}
    # arch_kwargs: free-form, so the merge alone decides whether `cfg` survives a `width`
    monkeypatch.setattr(presets, "_check_arch_kwargs", lambda cfg: None)
    got = presets.load("cpu-cifar10", ["arch_kwargs.width=8"])["arch_kwargs"]
    assert got == {"cfg": presets.load("cpu-cifar10")["arch_kwargs"]["cfg"], "width": 8}


@pytest.mark.parametrize("assignment, key, want", [
    ("leaks=0.9", "leaks", [0.9]), ("seeds=1", "seeds", [1]), ("methods=steprelu", "methods", ["steprelu"]),
    ("summary_t=4", "summary_t", [4]), ("seeds=[1, 2]", "seeds", [1, 2]),
])
def test_a_scalar_where_a_list_belongs_is_wrapped(assignment, key, want):
    assert presets.load("smoke", [assignment])[key] == want


def test_a_scalar_in_a_preset_file_is_wrapped_too(tmp_path):
    cfg = presets.load(write_preset(tmp_path, methods="qcfs", seeds=3))
    assert cfg["methods"] == ["qcfs"] and cfg["seeds"] == [3]


@pytest.mark.parametrize("assignment, words", [
    ("leaks=[]", "'leaks' needs at least one item"), ("seeds=[]", "'seeds' needs at least one item"),
    ("methods=[]", "no methods"), ("summary_t=[]", "'summary_t' needs at least one item"),
    ("summary_t=[64]", "summary_t [64] asks for t = 64 beyond T_max = 32"),
    ("seeds=[0, 0]", "'seeds' lists 0 more than once"),
    ("methods=[qcfs, steprelu, qcfs]", "'methods' lists qcfs more than once"),
    ("seeds=-1", "seeds must lie in [0, 4294967295]"),
    ("leaks=yes", "leaks[0]"),           # YAML's yes is a boolean: wrapped, then rejected as no float
    ("seeds=[1.5]", "seeds[0]"),
])
def test_empty_repeated_or_mistyped_lists_are_one_line_errors(assignment, words):
    assert words in error(assignment)


@pytest.mark.parametrize("assignment", ["T_max=true", "train.epochs=true", "batch_size=false", "seeds=[true]",
                                        "train.warmup_epochs=true", "budget_minutes=true", "test_subset=true",
                                        "activations.steprelu.L=true", "activations.qcfs.init_lam=true"])
def test_a_boolean_for_a_number_is_rejected(assignment):
    assert assignment.split("=")[0].split(".")[-1] in error(assignment)


def test_activation_knobs_keep_their_kind():
    assert "is not a boolean" in error("activations.steprelu.clip=1")
    assert "is not a number" in error("activations.steprelu.theta=abc")
    assert presets.load("smoke", ["activations.qcfs.init_lam=4"])["activations"]["qcfs"]["init_lam"] == 4
