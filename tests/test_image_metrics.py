"""Image metrics (plugins/image_metrics.py): closed forms, scipy, hand-worked kernels, and the metrics
on scikit-learn's 8x8 digits (real copies near the targets, one collapsed digit far from them)."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
from scipy import special, stats

import bench
from bench.components import MetricContext, ModelBundle, RealData, Samples
from bench.errors import BenchError
from collapse_bench_plugins import image_metrics as I

# Small classifier settings for the 8x8 digits: trains in well under a second.
CLF = {"image_classifier_hidden": 64, "image_classifier_epochs": 50, "image_classifier_seed": 0}
N_TRAIN = 1200


@pytest.fixture(scope="module")
def digits():
    """sklearn's 1,797 8x8 digits in [0, 1], shuffled once, split 1200 train / 597 test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x = (d.images[order] / 16.0).astype(np.float32)
    y = d.target[order].astype(np.int64)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def images(x, labels=None) -> Samples:
    cols = {} if labels is None else {"label": [int(v) for v in labels]}
    return Samples("images", np.asarray(x, dtype=np.float32), cols)


@pytest.fixture(scope="module")
def real(digits):
    xtr, ytr, xte, yte = digits
    return RealData(train=images(xtr, ytr), test=images(xte, yte), fingerprint="sklearn-digits-test")


def make_ctx(real, generated, params=None) -> MetricContext:
    bundle = ModelBundle(name="fake-vae", kind="images", load_real=lambda p, s: real, trainer="t",
                         generator="g", scorer="s")
    return MetricContext(generation=1, bundle=bundle, params={**CLF, **(params or {})}, real=real,
                         state={}, reference_state={}, samples=images(generated), score=None,
                         rng=np.random.default_rng(0))


def compute_all(ctx) -> dict:
    return {m.name: m.compute(ctx) for m in I.METRICS}


# --------------------------------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------------------------------


def random_spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d


def test_frechet_distance_1d_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): (m1 - m2)^2 + (s1 - s2)^2
    assert I.frechet_distance([1.0], [[4.0]], [-0.5], [[0.25]]) == pytest.approx(1.5**2 + 1.5**2)
    assert I.frechet_distance(0.3, 2.0, 0.3, 2.0) == pytest.approx(0.0, abs=1e-12)


def test_frechet_distance_diagonal_covariances_closed_form():
    # commuting covariances: sum (mu1 - mu2)^2 + sum (sqrt a - sqrt b)^2, zero variances included
    a, b = np.array([1.0, 4.0, 0.0, 9.0]), np.array([0.25, 4.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert I.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)


def scipy_frechet(mu1, s1, mu2, s2):
    """The usual FID code: tr sqrtm(s1 s2) with scipy's general matrix square root."""
    with warnings.catch_warnings():  # "singular matrix": a dead ReLU unit has no variance
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.mark.parametrize("d", [2, 7, 30])
def test_frechet_distance_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d) + 0.1 * np.eye(d), random_spd(rng, d) + 0.1 * np.eye(d)
    got = I.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(scipy_frechet(mu1, s1, mu2, s2), rel=1e-8)
    assert got == pytest.approx(I.frechet_distance(mu2, s2, mu1, s1), rel=1e-8)  # symmetric


def test_frechet_distance_rank_deficient_covariances():
    # Both covariances of rank 3 in 10 dimensions; the eigen route stays real and >= 0. Against the
    # same formula with scipy's sqrtm of the symmetric product (its result is PSD here).
    rng = np.random.default_rng(3)
    s1, s2 = random_spd(rng, 10, rank=3), random_spd(rng, 10, rank=3)
    r1 = scipy.linalg.sqrtm(s1).real
    want = np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(r1 @ s2 @ r1)).real
    assert I.frechet_distance(np.zeros(10), s1, np.zeros(10), s2) == pytest.approx(want, rel=1e-6)
    assert I.frechet_distance(np.zeros(10), s1, np.zeros(10), s1) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_stats_is_mean_and_unbiased_covariance():
    x = np.random.default_rng(0).normal(size=(50, 4))
    mu, s = I.gaussian_stats(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(s, np.cov(x.T), rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# Vendi score
# --------------------------------------------------------------------------------------------------


def test_vendi_identical_samples_score_one_orthogonal_samples_score_n():
    assert I.vendi_score(np.tile([[0.3, 2.0, 1.0]], (7, 1))) == pytest.approx(1.0)
    assert I.vendi_score(np.eye(5) * 3.0) == pytest.approx(5.0)  # n <= d: the n x n route
    # n > d: 12 samples in 3 orthogonal directions, 4 each -> exp(log 3) = 3 (the d x d route)
    assert I.vendi_score(np.repeat(np.eye(3), 4, axis=0)) == pytest.approx(3.0)
    assert I.vendi_score_kernel(np.ones((4, 4))) == pytest.approx(1.0)
    assert I.vendi_score_kernel(np.eye(6)) == pytest.approx(6.0)


def test_vendi_two_groups_is_exp_entropy_of_group_shares():
    # a copies of one direction, b of an orthogonal one: eigenvalues a/n, b/n -> exp(H(a/n, b/n))
    x = np.vstack([np.tile([1.0, 0.0], (3, 1)), np.tile([0.0, 2.0], (1, 1))])
    assert I.vendi_score(x) == pytest.approx(math.exp(stats.entropy([3, 1])))


def test_vendi_two_by_two_kernel_by_hand():
    # K = [[1, s], [s, 1]]: eigenvalues of K/2 are (1 +- s)/2
    s = 0.6
    lam = np.array([(1 + s) / 2, (1 - s) / 2])
    assert I.vendi_score_kernel([[1, s], [s, 1]]) == pytest.approx(math.exp(-(lam * np.log(lam)).sum()))
    # two unit vectors at cosine 0.6 give the same
    assert I.vendi_score([[1.0, 0.0], [0.6, 0.8]]) == pytest.approx(I.vendi_score_kernel([[1, s], [s, 1]]))


@pytest.mark.parametrize("n, d", [(40, 8), (6, 20)])
def test_vendi_matches_direct_eigen_computation_of_the_cosine_kernel(n, d):
    from sklearn.metrics.pairwise import cosine_similarity

    x = np.abs(np.random.default_rng(n).normal(size=(n, d)))
    k = cosine_similarity(x)
    lam = np.linalg.eigvalsh(k / n)
    lam = lam[lam > 1e-15]
    want = math.exp(-(lam * np.log(lam)).sum())
    assert I.vendi_score(x) == pytest.approx(want, rel=1e-9)
    assert I.vendi_score_kernel(k) == pytest.approx(want, rel=1e-9)
    assert I.vendi_score(x * 17.0) == pytest.approx(want, rel=1e-9)  # cosine: scale-free


def test_vendi_zero_rows_are_identical_to_each_other_and_orthogonal_to_the_rest():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    assert I.vendi_score(x) == pytest.approx(math.exp(stats.entropy([2, 1])))
    assert I.unit_rows([[3.0, 4.0]]).tolist() == [[0.6, 0.8]]  # no extra column without zero rows


def test_vendi_kernel_needs_a_unit_diagonal():
    with pytest.raises(ValueError, match="unit diagonal"):
        I.vendi_score_kernel([[2.0, 0.0], [0.0, 1.0]])


# --------------------------------------------------------------------------------------------------
# Class entropy and coverage
# --------------------------------------------------------------------------------------------------


def test_class_entropy_by_hand():
    assert I.class_entropy(np.arange(10), 10) == pytest.approx(math.log(10))
    assert I.class_entropy([4, 4, 4], 10) == 0.0
    assert I.class_entropy([0, 0, 1, 2], 3) == pytest.approx(1.5 * math.log(2))  # counts 2, 1, 1
    assert I.class_entropy([1, 1, 2, 2, 2, 2], 5) == pytest.approx(stats.entropy([2, 4]))
    assert math.isnan(I.class_entropy([], 3))
    with pytest.raises(ValueError):
        I.class_entropy([0, 3], 3)


def test_class_coverage_by_hand():
    y = np.array([0] * 50 + [1] * 45 + [2] * 4 + [3] * 1)  # 100 labels, 4 classes: 1/K = 25%
    assert I.class_coverage(y, 4, 0.0) == 1.0  # every class at least once
    assert I.class_coverage(y, 4, 0.04) == 1.0  # share >= 1%: class 3 has exactly 1%
    assert I.class_coverage(y, 4, 0.1) == 0.75  # share >= 2.5%: class 3 is out
    assert I.class_coverage(y, 5, 0.0) == 0.8  # class 4 never predicted
    assert I.class_coverage(y, 4, 1.0) == 0.5  # share >= 25%
    with pytest.raises(ValueError):
        I.class_coverage(y, 4, 1.5)


# --------------------------------------------------------------------------------------------------
# The reference classifier
# --------------------------------------------------------------------------------------------------


def test_classifier_is_accurate_and_matches_sklearn(digits):
    from sklearn.neural_network import MLPClassifier

    xtr, ytr, xte, yte = digits
    clf = I.train_reference_classifier(xtr, ytr, 64, 50, 0, xte, yte)
    assert clf.test_accuracy > 0.9
    assert clf.image_shape == (8, 8) and clf.n_classes == 10
    with warnings.catch_warnings():  # sklearn's ConvergenceWarning at a bounded epoch count
        warnings.simplefilter("ignore")
        net = MLPClassifier((64,), max_iter=50, random_state=0).fit(xtr.reshape(len(xtr), -1), ytr)
    # the arrays it keeps are sklearn's network: same predictions, features = its hidden layer
    np.testing.assert_array_equal(clf.predict(xte), net.predict(xte.reshape(len(xte), -1)))
    hidden = np.maximum(xte.reshape(len(xte), -1) @ net.coefs_[0] + net.intercepts_[0], 0)
    np.testing.assert_allclose(clf.features(xte), hidden, rtol=1e-5, atol=1e-6)
    # deterministic for a seed
    again = I.train_reference_classifier(xtr, ytr, 64, 50, 0)
    np.testing.assert_array_equal(again.w1, clf.w1)


def test_classifier_is_trained_once_per_real_data_and_settings(real, monkeypatch):
    I.clear_classifier_cache()
    calls = []
    train = I.train_reference_classifier

    def counting(*args, **kwargs):
        calls.append(1)
        return train(*args, **kwargs)

    monkeypatch.setattr(I, "train_reference_classifier", counting)
    gen = real.train.data[:300]
    for generation in range(3):  # three generations: new contexts, the same classifier
        ctx = make_ctx(real, gen)
        ctx.generation = generation
        compute_all(ctx)
    assert len(calls) == 1
    first = I.reference_classifier(real, CLF)
    assert I.reference_classifier(real, CLF) is first
    # another data set (fingerprint) or other settings train another classifier
    other = RealData(train=real.train, test=real.test, fingerprint="other")
    assert I.reference_classifier(other, CLF).classifier is not first.classifier
    assert len(calls) == 2
    I.reference_classifier(real, {**CLF, "image_classifier_seed": 1})
    assert len(calls) == 3
    # without a fingerprint the images and labels are hashed: equal data, one classifier
    anon = RealData(train=real.train, test=real.test)
    anon_copy = RealData(train=images(real.train.data.copy(), real.train.columns["label"]),
                         test=real.test)
    assert I.reference_classifier(anon, CLF) is I.reference_classifier(anon_copy, CLF)
    assert len(calls) == 4


# --------------------------------------------------------------------------------------------------
# The metrics on hand-made contexts
# --------------------------------------------------------------------------------------------------


def test_real_test_copies_score_the_targets_exactly(real):
    out = compute_all(make_ctx(real, real.test.data.copy()))
    assert out["class-entropy"] == 0.0
    assert out["class-coverage"] == 1.0
    assert out["frechet-distance"] == pytest.approx(0.0, abs=1e-8)
    assert out["vendi-score"] == pytest.approx(1.0, rel=1e-12)
    assert out["feature-logdet-diff"] == pytest.approx(0.0, abs=1e-8)


def test_independent_real_images_score_near_the_targets(real):
    # The real training images against the real test set: equal-size cuts of two samples of digits.
    ctx = make_ctx(real, real.train.data)
    c = I.classified(ctx)
    k, n = c.classifier.n_classes, len(c.real_predicted)
    out = compute_all(ctx)
    # For near-uniform class shares, n (log K - H) ~ chi2_{K-1} / 2, so each side's entropy sits
    # within chi2_{K-1}(0.999) / (2 n) of log K (both are near log K): that bounds the difference.
    assert abs(out["class-entropy"]) < stats.chi2.ppf(0.999, k - 1) / (2 * n)
    assert out["class-coverage"] == 1.0
    # The Vendi score is a smooth function of the d x d second moment of unit features, whose error
    # is O(1/sqrt(n)); at n = 597 a few percent. Collapse moves it by tens of percent (below).
    assert abs(out["vendi-score"] - 1.0) < 0.1
    assert out["frechet-distance"] < 0.2 * compute_all(make_ctx(real, one_digit(real)))["frechet-distance"]


def one_digit(real, digit=3):
    y = np.asarray(real.train.columns["label"])
    return real.train.data[y == digit]


def test_a_collapsed_set_scores_far_from_the_targets(real):
    out = compute_all(make_ctx(real, one_digit(real)))
    # log 10 = 2.30 for the near-uniform real histogram; one digit gives about 0, plus what the
    # classifier's errors spread (95% on one class, 5% over the rest is about 0.3 nats)
    assert out["class-entropy"] < -1.5
    # the classifier's few errors on ~120 images of one digit can put 2 images (over 1%, the
    # default threshold of 0.1 / K) in another class; at 5% of the predictions only the digit is left
    assert out["class-coverage"] <= 0.5
    strict = make_ctx(real, one_digit(real), {"class_coverage_threshold": 0.5})
    assert I.compute_class_coverage(strict) == pytest.approx(0.1)
    assert out["vendi-score"] < 0.7
    assert out["feature-logdet-diff"] < -10.0
    assert out["frechet-distance"] > 1.0


def test_wrappers_apply_the_formulas_to_the_classifier_view(real):
    # Recompute each metric from the classifier's features and predictions with the formulas.
    gen = real.train.data[:400]
    ctx = make_ctx(real, gen, {"vendi_samples": 150, "class_coverage_threshold": 0.5})
    side = I.reference_classifier(real, CLF)
    clf = side.classifier
    fg, fr = clf.features(gen), clf.features(real.test.data)
    pg, pr = clf.predict_index(gen), clf.predict_index(real.test.data)
    keep = I.equal_size(np.arange(len(gen)), np.arange(len(fr)))[1]  # the test rows kept
    out = compute_all(ctx)
    assert out["class-entropy"] == pytest.approx(I.class_entropy(pg, 10) - I.class_entropy(pr[keep], 10))
    assert out["class-coverage"] == pytest.approx(I.class_coverage(pg, 10, 0.5) / I.class_coverage(pr[keep], 10, 0.5))
    mu_g, s_g = fg.mean(0), np.cov(fg.T)
    mu_r, s_r = fr.mean(0), np.cov(fr.T)
    assert out["frechet-distance"] == pytest.approx(scipy_frechet(mu_g, s_g, mu_r, s_r), rel=1e-6)
    vg = I.vendi_score(fg[I.fixed_subset(400, 150)])
    vr = I.vendi_score(fr[I.fixed_subset(len(fr), 150)])
    assert out["vendi-score"] == pytest.approx(vg / vr)
    cg, cr = np.cov(fg.T), np.cov(fr[keep].T)
    lam = 1e-4 * np.trace(cr) / len(cr)
    want = np.linalg.slogdet(cg + lam * np.eye(len(cg)))[1] - np.linalg.slogdet(cr + lam * np.eye(len(cr)))[1]
    assert out["feature-logdet-diff"] == pytest.approx(want, rel=1e-9)


# --------------------------------------------------------------------------------------------------
# Mistakes and registration
# --------------------------------------------------------------------------------------------------


def test_missing_labels_wrong_shapes_and_bad_params_are_user_errors(real):
    unlabelled = RealData(train=images(real.train.data), test=real.test, fingerprint="no-labels")
    with pytest.raises(BenchError, match="label"):
        compute_all(make_ctx(unlabelled, real.test.data))
    with pytest.raises(BenchError, match="shape"):
        compute_all(make_ctx(real, np.zeros((10, 28, 28))))
    with pytest.raises(BenchError, match="NaN"):
        compute_all(make_ctx(real, np.full((10, 8, 8), np.nan)))
    with pytest.raises(BenchError, match="image_classifier_epochs"):
        I.reference_classifier(real, {**CLF, "image_classifier_epochs": 0})
    with pytest.raises(BenchError, match="vendi_samples"):
        I.compute_vendi_score(make_ctx(real, real.test.data, {"vendi_samples": 1}))


def test_registered_metrics_directions_and_params():
    got = []
    I.bench_register_metrics(got.append)
    spec = {m.name: (m.direction, m.target, m.kinds, m.needs_scorer) for m in got}
    assert spec == {
        "class-entropy": ("target", 0.0, ("images",), False),
        "class-coverage": ("target", 1.0, ("images",), False),
        "frechet-distance": ("lower", None, ("images",), False),
        "vendi-score": ("target", 1.0, ("images",), False),
        "feature-logdet-diff": ("target", 0.0, ("images",), False),
    }
    assert set(I.IMAGE_METRIC_PARAMS) == {
        "image_classifier_hidden", "image_classifier_epochs", "image_classifier_seed",
        "vendi_samples", "class_coverage_threshold", "feature_logdet_ridge"}


# --------------------------------------------------------------------------------------------------
# The classifier verifier
# --------------------------------------------------------------------------------------------------


def verify_ctx(real, params=None) -> bench.VerifyContext:
    return bench.VerifyContext(generation=1, real=real, state={}, reference_state={}, score=None,
                               params={**CLF, **(params or {})})


def test_classifier_verifier_is_the_log_top_class_probability(real):
    ctx = verify_ctx(real)
    scores = I.verify_classifier(ctx, real.test)
    assert scores.dtype == np.float64 and scores.shape == (len(real.test),)
    assert np.isfinite(scores).all() and (scores <= 0).all()
    # Independently: log of the largest softmax probability of the network's logits.
    clf = I.reference_classifier(real, CLF).classifier
    logits = clf.features(real.test.data) @ clf.w2 + clf.b2
    np.testing.assert_allclose(scores, np.log(special.softmax(logits, axis=1).max(axis=1)), rtol=1e-10, atol=1e-12)


def test_classifier_verifier_scores_real_digits_above_noise(real):
    ctx = verify_ctx(real)
    digits = I.verify_classifier(ctx, real.test)
    noise_images = np.random.default_rng(1).uniform(0.0, 1.0, size=real.test.data.shape).astype(np.float32)
    noise = I.verify_classifier(ctx, images(noise_images))
    assert noise.shape == (len(noise_images),) and np.isfinite(noise).all()
    # Welch's standard error of the difference of the two means.
    se = math.sqrt(digits.var(ddof=1) / len(digits) + noise.var(ddof=1) / len(noise))
    assert digits.mean() - noise.mean() > 4.0 * se, (digits.mean(), noise.mean(), se)


def test_classifier_verifier_is_deterministic_and_reuses_the_metrics_classifier(real, monkeypatch):
    first = I.verify_classifier(verify_ctx(real), real.test)
    calls = []
    monkeypatch.setattr(I, "train_reference_classifier", lambda *a, **k: calls.append(1))
    ctx = verify_ctx(real)
    again = I.verify_classifier(ctx, real.test)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(I.verify_classifier(ctx, real.test), first)
    assert calls == []  # the classifier the metrics trained, not a new one
    assert ctx.cache["image:reference-classifier"] is I.reference_classifier(real, CLF)
    # Other classifier settings mean another classifier (the run's params decide, as for the metrics).
    monkeypatch.undo()
    other = I.verify_classifier(verify_ctx(real, {"image_classifier_seed": 1}), real.test)
    assert not np.array_equal(other, first)


def test_classifier_verifier_rejects_what_it_cannot_score(real):
    with pytest.raises(BenchError, match="shape"):
        I.verify_classifier(verify_ctx(real), images(np.zeros((3, 28, 28))))
    with pytest.raises(BenchError, match="NaN"):
        I.verify_classifier(verify_ctx(real), images(np.full((3, 8, 8), np.nan)))


def test_log_confidence_of_a_two_class_network_is_the_logistic_of_the_margin():
    # scikit-learn gives a two-class network one logistic output z: P(top class) = sigmoid(|z|).
    clf = I.ReferenceClassifier(w1=np.eye(2), b1=np.zeros(2), w2=np.array([[1.0], [-1.0]]), b2=np.array([0.5]),
                                classes=np.array([0, 1]), image_shape=(1, 2))
    x = np.array([[[3.0, 0.0]], [[0.0, 3.0]], [[0.0, 0.5]]])
    z = np.array([3.5, -2.5, 0.0])
    np.testing.assert_allclose(clf.log_confidence(x), np.log(special.expit(np.abs(z))), rtol=1e-12)


def test_classifier_verifier_registration_and_the_vae_bundle(bench_plugins):
    ver = bench_plugins.verifiers.get("classifier")
    assert ver.score is I.verify_classifier
    assert ver.kinds == ("images",) and ver.needs == ("reference-classifier",)
    vae = bench_plugins.models.get("vae")
    assert "reference-classifier" in vae.features(vae.params)
    assert vae.headline == bench.Headline("vae-latent-spread/dim", 0.5, "ratio", vae.headline.why)
    assert "vae-latent-spread" in vae.metrics
