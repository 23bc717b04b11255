import json

import pytest

from slimseg.files import atomic_path, write_json, write_text


def test_write_text_and_json_replace_the_file_whole(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "labels.tif"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            assert tmp.parent == tmp_path and tmp.suffix == ".tif" and tmp != target
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.tif"]


def test_a_place_that_cannot_be_written_is_reported_before_any_work(tmp_path):
    import os

    from slimseg.errors import InputError
    from slimseg.files import check_can_write

    check_can_write(tmp_path / "new" / "deeper" / "out.slimseg")  # folders to be made: fine
    assert not (tmp_path / "new").exists()  # and nothing was made by the check
    (tmp_path / "afile").write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_can_write(tmp_path / "afile" / "out.slimseg")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="not writable"):
            check_can_write(locked / "run.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["afile", *(["locked"] if os.geteuid() else [])])
