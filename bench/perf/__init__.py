"""Performance, measured as ratios within one run (these machines are noisy), never asserted
in a test: ``speed`` (``python -m bench speed``) and ``gpu_check`` (``./reproduce.sh gpu-check``)."""
