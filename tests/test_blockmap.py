"""The blockmap file round-trips, keeps CLAM's layout, and refuses files that are not blockmaps."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from scoremap.atomic import atomic_output, remove_stale_partials
from scoremap.blockmap import (
    Blockmap,
    BlockmapError,
    blockmap_path,
    read_blockmap,
    read_blockmap_header,
    write_blockmap,
)
from scoremap.errors import ParameterError


def _bm(per_class=True) -> Blockmap:
    rng = np.random.default_rng(0)
    n = 7
    pc = rng.normal(size=(n, 3)).astype(np.float32)
    return Blockmap(
        slide_id="s1",
        slide_path="/x/s1.svs",
        label="tumor",
        model_type="clam_mb",
        class_names=["a", "b", "c"],
        pred=2,
        probs=np.array([0.1, 0.2, 0.7]),
        logits=np.array([0.0, 1.0, 2.0]),
        l0_patch=512,
        attention=pc[:, 2].copy(),
        l0_coords=rng.integers(0, 10000, size=(n, 2)).astype(np.int32),
        attention_per_class=pc if per_class else None,
        extra={"ckpt_path": "/c.pt"},
    )


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
    assert (back.pred, back.class_names, back.label, back.l0_patch) == (
        2,
        ["a", "b", "c"],
        "tumor",
        512,
    )
    assert back.extra["ckpt_path"] == "/c.pt"
    np.testing.assert_array_equal(back.scores_for_class(0), bm.attention_per_class[:, 0])
    assert [p.name for p in path.parent.iterdir()] == ["s1_blockmap.h5"]


def test_single_branch_has_only_the_predicted_class(tmp_path):
    write_blockmap(tmp_path / "b.h5", _bm(per_class=False))
    back = read_blockmap(tmp_path / "b.h5")
    assert back.attention_per_class is None
    with pytest.raises(ParameterError, match=r"clam_mb stores attention for that class only"):
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
    with pytest.raises(RuntimeError), atomic_output(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert not final.exists() and list(final.parent.iterdir()) == []


def test_sigkill_mid_write_leaves_no_final_file(tmp_path):
    final = tmp_path / "x.h5"
    code = (
        "import os, signal, sys\n"
        "from scoremap.atomic import atomic_output\n"
        f"with atomic_output({str(final)!r}) as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(__file__))
    )
    assert proc.returncode == -9
    assert not final.exists()
    assert remove_stale_partials(tmp_path) == 1 and list(tmp_path.iterdir()) == []


def test_blockmap_module_does_not_import_torch():
    code = "import sys, scoremap.blockmap, scoring.config, scoring.inventory; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.stdout.strip() == "False", out.stderr


def test_partials_of_a_live_writer_are_kept(tmp_path):
    """A concurrent shard's file in progress survives another run's sweep; a dead writer's goes."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        from scoremap.atomic import _HOST

        mine = tmp_path / f".a.partial-{_HOST}-{live.pid}.png"
        mine.write_bytes(b"in progress")
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        gone = tmp_path / f".b.partial-{_HOST}-{int(dead.stdout)}.png"
        gone.write_bytes(b"left by a killed run")
        other_host = tmp_path / ".c.partial-otherhost-1.png"
        other_host.write_bytes(b"maybe running elsewhere")
        assert remove_stale_partials(tmp_path) == 1
        assert mine.exists() and other_host.exists() and not gone.exists()
    finally:
        live.kill()
        live.wait()


def _rewrite(path, **changes):
    """Rewrite attributes or datasets of a written blockmap (None deletes)."""
    with h5py.File(path, "r+") as fh:
        for key, value in changes.items():
            if key in fh:
                del fh[key]
                if value is not None:
                    if isinstance(value, str) and value == "<group>":
                        fh.create_group(key)
                    else:
                        fh[key] = value
            elif value is None:
                del fh.attrs[key]
            else:
                fh.attrs[key] = value


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"class_names": "not json ["}, "attribute 'class_names' must be a JSON list"),
        ({"class_names": '{"a": 1}'}, "must be a non-empty JSON list"),
        ({"pred": "two"}, "attribute 'pred' must be a class index 0..2"),
        ({"pred": 7}, "attribute 'pred' must be a class index 0..2"),
        ({"pred": 1.5}, "attribute 'pred' must be a class index"),
        ({"probs": "high"}, "attribute 'probs' must be 3 numbers"),
        (
            {"probs": np.array([0.5, 0.5])},
            r"attribute .probs. must be 3 numbers \(one per class\), got 2",
        ),
        (
            {"patch_size_level0": 0},
            "attribute 'patch_size_level0' must be a level-0 patch size in pixels, 1..65536",
        ),
        ({"patch_size_level0": -256}, "patch_size_level0"),
        ({"patch_size_level0": 200000}, "patch_size_level0"),
        ({"patch_size_level0": "big"}, "patch_size_level0"),
        (
            {"attention_scores": np.array([b"a", b"b", b"c", b"d", b"e", b"f", b"g"])},
            "dataset 'attention_scores' must hold real numbers",
        ),
        ({"attention_scores": "<group>"}, "'attention_scores' must be a dataset, got a group"),
        (
            {"coords": np.zeros((7, 3), np.int32)},
            r"dataset 'coords' has shape \(7, 3\), expected \(N, 2\)",
        ),
        (
            {"coords": np.zeros((5, 2), np.int32)},
            r"attention_scores \(7 patches\) and coords \(5\) disagree",
        ),
        ({"coords": np.full((7, 2), -5, np.int32)}, "coords must be non-negative"),
        (
            {"attention_scores_per_class": np.zeros((7, 2), np.float32)},
            r"attention_scores_per_class has shape \(7, 2\)",
        ),
        ({"slide_id": None}, "missing attribute 'slide_id'"),
        ({"slide_path": np.array([1, 2])}, "attribute 'slide_path' must be text"),
    ],
)
def test_every_malformed_attribute_or_dataset_is_one_blockmap_error(tmp_path, changes, message):
    """Hostile or broken files: the reader names the file and what was expected; no JSON,
    type or value error escapes to a caller (the viewer answers 4xx, the CLI one line)."""
    path = tmp_path / "s1_blockmap.h5"
    write_blockmap(path, _bm())
    _rewrite(path, **changes)
    with pytest.raises(BlockmapError, match=message) as err:
        read_blockmap(path)
    assert str(err.value).startswith(str(path))
    if "coords must be non-negative" not in message:  # the header alone sees every other problem
        with pytest.raises(BlockmapError, match=message):
            read_blockmap_header(path)


def test_the_header_reads_no_per_patch_arrays(tmp_path):
    path = tmp_path / "s1_blockmap.h5"
    write_blockmap(path, _bm())
    head = read_blockmap_header(path)
    assert (head.bag_size, head.n_classes, head.pred, head.l0_patch, head.has_per_class) == (
        7,
        3,
        2,
        512,
        True,
    )
    assert not hasattr(head, "attention")
