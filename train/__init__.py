"""Training: data, the device-resident persistent loop, checkpoints and the CLI.

``python -m train`` is the command users run (:mod:`train.cli`); the pieces it is made of
are importable on their own, and importing them changes no process-wide setting:

* :mod:`train.run`: ``run(config)``, the setup, the epoch loop and the report;
* :mod:`train.setup`: the ``Experiment`` a run sets up before its first epoch;
* :mod:`train.placement`: the data set on the devices, behind one ``place`` call;
* :mod:`train.loop`: ``create_train_state``, ``train_step``, ``persistent_step``,
  ``train_epoch`` (one jitted call per epoch), ``evaluate``;
* :mod:`train.optimizers`: the optimizer registry, ``build_optimizer`` and the schedules;
* :mod:`train.sharding`: the data-parallel mesh;
* :mod:`train.checkpoints`: orbax checkpoints;
* :mod:`train.data`, :mod:`train.augment`: the data-set registry and on-device augmentation;
* :mod:`train.platform`: the platform workarounds (XLA:CPU flags, ``SCHED_BATCH``,
  third-party log noise), each applied by the CLI's ``main`` and by the benchmarks.
"""
