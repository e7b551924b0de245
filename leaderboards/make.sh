#!/usr/bin/env bash
# Regenerates the tables in this folder from the project's own smoke runs: every track's smoke
# preset under each data policy, then `bench leaderboard`. Runs are kept under $RUNS (default
# build/leaderboard-runs, not committed); finished runs are not run again.
# Takes about 20 minutes on 2 CPU cores, most of it the language-model runs.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-build/leaderboard-runs}

for policy in replace mix:0.1 accumulate; do
  bench run --plugin gaussian --preset smoke --seeds 0-4 --policy "$policy" --out "$RUNS"
  bench run --plugin categorical --preset smoke --seeds 0-4 --policy "$policy" --out "$RUNS"
done
for policy in replace mix:0.1 accumulate accumulate-subsample; do
  bench run --plugin gmm --preset smoke --seeds 0-4 --policy "$policy" --out "$RUNS"
  # the batched EM's own track (the five seeds fitted together in lockstep)
  bench run --plugin gmm-batched --preset smoke --seeds 0-4 --policy "$policy" --out "$RUNS"
done
for policy in replace mix:0.1 accumulate; do
  bench run --plugin vae --preset smoke --seeds 0-2 --policy "$policy" --out "$RUNS"
done
for policy in replace mix:0.1; do
  bench run --plugin opt125m --preset smoke --seeds 0-2 --policy "$policy" --out "$RUNS"
done

bench validate "$RUNS"
bench leaderboard "$RUNS" --out leaderboards
