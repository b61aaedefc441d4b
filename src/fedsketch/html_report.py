"""``report.html``: one self-contained page (figures embedded as base64 PNG) for a run or a suite.

A run folder (``metrics.jsonl``, ``run.json``, ``config.toml``) gives

- ``accuracy-loss``: test accuracy and test loss against simulated minutes;
- ``participation``: each client's participation over the rounds (a heat map) beside its q_n;
- ``allocation``: q_n and k_n of every client against its full-rank compute time tau_cp and upload
  time tau_cm (eqs. 18-19);
- ``bandwidth``: the bandwidth share b_n / W of each sampled client in every round (eq. 10);
- ``uploads``: uploaded bytes per round and per client;
- the config and the library versions.

A suite output folder (``table.csv``, ``runs/<strategy>-seed<k>/``) gives the time-to-target
table, the accuracy sweep, the suite's accuracy and loss plots and every strategy's curves
(one line per seed). Every ``<img>`` is a ``data:image/png;base64`` URI, so the file can be
mailed or opened anywhere. Pure numpy + matplotlib: imports no torch.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsketch.compare.layout import parse_run_name, runs_dir
from fedsketch.config.readers import ReadError, check_type, parse_toml, read_csv, read_json, read_text, short
from fedsketch.errors import InputError
from fedsketch.io import atomic_write_text
from fedsketch.records import METRICS_FILE, RoundRecord, evaluations, read_metrics

RUN_FIGURES = ("accuracy-loss", "participation", "allocation", "bandwidth", "uploads")
SUITE_FIGURES = ("suite-accuracy", "suite-loss")

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; max-height: 30em; }
.muted { color: #666; font-size: 0.9em; }
"""


# --------------------------------------------------------------------------- helpers


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks(*axes: Any, axis: str = "x") -> None:
    from matplotlib.ticker import MaxNLocator

    for a in axes:
        (a.xaxis if axis == "x" else a.yaxis).set_major_locator(MaxNLocator(integer=True))


def _png(fig: Any) -> str:
    """The figure as a base64 PNG data URI (and the figure closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(fid: str, uri: str, caption: str) -> str:
    return (
        f'<figure id="{fid}"><img alt="{html.escape(caption, quote=True)}" src="{uri}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(v: Any) -> str:
    if v is None or v == "":
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _page(title: str, sections: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
        + "\n".join(sections)
        + '\n<p class="muted">Written by fedsketch (fedsketch report). Times are simulated wall-clock '
        "minutes of the wireless system model (PAPER.md eqs. 10, 18-19).</p>\n</body></html>\n"
    )


def _percent(accuracy: float | None) -> float:
    """An evaluated record's accuracy in percent."""
    assert accuracy is not None, "not an evaluated record"
    return 100 * accuracy


# --------------------------------------------------------------------------- run figures


def _fig_accuracy_loss(records: Sequence[RoundRecord]) -> str:
    plt = _plt()
    ev = evaluations(records)
    x = [r.sim_seconds / 60 for r in ev]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
    a1.plot(x, [_percent(r.accuracy) for r in ev], marker="o")
    a1.set_ylabel("test accuracy (%)")
    a2.plot(x, [r.test_loss for r in ev], marker="o", color="tab:red")
    a2.set_ylabel("test loss (answer NLL per token)")
    for a in (a1, a2):
        a.set_xlabel("simulated wall-clock time (min)")
        a.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _participation(records: Sequence[RoundRecord], n: int) -> np.ndarray:
    """(N, R) matrix: 1 trained and uploaded, 0.5 sampled but failed, 0 not sampled."""
    rounds = [r for r in records if r.round > 0]
    m = np.zeros((n, len(rounds)))
    for j, r in enumerate(rounds):
        failed = {f["client"] for f in r.failed}
        for c in r.sampled:
            m[c, j] = 0.5 if c in failed else 1.0
    return m


def _fig_participation(records: Sequence[RoundRecord], q: np.ndarray) -> str:
    plt = _plt()
    n = len(q)
    m = _participation(records, n)
    fig, (a1, a2) = plt.subplots(
        1, 2, figsize=(10, max(2.6, 0.22 * n + 1.2)), sharey=True, gridspec_kw={"width_ratios": [4, 1]}
    )
    a1.imshow(
        m,
        aspect="auto",
        cmap="Greens",
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(0.5, m.shape[1] + 0.5, n - 0.5, -0.5),
    )
    a1.set_xlabel("round (dark: trained and uploaded, light: sampled but failed)")
    a1.set_ylabel("client")
    _integer_ticks(a1)
    _integer_ticks(a1, axis="y")
    share = m.astype(bool).mean(1) if m.shape[1] else np.zeros(n)
    a2.barh(np.arange(n), q, color="tab:blue", alpha=0.6, label="q_n")
    a2.plot(share, np.arange(n), "k|", ms=10, label="sampled share")
    a2.set_xlim(0, 1.05)
    a2.set_xlabel("q_n")
    a2.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def _fig_allocation(q: np.ndarray, k: np.ndarray, tau_cp: np.ndarray, tau_cm: np.ndarray) -> str:
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6))
    for row, (vals, name) in enumerate(((q, "q_n"), (k, "k_n"))):
        for col, (t, tname) in enumerate(
            ((tau_cp, "full-rank compute time tau_cp (s)"), (tau_cm, "full-rank upload tau_cm (Mbit = s at 1 Mbps)"))
        ):
            a = axes[row][col]
            a.scatter(t, vals, s=22)
            for i, (xx, yy) in enumerate(zip(t, vals, strict=True)):
                a.annotate(str(i), (xx, yy), fontsize=6, xytext=(2, 2), textcoords="offset points")
            a.set_xlabel(tname, fontsize=8)
            a.set_ylabel(name)
            a.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _shares(rec: RoundRecord, info: dict[str, Any], W: float) -> list[float]:
    """b_n of each sampled client; eq. 10 solved again from run.json's times for a record without
    ``bandwidth_mbps`` (without a method's extra download)."""
    if rec.bandwidth_mbps is not None:
        return list(rec.bandwidth_mbps)
    from fedsketch.network import allocate_bandwidth

    s = rec.sampled
    if not s:
        return []
    _, b = allocate_bandwidth(np.asarray(info["t_cp"])[s], np.asarray(info["t_cm"])[s], W)
    return [float(x) for x in b]


def _fig_bandwidth(records: Sequence[RoundRecord], info: dict[str, Any], W: float, n: int) -> str:
    plt = _plt()
    rounds = [r for r in records if r.round > 0]
    cmap = plt.get_cmap("tab20")
    fig, a = plt.subplots(figsize=(10, 3.4))
    for r in rounds:
        bottom = 0.0
        for c, b in zip(r.sampled, _shares(r, info, W), strict=False):
            a.bar(r.round, b / W, bottom=bottom, color=cmap(c % 20), width=0.85, edgecolor="white", lw=0.3)
            bottom += b / W
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(c % 20)) for c in range(min(n, 20))]
    a.legend(
        handles,
        [f"client {c}" for c in range(min(n, 20))],
        fontsize=6,
        ncol=min(n, 10),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.22),
    )
    a.set_xlabel("round")
    _integer_ticks(a)
    a.set_ylabel("bandwidth share b_n / W")
    a.set_ylim(0, 1.02)
    fig.tight_layout()
    return _png(fig)


def _client_bytes(rec: RoundRecord, k: np.ndarray) -> dict[int, float]:
    """Each sampled client's upload; for a record without ``client_bytes``, the total split in proportion to k_n."""
    if rec.client_bytes is not None:
        return {c: float(b) for c, b in zip(rec.sampled, rec.client_bytes, strict=False)}
    failed = {f["client"] for f in rec.failed}
    ok = [c for c in rec.sampled if c not in failed]
    tot = float(sum(k[c] for c in ok)) or 1.0
    return {c: rec.uploaded_bytes * k[c] / tot for c in ok}


def _fig_uploads(records: Sequence[RoundRecord], k: np.ndarray, n: int) -> str:
    plt = _plt()
    rounds = [r for r in records if r.round > 0]
    per_client = np.zeros(n)
    for r in rounds:
        for c, b in _client_bytes(r, k).items():
            per_client[c] += b
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
    a1.bar([r.round for r in rounds], [r.uploaded_bytes / 1e6 for r in rounds], color="tab:purple")
    a1.set_xlabel("round")
    a1.set_ylabel("uploaded MB (all clients)")
    a2.bar(np.arange(n), per_client / 1e6, color="tab:orange")
    a2.set_xlabel("client")
    a2.set_ylabel("uploaded MB (all rounds)")
    for a in (a1, a2):
        a.grid(alpha=0.3, axis="y")
    _integer_ticks(a1, a2)
    fig.tight_layout()
    return _png(fig)


def _versions(info: dict[str, Any]) -> str:
    rows = [[k, v] for k, v in sorted(info.get("versions", {}).items())]
    rows += [["python", info.get("python", "")], ["machine", info.get("machine", "")]]
    return _table(["library", "version"], rows)


#: the lists of run.json the figures read: one finite number per client
_INFO_LISTS = ("q", "k", "tau_cp", "tau_cm", "t_cp", "t_cm")


def _run_info(path: Path) -> dict[str, Any]:
    """``run.json`` (empty if absent), its per-client lists checked (a :class:`ReadError` naming the key)."""
    if not path.is_file():
        return {}
    info = read_json(path)
    if not isinstance(info, dict):
        raise ReadError(f"{path}: expected a JSON object, got {short(info, 40)}")
    n = len(info["q"]) if isinstance(info.get("q"), list) else None
    for key in _INFO_LISTS:
        v = info.get(key)
        if v is None:
            continue
        if not (isinstance(v, list) and all(check_type(x, "number") and np.isfinite(x) for x in v) and len(v) == n):
            raise ReadError(f"{path}: {key} must be a list of {n} finite numbers (one per client), got {short(v, 40)}")
    if not isinstance(info.get("versions", {}), dict):
        raise ReadError(f"{path}: versions must be an object, got {short(info['versions'], 40)}")
    return info


def _run_config(text: str, path: Path) -> dict[str, Any]:
    """``data.num_clients`` and ``network.bandwidth_mbps`` of a run's ``config.toml`` (checked; defaults if absent)."""
    cfg = parse_toml(text, path) if text else {}
    data, net = cfg.get("data", {}), cfg.get("network", {})
    n = data.get("num_clients", 0) if isinstance(data, dict) else None
    W = net.get("bandwidth_mbps", 100.0) if isinstance(net, dict) else None
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise ReadError(f"{path}: data.num_clients must be an integer >= 0, got {short(n, 40)}")
    if not (isinstance(W, (int, float)) and not isinstance(W, bool) and np.isfinite(W) and W > 0):
        raise ReadError(f"{path}: network.bandwidth_mbps must be a finite number > 0, got {short(W, 40)}")
    return {"num_clients": n, "bandwidth_mbps": W}


def run_report_html(folder: str | Path) -> str:
    """The HTML text of a run folder's report (see the module docstring)."""
    folder = Path(folder)
    records = read_metrics(folder / METRICS_FILE)
    info = _run_info(folder / "run.json")
    cfg_text = read_text(folder / "config.toml") if (folder / "config.toml").is_file() else ""
    cfg = _run_config(cfg_text, folder / "config.toml")
    if not records:
        raise InputError(f"{folder / METRICS_FILE}: no records")
    q = np.asarray(info.get("q", []), dtype=float)
    k = np.asarray(info.get("k", []), dtype=float)
    n = len(q) or int(cfg["num_clients"])
    W = float(cfg["bandwidth_mbps"])
    top = max((c for r in records for c in [*r.sampled, *(f["client"] for f in r.failed)]), default=-1)
    if n and top >= n:
        raise ReadError(f"{folder / METRICS_FILE}: client {top} was sampled, but the run has {n} clients (run.json)")
    ev = evaluations(records)
    last = records[-1]
    summary = _table(
        ["", "value"],
        [
            ["rounds", last.round],
            ["stopped by", last.stop if last.stop is not None else "(unfinished)"],
            ["simulated time (min)", last.sim_seconds / 60],
            ["real time (min)", last.real_seconds / 60],
            ["first accuracy", f"{_percent(ev[0].accuracy):.1f}% (round {ev[0].round})" if ev else None],
            ["last accuracy", f"{_percent(ev[-1].accuracy):.1f}% (round {ev[-1].round})" if ev else None],
            ["clients N", n],
            ["E|K| = sum q_n", float(q.sum()) if q.size else None],
            ["uploaded MB in all", sum(r.uploaded_bytes for r in records) / 1e6],
        ],
    )
    sections = [
        f'<p class="muted">{html.escape(str(folder))}</p>',
        "<h2>Summary</h2>",
        summary,
        "<h2>Accuracy and test loss</h2>",
        _figure("accuracy-loss", _fig_accuracy_loss(records), "Test accuracy and test loss against simulated minutes."),
    ]
    if n and q.size == n and k.size == n:
        tau_cp = np.asarray(info.get("tau_cp", np.zeros(n)), dtype=float)
        tau_cm = np.asarray(info.get("tau_cm", np.zeros(n)), dtype=float)
        sections += [
            "<h2>Participation</h2>",
            _figure(
                "participation",
                _fig_participation(records, q),
                "Each client's participation over the rounds (heat map) beside its participation probability q_n "
                "(bars) and the share of rounds it was sampled in (ticks).",
            ),
            "<h2>Allocation against client speed</h2>",
            _figure(
                "allocation",
                _fig_allocation(q, k, tau_cp, tau_cm),
                "q_n and k_n of every client (labelled by id) against its full-rank compute time and upload time.",
            ),
            "<h2>Bandwidth</h2>",
            _figure(
                "bandwidth",
                _fig_bandwidth(records, info, W, n),
                f"Bandwidth share b_n / W of each sampled client per round (W = {W:g} Mbps, "
                "equal-finish split, eq. 10).",
            ),
            "<h2>Uploads</h2>",
            _figure("uploads", _fig_uploads(records, k, n), "Uploaded bytes per round and per client."),
        ]
    sections += ["<h2>Config</h2>", f"<pre>{html.escape(cfg_text)}</pre>", "<h2>Library versions</h2>", _versions(info)]
    title = f"fedsketch run {folder.name}"
    return _page(title, sections)


# --------------------------------------------------------------------------- suite


def _suite_runs(folder: Path) -> dict[str, list[tuple[int, list[RoundRecord]]]]:
    """The records of every run folder of a suite output folder, per strategy (by folder name)."""
    out: dict[str, list[tuple[int, list[RoundRecord]]]] = {}
    runs = runs_dir(folder)
    for d in sorted(runs.iterdir()) if runs.is_dir() else []:
        name = parse_run_name(d.name)
        if name is not None and (d / METRICS_FILE).is_file():
            strategy, seed = name
            out.setdefault(strategy, []).append((seed, read_metrics(d / METRICS_FILE)))
    return out


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return [row for _, row in read_csv(path)[1]] if path.is_file() else []


def _num(s: str) -> Any:
    try:
        return float(s)
    except (TypeError, ValueError):
        return s or None


def _fig_strategy(name: str, seed_runs: list[tuple[int, list[RoundRecord]]]) -> str:
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
    for seed, recs in seed_runs:
        ev = evaluations(recs)
        x = [r.sim_seconds / 60 for r in ev]
        a1.plot(x, [_percent(r.accuracy) for r in ev], marker=".", label=f"seed {seed}", drawstyle="steps-post")
        a2.plot(x, [r.test_loss for r in ev], marker=".", label=f"seed {seed}", drawstyle="steps-post")
    a1.set_ylabel("test accuracy (%)")
    a2.set_ylabel("test loss")
    for a in (a1, a2):
        a.set_xlabel("simulated wall-clock time (min)")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(name, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _embed_png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def strategy_figure_id(name: str) -> str:
    return "strategy-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _sweep_table(sweep: list[dict[str, str]]) -> list[str]:
    """The sweep section of a suite report from the rows of ``sweep.csv``."""
    levels = sorted({float(r["accuracy"]) for r in sweep})
    names = list(dict.fromkeys(r["strategy"] for r in sweep))
    cell = {(r["strategy"], float(r["accuracy"])): r for r in sweep}

    def fmt(r: dict[str, str] | None) -> str:
        if r is None or not r["minutes_mean"]:
            return f"— ({r['reached']}/{r['seeds']})" if r else "—"
        se = r.get("minutes_se")  # empty for one seed
        return (
            f"{float(r['minutes_mean']):.2f} ± {float(se):.2f} ({r['reached']}/{r['seeds']})"
            if se
            else f"{float(r['minutes_mean']):.2f} ({r['reached']}/{r['seeds']})"
        )

    return [
        "<h2>Sweep: simulated minutes to each accuracy</h2>",
        _table(
            ["strategy", *[f"{100 * a:g}%" for a in levels]],
            [[n, *[fmt(cell.get((n, a))) for a in levels]] for n in names],
        ),
    ]


def suite_report_html(folder: str | Path) -> str:
    """The HTML text of a suite output folder's report."""
    folder = Path(folder)
    runs = _suite_runs(folder)
    table = _csv_rows(folder / "table.csv")
    if not table and not runs:
        raise InputError(
            f"{folder}: neither table.csv nor runs/<strategy>-seed<k>/metrics.jsonl; "
            "give a run folder or a suite output folder"
        )
    sections = [f'<p class="muted">{html.escape(str(folder))}</p>']
    if table:
        cols = [c for c in table[0] if c not in ("minutes_mean_reached",)]
        sections += ["<h2>Time to target</h2>", _table(cols, [[_num(r[c]) for c in cols] for r in table])]
    sweep = _csv_rows(folder / "sweep.csv")
    if sweep:
        try:
            sections += _sweep_table(sweep)
        except (KeyError, TypeError, ValueError) as e:
            raise ReadError(
                f"{folder / 'sweep.csv'}: not a sweep table written by fedsketch compare ({e!r:.80})"
            ) from None
    for fid, fname, cap in (
        ("suite-accuracy", "accuracy_vs_time.png", "Accuracy against simulated minutes, mean ± std over seeds."),
        ("suite-loss", "loss_vs_time.png", "Test loss against simulated minutes, mean ± std over seeds."),
    ):
        if (folder / fname).is_file():
            sections += [_figure(fid, _embed_png(folder / fname), cap)]
    if runs:
        order = [r["strategy"] for r in table if r["strategy"] in runs] + sorted(
            n for n in runs if n not in {r["strategy"] for r in table}
        )
        sections.append("<h2>Every strategy's curves</h2>")
        for name, seed_runs in ((n, runs[n]) for n in order):
            sections.append(
                _figure(
                    strategy_figure_id(name),
                    _fig_strategy(name, seed_runs),
                    f"{name}: accuracy and test loss of each seed against simulated minutes.",
                )
            )
    title = f"fedsketch suite {folder.name}"
    return _page(title, sections)


# --------------------------------------------------------------------------- entry points


def write_run_report(folder: str | Path, out: str | Path | None = None) -> Path:
    path = Path(out) if out is not None else Path(folder) / "report.html"
    atomic_write_text(path, run_report_html(folder))
    return path


def write_suite_report(folder: str | Path, out: str | Path | None = None) -> Path:
    path = Path(out) if out is not None else Path(folder) / "report.html"
    atomic_write_text(path, suite_report_html(folder))
    return path


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """``report.html`` for a run folder (has metrics.jsonl) or a suite output folder (table.csv or runs/)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found; give a run folder or a suite output folder")
    if (folder / METRICS_FILE).is_file():
        return write_run_report(folder, out)
    return write_suite_report(folder, out)
