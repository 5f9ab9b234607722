"""Training: data, the device-resident persistent loop, checkpoints and the CLI.

``python -m train`` (or ``polyak-train``) is the command users run; the pieces it is made
of are importable on their own:

* :mod:`train.loop`: ``create_train_state``, ``train_step``, ``persistent_step``,
  ``train_epoch`` (one jitted call per epoch), ``evaluate``;
* :mod:`train.optimizers`: ``build_optimizer`` and the schedules;
* :mod:`train.sharding`: the data-parallel mesh;
* :mod:`train.checkpoints`: orbax checkpoints;
* :mod:`train.data`, :mod:`train.augment`: data sets and on-device augmentation.
"""

from train import xla_flags  # noqa: F401  (first: sets XLA:CPU flags before jax starts)
