"""The blockmap file round-trips, keeps CLAM's layout, and refuses files that are not blockmaps."""
from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from scoremap.atomic import atomic_output, remove_stale_partials
from scoremap.blockmap import Blockmap, BlockmapError, blockmap_path, read_blockmap, write_blockmap


def _bm(per_class=True) -> Blockmap:
    rng = np.random.default_rng(0)
    n = 7
    pc = rng.normal(size=(n, 3)).astype(np.float32)
    return Blockmap(slide_id="s1", slide_path="/x/s1.svs", label="tumor", model_type="clam_mb",
                    class_names=["a", "b", "c"], pred=2, probs=np.array([0.1, 0.2, 0.7]),
                    logits=np.array([0.0, 1.0, 2.0]), l0_patch=512, attention=pc[:, 2].copy(),
                    l0_coords=rng.integers(0, 10000, size=(n, 2)).astype(np.int32),
                    attention_per_class=pc if per_class else None, extra={"ckpt_path": "/c.pt"})


def test_roundtrip_and_clam_compatible_datasets(tmp_path):
    path = blockmap_path(tmp_path / "EXP", "tumor", "s1")
    assert path == tmp_path / "EXP" / "tumor" / "s1" / "s1_blockmap.h5"
    bm = _bm()
    write_blockmap(path, bm)
    with h5py.File(path) as fh:
        assert fh["attention_scores"].shape == (7, 1) and fh["attention_scores"].dtype == np.float32
        assert fh["coords"].shape == (7, 2) and fh["coords"].dtype == np.int32
        assert fh.attrs["patch_size_level0"] == 512 and fh.attrs["pred_name"] == "c"
    back = read_blockmap(path)
    np.testing.assert_array_equal(back.attention, bm.attention)
    np.testing.assert_array_equal(back.l0_coords, bm.l0_coords)
    np.testing.assert_array_equal(back.attention_per_class, bm.attention_per_class)
    assert (back.pred, back.class_names, back.label, back.l0_patch) == (2, ["a", "b", "c"], "tumor", 512)
    assert back.extra["ckpt_path"] == "/c.pt"
    np.testing.assert_array_equal(back.scores_for_class(0), bm.attention_per_class[:, 0])
    assert [p.name for p in path.parent.iterdir()] == ["s1_blockmap.h5"]


def test_single_branch_has_only_the_predicted_class(tmp_path):
    write_blockmap(tmp_path / "b.h5", _bm(per_class=False))
    back = read_blockmap(tmp_path / "b.h5")
    assert back.attention_per_class is None
    with pytest.raises(BlockmapError, match="single attention branch"):
        back.scores_for_class(0)


def test_plain_clam_blockmap_is_refused_with_the_missing_attribute(tmp_path):
    path = tmp_path / "clam_blockmap.h5"
    with h5py.File(path, "w") as fh:
        fh["attention_scores"] = np.zeros((3, 1), np.float32)
        fh["coords"] = np.zeros((3, 2), np.int32)
    with pytest.raises(BlockmapError, match=r"clam_blockmap.h5: missing attribute 'class_names'"):
        read_blockmap(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(BlockmapError, match="cannot read as HDF5"):
        read_blockmap(tmp_path / "junk.h5")


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    final = tmp_path / "out" / "x.png"
    with pytest.raises(RuntimeError):
        with atomic_output(final) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert not final.exists() and list(final.parent.iterdir()) == []


def test_sigkill_mid_write_leaves_no_final_file(tmp_path):
    final = tmp_path / "x.h5"
    code = ("import os, signal, sys\n"
            "from scoremap.atomic import atomic_output\n"
            f"with atomic_output({str(final)!r}) as tmp:\n"
            "    tmp.write_bytes(b'partial')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == -9
    assert not final.exists()
    assert remove_stale_partials(tmp_path) == 1 and list(tmp_path.iterdir()) == []


def test_blockmap_module_does_not_import_torch():
    code = "import sys, scoremap.blockmap, scoring.config, scoring.inventory; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "False", out.stderr


def test_partials_of_a_live_writer_are_kept(tmp_path):
    """A concurrent shard's file in progress survives another run's sweep; a dead writer's goes."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        from scoremap.atomic import _HOST

        mine = tmp_path / f".a.partial-{_HOST}-{live.pid}.png"
        mine.write_bytes(b"in progress")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True)
        gone = tmp_path / f".b.partial-{_HOST}-{int(dead.stdout)}.png"
        gone.write_bytes(b"left by a killed run")
        other_host = tmp_path / ".c.partial-otherhost-1.png"
        other_host.write_bytes(b"maybe running elsewhere")
        assert remove_stale_partials(tmp_path) == 1
        assert mine.exists() and other_host.exists() and not gone.exists()
    finally:
        live.kill()
        live.wait()
