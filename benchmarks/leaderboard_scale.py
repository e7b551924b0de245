"""The leaderboard's time on a folder of many synthetic runs (default 10,000).

One real run (gmm smoke) is made first; its run.json and metrics.parquet are then rewritten N
times with other seeds, policies (one entry per policy value), run ids and values, so every folder
is what `bench leaderboard` reads from a real run. With ``--full`` each folder also gets its
generation folders (samples and states hard-linked, per-generation metrics written), so that
`bench validate` passes on it too, and validation is timed as well, interleaved with the
leaderboard (benchmarks/_timing.py: min and median of CPU and wall time over --repeats calls).

    python benchmarks/leaderboard_scale.py [--runs 10000] [--entries 20] [--generations 5] [--full]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from _timing import interleave, pin_threads, report


def template_run(root: Path, generations: int) -> Path:
    """One real, complete gmm smoke run to copy."""
    import bench.api as cb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cb.run("gmm", "smoke", generations=generations, seeds=0, out=root / "template")[0].path


def make_runs(root: Path, n: int, entries: int = 20, generations: int = 5, full: bool = False,
              template: Path | None = None) -> Path:
    """Write ``n`` valid run folders under ``root/runs``: ``entries`` mix policies, seeds 0, 1, ...
    Returns the folder holding them."""
    from bench import results as R
    from bench.spec import Spec

    template = template or template_run(root, generations)
    info = R.read_json(template / R.RUN_JSON)
    table = pq.read_table(template / R.METRICS_FILE)
    gens = table.column("generation").to_numpy()
    base = table.column("value").to_numpy()
    n_rows = table.num_rows
    out = root / "runs"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shares = np.linspace(0.0, 0.5, entries)
    for i in range(n):
        e, seed = i % entries, i // entries
        spec = copy.deepcopy(info["spec"])
        spec["seed"] = seed
        spec["policy"], spec["policy_params"] = "mix", {"p": round(float(shares[e]), 4)}
        s = Spec.from_dict(spec)
        run_dir = out / s.folder_name
        run_dir.mkdir()
        data = dict(info, spec=spec, run_id=s.run_id, gen0_id=s.gen0_id,
                    identity=dict(info["identity"], run_id=s.run_id, policy=s.policy_label, seed=seed))
        (run_dir / R.RUN_JSON).write_text(json.dumps(data, indent=2, sort_keys=True))
        # Real data in the mix slows the drift: values move less with a larger share.
        drift = 1.0 + (1.0 - shares[e]) * 0.3 * gens / max(generations, 1)
        values = base * drift * (1.0 + 0.05 * rng.standard_normal(n_rows))
        cols = {name: table.column(name) for name in table.column_names}
        cols["run_id"] = pa.array([s.run_id] * n_rows)
        cols["policy"] = pa.array([s.policy_label] * n_rows)
        cols["seed"] = pa.array(np.full(n_rows, seed, dtype=np.int64))
        cols["value"] = pa.array(values)
        stamped = pa.table(cols, schema=R.METRICS_SCHEMA)
        pq.write_table(stamped, run_dir / R.METRICS_FILE)
        if full:
            (run_dir / R.LOG_FILE).write_text("synthetic run\n")
            for first, last, src in R.units(template):  # one generation each, or a chunk
                gdir = run_dir / R.GENS_DIR / src.name
                gdir.mkdir(parents=True)
                for name in os.listdir(src):
                    if name != R.METRICS_FILE:
                        os.link(src / name, gdir / name)
                gen = stamped.column("generation")
                rows = stamped.filter(pa.compute.and_(pa.compute.greater_equal(gen, first),
                                                      pa.compute.less_equal(gen, last)))
                pq.write_table(rows.select(R.GEN_METRICS_SCHEMA.names), gdir / R.METRICS_FILE)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--entries", type=int, default=20)
    ap.add_argument("--generations", type=int, default=5)
    ap.add_argument("--full", action="store_true", help="write generation folders too, and time validation")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    pin_threads(1)

    from bench.leaderboard import build

    with tempfile.TemporaryDirectory() as tmp:
        root, fresh = Path(tmp), itertools.count()
        t = time.perf_counter()
        runs = make_runs(root, args.runs, args.entries, args.generations, args.full)
        print(f"made {args.runs} synthetic runs ({args.entries} entries, {args.generations} generations) "
              f"in {time.perf_counter() - t:.1f} s", flush=True)
        sides = {"leaderboard": lambda: build([runs], out=root / f"leaderboards{next(fresh)}")}
        if args.full:
            from bench.validate import validate

            sides["validate"] = lambda: validate([runs])
        outcomes: dict[str, object] = {}
        results = interleave(sides, args.repeats, on_result=lambda side, r, value: outcomes.setdefault(side, value))
        report(results, baseline="leaderboard")
        board = outcomes["leaderboard"]
        fastest = min(t.wall for t in results["leaderboard"])
        print(f"leaderboard: {board.runs_used} runs ({board.runs_used / fastest:,.0f} runs/s at the fastest wall "
              f"time), {len(board.warnings)} warnings, {sum(t.entries for t in board.tracks)} entries")
        if args.full:
            fastest = min(t.wall for t in results["validate"])
            print(f"validate: {args.runs} runs ({args.runs / fastest:,.0f} runs/s at the fastest wall time), "
                  f"{len(outcomes['validate'])} problems")

if __name__ == "__main__":
    main()
