"""The one atomic writer: file modes, the earlier file kept on failure, and one-line errors."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from fedsketch.errors import EXIT_BAD_INPUT, EXIT_FAILED, classify
from fedsketch.io import WriteError, atomic_write_dir, atomic_write_json, atomic_write_text, atomic_write_with


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_folders_get_the_mode_open_and_mkdir_would_give(tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "plain.txt").write_text("x")  # the oracle: what a plain open() gives
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"k": 1})
        atomic_write_with(tmp_path / "c.png", lambda p: p.write_bytes(b"png"))
        atomic_write_dir(tmp_path / "d", lambda p: (p / "f.bin").write_bytes(b"1"))
        (tmp_path / "plain_dir").mkdir()
    finally:
        os.umask(old)
    want = _mode(tmp_path / "plain.txt")
    assert want == 0o644
    for name in ("a.txt", "b.json", "c.png", "d/f.bin"):
        assert _mode(tmp_path / name) == want, name
    assert _mode(tmp_path / "d") == _mode(tmp_path / "plain_dir") == 0o755
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_a_failed_write_keeps_the_earlier_file_and_names_the_destination(tmp_path):
    target = tmp_path / "plan.json"
    atomic_write_text(target, '{"ok": true}\n')

    def disk_full(tmp):
        tmp.write_bytes(b"{\"trunc")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as info:
        atomic_write_with(target, disk_full)
    assert target.read_text() == '{"ok": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]
    code, msg = classify(info.value)
    assert code == EXIT_FAILED and str(target) in msg and "\n" not in msg and "No space left" in msg


def test_a_bad_location_is_bad_input_in_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(WriteError) as info:
        atomic_write_text(tmp_path / "afile" / "plan.json", "{}")
    code, msg = classify(info.value)
    assert code == EXIT_BAD_INPUT and str(tmp_path / "afile" / "plan.json") in msg and "\n" not in msg
    with pytest.raises(WriteError) as info:
        atomic_write_text(tmp_path / ("n" * 300 + ".json"), "{}")
    assert classify(info.value)[0] == EXIT_BAD_INPUT


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only modes")
def test_a_read_only_folder_is_bad_input(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(WriteError) as info:
            atomic_write_text(ro / "x.json", "{}")
        assert classify(info.value)[0] == EXIT_BAD_INPUT
    finally:
        ro.chmod(0o755)
