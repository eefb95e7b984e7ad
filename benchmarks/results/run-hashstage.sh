#!/bin/sh
# The hash stage alone, 20k small JPEGs, local pool (a fresh process each time) vs Ray, A B A B, then the engines'
# own cost with a batch function that does no work; output: benchmarks/results/hashstage-20k-*.txt
cd "$(dirname "$0")/../.." || exit 1
date -u; uptime
PYTHONPATH=$PWD nice -n 5 /work/main/.venv/bin/python benchmarks/scale.py hashstage --n 20000 --rounds ${ROUNDS:-2}
date -u; uptime
