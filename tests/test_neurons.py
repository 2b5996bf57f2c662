"""The integrate-and-fire neuron: the recursion of docs/method.md#spiking-neuron on exact inputs,
rate coding with constant input (QCFS equivalence at T = L, convergence to
clip(x/theta, 0, 1)), reset, statistics, the surrogate gradient and argument checks."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from annsnn import QCFS, IFNeuron, convert, reset_neurons, simulate
from annsnn.neurons import level_counts

from conftest import tiny_loader


def run(neuron: IFNeuron, xs) -> torch.Tensor:
    """Outputs of ``neuron`` for the input sequence ``xs`` (list of tensors), from reset."""
    neuron.reset()
    with torch.no_grad():
        return torch.stack([neuron(x) for x in xs])


def outputs_and_residuals(neuron: IFNeuron, xs) -> tuple[list[float], list[float]]:
    """Each step's output and residual potential (units of theta) for a one-neuron ``xs``, from reset."""
    neuron.reset()
    outs, res = [], []
    with torch.no_grad():
        for x in xs:
            outs.append(float(neuron(x)))
            res.append(float(neuron.u))
    return outs, res


def test_recursion_by_hand():
    """theta = 0.5, phi = 0.5, leak = 0.5, at most 2 spikes; x_t/theta = .75, .25, 2.5, -1, 0:
    u: 1.25 -> n=1 r=.25 | .125+.25=.375 -> 0 | .1875+2.5=2.6875 -> 2 r=.6875 |
       .34375-1 -> 0 r=-.65625 | -.328125 -> 0."""
    m = IFNeuron(0.5, max_spikes=2, phi=0.5, leak=0.5)
    xs = [torch.tensor([v * 0.5]) for v in (0.75, 0.25, 2.5, -1.0, 0.0)]
    outs, res = outputs_and_residuals(m, xs)
    assert outs == [0.5, 0.0, 1.0, 0.0, 0.0]
    assert res == [0.25, 0.375, 0.6875, -0.65625, -0.328125]   # residual, in units of theta
    assert m.spikes == 3 and m.neuron_steps == 5 and m.max_n == 2


@settings(max_examples=40, deadline=None, derandomize=True)
@given(L=st.integers(1, 6), phi=st.sampled_from([0.0, 0.5]), leak=st.sampled_from([1.0, 0.75, 0.5]),
       leak_mode=st.sampled_from(["exp", "linear"]),
       log_theta=st.integers(-3, 2), T=st.integers(1, 8),
       ks=st.lists(st.integers(-128, 512), min_size=8, max_size=8))
def test_recursion_matches_design_in_exact_arithmetic(L, phi, leak, leak_mode, log_theta, T, ks):
    """docs/method.md#spiking-neuron, in potential units (the page keeps u = V/theta):
    V_1 = phi*theta + x_1, V_t = leak(R_{t-1}) + x_t, n_t = clamp(floor(V_t/theta), 0, L),
    R_t = V_t - n_t*theta, output n_t*theta, with leak(R) = lam*R ("exp") or R moved toward 0
    by c = (1 - lam)*theta without crossing it ("linear") -- evaluated with Fractions, on dyadic
    inputs where float32 is exact; the neuron must agree bit for bit."""
    theta = 2.0 ** log_theta
    xs = [Fraction(k, 64) * Fraction(theta) for k in ks[:T]]
    m = IFNeuron(theta, max_spikes=L, phi=phi, leak=leak, leak_mode=leak_mode)
    got = run(m, [torch.tensor([float(x)]) for x in xs]).flatten().tolist()
    want, R = [], None
    th, lk = Fraction(theta), Fraction(leak)
    c = (1 - lk) * th

    def leaked(R):
        if leak_mode == "exp":
            return lk * R
        return max(R - c, Fraction(0)) if R > 0 else min(R + c, Fraction(0))
    for t, x in enumerate(xs):
        V = Fraction(phi) * th + x if t == 0 else leaked(R) + x
        n = min(max(V // th, 0), L)
        R = V - n * th
        want.append(float(n * th))
    assert got == want


@pytest.mark.parametrize("L", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("lam", [0.25, 1.0, 2.0])
def test_single_spike_neuron_over_L_steps_is_qcfs(L, lam):
    """Exact relation: a single-spike IF neuron with threshold lam and V_1 = lam/2 + x
    (IFNeuron(lam, 1, phi=0.5)), driven by a constant x for T = L steps, emits
    N_L = clamp(floor(L*x/lam + 1/2), 0, L) spikes, so its mean output N_L*lam/L equals
    QCFS(L, lam)(x) = lam * clamp(floor(x*L/lam + 0.5)/L, 0, 1) (QCFS's step is lam/L).
    lam and L are powers of two and x = lam*k/256, so every operation is exact and the
    grid contains every QCFS step boundary."""
    x = lam * torch.arange(-64, 2 * 256 + 1, dtype=torch.float32) / 256
    neuron = IFNeuron(lam, max_spikes=1, phi=0.5)
    mean = run(neuron, [x] * L).sum(0) / L
    q = QCFS(L, lam)
    with torch.no_grad():
        assert torch.equal(mean, q(x))
    exact = lam * torch.clamp(torch.floor(x.double() * L / lam + 0.5), 0, L) / L
    assert torch.equal(mean.double(), exact)


@pytest.mark.parametrize("L", [3, 5, 6, 7, 12])
def test_single_spike_neuron_over_L_steps_counts_qcfs_levels(L):
    """For L not a power of two QCFS's own step lam/L is rounded, so compare integers: the
    spike count over L steps equals QCFS's level clamp(floor(x*L/lam + 0.5), 0, L) (exact in
    float64 on the grid), and QCFS's output is that level times its step away from the
    step boundaries (at a boundary QCFS's rounded step may put x one level lower)."""
    lam = 1.0
    x = lam * torch.arange(-64, 2 * 256 + 1, dtype=torch.float32) / 256
    counts = run(IFNeuron(lam, 1, phi=0.5), [x] * L).sum(0) / lam
    level = torch.clamp(torch.floor(x.double() * L / lam + 0.5), 0, L)
    assert torch.equal(counts.double(), level)
    q = QCFS(L, lam)
    off = (x.double() * L / lam + 0.5) != torch.floor(x.double() * L / lam + 0.5)
    with torch.no_grad():
        assert torch.equal(q(x)[off], (q.threshold() * level.float())[off])


@pytest.mark.parametrize("L", [1, 2, 4, 8])
def test_qcfs_conversion_single_layer_exact_at_T_equals_L(L):
    """convert(..., "qcfs") gives IFNeuron(lam, 1, phi=0.5); with a constant input and an
    identity readout, the mean SNN output at t = L equals the QCFS ANN's output exactly."""
    lam = 2.0
    x = (lam * torch.arange(-32, 2 * 128 + 1, dtype=torch.float32) / 128).reshape(-1, 1)
    ann = nn.Sequential(QCFS(L, lam), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        ann[1].weight.fill_(1.0)
    snn = convert(ann, "qcfs")
    n = snn[0]
    assert isinstance(n, IFNeuron) and float(n.theta) == lam and n.phi == 0.5 and n.max_spikes == 1
    res = simulate(snn, tiny_loader(x, batch_size=len(x)), L, ann=ann, progress=False)
    assert res.conv_error[L - 1] == 0.0
    reset_neurons(snn)
    with torch.no_grad():
        mean = sum(snn(x) for _ in range(L)) / L
        assert torch.equal(mean, ann(x))


@pytest.mark.parametrize("theta", [0.5, 1.0, 2.0])
def test_rate_converges_to_clip_within_one_over_T(theta):
    """IF neuron, V_1 = x (phi = 0), single spike, constant x: N_T = clamp(floor(T*x/theta), 0, T)
    exactly (dyadic x, exact arithmetic), hence |N_T/T - clip(x/theta, 0, 1)| < 1/T."""
    x = theta * torch.arange(-512, 1536 + 1, dtype=torch.float32) / 1024
    target = torch.clamp(x.double() / theta, 0, 1)
    worst = []
    for T in (1, 4, 16, 64, 256):
        N = run(IFNeuron(theta, 1, phi=0.0), [x] * T).sum(0).double() / theta
        assert torch.equal(N, torch.clamp(torch.floor(T * x.double() / theta), 0, T))
        err = (N / T - target).abs().max().item()
        assert err < 1.0 / T
        worst.append(err)
    assert worst == sorted(worst, reverse=True) and worst[-1] < 1 / 256


@pytest.mark.parametrize("phi", [0.0, 0.5])
def test_multi_spike_rate_is_finer_steprelu(phi):
    """Multi-spike neuron (at most L per step), constant x for T steps: N_T = clamp(floor(T*x/theta
    + phi), 0, L*T), i.e. the mean output is StepReLU with step theta/T and L*T levels."""
    theta, L = 0.5, 3
    x = theta * torch.arange(-256, (L + 1) * 256 + 1, dtype=torch.float32) / 256
    for T in (1, 2, 4, 8):
        N = run(IFNeuron(theta, L, phi=phi), [x] * T).sum(0).double() / theta
        assert torch.equal(N, torch.clamp(torch.floor(T * x.double() / theta + phi), 0, L * T))


def test_reset_and_stats():
    g = torch.Generator().manual_seed(0)
    m = IFNeuron(0.3, max_spikes=4, phi=0.5, leak=0.9)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    first = run(m, [a, b, a])
    assert m.neuron_steps == 3 * 35
    counts = (first / m.theta).round()          # outputs are n * theta
    assert m.spikes == float(counts.sum())
    assert m.max_n == float(counts.max()) and 1 <= m.max_n <= 4
    # after reset the same input sequence gives the same outputs (no state carried over)
    m(torch.randn(5, 7, generator=g) * 10)
    again = run(m, [a, b, a])
    assert torch.equal(first, again)
    m.reset_stats()
    assert m.spikes == 0 and m.neuron_steps == 0 and m.max_n == 0
    m.record = False
    run(m, [a])
    assert m.spikes == 0 and m.neuron_steps == 0


def test_stats_accumulate_as_device_tensors_and_count_levels():
    """Spike total (float64), peak and level histogram stay tensors until read; the
    histogram (count_levels) counts neuron-steps per n, its totals match the spike count."""
    g = torch.Generator().manual_seed(1)
    m = IFNeuron(0.2, max_spikes=5, phi=0.5, leak=0.8)
    xs = [torch.randn(4, 3, 6, 6, generator=g).contiguous(memory_format=torch.channels_last) for _ in range(4)]
    xs.append(torch.full_like(xs[0], -10.0))     # a silent last step: the peak is not the last step's
    m.count_levels = True
    outs = run(m, xs)
    assert float(outs[-1].abs().max()) == 0.0
    assert isinstance(m.spike_total, torch.Tensor) and m.spike_total.dtype == torch.float64
    assert isinstance(m.peak, torch.Tensor) and isinstance(m.hist, torch.Tensor)
    levels = (outs / m.theta).round().long()
    want = torch.bincount(levels.flatten(), minlength=6).tolist()
    assert m.spike_counts() == want and sum(want) == m.neuron_steps == 5 * 4 * 3 * 36
    assert sum(k * c for k, c in enumerate(want)) == m.spikes == float(levels.sum())
    assert m.max_n == float(levels.max()) and 2 <= m.max_n <= 5
    m.count_levels = False                  # off (the default): peak and total only
    m.reset_stats()
    assert m.spike_counts() == [0] * 6 and m.max_n == 0.0 and m.spikes == 0.0
    run(m, xs)
    assert m.hist is None and m.spike_counts() is None and m.max_n == float(levels.max())
    single = IFNeuron(0.2, max_spikes=1)
    n1 = run(single, xs) / single.theta
    assert single.spike_counts() == [int((n1 == 0).sum()), int((n1 == 1).sum())]


@pytest.mark.parametrize("max_spikes", [1, 3, 20, 300])
def test_level_counts_cpu_and_device_paths_agree(max_spikes):
    """level_counts: torch.bincount on the CPU; elsewhere (bincount reads back to the host)
    float64 histc over unit bins centred on the levels. Both give the exact counts, in any
    memory layout; the device path is run here on the CPU."""
    g = torch.Generator().manual_seed(max_spikes)
    n = torch.randint(0, max_spikes + 1, (5, 4, 7, 7), generator=g).float()
    want = torch.bincount(n.long().flatten(), minlength=max_spikes + 1)
    for t in (n, n.contiguous(memory_format=torch.channels_last), n[:, :, 1:, 2:], n.reshape(5, -1)):
        assert torch.equal(level_counts(t, max_spikes), torch.bincount(t.long().flatten(), minlength=max_spikes + 1))
        other = level_counts(t, max_spikes, device_kind="cuda")
        assert other.dtype == torch.float64
        assert torch.equal(other.long(), torch.bincount(t.long().flatten(), minlength=max_spikes + 1))
    assert torch.equal(level_counts(n, max_spikes), want)


def test_single_spike_max_n_is_one():
    m = IFNeuron(1.0, 1)
    run(m, [torch.tensor([5.0, 0.2])])
    assert m.max_n == 1.0 and m.spikes == 1


@pytest.mark.parametrize("max_spikes", [1, 3])
def test_surrogate_gradient_window(max_spikes):
    """surrogate=True: forward unchanged; d out / d x = 1 where 0 <= floor(u) <= max_spikes
    (u = x/theta + phi at t = 1), 0 elsewhere -- nonzero also for single-spike neurons."""
    theta = 0.5
    x = (theta * torch.arange(-16, 8 * (max_spikes + 3)) / 8).requires_grad_(True)
    m = IFNeuron(theta, max_spikes, phi=0.5)
    plain = run(m, [x.detach()])[0]
    m.surrogate = True
    m.reset()
    out = m(x)
    assert torch.equal(out.detach(), plain)
    out.sum().backward()
    lev = torch.floor(x.detach() / theta + 0.5)
    want = ((lev >= 0) & (lev <= max_spikes)).float()
    assert torch.equal(x.grad, want)
    assert float(x.grad.sum()) > 0


@pytest.mark.parametrize("kwargs, needle", [
    (dict(theta=0.0), "> 0"), (dict(theta=-1.0), "> 0"),
    (dict(theta=1.0, max_spikes=0), ">= 1"), (dict(theta=1.0, max_spikes=1.5), ">= 1"),
    (dict(theta=1.0, phi=1.0), "[0, 1)"), (dict(theta=1.0, phi=-0.5), "[0, 1)"),
    (dict(theta=1.0, leak=0.0), "(0, 1]"), (dict(theta=1.0, leak=1.5), "(0, 1]"),
    (dict(theta=1.0, leak=-0.5), "(0, 1]"),
    (dict(theta=1.0, leak_mode="lin"), "exp, linear"), (dict(theta=1.0, leak_mode=None), "exp, linear"),
])
def test_neuron_rejects_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError) as e:
        IFNeuron(**kwargs)
    assert needle in str(e.value)


@pytest.mark.parametrize("leak_mode", ["exp", "linear"])
@pytest.mark.parametrize("max_spikes, phi, leak", [(1, 0.0, 1.0), (8, 0.5, 0.9), (20, 0.0, 0.8)])
def test_in_place_updates_round_like_the_plain_float_recursion(max_spikes, phi, leak, leak_mode):
    """On random (non-dyadic) float32 inputs the in-place neuron rounds exactly as the plain
    recursion written op by op, u_1 = x/theta + phi, u_t = leak(r) + x/theta, at every step:
    the fused updates are a speed change only. The surrogate (differentiable) path computes
    the same values too."""
    g = torch.Generator().manual_seed(max_spikes)
    theta = torch.tensor(0.0731)
    xs = [torch.randn(3, 5, 7, 7, generator=g) * 0.4 for _ in range(12)]
    m = IFNeuron(theta, max_spikes=max_spikes, phi=phi, leak=leak, leak_mode=leak_mode)
    got = run(m, [x.contiguous(memory_format=torch.channels_last) for x in xs])
    last = m.u.clone()                     # the residual too: a 1-ulp change rarely flips a spike
    m.surrogate = True
    assert torch.equal(run(m, xs), got)
    assert torch.equal(m.u, last)
    c = 1.0 - leak

    def leaked(r):
        return leak * r if leak_mode == "exp" else r - torch.clamp(r, -c, c)
    u, want = None, []
    for x in xs:
        u = x / theta + phi if u is None else leaked(u) + x / theta
        n = torch.clamp(torch.floor(u), 0, max_spikes)
        u = u - n
        want.append(n * theta)
    assert torch.equal(got, torch.stack(want))


def test_spike_total_is_exact_above_float32_integers():
    """2**24 + 1 spikes in one step: a float32 sum would give 2**24 (the count a layer of a
    smoke batch reaches); the total is kept exactly."""
    n = 2 ** 24 + 1
    neuron = IFNeuron(1.0, max_spikes=1)
    neuron(torch.ones(n))
    assert neuron.spikes == float(n)


# ---------------------------------------------------------------- linear leak (ICACT 2023)

def test_linear_leak_by_hand():
    """theta = 0.5, phi = 0, leak = 0.75 (c = 0.25 in units of theta), at most 2 spikes;
    x_t/theta = 1.5, 0, .125, 0, -.625, 0, 0, 2.75. Residual r, leaked r' = r -+ c toward 0:
    1.5 -> n=1 r=.5 | .25 -> 0 r=.25 | 0+.125 -> 0 r=.125 | floored: 0 (not -.125) r=0 |
    0-.625 -> r=-.625 | -.375 | -.125 | ceiled: 0 (not +.125) +2.75 -> n=2 r=.75."""
    m = IFNeuron(0.5, max_spikes=2, phi=0.0, leak=0.75, leak_mode="linear")
    xs = [torch.tensor([v * 0.5]) for v in (1.5, 0.0, 0.125, 0.0, -0.625, 0.0, 0.0, 2.75)]
    outs, res = outputs_and_residuals(m, xs)
    assert outs == [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert res == [0.5, 0.25, 0.125, 0.0, -0.625, -0.375, -0.125, 0.75]
    exp = IFNeuron(0.5, max_spikes=2, phi=0.0, leak=0.75, leak_mode="exp")
    run(exp, xs[:2])
    assert float(exp.u) == 0.375                       # exp: .75 * .5, not .5 - .25


@pytest.mark.parametrize("r", [0.125, 0.25, -0.125, -0.25, 0.0])
def test_linear_leak_never_crosses_reset(r):
    """A residual within c of 0 leaks to exactly 0 (either sign), never past it; the
    exponential leak shrinks the same residual without crossing 0 either."""
    for mode, want in (("linear", 0.0), ("exp", 0.5 * r)):
        m = IFNeuron(1.0, max_spikes=1, phi=0.0, leak=0.5 if mode == "exp" else 0.75, leak_mode=mode)
        run(m, [torch.tensor([r])])            # t = 1: no leak, no spike (r < 1): residual r
        assert float(m.u) == r
        with torch.no_grad():
            m(torch.zeros(1))
        assert float(m.u) == want
        assert float(m.u) * r >= 0             # same side of the reset value, or on it


@pytest.mark.parametrize("max_spikes, phi", [(1, 0.5), (4, 0.0)])
def test_leak_one_is_the_same_neuron_in_both_modes(max_spikes, phi):
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(4, 3, 5, 5, generator=g) * 0.3 for _ in range(10)]
    a = IFNeuron(0.0731, max_spikes, phi, leak=1.0, leak_mode="exp")
    b = IFNeuron(0.0731, max_spikes, phi, leak=1.0, leak_mode="linear")
    out = run(a, xs)
    assert torch.equal(out, run(b, xs))
    b.surrogate = True
    assert torch.equal(out, run(b, xs))


def test_linear_leak_surrogate_gradient():
    """The differentiable path has the leak's own derivative: d r'/d r = 1 outside [-c, c]
    (the leak subtracts a constant), 0 inside (the potential is set to 0). Through the
    neuron: residuals below the spike window (n has no gradient there, so d r/d x = 1)."""
    m = IFNeuron(1.0, max_spikes=4, phi=0.0, leak=0.75, leak_mode="linear")
    r = torch.tensor([0.125, 0.5, -0.125, -0.5], requires_grad=True)
    m._leaked(r).sum().backward()
    assert r.grad.tolist() == [0.0, 1.0, 0.0, 1.0]
    m.surrogate, m.record = True, False
    x1 = torch.tensor([-0.125, -0.5], requires_grad=True)
    m.reset()
    m(x1)
    out = m(torch.full((2,), 1.5))   # u_2 = r' + 1.5 in [1, 2): one spike, inside the window
    out.sum().backward()
    assert x1.grad.tolist() == [0.0, 1.0]


def test_extra_repr_shows_leak_mode():
    assert "leak_mode=linear" in repr(IFNeuron(1.0, leak=0.9, leak_mode="linear"))
    assert "leak_mode=exp" in repr(IFNeuron(1.0))


# ---------------------------------------------------------------- per-channel thresholds

def _per_channel_inputs(shape, T, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(*shape, generator=g) * 0.4 for _ in range(T)]
    return [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in xs]


@pytest.mark.parametrize("shape", [(3, 4), (3, 4, 5, 5), (3, 4, 6)])
@pytest.mark.parametrize("leak_mode", ["exp", "linear"])
@pytest.mark.parametrize("max_spikes, phi, leak", [(1, 0.0, 1.0), (1, 0.5, 0.8), (6, 0.5, 0.9), (6, 0.0, 1.0)])
def test_per_channel_neuron_is_one_scalar_neuron_per_channel(shape, max_spikes, phi, leak, leak_mode):
    """theta [C]: channel c computes bit for bit what IFNeuron(theta_c) computes on it -- outputs,
    residuals and spike statistics, in every mode (single/multi-spike, V0, both leaks),
    for linear ([N, C]), conv ([N, C, H, W], channels-last) and 1-D conv ([N, C, L]) outputs,
    on the in-place and the surrogate path."""
    C = shape[1]
    theta = torch.tensor([0.0731, 0.31, 0.0193, 0.77])[:C]
    xs = _per_channel_inputs(shape, 9, seed=max_spikes * 7 + C)
    m = IFNeuron(theta, max_spikes=max_spikes, phi=phi, leak=leak, leak_mode=leak_mode)
    assert m.per_channel and m.theta.shape == (C,)
    m.count_levels = True
    got = run(m, xs)
    last = m.u.clone()
    spikes, steps = 0.0, 0
    for c in range(C):
        one = IFNeuron(theta[c], max_spikes=max_spikes, phi=phi, leak=leak, leak_mode=leak_mode)
        assert not one.per_channel
        one.count_levels = True
        want = run(one, [x[:, c] for x in xs])
        assert torch.equal(got[:, :, c], want), c
        assert torch.equal(last[:, c], one.u), c
        spikes, steps = spikes + one.spikes, steps + one.neuron_steps
    assert m.spikes == spikes > 0 and m.neuron_steps == steps
    levels = torch.round(got / m.theta_for(got[0])).long()   # got: [T, N, C, ...]
    assert m.spike_counts() == torch.bincount(levels.flatten(), minlength=max_spikes + 1).tolist()
    assert m.max_n == float(levels.max())
    m.surrogate = True
    assert torch.equal(run(m, xs), got) and torch.equal(m.u, last)


def test_per_channel_thresholds_act_along_axis_1_not_the_last_axis():
    """A conv output whose width equals its channel count: theta must act on the channel
    axis (dim 1); plain broadcasting of a [C] tensor would act on the width instead."""
    m = IFNeuron(torch.tensor([1.0, 4.0]), max_spikes=8)
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = 2.0            # channel 0: 2 / 1 -> 2 spikes of 1.0 everywhere
    x[0, 1] = 4.0            # channel 1: 4 / 4 -> 1 spike of 4.0 everywhere
    out = run(m, [x])[0]
    assert torch.equal(out[0, 0], torch.full((2, 2), 2.0))
    assert torch.equal(out[0, 1], torch.full((2, 2), 4.0))
    assert m.spikes == 4 * 2 + 4 * 1


def test_per_channel_initial_potential_is_a_fraction_of_each_channels_theta():
    """phi = 0.5 starts channel c at theta_c / 2: with no input the residual is 0.5 in units
    of each channel's own theta; an input of theta_c / 2 then gives one spike of theta_c."""
    theta = torch.tensor([0.25, 2.0, 8.0])
    m = IFNeuron(theta, max_spikes=1, phi=0.5)
    outs = run(m, [torch.zeros(1, 3), theta.reshape(1, 3) / 2])
    assert torch.equal(outs[0], torch.zeros(1, 3))
    assert torch.equal(outs[1], theta.reshape(1, 3))


def test_per_channel_linear_leak_is_in_units_of_each_channels_theta():
    """Linear leak 0.75: the residual moves toward 0 by (1 - 0.75) * theta_c, a different
    absolute amount per channel. Inputs 0.5 * theta_c, then 0: residuals .5 -> .25 (units)."""
    theta = torch.tensor([0.5, 4.0])
    m = IFNeuron(theta, max_spikes=1, phi=0.0, leak=0.75, leak_mode="linear")
    run(m, [theta.reshape(1, 2) * 0.5, torch.zeros(1, 2)])
    assert m.u.tolist() == [[0.25, 0.25]]
    assert (m.u * theta).tolist() == [[0.125, 1.0]]     # absolute: 0.25 - .125, 2 - 1


def test_per_channel_thresholds_must_match_the_input_channels():
    m = IFNeuron(torch.tensor([1.0, 2.0, 3.0]))
    for bad in (torch.zeros(2, 4), torch.zeros(2, 2, 3, 3), torch.zeros(3)):
        with pytest.raises(ValueError, match="3 per-channel thresholds"):
            run(m, [bad])


@pytest.mark.parametrize("theta, needle", [
    (torch.tensor([1.0, 0.0]), "channel 1"), (torch.tensor([-1.0, 2.0, -3.0]), "2 of 3"),
    (torch.tensor([1.0, float("nan")]), "channel 1"), (torch.tensor([float("inf"), 1.0]), "channel 0"),
    (torch.ones(2, 3), "shape [C]"), (torch.ones(1, 2), "shape [C]"), (torch.ones(0), "shape [C]"),
])
def test_per_channel_theta_rejects_bad_values_and_shapes(theta, needle):
    with pytest.raises(ValueError) as e:
        IFNeuron(theta)
    assert needle in str(e.value)


def test_one_element_and_column_thresholds():
    """A one-element tensor is one threshold for the layer (as before); [C, 1, 1] is [C]."""
    one = IFNeuron(torch.tensor([0.3]))
    assert not one.per_channel and one.theta.shape == () and float(one.theta) == float(torch.tensor(0.3))
    col = IFNeuron(torch.tensor([1.0, 2.0]).reshape(2, 1, 1))
    assert col.per_channel and col.theta.tolist() == [1.0, 2.0]
    assert "theta=[2 channels, 1..2]" in repr(col) and "theta=0.3" in repr(one)
