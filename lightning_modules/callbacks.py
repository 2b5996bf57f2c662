"""Lightning callback that converts the trained ANN and evaluates the SNN, logging to MLflow.

One ANN serves every method that uses its activation (a ReLU ANN serves maxnorm,
robustnorm and opi, a StepReLU ANN serves steprelu and steprelu-single). Each
(method, leak) gets a nested MLflow run under the ANN's run, with ``snn_acc`` and
``conv_error`` logged at ``step = t``, and the experiment's ``compare-seed<k>`` run is
rebuilt after each, so every method of a seed is in one run's charts.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger

from annsnn import convert, simulate, spiking_layers
from annsnn.metrics import correct_bits, sha256_tensor
from annsnn.recipes import get_recipe
from annsnn.simulate import SimResult

import tracking


def paired_ts(T: int) -> list[int]:
    """The steps at which per-image correctness is kept: every t (about 1.25 kB per 10,000
    images per step), so any two settings can be compared at any budget, an operating point
    such as t = 7 included."""
    return list(range(1, T + 1))


def thresholds(snn: torch.nn.Module, names: dict[str, str] | None = None) -> dict[str, float | list[float]]:
    """Each spiking layer's threshold theta (a list where it is per channel): QCFS's learned
    lambda / L, StepReLU's theta, a rate method's calibrated threshold."""
    names = names or {}
    out = {}
    for name, m in spiking_layers(snn):
        th = m.theta.detach().cpu()
        out[names.get(name, name)] = float(th) if th.numel() == 1 else [float(v) for v in th.flatten()]
    return out


def head(loader, n: int | None):
    """The first ``n`` images of ``loader`` (all when n is None), batch by batch."""
    seen = 0
    for batch in loader:
        if n is not None and seen >= n:
            return
        x, y = batch[0], batch[1]
        if n is not None and seen + len(y) > n:
            x, y = x[: n - seen], y[: n - seen]
        seen += len(y)
        yield x, y


def child_name(method: str, leak: float) -> str:
    return f"{method}-leak{leak:g}"


def result_record(method: str, leak: float, res: SimResult, ann_acc_unfolded: float | None,
                  val: SimResult | None = None, theta: dict | None = None,
                  names: dict[str, str] | None = None) -> dict:
    """Plain-JSON summary of one simulation (what tables and plots need). ``val``: the same
    SNN on the validation split, where each method's operating point is chosen (the test
    split only reports it)."""
    T = res.T_max
    return {
        "method": method, "leak": leak, "T_max": T, "n_images": res.n_images,
        "acc": res.acc, "conv_error": res.conv_error, "ann_acc": res.ann_acc,
        "ann_acc_unfolded": ann_acc_unfolded, "identical_at_t1": res.identical_at_t1,
        "exact_at_t1": get_recipe(method).exact_at_t1, "description": get_recipe(method).description,
        "firing_rate": res.firing_rate, "max_spikes_per_step": res.max_spikes_per_step,
        "max_n_per_layer": res.max_n_per_layer, "spike_hist": res.spike_hist,
        "sops": res.sops, "first_layer_macs": res.first_layer_macs, "ann_macs": res.ann_macs,
        # per-image correctness at t = 1, 2, 4, ... and T_max, for paired tests between methods
        "correct_at": {str(t): correct_bits(res.predictions[:, t - 1], res.labels) for t in paired_ts(T)},
        "energy_ratio": [res.energy_ratio(t) for t in range(1, T + 1)],
        "ops_ratio": [res.sops_ratio(t) for t in range(1, T + 1)],
        # the validation split: operating points are chosen here
        "val_acc": val.acc if val is not None else None,
        "val_ann_acc": val.ann_acc if val is not None else None,
        "val_n_images": val.n_images if val is not None else None,
        "thresholds": theta,
        # conversion error by depth (spiking layer in network order) at the steps layer_error_t
        "layer_conv_error": ({(names or {}).get(k, k): v for k, v in res.layer_error.items()}
                             if res.layer_error else None),
        "layer_conv_error_ts": res.layer_error_ts,
        # SHA-256 of the per-image predictions [n, T]: two machines that agree bit for bit agree here
        "predictions_sha256": sha256_tensor(res.predictions),
    }


def layer_names(snn: torch.nn.Module) -> dict[str, str]:
    """A readable name per spiking layer, for ``firing_rate/<name>``: its module path where
    that says something (``layers.0.act1``), else the conv or linear layer feeding it
    (``conv2``, ``fc1``, counted in module order), as in a plain ``nn.Sequential``."""
    counts, last, out = {"conv": 0, "fc": 0}, None, {}
    neurons = {id(m) for _, m in spiking_layers(snn)}
    for name, m in snn.named_modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.Linear)):
            kind = "fc" if isinstance(m, torch.nn.Linear) else "conv"
            counts[kind] += 1
            last = f"{kind}{counts[kind]}"
        elif id(m) in neurons:
            readable = any(not part.isdigit() for part in name.split("."))
            label = name if readable else (last or "input")
            while label in out.values():          # two neurons after one layer
                label += "_"
            out[name] = label
    return out


def log_result(client, parent_run_id: str, record: dict, params: dict,
               names: dict[str, str] | None = None) -> str:
    """One nested run per conversion setting; returns its run id. Every metric is logged
    once: curves with ``step = t`` (the runs table shows their value at T_max, so no
    ``*_T`` copy), scalars at step 0, firing rates as ``firing_rate/<layer>``."""
    name = child_name(record["method"], record["leak"])
    parent_tags = client.get_run(parent_run_id).data.tags
    seed = str(params.get("seed", parent_tags.get("seed", "")))
    group = str(params.get("run_group", parent_tags.get("run_group", "")))
    run_id = tracking.replace_child_run(client, parent_run_id, name, tags={
        "method": record["method"], "leak": str(record["leak"]), "seed": seed, "kind": tracking.comparison.SNN_KIND,
        **({"run_group": group} if group else {})})
    tracking.log_params(client, run_id, {**params, "method": record["method"], "leak": record["leak"],
                                         "T_max": record["T_max"],
                                         "method_description": get_recipe(record["method"]).description})
    tracking.log_curve(client, run_id, "snn_acc", record["acc"])
    if record["conv_error"] is not None:
        tracking.log_curve(client, run_id, "conv_error", record["conv_error"])
    tracking.log_curve(client, run_id, "energy_ratio", record["energy_ratio"])
    tracking.log_curve(client, run_id, "sops_per_image", record["sops"])
    T = record["T_max"]
    scalars = {"ann_acc": record["ann_acc"], "ann_acc_unfolded": record["ann_acc_unfolded"],
               "max_spikes_per_step": record["max_spikes_per_step"], "ann_macs": record["ann_macs"],
               "identical_at_t1": record["identical_at_t1"], "n_images": record["n_images"]}
    names = names or {}
    scalars.update({f"firing_rate/{names.get(k, k)}": v for k, v in record["firing_rate"].items()})
    tracking.log_scalars(client, run_id, scalars)
    fig = tracking.accuracy_figure({name: record["acc"]}, f"{name} (T_max={T})", {name: record["ann_acc"]})
    tracking.log_figure(client, run_id, fig, "accuracy_vs_t.png")
    client.set_terminated(run_id)
    return run_id


@contextmanager
def kept_mode(module: torch.nn.Module):
    """Restore every submodule's train/eval flag on exit: evaluating a model must not
    change the mode its caller (Lightning's loop, a user) left it in."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training


def accuracy(model: torch.nn.Module, loader) -> float:
    """Top-1 accuracy in eval mode; the model's own mode is left as it was."""
    correct = total = 0
    device = next(model.parameters()).device
    with kept_mode(model), torch.inference_mode():
        model.eval()
        for x, y in loader:
            correct += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
            total += len(y)
    return correct / max(total, 1)


class SNNEvaluation(L.Callback):
    """Convert and simulate at the end of ``fit`` on the test split and on the validation split
    (where operating points are chosen), optionally every k epochs (validation split).

    ``done``: (method, leak) pairs already evaluated in an earlier, interrupted run.
    ``on_result(record, run_id)``: called after each nested run is complete.
    """

    def __init__(self, methods, T_max: int, leaks=(1.0,),
                 eval_every_k_epochs: int = 0, params: dict | None = None,
                 done: set | None = None, on_result: Callable[[dict, str], None] | None = None,
                 progress: bool = True, val_subset: int | None = None, layer_error_t=()):
        for m in methods:
            get_recipe(m)  # unknown name: ValueError listing the valid ones
        self.methods, self.T_max, self.leaks = list(methods), int(T_max), [float(x) for x in leaks]
        self.k = int(eval_every_k_epochs)
        self.params, self.done, self.on_result = params or {}, set(done or ()), on_result
        self.progress = progress
        self.val_subset = val_subset
        self.layer_error_t = tuple(layer_error_t)
        self.records: list[dict] = []

    @staticmethod
    def _mlflow(trainer):
        for lg in trainer.loggers:
            if isinstance(lg, MLFlowLogger):
                return lg.experiment, lg.run_id
        return None, None

    def on_validation_epoch_end(self, trainer, pl_module):
        """Every k-th epoch: convert and simulate on the validation split, on rank 0 only
        (under DDP every rank holds the same weights; one conversion is enough)."""
        if (not self.k or trainer.sanity_checking or (trainer.current_epoch + 1) % self.k
                or not trainer.is_global_zero):
            return
        dm = trainer.datamodule
        for method in self.methods:  # convert works on a copy: the module's mode is untouched
            snn = convert(pl_module.model, method, dm.calib_dataloader(), self.leaks[0])
            res = simulate(snn, dm.val_dataloader(), self.T_max, progress=False)
            pl_module.log(f"val_snn_acc_T{self.T_max}/{method}", res.acc[-1], rank_zero_only=True)

    def on_fit_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        self.evaluate(pl_module.model, trainer.datamodule, *self._mlflow(trainer))

    def evaluate(self, ann, dm, client=None, parent_run_id=None) -> list[dict]:
        """Each (method, leak) not done yet on the test split; ``ann``'s mode is kept."""
        todo = [(m, lk) for m in self.methods for lk in self.leaks if (m, lk) not in self.done]
        if not todo:
            return self.records
        ann_unfolded = accuracy(ann, dm.test_dataloader())
        for method, leak in todo:
            snn = convert(ann, method, dm.calib_dataloader(), leak)
            # the spike-count distribution only says something where a step may carry n > 1
            multi = any(m.max_spikes > 1 for _, m in spiking_layers(snn))
            res = simulate(snn, dm.test_dataloader(), self.T_max, ann=ann, progress=self.progress,
                           desc=f"SNN {child_name(method, leak)}", spike_hist=multi,
                           layer_error_ts=self.layer_error_t)
            val = simulate(snn, head(dm.val_dataloader(), self.val_subset), self.T_max, ann=ann,
                           progress=self.progress, desc=f"SNN {child_name(method, leak)} (validation)")
            names = layer_names(snn)
            record = result_record(method, leak, res, ann_unfolded, val, thresholds(snn, names), names)
            run_id = (log_result(client, parent_run_id, record, self.params, layer_names(snn))
                      if client else None)
            self.records.append(record)
            self.done.add((method, leak))
            if self.on_result:
                self.on_result(record, run_id)
            if client:   # every method of this seed so far, side by side in one run
                parent = client.get_run(parent_run_id)
                tracking.update_comparison(client, parent.info.experiment_id,
                                           self.params.get("seed", parent.data.tags.get("seed", "")),
                                           parent.data.tags.get("run_group"))
        return self.records
