#!/bin/sh
# The 1M x 100k binary search run whose output is benchmarks/results/binary-1m.txt.
cd "$(dirname "$0")/../.." || exit 1
date -u; uptime
PYTHONPATH=$PWD nice -n 5 /work/main/.venv/bin/python benchmarks/scale.py binary --base 1000000 --queries 100000 \
    --binary-methods auto,auto-sharded --sample 10000
date -u; uptime
