"""The LM track's data: hub-style loading from local paths, block making, splits, identity, errors.

Everything runs offline: a word-level tokenizer and small datasets are saved to tmp folders and
read back through AutoTokenizer.from_pretrained / datasets.load_dataset / load_from_disk, exactly
as hub names would be. Expected blocks come from a tokenization written out by hand.
"""

import hashlib
import json
import math

import numpy as np
import pytest

from bench.components import RealRequest
from bench.errors import BenchError
from collapse_bench_plugins import hf_data
from collapse_bench_plugins.hf_data import DATA_PARAMS, load_real

WORDS = [f"w{i}" for i in range(10)]
UNK, BOS = 0, 1
VOCAB = {"<unk>": UNK, "<s>": BOS, **{w: i + 2 for i, w in enumerate(WORDS)}}
L = 4  # block size of most tests


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keep datasets' arrow cache inside the test's folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    """A word-level tokenizer that starts every row with <s> (as OPT's starts it with </s>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    path = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", unk_token="<unk>").save_pretrained(path)
    return path


def rows(n, seed):
    """n text rows of 0-6 words (some empty, some out-of-vocabulary), reproducible."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words = [WORDS[i] for i in rng.integers(0, len(WORDS), rng.integers(0, 7))]
        if rng.random() < 0.1:
            words.append("oov")
        out.append(" ".join(words))
    return out


def hand_blocks(texts, block_size=L):
    """Each row -> <s> + word ids, rows concatenated, cut into blocks, remainder dropped."""
    stream = [t for row in texts for t in [BOS] + [VOCAB.get(w, UNK) for w in row.split()]]
    n = len(stream) // block_size
    assert n == math.floor(len(stream) / block_size)
    return np.array(stream[: n * block_size], dtype=np.int64).reshape(n, block_size)


def carved(train_blocks, fraction=DATA_PARAMS["holdout_fraction"]):
    """The documented rule: each missing split takes ceil(fraction * n) blocks from train's end."""
    n = len(train_blocks)
    k = math.ceil(fraction * n)
    return {"train": train_blocks[: n - 2 * k], "validation": train_blocks[n - 2 * k: n - k],
            "test": train_blocks[n - k:]}


def write_txt(path, texts):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(t + "\n" for t in texts))
    return path


def load(tok_dir, dataset, **params):
    return load_real(RealRequest({**DATA_PARAMS, "model": str(tok_dir), "dataset": str(dataset), "block_size": L, **params}, 0))


def assert_splits(real, expected):
    for split in ("train", "validation", "test"):
        got = getattr(real, split)
        assert got.kind == "tokens" and got.data.dtype == np.int64
        np.testing.assert_array_equal(got.data, expected[split], err_msg=split)
        assert real.provenance["n_blocks"][split] == len(expected[split])


SPLIT_ROWS = {"train": rows(60, 0), "validation": rows(15, 1), "test": rows(15, 2)}


# -- dataset forms ---------------------------------------------------------------------------------


def test_text_folder_files_named_by_split(tok_dir, tmp_path):
    for split, name in [("train", "train.txt"), ("validation", "valid.txt"), ("test", "test.txt")]:
        write_txt(tmp_path / "data" / name, SPLIT_ROWS[split])
    real = load(tok_dir, tmp_path / "data")
    assert_splits(real, {s: hand_blocks(t) for s, t in SPLIT_ROWS.items()})
    assert real.provenance["splits_made_from_train"] == []
    assert real.provenance["dataset_config"] is None


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_single_file_with_a_text_column_gets_validation_and_test_from_train(tok_dir, tmp_path, suffix):
    texts = rows(200, 3)
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(texts)))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": list(range(len(texts))), "body": texts}), path)
    real = load(tok_dir, path, text_column="body")
    expected = carved(hand_blocks(texts))
    assert len(expected["test"]) >= 2  # the rule is checked on more than the one-block minimum
    assert_splits(real, expected)
    assert real.provenance["splits_made_from_train"] == ["validation", "test"]


def test_save_to_disk_folders(tok_dir, tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({s: Dataset.from_dict({"text": t}) for s, t in SPLIT_ROWS.items()}).save_to_disk(tmp_path / "dict")
    assert_splits(load(tok_dir, tmp_path / "dict"), {s: hand_blocks(t) for s, t in SPLIT_ROWS.items()})

    texts = rows(200, 4)
    Dataset.from_dict({"text": texts}).save_to_disk(tmp_path / "single")
    real = load(tok_dir, tmp_path / "single")
    assert_splits(real, carved(hand_blocks(texts)))


def test_comma_separated_files_unnamed_ones_train_in_order(tok_dir, tmp_path):
    a, b, test = rows(100, 5), rows(100, 6), rows(20, 7)
    paths = [write_txt(tmp_path / "x" / "part1.txt", a), write_txt(tmp_path / "y" / "part2.txt", b),
             write_txt(tmp_path / "z" / "wiki.test.txt", test)]
    real = load(tok_dir, ",".join(map(str, paths)))
    train = hand_blocks(a + b)
    n, k = len(train), math.ceil(DATA_PARAMS["holdout_fraction"] * len(train))
    assert_splits(real, {"train": train[: n - k], "validation": train[n - k:], "test": hand_blocks(test)})
    assert real.provenance["splits_made_from_train"] == ["validation"]


@pytest.mark.parametrize(("name", "split"), [
    ("train.txt", "train"), ("wiki.train.raw.txt", "train"), ("data/training/part-0.txt", "train"),
    ("valid.jsonl", "validation"), ("dev-00.parquet", "validation"), ("val_1.txt", "validation"),
    ("test.txt", "test"), ("eval.json", "test"), ("corpus.txt", None), ("contest.txt", None),
    ("trainer.txt", None),
])
def test_split_of_a_file_name(name, split):
    assert hf_data.split_of(name) == split


@pytest.mark.parametrize(("name", "local"), [
    ("wikitext", False), ("Salesforce/wikitext", False), ("/data/x", True), ("./x", True), ("~/x", True),
    ("a/b/c", True), ("corpus.txt", True), ("a.txt,b.txt", True), ("synthetic", False),
])
def test_hub_ids_and_paths_are_told_apart(name, local):
    assert hf_data.is_local_dataset(name) is local


# -- blocks, caps, identity ------------------------------------------------------------------------


def test_block_count_is_floor_of_tokens_over_block_size(tok_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(hf_data, "_ROWS_PER_CALL", 7)  # rows cross tokenizer calls as they cross blocks
    for split, t in SPLIT_ROWS.items():
        write_txt(tmp_path / "d" / f"{split}.txt", t)
    for block_size in (1, 3, 7):
        real = load(tok_dir, tmp_path / "d", block_size=block_size)
        for split, t in SPLIT_ROWS.items():
            tokens = sum(1 + len(r.split()) for r in t)
            assert getattr(real, split).data.shape == (tokens // block_size, block_size)


def test_max_blocks_keeps_the_first_blocks_of_each_split(tok_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(hf_data, "_ROWS_PER_CALL", 1)  # a call per row: a capped split stops at its cap
    for split, t in SPLIT_ROWS.items():
        write_txt(tmp_path / "d" / f"{split}.txt", t)
    write_txt(tmp_path / "one.txt", rows(200, 8))
    for dataset in (tmp_path / "d", tmp_path / "one.txt"):  # own splits; carved splits
        full = load(tok_dir, dataset)
        capped = load(tok_dir, dataset, max_blocks=3)
        for split in ("train", "validation", "test"):
            np.testing.assert_array_equal(getattr(capped, split).data, getattr(full, split).data[:3])
        assert capped.fingerprint == full.fingerprint


def test_same_data_same_result_and_changed_data_changes_the_fingerprint(tok_dir, tmp_path):
    path = write_txt(tmp_path / "c.txt", rows(200, 9))
    first, again = load(tok_dir, path), load_real(RealRequest({"model": str(tok_dir), "dataset": str(path), "block_size": L}, 7))
    assert first.fingerprint == again.fingerprint and first.provenance == again.provenance
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(first, split).data, getattr(again, split).data)
    first.train.data[:] = -1  # callers get their own arrays, not the cache's
    assert (load(tok_dir, path).train.data >= 0).all()

    write_txt(path, rows(200, 9))  # same bytes, new modification time: same fingerprint
    assert load(tok_dir, path).fingerprint == again.fingerprint
    write_txt(path, rows(200, 10))
    changed = load(tok_dir, path)
    assert changed.fingerprint != again.fingerprint
    np.testing.assert_array_equal(changed.train.data, carved(hand_blocks(rows(200, 10)))["train"])


def test_the_fingerprint_is_of_the_text_whatever_its_form(tok_dir, tmp_path):
    from datasets import Dataset

    texts = rows(200, 15)
    write_txt(tmp_path / "c.txt", texts)
    texts = [t + "\n" for t in texts]  # a .txt row keeps its line break: the same text has it too
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in texts))
    Dataset.from_dict({"text": texts}).save_to_disk(tmp_path / "saved")
    Dataset.from_dict({"text": texts}).save_to_disk(tmp_path / "saved-again")  # another datasets fingerprint
    got = {load(tok_dir, tmp_path / "c.txt").fingerprint,
           load(tok_dir, tmp_path / "c.jsonl", text_column="body").fingerprint,
           load(tok_dir, tmp_path / "saved").fingerprint, load(tok_dir, tmp_path / "saved-again").fingerprint}
    assert len(got) == 1
    assert load(tok_dir, tmp_path / "c.txt", block_size=5).fingerprint in got  # the data, not its blocks
    assert load(tok_dir, tmp_path / "c.txt", tokenizer=str(tok_dir)).fingerprint in got


def test_provenance_records_dataset_tokenizer_and_model(tok_dir, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    path = write_txt(tmp_path / "c.txt", rows(200, 11))
    real = load(tok_dir, path)
    prov = real.provenance
    assert prov["dataset"] == str(path) and prov["dataset_fingerprint"] == real.fingerprint
    texts = path.read_text().splitlines(keepends=True)  # a .txt row keeps its line break
    by_hand = hashlib.sha256(f"train\0{len(texts)}\0".encode())
    for t in texts:
        by_hand.update(len(t.encode()).to_bytes(8, "little") + t.encode())
    assert real.fingerprint == by_hand.hexdigest()
    backend = AutoTokenizer.from_pretrained(tok_dir).backend_tokenizer.to_str()
    assert prov["tokenizer_hash"] == hashlib.sha256(backend.encode()).hexdigest()
    assert prov["model"] == str(tok_dir) and prov["model_revision"] is None
    assert prov["n_blocks"] == {s: len(getattr(real, s)) for s in ("train", "validation", "test")}
    json.dumps(prov)  # run.json must be able to hold it

    model = tmp_path / "model"
    shutil.copytree(tok_dir, model)
    (model / "config.json").write_text('{"model_type": "opt"}')
    (model / "model.safetensors").write_bytes(b"x" * 10)
    before = hf_data.model_fingerprint({"model": str(model)})
    assert hf_data.model_fingerprint({"model": str(model)}) == before
    (model / "model.safetensors").write_bytes(b"y" * 10)  # same name and size: weights are not read
    assert hf_data.model_fingerprint({"model": str(model)}) == before
    (model / "model.safetensors").write_bytes(b"x" * 11)
    assert hf_data.model_fingerprint({"model": str(model)}) != before
    (model / "model.safetensors").write_bytes(b"x" * 10)
    (model / "config.json").write_text('{"model_type": "opt", "n": 1}')
    assert hf_data.model_fingerprint({"model": str(model)}) != before

    toy = {"model": "toy-opt", "toy_layers": 2, "toy_hidden": 16, "lr": 1e-3}
    expected = hashlib.sha256(json.dumps({"toy_hidden": 16, "toy_layers": 2}, sort_keys=True).encode()).hexdigest()
    assert hf_data.model_fingerprint(toy) == expected
    assert hf_data.model_fingerprint({**toy, "lr": 1.0}) == expected
    assert hf_data.model_fingerprint({**toy, "toy_layers": 3}) != expected
    assert hf_data.model_fingerprint({"model": "facebook/opt-125m"}) is None


def test_a_toy_model_reads_real_text_with_a_named_tokenizer(tok_dir, tmp_path):
    path = write_txt(tmp_path / "c.txt", rows(200, 12))
    real = load_real(RealRequest({"model": "toy-opt", "tokenizer": str(tok_dir), "dataset": str(path), "block_size": L,
                      "toy_layers": 1}, 0))
    np.testing.assert_array_equal(real.train.data, carved(hand_blocks(rows(200, 12)))["train"])
    assert real.provenance["tokenizer"] == str(tok_dir) and real.provenance["model_fingerprint"]


def test_a_hub_model_id_loads_from_the_hub_cache_with_its_resolved_commit(tok_dir, tmp_path, monkeypatch):
    """Offline, a hub id is served from the hub cache (refs/main -> snapshots/<commit>), as after a
    download; the provenance records the commit that `main` resolved to."""
    import shutil

    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--fake-owner--tiny-opt"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tok_dir, repo / "snapshots" / commit)
    (repo / "snapshots" / commit / "config.json").write_text('{"model_type": "opt"}')
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hf_data._pretrained_tokenizer.cache_clear()

    texts = rows(200, 16)
    real = load_real(RealRequest({"model": "fake-owner/tiny-opt", "dataset": str(write_txt(tmp_path / "c.txt", texts)),
                      "block_size": L}, 0))
    np.testing.assert_array_equal(real.train.data, carved(hand_blocks(texts))["train"])
    assert real.provenance["model_revision"] == commit and real.provenance["model_fingerprint"] is None
    hf_data._pretrained_tokenizer.cache_clear()


def test_txt_rows_keep_their_line_breaks(tmp_path):
    """The rows of a .txt file concatenated are the file's text, so words of consecutive lines never
    fuse, whatever the tokenizer."""
    text = "apply either way.\nitself.\n\nmeet  them\nlast line without a break"
    (tmp_path / "c.txt").write_text(text)
    rows_read, _ = hf_data._read_rows(str(tmp_path / "c.txt"), None, "text")
    assert rows_read["train"] == ["apply either way.\n", "itself.\n", "\n", "meet  them\n",
                                  "last line without a break"]
    assert "".join(rows_read["train"]) == text


def test_txt_lines_do_not_fuse_with_a_byte_level_tokenizer(tmp_path):
    """With a GPT-2-style byte-level BPE (no separator between rows) the token stream decodes to
    the file's text: "way.\nitself", not "way.itself"."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    lines = [f"apply either way {i}." if i % 2 else f"itself meets {i}" for i in range(120)]
    text = "".join(line + "\n" for line in lines)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=300, min_frequency=1, show_progress=False)
    PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer).save_pretrained(tmp_path / "bpe")
    (tmp_path / "c.txt").write_text(text)
    real = load_real(RealRequest({**DATA_PARAMS, "model": str(tmp_path / "bpe"), "dataset": str(tmp_path / "c.txt"),
                                  "block_size": 1}, 0))
    stream = np.concatenate([real.train.data, real.validation.data, real.test.data]).reshape(-1)
    decoded = PreTrainedTokenizerFast.from_pretrained(tmp_path / "bpe").decode(stream.tolist())
    assert decoded == text
    assert "way 1.\nitself meets 2" in decoded


# -- errors ----------------------------------------------------------------------------------------


def test_unreachable_hub_names_and_wrong_paths_are_messages(tok_dir, tmp_path):
    import huggingface_hub.constants

    assert huggingface_hub.constants.HF_HUB_OFFLINE  # tests/conftest.py: the hub is unreachable
    data = write_txt(tmp_path / "c.txt", rows(200, 13))
    dataset_flag, model_flag = "with --dataset PATH", "save_pretrained with --model PATH"
    cases = [
        ({"dataset": "made-up-owner/no-such-dataset"}, "dataset 'made-up-owner/no-such-dataset'", dataset_flag),
        ({"model": "made-up-owner/no-such-model", "dataset": str(data)}, "'made-up-owner/no-such-model'",
         model_flag),
        ({"dataset": str(tmp_path / "missing.txt")}, f"dataset path '{tmp_path / 'missing.txt'}' does not exist",
         dataset_flag),
        ({"dataset": f"{data},{tmp_path / 'gone.txt'}"}, "gone.txt' does not exist", dataset_flag),
        ({"model": str(tmp_path / "no-model"), "dataset": str(data)}, "no-model' does not exist", model_flag),
        ({"model": str(tmp_path), "dataset": str(data)}, f"cannot load the tokenizer of '{tmp_path}'", model_flag),
        ({"tokenizer": str(tmp_path / "no-tok"), "dataset": str(data)}, "no-tok' does not exist",
         "save_pretrained with --set tokenizer=PATH"),
    ]
    for params, names, flag in cases:
        with pytest.raises(BenchError) as info:
            load_real(RealRequest({**DATA_PARAMS, "model": str(tok_dir), **params}, 0))
        message = str(info.value)
        assert names in message and flag in message and "use --preset smoke, which downloads nothing" in message, \
            message


def test_a_missing_dataset_path_is_named_before_the_tokenizer_loads(tmp_path):
    """Even with a model whose tokenizer cannot load, the missing file is what the message names."""
    missing = tmp_path / "missing.txt"
    for model in ("made-up-owner/no-such-model", "toy-opt"):
        with pytest.raises(BenchError, match=f"dataset path '{missing}' does not exist; give local files"):
            load_real(RealRequest({**DATA_PARAMS, "model": model, "dataset": str(missing)}, 0))


def test_the_way_out_offers_the_smoke_preset_only_when_it_is_not_in_use():
    hub = {"model": "facebook/opt-125m", "dataset": "wikitext"}
    assert "--preset smoke" in hf_data.way_out(hub, "model")
    assert "--preset smoke" in hf_data.way_out(hub, "dataset")
    on_smoke_data = hf_data.way_out({**hub, "dataset": "synthetic"}, "model")
    assert "--preset smoke" not in on_smoke_data and "--model toy-opt" in on_smoke_data
    with_toy_model = hf_data.way_out({**hub, "model": "toy-opt"}, "dataset")
    assert "--preset smoke" not in with_toy_model and "--dataset synthetic" in with_toy_model
    tokenizer = hf_data.way_out({**hub, "model": "toy-opt", "tokenizer": "gpt2"}, "tokenizer")
    assert "--set tokenizer=PATH" in tokenizer and "--dataset synthetic" in tokenizer


def test_user_mistakes_with_data_are_messages(tok_dir, tmp_path):
    from datasets import Dataset, DatasetDict

    data = write_txt(tmp_path / "c.txt", rows(200, 14))
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "w1 w2"}) + "\n")
    (tmp_path / "nulls.jsonl").write_text(json.dumps({"text": "w1"}) + "\n" + json.dumps({"text": None}) + "\n")
    DatasetDict({"test": Dataset.from_dict({"text": rows(50, 1)})}).save_to_disk(tmp_path / "only-test")
    mixed = tmp_path / "mixed"
    write_txt(mixed / "train.txt", rows(50, 1))
    (mixed / "test.jsonl").write_text(json.dumps({"text": "w1"}) + "\n")
    cases = [
        ({"model": "toy-opt"}, "'toy-opt' has no tokenizer of its own"),
        ({"dataset": str(tmp_path / "c.jsonl")}, "has no column 'text' (it has ['body'])"),
        ({"dataset": str(tmp_path / "nulls.jsonl")}, "1 value(s) that are not text"),
        ({"dataset": str(tmp_path / "only-test")}, "has no train split (it has ['test'])"),
        ({"dataset": str(mixed)}, "mixes file formats"),
        ({"block_size": 10_000}, "too few to carve"),
        ({"block_size": 0}, "block_size=0"),
        ({"max_blocks": 2.5}, "max_blocks=2.5"),
        ({"holdout_fraction": 0.5}, "holdout_fraction=0.5"),
    ]
    for params, message in cases:
        with pytest.raises(BenchError) as info:
            load_real(RealRequest({**DATA_PARAMS, "model": str(tok_dir), "dataset": str(data), **params}, 0))
        assert message in str(info.value), str(info.value)


def test_a_split_shorter_than_a_block_is_named(tok_dir, tmp_path):
    write_txt(tmp_path / "d" / "train.txt", rows(100, 1))
    write_txt(tmp_path / "d" / "test.txt", ["w1"])  # 2 tokens < one block of 4
    with pytest.raises(BenchError, match="split 'test' .* fewer tokens than one block"):
        load(tok_dir, tmp_path / "d")


# -- the synthetic source (plugins/lm_source.py) ---------------------------------------------------


def test_synthetic_source_blocks_and_exact_loglik():
    lm_source = pytest.importorskip("collapse_bench_plugins.lm_source")
    params = {**DATA_PARAMS, **getattr(lm_source, "SOURCE_PARAMS", {}), "model": "toy-opt",
              "dataset": "synthetic", "source_vocab": 40, "source_tokens": 3_000, "source_branching": 4,
              "block_size": 16}
    corpus = lm_source.synthetic_corpus(params)
    real = load_real(RealRequest(params, 0))
    for split in ("train", "validation", "test"):
        stream = np.asarray(corpus.splits[split])
        n = len(stream) // 16
        np.testing.assert_array_equal(getattr(real, split).data, stream[: n * 16].reshape(n, 16))
    np.testing.assert_allclose(real.true_loglik(real.test), corpus.block_loglik(real.test.data))
    np.testing.assert_array_equal(real.true_token_loglik(real.test), corpus.token_loglik(real.test.data))
    assert real.fingerprint == corpus.fingerprint == real.provenance["dataset_fingerprint"]
    assert real.provenance["tokenizer_hash"] == hf_data.tokenizer_hash(corpus.tokenizer)
    assert real.provenance["splits_made_from_train"] == []
    capped = load_real(RealRequest({**params, "max_blocks": 5}, 0))
    np.testing.assert_array_equal(capped.train.data, real.train.data[:5])
    assert hf_data.get_tokenizer(params) is corpus.tokenizer
