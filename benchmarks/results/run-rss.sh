#!/bin/sh
# Peak driver RSS of a cold hash-only check (local engine, copy verifier included), per stage; N as $1; output:
# benchmarks/results/rss-$1.txt
cd "$(dirname "$0")/../.." || exit 1
date -u; uptime
PYTHONPATH=$PWD nice -n 5 /work/main/.venv/bin/python benchmarks/scale.py rss --n "$1" --engine local
date -u; uptime
