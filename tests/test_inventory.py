"""Process lists and slide resolution, as users write them."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from scoring.config import parse_config
from scoring.errors import ConfigError
from scoring.inventory import list_slides, parse_shard, shard_jobs


def _config(tmp_path: Path, **data):
    doc = {
        "exp_arguments": {
            "save_exp_code": "E",
            "raw_save_dir": str(tmp_path / "raw"),
            "production_save_dir": str(tmp_path / "prod"),
        },
        "data_arguments": {
            "data_dir": str(tmp_path / "slides"),
            "slide_ext": ".svs",
            "features_dir": str(tmp_path / "feats"),
        },
        "model_arguments": {"ckpt_path": "c.pt", "model_type": "clam_sb"},
    }
    doc["data_arguments"].update(data)
    return parse_config(copy.deepcopy(doc), tmp_path / "c.yaml")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_process_list_ids_with_and_without_extension_skip_rows_labels_and_roi(tmp_path):
    for name in ("a.svs", "b.svs", "c.svs", "d.ndpi"):
        _write(tmp_path / "slides" / name, "x")
    plist = _write(
        tmp_path / "list.csv",
        "slide_id,label,process,features_path,coords_path,x1,y1,x2,y2\n"
        "a.svs,tumor,1,,,,,,\n"
        "b,normal,0,,,,,,\n"
        "c,,1,custom/c.pt,custom/c.h5,10,20,300,400\n"
        "d.ndpi,tumor,1,,,,,,\n",
    )
    jobs = list_slides(_config(tmp_path, process_list=str(plist)))
    assert [j.slide_id for j in jobs] == ["a", "c", "d"]
    a, c, d = jobs
    assert a.slide_path == tmp_path / "slides" / "a.svs" and a.label == "tumor" and a.roi is None
    assert c.label == "Unspecified" and c.roi == (10, 20, 300, 400)
    assert c.features_path == Path("custom/c.pt") and c.coords_path == Path("custom/c.h5")
    assert d.slide_path == tmp_path / "slides" / "d.ndpi"
    assert [j.index for j in jobs] == [0, 1, 2]


def test_data_dir_mapping_chosen_by_key_column(tmp_path):
    _write(tmp_path / "A" / "s1.svs", "x")
    _write(tmp_path / "B" / "s2.svs", "x")
    plist = _write(
        tmp_path / "list.csv", "slide_id,source,label\ns1,cohort_a,tumor\ns2,cohort_b,normal\n"
    )
    cfg = _config(
        tmp_path,
        data_dir={"cohort_a": str(tmp_path / "A"), "cohort_b": str(tmp_path / "B")},
        data_dir_key="source",
        process_list=str(plist),
    )
    jobs = list_slides(cfg)
    assert [j.slide_path for j in jobs] == [tmp_path / "A" / "s1.svs", tmp_path / "B" / "s2.svs"]
    bad = _write(tmp_path / "bad.csv", "slide_id,source\ns1,cohort_c\n")
    with pytest.raises(
        ConfigError, match=r"bad.csv, line 2: source='cohort_c' is not a key .*cohort_a, cohort_b"
    ):
        list_slides(
            _config(
                tmp_path,
                data_dir={"cohort_a": "A", "cohort_b": "B"},
                data_dir_key="source",
                process_list=str(bad),
            )
        )
    nocol = _write(tmp_path / "nocol.csv", "slide_id\ns1\n")
    with pytest.raises(ConfigError, match="no 'source' column"):
        list_slides(
            _config(
                tmp_path, data_dir={"cohort_a": "A"}, data_dir_key="source", process_list=str(nocol)
            )
        )


@pytest.mark.parametrize(
    "text,match",
    [
        ("id,label\na,b\n", "no 'slide_id' column; columns found: id, label"),
        ("slide_id,process\na,maybe\n", "line 2: process must be 1 or 0"),
        ("slide_id,x1,y1,x2,y2\na,1,2,,4\n", "ROI needs all of x1, y1, x2, y2"),
        ("slide_id,x1,y1,x2,y2\na,10,10,5,50\n", "x2 > x1"),
        ("slide_id\na\na.svs\n", "listed twice"),
    ],
)
def test_bad_process_list_is_a_config_error_with_file_and_line(tmp_path, text, match):
    plist = _write(tmp_path / "list.csv", text)
    with pytest.raises(ConfigError, match=match) as err:
        list_slides(_config(tmp_path, process_list=str(plist)))
    assert "list.csv" in str(err.value)


def test_without_process_list_every_slide_with_the_extension(tmp_path):
    for name in ("b.svs", "a.svs", "notes.txt", "c.SVS"):
        _write(tmp_path / "slides" / name, "x")
    assert [j.slide_id for j in list_slides(_config(tmp_path))] == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="data_dir: folder not found"):
        list_slides(_config(tmp_path, data_dir=str(tmp_path / "missing")))


def test_shards_are_disjoint_and_cover_the_cohort(tmp_path):
    for i in range(10):
        _write(tmp_path / "slides" / f"s{i}.svs", "x")
    jobs = list_slides(_config(tmp_path))
    parts = [shard_jobs(jobs, (i, 3)) for i in (1, 2, 3)]
    ids = [j.slide_id for part in parts for j in part]
    assert sorted(ids) == sorted(j.slide_id for j in jobs) and len(ids) == len(set(ids))
    assert all(abs(len(p) - 10 / 3) < 1 for p in parts)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "a/b", "3"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
