"""The interop package without its extras: it imports annsnn only, imports the optional
packages inside the functions that use them, and a call without them says in one line
what to install."""
import ast
import sys
from pathlib import Path

import pytest
import torch

import interop
from interop._deps import need

PKG = Path(interop.__file__).resolve().parent
OPTIONAL = {"nir", "nirtorch", "snntorch", "neurobench", "h5py"}
UPWARD = {"tracking", "lightning_modules", "bench", "studies", "lightning"}


def _top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:                       # module level only, not inside functions
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _all_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted(PKG.glob("*.py")), ids=lambda p: p.name)
def test_optional_packages_are_imported_lazily_and_nothing_upward(path):
    assert not (_top_level_imports(path) & OPTIONAL), path.name
    assert not (_all_imports(path) & UPWARD), path.name


def test_a_call_without_the_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "nir", None)     # import nir -> ImportError
    with pytest.raises(interop.MissingExtraError) as err:
        interop.to_nir(torch.nn.Sequential(), (1,))
    msg = str(err.value)
    assert "\n" not in msg and "'nir'" in msg and "pip install -e '.[interop]'" in msg
    monkeypatch.setitem(sys.modules, "neurobench", None)
    with pytest.raises(interop.MissingExtraError) as err:
        need("neurobench", "NeuroBench's metrics")
    assert "--no-deps neurobench==2.3.0" in str(err.value)
