"""Workarounds for the platforms the training app runs on, one module each.

Importing this package (or any of its modules) changes nothing; the training CLI
(:func:`train.cli.main`) and the benchmarks call each entry point explicitly:

* :func:`train.platform.xla_flags.apply`: XLA:CPU flags, before jax starts its backends;
* :func:`train.platform.cpu_scheduling.apply`: ``SCHED_BATCH`` for a multi-process CPU run;
* :func:`train.platform.log_noise.install`: drops the log lines and stray tracebacks of
  orbax, tensorstore and TFDS that repeat what the CLI's one-line errors say.

Each automatic setting has an environment switch that turns it off
(:func:`train.platform._opt_out.opted_out`).
"""
