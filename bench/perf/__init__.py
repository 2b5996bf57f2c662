"""Performance, measured as ratios within one run (these machines are noisy), never asserted
in a test: ``speed`` (``python -m bench speed``) and ``gpu_check`` (``./reproduce.sh gpu-check``),
``isa_compare`` and ``isa_budget`` (native kernels against the AVX2 caps, each half in a fresh
interpreter: ``isa_child``)."""
