"""Flower (flwr 1.41 Message API) backend: ServerApp, ClientApp and a client executor.

The ServerApp drives fedsketch's own :class:`~fedsketch.runner.run.Run` with the clients behind
a Flower :class:`~fedsketch.flower.executor.FlowerExecutor`, so sampling, sketching, aggregation
(PAPER.md eq. 6) and the simulated clock (eq. 10) are the in-process backend's. Import this package
only when Flower is installed (the ``flower`` extra); nothing outside it imports ``flwr``.

Modules: ``codec`` (records), ``executor`` (``FlowerExecutor``, discovery, message exchange),
``server_app`` / ``client_app`` (the apps, referenced by ``pyproject.toml`` components),
``run`` (``run_flower``: the simulation entry point of ``fedsketch run --backend flower``).
"""
