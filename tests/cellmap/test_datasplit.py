"""datasplit.csv in CellMap's exact format: read, write, resolve, errors."""

import os

import pytest

from cellmap import _zarr
from cellmap.datasplit import (DatasplitError, DatasplitRow, check_rows, format_datasplit, parse_class_path,
                               read_datasplit, write_datasplit)
from cellmap.errors import CellMapError

ROW = ('"train","/abs/data/jrc_cos7-1a/jrc_cos7-1a.zarr","recon-1/em/fibsem-uint8",'
       '"/abs/data/jrc_cos7-1a/jrc_cos7-1a.zarr","recon-1/labels/groundtruth/crop234/[nuc,mito]"\n')


def test_reads_the_toolbox_row_and_writes_it_back_byte_identical(tmp_path):
    p = tmp_path / "datasplit.csv"
    p.write_text(ROW)
    (r,) = read_datasplit(str(p))
    assert (r.usage, r.raw_root, r.raw_path, r.crop_path, r.classes) == (
        "train", "/abs/data/jrc_cos7-1a/jrc_cos7-1a.zarr", "recon-1/em/fibsem-uint8",
        "recon-1/labels/groundtruth/crop234", ("nuc", "mito"))
    assert r.dataset == "jrc_cos7-1a" and r.crop == "crop234" and r.line == 1
    assert r.raw_location == "/abs/data/jrc_cos7-1a/jrc_cos7-1a.zarr/recon-1/em/fibsem-uint8"
    assert format_datasplit([r]) == ROW
    out = write_datasplit(str(tmp_path / "again.csv"), [r])
    assert open(out).read() == ROW
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]  # no temp file left


def test_three_column_form_comments_and_relative_paths(tmp_path, monkeypatch):
    d = tmp_path / "splits"
    d.mkdir()
    (d / "ds.csv").write_text(
        "# a comment line\n\n"
        '"validate","data/jrc_x/jrc_x.zarr/recon-1/em/fibsem-uint8","data/jrc_x/jrc_x.zarr/recon-1/labels/groundtruth/crop7/[er]"\n'
        '"train","s3://janelia-cosem-datasets/jrc_hela-2/jrc_hela-2.zarr","recon-1/em/fibsem-uint8",'
        '"s3://janelia-cosem-datasets/jrc_hela-2/jrc_hela-2.zarr","recon-1/labels/groundtruth/crop1/[mito]"\n')
    monkeypatch.chdir(tmp_path)  # resolution must not depend on the working directory
    a, b = read_datasplit("splits/ds.csv")
    assert a.usage == "validate" and a.line == 3 and a.classes == ("er",)
    assert a.raw_root == str(d / "data" / "jrc_x" / "jrc_x.zarr") and a.crop_path == "recon-1/labels/groundtruth/crop7"
    assert b.raw_root == "s3://janelia-cosem-datasets/jrc_hela-2/jrc_hela-2.zarr" and b.crop == "crop1"
    # written back relative to the CSV's folder
    text = format_datasplit([a], relative_to=str(d))
    assert text.startswith('"validate","data/jrc_x/jrc_x.zarr","recon-1/em/fibsem-uint8","data/jrc_x/jrc_x.zarr",')


@pytest.mark.parametrize("field,pattern", [
    ("recon-1/labels/groundtruth/crop1/[nuc,mito", "must end in a bracketed class list"),
    ("recon-1/labels/groundtruth/crop1/nuc,mito", "must end in a bracketed class list"),
    ("recon-1/labels/groundtruth/crop1/[]", "empty class list"),
    ("recon-1/labels/groundtruth/crop1/[[nuc]]", "must end in a bracketed class list"),
    ("recon-1/labels/groundtruth/crop1/[nuc;mito]", "not plain names"),
])
def test_malformed_bracket_list_names_the_line(tmp_path, field, pattern):
    p = tmp_path / "bad.csv"
    p.write_text("# header comment\n" + f'"train","/a/x.zarr","recon-1/em/fibsem-uint8","/a/x.zarr","{field}"\n')
    with pytest.raises(DatasplitError, match=pattern) as info:
        read_datasplit(str(p))
    assert f"{p}:2" in str(info.value)


def test_unquoted_row_and_wrong_column_count(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("train,/a/x.zarr,recon-1/em/fibsem-uint8,/a/x.zarr,recon-1/labels/groundtruth/crop1/[nuc,mito]\n")
    with pytest.raises(DatasplitError, match=r"bad.csv:1: 6 columns.*Quote every field"):
        read_datasplit(str(p))
    with pytest.raises(DatasplitError, match="not found"):
        read_datasplit(str(tmp_path / "none.csv"))
    (tmp_path / "empty.csv").write_text("# nothing\n")
    with pytest.raises(DatasplitError, match="no rows"):
        read_datasplit(str(tmp_path / "empty.csv"))


def test_parse_class_path():
    assert parse_class_path("a/b/crop3/[ecs, pm ,mito]") == ("a/b/crop3", ("ecs", "pm", "mito"))


def test_row_pointing_at_missing_group_is_reported(tmp_path, sample_dir):
    rows = read_datasplit(os.path.join(sample_dir, "datasplit.csv"))
    check_rows(rows)  # the sample is complete
    p = tmp_path / "ds.csv"
    p.write_text(f'"train","{sample_dir}/jrc_synth-a/jrc_synth-a.zarr","recon-1/em/fibsem-uint8",'
                 f'"{sample_dir}/jrc_synth-a/jrc_synth-a.zarr","recon-1/labels/groundtruth/crop99/[mito]"\n')
    (row,) = read_datasplit(str(p))
    with pytest.raises(DatasplitError, match=r"ds.csv:1: crop group .*crop99 does not exist.*--crops 99"):
        check_rows([row])
    bad_raw = DatasplitRow("train", str(tmp_path / "nope.zarr"), "recon-1/em/fibsem-uint8", rows[0].gt_root,
                           rows[0].crop_path, ("mito",), source="x.csv", line=4)
    with pytest.raises(DatasplitError, match="x.csv:4: raw group .*nope.zarr/recon-1/em/fibsem-uint8 does not exist"):
        check_rows([bad_raw])


def test_s3_gets_a_clear_message_without_s3fs():
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed; the message is for machines without it")
    except ImportError:
        pass
    with pytest.raises(CellMapError, match="s3fs|fsspec"):
        _zarr.open_group("s3://janelia-cosem-datasets/jrc_hela-2/jrc_hela-2.zarr/recon-1/em/fibsem-uint8")
