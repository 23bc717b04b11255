"""``slimseg compress`` and ``slimseg benchmark`` end to end on a tiny model, and the report helpers."""

import hashlib
import json
import math

import pytest
import torch

from slimseg import io
from slimseg.cli import main
from slimseg.compress.methods import int8_backend
from slimseg.compress.report import benchmark, format_table, machine_info
from slimseg.config import ModelConfig, NormConfig
from slimseg.model import UNet
from slimseg.segmenter import Segmenter, load_segmenter


@pytest.fixture
def float_file(tmp_path):
    torch.manual_seed(0)
    model = UNet(ModelConfig(widths=(8, 16))).eval()
    mf = io.from_module(model, model.config, NormConfig(),
                        training={"split": {"train": ["img0", "img1", "img2"], "val": ["img3"]}})
    return io.save(mf, tmp_path / "float.slimseg")


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_compress_writes_a_model_that_predicts_and_evaluates(float_file, data_folder, tmp_path, capsys):
    before = sha(float_file)
    out = tmp_path / "q.slimseg"
    rc = main(["compress", str(float_file), "--method", "prune-ptq", "--data", str(data_folder), "--out", str(out),
               "--max-steps", "1", "--calibration-patches", "4"])
    assert rc == 0 and sha(float_file) == before
    text = capsys.readouterr()
    assert "saved" in text.out and "left out 1 images of the model's validation split" in text.err
    assert load_segmenter(out).kind == f"int8-{int8_backend('auto')[0]}"  # --backend auto: by the CPU
    engine = ["--int8-engine", "reference"]  # compiling costs seconds
    assert main(["predict", str(out), str(data_folder / "images"), "--out", str(tmp_path / "pred"), *engine]) == 0
    assert len(list((tmp_path / "pred").glob("*.tif"))) == 4
    assert main(["evaluate", str(out), str(data_folder), "--json", str(tmp_path / "m.json"), *engine]) == 0
    assert 0 <= json.loads((tmp_path / "m.json").read_text())["dice"] <= 1


def test_compress_refuses_bad_input_with_exit_code_2(float_file, data_folder, tmp_path, capsys):
    out = str(tmp_path / "o.slimseg")
    base = ["compress", str(float_file), "--data", str(data_folder), "--out", out]
    assert main(base + ["--method", "prune-structured", "--ratio", "1.5"]) == 2
    assert "strictly between 0 and 1" in capsys.readouterr().err
    assert main(base + ["--method", "ptq", "--ratio", "0.5"]) == 2
    assert main(["compress", str(float_file), "--data", str(data_folder), "--out", str(float_file),
                 "--method", "ptq", "--overwrite"]) == 2
    assert "never replaced" in capsys.readouterr().err
    assert main(["compress", str(float_file), "--data", str(tmp_path / "nothing"), "--out", out,
                 "--method", "ptq"]) == 2


def test_compress_refuses_a_model_file_from_a_newer_format(float_file, data_folder, tmp_path, capsys):
    import zipfile

    newer = tmp_path / "newer.slimseg"
    with zipfile.ZipFile(float_file) as src, zipfile.ZipFile(newer, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "meta.json":
                meta = json.loads(data)
                meta["format_version"] = io.FORMAT_VERSION + 1
                data = json.dumps(meta).encode()
            dst.writestr(item, data)
    before = sha(newer)
    assert main(["compress", str(newer), "--method", "ptq", "--data", str(data_folder),
                 "--out", str(tmp_path / "o.slimseg")]) == 2
    assert "newer" in capsys.readouterr().err and sha(newer) == before


def test_compressing_a_compressed_file_is_refused(float_file, data_folder, tmp_path, capsys):
    q = tmp_path / "q.slimseg"
    assert main(["compress", str(float_file), "--method", "ptq", "--data", str(data_folder), "--out", str(q),
                 "--calibration-patches", "4"]) == 0
    assert main(["compress", str(q), "--method", "ptq", "--data", str(data_folder),
                 "--out", str(tmp_path / "qq.slimseg")]) == 2
    assert "already compressed" in capsys.readouterr().err


def test_benchmark_command_writes_one_table_and_json(float_file, data_folder, tmp_path, capsys):
    pruned = tmp_path / "p.slimseg"
    assert main(["compress", str(float_file), "--method", "prune-structured", "--data", str(data_folder),
                 "--out", str(pruned), "--minutes", "0"]) == 0
    capsys.readouterr()
    js = tmp_path / "b.json"
    assert main(["benchmark", str(float_file), str(pruned), "--data", str(data_folder), "--json", str(js),
                 "--markdown", str(tmp_path / "b.md"), "--repeats", "2", "--batch-sizes", "1", "2",
                 "--tile", "48"]) == 0
    out = capsys.readouterr()
    assert "avx512_vnni=" in out.out and "p.slimseg" in out.out
    assert "validation images" in out.err
    result = json.loads(js.read_text())
    ref, row = result["rows"]
    assert result["images"] == 1 and "amx" in result["machine"]
    assert ref["speedup_b2"] == 1 and ref["delta_dice_pp"] == 0 and ref["file_ratio"] == 1
    assert 0.2 < row["parameter_ratio"] < 0.3 and row["file_ratio"] < 0.6
    assert row["model_runs_b1"] == 2 and row["speedup_b1"] > 0
    assert (tmp_path / "b.md").read_text().startswith("| model |")
    assert main(["benchmark", str(float_file), "--data", str(data_folder), "--json", str(js)]) == 2


def test_benchmark_api_takes_segmenters_and_skips_metrics_without_labels(disks):
    images, _ = disks
    torch.manual_seed(0)
    a = Segmenter.from_module(UNet(ModelConfig(widths=(4, 8))), NormConfig())
    b = Segmenter.from_module(UNet(ModelConfig(widths=(8, 16))), NormConfig())
    rows = benchmark([("small", a), ("big", b)], images, None, batch_sizes=(1,), tile=32, repeats=2, warmup=1)
    assert [r["name"] for r in rows] == ["small", "big"]
    assert rows[1]["parameters"] > rows[0]["parameters"] and "dice" not in rows[0]
    assert rows[1]["speedup_b1"] == pytest.approx(rows[0]["model_ms_b1"] / rows[1]["model_ms_b1"])
    assert math.isclose(rows[0]["parameter_ratio"], 1.0)
    table = format_table(rows, machine_info())
    assert "small" in table and "Dice" not in table and "threads" in table


def test_benchmark_refuses_nothing_to_measure(disks):
    from slimseg.errors import InputError

    with pytest.raises(InputError):
        benchmark([], disks[0], None)
