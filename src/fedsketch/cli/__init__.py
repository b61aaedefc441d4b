"""Every command of ``fedsketch`` (the console entry point ``fedsketch.cli:main``).

- :mod:`fedsketch.cli.app`: the typer app, ``run``, ``compare``, ``check`` and the shared options;
- :mod:`fedsketch.cli.planner`: ``plan`` and ``estimate`` (Algorithm 2), registered on the app.

The only package that reads the command line or prints with rich; the maths core (network,
planner, sampling, sketch, aggregate, strategies) imports neither typer nor rich.
"""

from fedsketch.cli.app import app, main

__all__ = ["app", "main"]
