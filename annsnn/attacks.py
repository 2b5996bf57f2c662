"""L-infinity FGSM and PGD in pixel space through the Adversarial Robustness Toolbox (ART).

docs/method.md#adversarial-attacks: adversarial images are crafted (a) on the source ANN, whose
quantised activations have straight-through gradients, and evaluated on the
SNN, and (b) white-box on the SNN unrolled over T steps with a surrogate spike
gradient (``UnrolledSNN``). The benchmark calls ``craft`` and then
``annsnn.simulate`` on the adversarial images.

Epsilons are in pixel units; images and adversarial images lie in [0, 1]
(models carry their normalisation as their first layer). ART is imported lazily
so that ``import annsnn.attacks`` stays cheap. (torchattacks is not used: it pins
an old ``requests`` that breaks MLflow.)
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from torch import nn

from .neurons import reset_neurons, spiking_layers
from .simulate import static_prefix

KINDS = ("fgsm", "pgd")


class UnrolledSNN(nn.Module):
    """The SNN ``snn`` run for ``T`` steps on a constant input, as one differentiable module.

    ``forward(x)`` resets the neurons, runs T steps with the same (direct-encoded)
    input and returns the mean classifier output over the T steps, i.e. the
    logits whose argmax is the SNN's prediction at t = T. During the call every
    ``IFNeuron`` has ``surrogate = True`` (its floor gets a straight-through
    gradient; the forward values are unchanged) and ``record = False`` (no spike
    statistics); both are restored afterwards, and the neurons are reset again so
    that no autograd graph stays attached to their state.

    As in ``simulate``, the layers before the first spiking layer of a Sequential SNN
    see the same input at every step, so they run once per call (same values, and
    their backward pass runs once instead of T times).
    """

    def __init__(self, snn: nn.Module, T: int):
        super().__init__()
        if not isinstance(T, int) or isinstance(T, bool) or T < 1:
            raise ValueError(f"T must be an integer >= 1, got {T!r}")
        if not spiking_layers(snn):
            raise ValueError("UnrolledSNN needs a converted network with IFNeuron layers")
        self.snn = snn
        self.T = T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        neurons = [m for _, m in spiking_layers(self.snn)]
        saved = [(m.surrogate, m.record) for m in neurons]
        try:
            for m in neurons:
                m.surrogate, m.record = True, False
            reset_neurons(self.snn)
            split = static_prefix(self.snn)
            net = self.snn
            if split is not None:
                prefix, net = split
                x = prefix(x)
            cum = None
            for _ in range(self.T):
                out = net(x)
                cum = out if cum is None else cum + out
            return cum / self.T
        finally:
            reset_neurons(self.snn)
            for m, (surrogate, record) in zip(neurons, saved):
                m.surrogate, m.record = surrogate, record

    def extra_repr(self) -> str:
        return f"T={self.T}"


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _attack_mode(model: nn.Module):
    """Gradients on (also inside ``torch.inference_mode`` / ``no_grad``), model in eval mode,
    parameters frozen; training flags, ``requires_grad`` and existing ``.grad`` are restored."""
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [(p, p.requires_grad, p.grad) for p in params]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()
            for p in params:
                p.requires_grad_(False)   # only the input gradient is needed; ART zeroes .grad
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, requires_grad, grad in flags:
            p.requires_grad_(requires_grad)
            p.grad = grad


@contextlib.contextmanager
def _numpy_seed(seed: int | None):
    """ART draws PGD's random start from numpy's global RNG: seed it, then put it back."""
    if seed is None:
        yield
        return
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        yield
    finally:
        np.random.set_state(state)


def check_eps(eps) -> float:
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0.0):
        raise ValueError(f"eps must be a finite number >= 0 (pixel units, images in [0, 1]), got {eps!r}")
    return eps


def checked_inputs(x: torch.Tensor, y: torch.Tensor):
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a floating-point tensor [B, ...] of pixels in [0, 1]")
    y = torch.as_tensor(y)
    if y.dim() == 2:                      # one-hot / probabilities -> class indices
        y = y.argmax(1)
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must hold one class index per image ({x.shape[0]}), got shape {tuple(y.shape)}")
    if y.is_floating_point():
        y = y.long()
    return x, y


def check_stateless(model: nn.Module) -> None:
    """A bare SNN keeps membrane state between ART's calls: it must be wrapped in UnrolledSNN."""
    wrapped = {id(m) for u in model.modules() if isinstance(u, UnrolledSNN)
               for _, m in spiking_layers(u.snn)}
    bare = [name for name, m in spiking_layers(model) if id(m) not in wrapped]
    if bare:
        raise ValueError(f"the model has spiking layers ({bare[0]}, ...) outside an UnrolledSNN; "
                         "attack the SNN as UnrolledSNN(snn, T)")


def _classifier(model: nn.Module, x: torch.Tensor):
    """Wrap ``model`` for ART (cheap, ~0.3 ms, so no cache). Must run inside ``_attack_mode``."""
    from art.estimators.classification import PyTorchClassifier

    check_stateless(model)
    device = model_device(model)
    with torch.no_grad():
        nb_classes = int(model(x[:1].to(device=device, dtype=torch.float32)).shape[-1])
    device_ctx = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with device_ctx:   # ART puts the model on cuda.current_device(): make that the model's own
        return PyTorchClassifier(
            model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
            nb_classes=nb_classes, clip_values=(0.0, 1.0),
            device_type="gpu" if device.type == "cuda" else "cpu",
        )


def _finish(adv: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(adv).to(device=x.device, dtype=x.dtype).clamp_(0.0, 1.0)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Untargeted L-inf FGSM: clip(x + eps * sign(grad_x CE(model(x), y)), 0, 1) via ART.

    ``model`` maps pixels [B, C, H, W] in [0, 1] to logits; ``y`` holds class
    indices. Returns a tensor on x's device and dtype; ``eps = 0`` returns ``x``.
    """
    eps = check_eps(eps)
    x, y = checked_inputs(x, y)
    if eps == 0.0 or x.shape[0] == 0:
        return x
    from art.attacks.evasion import FastGradientMethod

    with _attack_mode(model):
        clf = _classifier(model, x)
        attack = FastGradientMethod(clf, norm=np.inf, eps=eps, eps_step=eps, targeted=False,
                                    num_random_init=0, batch_size=x.shape[0], minimal=False)
        adv = attack.generate(x=x.detach().cpu().numpy().astype(np.float32),
                              y=y.detach().cpu().numpy().astype(np.int64))
    return _finish(adv, x)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
        step_size: float | None = None, seed: int | None = 0, random_init: bool = True,
        restarts: int = 1) -> torch.Tensor:
    """Untargeted L-inf PGD (Madry et al.) via ART: ``steps`` signed-gradient steps of
    ``step_size`` (default 2.5 * eps / steps), each projected onto the eps ball around x
    and onto [0, 1]; with ``random_init`` it starts from a uniform point of the ball,
    drawn from ``seed`` (numpy's global RNG is restored afterwards).

    ``restarts`` > 1 runs PGD from that many random starts (ART's ``num_random_init``)
    and keeps, per image, the first run's result unless a later run misclassifies it
    (judged by ``model``), so an image survives only if every restart fails. The first
    restart is the ``restarts = 1`` result with the same seed. Restarts need
    ``random_init`` (without it every run is the same).

    Returns a tensor on x's device and dtype; ``eps = 0`` returns ``x``.
    """
    eps = check_eps(eps)
    x, y = checked_inputs(x, y)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 1:
        raise ValueError(f"restarts must be an integer >= 1, got {restarts!r}")
    if restarts > 1 and not random_init:
        raise ValueError("restarts > 1 needs random_init=True (every run would start at x)")
    if eps == 0.0 or x.shape[0] == 0:
        return x
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    if not (math.isfinite(step_size) and step_size > 0.0):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
    from art.attacks.evasion import ProjectedGradientDescent

    with _attack_mode(model), _numpy_seed(seed):
        clf = _classifier(model, x)
        attack = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=step_size,
                                          max_iter=steps, targeted=False,
                                          num_random_init=restarts if random_init else 0,
                                          batch_size=x.shape[0], random_eps=False, verbose=False)
        adv = attack.generate(x=x.detach().cpu().numpy().astype(np.float32),
                              y=y.detach().cpu().numpy().astype(np.int64))
    return _finish(adv, x)


def craft(kind: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kw) -> torch.Tensor:
    """Dispatch to ``fgsm`` or ``pgd`` (``kw``: pgd's steps, step_size, seed, random_init, restarts)."""
    k = str(kind).lower()
    if k == "fgsm":
        if kw:
            raise TypeError(f"fgsm takes no options, got {sorted(kw)}")
        return fgsm(model, x, y, eps)
    if k == "pgd":
        return pgd(model, x, y, eps, **kw)
    raise ValueError(f"unknown attack {kind!r}; valid: {', '.join(KINDS)}")
