"""Regenerates ``torch_schedules.json``: PyTorch's ``CyclicLR``/``OneCycleLR`` values.

CI has no PyTorch; ``tests/test_schedules.py`` compares ``polyak_optax``'s schedules
against the numbers this script records. Run it with a PyTorch environment (the committed
file was made with torch 2.13.0+cpu)::

    python tests/data/make_torch_reference.py

Each case records, for step counts t, the learning rate and momentum of the optimizer
after t calls of ``scheduler.step()`` (t = 0 is right after construction). The custom
``scale_fn``s are named; the tests rebuild them in JAX from the same formulas.
"""

from __future__ import annotations

import json
import math
import pathlib

SCALE_FNS = {
    # PyTorch's documented example of a custom cycle-wise scale.
    "half_sine": lambda x: 0.5 * (1.0 + math.sin(x * math.pi / 2.0)),
    # An iteration-wise decay.
    "inverse": lambda x: 1.0 / (1.0 + 0.05 * x),
}

CYCLIC_CASES = [
    dict(base_lr=0.001, max_lr=0.1, step_size_up=4),
    dict(base_lr=0.001, max_lr=0.1, step_size_up=3, step_size_down=5),
    dict(base_lr=0.01, max_lr=0.5, step_size_up=2, step_size_down=4, mode="triangular2"),
    dict(base_lr=0.01, max_lr=0.5, step_size_up=3, step_size_down=2, mode="exp_range", gamma=0.95),
    dict(base_lr=0.1, max_lr=1.0, step_size_up=2, scale_fn="half_sine", scale_mode="cycle"),
    dict(
        base_lr=0.1,
        max_lr=1.0,
        step_size_up=3,
        step_size_down=1,
        scale_fn="inverse",
        scale_mode="iterations",
    ),
    dict(
        base_lr=0.1,
        max_lr=1.0,
        step_size_up=2,
        mode="exp_range",
        gamma=0.5,
        scale_fn="half_sine",
        scale_mode="iterations",
    ),
    dict(base_lr=0.002, max_lr=0.02, step_size_up=2.5, step_size_down=1.5),
    dict(base_lr=0.002, max_lr=0.02, step_size_up=2.5, step_size_down=1.5, mode="triangular2"),
    dict(
        base_lr=1e-4,
        max_lr=0.1,
        step_size_up=7,
        step_size_down=3,
        mode="exp_range",
        gamma=0.99,
        base_momentum=0.85,
        max_momentum=0.95,
    ),
]
CYCLIC_STEPS = 30

# Long cycles, sampled at a few counts (PyTorch's default step size is 2000).
LONG_CYCLIC_CASES = [
    dict(base_lr=1e-3, max_lr=6e-3, step_size_up=2000, step_size_down=1000),
    dict(base_lr=1e-3, max_lr=6e-3, step_size_up=2000, mode="triangular2"),
    dict(base_lr=1e-3, max_lr=6e-3, step_size_up=2000, mode="exp_range", gamma=0.99994),
]
LONG_STEPS = [
    0,
    1,
    999,
    1000,
    1999,
    2000,
    2001,
    2999,
    3000,
    3001,
    3999,
    4000,
    4001,
    12345,
    29999,
    30000,
]

ONECYCLE_CASES = [
    dict(max_lr=0.1, total_steps=20),
    dict(max_lr=0.1, total_steps=20, anneal_strategy="linear"),
    dict(max_lr=0.1, total_steps=20, three_phase=True),
    dict(max_lr=0.1, total_steps=20, three_phase=True, anneal_strategy="linear"),
    dict(max_lr=0.4, total_steps=10, pct_start=0.25),  # fractional phase end 1.5
    dict(max_lr=0.4, total_steps=10, pct_start=0.25, three_phase=True),
    dict(
        max_lr=1.0,
        total_steps=37,
        pct_start=0.45,
        three_phase=True,
        div_factor=10.0,
        final_div_factor=100.0,
        base_momentum=0.8,
        max_momentum=0.9,
    ),
    dict(max_lr=1.0, total_steps=23, pct_start=0.6, three_phase=True),  # phase 3 never reached
    dict(max_lr=0.05, total_steps=15, pct_start=0.0),
    dict(max_lr=0.05, total_steps=15, pct_start=1.0, anneal_strategy="linear"),
    dict(max_lr=0.05, total_steps=15, pct_start=0.05),  # negative first phase end
    dict(max_lr=0.3, total_steps=1),
    dict(max_lr=0.3, total_steps=2),
]
# A long cycle, sampled: its start, its peak (step 299) and its tail.
LONG_ONECYCLE_CASES = [
    dict(max_lr=0.01, total_steps=1000, div_factor=4.0, final_div_factor=1e3),
    dict(max_lr=0.01, total_steps=1000, anneal_strategy="linear", three_phase=True),
]
LONG_ONECYCLE_STEPS = [*range(5), *range(295, 305), *range(595, 605), *range(985, 1000)]


# torch is imported inside the functions: CI collects this file for doctests without it.


def _optimizer():
    import torch

    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)


def _values(optimizer, scheduler, steps):
    wanted, lrs, momenta = set(steps), [], []
    for t in range(max(steps) + 1):
        if t:
            optimizer.step()
            scheduler.step()
        if t in wanted:
            lrs.append(optimizer.param_groups[0]["lr"])
            momenta.append(optimizer.param_groups[0]["momentum"])
    return lrs, momenta


def cyclic_case(case, steps):
    import torch

    kwargs = dict(case)
    name = kwargs.pop("scale_fn", None)
    optimizer = _optimizer()
    scheduler = torch.optim.lr_scheduler.CyclicLR(
        optimizer, scale_fn=SCALE_FNS[name] if name else None, **kwargs
    )
    lrs, momenta = _values(optimizer, scheduler, steps)
    return {"kwargs": case, "steps": steps, "lr": lrs, "momentum": momenta}


def onecycle_case(case, steps=None):
    import torch

    steps = list(range(case["total_steps"])) if steps is None else steps
    optimizer = _optimizer()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, **case)
    lrs, momenta = _values(optimizer, scheduler, steps)
    return {"kwargs": case, "steps": steps, "lr": lrs, "momentum": momenta}


def main() -> None:
    import torch

    reference = {
        "torch_version": torch.__version__,
        "cyclic": [cyclic_case(c, list(range(CYCLIC_STEPS))) for c in CYCLIC_CASES]
        + [cyclic_case(c, LONG_STEPS) for c in LONG_CYCLIC_CASES],
        "onecycle": [onecycle_case(c) for c in ONECYCLE_CASES]
        + [onecycle_case(c, LONG_ONECYCLE_STEPS) for c in LONG_ONECYCLE_CASES],
    }
    path = pathlib.Path(__file__).with_name("torch_schedules.json")
    # One case per line: small diffs, still valid JSON.
    lines = ["{", f' "torch_version": {json.dumps(reference["torch_version"])},']
    for key, end in (("cyclic", ","), ("onecycle", "")):
        cases = ",\n".join("  " + json.dumps(case) for case in reference[key])
        lines.append(f' "{key}": [\n{cases}\n ]{end}')
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
