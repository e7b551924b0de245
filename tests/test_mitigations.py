"""Mitigations with known answers: best-of and filter against closed forms and hand-checked
selections, the harness's candidate draws, labels, and n/a instead of errors (docs/mitigations.md)."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, stats

import bench
from bench import mitigations as M
from bench import results as R
from bench import runfolder as RF
from bench.api import run as api_run
from bench.components import PolicyContext, VerifyContext
from bench.spec import resolve
from collapse_bench_plugins import gaussian as G
from collapse_bench_plugins import mitigations as P
from tests.helpers import assert_same_results, bench_cli


def best_of_2_self_ratio(n: int) -> float:
    """E[s^2] / sigma^2 after keeping the n of 2n draws of N(mu, sigma^2) nearest mu and refitting
    with the unbiased variance. The kept standardised values z have random signs independent of
    their sizes, so E[n zbar^2] = E[sum z^2] / n and E[s^2] = E[sum z^2] / n: the mean of the n
    smallest of 2n chi-square(1) draws, (1/n) * 2n * int Q(u) P(Bin(2n-1, u) <= n-1) du with Q the
    chi-square(1) quantile."""
    m = 2 * n
    value, _ = integrate.quad(lambda u: stats.chi2.ppf(u, 1) * m * stats.binom.cdf(n - 1, m - 1, u), 0, 1,
                              limit=200, points=[0.5])
    return value / n


def test_best_of_ratio_tends_to_the_truncated_normal():
    # Large n: the normal truncated to its central half keeps 1 - 2 a phi(a) / (2 Phi(a) - 1) of
    # the variance, a = Phi^-1(3/4): 0.1426 (the figure).
    a = stats.norm.ppf(0.75)
    limit = 1 - 2 * a * stats.norm.pdf(a) / 0.5
    assert limit == pytest.approx(0.14265, abs=5e-5)
    assert best_of_2_self_ratio(2000) == pytest.approx(limit, abs=5e-4)
    assert best_of_2_self_ratio(10) == pytest.approx(0.16884, abs=1e-4)  # finite n keeps more


def _ctx(real, candidates, verify, params, n_rng=0, state=None):
    return PolicyContext(generation=1, real=real, synthetic=[candidates.take(np.arange(len(real.train)))],
                         params=params, rng=np.random.default_rng(n_rng), score=None, candidates=candidates,
                         verify=verify, state=state, record={})


@pytest.mark.slow
def test_best_of_2_self_variance_by_monte_carlo():
    """One generation through the plugin's own fit, generator, verifier and policy, many times:
    the mean of s^2 / sigma_prev^2 matches the exact expectation within 4 standard errors."""
    n, reps = 10, 4000
    params = {**G.GAUSSIAN_PARAMS, "n_samples": n}
    real = G.load_gaussian(bench.RealRequest(params, 0))
    rng = np.random.default_rng(123)
    ratios = np.empty(reps)
    for i in range(reps):
        mean, var = rng.normal(), rng.uniform(0.5, 2.0)  # any fitted model M_k
        state = {"mean": np.array([mean]), "cov": np.array([[var]])}
        cands = G.sample_gaussian(bench.GenerateRequest(state, 2 * n, None, params, rng, 0))
        vctx = VerifyContext(generation=1, real=real, state=state, reference_state=state,
                             score=lambda s, x: G.score_gaussian(bench.ScoreRequest(s, x, params)), params=params)
        ctx = _ctx(real, cands, lambda x: P.own(vctx, x), {"k": 2, "verifier": "self"})
        kept = P.best_of(ctx)
        assert len(kept) == n and ctx.record["synthetic_kept"] == n
        fit = G.fit_gaussian(bench.FitRequest(kept, None, "pretrained", None, params, rng, 1))
        ratios[i] = fit["cov"][0, 0] / var
    expected = best_of_2_self_ratio(n)
    se = ratios.std(ddof=1) / np.sqrt(reps)
    assert abs(ratios.mean() - expected) < 4 * se, (ratios.mean(), expected, se)
    # and it is not the naive large-n figure or no selection at all
    assert abs(ratios.mean() - 1.0) > 20 * se


def test_best_of_2_self_through_the_harness(tmp_path):
    """Seeds of the 1-D Gaussian track with best-of:2,self: the fitted variance of generation 1
    over generation 0's has mean r_n (exact), checked within 4 standard errors over the seeds."""
    n, seeds = 10, 40
    runs = api_run("gaussian", preset="paper", seeds=f"0-{seeds - 1}", generations=1, policy="best-of:2,self",
                   set={"n_samples": n}, out=tmp_path)
    ratios = []
    for outcome in runs:
        df = R.read_metrics(outcome.path).to_pandas()
        var = df[df.metric == "gaussian-var"].set_index("generation").value
        ratios.append(var[1] / var[0])
        info = RF.generation_info(outcome.path, 1)
        assert info["candidates_drawn"] == 2 * n and info["synthetic_kept"] == n
        assert info["verifier_mean_kept"] > info["verifier_mean_drawn"]
    ratios = np.array(ratios)
    se = ratios.std(ddof=1) / np.sqrt(seeds)
    assert abs(ratios.mean() - best_of_2_self_ratio(n)) < 4 * se, (ratios.mean(), se)


def _oracle_setup(n=50, wide=1.0, seed=0):
    params = {**G.GAUSSIAN_PARAMS, "n_samples": n}
    real = G.load_gaussian(bench.RealRequest(params, seed))
    state = {"mean": np.array([0.3]), "cov": np.array([[wide]])}
    vctx = VerifyContext(generation=1, real=real, state=state, reference_state=state,
                         score=lambda s, x: G.score_gaussian(bench.ScoreRequest(s, x, params)), params=params)
    return params, real, state, (lambda x: P.oracle(vctx, x))


@pytest.mark.parametrize("q", [0.2, 0.5, 0.8])
def test_filter_with_the_oracle_keeps_every_sample_above_the_quantile(q):
    params, real, state, verify = _oracle_setup()
    n = len(real.train)
    draws = P.filter_candidates({"q": q}, n)
    cands = G.sample_gaussian(bench.GenerateRequest(state, draws, None, params, np.random.default_rng(7), 0))
    ctx = _ctx(real, cands, verify, {"q": q, "verifier": "oracle"})
    kept = P.filter_(ctx)
    # the threshold, computed independently: the truth is N(0, 1)
    truth = stats.norm.logpdf(real.train.data[:, 0])
    threshold = np.quantile(truth, q)
    assert ctx.record["threshold"] == pytest.approx(threshold, rel=1e-12)
    true_cands = stats.norm.logpdf(cands.data[:, 0])
    kept_values = set(kept.data[:, 0].tolist())
    assert len(kept) == n
    # never removes a sample of S (the first n candidates) the truth finds above the quantile
    above_in_s = [x for x, ll in zip(cands.data[:n, 0], true_cands[:n]) if ll >= threshold]
    assert above_in_s and all(x in kept_values for x in above_in_s)
    if ctx.record["shortfall"] == 0:
        assert all(stats.norm.logpdf(x) >= threshold - 1e-12 for x in kept_values)
    assert ctx.record["passed"] == int((true_cands >= threshold).sum())


def test_filter_refills_from_the_best_of_the_rest_when_too_few_pass():
    params, real, state, verify = _oracle_setup(wide=25.0)  # most draws land in the tails
    n = len(real.train)
    draws = P.filter_candidates({"q": 0.9}, n)
    cands = G.sample_gaussian(bench.GenerateRequest(state, draws, None, params, np.random.default_rng(1), 0))
    ctx = _ctx(real, cands, verify, {"q": 0.9, "verifier": "oracle"})
    kept = P.filter_(ctx)
    scores = stats.norm.logpdf(cands.data[:, 0])
    threshold = ctx.record["threshold"]
    passing = scores >= threshold
    assert 0 < passing.sum() < n and ctx.record["shortfall"] == n - passing.sum()
    # all passing kept, and the rest are the best-scoring failures
    expected = set(cands.data[passing, 0]) | set(cands.data[~passing, 0][np.argsort(-scores[~passing])[:n - passing.sum()]])
    assert set(kept.data[:, 0].tolist()) == expected and len(kept) == n


def test_filter_threshold_through_the_harness(tmp_path):
    [outcome] = api_run("gaussian", preset="smoke", seeds=0, generations=3, policy="filter:0.5,oracle", out=tmp_path)
    spec = outcome.spec
    real = G.load_gaussian(bench.RealRequest(spec.params, 0))
    truth = stats.multivariate_normal(mean=np.zeros(2), cov=np.eye(2)).logpdf(real.train.data)
    for k in (1, 2, 3):
        info = RF.generation_info(outcome.path, k)
        assert info["threshold"] == pytest.approx(np.quantile(truth, 0.5), rel=1e-9)
        assert info["candidates_drawn"] == P.filter_draws(0.5) * len(real.train)
        assert info["training_samples"] == len(real.train)


def test_candidates_resume_to_the_same_results(tmp_path):
    a = api_run("gmm", preset="smoke", seeds=0, generations=4, mitigation="best-of:3,m0", out=tmp_path / "a")[0]
    api_run("gmm", preset="smoke", seeds=0, generations=2, mitigation="best-of:3,m0", out=tmp_path / "b")
    b = api_run("gmm", preset="smoke", seeds=0, generations=4, mitigation="best-of:3,m0", out=tmp_path / "b")[0]
    assert_same_results(b.path, a.path)


def test_selection_shares_generation_zero_with_replace(tmp_path):
    base = api_run("gaussian", preset="smoke", seeds=0, generations=2, out=tmp_path)[0]
    best = api_run("gaussian", preset="smoke", seeds=0, generations=2, mitigation="best-of:2,m0", out=tmp_path)[0]
    a, b = R.read_metrics(base.path).to_pandas(), R.read_metrics(best.path).to_pandas()
    row0 = lambda df: df[df.generation == 0].sort_values("metric").value.to_numpy()  # noqa: E731
    np.testing.assert_array_equal(row0(a), row0(b))
    assert not np.array_equal(a[a.generation == 2].value.to_numpy(), b[b.generation == 2].value.to_numpy())


def test_labels_are_read_from_the_spec(bench_plugins):
    b = bench_plugins
    plain = resolve(b, "categorical", "smoke", seed=0)
    assert M.label(b, plain) == "replace"
    via_set = resolve(b, "categorical", "smoke", seed=0, overrides={"top_k": 3})
    via_mitigation = resolve(b, "categorical", "smoke", seed=0, mitigation="top-k:3")
    assert via_set.run_id == via_mitigation.run_id and M.label(b, via_set) == "top-k:3"
    both = resolve(b, "categorical", "smoke", seed=0, mitigation="mix:0.1+top-k:3")
    assert M.label(b, both) == "mix:0.1+top-k:3"
    assert M.label(b, resolve(b, "gmm", "smoke", seed=0, mitigation="filter:0.5,oracle")) == "filter:0.5,oracle"


def test_not_applicable_is_a_message_not_a_crash(capsys, tmp_path):
    code, out, err = bench_cli(capsys, "run", "--plugin", "vae", "-m", "filter:0.5,oracle", "--dry-run")
    assert code != 0 and "does not apply" in err and "exact-loglik" in err
    code, out, err = bench_cli(capsys, "run", "--plugin", "gmm", "-m", "top-k:3", "--dry-run")
    assert code != 0 and "handles tokens, categorical samples" in err
    code, out, err = bench_cli(capsys, "run", "--plugin", "gmm", "-m", "bogus:1", "--dry-run")
    assert code != 0 and "unknown mitigation 'bogus'" in err
    code, out, err = bench_cli(capsys, "run", "--plugin", "gmm", "--policy", "mix:0.1", "-m", "best-of:2", "--dry-run")
    assert code != 0 and "both choose the policy" in err


def test_sweep_skips_what_does_not_apply(capsys, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"generations: 2\nout: {tmp_path / 'out'}\ngrid:\n  plugin: [gaussian, categorical]\n"
                    "  mitigation: [replace, 'top-k:3', 'best-of:2,oracle']\n  seed: [0]\n")
    code, out, err = bench_cli(capsys, "sweep", str(grid), "--workers", "1")
    assert code == 0, out + err
    assert "1 grid entry n/a" in out and "top-k:3 handles tokens, categorical samples and gaussian makes vectors" in out + err
    summary = json.loads(next((tmp_path / "out" / ".sweeps").glob("*.json")).read_text())
    assert summary["counts"]["done"] == 5 and len(summary["not_applicable"]) == 1
    labels = sorted(json.loads(p.read_text())["identity"]["mitigation"]
                    for p in (tmp_path / "out").glob("*/run.json"))
    assert labels == ["best-of:2,oracle", "best-of:2,oracle", "replace", "replace", "top-k:3"]


def test_a_policy_that_asks_for_too_few_candidates_fails_clearly(tmp_path):
    class Short:
        @bench.hookimpl
        def bench_register_policies(self, register):
            register(bench.Policy("short", lambda ctx: ctx.candidates, candidates=lambda p, n: n - 1))

    from bench.plugins import Bench

    b = Bench(extra_plugins=[Short()])
    spec = resolve(b, "gaussian", "smoke", seed=0, generations=1, policy="short")
    from bench.loop import Run

    with pytest.raises(bench.BenchError, match="fewer than the"):
        Run(b, spec, tmp_path).execute()
    assert json.loads((tmp_path / spec.folder_name / "run.json").read_text())["status"] == "failed"


def test_mitigation_table_lists_papers_and_reasons(bench_plugins):
    rows = {r["name"]: r for r in M.table(bench_plugins, ["gaussian", "vae"])}
    assert "Feng et al. 2024" in rows["filter"]["citation"] and "Ferbach" in rows["best-of"]["citation"]
    assert rows["replace"]["where"] == {"gaussian": "applies", "vae": "applies"}
    assert rows["fresh"]["where"]["vae"].startswith("fresh needs fresh-data")


def test_the_docs_own_policy_example_runs_and_is_labelled(tmp_path):
    """docs/mitigations.md "Add your own": the policy there, registered as a plugin, runs through
    the harness with its candidates and gets its own label."""
    text = Path(__file__).resolve().parent.parent.joinpath("docs", "mitigations.md").read_text()
    code = text.split("# my_package/plugin.py, registered under the collapse_bench entry-point group\n")[1]
    code = code.split("```")[0]
    namespace: dict = {}
    exec(compile(code, "docs/mitigations.md", "exec"), namespace)  # noqa: S102 - the project's own docs

    class Mine:
        bench_register_policies = staticmethod(namespace["bench_register_policies"])

    from bench.plugins import Bench
    from bench.loop import Run

    b = Bench(extra_plugins=[Mine()])
    spec = resolve(b, "gaussian", "smoke", seed=0, generations=2, mitigation="typical:2,m0")
    outcome = Run(b, spec, tmp_path).execute()
    assert outcome.status == "complete" and M.label(b, spec) == "typical:2,m0"
    info = RF.generation_info(outcome.path, 1)
    assert info["candidates_drawn"] == 2 * len(G.load_gaussian(bench.RealRequest(spec.params, 0)).train)


def test_bench_mitigations_lists_papers_and_where_each_applies(capsys):
    code, out, err = bench_cli(capsys, "mitigations", "-p", "gmm", "-p", "opt125m", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["tce"]["where"]["opt125m"] == "applies" and "handles tokens" in rows["tce"]["where"]["gmm"]
    assert rows["fresh"]["where"]["gmm"] == "applies" and "fresh-data" in rows["fresh"]["where"]["opt125m"]
    code, out, err = bench_cli(capsys, "mitigations", "-p", "gmm")
    assert code == 0 and "best-of (policy)" in out and "after: Ferbach et al. 2024" in out
    assert "n/a on gmm: top-k:5 handles tokens, categorical samples and gmm makes vectors" in out
    code, out, err = bench_cli(capsys, "mitigations", "-p", "gmmm")
    assert code != 0 and "unknown model 'gmmm'" in err and "Did you mean 'gmm'" in err
