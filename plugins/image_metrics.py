"""Image metrics in the feature space of a classifier trained on the real images (DESIGN.md, "Metrics").

Row k describes model M_k; ``ctx.samples`` is S_{k+1}, an (n, H, W) array of floats in [0, 1]. A
reference classifier (a one-hidden-layer ReLU network) is trained once on the real training images
and their labels (``ctx.real.train.columns["label"]``) and kept for the whole process, so every
generation is judged by the same classifier. Its predicted classes and its hidden-layer activations
("features") of S_{k+1} are compared with those of the real test set:

- ``class-entropy``: entropy (nats) of the predicted-class histogram, generated minus real;
- ``class-coverage``: share of classes holding at least a minimum share of the predictions,
  generated over real;
- ``frechet-distance``: Frechet distance between Gaussians fitted to the features;
- ``vendi-score``: Vendi score of the features under the cosine kernel, generated over real;
- ``feature-logdet-diff``: log-determinant of the (ridged) feature covariance, generated minus real.

The formulas are plain NumPy functions (``class_counts``, ``class_entropy``, ``class_coverage``,
``gaussian_stats``, ``frechet_distance``, ``vendi_score``, ``vendi_score_kernel``); the classifier is
``train_reference_classifier`` / ``reference_classifier``. docs/image-metrics.md gives the formulas
and the choices made. scikit-learn is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import warnings
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np

import bench
from bench import stats
from bench.components import Metric, MetricContext, RealData, Samples
from bench.errors import BenchError
from bench.stats import frechet_gaussians, ratio
from collapse_bench_plugins.metrics import covariance, equal_size, logdet_diff

IMAGE_METRIC_PARAMS: dict[str, Any] = {
    "image_classifier_hidden": 128,  # ReLU units of the reference classifier's hidden layer
    "image_classifier_epochs": 20,  # passes of Adam over the real training images
    "image_classifier_seed": 0,  # initial weights and batch order of the classifier
    "vendi_samples": 1000,  # fixed subset per side for vendi-score (all if fewer)
    "class_coverage_threshold": 0.1,  # a class is covered with >= this times 1/K of the predictions
    "feature_logdet_ridge": 1e-4,  # ridge of feature-logdet-diff, relative to real mean variance
}
LABEL_COLUMN = "label"
# How many trained classifiers the process keeps (one per real data set and setting).
_CACHE_SIZE = 4
# Seeds the fixed subsets of vendi-score (the same rows every generation and every run).
_VENDI_SEED = 0x76656E6469  # "vendi"


# --------------------------------------------------------------------------------------------------
# Pure formulas (NumPy in, floats out)
# --------------------------------------------------------------------------------------------------


def class_counts(labels, n_classes: int) -> np.ndarray:
    """How often each class 0..n_classes-1 occurs in ``labels`` (integers in that range)."""
    y = np.asarray(labels).reshape(-1)
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must be integers in [0, {n_classes}), got {y.dtype} values "
                         f"{y.min()}..{y.max()}")
    return np.bincount(y.astype(np.int64), minlength=n_classes)


def class_entropy(labels, n_classes: int) -> float:
    """Entropy in nats of the label histogram: -sum_c p_c log p_c, p_c = count_c / n (0 log 0 = 0).
    log(n_classes) for a uniform histogram, 0 when every label is the same; NaN for no labels."""
    counts = class_counts(labels, n_classes)
    n = counts.sum()
    if n == 0:
        return math.nan
    p = counts[counts > 0] / n
    return float(-(p * np.log(p)).sum())


def class_coverage(labels, n_classes: int, threshold: float = 0.1) -> float:
    """Share of the n_classes classes that are covered: predicted at least once and for at least
    ``threshold / n_classes`` of the labels (threshold 0: at least once). NaN for no labels."""
    if isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"class_coverage_threshold must lie in [0, 1], got {threshold!r}")
    counts = class_counts(labels, n_classes)
    n = counts.sum()
    if n == 0:
        return math.nan
    covered = (counts > 0) & (counts >= threshold * n / n_classes * (1 - 1e-12))
    return float(covered.sum() / n_classes)


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample covariance (divisor n - 1) of the rows of ``features``, float64."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected an (n, d) array of features, got shape {x.shape}")
    return x.mean(axis=0), covariance(x)


def frechet_distance(mu1, s1, mu2, s2) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, s1) and N(mu2, s2):

        ||mu1 - mu2||^2 + tr(s1) + tr(s2) - 2 tr((s1^1/2 s2 s1^1/2)^1/2)

    by :func:`bench.stats.frechet_gaussians` (eigendecompositions of symmetric matrices, real for
    singular covariances); ``frechet-distance`` passes the generated side first.
    """
    return frechet_gaussians(mu1, s1, mu2, s2)


def vendi_score_kernel(kernel) -> float:
    """Vendi score of an n x n similarity matrix K with unit diagonal: exp(-sum_i l_i log l_i) over
    the eigenvalues l_i of K / n (0 log 0 = 0). 1 when all samples are identical, n when all are
    orthogonal: an effective number of distinct samples."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"expected a non-empty square kernel matrix, got shape {k.shape}")
    if not np.allclose(np.diag(k), 1.0):
        raise ValueError("a Vendi kernel must have a unit diagonal (k(x, x) = 1)")
    return _vendi_from_eigenvalues(np.linalg.eigvalsh((k + k.T) / 2 / k.shape[0]))


def _vendi_from_eigenvalues(lam: np.ndarray) -> float:
    lam = lam[lam > 0]  # a PSD kernel: negative values are rounding noise
    return float(math.exp(-(lam * np.log(lam)).sum()))


def unit_rows(features) -> np.ndarray:
    """Rows scaled to unit length, for the cosine kernel. An all-zero row has no direction: it gets
    an extra coordinate 1 (all other rows 0 there), so zero rows are identical to each other and
    orthogonal to the rest. The extra column appears only when some row is zero."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"expected an (n, d) array of features, got shape {x.shape}")
    norm = np.linalg.norm(x, axis=1)
    zero = norm == 0
    x = x / np.where(zero, 1.0, norm)[:, None]
    if zero.any():
        x = np.hstack([x, zero[:, None].astype(np.float64)])
    return x


def vendi_score(features) -> float:
    """Vendi score of feature rows under the cosine-similarity kernel K_ij = <x_i, x_j> / (|x_i| |x_j|)
    (see :func:`vendi_score_kernel` and :func:`unit_rows`). With unit rows U, K / n = U U^T / n has
    the same non-zero eigenvalues as U^T U / n (d x d), which is used when n > d."""
    u = unit_rows(features)
    n, d = u.shape
    if n == 0:
        return math.nan
    gram = (u.T @ u) / n if n > d else (u @ u.T) / n
    return _vendi_from_eigenvalues(np.linalg.eigvalsh(gram))


def fixed_subset(n: int, size: int, seed: int = _VENDI_SEED) -> np.ndarray:
    """:func:`bench.stats.fixed_subset`, seeded by default with vendi-score's constant."""
    return stats.fixed_subset(n, size, seed)


# --------------------------------------------------------------------------------------------------
# The reference classifier
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReferenceClassifier:
    """A trained one-hidden-layer ReLU network as plain arrays: logits = relu(x W1 + b1) W2 + b2 on
    flattened images x. ``classes`` maps output index to label; ``test_accuracy`` is its accuracy on
    the real test set (NaN when the test set has no labels)."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    classes: np.ndarray
    image_shape: tuple[int, ...]
    test_accuracy: float = math.nan

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def _flat(self, images) -> np.ndarray:
        x = np.asarray(images)
        if x.shape[1:] != self.image_shape:
            raise BenchError(f"images of shape {x.shape[1:]} given to a classifier trained on images of "
                             f"shape {self.image_shape}; generated and real images must have one shape")
        return x.reshape(len(x), -1).astype(np.float64)

    def features(self, images) -> np.ndarray:
        """Hidden-layer activations relu(x W1 + b1), one row per image (float64)."""
        return np.maximum(self._flat(images) @ self.w1 + self.b1, 0.0)

    def predict_index(self, images=None, features=None) -> np.ndarray:
        """Index (0..n_classes-1) of the largest logit of each image, or of given features."""
        h = self.features(images) if features is None else np.asarray(features, dtype=np.float64)
        return np.argmax(h @ self.w2 + self.b2, axis=1)

    def predict(self, images) -> np.ndarray:
        """Predicted labels."""
        return self.classes[self.predict_index(images)]

    def log_confidence(self, images=None, features=None) -> np.ndarray:
        """log max_c softmax(logits)_c of each image (or of given features): the log-probability of
        the predicted class, <= 0, computed as max logit - logsumexp(logits). A two-class network
        has one logistic output z; its confidence is then sigmoid(|z|)."""
        h = self.features(images) if features is None else np.asarray(features, dtype=np.float64)
        logits = h @ self.w2 + self.b2
        if logits.shape[1] == 1:
            return -np.logaddexp(0.0, -np.abs(logits[:, 0]))
        top = logits.max(axis=1)
        return -np.log(np.exp(logits - top[:, None]).sum(axis=1))


def labels_of(samples: Samples, what: str) -> np.ndarray:
    """The integer labels of real samples (column ``label``); BenchError when there are none."""
    if LABEL_COLUMN not in samples.columns:
        raise BenchError(f"the image metrics need the class labels of the {what} images in "
                         f"Samples.columns[{LABEL_COLUMN!r}]; the model bundle's load_real must keep "
                         f"them, or leave the image metrics out of the run's metrics")
    y = np.asarray(samples.columns[LABEL_COLUMN])
    if not np.issubdtype(y.dtype, np.integer):
        raise BenchError(f"the {LABEL_COLUMN!r} column of the {what} images must hold integers, "
                         f"got {y.dtype}")
    return y.astype(np.int64)


def _images(samples: Samples, what: str) -> np.ndarray:
    x = np.asarray(samples.data)
    if samples.kind != "images" or x.ndim != 3:
        raise BenchError(f"the image metrics need {what} of kind 'images', shape (n, H, W); got kind "
                         f"{samples.kind!r}, shape {x.shape}")
    if not np.isfinite(x).all():
        raise BenchError(f"the {what} hold NaN or infinite pixel values")
    return x


def train_reference_classifier(images, labels, hidden: int = 128, epochs: int = 20, seed: int = 0,
                               test_images=None, test_labels=None) -> ReferenceClassifier:
    """Train the reference classifier: scikit-learn's MLPClassifier, one hidden layer of ``hidden``
    ReLU units, Adam (its defaults: learning rate 1e-3, batch 200, L2 alpha 1e-4) for ``epochs``
    passes, weights and batch order from ``seed``. Deterministic for a seed. With test images and
    labels, records its accuracy on them."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x = np.asarray(images)
    y = np.asarray(labels).reshape(-1)
    if len(x) != len(y):
        raise BenchError(f"{len(x)} real training images but {len(y)} labels")
    if len(np.unique(y)) < 2:
        raise BenchError("the reference classifier needs real training images of at least two classes")
    net = MLPClassifier(hidden_layer_sizes=(int(hidden),), activation="relu", solver="adam",
                        max_iter=int(epochs), random_state=int(seed))
    with warnings.catch_warnings():
        # A bounded number of epochs is the point: it trains in seconds, accurately enough.
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(x.reshape(len(x), -1).astype(np.float32), y)
    clf = ReferenceClassifier(
        w1=net.coefs_[0].astype(np.float64), b1=net.intercepts_[0].astype(np.float64),
        w2=net.coefs_[1].astype(np.float64), b2=net.intercepts_[1].astype(np.float64),
        classes=np.asarray(net.classes_), image_shape=tuple(x.shape[1:]))
    if test_images is not None and test_labels is not None and len(test_images):
        acc = float(np.mean(clf.predict(test_images) == np.asarray(test_labels).reshape(-1)))
        clf = dataclasses.replace(clf, test_accuracy=acc)
    return clf


@dataclasses.dataclass(frozen=True)
class RealView:
    """The reference classifier and its view of the real test set (computed once per classifier)."""

    classifier: ReferenceClassifier
    features: np.ndarray  # real test images' features
    predicted: np.ndarray  # their predicted class indices


_classifiers: "OrderedDict[tuple, RealView]" = OrderedDict()
_classifiers_lock = threading.Lock()


def clear_classifier_cache() -> None:
    """Forget every trained reference classifier (the next use trains again)."""
    with _classifiers_lock:
        _classifiers.clear()


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _classifier_settings(params: Mapping) -> tuple[int, int, int]:
    out = []
    for key, minimum in (("image_classifier_hidden", 1), ("image_classifier_epochs", 1),
                         ("image_classifier_seed", 0)):
        v = _param(params, key)
        if isinstance(v, bool) or int(v) != v or v < minimum:
            raise BenchError(f"parameter {key}={v!r}: must be an integer >= {minimum}; set it with "
                             f"--set {key}=VALUE")
        out.append(int(v))
    return out[0], out[1], out[2]


def reference_classifier(real: RealData, params: Mapping | None = None) -> RealView:
    """The reference classifier of ``real`` with its view of the real test set, trained on first use
    and kept in-process (the last few), keyed by the real data's fingerprint (a hash of the images
    and labels when it has none), the image shape and the classifier settings."""
    hidden, epochs, seed = _classifier_settings(params or {})
    train = _images(real.train, "real training images")
    labels = labels_of(real.train, "real training")
    test = _images(real.test, "real test images")
    if len(test) < 2:
        raise BenchError(f"the image metrics need at least 2 real test images, got {len(test)}")
    data_id = real.fingerprint or _digest(train, labels, test)
    key = (data_id, train.shape, test.shape, hidden, epochs, seed)
    with _classifiers_lock:
        side = _classifiers.get(key)
        if side is not None:
            _classifiers.move_to_end(key)
            return side
        test_labels = real.test.columns.get(LABEL_COLUMN)
        clf = train_reference_classifier(train, labels, hidden, epochs, seed, test, test_labels)
        feats = clf.features(test)
        side = RealView(clf, feats, clf.predict_index(features=feats))
        _classifiers[key] = side
        while len(_classifiers) > _CACHE_SIZE:
            _classifiers.popitem(last=False)
        return side


# --------------------------------------------------------------------------------------------------
# Metric compute steps (MetricContext in)
# --------------------------------------------------------------------------------------------------


def _param(params: Mapping, key: str):
    value = params.get(key, IMAGE_METRIC_PARAMS[key])
    return IMAGE_METRIC_PARAMS[key] if value is None else value


@dataclasses.dataclass(frozen=True)
class Classified:
    """S_{k+1} and the real test set as the reference classifier sees them."""

    classifier: ReferenceClassifier
    gen_features: np.ndarray
    gen_predicted: np.ndarray
    real_features: np.ndarray
    real_predicted: np.ndarray


def classified(ctx: MetricContext) -> Classified:
    """Features and predicted classes of S_{k+1} and of the real test set (once per generation)."""

    def compute():
        side = reference_classifier(ctx.real, ctx.params)
        gen = _images(ctx.samples, "generated samples")
        if len(gen) < 2:
            raise BenchError(f"the image metrics need at least 2 generated samples, got {len(gen)}")
        feats = side.classifier.features(gen)
        return Classified(side.classifier, feats, side.classifier.predict_index(features=feats),
                          side.features, side.predicted)

    return ctx.cached("image:classified", compute)


def compute_class_entropy(ctx: MetricContext) -> float:
    c = classified(ctx)
    gen, real = equal_size(c.gen_predicted, c.real_predicted)
    return class_entropy(gen, c.classifier.n_classes) - class_entropy(real, c.classifier.n_classes)


def compute_class_coverage(ctx: MetricContext) -> float:
    c = classified(ctx)
    t = float(_param(ctx.params, "class_coverage_threshold"))
    gen, real = equal_size(c.gen_predicted, c.real_predicted)
    k = c.classifier.n_classes
    return ratio(class_coverage(gen, k, t), class_coverage(real, k, t))


def compute_frechet_distance(ctx: MetricContext) -> float:
    c = classified(ctx)
    mu_g, s_g = gaussian_stats(c.gen_features)
    mu_r, s_r = gaussian_stats(c.real_features)
    return frechet_distance(mu_g, s_g, mu_r, s_r)


def compute_vendi_score(ctx: MetricContext) -> float:
    c = classified(ctx)
    v = _param(ctx.params, "vendi_samples")
    if isinstance(v, bool) or int(v) != v or v < 2:
        raise BenchError(f"parameter vendi_samples={v!r}: must be an integer >= 2")
    m = min(int(v), len(c.gen_features), len(c.real_features))
    gen = c.gen_features[fixed_subset(len(c.gen_features), m)]
    real = c.real_features[fixed_subset(len(c.real_features), m)]
    return ratio(vendi_score(gen), vendi_score(real))


def compute_feature_logdet_diff(ctx: MetricContext) -> float:
    c = classified(ctx)
    ridge = float(_param(ctx.params, "feature_logdet_ridge"))
    gen, real = equal_size(c.gen_features, c.real_features)
    return logdet_diff(covariance(gen), covariance(real), ridge)


# --------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------

_IMAGES = ("images",)

METRICS: Sequence[Metric] = (
    Metric(
        name="class-entropy",
        compute=compute_class_entropy,
        direction="target",
        target=0.0,
        kinds=_IMAGES,
        description="entropy (nats) of the reference classifier's predicted-class histogram of "
        "S_{k+1} minus that of an equal-size real test sample",
    ),
    Metric(
        name="class-coverage",
        compute=compute_class_coverage,
        direction="target",
        target=1.0,
        kinds=_IMAGES,
        description="share of classes with at least class_coverage_threshold/K of the predictions, "
        "generated over an equal-size real test sample",
    ),
    Metric(
        name="frechet-distance",
        compute=compute_frechet_distance,
        direction="lower",
        kinds=_IMAGES,
        description="Frechet distance between Gaussians fitted to the reference classifier's "
        "hidden features of S_{k+1} and of the real test set",
    ),
    Metric(
        name="vendi-score",
        compute=compute_vendi_score,
        direction="target",
        target=1.0,
        kinds=_IMAGES,
        description="Vendi score (cosine kernel on classifier features) of vendi_samples fixed "
        "samples, generated over real test",
    ),
    Metric(
        name="feature-logdet-diff",
        compute=compute_feature_logdet_diff,
        direction="target",
        target=0.0,
        kinds=_IMAGES,
        description="log-determinant of the ridged classifier-feature covariance of S_{k+1} minus "
        "that of an equal-size real test sample",
    ),
)


@bench.hookimpl
def bench_register_metrics(register) -> None:
    for metric in METRICS:
        register(metric)


# --------------------------------------------------------------------------------------------------
# The classifier verifier (for selecting policies: filter, best-of)
# --------------------------------------------------------------------------------------------------


def verify_classifier(ctx: bench.VerifyContext, samples: Samples) -> np.ndarray:
    """Each sample's log max-softmax probability under the reference classifier (its confidence in
    the class it predicts), float64, higher = more confident. The classifier is the one the image
    metrics use (:func:`reference_classifier`, trained once per real data set and setting), kept in
    ``ctx.cache`` for the verifier's later calls."""
    side = ctx.cache.get("image:reference-classifier")
    if side is None:
        side = ctx.cache["image:reference-classifier"] = reference_classifier(ctx.real, ctx.params)
    x = _images(samples, "samples to verify")
    return np.asarray(side.classifier.log_confidence(x), dtype=np.float64)


@bench.hookimpl
def bench_register_verifiers(register) -> None:
    register(bench.Verifier(
        name="classifier", score=verify_classifier, kinds=_IMAGES, needs=("reference-classifier",),
        description="log of the reference classifier's top-class probability (its confidence)",
    ))
