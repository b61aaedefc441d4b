"""The data shipped inside the package: present, byte-identical to its manifest, packaged, licensed.

These tests fail (never skip) when the embedded data is missing, so CI catches a broken install.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import json
import tomllib
from pathlib import Path

import pytest

from fedsketch.data import TASK_DIRS, SPLITS
from fedsketch.data.datasets import EMBEDDED_DIR, embedded_file, load_task

REPO = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((EMBEDDED_DIR / "MANIFEST.json").read_text())


@pytest.mark.parametrize("task", sorted(TASK_DIRS))
@pytest.mark.parametrize("split", SPLITS)
def test_embedded_file_matches_its_manifest(task: str, split: str) -> None:
    path = embedded_file(task, split)
    assert path.is_file(), f"embedded data missing: {path}"
    raw = gzip.decompress(path.read_bytes())
    entry = MANIFEST[f"{TASK_DIRS[task]}/{split}.json"]
    assert len(raw) == entry["bytes"]
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
    # the git blob id of LLM-Adapters' tree (computed independently of sha256)
    assert hashlib.sha1(b"blob %d\0" % len(raw) + raw).hexdigest() == entry["git_blob"]
    assert len(json.loads(raw)) == entry["records"]


def test_manifest_covers_exactly_the_shipped_files() -> None:
    shipped = {str(p.relative_to(EMBEDDED_DIR))[: -len(".gz")] for p in EMBEDDED_DIR.rglob("*.json.gz")}
    assert shipped == set(MANIFEST) and len(shipped) == len(TASK_DIRS) * len(SPLITS)


def test_licence_and_attribution_ship_with_the_data() -> None:
    licence = (EMBEDDED_DIR / "DATA_LICENSE").read_text()
    assert "Open Data Commons" in licence or "ODC-By" in licence
    readme = (EMBEDDED_DIR / "README.md").read_text()
    for needle in ("LLM-Adapters", "ODC-By", "CC BY-SA 4.0", "Apache-2.0", "CC BY 4.0", "DATA_LICENSE"):
        assert needle in readme


def test_pyproject_package_data_includes_every_embedded_file() -> None:
    """Every file under data/embedded matches a package-data glob, so a wheel carries it."""
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fedsketch"]
    pkg = EMBEDDED_DIR.parents[1]  # src/fedsketch
    files = [str(p.relative_to(pkg)) for p in EMBEDDED_DIR.rglob("*") if p.is_file()]
    assert files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"


def test_embedded_is_the_default_source_and_matches_local(tmp_path: Path) -> None:
    """The default config reads the embedded copy; a local folder of the same JSON gives the same examples."""
    from fedsketch.config import load_config

    cfg = load_config()
    assert cfg.data.source == "embedded"
    folder = tmp_path / TASK_DIRS["arc_c"]
    folder.mkdir()
    (folder / "test.json").write_bytes(gzip.decompress(embedded_file("arc_c", "test").read_bytes()))
    assert load_task("arc_c", "test") == load_task("arc_c", "test", source="local", data_dir=tmp_path)


def test_missing_embedded_file_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fedsketch.data import DataError, datasets

    monkeypatch.setattr(datasets, "EMBEDDED_DIR", tmp_path)
    with pytest.raises(DataError, match=r"embedded data file is missing.*reinstall"):
        load_task("obqa", "train")
