#!/bin/sh
# The embedding runs again after the actor pool starts at full size (ray_engine.py: initial_size), then (the -idle
# output) after a local runtime keeps idle workers for a minute; output:
# benchmarks/results/engines-photos-2000-embed-pool.txt.
cd "$(dirname "$0")/../.." || exit 1
date -u; uptime
PYTHONPATH=$PWD nice -n 5 /work/main/.venv/bin/python benchmarks/scale.py engines \
    --folder /tmp/splitaudit-peers/photos-2000 --embed --skip-hash --rounds 2
date -u; uptime
