#!/usr/bin/env bash
# Run a documented experiment: the default pipeline (params.yaml) with the changes an overrides file lists, as one
# DVC experiment in the workspace (dvc exp run -S, one Hydra override per line; '#' lines are comments).
#
#   scripts/run_experiment.sh profiles/paper-comparison.overrides [NAME]
#
# NAME defaults to the file's name. Stages whose inputs the overrides leave alone are not run again (the teacher
# cache, when only student-side keys change). Record the finished run with
#   dw-pipe docs record-run --overrides FILE --out docs/results/NAME.json
set -euo pipefail
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
    echo "usage: scripts/run_experiment.sh OVERRIDES_FILE [NAME] (a file of dvc exp run -S overrides)" >&2
    exit 2
fi
name="${2:-$(basename "$1" .overrides)}"
args=()
while IFS= read -r line || [ -n "$line" ]; do
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    if [ -n "$line" ] && [ "${line:0:1}" != "#" ]; then
        args+=(-S "$line")
    fi
done < "$1"
if [ -x .venv/bin/dvc ]; then
    export PATH="$PWD/.venv/bin:$PATH"
fi
exec dvc exp run -n "$name" "${args[@]}"
