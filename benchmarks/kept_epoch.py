"""Which epoch to keep: one run of the accuracy protocol (benchmarks/accuracy.py: 8 minutes, the seeded
20 % of DATA held out) with the validated weights (the weight average) saved after every epoch; each is then
scored as the trainer would keep it (BatchNorm re-estimated, thresholds tuned on the validation images) on
the held-out images, next to the validation figures a keeping rule could use: the validation Dice (today's
rule), the validation instance F1 at the default thresholds and at the tuned ones.

    PYTHONPATH=src python benchmarks/kept_epoch.py DATA [--minutes 8] [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    a = ap.parse_args()

    from accuracy import HOLDOUT_FRACTION, HOLDOUT_SEED, KEYS

    from slimseg.host import tune_process

    tune_process()
    from slimseg.config import PredictConfig, TrainConfig
    from slimseg.data.folder import load_folder
    from slimseg.data.patches import split_indices
    from slimseg.evaluation import score_model
    from slimseg.events import EpochEnd
    from slimseg.events import run as run_events
    from slimseg.training import Trainer
    from slimseg.tune import instance_f1

    names, images, labels = load_folder(a.data)
    keep, held = split_indices(len(images), HOLDOUT_FRACTION, HOLDOUT_SEED)
    h_names, h_images, h_labels = ([names[i] for i in held], [images[i] for i in held], [labels[i] for i in held])
    trainer = Trainer([images[i] for i in keep], [labels[i] for i in keep],
                      TrainConfig(minutes=a.minutes, epochs=10_000, seed=a.seed), names=[names[i] for i in keep])
    snapshots, gen = [], trainer.fit()
    try:
        while True:
            event = next(gen)
            if isinstance(event, EpochEnd):  # the weights just validated (private: no API gives every epoch's)
                snapshots.append((event.epoch, event.step, event.val_dice,
                                  copy.deepcopy(trainer._eval_model.state_dict())))
    except StopIteration as stop:
        result = stop.value
    rows = []
    for epoch, step, val_dice, state in snapshots:
        trainer._eval_model.load_state_dict(state)
        trainer._eval_model.eval()
        val_labels = [lab for _, lab in trainer.val]
        default = PredictConfig(trained_diameter=trainer._result.predict_config.trained_diameter)
        val_default_f1 = instance_f1(trainer._val_probabilities(), val_labels, default)
        trainer.load_best(state)
        kept = trainer.result()
        scores = run_events(score_model(kept.segmenter(), h_images, h_labels, names=h_names)).summary
        row = {"epoch": epoch, "step": step, "val_dice": val_dice, "val_tuned_f1": kept.tuned_instance_f1,
               "val_base_f1": val_default_f1, **{k: scores[k] for k in KEYS}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "minutes": a.minutes, "seed": a.seed,
           "best_epoch_dice": result.best_epoch, "rows": rows}
    for rule in ("val_dice", "val_base_f1", "val_tuned_f1"):
        pick = max(rows, key=lambda r: r[rule])
        print(f"keep by {rule}: epoch {pick['epoch']}, held-out instance F1 {pick['instance_f1']:.4f}, "
              f"DSB {pick['dsb_score']:.4f}", file=sys.stderr)
    last = rows[-1]
    print(f"last epoch {last['epoch']}: held-out instance F1 {last['instance_f1']:.4f}, DSB {last['dsb_score']:.4f}",
          file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
