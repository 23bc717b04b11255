"""Quantisation-aware training: fine-tune the folded U-Net under int8 fake quantisation (torchao
PT2E, the same x86 target as PTQ), then keep the ranges it learned."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from ..data.patches import PatchSampler
from ..events import Message
from ..kinds import pt2e_graph
from ..model import UNet
from .finetune import FinetuneSettings, finetune


# torchao's QAT observers are moving averages (constant 0.01): below this many steps their ranges
# mostly reflect the first batches, and calibrated ranges (histogram observers) are better.
MIN_STEPS_FOR_LEARNED_RANGES = 100


def qat_finetune(folded: UNet, sampler: PatchSampler, settings: FinetuneSettings, teacher: torch.nn.Module | None = None
                 ) -> Generator[Any, None, tuple[UNet, dict[str, tuple[np.ndarray, np.ndarray]] | None, dict]]:
    """Fine-tune ``folded`` (norm 'none') with fake quantisation, distilling from ``teacher`` (the
    float model) where given. Returns the trained float U-Net, the learned (scale, zero point) per
    observer of the PTQ graph (None after too few steps, or where the QAT graph's observers do not
    line up with it: then the caller calibrates), and the fine-tuning record."""
    pt2e_graph.import_torchao()
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    prepared = prepare_qat_pt2e(pt2e_graph.export_core(folded, train=True), pt2e_graph.quantizer(is_qat=True))
    move_exported_model_to_train(prepared)
    record = yield from finetune(prepared, sampler, settings, stage="QAT", teacher=teacher)
    move_exported_model_to_eval(prepared)
    state = {k.removeprefix("net."): v.detach().clone() for k, v in prepared.state_dict().items()
             if k.startswith("net.")}
    trained = UNet(folded.config)
    trained.load_state_dict(state)
    trained.eval()
    if record["steps"] < MIN_STEPS_FOR_LEARNED_RANGES:
        yield Message(f"QAT ran {record['steps']} steps (< {MIN_STEPS_FOR_LEARNED_RANGES}): its moving-average "
                      "activation ranges have not settled; calibrating them on the fine-tuned weights instead")
        return trained, None, record
    qat_roles = pt2e_graph.observer_roles(prepared)
    ptq_roles = pt2e_graph.observer_roles(pt2e_graph.prepare(trained))
    if qat_roles != ptq_roles:
        yield Message("QAT: the fake-quantised graph's observers differ from the int8 graph's; "
                      "recalibrating the activation ranges on the fine-tuned weights instead")
        return trained, None, record
    with torch.no_grad():
        return trained, pt2e_graph.read_qparams(prepared), record
