"""Training throughput: the default recipe's optimiser steps (slimseg.training.Trainer on the shipped
sample, 128² patches in batches of 8, bf16 autocast where the CPU has it) against the bfloat16 and
float32 matmul rates measured in the same run (2048² matmul), and each epoch's time split between
its steps and its validation.

    PYTHONPATH=src python benchmarks/train_rate.py [--epochs 3] [--json FILE]

A step's FLOPs (forward and backward of the U-Net and the loss) are counted by
``torch.utils.flop_counter.FlopCounterMode`` on the same batch shape.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

# e2e tunes the process as the command does, then imports torch
from e2e import matmul_gflops


def step_flops(cfg, model_cfg) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from slimseg.losses import parse_loss
    from slimseg.model import UNet

    model, loss_fn = UNet(model_cfg), parse_loss(cfg.loss)
    x = torch.randn(cfg.batch_size, model_cfg.in_channels, cfg.patch_size, cfg.patch_size)
    y = (torch.rand(cfg.batch_size, model_cfg.out_channels, cfg.patch_size, cfg.patch_size) > 0.5).float()
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(x), y).backward()
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()

    import torch

    from slimseg.config import TrainConfig
    from slimseg.events import EpochEnd, StepEnd
    from slimseg.sample import load_sample
    from slimseg.training import Trainer

    fp32, bf16 = matmul_gflops(), matmul_gflops(dtype=torch.bfloat16)
    names, images, labels = load_sample("train")
    trainer = Trainer(images, labels, TrainConfig(epochs=a.epochs, seed=0), names=names)
    flops = step_flops(trainer.config, trainer.model_config)
    steps, epochs = [], []  # step seconds per epoch; (steps s, validation s) per epoch
    last = time.perf_counter()
    current = []
    for event in trainer.fit():
        now = time.perf_counter()
        if isinstance(event, StepEnd):
            current.append(now - last)
        elif isinstance(event, EpochEnd):
            epochs.append((sum(current), now - last))
            steps.append(current)
            current = []
        last = now
    fp32_after, bf16_after = matmul_gflops(), matmul_gflops(dtype=torch.bfloat16)
    # the first epoch's first steps warm oneDNN's kernels up: the rate is taken from the later epochs
    later = [t for ep in steps[1:] for t in ep] or [t for ep in steps for t in ep]
    step_s = statistics.median(later)
    rate = flops / step_s / 1e9
    bf16_rate, fp32_rate = statistics.fmean((bf16, bf16_after)), statistics.fmean((fp32, fp32_after))
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "bf16_autocast": trainer.bf16, "batch": trainer.config.batch_size, "patch": trainer.config.patch_size,
           "gflop_per_step": flops / 1e9, "median_step_s": step_s, "step_gflops": rate,
           "matmul_gflops_fp32": [fp32, fp32_after], "matmul_gflops_bf16": [bf16, bf16_after],
           "of_bf16_rate": rate / bf16_rate, "of_fp32_rate": rate / fp32_rate,
           "epochs": [{"steps_s": s, "validation_s": v, "validation_share": v / (s + v)} for s, v in epochs]}
    print(f"{flops / 1e9:.2f} GFLOP per step (batch {trainer.config.batch_size} of {trainer.config.patch_size}², "
          f"forward + backward), median step {step_s * 1000:.1f} ms: {rate:.0f} GFLOP/s")
    print(f"matmul 2048² before/after: fp32 {fp32:.0f}/{fp32_after:.0f}, bf16 {bf16:.0f}/{bf16_after:.0f} GFLOP/s; "
          f"the steps ran at {rate / bf16_rate:.2f} of the bf16 rate ({rate / fp32_rate:.2f} of the fp32 rate)"
          f"{'' if trainer.bf16 else ' (no bf16 autocast on this CPU)'}")
    for i, (s, v) in enumerate(epochs, 1):
        print(f"epoch {i}: steps {s:.1f} s, validation {v:.1f} s ({100 * v / (s + v):.0f} % of the epoch)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    print(json.dumps({k: out[k] for k in ("of_bf16_rate", "of_fp32_rate")}), file=sys.stderr)


if __name__ == "__main__":
    main()
