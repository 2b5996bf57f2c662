"""NeuroBench's own metrics of converted SNNs against the suite's operation counts, on tiny
networks whose counts are computed by hand here: equal where the conventions agree, and the
two conventions that differ pinned down (border fan-out of a padded conv, zero analog
inputs, multi-spike steps)."""
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("snntorch")
pytest.importorskip("neurobench")

from annsnn import convert, models  # noqa: E402
from annsnn.neurons import IFNeuron  # noqa: E402
from annsnn.simulate import simulate  # noqa: E402
from interop.neurobench_metrics import neurobench_metrics, spike_count_view  # noqa: E402


def _linear(i, o, w, b=0.0):
    m = nn.Linear(i, o)
    with torch.no_grad():
        m.weight.fill_(w)
        m.bias.fill_(b)
    return m


def _loader(x, n=None):
    y = torch.zeros(len(x), dtype=torch.long)
    return DataLoader(TensorDataset(x, y), batch_size=n or len(x))


def test_synaptic_operations_equal_the_suite_on_a_hand_counted_mlp():
    """4 inputs -> 3 IF neurons -> 2 outputs, all weights 0.25 / 0.5, every input 0.5:
    each neuron gets 0.5 per step with threshold 1, so it fires at t = 2 and 4.
    By hand, per image over t = 4 steps:
      MACs (analog first layer, every step) = 4 * 3 * 4 = 48
      ACs  (spikes x fan-out)                = 6 spikes * 2 = 12
      dense                                  = 48 + 3 * 2 * 4 = 72
      activation sparsity = 1 - 6 / (3 * 4) = 0.5; connection sparsity 0;
      footprint = 4 * (12 + 3 + 6 + 2 weights and biases + 1 threshold) = 96 bytes."""
    snn = nn.Sequential(_linear(4, 3, 0.25), IFNeuron(1.0), _linear(3, 2, 0.5)).eval()
    dl = _loader(torch.full((5, 4), 0.5))
    nb = neurobench_metrics(snn, dl, 4)
    ops = nb["SynapticOperations"]
    assert (ops["Effective_MACs"], ops["Effective_ACs"], ops["Dense"]) == (48, 12, 72)
    assert nb["ActivationSparsity"] == 0.5
    assert (nb["ConnectionSparsity"], nb["Footprint"]) == (0.0, 96)
    res = simulate(snn, dl, 4, progress=False)
    assert res.first_layer_macs * 4 == ops["Effective_MACs"]      # the suite's analog MACs
    assert res.sops[3] == ops["Effective_ACs"]                    # the suite's SOPs
    assert res.sops[1] == 6 and res.sops[0] == 0                  # per t: cumulative


def _corner_net(cout=2):
    """1x3x3 image -> 1x1 conv (weight 2) -> IF(theta 1) -> 3x3 conv, pad 1, cout channels
    -> IF(theta 1e6, never fires) -> flatten -> linear."""
    c1 = nn.Conv2d(1, 1, 1)
    c2 = nn.Conv2d(1, cout, 3, padding=1)
    with torch.no_grad():
        c1.weight.fill_(2.0)
        c1.bias.zero_()
        c2.weight.fill_(0.1)
        c2.bias.zero_()
    return nn.Sequential(c1, IFNeuron(1.0), c2, IFNeuron(1e6), nn.Flatten(),
                         _linear(cout * 9, 2, 0.1)).eval()


def test_border_fan_out_and_zero_inputs_are_where_the_conventions_differ():
    """One spike, in the corner of a 3x3 map, into a padded 3x3 conv with 2 channels: it
    reaches 2 x 2 = 4 output positions per channel, 8 synapses (NeuroBench counts these);
    the suite's fan-out is the layer's MACs over its inputs, 2 * 9 * 9 / 9 = 18 per spike,
    the average over a map whose border neurons have fewer synapses. The image has one
    non-zero pixel: NeuroBench's effective MACs skip the 8 zero inputs (1 per step), the
    suite pays the dense first layer, 9 per step."""
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = 0.5     # the corner neuron fires at every step; 0.5, not 1: NeuroBench
    #                         takes an all-0/1 input for spikes and would count ACs
    snn = _corner_net()
    dl = _loader(x)
    T = 3
    nb = neurobench_metrics(snn, dl, T, accuracy=False)["SynapticOperations"]
    res = simulate(snn, dl, T, progress=False)
    assert nb["Effective_ACs"] == 8 * T and res.sops[T - 1] == 18 * T
    assert nb["Effective_MACs"] == 1 * T and res.first_layer_macs * T == 9 * T


def test_multi_spike_steps_count_once_in_neurobench_and_n_times_in_the_suite():
    """3 neurons with at most 3 spikes per step get 2.5 thresholds per step (4 * 1.25 * 0.5): they emit
    n = 2, 3, 2, 3 (u = 2.5, 3.0, 2.5, 3.0). The suite counts n synaptic events per synapse:
    (2 + 3 + 2 + 3) * 3 neurons * 2 synapses = 60 ACs. NeuroBench sees inputs 2 and 3 (not
    0/1), so it counts them as MACs, one per non-zero input and synapse: 4 * 3 * 2 = 24 MACs,
    on top of the first layer's 4 * 3 * 4 = 48."""
    snn = nn.Sequential(_linear(4, 3, 1.25), IFNeuron(1.0, max_spikes=3), _linear(3, 2, 0.5)).eval()
    dl = _loader(torch.full((2, 4), 0.5))    # analog input (not 0/1): NeuroBench's MACs
    nb = neurobench_metrics(snn, dl, 4, accuracy=False)["SynapticOperations"]
    res = simulate(snn, dl, 4, progress=False)
    assert res.sops[3] == 60
    assert nb["Effective_ACs"] == 0 and nb["Effective_MACs"] == 48 + 24


def test_the_view_neurobench_measures_computes_what_the_suite_computes():
    """The adapters (spike counts out of the neurons, times theta into the next layer) leave
    the SNN's arithmetic unchanged: the mean output over T steps is the suite's, bit for bit."""
    torch.manual_seed(0)
    ann = models.build("cnn-small", {"name": "steprelu", "L": 4, "theta": 0.2}, 10, 1, 28,
                       mean=[0.286], std=[0.353], width=4).eval()
    snn = convert(ann, "steprelu")
    x = torch.rand(16, 1, 28, 28)
    T = 5
    view = spike_count_view(snn, T)
    with torch.inference_mode():
        got = view(x)
        from annsnn.neurons import reset_neurons
        reset_neurons(snn)
        cum = None
        for _ in range(T):
            out = snn(x)
            cum = out.clone() if cum is None else cum.add_(out)
    assert torch.equal(got, cum / T)
    assert any(m.max_n > 1 for m in snn.modules() if isinstance(m, IFNeuron))  # multi-spike used
