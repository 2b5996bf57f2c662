"""StepReLU / QCFS: forward formula on exact grids, straight-through gradients, argument checks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from hypothesis import given, settings
from hypothesis import strategies as st

from annsnn import QCFS, StepReLU, make_activation

THETAS = [2.0 ** -4, 2.0 ** -1, 1.0, 4.0]          # powers of two: x/theta is exact
LEVELS = [1, 2, 3, 8, 16]


def exact_grid(theta: float, L: int, sub: int = 8) -> torch.Tensor:
    """x = theta * j / sub for j from -3 steps to L + 3 steps: contains every step boundary
    k*theta - phi*theta (phi in {0, 0.5}) exactly, and x/theta + phi is exact in float32."""
    j = torch.arange(-3 * sub, (L + 3) * sub + 1, dtype=torch.float64)
    x = (theta * j / sub).to(torch.float32)
    assert torch.equal(x.double(), theta * j / sub)  # representable
    return x


def formula(x: torch.Tensor, theta: float, L: int, phi: float, clip: bool = True) -> torch.Tensor:
    """theta * clamp(floor(x/theta + phi), 0, L) evaluated exactly (float64 on float32 grid points)."""
    xd = x.double()
    y = theta * torch.clamp(torch.floor(xd / theta + phi), 0, L)
    if not clip:
        y = torch.where(xd > L * theta, xd, y)
    return y


def grad_rule(x: torch.Tensor, theta: float, L: int, phi: float, clip: bool = True) -> torch.Tensor:
    """The documented straight-through rule: d y / d x = 1 where the clamp leaves the integer
    level unchanged, i.e. 0 <= floor(x/theta + phi) <= L (edges included), else 0; with
    clip=False inputs above L*theta pass unchanged and get gradient 1."""
    lev = torch.floor(x.double() / theta + phi)
    g = ((lev >= 0) & (lev <= L)).double()
    if not clip:
        g = torch.where(x.double() > L * theta, torch.ones_like(g), g)
    return g


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("phi", [0.0, 0.5])
@pytest.mark.parametrize("L", LEVELS)
@pytest.mark.parametrize("theta", THETAS)
def test_steprelu_forward_and_grad_on_exact_grid(theta, L, phi, clip):
    x = exact_grid(theta, L).requires_grad_(True)
    act = StepReLU(theta, L, phi, clip=clip)
    y = act(x)
    assert y.dtype == torch.float32
    assert torch.equal(y.double(), formula(x.detach(), theta, L, phi, clip))
    # the boundaries themselves: at k*theta - phi*theta the level jumps to k
    k = torch.arange(1, L + 1, dtype=torch.float64)
    xb = ((k - phi) * theta).float()
    assert torch.equal(act(xb).double(), theta * k)
    if phi == 0.0:  # x/theta exact and + 0 exact: the float just below a boundary is one level down
        below = torch.nextafter(xb, torch.tensor(-math.inf))
        assert torch.equal(act(below).double(), theta * (k - 1))
    y.sum().backward()
    assert torch.equal(x.grad.double(), grad_rule(x.detach(), theta, L, phi, clip))


def test_steprelu_grad_edges_spelled_out():
    """theta = 1, L = 4: the gradient window in x for each phi (edges included/excluded)."""
    x = torch.tensor([-0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.99, 1.0, 3.99, 4.0, 4.25, 4.5, 4.75,
                      5.0, 6.0], requires_grad=True)
    StepReLU(1.0, 4, 0.0)(x).sum().backward()
    # phi = 0: floor(x) in [0, 4]  <=>  x in [0, 5)
    assert x.grad.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    x.grad = None
    StepReLU(1.0, 4, 0.5)(x).sum().backward()
    # phi = 0.5: floor(x + 0.5) in [0, 4]  <=>  x in [-0.5, 4.5)
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    x.grad = None
    StepReLU(1.0, 1, 0.0)(x).sum().backward()
    # L = 1 still trains: x in [0, 2)
    assert x.grad.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]


@settings(max_examples=30, deadline=None, derandomize=True)
@given(theta=st.floats(1e-3, 10.0), L=st.integers(1, 16), phi=st.sampled_from([0.0, 0.5]),
       clip=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_steprelu_random_inputs_match_float32_formula(theta, L, phi, clip, seed):
    """Arbitrary theta and inputs: same float32 operations in the documented order."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2000, generator=g) * theta * L
    act = StepReLU(theta, L, phi, clip=clip)
    t = torch.tensor(theta, dtype=torch.float32)
    ref = t * torch.clamp(torch.floor(x / t + phi), 0, L)
    if not clip:
        ref = torch.where(x > L * t, x, ref)
    assert torch.equal(act(x), ref)
    assert float(act(x).min()) >= 0.0
    if clip:
        assert float(act(x).max()) <= float(L * t)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(L=st.integers(1, 16), lam=st.floats(0.05, 20.0), seed=st.integers(0, 2 ** 16))
def test_qcfs_is_steprelu_bitwise(L, lam, seed):
    g = torch.Generator().manual_seed(seed)
    q = QCFS(L, lam)
    s = StepReLU(float(q.threshold().detach()), L, 0.5)
    x = (torch.randn(3000, generator=g) * lam).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    yq, ys = q(x), s(x2)
    assert torch.equal(yq, ys)
    w = torch.randn(3000, generator=g)
    (yq * w).sum().backward()
    (ys * w).sum().backward()
    assert torch.equal(x.grad, x2.grad)
    # QCFS's own formula lam * clamp(floor(x*L/lam + 0.5)/L, 0, 1) on a dyadic grid
    if L in (1, 2, 4, 8, 16):
        lam2 = 2.0 ** round(math.log2(lam))
        q2 = QCFS(L, lam2)
        xg = torch.arange(-64, 64 * 3) * (lam2 / 128)
        ref = lam2 * torch.clamp(torch.floor(xg.double() * L / lam2 + 0.5) / L, 0, 1)
        assert torch.equal(q2(xg).double(), ref)


@pytest.mark.parametrize("phi", [0.0, 0.5])
def test_learnable_theta_gets_gradient(phi):
    g = torch.Generator().manual_seed(0)
    act = StepReLU(0.3, 5, phi, learn_theta=True)
    assert isinstance(act.theta, torch.nn.Parameter)
    x = torch.randn(500, generator=g)
    act(x).sum().backward()
    assert act.theta.grad is not None and float(act.theta.grad.abs()) > 0
    q = QCFS(4, 2.0)
    q(torch.randn(500, generator=g) * 2).sum().backward()
    assert q.lam.grad is not None and float(q.lam.grad.abs()) > 0


@pytest.mark.parametrize("kwargs, needle", [
    (dict(theta=0.0), "> 0"), (dict(theta=-0.1), "> 0"), (dict(theta=float("nan")), "> 0"),
    (dict(L=0), ">= 1"), (dict(L=-3), ">= 1"), (dict(L=2.5), ">= 1"), (dict(L=4.0), ">= 1"),
    (dict(L=True), ">= 1"),
    (dict(phi=1.0), "[0, 1)"), (dict(phi=-0.1), "[0, 1)"), (dict(phi=1.5), "[0, 1)"),
])
def test_steprelu_rejects_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError) as e:
        StepReLU(**kwargs)
    assert needle in str(e.value)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(L=0), ">= 1"), (dict(L=2.0), ">= 1"), (dict(init_lam=0.0), "> 0"),
    (dict(init_lam=-1.0), "> 0")])
def test_qcfs_rejects_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError) as e:
        QCFS(**kwargs)
    assert needle in str(e.value)


def test_make_activation():
    assert isinstance(make_activation("relu"), torch.nn.ReLU)
    a = make_activation({"name": "StepReLU", "theta": 0.25, "L": 3, "phi": 0.5})
    assert isinstance(a, StepReLU) and a.L == 3 and a.phi == 0.5 and float(a.theta) == 0.25
    assert isinstance(make_activation("qcfs", L=4), QCFS)
    with pytest.raises(ValueError, match="valid: relu, qcfs, steprelu"):
        make_activation("gelu")
    with pytest.raises(ValueError):
        make_activation("relu", L=3)


def test_make_activation_unknown_option_names_the_valid_ones():
    """A typo in a knob (theta -> thetaa) is a one-line ValueError, not a TypeError traceback."""
    with pytest.raises(ValueError) as e:
        make_activation({"name": "steprelu", "thetaa": 0.1})
    assert type(e.value) is ValueError
    msg = str(e.value)
    assert "thetaa" in msg and "steprelu" in msg
    for knob in ("theta", "L", "phi", "clip", "learn_theta"):
        assert knob in msg.split("valid:")[1]
    with pytest.raises(ValueError, match="init_lam"):
        make_activation("qcfs", lam=3.0)


def test_activation_registry_builds_every_entry():
    """make_activation goes through ACTIVATIONS: each registered name builds its class."""
    from annsnn.activations import ACTIVATIONS
    assert list(ACTIVATIONS) == ["relu", "qcfs", "steprelu"]
    for name, cls in ACTIVATIONS.items():
        assert type(make_activation(name)) is cls
        assert type(make_activation(name.upper())) is cls


@pytest.mark.parametrize("make", [lambda: StepReLU(0.1, 8, 0.5, learn_theta=True),
                                  lambda: QCFS(8, 0.8)])
def test_learnable_threshold_stays_positive_and_converts(make):
    """One oversized SGD step throws the raw parameter below zero (as lr 0.2 did on
    CIFAR-10); threshold() holds at the floor, stays bitwise itself above it, and the
    network still converts with the threshold the ANN used."""
    from annsnn.activations import THRESHOLD_FLOOR
    from annsnn import convert
    act = make()
    before = act.threshold().detach().clone()
    raw = act.theta if isinstance(act, StepReLU) else act.lam
    assert torch.equal(act.threshold().detach(), before)  # untouched while positive
    with torch.no_grad():
        raw.sub_(10.0)
    assert float(raw) < 0
    assert float(act.threshold()) == pytest.approx(THRESHOLD_FLOOR if isinstance(act, StepReLU)
                                                   else THRESHOLD_FLOOR / 8)
    net = nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 2)).eval()
    method = "steprelu" if isinstance(act, StepReLU) else "qcfs"
    snn = convert(net, method)
    neuron = next(m for m in snn.modules() if type(m).__name__ == "IFNeuron")
    assert float(neuron.theta) > 0


@settings(max_examples=25, deadline=None, derandomize=True)
@given(L=st.integers(1, 20), theta=st.floats(0.01, 2.0), phi=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2 ** 16), bf16=st.booleans())
def test_fixed_theta_fast_path_matches_autograd_graph_bitwise(L, theta, phi, seed, bf16):
    """The fused fixed-theta StepReLU gives the op-by-op graph's outputs and input
    gradients bit for bit, including inputs on the step boundaries and the clamp edges,
    in float32 and in bfloat16 (as under bf16-mixed training)."""
    from annsnn.activations import step_levels
    g = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16 if bf16 else torch.float32
    t = torch.tensor(theta, dtype=torch.float32)
    grid = (torch.arange(-3, L + 4, dtype=torch.float32) - phi) * t  # boundaries and edges
    x0 = torch.cat([torch.randn(4000, generator=g) * theta * L, grid, -grid]).to(dtype)
    x1, x2 = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
    y1 = StepReLU(theta, L, phi)(x1)
    y2 = t * step_levels(x2, t, L, phi)
    assert y1.dtype == y2.dtype and torch.equal(y1, y2)
    w = torch.randn(x0.shape, generator=g).to(dtype)
    (y1 * w).sum().backward()
    (y2 * w).sum().backward()
    assert torch.equal(x1.grad, x2.grad)
    assert bool((x1.grad != 0).any()) and bool((x1.grad == 0).any())  # both branches hit


# ----------------------------------------------------------------------------- fused kernels

def plain_levels(u: torch.Tensor, L: int) -> torch.Tensor:
    """clamp(floor(u), 0, L) with the documented straight-through gradient, in plain ops:
    gradient 1 where 0 <= floor(u) <= L, else 0 (a reference independent of fused.py)."""
    lev = torch.floor(u.detach())
    window = ((lev >= 0) & (lev <= L)).to(u.dtype)
    return torch.clamp(lev, 0, L) + (u - u.detach()) * window


def plain_step_relu(x: torch.Tensor, theta: torch.Tensor, L: int, phi: float) -> torch.Tensor:
    """theta * clamp(floor(x/theta + phi), 0, L), op for op, with ``plain_levels``."""
    return theta * plain_levels(x / theta + phi, L)


def _inputs(seed: int, theta: float, L: int, phi: float, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor(theta, dtype=torch.float32)
    grid = (torch.arange(-3, L + 4, dtype=torch.float32) - phi) * t  # boundaries and clamp edges
    return torch.cat([torch.randn(4000, generator=g) * theta * L, grid, -grid]).to(dtype)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(L=st.integers(1, 20), theta=st.floats(0.01, 2.0), phi=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2 ** 16), bf16=st.booleans())
def test_fused_kernels_equal_the_plain_formula_bitwise(L, theta, phi, seed, bf16):
    """fused.py is speed only: clamp_floor_ste and the fixed-theta StepReLU give the plain
    formula's values and input gradients bit for bit (float32 and bfloat16), on random
    inputs and on every step boundary and clamp edge."""
    from annsnn.fused import clamp_floor_ste, fixed_theta_step_relu
    dtype = torch.bfloat16 if bf16 else torch.float32
    t = torch.tensor(theta, dtype=torch.float32)
    x0 = _inputs(seed, theta, L, phi, dtype)
    w = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1)).to(dtype)
    for fused, plain in ((lambda x: clamp_floor_ste(x / t + phi, L), lambda x: plain_levels(x / t + phi, L)),
                         (lambda x: fixed_theta_step_relu(x, t, L, phi),
                          lambda x: plain_step_relu(x, t, L, phi))):
        x1, x2 = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        y1, y2 = fused(x1), plain(x2)
        assert y1.dtype == y2.dtype and torch.equal(y1, y2)
        (y1 * w).sum().backward()
        (y2 * w).sum().backward()
        assert torch.equal(x1.grad, x2.grad)
        assert bool((x1.grad != 0).any()) and bool((x1.grad == 0).any())  # both branches hit
    assert torch.equal(StepReLU(theta, L, phi)(x0), plain_step_relu(x0, t, L, phi))


def test_fused_window_edges_spelled_out():
    """clamp_floor_ste passes the gradient for floor(u) in [0, L], edges included."""
    from annsnn.fused import clamp_floor_ste
    u = torch.tensor([-0.5, 0.0, 0.5, 2.99, 3.0, 3.5, 4.0], requires_grad=True)
    y = clamp_floor_ste(u, 3)
    assert y.tolist() == [0, 0, 0, 2, 3, 3, 3]
    y.sum().backward()
    assert u.grad.tolist() == [0, 1, 1, 1, 1, 1, 0]
