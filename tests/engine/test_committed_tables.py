"""Every committed suite result folder regenerates its tables byte for byte.

For each suite file in ``suites/`` whose ``output`` folder is committed under ``results/`` with a
``table.md`` and a ``runs/`` folder, the folder is copied and ``fedsketch compare SUITE --report-only
--output COPY`` rewrites its tables from the committed runs; every table that compare writes
(``table``, ``paired``, ``sweep``, ``stability``; ``.md`` and ``.csv``) and that is committed must
come out identical.
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedsketch.cli import app

REPO = Path(__file__).resolve().parents[2]
TABLES = [f"{name}.{ext}" for name in ("table", "paired", "sweep", "stability") for ext in ("md", "csv")]

#: folders whose committed tables today's ``compare --report-only`` does not reproduce: they were
#: written by an earlier version of compare and of the config. Their runs' recorded config hashes
#: differ from the hashes of today's suite configs (keys and defaults were added since, e.g.
#: data.source, planner.pilot_seeds), so no run counts as a finished run of the suite and every
#: row reads "no finished run"; their tables also predate today's format (mean ± std, no paired.md,
#: the stability table without the "worse than round 0" column).
LEGACY = {"results/fig2-sampling", "results/fig3-rank", "results/table1-sota",
          "results/long/fig2-sampling", "results/long/fig3-rank", "results/long/table1-sota"}


def _output(suite: Path) -> Path:
    raw = tomllib.loads(suite.read_text())
    return (suite.parent / raw.get("output", f"../results/{suite.stem}")).resolve()


def _committed() -> list[tuple[Path, Path]]:
    """(suite file, its committed output folder) for every suite whose output has table.md and runs/."""
    out = []
    for suite in sorted((REPO / "suites").glob("*.toml")):
        folder = _output(suite)
        if (folder / "table.md").is_file() and (folder / "runs").is_dir():
            out.append((suite, folder))
    return out


def _param(suite: Path, folder: Path) -> object:
    rel = folder.relative_to(REPO).as_posix()
    marks = [pytest.mark.xfail(strict=True, reason=f"{rel}: written by an earlier compare and config (see LEGACY)")
             ] if rel in LEGACY else []
    return pytest.param(suite, folder, id=suite.stem, marks=marks)


def test_every_committed_table_folder_has_a_suite():
    folders = {f.parent for f in (REPO / "results").rglob("table.md") if (f.parent / "runs").is_dir()}
    assert folders and folders == {folder for _, folder in _committed()}


@pytest.mark.parametrize(("suite", "folder"), [_param(s, f) for s, f in _committed()])
def test_committed_tables_regenerate_byte_for_byte(suite, folder, tmp_path):
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    res = CliRunner().invoke(app, ["compare", str(suite), "--report-only", "--output", str(copy)])
    assert res.exit_code == 0, res.output
    committed = [name for name in TABLES if (folder / name).is_file()]
    assert "table.md" in committed
    differ = [name for name in committed if (copy / name).read_bytes() != (folder / name).read_bytes()]
    assert not differ, f"{folder.relative_to(REPO)}: {differ} differ from the committed tables"
