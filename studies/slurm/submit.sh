#!/bin/bash
# The leak/time-step study on SLURM: init once, then the worker array (only if init succeeded),
# then the report. Settings travel as environment variables (sbatch exports them); extra
# arguments are passed to every sbatch.
#
#   studies/slurm/submit.sh                                       # 4 workers on the journal file
#   WORKERS=0-31 STORAGE=postgresql://optuna:PW@db-host/optuna studies/slurm/submit.sh
set -euo pipefail
# Submit from the project root (the jobs' PROJECT is the submit folder), and create the log
# folder first: SLURM opens --output=logs/... before the job script runs, and drops the log
# if the folder is missing.
cd "$(dirname "$0")/../.."
SCRIPT=studies/slurm/leak_timestep.sbatch
mkdir -p logs
WORKERS=${WORKERS:-0-3}
init=$(ROLE=init sbatch --parsable --export=ALL "$@" --array=0 "$SCRIPT")
work=$(ROLE=worker sbatch --parsable --export=ALL "$@" --array="$WORKERS" --dependency=afterok:"${init%%;*}" "$SCRIPT")
report=$(ROLE=report sbatch --parsable --export=ALL "$@" --array=0 --dependency=afterany:"${work%%;*}" "$SCRIPT")
echo "init ${init%%;*}, workers ${work%%;*} (array $WORKERS), report ${report%%;*}"
