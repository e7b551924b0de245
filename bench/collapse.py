"""The headline rule of a track and generations to collapse: the first generation at which the
headline metric crosses its threshold, per seed, summarised per entry (median and range).

Used by the leaderboard (a "gens to collapse" column in every track table with a headline) and by
the suite table; it sits below both so that neither imports the other for it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from bench.components import COLLAPSE_MODES
from bench.errors import BenchError
from bench.runfolder import parse_headline


# -- the headline rule and generations to collapse ------------------------------------------------


def override_headline(headline: Any) -> dict[str, Any]:
    """A user's headline (a :class:`bench.components.Headline` or a mapping with ``metric``,
    ``threshold`` and optionally ``mode`` and ``why``) as the rule dict; BenchError if unusable."""
    if hasattr(headline, "to_dict"):
        headline = headline.to_dict()
    if not isinstance(headline, Mapping):
        raise BenchError(f"a headline is a metric, a threshold and a mode, got {headline!r}")
    given = dict(headline)
    if not given.get("mode"):
        given["mode"] = "diff"
    rule, problem = parse_headline(given)
    if rule is None:
        raise BenchError(f"headline override: {problem}")
    if not rule["why"]:
        rule["why"] = "chosen by the user (replaces the headline that run.json declares)"
    return {**rule, "source": "override"}


def generations_to_collapse(curves: np.ndarray, direction: str, threshold: float, mode: str = "diff",
                            target: float | None = None) -> np.ndarray:
    """Per curve (last axis: generations 0..N) the first generation g >= 1 at which the value has
    moved the wrong way past ``threshold`` relative to generation 0; ``inf`` when no generation
    does (censored: more than N), ``nan`` when the value at generation 0 is not finite.

    ``lower``: ``v_g - v_0 >= threshold`` (diff) or ``v_g / v_0 >= threshold`` (ratio); ``higher``:
    ``v_g - v_0 <= -threshold`` or ``v_g / v_0 <= threshold``; ``target``: the distance
    ``|v - target|`` as a lower-is-better curve. A NaN value never crosses."""
    c = np.asarray(curves, dtype=float)
    if direction == "target":
        c, direction = np.abs(c - float(target if target is not None else np.nan)), "lower"
    if direction not in ("lower", "higher"):
        raise ValueError(f"unknown direction {direction!r}")
    if mode not in COLLAPSE_MODES:
        raise ValueError(f"unknown mode {mode!r}")
    v0, later = c[..., :1], c[..., 1:]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        change = later - v0 if mode == "diff" else later / v0
        if direction == "lower":
            crossed = change >= threshold
        else:
            crossed = change <= (-threshold if mode == "diff" else threshold)
    first = np.argmax(crossed, axis=-1) + 1.0
    out = np.where(crossed.any(axis=-1), first, np.inf)
    return np.where(np.isfinite(c[..., 0]), out, np.nan)


def _gen_text(x: float, last: int) -> str:
    if math.isnan(x):
        return "n/a"
    return f">{last}" if math.isinf(x) else f"{x:g}"


@dataclass
class Collapse:
    """One entry's generations to collapse: per seed, and the median and range over seeds.
    ``inf`` stands for "not within generations 0..last" (censored), ``nan`` for undefined."""

    seeds: list[Any]
    per_seed: list[float]
    last: int
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float], seeds: Sequence[Any], last: int) -> "Collapse":
        v = np.asarray(values, dtype=float)
        if len(v) == 0 or np.isnan(v).any():
            median = low = high = math.nan
        else:
            median, low, high = float(np.median(v)), float(v.min()), float(v.max())
        return cls(list(seeds), [float(x) for x in v], int(last), median, low, high)

    @property
    def censored(self) -> int:
        return sum(1 for x in self.per_seed if math.isinf(x))

    def text(self) -> str:
        """``median [min–max]`` (the range when the seeds differ), ``>N`` for censored values."""
        med = _gen_text(self.median, self.last)
        if len(self.per_seed) > 1 and not math.isnan(self.median) and self.low != self.high:
            return f"{med} [{_gen_text(self.low, self.last)}–{_gen_text(self.high, self.last)}]"
        return med

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if not math.isfinite(x) else x

        return {"median": num(self.median), "min": num(self.low), "max": num(self.high),
                "median_censored": math.isinf(self.median), "min_censored": math.isinf(self.low),
                "max_censored": math.isinf(self.high), "censored_seeds": self.censored, "n": len(self.per_seed),
                "last_generation": self.last, "text": self.text(),
                "per_seed": [{"seed": s, "generation": int(x) if math.isfinite(x) else None, "censored": math.isinf(x)}
                             for s, x in zip(self.seeds, self.per_seed)]}


def _rule_text(h: Mapping[str, Any]) -> str:
    t, metric, direction = h["threshold"], h["metric"], h.get("direction")
    if h["mode"] == "ratio":
        op = "≤" if direction == "higher" else "≥"
        return f"{metric}_g / {metric}_0 {op} {t:g}"
    if direction == "higher":
        return f"{metric}_g − {metric}_0 ≤ −{t:g}"
    if direction == "target":
        return f"|{metric}_g − {h.get('target'):g}| − |{metric}_0 − {h.get('target'):g}| ≥ {t:g}"
    return f"{metric}_g − {metric}_0 ≥ {t:g}"


def collapse_legend(h: Mapping[str, Any] | None, last: int) -> str:
    """The sentence explaining a table's "gens to collapse" column (plain text: escape it)."""
    if h is None:
        return ""
    src = "given by the user" if h.get("source") == "override" else "the track's headline"
    if h.get("direction") is None:
        return (f"Gens to collapse: n/a, the headline metric {h['metric']} ({src}) has no rows in this track.")
    why = f": {h['why']}" if h.get("why") else ""
    return (f"Gens to collapse: per seed, the first generation g ≥ 1 with {_rule_text(h)} ({src}{why}); "
            f"the median over seeds, then [min–max] over seeds when they differ; >{last} means not within "
            f"generations 0..{last} (censored; a censored median prints >{last}).")


def attach_headline(board: Any, runs: Sequence[Any], override: Mapping[str, Any] | None,
                    warnings: list[str]) -> None:
    """Set ``board.headline`` (the rule with the metric's direction and target) and
    ``board.collapse`` (per entry a :class:`Collapse`, or None where undefined) from the runs'
    run.json headline (the most common one) or ``override``; both None when the track has none."""
    name = f"track {board.track['name']} ({board.track['id']})"
    if override is not None:
        rule = dict(override)
    else:
        problems = Counter(r.headline_problem for r in runs if r.headline_problem)
        for problem, n in sorted(problems.items()):
            warnings.append(f"{name}: run.json headline ignored in {n} run(s) ({problem})")
        counts = Counter(json.dumps(r.headline, sort_keys=True) for r in runs if r.headline)
        if not counts:
            board.headline = board.collapse = None
            return
        key = max(counts, key=lambda k: (counts[k], k))
        rule = {**json.loads(key), "source": "run.json"}
        if len(counts) > 1:
            warnings.append(f"{name}: runs declare different headlines; using {rule['metric']} "
                            f"({rule['mode']} {rule['threshold']:g}), the most common")
    j = next((k for k, m in enumerate(board.rows) if m.name == rule["metric"]), None)
    if j is None:
        board.headline = {**rule, "direction": None, "target": None}
        board.collapse = [None] * len(board.entries)
        if override is None:
            warnings.append(f"{name}: headline metric {rule['metric']} has no rows (or no single direction); "
                            "gens to collapse n/a")
        return
    m = board.rows[j]
    board.headline = {**rule, "direction": m.direction, "target": m.target}
    gens = generations_to_collapse(board.curves[:, j, :], m.direction, rule["threshold"], rule["mode"], m.target)
    board.collapse = [Collapse.of(gens[members], entry.seeds, board.generations)
                      for entry, members in zip(board.entries, board.members)]
