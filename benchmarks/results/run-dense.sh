#!/bin/sh
# The 1M x 100k dense search run (d = 256, IVF-PQ + exact re-ranking) whose output is benchmarks/results/dense-1m.txt.
cd "$(dirname "$0")/../.." || exit 1
date -u; uptime
PYTHONPATH=$PWD nice -n 5 /work/main/.venv/bin/python benchmarks/scale.py search --base 1000000 --queries 100000 \
    --dim 256 --methods ivfpq
date -u; uptime
