"""``report.md`` of a study folder, with PNG figures (matplotlib, no display needed).

Everything in the report is computed from the folder (study.json, results.csv, runs/*.json,
timing.json), so it can be rebuilt at any time, also for a study still running.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_path, write_text
from .results import TIMING_FILE, load_detail, load_study
from .stats import PRIMARY, Cell, cells, find_cell, fmt_pm, marginal, paired_test, per_image, ranked

STUDY_PICK = ("rmsprop", "bce+jaccard")  # the published study's most accurate combination
ALPHA = 0.05
TOP_CURVES = 3


def write_report(out: str | Path, compression: str | None = None) -> Path:
    """Write ``out/report.md`` (+ heatmap.png, seeds.png, curves.png, per_image.csv); return its path.
    ``compression`` is a markdown section (default: the stored one, see :mod:`slimseg.study.compression`)."""
    out = Path(out)
    config, meta, rows = load_study(out)
    all_cells = cells(config, rows)
    order = ranked(all_cells)
    details = {r["run_id"]: load_detail(out, r["run_id"]) for r in rows if r["status"] == "ok"}
    _write_per_image(out / "per_image.csv", details)
    figures = []
    if order:
        figures.append(_heatmaps(out / "heatmap.png", config, all_cells))
        figures.append(_seed_spread(out / "seeds.png", order))
        figures.append(_curves(out / "curves.png", order[:TOP_CURVES], details))
    if compression is None:
        from .compression import stored_section

        compression = stored_section(out)
    md = _markdown(config, meta, rows, all_cells, order, details, _timing(out), compression)
    return write_text(out / "report.md", md)


# -- text -------------------------------------------------------------------------------------------
def _markdown(config, meta, rows, all_cells, order, details, timing, compression) -> str:
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_failed = len(rows) - n_ok
    n_total = len(config.runs())
    model = config.model
    data = config.data
    lines = [
        "# Optimizer × loss study",
        "",
        f"- **Data**: `{meta.get('data_path', '')}` (fingerprint `{data.get('fingerprint', '')[:12]}`): "
        f"{data.get('n_test', '?')} held-out test images, never trained on; {data.get('n_train_pool', '?')} "
        f"images for training, of which a {config.train['val_fraction']:g} fraction validates (best-epoch "
        f"choice). Both splits are fixed by split seed {config.split_seed} for every run.",
        f"- **Grid**: optimizers {', '.join(config.optimizers)}; losses {', '.join(config.losses)}; "
        f"seeds {', '.join(map(str, config.seeds))} (a seed changes initialisation and patch sampling only).",
        f"- **Budget per run**: {config.describe_budget()}; batch {config.train['batch_size']} of "
        f"{config.train['patch_size']}² patches, {config.train['schedule']} LR schedule, augmentation "
        f"{'on' if config.train['augment'] else 'off'}.",
        f"- **Model**: U-Net, encoder widths {tuple(model['widths'])}, {model['norm']} norm.",
        f"- **Learning rates** ({config.lr_policy}): "
        + ", ".join(f"{o} {lr:g}" for o, lr in config.lrs.items()) + ".",
        f"- **Runs**: {n_ok} finished, {n_failed} failed, {n_total - len(rows)} not run yet (of {n_total}); "
        f"{_stop_reasons(rows)}.",
        "- **Scores** on the held-out images: *Dice* is the pixel Dice of each image averaged over the images "
        "(every image weighs the same; ranking, heatmap and paired test use it); *pooled Dice* counts all pixels "
        "of all images together (large images weigh more); *instance F1* matches objects at IoU >= 0.5, pooled "
        "over images. A cell shows mean ± standard deviation over its seeds. " + (
            "Every run is post-processed the same way (foreground and seed thresholds 0.5), not with the "
            "thresholds its trainer tuned on the validation images (`--scoring fixed`)."
            if config.scoring == "fixed" else
            "Every run is post-processed with the thresholds its trainer tuned on the validation images, as "
            "the trained model predicts by default (`--scoring tuned`)."),
        "",
    ]
    if meta.get("command"):
        lines += ["Reproduce with:", "", "```", meta["command"], "```", ""]
    lines += ["## Answer", "", *_answer(all_cells, order, details), ""]
    if order:
        lines += ["## Mean held-out scores per optimizer × loss", "", "![heatmaps](heatmap.png)", "",
                  "## Ranking", "", *_ranking_table(order), "",
                  "## Optimizers and losses on average", "", *_marginals(all_cells), "",
                  "## Spread over seeds", "", "![per-seed Dice](seeds.png)", "",
                  f"## Training curves of the best {min(TOP_CURVES, len(order))} cells", "",
                  "![validation Dice during training](curves.png)", ""]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["## Failed runs", "", "| optimizer | loss | seed | error |", "|---|---|---|---|"]
        lines += [f"| {r['optimizer']} | {r['loss']} | {r['seed']} | {r['error'][:200]} |" for r in failed]
        lines.append("")
    partial = [r for r in rows if r["status"] == "ok" and r.get("first_epoch_complete") == "False"]
    if partial:
        lines += [f"Warning: {len(partial)} run(s) ended before finishing their first epoch (the machine was "
                  "slower than the budget probe measured); their scores are not comparable.", ""]
    lines += ["## Compression of the winner", "", compression or _no_compression(), ""]
    lines += ["## Timing", "", *_timing_table(timing), ""]
    return "\n".join(lines)


def _stop_reasons(rows) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        if r["status"] == "ok":
            counts[r["stop_reason"]] = counts.get(r["stop_reason"], 0) + 1
    if not counts:
        return "none stopped yet"
    return "stopped by " + ", ".join(f"{k or '?'}: {v}" for k, v in sorted(counts.items()))


def _answer(all_cells, order, details) -> list[str]:
    if len(order) < 2:
        return ["Too few finished cells to compare yet."]
    best, second = order[0], order[1]
    test = _compare(best, second, details, "dice")
    out = [
        f"The best cell on held-out Dice is **{best.name}** ({_pm(best)}); the runner-up is {second.name} "
        f"({_pm(second)}).",
        f"Paired over the {test['n']} held-out images (each image's Dice averaged over seeds), the best cell "
        f"leads by {test['mean_diff']:+.4f} (bootstrap 95% interval {test['ci95'][0]:+.4f} to {test['ci95'][1]:+.4f}; "
        f"better on {test['wins']}, worse on {test['losses']} images); Wilcoxon signed-rank p = {test['p']:.3g}: "
        + ("**significant** at 0.05." if test["p"] < ALPHA else "**not significant** at 0.05 — the two cannot be "
           "told apart on this data."),
    ]
    if (test["p"] < ALPHA) == (test["ci95"][0] <= 0 <= test["ci95"][1]):
        out.append("The rank test and the interval of the mean difference disagree, so treat this as borderline.")
    by_f1 = ranked(all_cells, "test_instance_f1")
    pooled = ranked(all_cells, "test_dice")
    if pooled and pooled[0] is not best:
        out.append(f"By pooled Dice (large images weigh more) {pooled[0].name} leads instead "
                   f"({fmt_pm(pooled[0].mean('test_dice'), pooled[0].std('test_dice'))}).")
    if by_f1 and by_f1[0] is not best:
        out.append(f"By instance F1 the best cell is a different one: {by_f1[0].name} "
                   f"({fmt_pm(by_f1[0].mean('test_instance_f1'), by_f1[0].std('test_instance_f1'))}).")
    by_opt, by_loss = marginal(all_cells, "optimizer"), marginal(all_cells, "loss")
    if len(by_opt) > 1 and len(by_loss) > 1:
        best_o, best_l = max(by_opt, key=by_opt.get), max(by_loss, key=by_loss.get)
        spread_o = max(by_opt.values()) - min(by_opt.values())
        spread_l = max(by_loss.values()) - min(by_loss.values())
        out.append(f"Averaged over losses the best optimizer is {best_o} ({by_opt[best_o]:.3f}); averaged over "
                   f"optimizers the best loss is {best_l} ({by_loss[best_l]:.3f}). The choice of "
                   + ("optimizer" if spread_o > spread_l else "loss")
                   + f" matters more here: optimizer means span {spread_o:.3f} Dice, loss means "
                   f"{spread_l:.3f}.")
    pick = find_cell(all_cells, *STUDY_PICK)
    name = "RMSprop with BCE+Jaccard (the published study's best)"
    if pick is None or not pick.ok:
        out.append(f"{name} is not in this grid (or has no finished run), so the study's claim is not tested here.")
    elif pick is best:
        out.append(f"{name} **wins here too**, as the study reported.")
    else:
        rank = order.index(pick) + 1
        t = _compare(best, pick, details, "dice")
        verdict = ("it is significantly worse than the best cell, so **this data disagrees with the study**"
                   if t["p"] < ALPHA else
                   "the difference from the best cell is not significant, so the data neither confirm nor "
                   "refute the study's pick: it is among the cells that cannot be told apart from the best")
        out.append(f"{name} ranks **{rank} of {len(order)}** (Dice {_pm(pick)}, "
                   f"instance F1 {fmt_pm(pick.mean('test_instance_f1'), pick.std('test_instance_f1'))}); against the best "
                   f"cell it is behind by {t['mean_diff']:.4f} Dice per image (p = {t['p']:.3g}): {verdict}.")
    out.append("Caveats: the compared pair is chosen after ranking and p-values are not corrected for the "
               f"{len(order)} cells; {len(best.ok)} seed(s) per cell cannot test seed-to-seed variation, so the "
               "paired test is over images; learning rates are each optimizer's default, not tuned per cell, and "
               "short budgets favour fast-converging optimizers, so a low rank can mean a poor default rate for "
               "this budget rather than a poor optimizer.")
    return [" ".join(out)]


def _pm(c: Cell, metric: str = PRIMARY) -> str:
    return fmt_pm(c.mean(metric), c.std(metric))


def _compare(a: Cell, b: Cell, details, metric: str) -> dict[str, Any]:
    da = [details[i] for i in a.run_ids() if i in details]
    db = [details[i] for i in b.run_ids() if i in details]
    return paired_test(per_image(da, metric), per_image(db, metric))


def _ranking_table(order: list[Cell]) -> list[str]:
    lines = ["| rank | optimizer | loss | Dice | pooled Dice | instance F1 | DSB score | runs | epochs | steps |",
             "|---:|---|---|---|---|---|---|---:|---:|---:|"]
    for i, c in enumerate(order, 1):
        lines.append(
            f"| {i} | {c.optimizer} | {c.loss} | {_pm(c)} | {_pm(c, 'test_dice')} | {_pm(c, 'test_instance_f1')} | "
            f"{_pm(c, 'test_dsb_score')} | {len(c.ok)}/{len(c.runs)} | {c.mean('epochs_run'):.1f} | "
            f"{c.mean('steps'):.0f} |")
    return lines


def _marginals(all_cells) -> list[str]:
    lines = []
    for by in ("optimizer", "loss"):
        d, f = marginal(all_cells, by), marginal(all_cells, by, "test_instance_f1")
        lines += [f"| {by} | mean Dice | mean instance F1 |", "|---|---|---|"]
        lines += [f"| {k} | {v:.3f} | {f[k]:.3f} |" for k, v in sorted(d.items(), key=lambda kv: -kv[1])]
        lines.append("")
    return lines[:-1]


def _no_compression() -> str:
    from .compression import unavailable_reason

    return unavailable_reason() or "Not computed yet: run `slimseg study-report DIR --compress`."


def _timing(out: Path) -> list[dict[str, Any]]:
    path = out / TIMING_FILE
    return json.loads(path.read_text()) if path.exists() else []


def _timing_table(sessions: list[dict[str, Any]]) -> list[str]:
    if not sessions:
        return ["No timing recorded."]
    lines = ["Overhead = 1 − Σ(run training time) / (task slots × session wall time); training time is the "
             "trainer's own (data preparation + fit), everything else — cluster start, data transfer, budget "
             "probe, held-out scoring, saving, bookkeeping and idle slots — counts as overhead.", "",
             "| session | where | ended | runs | wall | Σ training | Σ scoring | overhead |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for s in sessions:
        if not s.get("n_runs"):
            continue
        lines.append(f"| {s['started_at']} | {s.get('where', '')} | {s.get('ended', '')} | {s['n_runs']} | "
                     f"{s['wall_s'] / 60:.1f} min | "
                     f"{s.get('train_s', 0) / 60:.1f} min | {s.get('eval_s', 0) / 60:.1f} min | "
                     f"{100 * s.get('overhead', float('nan')):.1f}% |")
    return lines


def _write_per_image(path: Path, details: dict[str, dict[str, Any]]) -> None:
    keys = ["run_id", "optimizer", "loss", "seed", "name", "dice", "jaccard", "precision", "recall", "tp", "fp",
            "fn", "dsb_score"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for run_id, d in sorted(details.items()):
            for row in d.get("per_image", []):
                w.writerow({"run_id": run_id, **d["run"], **row})


# -- figures ----------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _heatmaps(path: Path, config, all_cells: list[Cell]) -> Path:
    plt = _plt()
    opts, losses = list(config.optimizers), list(config.losses)
    metrics = [(PRIMARY, "held-out Dice (per-image mean)"), ("test_instance_f1", "held-out instance F1 (IoU >= 0.5)")]
    fig, axes = plt.subplots(1, 2, figsize=(2 + 2.4 * len(losses), 1.5 + 0.75 * len(opts)), squeeze=False)
    for ax, (metric, title) in zip(axes[0], metrics):
        mean = np.full((len(opts), len(losses)), np.nan)
        std = np.full_like(mean, np.nan)
        count = np.zeros_like(mean, dtype=int)
        for c in all_cells:
            i, j = opts.index(c.optimizer), losses.index(c.loss)
            mean[i, j], std[i, j], count[i, j] = c.mean(metric), c.std(metric), len(c.ok)
        im = ax.imshow(np.ma.masked_invalid(mean), cmap="viridis", aspect="auto")
        fig.colorbar(im, ax=ax, shrink=0.8)
        finite = mean[np.isfinite(mean)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0
        for i in range(len(opts)):
            for j in range(len(losses)):
                if math.isnan(mean[i, j]):
                    ax.text(j, i, "no run", ha="center", va="center", fontsize=8, color="grey")
                    continue
                text = f"{mean[i, j]:.3f}" + ("" if math.isnan(std[i, j]) else f"\n±{std[i, j]:.3f}")
                if count[i, j] < len(config.seeds):
                    text += f"\n({count[i, j]}/{len(config.seeds)} runs)"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if mean[i, j] > mid else "white")
        if finite.size:
            bi, bj = np.unravel_index(np.nanargmax(mean), mean.shape)
            ax.add_patch(plt.Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set_xticks(range(len(losses)), losses, rotation=30, ha="right")
        ax.set_yticks(range(len(opts)), opts)
        ax.set_title(f"{title}\nmean ± std over {len(config.seeds)} seed(s)", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def _seed_spread(path: Path, order: list[Cell]) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(order) + 2), 3.8))
    for i, c in enumerate(order):
        v = c.values(PRIMARY)
        ax.scatter(np.full(v.size, i), v, s=14, color="tab:blue", alpha=0.8)
        ax.hlines(v.mean(), i - 0.3, i + 0.3, color="black")
    ax.set_xticks(range(len(order)), [c.name for c in order], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("held-out Dice of each run")
    ax.set_title("Held-out Dice (per-image mean) of every run (dots) and the cell mean (bar), cells ranked", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def _curves(path: Path, top: list[Cell], details: dict[str, dict[str, Any]]) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = ["-", "--", ":", "-."]
    for k, c in enumerate(top):
        color = f"C{k}"
        for s, run_id in enumerate(c.run_ids()):
            hist = details.get(run_id, {}).get("history", [])
            if not hist:
                continue
            steps = [h["step"] for h in hist]
            label = c.name if s == 0 else None
            axes[0].plot(steps, [h["val_dice"] for h in hist], styles[s % 4], color=color, marker="o", ms=3, label=label)
            axes[1].plot(steps, [h["train_loss"] for h in hist], styles[s % 4], color=color, marker="o", ms=3, label=label)
    axes[0].set_ylabel("validation Dice")
    axes[1].set_ylabel("training loss (each cell its own loss)")
    for ax in axes:
        ax.set_xlabel("optimisation step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("Validation Dice per epoch (line style = seed)", fontsize=10)
    axes[1].set_title("Training loss per epoch", fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
