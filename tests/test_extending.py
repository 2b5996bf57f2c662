"""docs/extending.md stays true: each of its four worked examples is executed here.

- A new method: the recipe module it shows is the one in the package, character for
  character, its registration line is in annsnn/recipes/__init__.py, and its usage example
  runs and gives per-channel thresholds equal to the channel maxima (checked here
  independently of the example's own asserts).
- A new dataset, a new architecture, a new attack: the lines the page says to add to a
  package file are added to a copy of that file's source (at the place the page names),
  the copy is run as a module, its new entries are put in place with monkeypatch, and the
  page's example runs against them: KMNIST found and loaded from fake IDX files, LeNet-5
  converted exactly at t = 1, the basic iterative method used as the robustness stage uses
  an attack.

Code blocks run with their doc line numbers, so a traceback points into the page.
"""
from __future__ import annotations

import re
import shlex
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import annsnn
from annsnn.recipes import RECIPES

import fakedata
from conftest import REPO

DOC = REPO / "docs" / "extending.md"
FENCE = re.compile(r"^( *)```(\w+)\n(.*?)^\1```[ \t]*$", flags=re.S | re.M)


@dataclass
class Block:
    lang: str
    code: str     # dedented as a file would hold it
    line: int     # 0-based line of the page where the code starts


def blocks(title: str, lang: str = "python") -> list[Block]:
    """The ``lang`` code blocks of the section ``## title`` (up to the next ``## ``)."""
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    end = len(text) if end < 0 else end
    out = []
    for m in FENCE.finditer(text, start, end):
        if m.group(2) != lang:
            continue
        indent = len(m.group(1))
        code = "".join(line[indent:] for line in m.group(3).splitlines(keepends=True))
        out.append(Block(lang, code, text[: m.start(3)].count("\n")))
    return out


def run_block(block: Block, scope: dict) -> dict:
    exec(compile("\n" * block.line + block.code, str(DOC), "exec"), scope)
    return scope


def patched_module(monkeypatch, path: Path, package: str, edits: list[tuple[str, str]]) -> types.ModuleType:
    """``path``'s source with each (anchor, replacement) applied once, run as a new module of
    ``package`` (registered in sys.modules while the test runs, as dataclasses need)."""
    src = path.read_text()
    for anchor, replacement in edits:
        assert src.count(anchor) == 1, f"{path.name}: the page's anchor {anchor!r} is not unique"
        src = src.replace(anchor, replacement)
    name = f"{package}._doc_{path.stem}"
    mod = types.ModuleType(name)
    mod.__package__ = package
    mod.__file__ = str(path)
    monkeypatch.setitem(sys.modules, name, mod)
    exec(compile(src, f"{path} (with docs/extending.md's lines)", "exec"), mod.__dict__)
    return mod


def preset_commands(title: str) -> list[tuple[str, list[str]]]:
    """(preset, --set values) of each ``python -m bench run`` line in the section's sh blocks."""
    out = []
    for b in blocks(title, "sh"):
        words = shlex.split(b.code.replace("\\\n", " "))
        assert words[:4] == ["python", "-m", "bench", "run"], words
        preset = words[words.index("--preset") + 1]
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        out.append((preset, sets))
    return out


# ----------------------------------------------------------------------------- a new method

def test_the_doc_shows_the_recipe_module_as_it_is():
    recipe, line, _ = [b.code for b in blocks("A new method")]
    assert recipe == (REPO / "annsnn" / "recipes" / "channelnorm.py").read_text()
    init = (REPO / "annsnn" / "recipes" / "__init__.py").read_text().splitlines()
    assert line.strip() in init
    assert "maxnorm-channel" in RECIPES and 'name = "maxnorm-channel"' in recipe


def _channel_maxima(ann: nn.Module, loader) -> dict[str, torch.Tensor]:
    """Per ReLU layer, the max over everything but dim 1 of its outputs on ``loader``
    (0 for a channel that never fired)."""
    peak: dict[str, torch.Tensor] = {}

    def hook(mod, inp, out, name):
        m = out.detach().amax(dim=[d for d in range(out.dim()) if d != 1])
        peak[name] = torch.maximum(peak[name], m) if name in peak else m
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n))
             for n, m in ann.named_modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        for xb, _ in loader:
            ann(xb)
    for h in hooks:
        h.remove()
    return peak


def test_the_doc_example_converts_and_simulates_with_channel_maxima():
    example = blocks("A new method")[2]
    scope = run_block(example, {})
    ann, calib, snn, res = scope["ann"], scope["calib"], scope["snn"], scope["res"]
    neurons = dict(annsnn.spiking_layers(snn))
    want = _channel_maxima(ann, calib)
    assert sorted(neurons) == sorted(want) == ["1", "5"]
    for name, m in neurons.items():
        w = want[name]
        assert m.per_channel and m.theta.shape == w.shape and bool((w > 0).any())
        assert torch.equal(m.theta[w > 0], w[w > 0]), name          # the channel maxima
        assert bool((m.theta[w == 0] == w.max()).all()), name       # never fired: the layer's
    assert res.T_max == 16 and res.n_images == 32 and res.sops[-1] > 0
    assert len(set(neurons["1"].theta.tolist())) == 3          # three different thresholds


def test_the_method_sections_command_is_a_valid_preset():
    from bench import presets
    (preset, sets), = preset_commands("A new method")
    assert "maxnorm-channel" in presets.load(preset, sets)["methods"]


# ----------------------------------------------------------------------------- a new dataset

def test_a_new_dataset_is_found_loaded_and_accepted(tmp_path, monkeypatch):
    import annsnn.datasets as D
    import lightning_modules.data as data
    import lightning_modules.data_sources as S
    from bench import presets

    info_line, layout_line, example = blocks("A new dataset")
    anchor = '    "fashion-mnist": '
    ds = patched_module(monkeypatch, REPO / "annsnn" / "datasets.py", "annsnn",
                        [(anchor, info_line.code + anchor)])
    src = patched_module(monkeypatch, REPO / "lightning_modules" / "data_sources.py", "lightning_modules",
                         [(anchor, layout_line.code + anchor)])
    monkeypatch.setitem(D.DATASETS, "kmnist", ds.DATASETS["kmnist"])
    monkeypatch.setitem(S.LAYOUTS, "kmnist", src.LAYOUTS["kmnist"])
    monkeypatch.setitem(S.TORCHVISION, "kmnist", src.TORCHVISION["kmnist"])   # derived from LAYOUTS
    monkeypatch.setattr(S, "CACHE_DIR", tmp_path / "cache")

    def no_network(name, root):
        raise AssertionError("the example must not download anything")
    monkeypatch.setattr(S, "_torchvision_download", no_network)

    data_dir = tmp_path / "data"
    fakedata.write_idx_dataset(data_dir / "KMNIST" / "raw", n_train=60, n_test=20)
    scope = run_block(example, {"data_dir": data_dir})

    dm, x = scope["dm"], scope["x"]
    info = D.DATASETS["kmnist"]
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 1, 28)
    assert len(dm.train_set) + len(dm.val_set) == 60 and len(dm.test_set) == 20
    assert x.shape == (32, 1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert "kmnist" not in data.CROP_FLIP
    for preset, sets in preset_commands("A new dataset"):
        assert presets.load(preset, sets)["dataset"] == "kmnist"


# ----------------------------------------------------------------------------- a new architecture

def test_a_new_architecture_converts_exactly(monkeypatch):
    import annsnn.models as models

    cls, registration, example = blocks("A new architecture")
    names = re.search(r"^ARCHITECTURES = \(.*?\)", (REPO / "annsnn" / "models.py").read_text(),
                      re.M | re.S).group(0)
    mod = patched_module(monkeypatch, REPO / "annsnn" / "models.py", "annsnn", [
        ("\ndef build(", "\n" + cls.code + "\n\ndef build("),       # the class above build
        (names, names[:-1] + ', "lenet5")'),                          # the name appended
        ("    resnets = {", registration.code + "    resnets = {"),   # the branch before the ResNets
    ])
    mod.Normalize = models.Normalize     # the package's own class, which convert knows
    monkeypatch.setattr(models, "build", mod.build)
    monkeypatch.setattr(models, "ARCHITECTURES", mod.ARCHITECTURES)
    assert "lenet5" in mod.ARCHITECTURES

    scope = run_block(example, {})
    ann, snn, x, res = scope["ann"], scope["snn"], scope["x"], scope["res"]
    assert type(ann).__name__ == "LeNet5"
    ref = annsnn.fold_bn(ann)
    levels = []
    hooks = [m.register_forward_hook(lambda m_, i, o: levels.append(o))
             for m in ref.modules() if isinstance(m, annsnn.StepReLU)]
    with torch.no_grad():
        ref(x)
    for h in hooks:
        h.remove()
    assert len(levels) == 4 and all(bool((o > 0).any()) for o in levels), "a layer never fires: vacuous"
    assert len(annsnn.spiking_layers(snn)) == 4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in snn.modules())   # folded
    assert res.conv_error[0] == 0.0 and res.identical_at_t1 == res.n_images == 64


# ----------------------------------------------------------------------------- a new attack

def test_a_new_attack_is_used_as_the_stage_uses_attacks(monkeypatch):
    import annsnn.attacks as attacks

    fn, registration, example = blocks("A new attack")
    kinds, branch = registration.code.split("\n\n", 1)
    old_kinds = re.search(r"^KINDS = .*$", (REPO / "annsnn" / "attacks.py").read_text(), re.M).group(0)
    mod = patched_module(monkeypatch, REPO / "annsnn" / "attacks.py", "annsnn", [
        ("\ndef craft(", "\n" + fn.code + "\n\ndef craft("),      # beside fgsm and pgd
        (old_kinds, kinds.strip()),
        ('    raise ValueError(f"unknown attack', branch + '    raise ValueError(f"unknown attack'),
    ])
    assert "bim" in mod.KINDS
    monkeypatch.setattr(attacks, "bim", mod.bim, raising=False)

    scope = run_block(example, {})
    ann, x, y, eps, rows, robust = (scope[k] for k in ("ann", "x", "y", "eps", "rows", "robust"))
    adv = mod.craft("bim", ann, x, y, eps)
    assert torch.equal(adv, mod.bim(ann, x, y, eps))                   # craft dispatches to it
    assert torch.equal(mod.bim(ann, x, y, 0.0), x)                     # eps = 0: the images
    assert (adv - x).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    loss = nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(ann(adv), y) > loss(ann(x), y)                     # it attacks
    assert [r["family"] for r in rows] == ["clean", "transfer", "snn_pgd"]
    assert rows[0]["acc"] == 1.0 and robust["n"] == 40
    assert robust["attacks"] == ["snn_pgd:steprelu:bim", "transfer:steprelu:bim"]


# ----------------------------------------------------------------------------- the old page

def test_the_old_method_page_points_here():
    old = (REPO / "docs" / "extending-method.md").read_text()
    assert "extending.md#a-new-method" in old and "```" not in old
