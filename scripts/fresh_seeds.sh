#!/usr/bin/env bash
# The test suite N times in a row with fresh seeds (issue 10's flakiness check), spread over the visible GPUs:
#   scripts/fresh_seeds.sh N [pytest arguments, default: tests]
# Knobs (environment): SHARDS (pytest processes a pass), JOBS or JOBS_PER_GPU (processes at once), DEADLINE
# (seconds), THREADS, FRESH_SEED_BASE, OUT; see scripts/fresh_seeds.py. Needs the project set up (scripts/setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
exec scripts/py scripts/fresh_seeds.py "$@"
