"""docs/extending-method.md ("adding a method") stays true: the recipe module it shows is
the one in the package, character for character, its registration line is the one in
annsnn/recipes/__init__.py, and its usage example runs and gives per-channel thresholds
equal to the channel maxima on the calibration data (checked here independently of the
example's own asserts)."""
from __future__ import annotations

import re

import torch
from torch import nn

import annsnn
from annsnn.recipes import RECIPES

from conftest import REPO

DOC = REPO / "docs" / "extending-method.md"


def python_blocks() -> list[str]:
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)
    assert len(blocks) == 3, "expected the recipe module, its import line and the usage example"
    return blocks


def test_the_doc_shows_the_recipe_module_as_it_is():
    recipe, line, _ = python_blocks()
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
    _, _, example = python_blocks()
    first_line = DOC.read_text()[:DOC.read_text().index(example)].count("\n")
    scope: dict = {}
    exec(compile("\n" * first_line + example, str(DOC), "exec"), scope)  # tracebacks: doc lines
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
