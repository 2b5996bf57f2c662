"""OPI (Bu et al., AAAI 2022, "Optimized potential initialization for low-latency
spiking neural networks"): max-norm thresholds, initial potential half the threshold."""
from .base import register
from .ratenorm import RateNorm

OPI = register(RateNorm("opi", percentile=100.0, v0=0.5))
