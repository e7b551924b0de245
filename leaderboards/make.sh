#!/usr/bin/env bash
# Regenerates the tables in this folder from the project's own smoke runs: the suite sweep
# (leaderboards/suite.yaml: every applicable mitigation on every track's smoke preset), the
# batched EM's own track, then `bench leaderboard --suite`: one table per track, the suite table
# across tracks with its heatmap, and index.html, one self-contained page with all of it.
# Runs are kept under $RUNS (default build/leaderboard-runs, not committed); finished runs are
# not run again, so an interrupted make.sh continues where it stopped. The tables are built in a
# fresh folder, build/leaderboard-tables, then replace the published ones here,
# so a table of a track the code no longer makes (an older track id) does not stay behind.
# Wall time on 2 CPU cores: see the README ("Mitigations"); the language-model and VAE runs
# dominate it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-build/leaderboard-runs}
WORKERS=${WORKERS:-2}
TABLES=build/leaderboard-tables

bench sweep leaderboards/suite.yaml --out "$RUNS" --workers "$WORKERS"
# the batched EM's own track (the five seeds fitted together in lockstep)
for policy in replace mix:0.1 accumulate accumulate-subsample; do
  bench run --plugin gmm-batched --preset smoke --seeds 0-4 --policy "$policy" --out "$RUNS"
done

bench validate "$RUNS"
rm -rf "$TABLES"
bench leaderboard "$RUNS" --suite --out "$TABLES"
# the published tables: this build's, replacing the old ones (README.md, suite.yaml and make.sh stay)
find leaderboards -maxdepth 1 -type f \( -name '*.md' -o -name '*.html' -o -name '*.csv' -o -name '*.json' \
  -o -name '*.png' \) ! -name README.md -delete
cp "$TABLES"/* leaderboards/
