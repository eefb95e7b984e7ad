#!/bin/sh
# Hash-only check, local pool vs Ray, A B A B, 20k small JPEGs (scale.py data, /tmp/sa-scale); output:
# benchmarks/results/engines-20k.txt (then engines-20k-idle.txt after a local runtime keeps idle workers).
cd "$(dirname "$0")/../.." || exit 1
date -u; uptime
PYTHONPATH=$PWD nice -n 5 /work/main/.venv/bin/python benchmarks/scale.py engines --n 20000 --rounds 2
date -u; uptime
