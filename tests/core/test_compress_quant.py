"""int8 quantisation (PTQ, QAT; PT2E and ONNX Runtime backends) on tiny models: outputs close to
float, files that round-trip without pickles, and bad input refused."""

import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from slimseg import io
from slimseg.compress import CompressConfig, compress
from slimseg.config import ModelConfig, NormConfig
from slimseg.data.normalize import Normalizer
from slimseg.errors import InputError, ModelFileError
from slimseg.events import run
from slimseg.kinds import KINDS, pt2e_graph, pt2e_inductor, pt2e_runner, pt2e_storage
from slimseg.kinds.fold import Core, padded
from slimseg.model import UNet, fold_batchnorm
from slimseg.segmenter import from_model_file

FAST = {"calibration_patches": 16, "patch_size": 32, "batch_size": 4, "backend": "pt2e"}


def tiny_model_file(widths=(4, 8), seed=0) -> io.ModelFile:
    """An untrained U-Net whose BatchNorms hold non-trivial statistics (so folding matters)."""
    torch.manual_seed(seed)
    model = UNet(ModelConfig(widths=widths))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        model.head.weight.mul_(30.0)  # spread the logits so that errors can be seen
    return io.from_module(model.eval(), model.config, NormConfig(),
                          training={"train_config": {"optimizer": "adam", "loss": "bce+dice"}})


def float_logits(mf, x):
    with torch.inference_mode():
        return from_model_file(mf).model_fn(x).float()


def relative_error(out, ref):
    """(mean, max) of |out - ref| relative to the spread of the float logits."""
    err = (out.float() - ref).abs() / (ref.max() - ref.min())
    return float(err.mean()), float(err.max())


def probe(images, n=3):
    """A batch of normalised 48x48 images (sizes the model must pad are covered elsewhere)."""
    return torch.from_numpy(np.stack([Normalizer.fit(im, NormConfig())(im) for im in images[:n]]))


@pytest.fixture(scope="module")
def source():
    return tiny_model_file()


@pytest.fixture(scope="module")
def ptq_file(source):
    from _synthetic import make_disks

    images, _ = make_disks()
    cfg = CompressConfig(method="ptq", recalibrate_bn=False, **FAST)
    return run(compress(source, images, None, cfg))


def test_folding_batchnorm_keeps_the_function(source, disks):
    model = from_model_file(source).module
    x = probe(disks[0])
    folded = fold_batchnorm(model)
    assert folded.config.norm == "none" and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(Core(folded)(x), model(x), atol=1e-5, rtol=1e-4)


def test_padded_handles_sizes_that_are_not_multiples():
    calls = []

    def fn(x):
        calls.append(tuple(x.shape))
        return x * 2

    out = padded(fn, 8)(torch.ones(1, 1, 13, 16))
    assert calls == [(1, 1, 16, 16)] and out.shape == (1, 1, 13, 16) and torch.all(out == 2)


def test_ptq_output_is_close_to_float_and_weights_are_int8(source, ptq_file, disks):
    assert ptq_file.kind == "int8-pt2e" and "thresholds" not in ptq_file.meta["compression"]
    layout = ptq_file.meta["int8"]["weight_layout"]
    n_convs = sum(isinstance(m, nn.Conv2d) for m in UNet(ModelConfig(widths=(4, 8))).modules())
    assert len(layout) == n_convs and ptq_file.tensors["weights_int8"].dtype == np.int8
    assert ptq_file.tensors["weights_int8"].size == sum(np.prod(shape) for _, shape in layout)
    assert ptq_file.tensors["weight_scales"].size == sum(shape[0] for _, shape in layout)
    assert not any(t.dtype == np.float32 and t.size > 100 for t in ptq_file.tensors.values())
    x = probe(disks[0])
    ref = float_logits(source, x)
    with torch.inference_mode():
        out = from_model_file(ptq_file, engine="reference").model_fn(x)
    mean, worst = relative_error(out, ref)
    assert mean < 0.01 and worst < 0.05, (mean, worst)
    assert not torch.equal(out, ref)  # really quantised


def test_the_stored_activation_ranges_are_the_ones_that_run(source, ptq_file, disks):
    x = probe(disks[0])
    tensors = dict(ptq_file.tensors, activation_scale=ptq_file.tensors["activation_scale"] * 0.25)
    bad = io.ModelFile(ptq_file.model_config, ptq_file.norm, tensors, ptq_file.kind, ptq_file.meta)
    with torch.inference_mode():
        mean, _ = relative_error(from_model_file(bad, engine="reference").model_fn(x), float_logits(source, x))
    assert mean > 0.05


def test_int8_file_round_trips_without_pickles(ptq_file, tmp_path, disks):
    path = io.save(ptq_file, tmp_path / "q.slimseg")
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("meta.json"))
        assert not any(n.endswith(".pkl") for n in zf.namelist())
    assert meta["kind"] == "int8-pt2e" and meta["compression"]["method"] == "ptq"
    x = probe(disks[0])
    with torch.inference_mode():
        before = from_model_file(ptq_file, engine="reference").model_fn(x)
        after = from_model_file(io.load(path), engine="reference").model_fn(x)
    torch.testing.assert_close(after, before, atol=0, rtol=0)


def test_odd_image_sizes_predict_through_the_common_path(ptq_file, disks):
    seg = from_model_file(ptq_file, engine="reference")
    img = disks[0][0][:45, :37]
    labels = seg.predict(img)
    assert labels.shape == img.shape


def test_lowered_engine_matches_the_reference(ptq_file, disks):
    x = probe(disks[0])
    converted = pt2e_storage.rebuild(ptq_file)
    ref = pt2e_runner.Int8Runner(converted, 1, 2, "reference")
    low = pt2e_runner.Int8Runner(converted, 1, 2, "lowered")
    with torch.inference_mode():
        a, b = ref(x), low(x)
        c = low(x[:1, :, :24, :40])  # the lowered graph stays dynamic in batch and size
    assert c.shape == (1, 2, 24, 40)
    assert (a - b).abs().max() < 0.1 * a.abs().max()


def test_rewrites_for_inductor_pool_and_concatenate_uint8_and_keep_the_values(ptq_file, disks):
    import copy

    x = probe(disks[0])
    converted = pt2e_storage.rebuild(ptq_file)
    rewritten = pt2e_inductor.for_inductor(copy.deepcopy(converted))
    dequantize = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    pools = [n for n in rewritten.graph.nodes if n.target is torch.ops.aten.max_pool2d.default]
    assert pools and all(p.args[0].target is not dequantize for p in pools)
    uint8_cat = pt2e_inductor._uint8_cat_op()
    assert uint8_cat is not None, "this torch lost what slimseg::uint8_cat needs"
    cats = [n for n in rewritten.graph.nodes if n.target is uint8_cat]
    assert len(cats) == len(ptq_file.model_config.widths) - 1  # one per decoder
    assert all(part.target is not dequantize for c in cats for part in c.args[0])
    assert not any(n.target is torch.ops.aten.cat.default for n in rewritten.graph.nodes)
    with torch.inference_mode():
        a, b = converted(x), rewritten(x)
    assert b.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_no_cpp_compiler_falls_back_and_says_so(ptq_file, monkeypatch):
    monkeypatch.setattr(pt2e_inductor, "have_cpp_compiler", lambda: False)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        seg = from_model_file(ptq_file)
    assert seg.meta["runtime"].endswith("lowered")
    assert "no C++ compiler" in seg.meta["runtime_notes"][0]


def test_a_failing_compile_falls_back_to_the_lowered_engine(ptq_file, monkeypatch, disks, tmp_path):
    monkeypatch.setattr(pt2e_inductor, "have_cpp_compiler", lambda: True)

    import torch._inductor

    def broken_compile(*args, **kwargs):
        raise RuntimeError("C++ compile failed: cc1plus not found")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", broken_compile)
    monkeypatch.setenv("SLIMSEG_CACHE_DIR", str(tmp_path))  # nothing compiled for this shape yet
    seg = from_model_file(ptq_file)
    assert seg.meta["runtime"].endswith("compile")
    with pytest.warns(RuntimeWarning, match="falls back"), torch.inference_mode():
        out = seg.model_fn(probe(disks[0], 1))
    assert out.shape == (1, 2, 48, 48) and seg.meta["runtime"].endswith("lowered")


@pytest.fixture
def own_cache(monkeypatch, tmp_path):
    """An empty compile cache, and no background compiler left from other tests."""
    from slimseg.kinds import background, compile_cache

    monkeypatch.setenv("SLIMSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(compile_cache, "_state", {})
    monkeypatch.setattr(background, "_COMPILERS", {})
    monkeypatch.setattr(background, "GATHER_S", 0.0)
    return background


def test_the_cached_engine_runs_lowered_and_asks_once_for_each_missing_shape(ptq_file, disks, own_cache,
                                                                          monkeypatch, background_compiles):
    monkeypatch.setattr(pt2e_inductor, "have_cpp_compiler", lambda: True)
    x = probe(disks[0], 2)
    seg = from_model_file(ptq_file, engine="cached")
    with torch.inference_mode():
        out, again = seg.model_fn(x), seg.model_fn(x)
        seg.model_fn(x[:1])
        low = from_model_file(ptq_file, engine="lowered").model_fn(x)
    torch.testing.assert_close(out, low, rtol=0, atol=0)  # the same kernels, nothing compiled here
    torch.testing.assert_close(again, out, rtol=0, atol=0)
    assert seg.meta["runtime"].endswith("cached")
    assert own_cache.compiler_for(ptq_file, pt2e_runner.cache_key(ptq_file)).wait(timeout=30)
    assert background_compiles == [tuple(x.shape), tuple(x[:1].shape)]  # each once, padded shapes as called

    monkeypatch.setattr(pt2e_inductor, "have_cpp_compiler", lambda: False)
    monkeypatch.setattr(own_cache, "_COMPILERS", {})
    with torch.inference_mode():
        from_model_file(ptq_file, engine="cached").model_fn(x)
    assert len(background_compiles) == 2  # no compiler: nothing asked, no warning either (lowered runs)


@pytest.mark.slow
@pytest.mark.compiles_in_background
def test_a_background_compile_fills_the_cache_that_the_next_call_runs_from(ptq_file, disks, own_cache,
                                                                          monkeypatch):
    if not pt2e_inductor.have_cpp_compiler():
        pytest.skip("no C++ compiler")
    from slimseg.kinds import compile_cache

    x = probe(disks[0], 1)
    key = pt2e_runner.cache_key(ptq_file)
    seg = from_model_file(ptq_file, engine="cached")
    with torch.inference_mode():
        lowered = seg.model_fn(x)
    compiler = own_cache.compiler_for(ptq_file, key)
    assert compiler.wait(timeout=600) and compiler.failures == []
    assert compile_cache.package_path(f"{key}-{'x'.join(map(str, x.shape))}").is_file()
    assert list(compile_cache.cache_root().glob("*/pending/*")) == []  # the child's model file is gone

    def no_lowering(*args):
        raise AssertionError("the shape is compiled: nothing should be lowered")

    monkeypatch.setattr(pt2e_inductor, "lower_without_compiler", no_lowering)
    with torch.inference_mode():
        compiled = seg.model_fn(x)  # the same runner picks the package up
        fresh = from_model_file(ptq_file, engine="cached").model_fn(x)  # as a new process would
        ref = pt2e_runner.Int8Runner(pt2e_storage.rebuild(ptq_file), 1, 2, "reference")(x)
    torch.testing.assert_close(fresh, compiled, rtol=0, atol=0)
    assert (compiled - ref).abs().max() < 0.1 * ref.abs().max()
    assert (compiled - lowered).abs().max() < 0.1 * ref.abs().max()


def test_unknown_engine_is_refused(ptq_file, monkeypatch):
    with pytest.raises(InputError, match="int8 engine"):
        from_model_file(ptq_file, engine="tensorrt")


def test_onnx_backend_is_close_to_float_and_round_trips(source, disks, tmp_path):
    images, _ = disks
    cfg = CompressConfig(method="ptq", recalibrate_bn=False, **{**FAST, "backend": "onnx"})
    mf = run(compress(source, images, None, cfg))
    assert mf.kind == "int8-onnx" and mf.tensors["onnx"].dtype == np.uint8
    seg = from_model_file(io.load(io.save(mf, tmp_path / "o.slimseg")))
    x = probe(images)
    with torch.inference_mode():
        mean, worst = relative_error(seg.model_fn(x), float_logits(source, x))
    assert mean < 0.01 and worst < 0.05, (mean, worst)
    assert seg.predict(images[0][:45, :37]).shape == (45, 37)


def test_qat_fine_tunes_and_keeps_close_to_float(source, disks, monkeypatch):
    from slimseg.compress import qat

    monkeypatch.setattr(qat, "MIN_STEPS_FOR_LEARNED_RANGES", 2)
    images, labels = disks
    events = []
    cfg = CompressConfig(method="qat", max_steps=2, recalibrate_bn=False, **FAST)
    mf = run(compress(source, images, labels, cfg), events.append)
    assert mf.kind == "int8-pt2e" and mf.meta["compression"]["fine_tune"]["steps"] == 2
    assert any("learned during QAT" in getattr(e, "text", "") for e in events)
    x = probe(images)
    with torch.inference_mode():
        mean, _ = relative_error(from_model_file(mf, engine="reference").model_fn(x), float_logits(source, x))
    assert mean < 0.1  # two small steps move the weights a little, not the function

@pytest.mark.parametrize("start_dice, qat_dice, kept", [(0.9, 0.5, "calibrated start"), (0.5, 0.9, "after QAT")])
def test_qat_keeps_whichever_int8_model_scores_better_on_held_out_images(source, disks, monkeypatch,
                                                                          start_dice, qat_dice, kept):
    from slimseg.compress import methods

    images, labels = disks
    scores = iter([start_dice, qat_dice])
    monkeypatch.setattr(methods, "pooled_dice", lambda *args: next(scores))
    mf = run(compress(source, images, labels, CompressConfig(method="qat", max_steps=2, recalibrate_bn=False, **FAST)))
    check = mf.meta["compression"]["check"]
    assert check == {"images": 1, "dice_calibrated_start": start_dice, "dice_after_qat": qat_dice, "kept": kept}
    ptq = run(compress(source, images, labels, CompressConfig(method="ptq", recalibrate_bn=False, **FAST)))
    same = np.array_equal(mf.tensors["weights_int8"], ptq.tensors["weights_int8"])
    assert same == (kept == "calibrated start")  # the start is exactly the PTQ model


def test_quantising_a_quantised_model_is_refused(ptq_file, disks):
    with pytest.raises(InputError, match="already compressed"):
        run(compress(ptq_file, disks[0], None, CompressConfig(method="ptq", **FAST)))


def test_calibration_data_must_exist_and_fit_the_model(source, disks):
    with pytest.raises(InputError, match="no calibration images"):
        run(compress(source, [], None, CompressConfig(**FAST)))
    stack = np.zeros((3, 48, 48), np.uint8)
    with pytest.raises(InputError, match="shape"):
        run(compress(source, [stack], None, CompressConfig(**FAST)))
    with pytest.raises(InputError, match="needs label images"):
        run(compress(source, disks[0], None, CompressConfig(method="qat", max_steps=1, **FAST)))


def test_compress_leaves_the_source_untouched(source, disks):
    before = {k: v.copy() for k, v in source.tensors.items()}
    meta = json.dumps(source.meta, sort_keys=True)
    run(compress(source, disks[0], None, CompressConfig(method="ptq", **FAST)))
    assert meta == json.dumps(source.meta, sort_keys=True)
    assert all(np.array_equal(before[k], v) for k, v in source.tensors.items())


def test_a_newer_int8_layout_or_a_changed_graph_is_refused(ptq_file):
    newer = io.ModelFile(ptq_file.model_config, ptq_file.norm, ptq_file.tensors, ptq_file.kind,
                         {**ptq_file.meta, "int8": {**ptq_file.meta["int8"], "format": KINDS["int8-pt2e"].version + 1}})
    with pytest.raises(ModelFileError, match="newer"):
        from_model_file(newer)
    observers = ptq_file.meta["int8"]["observers"]
    changed = io.ModelFile(ptq_file.model_config, ptq_file.norm, ptq_file.tensors, ptq_file.kind,
                           {**ptq_file.meta, "int8": {**ptq_file.meta["int8"], "observers": observers[:-1]}})
    with pytest.raises(ModelFileError, match="different int8 graph|incomplete"):
        from_model_file(changed)
    tensors = dict(ptq_file.tensors, weights_int8=ptq_file.tensors["weights_int8"][:-5])
    truncated = io.ModelFile(ptq_file.model_config, ptq_file.norm, tensors, ptq_file.kind, ptq_file.meta)
    with pytest.raises(ModelFileError, match="incomplete or damaged"):
        from_model_file(truncated)


def test_group_norm_models_cannot_be_quantised(disks):
    model = UNet(ModelConfig(widths=(4, 8), norm="group"))
    mf = io.from_module(model, model.config, NormConfig())
    with pytest.raises(InputError, match="GroupNorm"):
        run(compress(mf, disks[0], None, CompressConfig(**FAST)))


@pytest.mark.slow
def test_compiled_engine_matches_the_reference(ptq_file, disks, monkeypatch):
    if not pt2e_inductor.have_cpp_compiler():
        pytest.skip("no C++ compiler")
    x = probe(disks[0], 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn
        seg = from_model_file(ptq_file)
        with torch.inference_mode():
            out = seg.model_fn(x)
    with torch.inference_mode():
        ref = pt2e_runner.Int8Runner(pt2e_storage.rebuild(ptq_file), 1, 2, "reference")(x)
    assert seg.meta["runtime"].endswith("compile")
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


def test_qat_calibrates_ranges_after_too_few_steps(source, disks):
    images, labels = disks
    events = []
    mf = run(compress(source, images, labels, CompressConfig(method="qat", max_steps=1, **FAST)), events.append)
    assert any("have not settled" in getattr(e, "text", "") for e in events)
    assert any(getattr(e, "stage", "") == "calibrate" for e in events) and mf.kind == "int8-pt2e"


def test_qat_recalibrates_when_its_observers_do_not_line_up(source, disks, monkeypatch):
    from slimseg.compress import qat

    monkeypatch.setattr(qat, "MIN_STEPS_FOR_LEARNED_RANGES", 1)
    images, labels = disks
    from torchao.quantization.pt2e import FakeQuantizeBase

    real = pt2e_graph.observer_roles

    def roles(prepared):  # the fake-quantised QAT graph's observers differ from the int8 graph's
        return {} if any(isinstance(m, FakeQuantizeBase) for m in prepared.modules()) else real(prepared)

    monkeypatch.setattr(pt2e_graph, "observer_roles", roles)
    events = []
    cfg = CompressConfig(method="qat", max_steps=1, recalibrate_bn=False, **FAST)
    mf = run(compress(source, images, labels, cfg), events.append)
    texts = [getattr(e, "text", "") for e in events]
    assert any("recalibrating" in t for t in texts) and not any("learned during QAT" in t for t in texts)
    assert mf.kind == "int8-pt2e" and len(mf.tensors["activation_scale"]) > 0
