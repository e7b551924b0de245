"""Bridges: evaluate modules as metrics, and TensorBoard logging of runs (docs/bridges.md)."""

import json
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import bench
import bench.api as cb
from bench import results as R
from bench import runfolder as RF
from bench.bridges import evaluate_metric
from bench.errors import BenchError
from bench.plugins import Bench
from collapse_bench_plugins import tensorboard_logger as tb
from tests.helpers import bench_cli
from tests.toy_plugins import Toy

# -- a tiny text model -----------------------------------------------------------------------------

WORDS = ["red", "green", "blue", "gold"]
BLOCK = 4
NOISE = 0.3  # share of tokens the toy generator redraws


def _text(block):
    return " ".join(WORDS[t] for t in block)


def _load_real(params, seed):
    """Consecutive blocks of one random word stream, with their text (block i+1 follows block i)."""
    rng = np.random.default_rng([seed, 11])
    n = params["n"]
    stream = rng.integers(len(WORDS), size=(n + 10) * BLOCK)
    blocks = stream.reshape(-1, BLOCK)
    train, test = blocks[:n], blocks[n:]
    return bench.RealData(train=bench.Samples("tokens", train, {"text": [_text(b) for b in train]}),
                          test=bench.Samples("tokens", test))


def _fit(request):
    return {"blocks": np.asarray(request.data.data, dtype=np.int64)}


def _generate(state, n, prompts, params, rng):
    """Sample i continues prompt i with the block after it in the training data, NOISE of its words redrawn."""
    blocks = state["blocks"]
    out = blocks[(np.arange(n) + 1) % len(blocks)].copy()
    redraw = rng.random(out.shape) < NOISE
    out[redraw] = rng.integers(len(WORDS), size=int(redraw.sum()))
    return bench.Samples("tokens", out, {"text": [_text(b) for b in out]})


def _score(state, samples, params):
    length = samples.data.shape[1]
    return bench.Scores(np.full(len(samples), -length * math.log(len(WORDS))), np.full(len(samples), length))


TEXT_STATS = '''
import datasets
import evaluate


class TextStats(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="first-word agreement and mean words", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        match = [p.split()[0] == r.split()[0] for p, r in zip(predictions, references)]
        return {"first_word_match": sum(match) / len(match),
                "mean_words": sum(len(p.split()) for p in predictions) / len(predictions),
                "label": "toy", "per_item": match}
'''

PRED_LEN = '''
import datasets
import evaluate


class PredLen(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="count and mean characters", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string")}))

    def _compute(self, predictions):
        return {"n": len(predictions), "mean_chars": sum(len(p) for p in predictions) / len(predictions)}
'''


def _modules(tmp_path):
    """text_stats/ as a folder module and pred_len.py as a single script."""
    folder = tmp_path / "mods" / "text_stats"
    folder.mkdir(parents=True)
    (folder / "text_stats.py").write_text(TEXT_STATS)
    script = tmp_path / "mods" / "pred_len.py"
    script.write_text(PRED_LEN)
    return folder, script


class TextToy:
    """A tokens bundle whose metrics are evaluate modules, registered the way a user's plugin would."""

    __name__ = "text-toy"

    def __init__(self, folder, script):
        self.folder, self.script = folder, script

    @bench.hookimpl
    def bench_register_models(self, register):
        register(bench.ModelBundle(
            name="text-toy", kind="tokens", load_real=_load_real, trainer="text-toy-fit",
            generator="text-toy-sample", scorer="text-toy-score",
            metrics=("toy-first-word", "toy-stats", "toy-lengths", "toy-custom"),
            params={"n": 40}, presets={"smoke": {"generations": 2}, "paper": {}}))

    @bench.hookimpl
    def bench_register_trainers(self, register):
        register(bench.Trainer("text-toy-fit", _fit, kinds=("tokens",)))

    @bench.hookimpl
    def bench_register_generators(self, register):
        register(bench.Generator("text-toy-sample", _generate, kinds=("tokens",)))

    @bench.hookimpl
    def bench_register_scorers(self, register):
        register(bench.Scorer("text-toy-score", _score, kinds=("tokens",)))

    @bench.hookimpl
    def bench_register_metrics(self, register):
        register(evaluate_metric(self.folder, name="toy-first-word", direction="higher", key="first_word_match"))
        register(evaluate_metric(self.folder, name="toy-stats", direction="higher"))
        register(evaluate_metric(self.script, name="toy-lengths", direction="higher"))
        register(evaluate_metric(
            self.script, name="toy-custom", direction="higher", key="mean_chars",
            inputs=lambda ctx: {"predictions": [str(int(x)) for x in ctx.samples.data[:, 0]]}))


@pytest.mark.slow
def test_evaluate_metric_rows_equal_independent_values(tmp_path):
    folder, script = _modules(tmp_path)
    b = Bench(extra_plugins=[TextToy(folder, script)])
    (outcome,) = cb.run("text-toy", preset="smoke", out=tmp_path / "res", bench=b)
    assert outcome.status == "complete"
    table = cb.metrics(outcome)
    got = {(int(r.generation), r.metric): r.value for r in table.itertuples()}

    real_text = _load_real({"n": 40}, 0).train.columns["text"]
    references = real_text[1:]  # sample i continues prompt i; real block i+1 follows it
    for k in range(3):
        samples, _ = RF.generation_samples(outcome.path, k)
        texts = samples.columns["text"]
        assert len(texts) == 40
        paired = texts[:39]
        match = np.mean([p.split()[0] == r.split()[0] for p, r in zip(paired, references)])
        expected = {
            "toy-first-word": match,
            "toy-stats/first_word_match": match,
            "toy-stats/mean_words": np.mean([len(p.split()) for p in paired]),
            "toy-lengths/n": 40.0,  # a module without references gets every text
            "toy-lengths/mean_chars": np.mean([len(t) for t in texts]),
            "toy-custom": np.mean([len(str(int(x))) for x in samples.data[:, 0]]),
        }
        assert {m for (g, m) in got if g == k} == set(expected)  # 'label' and 'per_item' are not numbers
        for metric, value in expected.items():
            assert got[(k, metric)] == pytest.approx(value, rel=1e-12), (k, metric)
    # Generation 0 continues the real blocks, so most first words agree (the alignment is right).
    assert got[(0, "toy-first-word")] > 0.6

    versions = dict(zip(table.metric, table.metric_version))
    assert versions["toy-stats/mean_words"].startswith("evaluate-")
    assert versions["toy-lengths/n"] != versions["toy-stats/mean_words"]


REF_STATS = '''
import datasets
import evaluate


class RefStats(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="what the references are, in order", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}))

    def _compute(self, predictions, references):
        return {"n": len(references),
                "weighted_chars": sum((i + 1) * len(r) for i, r in enumerate(references)),
                "first_words": sum((i + 1) * len(r.split()[0]) for i, r in enumerate(references))}
'''


class LmReferences:
    """A metric of the language-model track that reports its references, registered as a user's plugin would."""

    __name__ = "lm-references"

    def __init__(self, script):
        self.script = script

    @bench.hookimpl
    def bench_register_metrics(self, register):
        register(evaluate_metric(self.script, name="lm-refs", direction="higher"))


def _ref_stats(references):
    return {"lm-refs/n": float(len(references)),
            "lm-refs/weighted_chars": float(sum((i + 1) * len(r) for i, r in enumerate(references))),
            "lm-refs/first_words": float(sum((i + 1) * len(r.split()[0]) for i, r in enumerate(references)))}


@pytest.mark.slow
def test_language_model_references_are_the_next_real_blocks(tmp_path):
    """For the LM bundles (no text column on real data) the references are real blocks 1..n-1, read
    from the generated samples' ``prompt`` column (sample i continues real block i); checked on a
    real run against the synthetic source's own decoder of the real blocks."""
    from collapse_bench_plugins import lm_source

    script = tmp_path / "ref_stats.py"
    script.write_text(REF_STATS)
    b = Bench(extra_plugins=[LmReferences(script)])
    (outcome,) = cb.run("opt125m", "smoke", generations=0, set={"max_blocks": 6, "epochs": 1},
                        metrics=["lm-refs"], out=tmp_path / "res", bench=b)
    assert outcome.status == "complete"
    got = {r.metric: r.value for r in cb.metrics(outcome).itertuples() if r.metric.startswith("lm-refs/")}

    corpus = lm_source.synthetic_corpus(outcome.spec.params)
    blocks = b.models.get("opt125m").load_real(bench.RealRequest(outcome.spec.params, 0)).train.data
    assert len(blocks) == 6
    expected = _ref_stats([corpus.decode_words(block) for block in blocks[1:]])
    assert _ref_stats([corpus.decode_words(block) for block in blocks[:-1]]) != expected  # off by one shows
    assert got == expected


def test_references_without_text_or_prompts_is_a_message():
    from bench.bridges import text_inputs

    real = bench.RealData(train=bench.Samples("tokens", np.zeros((3, 2), dtype=np.int64)),
                          test=bench.Samples("tokens", np.zeros((1, 2), dtype=np.int64)))
    generated = bench.Samples("tokens", np.ones((3, 2), dtype=np.int64), {"text": ["a", "b", "c"]})
    ctx = bench.MetricContext(generation=0, bundle=None, params={}, real=real, state={},
                              reference_state={}, samples=generated, score=None, rng=None)
    with pytest.raises(BenchError, match="no 'prompt' column"):
        text_inputs(ctx)
    prompted = bench.Samples("tokens", np.ones((5, 2), dtype=np.int64),
                             {"text": list("vwxyz"), "prompt": ["p0", "p1", "p2", "p0", "p1"]})
    ctx = bench.MetricContext(generation=0, bundle=None, params={}, real=real, state={},
                              reference_state={}, samples=prompted, score=None, rng=None)
    # five samples continue real blocks 0, 1, 2, 0, 1: only blocks 1 and 2 are references
    assert text_inputs(ctx) == {"predictions": ["v", "w"], "references": ["p1", "p2"]}


def test_version_follows_the_module_source(tmp_path):
    folder, script = _modules(tmp_path)
    first = evaluate_metric(script, name="m", direction="higher").version
    assert evaluate_metric(script, name="m2", direction="higher").version == first
    assert evaluate_metric(script, name="m", direction="higher", key="n").version != first
    script.write_text(PRED_LEN + "\n# edited\n")
    assert evaluate_metric(script, name="m", direction="higher").version != first
    before = evaluate_metric(folder, name="f", direction="higher").version
    (folder / "helper.py").write_text("X = 1\n")  # a file the script might import
    assert evaluate_metric(folder, name="f", direction="higher").version != before


@pytest.mark.parametrize("path, message", [
    ("bleu", "not a local file or folder"),
    ("evaluate-metric/exact_match", "pass its path"),
])
def test_hub_name_says_to_pass_a_local_path(tmp_path, monkeypatch, path, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BenchError, match=message):
        evaluate_metric(path, name="x", direction="higher")


def test_user_mistakes_are_messages(tmp_path, monkeypatch):
    _, script = _modules(tmp_path)
    (tmp_path / "wrong").mkdir()
    with pytest.raises(BenchError, match="holds no wrong.py"):
        evaluate_metric(tmp_path / "wrong", name="x", direction="higher")
    with pytest.raises(BenchError, match="pass inputs="):
        evaluate_metric(script, name="x", direction="higher", kinds=("categorical",))
    # evaluate missing: the first compute says how to install it (a fresh file, so nothing is cached)
    fresh = tmp_path / "fresh.py"
    fresh.write_text(PRED_LEN)
    metric = evaluate_metric(fresh, name="x", direction="higher")
    monkeypatch.setitem(sys.modules, "evaluate", None)
    with pytest.raises(BenchError, match=r"pip install 'collapse-bench\[evaluate\]'"):
        metric.compute(None)


def test_result_selection():
    from bench.bridges import select

    assert select({"a": 1, "b": np.float32(0.5), "c": "x", "d": [1, 2], "e": True}, None, "m") == {"a": 1.0, "b": 0.5}
    assert select({"a": np.array(2.0)}, "a", "m") == 2.0
    with pytest.raises(BenchError, match="no 'z'; its entries: a"):
        select({"a": 1}, "z", "m")
    with pytest.raises(BenchError, match="no numeric entry"):
        select({"a": "x"}, None, "m")


# -- TensorBoard ---------------------------------------------------------------------------------


def _events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _texts(acc, tag):
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(f"{tag}/text_summary")]


def _assert_scalars_match(logdir, run_path, generations):
    acc = _events(logdir)
    rows = R.read_metrics(run_path).to_pylist()
    finite = [r for r in rows if math.isfinite(r["value"])]
    assert set(acc.Tags()["scalars"]) == {r["metric"] for r in finite}
    for tag in acc.Tags()["scalars"]:
        assert [e.step for e in acc.Scalars(tag)] == list(range(generations + 1)), tag  # each step once
    for r in finite:
        (event,) = [e for e in acc.Scalars(r["metric"]) if e.step == r["generation"]]
        assert event.value == float(np.float32(r["value"])), r  # TensorBoard keeps float32
    return acc


def test_tensorboard_scalars_equal_the_metrics(tmp_path, monkeypatch, bench_plugins):
    monkeypatch.setenv(tb.ENV_TENSORBOARD, str(tmp_path / "tb"))
    (outcome,) = cb.run("gaussian", preset="smoke", generations=3, out=tmp_path / "res", bench=bench_plugins)
    logdir = tmp_path / "tb" / outcome.path.name
    acc = _assert_scalars_match(logdir, outcome.path, 3)
    # one scalar per metric row of the gaussian bundle (its default metrics, none dict-valued)
    bundle = bench_plugins.models.get("gaussian")
    assert len(acc.Tags()["scalars"]) == len(bundle.metrics) == 11
    (spec,) = _texts(acc, "run/spec")
    assert spec[0] == 0 and outcome.spec.run_id in spec[1] and '"n_samples": 20' in spec[1]
    assert _texts(acc, "run/status") == [(3, "complete")]
    assert json.loads((logdir / tb.LEDGER).read_text())["generations"] == 4
    assert not tb._open


def test_tensorboard_is_off_unless_asked(tmp_path, monkeypatch, bench_plugins):
    monkeypatch.delenv(tb.ENV_TENSORBOARD, raising=False)
    monkeypatch.chdir(tmp_path)
    cb.run("gaussian", preset="smoke", generations=1, out=tmp_path / "res", bench=bench_plugins)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    assert not list(tmp_path.rglob("events.out.tfevents*"))


def test_tensorboard_resume_logs_each_generation_once(tmp_path, monkeypatch, bench_plugins):
    out = tmp_path / "res"
    monkeypatch.delenv(tb.ENV_TENSORBOARD, raising=False)
    (outcome,) = cb.run("gaussian", preset="smoke", generations=1, out=out, bench=bench_plugins)
    monkeypatch.setenv(tb.ENV_TENSORBOARD, str(tmp_path / "tb"))
    cb.run("gaussian", preset="smoke", generations=3, out=out, bench=bench_plugins)  # catches up on 0, 1
    cb.run("gaussian", preset="smoke", generations=4, out=out, bench=bench_plugins)  # extends by one
    logdir = tmp_path / "tb" / outcome.path.name
    acc = _assert_scalars_match(logdir, outcome.path, 4)
    assert [step for step, _ in _texts(acc, "run/spec")] == [0, 4]
    assert _texts(acc, "run/status") == [(3, "complete"), (4, "complete")]
    # export after the fact adds nothing already logged, and logs a whole run into a new folder
    tb.export(outcome.path, tmp_path / "tb")
    _assert_scalars_match(logdir, outcome.path, 4)
    _assert_scalars_match(tb.export(outcome.path, tmp_path / "tb2"), outcome.path, 4)


def test_tensorboard_refuses_logs_of_an_earlier_run(tmp_path, monkeypatch, bench_plugins):
    monkeypatch.setenv(tb.ENV_TENSORBOARD, str(tmp_path / "tb"))
    (outcome,) = cb.run("gaussian", preset="smoke", generations=1, out=tmp_path / "res", bench=bench_plugins)
    ledger = tmp_path / "tb" / outcome.path.name / tb.LEDGER
    ledger.write_text(json.dumps({**json.loads(ledger.read_text()), "created": "2000-01-01T00:00:00"}))
    with pytest.raises(BenchError, match="earlier run with the same folder name"):
        cb.run("gaussian", preset="smoke", generations=2, out=tmp_path / "res", bench=bench_plugins)


class NanMetric:
    __name__ = "nan-metric"

    @bench.hookimpl
    def bench_register_metrics(self, register):
        register(bench.Metric("half-defined", lambda ctx: {"nan": float("nan"), "inf": math.inf, "one": 1.0},
                              direction="higher"))


def test_tensorboard_skips_non_finite_values(tmp_path, monkeypatch):
    monkeypatch.setenv(tb.ENV_TENSORBOARD, str(tmp_path / "tb"))
    b = Bench(extra_plugins=[Toy(), NanMetric()])
    (outcome,) = cb.run("toy", generations=1, metrics=["toy-train-size", "half-defined"], out=tmp_path / "res",
                        bench=b)
    acc = _assert_scalars_match(tmp_path / "tb" / outcome.path.name, outcome.path, 1)
    assert set(acc.Tags()["scalars"]) == {"toy-train-size", "half-defined/one"}


def test_cli_tensorboard_option(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(tb.ENV_TENSORBOARD, raising=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = bench_cli(capsys, "run", "--plugin", "gaussian", "--preset", "smoke", "-g", "2", "-o", "res",
                          "--tensorboard", "tb")
    assert code == 0, err
    assert "tensorboard --logdir tb" in out
    (run_path,) = R.find_runs([tmp_path / "res"])
    _assert_scalars_match(tmp_path / "tb" / run_path.name, run_path, 2)
    # the same command on the complete run, to a new folder: what the run holds is logged there
    code, out, err = bench_cli(capsys, "run", "--plugin", "gaussian", "--preset", "smoke", "-g", "2", "-o", "res",
                               "--tensorboard", "tb2")
    assert code == 0, err
    _assert_scalars_match(tmp_path / "tb2" / run_path.name, run_path, 2)


def test_cli_tensorboard_missing_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(tb.ENV_TENSORBOARD, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    code, _, err = bench_cli(capsys, "run", "--plugin", "gaussian", "-g", "1", "-o", "res", "--tensorboard", "tb")
    assert code == 2
    assert "pip install 'collapse-bench[tensorboard]'" in err
    assert not (tmp_path / "res").exists() and not (tmp_path / "tb").exists()


ACCURACY = """
import datasets
import evaluate


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="share of equal pairs", citation="", inputs_description="",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        return {"accuracy": sum(p == r for p, r in zip(predictions, references)) / len(predictions)}
"""


def _doc_blocks():
    doc = (Path(__file__).parent.parent / "docs" / "bridges.md").read_text()
    return [block.split("\n", 1)[1] for block in doc.split("```")[1::2] if block.startswith("python")]


def test_docs_examples_run(tmp_path):
    """docs/bridges.md's plugin example registers a metric; its categorical example runs and
    computes the share of samples in state 0."""
    (plugin_code,) = [b for b in _doc_blocks() if "@bench.hookimpl" in b]
    (categorical_code,) = [b for b in _doc_blocks() if 'kinds=("categorical",)' in b]
    (tmp_path / "exact_match").mkdir()
    (tmp_path / "exact_match" / "exact_match.py").write_text(TEXT_STATS)
    (tmp_path / "my_accuracy.py").write_text(ACCURACY)
    (tmp_path / "my_metrics.py").write_text(
        plugin_code + "\n\ndef _categorical(register):\n" + textwrap.indent(categorical_code, "    "))
    sys.path.insert(0, str(tmp_path))
    try:
        import my_metrics
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("my_metrics", None)

    class Categorical:
        __name__ = "doc-categorical"

        @bench.hookimpl
        def bench_register_metrics(self, register):
            my_metrics._categorical(register)

    b = Bench(extra_plugins=[my_metrics, Categorical()])
    assert b.metrics.get("my-exact-match").version.startswith("evaluate-")
    (outcome,) = cb.run("categorical", generations=1, metrics=["categorical-mode-share"], out=tmp_path / "res",
                        bench=b)
    table = cb.metrics(outcome)
    for k in range(2):
        samples, _ = RF.generation_samples(outcome.path, k)
        (value,) = table[table.generation == k].value
        assert value == pytest.approx(np.mean(samples.data == 0), rel=1e-12)


def test_a_missing_local_path_is_named_as_such():
    with pytest.raises(BenchError, match=r"evaluate module './no/such_metric.py': no such file or folder"):
        evaluate_metric("./no/such_metric.py", name="x", direction="higher").compute(None)
