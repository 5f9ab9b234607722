"""Training: data, the device-resident persistent loop, checkpoints and the CLI.

``python -m train`` is the command users run (:mod:`train.cli`); the pieces it is made of
are importable on their own, and importing them changes no process-wide setting:

* :mod:`train.loop`: ``create_train_state``, ``train_step``, ``persistent_step``,
  ``train_epoch`` (one jitted call per epoch), ``evaluate``;
* :mod:`train.optimizers`: ``build_optimizer`` and the schedules;
* :mod:`train.sharding`: the data-parallel mesh;
* :mod:`train.checkpoints`: orbax checkpoints;
* :mod:`train.data`, :mod:`train.augment`: data sets and on-device augmentation;
* :mod:`train.platform`: the platform workarounds (XLA:CPU flags, ``SCHED_BATCH``,
  third-party log noise), each applied by the CLI's ``main`` and by the benchmarks.
"""
