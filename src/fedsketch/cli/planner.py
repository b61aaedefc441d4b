"""``fedsketch plan`` and ``fedsketch estimate`` (registered on the main typer app by ``register``).

``plan CONFIG [--set k=v ...] [--json] [--out PATH]`` solves P2 (Algorithm 2) for the config and
prints / saves q, k, the predicted rounds, round time and total time next to the baselines.
``estimate CONFIG [--set k=v ...] [--out PATH]`` runs the pilot runs of eq. 22 through the
engine (``fedsketch.runner.pilot.make_pilot_runner(cfg)``) and writes theta as JSON.

Exit codes (``fedsketch.errors``): 0 success, 1 a failed solve or estimation (the message names
the client or constraint), 2 bad input (config, theta file, profile CSV, data, output folder),
130 interrupted. Messages are plain text (no rich markup), one per problem.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from fedsketch.config import ConfigError, load_config
from fedsketch.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, classify
from fedsketch.io import atomic_write_text
from fedsketch.network.profiles import payload_from_model
from fedsketch.planner.api import ROUND_TIME_STREAM, SAMPLED_ROUND_TIME_BUDGET, plan_json, sampled_round_time
from fedsketch.planner.estimate import EstimationError, estimate_theta, load_pilots, run_pilots
from fedsketch.planner.pilot_design import design_from_planner
from fedsketch.planner.qstep_problem import SolverError
from fedsketch.rng import Streams
from fedsketch.runner.build import (
    WeightsFn,
    config_payload_mbit,
    default_weights,
    plan_config,
    plan_from_config,
    problem_from_config,
)


class _EstimateFailed(EstimationError):
    """An estimation that ran and failed (exit 1), as opposed to a bad theta input (exit 2)."""


PilotFactory = Callable[[object], Callable[[float, int], float | None]]
PayloadFn = Callable[[object], float | None]

SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override: section.key=value (repeatable)")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="where to write the JSON (default: <output.dir>/...)")]


def _default_pilot_factory(cfg):
    from fedsketch.runner.pilot import make_pilot_runner, pilot_cache_path  # torch lives behind this import

    # an interrupted estimate resumes from the cache; a line per replicate shows a long estimate moving
    return make_pilot_runner(cfg, cache=pilot_cache_path(cfg), progress=typer.echo)


def _default_payload_fn(cfg) -> float | None:
    return config_payload_mbit(cfg)  # torch is imported only inside, and only if the model must be read


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "unreachable" if x is None or not np.isfinite(x) else format(x, spec)


def _write(path: Path, data: dict) -> None:
    """Write atomically (``fedsketch.io``): a failed write leaves any earlier file at ``path`` intact."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _estimate_interrupted(cfg, runner, from_file: bool, default_factory: bool) -> str:
    """What an interrupted ``estimate`` says: how the same command resumes (from the finished pilots)."""
    if from_file:
        return "interrupted before theta was written; run the same command again (it runs no pilot)"
    cache = getattr(runner, "cache", None)
    if cache is None and runner is None and default_factory:  # interrupted while the model loaded
        from fedsketch.runner.pilot import pilot_cache_path

        cache = pilot_cache_path(cfg)
    again = "run the same command again to resume"
    if cache is None:
        return f"interrupted; {again} (--fresh runs every pilot again)"
    try:
        n = len(json.loads(Path(cache).read_text())["replicates"])
    except (OSError, ValueError, KeyError, TypeError):
        n = 0
    if n == 0:
        return f"interrupted before any pilot finished; {again}: it starts with the first pilot"
    return (
        f"interrupted; {again}: the {n} finished pilot replicate(s) in {cache} are reused and the pilot that was "
        "running starts over (--fresh runs them all again)"
    )


def _estimate_extras(
    cfg,
    p,
    obs,
    est,
    pilots_file,
    refine_: bool,
    pilot_factory: PilotFactory | None = None,
    payload_mbit: float | None = None,
    runner=None,
):
    """Bootstrap band (theta and the plan's time) and the refinement loop of PAPER.md §8.4."""
    from fedsketch.planner.bound import Theta
    from fedsketch.planner.pilot_design import in_hull, observation_points
    from fedsketch.planner.refine import bootstrap_theta, predicted_time_band, refine

    extra: dict = {}
    steps: list = []
    r = cfg.lora.rank

    def plan_fn(theta: Theta, rows):  # PAPER.md §8.4: inside the pilots run so far unless planner.extrapolate
        prob = problem_from_config(cfg, p=p, theta=theta, pilots=rows, payload_mbit=payload_mbit)
        plan = plan_config(prob, cfg)[0]
        return plan.q, plan.k, plan.rounds

    if refine_ and est.ok:
        if pilots_file is not None:
            raise ValueError("--refine runs verification pilots: use it without --pilots")
        runner = runner or (pilot_factory or _default_pilot_factory)(cfg)  # reuse the pilots' engine
        est, steps = refine(obs, p, r, plan_fn, runner.run_plan, signs=cfg.planner.estimate_signs)
        extra["refinement"] = [vars(s) for s in steps]
        extra["_refined"] = est
        obs = est.observations
    homo = [o for o in obs if o.X is None]
    band = None
    if homo and all(len(o.replicates) >= 2 for o in homo):  # a flagged estimate gets its band too: it shows why
        try:
            band = bootstrap_theta(
                homo, p, r, Streams(cfg.seed).generator("theta_bootstrap"), signs=cfg.planner.estimate_signs
            )
            extra["bootstrap"] = band.to_dict()
        except EstimationError as e:
            if est.ok:
                raise
            extra["bootstrap_error"] = str(e)
    if est.ok:
        try:  # the plan with this theta, inside the pilots run so far unless planner.extrapolate (§8.4)
            prob = problem_from_config(
                cfg, p=p, theta=Theta.from_sequence(est.theta), pilots=list(obs), payload_mbit=payload_mbit
            )
            plan = plan_config(prob, cfg)[0]
        except (ValueError, SolverError) as e:  # profiles or theta unusable for planning: report theta (band) only
            extra["plan_error"] = str(e)
            return extra, steps
        xy = np.array([[prob.X(plan.q), prob.Y(plan.q, plan.k)]])
        extra["plan"] = {
            "q": plan.q.tolist(),
            "k": [int(x) for x in plan.k],
            "X": float(xy[0, 0]),
            "Y": float(xy[0, 1]),
            "rounds": plan.rounds,
            "total_time": plan.total_time,
            "q_floor": prob.q_floor,
            "k_min": int(prob.k_min),
            "extrapolate": bool(cfg.planner.extrapolate),
            "inside_pilot_hull": bool(in_hull(xy, observation_points(obs, p, r), rtol=1e-6)[0]),
        }
        if band is not None:
            lo, hi, _ = predicted_time_band(band, prob, plan.q, plan.k)
            extra["plan_time_band"] = {"total_time": plan.total_time, "lo": lo, "hi": hi, "level": list(band.level)}
    return extra, steps


def register(
    app: typer.Typer,
    *,
    weights_fn: WeightsFn | None = None,
    pilot_factory: PilotFactory | None = None,
    payload_fn: PayloadFn | None = None,
    debug: Callable[[], bool] = lambda: False,
) -> None:
    """Add the ``plan`` and ``estimate`` commands to ``app``.

    Parameters
    ----------
    app : typer.Typer
    weights_fn : callable(cfg) -> array (N,), optional
        Data sizes/weights p_n; default ``fedsketch.data.partition.partition_sizes``.
    pilot_factory : callable(cfg) -> run_pilot, optional
        Builds ``run_pilot(q, k) -> rounds``; default ``fedsketch.runner.pilot.make_pilot_runner``.
    payload_fn : callable(cfg) -> float or None, optional
        Full-rank LoRA upload size (Mbit) that ``fedsketch run`` would use; default
        ``fedsketch.runner.build.config_payload_mbit`` (counted from the model's shapes).
    debug : callable() -> bool, optional
        Whether ``--debug`` is on (the app's flag); then an unexpected error shows its traceback.
    """
    out_console = Console(highlight=False)

    def say_err(msg: str) -> None:
        typer.echo(msg, err=True)

    def load(config: Path, sets: list[str] | None, *, planner: bool, out: Path | None, default: str):
        """The config and the path to write, or exit 2 naming every problem, before any model loads or any
        pilot runs (the output location included: ``--out``, else ``<output.dir>/<default>-<hash>.json``)."""
        from fedsketch.preflight import check_inputs, check_output_file

        try:
            cfg = load_config(config, list(sets or []))
        except ConfigError as e:
            problems = e.errors
        else:
            # plan trains nothing; injected client weights stand in for the split
            problems = check_inputs(cfg, planner=planner, engine=not planner, partition=weights_fn is None)
        if problems:
            say_err(f"{config}: {len(problems)} problem(s)" if len(problems) > 1 else f"{config}:")
            for msg in problems:
                say_err(f"  - {msg}")
            raise typer.Exit(EXIT_BAD_INPUT)
        path = out or Path(cfg.output.dir) / f"{default}-{cfg.hash()}.json"
        where = check_output_file(path, "--out" if out is not None else "output.dir")
        if where:
            say_err(where)
            raise typer.Exit(EXIT_BAD_INPUT)
        return cfg, path

    def write(path: Path, data: dict) -> None:
        try:
            _write(path, data)
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - fail() turns it into a message
            fail(e)

    def fail(e: BaseException) -> None:
        """Estimation errors keep their codes; anything else goes through errors.classify, as in
        every other command (one plain message, the traceback only with --debug)."""
        if isinstance(e, EstimationError):
            say_err(f"error: {e}")
            raise typer.Exit(1 if isinstance(e, _EstimateFailed) else 2) from None
        if debug() and not isinstance(e, KeyboardInterrupt):
            raise e
        code, msg = classify(e)
        if code == EXIT_FAILED and isinstance(e, (ValueError, SolverError, ImportError, RuntimeError)):
            msg = f"error: {e}"  # planning's expected failures (an infeasible plan, a solver that gave up)
        say_err(msg)
        raise typer.Exit(code) from None

    @app.command("plan")
    def plan_cmd(
        config: Annotated[Path, typer.Argument(help="TOML config")],
        set_: SetOpt = None,
        json_: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
        out: OutOpt = None,
    ) -> None:
        """Choose q and k (Algorithm 2) and compare with the baselines of Figs. 2-3."""
        cfg, path = load(config, set_, planner=True, out=out, default="plan")
        try:
            payload = (payload_fn or _default_payload_fn)(cfg) if payload_from_model(cfg.network) else None
            plan, bls, prob = plan_from_config(cfg, weights_fn=weights_fn or default_weights, payload_mbit=payload)
            sampled = sampled_round_time(prob, plan.q, plan.k, Streams(cfg.seed).generator(ROUND_TIME_STREAM))
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - fail() turns it into a message
            fail(e)
        data = plan_json(plan, bls, prob)
        data["round_time_sampled"] = None if sampled is None else dataclasses.asdict(sampled)
        write(path, data)
        if json_:
            typer.echo(json.dumps(data))
            say_err(f"saved {path}")
            return
        q, k = plan.q, plan.k
        out_console.print(
            f"[bold]plan[/bold] N={prob.N} r={prob.r} W={prob.W:g} Mbps, feasibility={prob.feasibility}, "
            f"solver={cfg.planner.q_solver}, {plan.diagnostics['solve_seconds']:.2f} s"
        )
        out_console.print(
            f"q: min {q.min():.3f}  median {np.median(q):.3f}  max {q.max():.3f}  E|K| = {q.sum():.2f} clients/round"
        )
        out_console.print(
            f"k: min {k.min()}  median {np.median(k):g}  max {k.max()}  "
            f"histogram {dict(zip(*np.unique(k, return_counts=True), strict=True))}".replace("np.int64", "")
        )
        t = Table(title="predicted time to the estimation loss (model of eq. 21)")
        for col in ("allocation", "rounds", "round time [s]", "total [s]", "x plan", "feasible"):
            t.add_column(col, justify="right" if col != "allocation" else "left")
        t.add_row("plan", _fmt(plan.rounds), _fmt(plan.round_time), _fmt(plan.total_time), "1.00", "yes")
        for b in bls:
            ratio = b.total_time / plan.total_time if np.isfinite(b.total_time) else None
            t.add_row(
                f"{b.family}: {b.name}",
                _fmt(b.rounds),
                _fmt(b.round_time),
                _fmt(b.total_time),
                _fmt(ratio, ".2f"),
                "yes" if b.feasible else "no",
            )
        out_console.print(t)
        st = plan.stability  # PAPER.md §8.3
        out_console.print(
            f"stability={st['stability']}: step factor kappa_max*Omega = {st['step_factor']:.4g} "
            f"(max_step_factor {st['max_step_factor']:g}, {'binding' if st['binding'] else 'not binding'}), "
            f"lr scale s = {st['lr_scale']:.4g} (train.lr x s = {cfg.train.lr * st['lr_scale']:.4g}); "
            f"predicted {_fmt(plan.rounds)} rounds, {_fmt(plan.total_time)} s"
        )
        if sampled is None:
            et = f"not sampled at N = {prob.N} (more than {SAMPLED_ROUND_TIME_BUDGET // 100:,} clients)"
        elif sampled.method == "enumerate":
            et = f"{sampled.value:.4g} s (eq. 10, exact over all {sampled.samples} participation masks)"
        else:
            et = f"{sampled.value:.4g} ± {sampled.stderr:.2g} s (eq. 10 over {sampled.samples} sampled rounds)"
        out_console.print(
            f"round time at the plan: E[T] = {et}; planned {plan.round_time:.4g} s (the Theorem 2 "
            f"bound, eq. 14); eq. 11 root {plan.round_time_approx:.4g} s (it exceeds the "
            f"compute time of every client with q_n > 0, so it is high when q is small)"
        )
        typer.echo(f"saved {path}")

    @app.command("estimate")
    def estimate_cmd(
        config: Annotated[Path, typer.Argument(help="TOML config")],
        set_: SetOpt = None,
        out: OutOpt = None,
        pilots: Annotated[
            Path | None,
            typer.Option(
                "--pilots",
                help="refit from the pilot rounds recorded in an earlier estimate's JSON "
                "instead of running the pilots again",
            ),
        ] = None,
        refine_: Annotated[
            bool,
            typer.Option(
                "--refine",
                help="plan, run one verification pilot at the plan, refit, re-plan (at most 3 times; PAPER.md §8.4)",
            ),
        ] = False,
        fresh: Annotated[
            bool,
            typer.Option(
                help="run every pilot again instead of reusing the finished ones (<output.dir>/pilots-<hash>.json)"
            ),
        ] = False,
    ) -> None:
        """Estimate theta1..theta4 from pilot runs (eqs. 22-23) and write them as JSON.

        Each finished pilot replicate is kept in ``<output.dir>/pilots-<hash>.json``, so an interrupted
        estimate (or a rerun with ``--refine``) resumes without running it again."""
        cfg, path = load(config, set_, planner=False, out=out, default="theta")
        pl = cfg.planner
        if fresh and pilots is None:
            from fedsketch.runner.pilot import pilot_cache_path

            pilot_cache_path(cfg).unlink(missing_ok=True)
        runner = None
        try:
            p = (weights_fn or default_weights)(cfg)
            if pilots is not None:
                obs = load_pilots(pilots)
            else:
                configs = design_from_planner(cfg.planner, p, cfg.lora.rank)  # planner.pilot_design (PAPER.md §8.4)
                runner = (pilot_factory or _default_pilot_factory)(cfg)
                obs = run_pilots(runner, configs)
            est = estimate_theta(obs, p, cfg.lora.rank, rcond=pl.estimate_rcond, signs=pl.estimate_signs)
            payload = (payload_fn or _default_payload_fn)(cfg) if est.ok and payload_from_model(cfg.network) else None
            extra, steps = _estimate_extras(cfg, p, obs, est, pilots, refine_, pilot_factory, payload, runner)
            if steps:
                est = extra.pop("_refined")
        except EstimationError as e:
            fail(_EstimateFailed(str(e)))
        except KeyboardInterrupt:
            say_err(_estimate_interrupted(cfg, runner, pilots is not None, pilot_factory is None))
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as e:  # noqa: BLE001 - fail() turns it into a message
            fail(e)
        write(path, {**est.to_dict(), **extra})
        t = Table(title="pilot runs (eq. 22)")
        for col in ("q", "k", "rounds to pilot_loss"):
            t.add_column(col, justify="right")
        for o in obs:
            t.add_row(f"{o.q:g}", str(o.k), f"{o.rounds:g}")
        out_console.print(t)
        th = est.theta
        out_console.print(
            f"theta = ({th[0]:.6g}, {th[1]:.6g}, {th[2]:.6g}, {th[3]:.6g})  "
            f"sigma_3/sigma_1 = {est.rcond:.3g}  residual = {est.residual:.3g}"
        )
        if "bootstrap" in extra:
            b = extra["bootstrap"]
            bad = f", {b['invalid_draws']} sign-invalid draws left out" if b["invalid_draws"] else ""
            out_console.print(
                f"bootstrap {b['level'][0]:g}-{b['level'][1]:g} % band ({b['draws']} draws{bad}): "
                + ", ".join(f"{n} in [{v[0]:.4g}, {v[1]:.4g}]" for n, v in b.items() if n.startswith("theta"))
            )
        elif "bootstrap_error" in extra:
            say_err(extra["bootstrap_error"])
        if "plan_time_band" in extra:
            pt = extra["plan_time_band"]
            out_console.print(
                f"plan with this theta: predicted {pt['total_time']:.4g} s, band [{pt['lo']:.4g}, {pt['hi']:.4g}] s"
            )
        if "plan" in extra:
            pn = extra["plan"]
            where = ("inside" if pn["inside_pilot_hull"] else "outside") + " the pilots' (X, Y) hull"
            held = (
                "planner.extrapolate = true"
                if pn["extrapolate"]
                else f"held to q >= {pn['q_floor']:.4g}, k >= {pn['k_min']}"
            )
            out_console.print(
                f"plan: {_fmt(pn['rounds'])} rounds, X = {pn['X']:.4g}, Y = {pn['Y']:.4g}, {where} "
                f"({held}); sum q = {sum(pn['q']):.3g}, min k = {min(pn['k'])}"
            )
        elif "plan_error" in extra:
            say_err(f"no plan with this theta: {extra['plan_error']}")
        for i, st in enumerate(steps, 1):
            out_console.print(
                f"refinement {i}: predicted {st.predicted_rounds:.4g} rounds at the plan, observed "
                f"{st.observed_rounds:.4g} ({100 * st.relative_error:.1f} % off)"
            )
        if est.pinned:
            u = est.unconstrained
            assert u is not None  # kept whenever something was pinned
            out_console.print(
                f"sign-constrained fit: {', '.join(est.pinned)} pinned to 0; the unconstrained fit was "
                f"({u[0]:.4g}, {u[1]:.4g}, {u[2]:.4g}, {u[3]:.4g}) with residual {est.unconstrained_residual:.3g}"
            )
        # attributes of make_pilot_runner's runner; an injected pilot_factory's may lack them
        reused, cache = getattr(runner, "reused", 0), getattr(runner, "cache", None)
        if reused:
            typer.echo(f"reused {reused} finished pilot replicate(s) from {cache} (--fresh runs them again)")
        typer.echo(f"saved {path}")
        if not est.ok:
            for msg in est.problems:
                say_err(f"problem: {msg}")
            say_err("the estimate is flagged (ok=false in the JSON); `fedsketch plan` will refuse it")
            raise typer.Exit(1)
        typer.echo(f"use it with: --set planner.theta_file={str(path)!r}")
