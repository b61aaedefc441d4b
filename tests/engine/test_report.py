"""report.html of a run and of a suite: every figure present, embedded (base64 PNG), nothing external."""

from __future__ import annotations

import base64
import html.parser
import struct
from pathlib import Path

from typer.testing import CliRunner

from fedsketch.cli import app
from fedsketch.html_report import RUN_FIGURES, strategy_figure_id

REPO = Path(__file__).resolve().parents[2]


class _Page(html.parser.HTMLParser):
    """Figures (id -> list of img src), every src/href, table headers and pre blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, list[str]] = {}
        self.links: list[str] = []
        self.headers: list[str] = []
        self.pre: list[str] = []
        self._fig: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "figure":
            self._fig = a.get("id")
            self.figures.setdefault(self._fig, [])
        if tag == "img" and self._fig is not None:
            self.figures[self._fig].append(a.get("src", ""))
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key])
        if tag in ("th", "pre"):
            self._in = tag

    def handle_endtag(self, tag):
        if tag == "figure":
            self._fig = None
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "th":
            self.headers.append(data)
        elif self._in == "pre":
            self.pre.append(data)


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def png_size(uri: str) -> tuple[int, int]:
    assert uri.startswith("data:image/png;base64,"), uri[:40]
    blob = base64.b64decode(uri.split(",", 1)[1], validate=True)
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", blob[16:24])


def assert_self_contained(page: _Page) -> None:
    assert all(link.startswith("data:") for link in page.links), [x[:60] for x in page.links if not x.startswith("data:")]


def test_run_report_has_every_figure_embedded(tiny_cfg, tmp_path):
    from fedsketch.runner import run_experiment

    res = run_experiment(tiny_cfg("output.plot=true", "fl.rounds=3", "fl.q=0.5"))
    page = parse(res.run_dir / "report.html")
    assert set(RUN_FIGURES) <= set(page.figures), page.figures.keys()
    for fid in RUN_FIGURES:
        (uri,) = page.figures[fid]
        w, h = png_size(uri)
        assert w > 300 and h > 150, (fid, w, h)
    assert_self_contained(page)
    text = (res.run_dir / "report.html").read_text()
    assert "[fl]" in "".join(page.pre) and "torch" in text and "library" in page.headers  # config and versions
    # `fedsketch report RUN_DIR` writes the same page again
    out = tmp_path / "again.html"
    r = CliRunner().invoke(app, ["report", str(res.run_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert set(parse(out).figures) == set(page.figures)


def test_suite_report_has_table_sweep_and_every_strategy(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text(f'name = "mini"\nbase = "{REPO / "configs" / "tiny.toml"}"\nseeds = [0]\ntarget = 0.3\n'
                     'sweep = [0.2, 0.3]\nreference = "a"\n'
                     '[[strategy]]\nname = "a"\n'
                     '[[strategy]]\nname = "b [x]"\nset = ["fl.method=\'fslora\'", "fl.ranks=\'capability\'"]\n')
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["compare", str(suite), "--output", str(out)])
    assert r.exit_code == 0, r.output
    page = parse(out / "report.html")
    want = {"suite-accuracy", "suite-loss", strategy_figure_id("a"), strategy_figure_id("b [x]")}
    assert want <= set(page.figures), page.figures.keys()
    for fid in want:
        (uri,) = page.figures[fid]
        png_size(uri)
    assert_self_contained(page)
    assert "minutes_mean" in page.headers and "strategy" in page.headers  # the time-to-target table
    assert {"20%", "30%"} <= set(page.headers)  # the sweep's accuracy columns
    assert "b [x]" in (out / "report.html").read_text()  # names print as they are
    # every run of the suite wrote its own report too; `fedsketch report SUITE_DIR` rewrites the suite's
    assert all((d / "report.html").is_file() for d in (out / "runs").iterdir())
    (out / "report.html").unlink()
    r = CliRunner().invoke(app, ["report", str(out)])
    assert r.exit_code == 0 and want <= set(parse(out / "report.html").figures)
