"""Export: a bioimage.io package that passes bioimageio.core's own test offline, bare ONNX and
TorchScript networks that reproduce slimseg's probabilities, and the refusals."""

import socket
import zipfile

import numpy as np
import pytest
import torch

pytest.importorskip("bioimageio.core")
pytest.importorskip("onnxruntime")

from slimseg import io  # noqa: E402
from slimseg.cli import main  # noqa: E402
from slimseg.config import ModelConfig, TrainConfig  # noqa: E402
from slimseg.data.normalize import Normalizer  # noqa: E402
from slimseg.errors import InputError  # noqa: E402
from slimseg.events import run  # noqa: E402
from slimseg.export import ExportConfig, export_model  # noqa: E402
from slimseg.sample import load_sample  # noqa: E402
from slimseg.segmenter import load_segmenter  # noqa: E402
from slimseg.training import Trainer, to_model_file  # noqa: E402

# the spec's default reproducibility tolerance (bioimageio.spec ReproducibilityTolerance)
RTOL = ATOL = 1e-3


@pytest.fixture(scope="module")
def offline():
    """No network for anything run under it: a connection attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny U-Net trained briefly on four images of the shipped DSB2018 sample."""
    names, images, labels = load_sample("train")
    cfg = TrainConfig(epochs=2, patch_size=32, patches_per_epoch=8, batch_size=4, device="cpu", bf16="off",
                      val_fraction=0.25)
    result = run(Trainer(images[:4], labels[:4], cfg, ModelConfig.from_depth(3, 4), names=names[:4]).fit())
    return io.save(to_model_file(result), tmp_path_factory.mktemp("export") / "m.slimseg")


@pytest.fixture(scope="module")
def package(trained, offline):
    return export_model(trained, trained.with_name("m.zip"), ExportConfig(authors=("A. Person",)))


def test_the_package_passes_bioimageio_core_model_test_offline(package, offline):
    from bioimageio.core import test_model

    summary = test_model(package)
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    assert summary.status == "passed", failed
    tested = " ".join(d.name for d in summary.details)
    assert "Reproduce test outputs from test inputs (torchscript)" in tested
    assert "Reproduce test outputs from test inputs (onnx)" in tested


def test_the_package_describes_the_model(package, trained):
    import yaml

    with zipfile.ZipFile(package) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
        readme = zf.read("README.md").decode()
        names = set(zf.namelist())
        test_in = np.load(zf.open("test_input.npy"))
    mf = io.load(trained)
    assert rdf["format_version"].startswith("0.5.") and rdf["type"] == "model"
    assert rdf["weights"]["onnx"]["parent"] == "torchscript" and "parent" not in rdf["weights"]["torchscript"]
    scale = next(p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range")["kwargs"]
    assert (scale["min_percentile"], scale["max_percentile"]) == (mf.norm.pmin, mf.norm.pmax)
    assert [p["id"] for p in rdf["outputs"][0]["postprocessing"]][0] == "sigmoid"
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["foreground", "centredness"]
    assert rdf["cite"][0]["doi"] == "10.1038/s41592-019-0612-7"  # trained on the shipped DSB2018 sample
    assert rdf["authors"] == [{"name": "A. Person"}] and rdf["license"] == "CC-BY-4.0"
    assert {"cover.png", "README.md", "test_input.npy", "test_output.npy"} <= names
    assert "## Validation" in readme and "watershed" in readme and "BBBC038v1" in readme
    assert test_in.dtype == np.float32 and test_in.shape[:2] == (1, 1) and test_in.max() > 1  # raw pixels
    assert rdf["config"]["slimseg"]["predict"]["threshold"] == load_segmenter(trained).predict_config.threshold


def _slimseg_probabilities(path, image):
    seg = load_segmenter(path)
    return run(seg.predict_events(image, seg.settings(tile=max(image.shape), overlap=0))).probabilities.astype(np.float32)


@pytest.mark.parametrize("kind", ["float", "float-sparse"])
def test_bare_networks_reproduce_slimseg_probabilities(trained, tmp_path, kind):
    import onnxruntime as ort

    path = trained
    if kind == "float-sparse":
        from slimseg.compress import CompressConfig, compress

        _, images, labels = load_sample("train")
        cfg = CompressConfig(method="prune-unstructured", ratio=0.5, minutes=0, patch_size=32, batch_size=4)
        path = io.save(run(compress(io.load(trained), images[:4], labels[:4], cfg)), tmp_path / "s.slimseg")
        assert io.load(path).kind == "float-sparse"
    _, images, _ = load_sample("test")
    image = images[0][:64, 8:104]  # not square: catches swapped axes
    probs = _slimseg_probabilities(path, image)
    x = Normalizer.fit(image, io.load(path).norm)(image)[None]
    onnx = export_model(path, tmp_path / "m.onnx", ExportConfig(format="onnx"))
    ts = export_model(path, tmp_path / "m.pt", ExportConfig(format="torchscript"))
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    from_onnx = torch.sigmoid(torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x})[0]))[0]
    from_ts = torch.sigmoid(torch.jit.load(str(ts))(torch.from_numpy(x)))[0]
    np.testing.assert_allclose(from_onnx.numpy(), probs, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(from_ts.detach().numpy(), probs, rtol=RTOL, atol=ATOL)
    assert from_onnx.shape == (2, 64, 96)


def test_int8_pt2e_models_are_refused_with_the_reason(trained, tmp_path, capsys):
    mf = io.load(trained)
    mf.kind = "int8-pt2e"  # refused by kind, before anything is built from the tensors
    int8 = io.save(mf, tmp_path / "q.slimseg")
    out = tmp_path / "q.zip"
    with pytest.raises(InputError, match="PT2E.*--backend onnx"):
        export_model(int8, out)
    assert main(["export", str(int8), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported" in err and "Traceback" not in err
    assert not out.exists()


def test_existing_output_is_refused_without_overwrite(trained, tmp_path, capsys):
    out = tmp_path / "m.pt"
    out.write_bytes(b"keep me")
    with pytest.raises(InputError, match="exists.*--overwrite"):
        export_model(trained, out, ExportConfig(format="torchscript"))
    assert main(["export", str(trained), "--format", "torchscript", "--out", str(out)]) == 2
    assert out.read_bytes() == b"keep me"
    assert main(["export", str(trained), "--format", "torchscript", "--out", str(out), "--overwrite"]) == 0
    assert torch.jit.load(str(out)) is not None and "wrote" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary files left behind


def test_a_bad_description_fails_cleanly_and_leaves_nothing(trained, tmp_path, capsys):
    out = tmp_path / "bad.zip"
    assert main(["export", str(trained), "--out", str(out), "--license", "not-a-licence"]) == 2
    err = capsys.readouterr().err
    assert "description is invalid" in err and "licen" in err.lower() and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_int8_onnx_models_export_their_qdq_graph(trained, tmp_path, offline):
    from bioimageio.core import test_model

    from slimseg.compress import CompressConfig, compress

    _, images, labels = load_sample("train")
    cfg = CompressConfig(method="ptq", backend="onnx", calibration_patches=4, patch_size=64)
    q = io.save(run(compress(io.load(trained), images[:4], labels[:4], cfg)), tmp_path / "q.slimseg")
    with pytest.raises(InputError, match="only as ONNX"):
        export_model(q, tmp_path / "q.pt", ExportConfig(format="torchscript"))
    package = export_model(q, tmp_path / "q.zip")
    summary = test_model(package)
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details]
    with zipfile.ZipFile(package) as zf:
        assert "weights.onnx" in zf.namelist() and "weights.torchscript.pt" not in zf.namelist()


def test_a_two_channel_model_exports_and_passes_the_model_test(tmp_path, offline):
    from bioimageio.core import test_model

    names, images, labels = load_sample("train")
    two = [np.stack([im, im.max() - im], axis=-1) for im in images[:3]]  # nuclei + an inverted "membrane"
    cfg = TrainConfig(epochs=1, patch_size=32, patches_per_epoch=4, batch_size=4, device="cpu", bf16="off",
                      val_fraction=0)
    result = run(Trainer(two, labels[:3], cfg, ModelConfig.from_depth(2, 4, in_channels=2), names=names[:3]).fit())
    model = io.save(to_model_file(result), tmp_path / "two.slimseg")
    package = export_model(model, tmp_path / "two.zip", ExportConfig(authors=("A. Person",)))
    summary = test_model(package)
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details
                                        if d.status != "passed"]
    import yaml

    with zipfile.ZipFile(package) as zf:
        rdf = yaml.safe_load(zf.read("rdf.yaml"))
    channel_axis = next(a for a in rdf["inputs"][0]["axes"] if a["type"] == "channel")
    assert channel_axis["channel_names"] == ["channel0", "channel1"]


@pytest.mark.parametrize("name", __import__("slimseg.models", fromlist=["x"]).available_names() or ["(none shipped)"])
def test_every_shipped_builtin_model_exports_and_passes_the_model_test(name, tmp_path, offline):
    from bioimageio.core import test_model

    if name == "(none shipped)":
        pytest.skip("no built-in model file is shipped in this version")
    package = export_model(name, tmp_path / f"{name}.zip", ExportConfig(authors=("A. Person",)))
    assert test_model(package).status == "passed"
