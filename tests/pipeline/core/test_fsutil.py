"""atomic_dir under a real kill (``os._exit`` in a child): at every step a complete copy survives, leftovers go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.fsutil import atomic_dir, recover_dir, remove_temp_files

ROOT = Path(__file__).resolve().parents[3]

# Replaces OUT (version 1) with version 2 and dies, without any clean-up, at the point WHERE names.
REPLACE_AND_DIE = """
import os, shutil, sys
from pathlib import Path
from pipeline.core.fsutil import atomic_dir

out, where = Path(sys.argv[1]), sys.argv[2]

def die(*args, **kwargs):
    os._exit(137)

if where.startswith("rename:"):  # just before the rename onto this name
    real_replace = os.replace
    os.replace = lambda src, dst: die() if Path(dst).name == where[7:] else real_replace(src, dst)
if where == "deleting-old":  # half way through deleting the previous version
    shutil.rmtree = lambda path, **kw: (os.unlink(Path(path) / "payload"), die())
with atomic_dir(out, overwrite=True) as tmp:
    (tmp / "version").write_text("2")
    if where == "writing":
        die()
    (tmp / "payload").write_text("2" * 1000)
"""


def _write_version_1(out: Path) -> None:
    with atomic_dir(out) as tmp:
        (tmp / "version").write_text("1")
        (tmp / "payload").write_text("1" * 1000)


@pytest.mark.parametrize(
    ("where", "survivor"),
    [
        ("writing", "1"),  # the new copy was never finished
        ("rename:.out.new", "1"),  # finished, not yet marked so
        ("rename:.out.old", "2"),  # finished and marked; the old one still in place
        ("rename:out", "2"),  # the old one moved aside, the new one not yet in place: no ``out`` at all
        ("deleting-old", "2"),  # in place; the old one half deleted
    ],
)
def test_a_kill_anywhere_in_a_replacement_leaves_one_complete_copy(tmp_path, where, survivor):
    out = tmp_path / "out"
    _write_version_1(out)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", REPLACE_AND_DIE, str(out), where], env=env, timeout=60)
    assert child.returncode == 137
    recover_dir(out)  # what the next atomic_dir (or checkpoint load) does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or aside folder is left
    assert (out / "version").read_text() == survivor
    assert (out / "payload").read_text() == survivor * 1000


def test_an_exception_in_the_body_leaves_the_old_copy_and_no_temporary(tmp_path):
    out = tmp_path / "out"
    _write_version_1(out)
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "version").write_text("2")
        raise RuntimeError("failed half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "version").read_text() == "1"


def test_temp_files_of_a_killed_writer_are_removed(tmp_path):
    (tmp_path / ".shard-00001.parquet.tmp-123").write_bytes(b"half")
    (tmp_path / "..shard-00001.parquet.sha256.tmp-abc").write_text("half")
    (tmp_path / ".x.tmp-dir").mkdir()
    (tmp_path / "shard-00000.parquet").write_bytes(b"kept")
    assert len(remove_temp_files(tmp_path)) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00000.parquet"]
