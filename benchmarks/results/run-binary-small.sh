#!/bin/sh
# The binary search at 60k and 150k codes, exhaustive against the automatic choice (multi-index where plan() says);
# output: benchmarks/results/binary-small.txt.
cd "$(dirname "$0")/../.." || exit 1
date -u; uptime
for n in 54000 135000; do
    PYTHONPATH=$PWD nice -n 5 /work/main/.venv/bin/python benchmarks/scale.py binary --base $n --queries $((n / 9)) \
        --binary-methods flat,auto --sample 0
done
date -u; uptime
