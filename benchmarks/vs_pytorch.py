"""The project's training epoch against a plain PyTorch loop, same network, data and optimizer.

``python -m benchmarks.vs_pytorch [--grid full|reduced|smoke] [--models ...] [--batch-sizes ...]``

For each model and batch size, one epoch is trained in both frameworks:

* ``jax``: the project's own device-resident epoch, :func:`train.loop.train_epoch` on a
  state from :func:`train.loop.create_train_state` and ``models.create(name)`` (one jitted
  call per epoch: permutation, uint8 gather and normalization on the device), with the
  XLA:CPU flags of :mod:`train.platform.xla_flags`;
* ``torch``: what a PyTorch user writes: the same network as ``torch.nn`` modules, the
  normalized training set as one in-memory float32 NCHW tensor, ``torch.randperm`` and
  ``x[idx]`` per batch, ``F.cross_entropy``, ``zero_grad``/``backward``/``step``;
  ``torch.set_num_threads(os.cpu_count())``.

Same for both: the architecture (layer by layer, Caffe's ceil-mode pooling), the initial
weights (the JAX initialization copied into the PyTorch modules), the data (Fashion-MNIST
for LeNet-5; CIFAR-10 for the 32x32x3 models when ``--cifar-dir`` holds its python
batches, else synthetic images), normalization, Nesterov SGD (learning rate 0.01,
momentum 0.9: ``optax.sgd(nesterov=True)`` and ``torch.optim.SGD(nesterov=True)`` take
identical steps), batch size and epoch length (``N // batch`` full batches).

Timing: both arms run in one process and alternate epoch by epoch; the first epoch of each
arm is the warm-up (compilation, allocator, thread pools) and is not timed; each timed
epoch is read after ``block_until_ready``; the report gives the median epoch time over
the timed epochs, images/s = batches x batch size / median, and the ratio
jax images/s / torch images/s. Accuracy: the train accuracy of the first epoch (the running
accuracy of the batches as they arrive) and the test accuracy after it, both arms starting
from the same weights, so that speed is never bought with different numerics.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import models
from benchmarks import _common as C
from train import data as data_lib
from train import loop
from train.optimizers import build_optimizer
from train.platform import xla_flags

BENCHMARK = "vs_pytorch"
MODELS = ("lenet5", "cifar_quick", "alexnet")
ARMS = ("jax", "torch")
LEARNING_RATE, MOMENTUM = 0.01, 0.9
TARGETS = {"lenet5": 1.2, "cifar_quick": 1.0, "alexnet": 1.0}  # jax/torch img/s at batch 128
TARGET_BATCH = 128

# epoch sizes: None = the whole training set
GRIDS: dict[str, dict[str, Any]] = {
    "full": {
        "models": MODELS,
        "batch_sizes": (32, 128, 512),
        "train_images": {"lenet5": None, "cifar_quick": None, "alexnet": None},
        "test_images": None,
        "timed_epochs": 3,
    },
    "reduced": {
        "models": MODELS,
        "batch_sizes": (32, 128, 512),
        "train_images": {"lenet5": 10240, "cifar_quick": 2560, "alexnet": 512},
        "test_images": 2000,
        "timed_epochs": 5,  # short epochs: a median of 5 damps this VM's swings
    },
    "smoke": {
        "models": ("lenet5",),
        "batch_sizes": (32,),
        "train_images": {"lenet5": 256, "cifar_quick": 256, "alexnet": 256},
        "test_images": 100,
        "timed_epochs": 1,
    },
}
GRID_NOTES = {
    "full": "",
    "reduced": "CPU grid: epochs of 10240 (LeNet-5, Fashion-MNIST), 2560 (cifar_quick) and "
    "512 (AlexNet) training images (class-balanced subsets) instead of whole training sets; "
    "test accuracy on the first 2000 test images; 5 timed epochs per arm after "
    "the warm-up epoch. Full grid (whole training sets, whole test sets, 3 timed epochs): "
    "`--grid full`.",
    "smoke": "smoke test: LeNet-5, batch 32, 256 images; the numbers mean nothing.",
}


# ---------------------------------------------------------------------------------------
# Data


def load_data(
    model_name: str, train_images: int | None, test_images: int | None, cifar_dir: str | None
) -> data_lib.Dataset:
    """The model's data set: Fashion-MNIST for LeNet-5, CIFAR-10 or synthetic 32x32x3."""
    if model_name == "lenet5":
        ds = data_lib.load_dataset("fashion_mnist", train_subset=train_images, download=False)
    elif cifar_dir is not None:
        ds = data_lib.load_dataset("cifar10", cifar_dir, train_subset=train_images, download=False)
    else:
        size = (train_images or 50000, test_images or 10000)
        ds = data_lib.load_dataset("synthetic", synthetic_shape=(32, 32, 3), synthetic_size=size)
    if test_images is not None:
        ds = ds._replace(
            test_images=ds.test_images[:test_images], test_labels=ds.test_labels[:test_images]
        )
    return ds


# ---------------------------------------------------------------------------------------
# The PyTorch arm


def torch_model(model_name: str, params: dict[str, Any], image_shape: Sequence[int]) -> Any:
    """The PyTorch twin of ``models.create(model_name)`` holding a copy of ``params``.

    Convolution kernels HWIO -> OIHW, dense kernels (in, out) -> (out, in); the first
    dense layer's rows are permuted from Flax's HWC flattening to PyTorch's CHW.
    """
    import torch
    from torch import nn

    def pool(kind: str, k: int, s: int) -> nn.Module:
        if kind == "max":
            return nn.MaxPool2d(k, s, ceil_mode=True)
        return nn.AvgPool2d(k, s, ceil_mode=True, count_include_pad=False)

    if model_name == "lenet5":
        layers = [
            ("conv1", nn.Conv2d(image_shape[-1], 20, 5)),
            ("pool1", pool("max", 2, 2)),
            ("conv2", nn.Conv2d(20, 50, 5)),
            ("pool2", pool("max", 2, 2)),
            ("flatten", nn.Flatten()),
            ("ip1", None),
            ("relu", nn.ReLU()),
            ("ip2", None),
        ]
    elif model_name == "cifar_quick":
        layers = [
            ("conv1", nn.Conv2d(image_shape[-1], 32, 5, padding=2)),
            ("pool1", pool("max", 3, 2)),
            ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(32, 32, 5, padding=2)),
            ("relu2", nn.ReLU()),
            ("pool2", pool("avg", 3, 2)),
            ("conv3", nn.Conv2d(32, 64, 5, padding=2)),
            ("relu3", nn.ReLU()),
            ("pool3", pool("avg", 3, 2)),
            ("flatten", nn.Flatten()),
            ("ip1", None),
            ("ip2", None),
        ]
    elif model_name == "alexnet":
        layers, cin = [], image_shape[-1]
        for i, (k, c) in enumerate(zip((11, 5, 3, 3, 3), (64, 192, 384, 256, 256), strict=True)):
            layers += [
                (f"conv{i + 1}", nn.Conv2d(cin, c, k, padding=k // 2)),
                (f"relu{i + 1}", nn.ReLU()),
                (f"pool{i + 1}", pool("max", 2, 2)),
            ]
            cin = c
        layers += [("flatten", nn.Flatten()), ("fc1", None), ("relu_fc", nn.ReLU()), ("fc2", None)]
    else:
        raise ValueError(f"no PyTorch twin of {model_name!r}")

    # Dense layers get their sizes from the copied kernels.
    seq, first_dense, channels = [], True, image_shape[-1]
    for name, module in layers:
        if module is None:
            kernel = np.asarray(params[name]["kernel"], np.float32)
            module = nn.Linear(*kernel.shape)
            if first_dense:  # rows in Flax's (H, W, C) order -> PyTorch's (C, H, W)
                hw = kernel.shape[0] // channels
                kernel = kernel.reshape(hw, channels, -1).transpose(1, 0, 2).reshape(kernel.shape)
                first_dense = False
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
                module.bias.copy_(torch.from_numpy(np.array(params[name]["bias"], np.float32)))
        elif isinstance(module, nn.Conv2d):
            kernel = np.asarray(params[name]["kernel"], np.float32).transpose(3, 2, 0, 1)
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
                module.bias.copy_(torch.from_numpy(np.array(params[name]["bias"], np.float32)))
            channels = module.out_channels
        seq.append((name, module))
    return nn.Sequential(OrderedDict(seq))


class TorchArm:
    """The plain PyTorch loop over in-memory tensors."""

    def __init__(self, model_name: str, params: Any, ds: data_lib.Dataset, batch_size: int):
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        self.torch = torch
        self.device = torch_device()
        self.model = torch_model(model_name, params, ds.train_images.shape[1:]).to(self.device)
        self.opt = torch.optim.SGD(
            self.model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM, nesterov=True
        )
        self.x = self._normalized(ds.train_images, ds)
        self.y = torch.from_numpy(ds.train_labels.astype(np.int64)).to(self.device)
        self.x_test = self._normalized(ds.test_images, ds)
        self.y_test = torch.from_numpy(ds.test_labels.astype(np.int64)).to(self.device)
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(0)

    def _normalized(self, images: np.ndarray, ds: data_lib.Dataset) -> Any:
        x = (images.astype(np.float32) / 255.0 - ds.mean) / ds.std
        x = self.torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        return x.to(self.device)

    def step(self, x: Any, y: Any) -> tuple[Any, Any]:
        """One Nesterov SGD step on the batch ``(x, y)``; returns its logits and loss."""
        logits = self.model(x)
        loss = self.torch.nn.functional.cross_entropy(logits, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return logits, loss

    def epoch(self) -> dict[str, float]:
        torch = self.torch
        self.model.train()
        n, b = len(self.y), self.batch_size
        perm = torch.randperm(n, generator=self.generator).to(self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for i in range(n // b):
            idx = perm[i * b : (i + 1) * b]
            x, y = self.x[idx], self.y[idx]
            logits, loss = self.step(x, y)
            with torch.no_grad():
                loss_sum += loss.detach()
                correct += (logits.argmax(1) == y).sum()
        return {"loss": float(loss_sum) / (n // b), "accuracy": float(correct) / (n // b * b)}

    def test_accuracy(self) -> float:
        torch = self.torch
        self.model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(self.y_test), 1000):
                logits = self.model(self.x_test[i : i + 1000])
                correct += int((logits.argmax(1) == self.y_test[i : i + 1000]).sum())
        return correct / len(self.y_test)


# ---------------------------------------------------------------------------------------
# The JAX arm: the project's own epoch


class JaxArm:
    """:func:`train.loop.train_epoch` on the project's model, data on the device as uint8."""

    def __init__(self, model_name: str, ds: data_lib.Dataset, batch_size: int, seed: int = 0):
        shape = ds.train_images.shape[1:]
        tx = build_optimizer("nesterov", LEARNING_RATE, MOMENTUM)
        self.state = loop.create_train_state(
            models.create(model_name, ds.num_classes), tx, jax.random.key(seed), shape
        )
        self.images, self.labels = jax.device_put((ds.train_images, ds.train_labels))
        self.test_images, self.test_labels = jax.device_put((ds.test_images, ds.test_labels))
        self.mean, self.std = jnp.asarray(ds.mean), jnp.asarray(ds.std)
        self.key = jax.random.key(seed + 1)
        self.count = 0
        self.fn = loop.train_epoch.lower(
            self.state, self.images, self.labels, self.mean, self.std, self.key,
            batch_size=batch_size,
        ).compile()  # fmt: skip

    def initial_params(self) -> Any:
        return jax.device_get(self.state.params)

    def epoch(self) -> dict[str, float]:
        key = jax.random.fold_in(self.key, self.count)
        self.count += 1
        self.state, metrics = self.fn(
            self.state, self.images, self.labels, self.mean, self.std, key
        )
        metrics = jax.block_until_ready(metrics)
        return {"loss": float(metrics["loss"]), "accuracy": float(metrics["accuracy"])}

    def test_accuracy(self) -> float:
        m = loop.evaluate(
            self.state, self.test_images, self.test_labels, self.mean, self.std, batch_size=1000
        )
        return float(m["accuracy"])


# ---------------------------------------------------------------------------------------


def bench_cell(
    model_name: str, batch_size: int, ds: data_lib.Dataset, timed_epochs: int
) -> dict[str, Any]:
    """Both arms on one (model, batch) cell: warm-up epoch, then alternating timed epochs."""
    import time

    jax_arm = JaxArm(model_name, ds, batch_size)
    torch_arm = TorchArm(model_name, jax_arm.initial_params(), ds, batch_size)
    arms = {"jax": jax_arm, "torch": torch_arm}
    first: dict[str, dict[str, float]] = {}
    times: dict[str, list[float]] = {a: [] for a in ARMS}
    for epoch in range(timed_epochs + 1):
        order = ARMS if epoch % 2 == 0 else ARMS[::-1]
        for arm in order:
            start = time.perf_counter()
            metrics = arms[arm].epoch()  # returns host floats: the epoch has finished
            seconds = time.perf_counter() - start
            if epoch == 0:  # warm-up: accuracy after one epoch from the shared weights
                first[arm] = {**metrics, "test_accuracy": arms[arm].test_accuracy()}
            else:
                times[arm].append(seconds)
    steps = len(ds.train_labels) // batch_size
    row: dict[str, Any] = {"model": model_name, "batch_size": batch_size}
    for arm in ARMS:
        epoch_s = C.median(times[arm])
        row[f"{arm}_epoch_s"] = epoch_s
        row[f"{arm}_images_per_s"] = steps * batch_size / epoch_s
        row[f"{arm}_train_accuracy"] = first[arm]["accuracy"]
        row[f"{arm}_test_accuracy"] = first[arm]["test_accuracy"]
    row["ratio"] = row["jax_images_per_s"] / row["torch_images_per_s"]
    detail = {
        "model": model_name,
        "batch_size": batch_size,
        "epoch_images": steps * batch_size,
        "test_images": len(ds.test_labels),
        "data": ds.source or ds.name,
        "epoch_s": times,
        "first_epoch_train_loss": {a: first[a]["loss"] for a in ARMS},
    }
    return {"row": row, "detail": detail}


def torch_device() -> str:
    """``"cuda"`` when JAX runs on a GPU and torch sees one too, else ``"cpu"``.

    Both arms then run on the same kind of device; the float(...) that ends a torch epoch
    waits for its kernels, as ``block_until_ready`` does for JAX's.
    """
    import torch

    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def torch_version() -> str | None:
    """The installed torch version, or ``None`` (the ``bench`` extra is not installed)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the comparison; prints the table; writes .md/.json/.png. Returns 0 (2: no torch)."""
    parser = C.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, help="override the models")
    parser.add_argument(
        "--batch-sizes", nargs="+", type=C.positive_int, help="override the batch sizes"
    )
    parser.add_argument(
        "--train-images",
        type=C.positive_int,
        help="training images per epoch for every model (a class-balanced subset)",
    )
    parser.add_argument("--test-images", type=C.positive_int, help="test images evaluated")
    parser.add_argument("--timed-epochs", type=C.positive_int, help="timed epochs per arm")
    parser.add_argument(
        "--cifar-dir", help="CIFAR-10 python batches for the 32x32x3 models (else synthetic)"
    )
    args = parser.parse_args(argv)
    if torch_version() is None:
        C.log("vs_pytorch needs torch: pip install -e '.[bench]'")
        return 2
    train_images = None
    if args.train_images is not None:
        train_images = {m: args.train_images for m in MODELS}
    grid_name, grid, note = C.chosen_grid(
        args,
        GRIDS,
        GRID_NOTES,
        {
            "models": args.models,
            "batch_sizes": args.batch_sizes,
            "train_images": train_images,
            "test_images": args.test_images,
            "timed_epochs": args.timed_epochs,
        },
    )
    head = C.header(BENCHMARK, grid_name, note, grid)
    head["versions"]["torch"] = torch_version()
    head["torch_threads"] = os.cpu_count()
    head["torch_device"] = torch_device()
    head["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    head["xla_flags_applied"] = list(xla_flags.in_effect())
    head["loadavg_start"] = list(os.getloadavg())
    head["cpu_model"] = cpu_model()
    C.log(f"{BENCHMARK} on {head['device']} ({head['cpu_model']}), grid {grid_name}")

    rows, details, datasets = [], [], {}
    # The target cells (batch 128) first, so that a run cut short still has them.
    cells = [(m, b) for b in grid["batch_sizes"] for m in grid["models"]]
    cells.sort(key=lambda cell: cell[1] != TARGET_BATCH)
    for model_name, batch_size in cells:
        if model_name not in datasets:
            datasets[model_name] = load_data(
                model_name, grid["train_images"][model_name], grid["test_images"], args.cifar_dir
            )
        ds = datasets[model_name]
        cell = bench_cell(model_name, batch_size, ds, grid["timed_epochs"])
        cell["detail"]["loadavg_after"] = list(os.getloadavg())
        rows.append(cell["row"])
        details.append(cell["detail"])
        r = cell["row"]
        C.log(
            f"  {model_name} b={batch_size}: jax {r['jax_images_per_s']:.0f} img/s, "
            f"torch {r['torch_images_per_s']:.0f} img/s, ratio {r['ratio']:.2f}x; "
            f"test acc {r['jax_test_accuracy']:.4f} / {r['torch_test_accuracy']:.4f}; "
            f"load {os.getloadavg()[0]:.1f}"
        )
        markdown = write(args.out_dir, head, rows, details)  # after every cell
    print(markdown)
    return 0


def write(out_dir: Any, head: dict[str, Any], rows: list, details: list) -> str:
    """Writes the .md/.json/.png of the cells measured so far; returns the Markdown."""
    head = {**head, "loadavg_end": list(os.getloadavg())}
    payload = {**head, "rows": rows, "details": details, "targets": target_text()}
    markdown = render(payload)
    C.write_results(out_dir, BENCHMARK, payload, markdown)
    plot(payload, C.png_path(out_dir, BENCHMARK))
    return markdown


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``""`` when unknown)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def target_text() -> str:
    return (
        f"jax/torch images/s >= {TARGETS['cifar_quick']}x for every model at batch "
        f"{TARGET_BATCH} on the 2-core CPU, >= {TARGETS['lenet5']}x for LeNet-5"
    )


def render(payload: dict[str, Any]) -> str:
    """The Markdown report of a payload written by :func:`main`."""
    table, verdicts = [], []
    for r in payload["rows"]:
        table.append(
            [
                r["model"],
                r["batch_size"],
                f"{r['jax_epoch_s']:.2f}",
                f"{r['torch_epoch_s']:.2f}",
                f"{r['jax_images_per_s']:.0f}",
                f"{r['torch_images_per_s']:.0f}",
                f"**{r['ratio']:.2f}x**",
                f"{r['jax_train_accuracy']:.4f} / {r['torch_train_accuracy']:.4f}",
                f"{r['jax_test_accuracy']:.4f} / {r['torch_test_accuracy']:.4f}",
            ]
        )
        if r["batch_size"] == TARGET_BATCH:
            need = TARGETS[r["model"]]
            met = "met" if r["ratio"] >= need else "missed"
            verdicts.append(f"{r['model']}: {r['ratio']:.2f}x (target >= {need}x: {met})")
    sizes = "; ".join(
        f"{d['model']} b={d['batch_size']}: {d['epoch_images']} training images per epoch, "
        f"{d['test_images']} test images, {d['data']}"
        for d in payload["details"]
    )
    load = ", ".join(f"{x:.2f}" for x in payload["loadavg_start"])
    load_end = ", ".join(f"{x:.2f}" for x in payload["loadavg_end"])
    lines = [
        C.header_markdown(payload, "Project (JAX) vs PyTorch, one training epoch"),
        f"* CPU: {payload['cpu_model'] or 'unknown'}; torch {payload['versions']['torch']} "
        f"with {payload['torch_threads']} threads on "
        f"{payload.get('torch_device', 'cpu')}. Load average (1, 5, 15 min) at the start "
        f"{load}, at the end {load_end}"
        + (
            " (the machine was shared with other jobs: the absolute numbers are noisy; both "
            "arms alternate in one process so that load hits both alike)."
            if payload["loadavg_start"][0] > 0.5 or payload["loadavg_end"][0] > 0.5
            else "."
        ),
        "* XLA flags set by `train.platform.xla_flags`: "
        f"`{' '.join(payload['xla_flags_applied'])}`; "
        f"XLA_FLAGS seen by the process: `{payload['xla_flags']}`.",
        "",
        "Same network, initial weights, data, normalization, Nesterov SGD (lr 0.01, momentum "
        "0.9), batch size and epoch in both arms; the arms alternate epoch by epoch, the first "
        "epoch of each is the warm-up and is not timed; median over the timed epochs. "
        "images/s = batches x batch size / median epoch time; ratio = JAX images/s / PyTorch "
        "images/s. Accuracies after the first epoch from the shared initial weights (train: "
        "running accuracy of the epoch's batches).",
        "",
        C.markdown_table(
            [
                "model",
                "batch",
                "JAX epoch s",
                "PyTorch epoch s",
                "JAX img/s",
                "PyTorch img/s",
                "JAX / PyTorch",
                "train acc JAX / PyTorch",
                "test acc JAX / PyTorch",
            ],
            table,
        ),
        "",
        f"Epoch sizes: {sizes}.",
        "",
        f"Targets ({payload['targets']}), measured on {payload['device']}: "
        + ("; ".join(verdicts) if verdicts else f"no batch-{TARGET_BATCH} cell in this grid")
        + ".",
    ]
    if any(v.endswith("missed)") for v in verdicts):
        lines += [
            "",
            "What limits a missed cell, layer by layer against PyTorch's step: "
            "`python -m benchmarks.step_profile` (its report in this folder).",
        ]
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: Any) -> None:
    """Grouped bars: images/s of both arms per (model, batch)."""
    plt = C.pyplot()
    rows = payload["rows"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 1), 3.5))
    xs = np.arange(len(rows))
    for offset, arm, label in ((-0.2, "jax", "project (JAX)"), (0.2, "torch", "PyTorch")):
        ax.bar(xs + offset, [r[f"{arm}_images_per_s"] for r in rows], 0.4, label=label)
    for x, r in zip(xs, rows, strict=True):
        top = max(r["jax_images_per_s"], r["torch_images_per_s"])
        ax.text(x, top, f"{r['ratio']:.2f}x", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, [f"{r['model']}\nb={r['batch_size']}" for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("training images/s (log)")
    ax.set_title(f"one epoch, {payload['device']}", fontsize=9)
    ax.legend(fontsize=7)
    C.save_figure(fig, path)


if __name__ == "__main__":
    xla_flags.apply()  # the training app's XLA:CPU flags, before jax starts its backends
    raise SystemExit(main())
