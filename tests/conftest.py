"""Shared helpers for the fast tests: random networks with realistic BatchNorm
statistics, per-layer thresholds fitted to the activations, tiny loaders, a
record of the largest ANN/SNN relative error seen by the exactness tests,
``run_if`` (one skip rule for what a test needs from the machine), and a session
guard that sends runs and MLflow to a temporary folder and fails the suite if a
test wrote into the repository anyway.

Note on batch sizes (CPU, MKL/oneDNN): a conv/linear layer's float32 result for
one image can depend on how many images share the batch (batches of 1-2 rows,
or < 16 rows for linear layers with >= 512 inputs, take other GEMM kernels).
Tests that compare runs with different batch sizes therefore use layer sizes and
batch sizes outside those cases and check that premise explicitly, so that a
failure there points at the platform, not at annsnn.
"""
from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from annsnn import QCFS, StepReLU

# The networks here are tiny: one thread is fastest, and with two OpenMP threads on a busy
# 2-core machine a small conv takes ~60x longer (spin-waiting threads).
torch.set_num_threads(1)

# (test id, max |s - a| / max |a|) for every exactness check; printed at the end.
EXACTNESS_ERRORS: list[tuple[str, float]] = []
# (test id, elements where the unfolded ANN's output differs from the folded one, elements)
UNFOLDED_DIFFS: list[tuple[str, int, int]] = []


def record_rel_error(test_id: str, s: torch.Tensor, a: torch.Tensor) -> float:
    """Relative error max|s - a| / max|a| of SNN output ``s`` against folded-ANN output ``a``."""
    denom = float(a.abs().max())
    err = float((s - a).abs().max()) / denom if denom > 0 else float((s - a).abs().max())
    EXACTNESS_ERRORS.append((test_id, err))
    return err


def pytest_sessionfinish(session):
    """Under pytest-xdist (./reproduce.sh test runs two workers): a worker hands what it
    recorded to the controller, whose terminal summary prints it."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["annsnn"] = json.dumps({"exact": EXACTNESS_ERRORS, "unfolded": UNFOLDED_DIFFS, "writes": REPO_WRITES})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    data = json.loads(getattr(node, "workeroutput", {}).get("annsnn", "{}"))
    EXACTNESS_ERRORS.extend(tuple(x) for x in data.get("exact", []))
    UNFOLDED_DIFFS.extend(tuple(x) for x in data.get("unfolded", []))
    REPO_WRITES.extend(p for p in data.get("writes", []) if p not in REPO_WRITES)


def pytest_terminal_summary(terminalreporter):
    if REPO_WRITES:
        terminalreporter.write_sep("=", "paths in the repository created or modified during the tests")
        for p in REPO_WRITES:
            terminalreporter.write_line(p)
    if EXACTNESS_ERRORS:
        worst = max(EXACTNESS_ERRORS, key=lambda p: p[1])
        terminalreporter.write_sep("=", "ANN/SNN exactness at T = 1")
        terminalreporter.write_line(
            f"exactness checks: {len(EXACTNESS_ERRORS)}; largest relative error "
            f"max|snn - folded ann| / max|folded ann| = {worst[1]:.3e} (in {worst[0]})")
    if UNFOLDED_DIFFS:
        n_cases = sum(1 for _, d, _ in UNFOLDED_DIFFS if d)
        n_diff = sum(d for _, d, _ in UNFOLDED_DIFFS)
        n_all = sum(n for _, _, n in UNFOLDED_DIFFS)
        terminalreporter.write_line(
            f"unfolded ANN (BatchNorm not folded) differs from the folded ANN in {n_diff} of "
            f"{n_all} output elements, in {n_cases} of {len(UNFOLDED_DIFFS)} networks "
            "(not a reference; shown because the folding point matters)")


# ----------------------------------------------------------------------------- what this machine has

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class PostgresTools(NamedTuple):
    bindir: Path
    as_user: list[str]   # command prefix that runs a binary as the 'postgres' user ([] if not root)
    uid: int | None
    gid: int | None


def find_postgres() -> PostgresTools | str:
    """Debian's PostgreSQL server binaries and how to run them, or why they cannot run here."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        return "PostgreSQL binaries absent (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
    bindir = Path(bins[-1]).parent
    if os.geteuid() != 0:
        return PostgresTools(bindir, [], None, None)
    try:  # the server refuses to run as root
        pw = pwd.getpwnam("postgres")
    except KeyError:
        return "running as root and there is no 'postgres' user to run the server"
    runuser = shutil.which("runuser")
    if not runuser:
        return "running as root and runuser (util-linux) is missing"
    return PostgresTools(bindir, [runuser, "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid)


def _missing(fashion_mnist: bool = False, postgres: bool = False, gpu: bool = False,
             paths: tuple = ()) -> list[str]:
    why = []
    if fashion_mnist and not FASHION_MNIST_DIR.is_dir():
        why.append(f"Fashion-MNIST absent ({FASHION_MNIST_DIR}): apt-get install dataset-fashion-mnist")
    if postgres and isinstance(pg := find_postgres(), str):
        why.append(pg)
    if gpu and not torch.cuda.is_available():
        why.append("needs a CUDA GPU")
    why += [f"{p} absent" for p in paths if not Path(p).exists()]
    return why


def run_if(*, fashion_mnist: bool = False, postgres: bool = False, gpu: bool = False,
           paths: tuple = ()) -> pytest.MarkDecorator:
    """One skip condition for what a test needs from the machine, with the reason.

    ``paths``: files or folders that must exist (offline dataset copies)."""
    why = _missing(fashion_mnist, postgres, gpu, tuple(paths))
    return pytest.mark.skipif(bool(why), reason="; ".join(why) or "all present")


# ----------------------------------------------------------------------------- the repo stays clean

_CACHES = (".venv", ".pytest_cache", ".hypothesis", ".data")  # .data: the datasets' decode cache


REPO_WRITES: list[str] = []   # paths the session wrote into the repo (shown at the end)


def repo_changes() -> dict[str, tuple] | None:
    """Untracked, ignored and modified paths of the working tree -> (status, mtime, size),
    tool caches left out; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored",
                              "--", ".", ":(exclude).venv"],
                             cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    state = {}
    for entry in filter(None, out.split("\0")):
        status, path = entry[:2], entry[3:]
        parts = path.rstrip("/").split("/")
        if parts[0] in _CACHES or "__pycache__" in parts or any(p.endswith(".egg-info") for p in parts):
            continue
        try:
            st = (REPO / path).stat()
            state[path] = (status, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            state[path] = (status, None, None)
    return state


@pytest.fixture(autouse=True)
def _keep_thread_count():
    """Each test starts with the suite's thread count. The in-process bench runs call
    torch.set_num_threads(preset threads); left behind, 2 threads make this CPU's GEMM
    results depend on the batch size (AMD EPYC, batches of 5, 7, 10 rows), which broke the
    batch-size premise of test_convert's calibration tests when they ran after test_bench."""
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture(scope="session", autouse=True)
def repo_stays_clean(tmp_path_factory):
    """Runs, MLflow and outputs go to a temporary folder, and the session fails if it wrote
    into the repository anyway (ANNSNN_REPO_CHECK=warn: only list the paths, for a working
    tree that people edit while the tests run)."""
    out = tmp_path_factory.mktemp("outputs")
    env = {"ANNSNN_RUNS_DIR": str(out / "runs"), "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    before = repo_changes()
    yield out
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    after = repo_changes()
    if before is None or after is None:
        return
    REPO_WRITES.extend(sorted(p for p, v in after.items() if before.get(p) != v))
    if REPO_WRITES and os.environ.get("ANNSNN_REPO_CHECK") != "warn":
        pytest.fail(f"the tests wrote into the repository: {', '.join(REPO_WRITES[:20])}", pytrace=False)


# ----------------------------------------------------------------------------- loaders

def tiny_loader(x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 8,
                shuffle: bool = False) -> DataLoader:
    if y is None:
        y = torch.zeros(x.shape[0], dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=g)


# ----------------------------------------------------------------------------- networks

def randomize_bn(model: nn.Module, gen: torch.Generator, x: torch.Tensor | None = None,
                 train_passes: int = 2) -> nn.Module:
    """Random BatchNorm running stats and affine parameters; then ``train_passes``
    train-mode forward passes on ``x`` so the running stats mix in realistic ones.
    Returns the model in eval mode."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.3)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=gen) * 1.2 + 0.4)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.3)
                m.momentum = 0.3
        if x is not None and train_passes:
            model.train()
            for _ in range(train_passes):
                model(x)
    return model.eval()


def fit_thresholds(model: nn.Module, x: torch.Tensor, gen: torch.Generator,
                   low: float = 0.3, high: float = 1.0) -> int:
    """Give each StepReLU/QCFS a random threshold on the scale of its own input.

    Runs one eval-mode pass; a forward pre-hook sets each activation's threshold
    from its input before it fires (so later layers see the new thresholds):
    theta = q90(input) / L * U(low, high), an arbitrary float (not a power of two),
    which keeps every layer active with several levels in use.
    Returns the number of activation layers whose input was never positive (dead layers:
    a random network can have them; tests on such a network would be vacuous).
    """
    dead = []

    def pre(mod, args):
        inp = args[0].detach().flatten().double()
        q = float(torch.quantile(inp[:100000], 0.9))
        if not q > 0:
            q = float(inp.max())
        if not q > 0:
            q = 1.0
            dead.append(mod)
        f = low + (high - low) * float(torch.rand((), generator=gen))
        theta = q / mod.L * f
        with torch.no_grad():
            if isinstance(mod, QCFS):
                mod.lam.fill_(theta * mod.L)
            else:
                mod.theta.fill_(theta)

    hooks = [m.register_forward_pre_hook(pre) for m in model.modules()
             if isinstance(m, (StepReLU, QCFS))]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return len(dead)


class Block(nn.Module):
    """A residual block written here (independent of annsnn.models)."""

    def __init__(self, act, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.a1 = act()
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False),
                                      nn.BatchNorm2d(cout))
        else:
            self.down = nn.Identity()
        self.a2 = act()

    def forward(self, x):
        return self.a2(self.b2(self.c2(self.a1(self.b1(self.c1(x))))) + self.down(x))


class SmallResNet(nn.Module):
    def __init__(self, act, cin, widths, strides, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(cin, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), act())
        blocks, c = [], widths[0]
        for w, s in zip(widths, strides):
            blocks.append(Block(act, c, w, s))
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def random_net(kind: str, act, gen: torch.Generator, depth: int, cin: int = 3, size: int = 8,
               classes: int = 10) -> tuple[nn.Module, tuple[int, ...]]:
    """A random network of one of four families; returns (model, input shape without batch)."""
    def ch():
        return int(torch.randint(2, 9, (), generator=gen))

    def flag():
        return bool(torch.randint(0, 2, (), generator=gen))

    if kind == "conv":  # plain conv stack
        layers, c, s = [], cin, size
        for i in range(depth):
            co, k = ch(), (1, 3)[int(flag())]
            stride = 2 if (s > 2 and flag()) else 1
            layers += [nn.Conv2d(c, co, k, stride, k // 2, bias=flag()), nn.BatchNorm2d(co), act()]
            c, s = co, (s + 2 * (k // 2) - k) // stride + 1
        layers += [nn.Flatten(), nn.Linear(c * s * s, classes)]
        return nn.Sequential(*layers), (cin, size, size)
    if kind == "vgg":  # conv blocks with average pooling, hidden linear layers, dropout
        layers, c, s = [], cin, size
        for i in range(depth):
            co = ch()
            layers += [nn.Conv2d(c, co, 3, 1, 1, bias=flag()), nn.BatchNorm2d(co), act()]
            c = co
            if s >= 2 and flag():
                layers.append(nn.AvgPool2d(2))
                s //= 2
        hidden = int(torch.randint(4, 17, (), generator=gen))
        layers += [nn.Flatten(), nn.Linear(c * s * s, hidden, bias=flag()), nn.BatchNorm1d(hidden),
                   act(), nn.Dropout(0.5), nn.Linear(hidden, hidden), act(),
                   nn.Linear(hidden, classes)]
        return nn.Sequential(*layers), (cin, size, size)
    if kind == "resnet":  # residual blocks, downsampling shortcuts (1x1 conv + BN)
        widths = [ch() for _ in range(depth)]
        strides = [2 if (i > 0 and flag()) else 1 for i in range(depth)]
        return SmallResNet(act, cin, widths, strides, classes), (cin, size, size)
    if kind == "mlp":
        dims = [cin * size * size] + [int(torch.randint(4, 25, (), generator=gen)) for _ in range(depth)]
        layers = [nn.Flatten()]
        for a, b in zip(dims, dims[1:]):
            layers += [nn.Linear(a, b, bias=flag()), nn.BatchNorm1d(b), act()]
        layers.append(nn.Linear(dims[-1], classes))
        return nn.Sequential(*layers), (cin, size, size)
    raise ValueError(kind)


def steprelu_factory(gen: torch.Generator, L: int, phi: float, per_layer_L: bool = False,
                     learn_theta: bool = False):
    """Zero-argument activation factory; thresholds are set later by ``fit_thresholds``."""
    def make():
        lv = int(torch.randint(1, L + 1, (), generator=gen)) if per_layer_L else L
        return StepReLU(theta=1.0, L=lv, phi=phi, learn_theta=learn_theta)
    return make

