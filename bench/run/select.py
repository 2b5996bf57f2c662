"""``python -m bench select --preset P``: each method's hyperparameters chosen on validation.

A comparison is tilted when one method runs at a setting its authors would not pick (QCFS at
L = 8 where Bu et al. train CIFAR-10 with L = 4) or at a setting nobody chose (StepReLU's
theta, L, phi). So a preset may list, per activation, a small set of candidate settings
(``selection.candidates``), and this command trains each with the preset's own schedule and
epochs (the same training budget for every ANN) on a dedicated selection seed, whose
networks are never evaluated on test. The rule (``selection.rule``) picks one per
activation from validation figures only:

- ``ann_val``: the highest validation accuracy of the BatchNorm-folded ANN;
- ``snn_val_op``: the highest validation accuracy of the converted SNN (the activation's
  first method in the preset) at its own operating point (first t within 1 point of its ANN
  on validation), ties to the smaller t.

The record (selection.json and selection.md: every candidate, its validation figures, its
learned thresholds per layer, its gap to the ReLU ANN, the choice) is written beside the
run's results; the preset then states the chosen values in ``activations`` (a test checks
that the committed preset and the committed selection agree). The first candidate of each
activation is its paper's setting, trained and shown whether chosen or not.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch

import tracking
from annsnn import QCFS, StepReLU, convert, fold_bn, simulate
from annsnn.recipes import get_recipe
from lightning_modules.callbacks import accuracy, head
from tracking.machine import class_line, machine_class

from ..costs import first_within
from . import deterministic, precision
from .runner import PROJECT_ROOT, datamodule, ann_module, work_dir

RULES = ("ann_val", "snn_val_op")


def learned_thresholds(model: torch.nn.Module) -> list[float]:
    """Each activation's range as trained, per layer: QCFS's lambda (its threshold is
    lambda / L), StepReLU's theta."""
    out = []
    for m in model.modules():
        if isinstance(m, (QCFS, StepReLU)):
            th = (m.threshold() * m.L if isinstance(m, QCFS) else m.threshold()).detach().reshape(-1)
            out += [round(float(v), 6) for v in th]
    return out


def _candidates(cfg: dict) -> list[tuple[str, str, dict]]:
    """(activation, label, knobs) for every candidate, the ReLU ANN first (the gap reference)."""
    sel = cfg["selection"]
    out = [("relu", "relu", dict(cfg["activations"].get("relu", {})))]
    for act, cands in sel["candidates"].items():
        for c in cands:
            c = dict(c)
            label = str(c.pop("label", ",".join(f"{k}={v}" for k, v in c.items())))
            out.append((act, label, c))
    return out


def _method_for(cfg: dict, act: str) -> str | None:
    return next((m for m in cfg["methods"] if get_recipe(m).activation == act), None)


def train_one(cfg: dict, act: str, knobs: dict, seed: int, prec: str, progress: bool) -> tuple:
    """(module, datamodule) after training the preset's schedule with ``knobs`` for ``act``."""
    c = dict(cfg, activations={**cfg["activations"], act: {**cfg["activations"].get(act, {}), **knobs}})
    L.seed_everything(seed, workers=True)
    dm = datamodule(c, seed, 1, "fit")    # test_subset 1: the test split is not read here
    module = ann_module(c, act, dm.info)
    tc = cfg["trainer"]
    trainer = L.Trainer(max_epochs=cfg["train"]["epochs"], accelerator=tc["accelerator"], devices=1,
                        precision=prec, logger=False, deterministic=bool(cfg.get("deterministic")), enable_checkpointing=False,
                        enable_progress_bar=progress, enable_model_summary=False,
                        limit_train_batches=tc["limit_train_batches"], limit_val_batches=tc["limit_val_batches"],
                        num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    return module, dm


def evaluate_one(cfg: dict, act: str, module, dm) -> dict:
    """Validation figures of one trained candidate (no test image is read)."""
    model = module.model.eval()
    out = {"ann_val_acc": accuracy(fold_bn(model), dm.val_dataloader()),
           "learned_thresholds": learned_thresholds(model)}
    method = _method_for(cfg, act)
    if method and cfg["selection"]["rule"] == "snn_val_op":
        snn = convert(model, method, dm.calib_dataloader())
        res = simulate(snn, head(dm.val_dataloader(), cfg["val_subset"]), cfg["T_max"], ann=model, progress=False)
        t = first_within(res.acc, res.ann_acc, 1.0)
        out.update(method=method, snn_val_acc=res.acc, snn_val_ann_acc=res.ann_acc, snn_val_op=t,
                   snn_val_at_op=res.acc[t - 1] if t else None)
    return out


def choose(cfg: dict, results: list[dict]) -> dict[str, str]:
    """activation -> the chosen candidate's label, by the preset's rule."""
    rule = cfg["selection"]["rule"]
    chosen = {}
    for act in cfg["selection"]["candidates"]:
        cands = [r for r in results if r["activation"] == act]
        if rule == "ann_val":
            best = max(cands, key=lambda r: r["ann_val_acc"])          # first wins a tie
        else:
            reached = [r for r in cands if r.get("snn_val_op")] or cands
            best = max(reached, key=lambda r: ((r.get("snn_val_at_op") or 0.0), -(r.get("snn_val_op") or 1e9)))
        chosen[act] = best["label"]
    return chosen


def render(cfg: dict, record: dict) -> str:
    rule = {"ann_val": "highest validation accuracy of the BatchNorm-folded ANN",
            "snn_val_op": "highest validation accuracy of the converted SNN at its own operating point "
                          "(first t within 1 point of its ANN on validation)"}[cfg["selection"]["rule"]]
    relu = next((r["ann_val_acc"] for r in record["candidates"] if r["activation"] == "relu"), None)
    lines = [f"# {cfg['name']}: hyperparameters chosen on validation", "",
             f"Selection seed {record['seed']} (its networks are never evaluated on test), "
             f"{cfg['train']['epochs']} epochs each (the preset's schedule, the same budget for every ANN), "
             f"validation split of {cfg['dataset']} ({record['val_images']} images). Rule: {rule}. "
             "The first candidate of each activation is its paper's setting.", "",
             "| activation | candidate | knobs | ANN val acc | gap to ReLU (points) | SNN val at op (t) | "
             "learned thresholds per layer | chosen |", "|---|---|---|---|---|---|---|---|"]
    for r in record["candidates"]:
        gap = "" if relu is None or r["activation"] == "relu" else f"{100 * (r['ann_val_acc'] - relu):+.2f}"
        snn = (f"{100 * r['snn_val_at_op']:.2f} ({r['snn_val_op']})" if r.get("snn_val_at_op") is not None
               else ("not within 1 pt by T_max" if "snn_val_op" in r else ""))
        th = ", ".join(f"{v:.4g}" for v in r["learned_thresholds"][:8]) + \
            (" ..." if len(r["learned_thresholds"]) > 8 else "")
        chosen = "**yes**" if record["chosen"].get(r["activation"]) == r["label"] else ""
        lines.append(f"| {r['activation']} | {r['label']} | `{json.dumps(r['knobs'])}` | "
                     f"{100 * r['ann_val_acc']:.2f} | {gap} | {snn} | {th} | {chosen} |")
    lines += ["", f"Commit `{record['git_commit']}`, {record['wall_seconds']:.0f} s on {class_line(record['machine'])}, "
              f"training precision {record['precision']}."]
    return "\n".join(lines) + "\n"


def partial_path(cfg: dict, runs_dir: Path | str | None = None) -> Path:
    """Finished candidates of an interrupted selection (runs/<preset>/selection/partial.json):
    each candidate trains for minutes, so an interruption loses at most the one in progress."""
    return work_dir(cfg["name"], runs_dir) / "selection" / "partial.json"


def _load_partial(path: Path, fp: str) -> list[dict]:
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    if data.get("fingerprint") != fp:
        print(f"[select] {path}: an earlier selection at another commit or preset version, not reused")
        return []
    return data["candidates"]


def run(cfg: dict, out: Path | None = None, progress: bool = True, publish: bool = False,
        runs_dir: Path | str | None = None) -> dict:
    """Train and evaluate every candidate; write selection.json and selection.md; return the record.
    Candidates finished by an interrupted invocation of the same preset are reused."""
    if not cfg["selection"]["candidates"]:
        raise SystemExit(f"preset {cfg['name']} lists no selection.candidates")
    t0 = time.time()
    seed = int(cfg["selection"]["seed"])
    # a finished candidate is reused only by the same preset as run, rule, seed and commit
    # (tracking.run_group leaves the selection block out as words; its rule changes figures)
    commit = tracking.git_commit(ignore=[PROJECT_ROOT / "results"])
    fp = tracking.run_group(dict(cfg, selection_rule=cfg["selection"]["rule"]), seed, commit)
    partial = partial_path(cfg, runs_dir)
    done = _load_partial(partial, fp)
    if cfg.get("deterministic"):
        deterministic.apply(int(cfg["trainer"]["threads"] or torch.get_num_threads()))
    elif cfg["trainer"]["threads"]:
        torch.set_num_threads(int(cfg["trainer"]["threads"]))
    prec = precision.resolve(cfg["trainer"]["precision"], cfg["trainer"]["accelerator"])
    out = Path(out or (PROJECT_ROOT / "results" / cfg["name"] if publish else work_dir(cfg["name"]) / "results"))
    results, n_val, reused = [], None, 0
    for act, label, knobs in _candidates(cfg):
        prior = next((r for r in done if (r["activation"], r["label"], r["knobs"]) == (act, label, knobs)), None)
        if prior is not None:
            print(f"[select] {cfg['name']}: {act} {label}: finished by an earlier invocation, reused")
            results.append(prior)
            n_val, reused = prior.get("val_images", n_val), reused + 1
            continue
        print(f"[select] {cfg['name']}: {act} {label} {knobs}, seed {seed}")
        t1 = time.time()
        module, dm = train_one(cfg, act, knobs, seed, prec[0], progress)
        n_val = len(dm.val_set)
        r = {"activation": act, "label": label, "knobs": knobs, **evaluate_one(cfg, act, module, dm),
             "val_images": n_val, "wall_seconds": round(time.time() - t1, 1)}
        print(f"[select]   ANN validation accuracy {100 * r['ann_val_acc']:.2f} %")
        results.append(r)
        partial.parent.mkdir(parents=True, exist_ok=True)
        tmp = partial.with_suffix(".tmp")
        tmp.write_text(json.dumps({"fingerprint": fp, "candidates": results}, indent=1))
        tmp.replace(partial)
    record = {"preset": cfg["name"], "seed": seed, "rule": cfg["selection"]["rule"], "candidates": results,
              "chosen": choose(cfg, results), "val_images": n_val,
              "git_commit": tracking.git_commit(ignore=[PROJECT_ROOT / "results", out]),
              "versions": tracking.versions(), "machine": machine_class(), "precision": prec[0],
              "wall_seconds": round(sum(r.get("wall_seconds", 0.0) for r in results) if reused
                                    else time.time() - t0, 1),
              "reused_candidates": reused}
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection.json").write_text(json.dumps(record, indent=1))
    (out / "selection.md").write_text(render(cfg, record))
    print(render(cfg, record))
    print(f"[select] wrote {out / 'selection.md'}; state the chosen values in the preset's activations")
    return record
