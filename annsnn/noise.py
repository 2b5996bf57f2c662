"""Pixel-space input perturbations for the robustness benchmark (docs/method.md#noise).

Images are in [0, 1] (every model carries its normalisation as its first layer),
so noise is added to pixels, before normalisation. A perturbation ``p`` is called
as ``p(x, generator) -> x'`` by ``annsnn.simulate.simulate(..., perturb=p, seed=s)``:

- ``generator`` is a ``torch.Generator`` on the CPU; every random number is drawn
  on the CPU from it and then moved to ``x.device``, so a seed gives the same
  perturbation on every device;
- ``p.dynamic`` says when it is drawn: static (False) once per image and repeated
  at every time step, dynamic (True) redrawn at every time step. Only dynamic
  noise can interact with the neurons' leak.
- ``simulate`` draws through ``draw_paired``: image i of the data at step t gets its own
  generator, seeded by (seed, i, t) (t = 0 for static noise). So every method, T, leak,
  batch size and study trial sees the same draws for the same image and step: the
  comparisons between them are paired.

``p.name`` is a key for metrics, e.g. ``gaussian/sigma_0.1/dynamic``. It uses
``_`` rather than ``=`` because MLflow metric names may only hold alphanumerics,
``_ - . : /`` and spaces.
"""
from __future__ import annotations

import math

import torch

KINDS = ("gaussian", "salt_pepper")


def _fmt(v: float) -> str:
    """Short, exact decimal for a level: 0.1 -> '0.1', 1.0 -> '1', 1e-05 -> '1e-05'."""
    short = f"{v:g}"
    return short if float(short) == v else repr(v)


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"expected a floating-point image tensor in [0, 1], got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if isinstance(x, torch.Tensor) else ""))


def _rand(fn, shape, generator, x: torch.Tensor) -> torch.Tensor:
    """Draw on the CPU with ``generator`` (device-independent results), then move to x's device."""
    out = fn(tuple(shape), generator=generator, dtype=torch.float32, device="cpu")
    return out.to(device=x.device, dtype=x.dtype)


class Perturbation:
    """Base class: ``kind``, ``level``, ``dynamic`` and the derived ``name``."""

    kind = ""
    level_name = ""

    def __init__(self, level: float, dynamic: bool = False):
        self.level = float(level)
        self.dynamic = bool(dynamic)

    @property
    def name(self) -> str:
        mode = "dynamic" if self.dynamic else "static"
        return f"{self.kind}/{self.level_name}_{_fmt(self.level)}/{mode}"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.level_name}={self.level!r}, dynamic={self.dynamic})"

    def __eq__(self, other) -> bool:
        return (type(self) is type(other) and self.level == other.level
                and self.dynamic == other.dynamic)

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.level, self.dynamic))


class GaussianNoise(Perturbation):
    """x + sigma * N(0, 1) per pixel and channel, clipped to [0, 1]; sigma = 0 is the identity."""

    kind = "gaussian"
    level_name = "sigma"

    def __init__(self, sigma: float, dynamic: bool = False):
        sigma = float(sigma)
        if not (math.isfinite(sigma) and sigma >= 0.0):
            raise ValueError(f"gaussian noise: sigma must be a finite number >= 0, got {sigma!r}")
        super().__init__(sigma, dynamic)

    @property
    def sigma(self) -> float:
        return self.level

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_input(x)
        if self.sigma == 0.0:
            return x
        noise = _rand(torch.randn, x.shape, generator, x)
        return (x + self.sigma * noise).clamp_(0.0, 1.0)


class SaltPepper(Perturbation):
    """Salt-and-pepper noise with signal ratio ``s`` (as in the StepReLU authors' code).

    Each pixel position keeps its value with probability ``s``; otherwise it
    becomes white (1) or black (0) with probability (1 - s)/2 each. One mask is
    shared by all channels of a position (channels are dimension -3, i.e. inputs
    are [..., C, H, W]). ``s = 1`` is the identity. ``p_image``: the probability that an
    image is corrupted at all, as the authors' ``AddNoise(s, p)`` (their evaluation:
    static, s = 0.95, p = 0.5); 1 corrupts every image. Each image draws that coin first
    from its generator, so the decision is paired like the noise itself.
    """

    kind = "salt_pepper"
    level_name = "s"

    def __init__(self, s: float, dynamic: bool = False, p_image: float = 1.0):
        s, p_image = float(s), float(p_image)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"salt_pepper noise: signal ratio s must lie in [0, 1], got {s!r}")
        if not 0.0 <= p_image <= 1.0:
            raise ValueError(f"salt_pepper noise: p_image must lie in [0, 1], got {p_image!r}")
        super().__init__(s, dynamic)
        self.p_image = p_image

    @property
    def name(self) -> str:
        base = super().name
        if self.p_image == 1.0:
            return base
        kind, level, mode = base.split("/")
        return f"{kind}/{level}_p_{_fmt(self.p_image)}/{mode}"

    def __eq__(self, other) -> bool:
        return super().__eq__(other) and self.p_image == other.p_image

    def __hash__(self) -> int:
        return hash((super().__hash__(), self.p_image))

    @property
    def s(self) -> float:
        return self.level

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_input(x)
        if x.dim() < 3:
            raise ValueError(f"salt_pepper noise expects images [..., C, H, W], got shape {tuple(x.shape)}")
        if self.s == 1.0 or self.p_image == 0.0:
            return x
        hit = None
        if self.p_image < 1.0:   # which images are corrupted, one coin each, drawn first
            lead = tuple(x.shape[:-3])                  # image dimensions before [C, H, W]
            coins = _rand(torch.rand, (math.prod(lead),), generator, x)
            hit = (coins < self.p_image).view(*lead, 1, 1, 1)
        shape = list(x.shape)
        shape[-3] = 1                                   # one draw per position, shared by channels
        u = _rand(torch.rand, shape, generator, x)      # uniform in [0, 1)
        keep = u < self.s                               # probability s
        white = u >= (1.0 + self.s) / 2.0               # probability (1 - s)/2; the rest is black
        out = torch.where(keep, x, white.to(x.dtype))
        return out if hit is None else torch.where(hit, out, x)


def noise_key(seed: int, index: int, t: int) -> int:
    """The generator seed of image ``index`` at step ``t`` (0: static) for a run seeded ``seed``;
    distinct for every (seed, index, t) with index < 1,000,003 and t < 1,000,033."""
    return ((int(seed) * 1_000_003 + int(index)) * 1_000_033 + int(t)) % 2 ** 63


def draw_paired(perturb, x: torch.Tensor, seed: int, first_index: int, t: int) -> torch.Tensor:
    """``perturb`` applied to a batch whose first image is image ``first_index`` of the data,
    each image with its own generator seeded by ``noise_key(seed, index, t)``: an image's noise
    depends on (seed, image, step) alone, not on the batch it sits in or on the call."""
    g = torch.Generator(device="cpu")
    parts = []
    for i in range(x.shape[0]):
        g.manual_seed(noise_key(seed, first_index + i, t))
        parts.append(perturb(x[i:i + 1], g))
    return torch.cat(parts)


def make_perturbation(kind: str, level: float, dynamic: bool = False,
                      p_image: float = 1.0) -> Perturbation:
    """``kind`` in {"gaussian", "salt_pepper"}; ``level`` is sigma (>= 0) or the signal ratio s
    (in [0, 1]); ``p_image`` (salt_pepper only): the fraction of images corrupted."""
    k = str(kind).lower().replace("-", "_")
    if k == "gaussian":
        if p_image != 1.0:
            raise ValueError("p_image applies to salt_pepper noise only")
        return GaussianNoise(level, dynamic)
    if k in ("salt_pepper", "saltpepper"):
        return SaltPepper(level, dynamic, p_image)
    raise ValueError(f"unknown noise kind {kind!r}; valid: {', '.join(KINDS)} "
                     "(gaussian: sigma >= 0; salt_pepper: signal ratio s in [0, 1])")
