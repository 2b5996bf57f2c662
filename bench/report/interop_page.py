"""The interop stage's page (interop.md) and its section of summary.md, from interop.json
alone: per method the NIR export and its check in snnTorch, and NeuroBench's own metrics
beside the suite's counts (docs/interop.md). Plain data in, text out: no torch.
"""
from __future__ import annotations

from tracking.machine import class_line

PAGE_FILE = "interop.md"
DOCS = "../../docs/interop.md"   # from results/<preset>/

RELATION = (
    "How NeuroBench's figures relate to the suite's ([docs/interop.md](" + DOCS + "#neurobench-metrics)): "
    "**effective MACs** are the analog first layer paid at every step, the suite's first-layer "
    "MACs x t less the zero inputs and the zero-padded border taps that the suite's dense count "
    "includes; **effective ACs** are the suite's SOPs (spikes x fan-out), counted per actual "
    "synapse where the suite takes a layer's average fan-out, and a step that carries n > 1 "
    "spikes is one operation, counted as a MAC, where the suite counts n ACs (its energy at "
    "0.9 pJ each, and its binary sub-steps, t x the largest n, the latency on hardware that "
    "sends only binary spikes); **activation sparsity** is 1 minus the share of neuron-steps "
    "with any spike; **footprint** the bytes of the SNN's parameters and buffers; **connection "
    "sparsity** the share of zero weights. NeuroBench reports no energy: 4.6 pJ x effective "
    "MACs + 0.9 pJ x effective ACs is the suite's energy model on its counts (single-spike "
    "methods).")


def _t_key(t) -> str:
    return str(int(t))


def _ts(data: dict, m: dict) -> list[tuple[int, bool]]:
    """(t, is the operating point) in table order: the operating point first, then t = 1, 4, 32."""
    op = m.get("operating_t")
    out = [(int(op), True)] if op else []
    out += [(int(t), False) for t in data["ts"] if t != op]
    return out


def _name(m: dict) -> str:
    return f"`{m['method']}` (leak {m['leak']:g}" + (f", {m['leak_mode']}" if m["leak"] != 1.0 else "") + ")"


def status_line(m: dict, versions: dict) -> str:
    """What happened to one method's SNN: exported and verified in snnTorch, exported but
    different there, or not exported (the one-line reason)."""
    ex = m["export"]
    snntorch = f"snnTorch {versions.get('snntorch', '?')}"
    if ex["status"] == "refused":
        return f"not exported: {ex['why']}"
    rt = m["roundtrip"]
    n, same = rt["n_images"], rt["identical"]
    at = [f"{same[_t_key(t)]}/{n} at t = {t}" for t in rt["ts"]]
    op = m.get("operating_t")
    if op:
        at.append(f"{same[_t_key(op)]}/{n} at the operating point t = {op}")
    what = (f"identical predictions on {', '.join(at)} ({rt['identical_all_t']}/{n} at every "
            f"t <= {rt['T']}); spike counts equal in {rt['spike_cells_equal']:,} of "
            f"{rt['spike_cells']:,} (image, layer, step) cells"
            + ("" if op else "; no operating point (not within 1 point of its ANN on validation by T_max)"))
    if ex["status"] == "verified":
        return f"exported and verified in {snntorch} ({ex['nodes']} NIR nodes): {what}"
    return f"exported ({ex['nodes']} NIR nodes), but {snntorch} differs: {what}"


def records_line(m: dict) -> str:
    """Whether the SNN converted again is the run's: right/wrong per image as its records say."""
    s = m.get("same_as_records")
    if not s:
        return ""
    return (f" Converted again from the run's checkpoint and calibration images, it is right or "
            f"wrong as the run's records say on {s['agree']}/{s['images']} images at every t <= {s['t_max']}.")


def verification_lines(data: dict) -> list[str]:
    out = []
    for m in data["methods"]:
        line = f"- {_name(m)}: {status_line(m, data['versions'])}.{records_line(m)}"
        if m.get("neurobench_error"):
            line += f" NeuroBench: {m['neurobench_error']}."
        out.append(line)
    return out


def _num(v, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def neurobench_table(data: dict) -> str:
    head = ["method", "leak", "t", "effective MACs (NeuroBench)", "first-layer MACs x t (suite)",
            "effective ACs (NeuroBench)", "SOPs (suite)", "activation sparsity (NeuroBench)",
            "footprint (bytes)", "connection sparsity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in data["methods"]:
        nb = m.get("neurobench") or {}
        suite = m.get("suite") or {}
        if not nb:
            continue
        for t, is_op in _ts(data, m):
            n, s = nb.get(_t_key(t), {}), suite.get(_t_key(t), {})
            lines.append("| " + " | ".join([
                m["method"], f"{m['leak']:g}", f"{t} (operating point)" if is_op else str(t),
                _num(n.get("effective_macs")), _num(s.get("first_layer_macs")),
                _num(n.get("effective_acs")), _num(s.get("sops")),
                _num(n.get("activation_sparsity"), 4), _num(n.get("footprint_bytes")),
                _num(n.get("connection_sparsity"), 4)]) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def section_body(data: dict) -> str:
    """The section's text without its heading: the lines per method, the table, the relation."""
    v = data["versions"]
    rt_T = sorted({m["roundtrip"]["T"] for m in data["methods"] if m.get("roundtrip")})
    table = neurobench_table(data)
    return (f"Seed {data['seed']}. Each method's SNN written as a NIR graph (nir {v.get('nir', '?')}), "
            f"read back by snnTorch {v.get('snntorch', '?')}'s own NIR importer and run beside the "
            f"suite's simulation on the first {data['images']} test images"
            + (f" for T = {', '.join(map(str, rt_T))} steps" if rt_T else "")
            + f", predictions compared at every t and spike counts per image, layer and step "
            f"([how](" + DOCS + "#round-trip-in-snntorch)):\n\n"
            + "\n".join(verification_lines(data)) + "\n\n"
            + (f"NeuroBench {v.get('neurobench', '?')}'s own metrics, per image on the first "
               f"{data['neurobench_images']} test images (batches of {data['batch_size']}), at each "
               f"method's operating point (the first t within 1 point of its ANN on validation) and "
               f"at t = {', '.join(map(str, data['ts']))}, beside the suite's own counts on the same "
               f"images:\n\n{table}\n\n{RELATION}\n" if table else
               "NeuroBench measured no method.\n"))


def section(data: dict | None) -> str:
    """The summary's section ('' without interop data)."""
    if not data:
        return ""
    return "## Interoperability: NIR export, snnTorch, NeuroBench\n\n" + section_body(data) + "\n"


def render(data: dict) -> str:
    """interop.md: the section, where the NIR files are, and the provenance."""
    v = data["versions"]
    shown = ", ".join(f"{k} {v[k]}" for k in ("nir", "nirtorch", "snntorch", "neurobench", "h5py", "torch")
                      if k in v)
    machine = data.get("machine") or {}
    return (f"# {data['preset']}: interoperability (seed {data['seed']})\n\n"
            + section_body(data)
            + f"\nThe NIR files are in runs/{data['preset']}/seed{data['seed']}/interop/ and on each "
            f"method's MLflow run (`<method>-leak<l>`, artifact `interop/`), with NeuroBench's "
            f"figures as `neurobench/*` metrics (step = t).\n\n"
            f"Commit `{data['commit']}`, {shown}"
            + (f", on {class_line(machine)}" if "cpu_model" in machine else "")
            + f", wall time {data['wall_seconds']:.0f} s.\n")
