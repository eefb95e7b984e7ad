#!/bin/sh
# Local pool vs Ray, interleaved A B A B, on 2,000 real photos (benchmarks/peers.py's set, 256 px): the hash-only check
# and the embedding check (similar-images, efficientnet_lite0); output: benchmarks/results/engines-photos-2000.txt.
cd "$(dirname "$0")/../.." || exit 1
date -u; uptime
PYTHONPATH=$PWD nice -n 5 /work/main/.venv/bin/python benchmarks/scale.py engines \
    --folder /tmp/splitaudit-peers/photos-2000 --embed --rounds 2
date -u; uptime
