#!/usr/bin/env bash
# N processes on this machine with M CPU devices each, joined by jax.distributed over 127.0.0.1:
#   launch/local.sh 2 4 train.py --config configs/demo.py:smoke=True --workdir /tmp/demo2x4
# Adds --distributed; SIGTERM / SIGINT reach every process; exits non-zero if any process fails.
# Details: launch/local.py.
cd "$(dirname "$0")/.." && exec "${PYTHON:-python}" launch/local.py "$@"
