"""The compression table of the study's winning model (PTQ, QAT, pruning) for the report.

Uses ``slimseg.compress`` when it is installed: ``compress(model_file, images, labels,
CompressConfig(method=...), names)`` on the study's training pool (the model's validation images
left out), then ``slimseg.compress.report.benchmark`` on the study's held-out images, so the table's
accuracy is measured where the study measured it. The table is kept in ``DIR/compression.md`` and
the compressed models in ``DIR/compressed/``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..files import write_text

METHODS = ("ptq", "qat", "prune-structured", "prune-ptq")
SECTION_FILE = "compression.md"


def unavailable_reason() -> str | None:
    """Why the compression table cannot be made here (None when it can)."""
    try:
        from ..compress import CompressConfig, compress  # noqa: F401
        from ..compress.report import benchmark, format_table  # noqa: F401
    except (ImportError, AttributeError) as err:
        return (f"Not available: `slimseg.compress` cannot be used in this installation ({err}). The winner's "
                "model file is in `models/`; rebuild this report with `slimseg study-report DIR --compress` "
                "once it can.")
    return None


def winner_run(out: str | Path) -> dict[str, Any] | None:
    """The results row of the best run of the best cell (by per-image held-out Dice), or None."""
    from .results import load_study
    from .stats import PRIMARY, cells, ranked

    config, _, rows = load_study(out)
    order = ranked(cells(config, rows))
    return max(order[0].ok, key=lambda r: r[PRIMARY]) if order else None


def compression_section(out: str | Path, data_path: str | Path | None = None, methods: Sequence[str] = METHODS,
                        minutes: float = 1.0, max_steps: int | None = None,
                        on_event: Callable[[Any], None] | None = None) -> str:
    """Compress the winning run's model with each method, benchmark all against it on the held-out
    images, and return (and store in ``DIR/compression.md``) the markdown section."""
    reason = unavailable_reason()
    if reason:
        return reason
    from .. import io
    from ..compress import CompressConfig, compress
    from ..compress.report import benchmark, format_table, machine_info
    from ..events import run
    from . import dataset
    from .results import load_study
    from .task import SCORING

    out = Path(out)
    config, meta, _ = load_study(out)
    best = winner_run(out)
    if best is None:
        return "No finished run to compress yet."
    data_path = data_path or meta.get("data_path", "")
    data, info = dataset.load(str(data_path), config.test_fraction, config.split_seed)
    if info["fingerprint"] != config.data.get("fingerprint"):
        return f"Not computed: the data at `{data_path}` are not the data this study ran on (fingerprint differs)."
    src = out / "models" / f"{best['run_id']}.slimseg"
    model = io.load(src)
    folder = out / "compressed"
    folder.mkdir(exist_ok=True)
    paths = [src]
    for method in methods:
        cfg = CompressConfig(method=method, minutes=minutes, max_steps=max_steps)
        compressed = run(compress(model, data.train_images, data.train_labels, cfg, names=data.train_names), on_event)
        paths.append(io.save(compressed, folder / f"{best['run_id']}.{method}.slimseg", overwrite=True))
    # the study's post-processing: fixed thresholds, or (None) each model's own tuned ones
    rows = benchmark(paths, data.test_images, data.test_labels, data.test_names, on_event=on_event,
                     predict_cfg=SCORING if config.scoring == "fixed" else None)
    text = "\n".join([
        f"The winning run, `{best['run_id']}` (held-out Dice {best['test_dice']:.4f} pooled, {best['test_dice_mean']:.4f} per image), compressed with "
        f"{', '.join(methods)} (fine-tuning budget {minutes:g} min where the method fine-tunes; calibration and "
        "fine-tuning on the study's training images) and measured on the held-out images by "
        "`slimseg.compress.report.benchmark`; speed-ups and metric changes are relative to the float model "
        "(first row). Every model is post-processed as in the study "
        f"({'fixed thresholds 0.5' if config.scoring == 'fixed' else 'its own tuned thresholds'}); the "
        "benchmark runs float32 where the study used bf16 autocast, so the first row can differ from the "
        "study's scores in the fourth decimal.",
        "",
        format_table(rows, machine_info(), markdown=True),
    ])
    write_text(out / SECTION_FILE, text)
    return text


def stored_section(out: str | Path) -> str | None:
    path = Path(out) / SECTION_FILE
    return path.read_text(encoding="utf-8") if path.exists() else None
