"""The byte-level GPT (models/gpt.py), its corpus (train/text.py) and the loop on text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models.gpt import GPT
from tests._cheap_compile import run_train
from train import loop, text
from train.config import Config
from train.data import load_dataset
from train.run import run

REPO = Path(__file__).resolve().parents[1]
SMALL = {"num_layers": 2, "width": 16, "num_heads": 2, "context": 16}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small corpus of 40 *.py files (both splits non-empty), plus excluded ones."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    words = ["def", "return", "self", "import", "x", "=", "(", ")", ":", "\n    ", "\n"]
    for i in range(40):
        folder = root / ("pkg" if i % 3 else "") / ("sub" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        body = " ".join(rng.choice(words, 300)) + f"\n# file {i}\n"
        (folder / f"mod_{i}.py").write_text(body)
    for excluded in ("test", "site-packages", "__pycache__"):
        (root / excluded).mkdir()
        (root / excluded / "skip_me.py").write_text("not in the corpus\n")
    (root / "notes.txt").write_text("not python\n")
    return root


def _tiny_gpt() -> tuple[GPT, dict]:
    model = GPT(num_classes=256, **SMALL)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))
    return model, variables


def test_gpt_is_causal():
    model, variables = _tiny_gpt()
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)
    changed = tokens.at[:, 9].set((tokens[:, 9] + 1) % 256)
    apply = jax.jit(model.apply)  # one compilation for both inputs
    a, b = apply(variables, tokens), apply(variables, changed)
    chex.assert_shape(a, (2, 16, 256))
    chex.assert_trees_all_close(a[:, :9], b[:, :9], atol=1e-6)  # earlier positions
    assert float(jnp.max(jnp.abs(a[:, 9:] - b[:, 9:]))) > 1e-3  # the changed one and later


def test_gpt_output_is_the_transposed_embedding():
    model, variables = _tiny_gpt()
    params = variables["params"]
    shapes = [leaf.shape for leaf in jax.tree.leaves(params)]
    assert (16, 256) not in shapes  # no separate output matrix
    tokens = jnp.arange(32).reshape(2, 16) % 10  # byte 200 never appears in the input
    direction = jnp.zeros(16).at[3].set(1.0)
    bumped = jax.tree.map(lambda x: x, params)
    bumped["embed"]["embedding"] = params["embed"]["embedding"].at[200].add(direction)
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": bumped}, tokens)
    diff = b - a
    chex.assert_trees_all_close(diff.at[..., 200].set(0.0), jnp.zeros_like(diff), atol=1e-6)
    # logit 200 = h . E[200]: a unit step along feature 3 adds h_3 (nonzero somewhere)
    assert float(jnp.max(jnp.abs(diff[..., 200]))) > 1e-2


def test_gpt_rejects_a_too_long_sequence():
    model, variables = _tiny_gpt()
    with pytest.raises(ValueError, match="tokens must be"):
        model.apply(variables, jnp.zeros((1, 17), jnp.int32))


def test_registry_builds_the_language_models():
    for name in ("gpt", "gpt_small"):
        assert models.create(name, num_classes=256).num_classes == 256
        assert models.takes_tokens(name) and not models.MODELS[name].listed
        x = jax.ShapeDtypeStruct((1, 16), jnp.int32)
        init = jax.eval_shape(models.create(name, 256).init, jax.random.key(0), x)
        assert set(init) == {"params"}  # no batch norm
        assert models.param_count(name, (128,), 256) > 10_000
    assert models.param_count("gpt", (128,), 256) > models.param_count("gpt_small", (128,), 256)


def test_run_refuses_a_model_and_data_of_different_kinds(corpus_dir: Path):
    images = Config(
        model="gpt_small",
        dataset="synthetic",
        synthetic_shape=(8, 8, 1),
        synthetic_size=(16, 8),
        batch_size=8,
        num_devices=1,
    )
    with pytest.raises(ValueError, match="takes token sequences, but --dataset synthetic"):
        run(images, log=None)
    tokens = Config(model="tiny", dataset="python_stdlib", batch_size=8, num_devices=1)
    with pytest.raises(ValueError, match="takes images, but --dataset python_stdlib holds"):
        run(tokens, dataset=load_dataset("python_stdlib", corpus_dir), log=None)


def test_corpus_is_deterministic_and_its_splits_disjoint(corpus_dir: Path):
    first, second = text.corpus_info(corpus_dir), text.corpus_info(corpus_dir)
    assert first == second
    assert first["files"] == 40  # the excluded directories and non-*.py files left out
    assert 0 < first["validation_files"] < first["files"]
    assert first["size"] == first["train_bytes"] + first["validation_bytes"]
    relative = [p.relative_to(corpus_dir).as_posix() for p in text.corpus_files(corpus_dir)]
    assert relative == sorted(relative)
    held_out = {p for p in relative if text.is_validation(p)}
    assert 0 < len(held_out) < len(relative)
    # the hash covers the bytes: one changed byte changes it
    victim = corpus_dir / "pkg" / "mod_1.py"
    original = victim.read_bytes()
    try:
        victim.write_bytes(original[:-1] + b"!")
        assert text.corpus_info(corpus_dir)["sha256"] != first["sha256"]
    finally:
        victim.write_bytes(original)
    ds = load_dataset("python_stdlib", corpus_dir)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int32
    chex.assert_shape([ds.train_images, ds.train_labels], (None, text.CONTEXT))
    assert first["sha256"] in ds.source
    # labels are the inputs shifted by one position
    np.testing.assert_array_equal(ds.train_images[:, 1:], ds.train_labels[:, :-1])
    train_rows = {bytes(r) for r in ds.train_images}
    assert not train_rows & {bytes(r) for r in ds.test_images}
    subset = load_dataset("python_stdlib", corpus_dir, train_subset=3, seed=1)
    again = load_dataset("python_stdlib", corpus_dir, train_subset=3, seed=1)
    np.testing.assert_array_equal(subset.train_images, again.train_images)
    assert {bytes(r) for r in subset.train_images} <= train_rows


def test_corpus_rejects_bad_arguments(corpus_dir: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="train_subset"):
        text.load_dataset(corpus_dir, train_subset=0)
    with pytest.raises(ValueError, match="context"):
        text.sequences(b"abc", 0)
    with pytest.raises(FileNotFoundError, match=r"no \*\.py files"):
        text.corpus_files(tmp_path)


def test_loop_losses_average_over_tokens():
    logits = jax.random.normal(jax.random.key(0), (3, 5, 7))
    labels = jax.random.randint(jax.random.key(1), (3, 5), 0, 7)
    per_token = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)[..., 0]
    chex.assert_trees_all_close(loop.cross_entropy(logits, labels), per_token.mean(1), rtol=1e-5)
    x = jnp.array([[1, 2]], jnp.uint8)
    assert loop.model_inputs(x, jnp.ones(1), jnp.ones(1)).dtype == jnp.int32


@pytest.mark.slow  # trains for seconds
def test_one_epoch_on_text_reports_bits_per_byte(corpus_dir: Path):
    ds = load_dataset("python_stdlib", corpus_dir, train_subset=64)
    config = Config(
        model="gpt_small",
        dataset="python_stdlib",
        optimizer="adam",
        schedule="constant",
        batch_size=8,
        epochs=1,
        augment=True,  # images only: token data is never augmented
        num_devices=1,
        progress=False,
    )
    (record,) = run(config, dataset=ds, log=None)
    assert record["step"] == len(ds.train_labels) // 8
    assert math.isfinite(record["test_bits_per_byte"])
    assert record["test_bits_per_byte"] == pytest.approx(record["test_loss"] / math.log(2))
    assert record["test_loss"] < math.log(256)  # learned something in one epoch
    assert 0.0 <= record["test_accuracy"] <= 1.0 and 0.0 <= record["train_accuracy"] <= 1.0


@pytest.mark.slow  # a subprocess
def test_cli_trains_the_gpt_on_a_corpus_directory(corpus_dir: Path, tmp_path: Path):
    workdir = tmp_path / "run"
    args = ["--model", "gpt_small", "--dataset", "python_stdlib", "--data-dir", str(corpus_dir)]
    args += ["--epochs", "1", "--train-subset", "16", "--batch-size", "8", "--no-progress"]
    result = run_train(*args, "--workdir", workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 2 and math.isfinite(record["test_bits_per_byte"])
    derived = json.loads((workdir / "config.json").read_text())["derived"]
    assert text.corpus_info(corpus_dir)["sha256"] in derived["data_source"]
