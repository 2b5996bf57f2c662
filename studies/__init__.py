"""Optuna studies over the converted SNN (leak, time steps) and the ANN training knobs;
storages and workers for one machine or a cluster. See studies/README.md."""
