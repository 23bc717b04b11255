"""How responsive napari stays while the Train widget trains (a benchmark, not a test).

A 20 ms QTimer ticks in napari's event loop; a tick's *latency* is how late it fires (gap - 20 ms), i.e.
how long the event loop could not answer. Measured first with napari idle, then during a real training
run started by clicking the Train widget's Start button, on real nuclei images (the shipped DSB2018
sample), then after its Stop button until the run is wrapped up, and last for 2 s after one more napari
notification in an idle napari (the toast the Train widget shows when training ends: napari's own cost,
for reference). The target: the event loop answers within 100 ms during training and at its end.

Every stall is listed with what else happened then: CPython's full garbage collections (timed with
``gc.callbacks``; they hold the GIL for every thread, napari's heap included) and the toast.

Needs a display: ``xvfb-run -a python benchmarks/gui_responsiveness.py`` (or a desktop session).
"""

from __future__ import annotations

import argparse
import statistics
import time


def summarize(name: str, lat_ms: list[float]) -> str:
    lat = sorted(lat_ms)
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]  # noqa: E731
    over = sum(x > 100 for x in lat)
    return (f"{name:9s} ticks {len(lat):5d}  median {statistics.median(lat):6.1f} ms  p95 {q(0.95):6.1f} ms  "
            f"p99 {q(0.99):6.1f} ms  max {lat[-1]:6.1f} ms  ticks later than 100 ms: {over}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--idle-seconds", type=float, default=10)
    p.add_argument("--train-seconds", type=float, default=60)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patches-per-epoch", type=int, default=256)
    p.add_argument("--load", action="store_true", help="print the system load average (shared machines)")
    a = p.parse_args()

    import gc

    import napari
    import numpy as np
    import torch
    from napari.utils import notifications
    from qtpy.QtCore import QEventLoop, Qt, QTimer
    from qtpy.QtTest import QTest

    from slimseg._widgets.train import TrainWidget
    from slimseg.sample import load_sample

    _, images, labels = load_sample("train")
    keep = [i for i, im in enumerate(images) if im.shape == (256, 256)]
    viewer = napari.Viewer(show=True)
    img = viewer.add_image(np.stack([images[i] for i in keep]), name="nuclei")
    lab = viewer.add_labels(np.stack([labels[i] for i in keep]), name="nuclei labels")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.image_layers.value, widget.label_layers.value = [img], [lab]
    widget.depth.value, widget.base_width.value = a.depth, a.width
    widget.patch.value, widget.batch.value, widget.epochs.value = a.patch, a.batch, 1000
    widget.patches_per_epoch.value = a.patches_per_epoch

    phase = {"name": "idle"}
    lat: dict[str, list[float]] = {"idle": [], "toast": [], "training": [], "stopping": []}
    last = [time.perf_counter()]

    stalls: list[tuple[str, float, float]] = []  # (phase, seconds into the phase, latency ms)
    phase_start = [time.perf_counter()]
    collections: list[tuple[str, float, float]] = []  # full garbage collections: (phase, s into it, ms)
    gc_start = [0.0]

    def on_gc(stage: str, info: dict) -> None:
        if info["generation"] != 2:
            return
        now = time.perf_counter()
        if stage == "start":
            gc_start[0] = now
        else:
            collections.append((phase["name"], gc_start[0] - phase_start[0], (now - gc_start[0]) * 1000))

    gc.callbacks.append(on_gc)
    toasts: list[tuple[str, float]] = []  # napari notifications shown: (phase, s into it)
    show_info = notifications.show_info

    def recorded_show_info(message: str) -> None:  # the widgets import it when they call it: this is theirs
        toasts.append((phase["name"], time.perf_counter() - phase_start[0]))
        show_info(message)

    notifications.show_info = recorded_show_info

    def tick() -> None:
        now = time.perf_counter()
        late = max(0.0, (now - last[0]) * 1000 - 20)
        lat[phase["name"]].append(late)
        if late > 100:
            stalls.append((phase["name"], now - phase_start[0], late))
        last[0] = now

    timer = QTimer()
    timer.setInterval(20)
    timer.timeout.connect(tick)
    loop = QEventLoop()

    def set_phase(name: str) -> None:
        phase["name"] = name
        phase_start[0] = time.perf_counter()

    def toast() -> None:
        set_phase("toast")
        recorded_show_info("a napari notification, as the Train widget shows when training ends")
        QTimer.singleShot(2000, loop.quit)

    def start_training() -> None:
        set_phase("training")
        QTest.mouseClick(widget.start_button.native, Qt.MouseButton.LeftButton)
        QTimer.singleShot(int(a.train_seconds * 1000), stop_training)

    def stop_training() -> None:
        set_phase("stopping")
        widget.stop_button.native.click()
        wait_done()

    def wait_done() -> None:
        if widget.running:
            QTimer.singleShot(100, wait_done)
        else:
            toast()

    for _ in range(20):  # let the window draw before measuring
        QTest.qWait(50)
    last[0] = time.perf_counter()
    timer.start()
    QTimer.singleShot(int(a.idle_seconds * 1000), start_training)
    loop.exec()
    timer.stop()
    print(f"napari {napari.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"U-Net depth {a.depth} width {a.width}, patch {a.patch}, batch {a.batch}, "
          f"{a.patches_per_epoch} patches/epoch, "
          f"{len(keep)} real 256x256 DSB2018 images")
    print(f"training: {len(widget.plot.epochs)} epochs in {a.train_seconds:g} s, status: {widget.status.value}")
    gc.callbacks.remove(on_gc)
    for name in ("idle", "training", "stopping", "toast"):
        if lat[name]:
            print(summarize(name, lat[name]))
    for name, at, late in stalls:
        # a tick late by `late` ms at `at` s waited from (at - late) s: name what overlapped that wait
        why = [f"a full garbage collection of {ms:.0f} ms" for p, start, ms in collections
               if p == name and start <= at and start + ms / 1000 >= at - late / 1000]
        why += ["within 0.6 s of a napari toast"] * any(p == name and 0 <= at - t <= 0.6 for p, t in toasts)
        print(f"  stall during {name}: {late:.0f} ms at {at:.1f} s" + (f" ({'; '.join(why)})" if why else ""))
    print(f"full garbage collections (CPython's, of the whole process: {len(gc.get_objects()):,} objects tracked "
          "at the end): " + (", ".join(f"{ms:.0f} ms during {p} at {at:.1f} s" for p, at, ms in collections)
                             or "none"))
    if a.load:
        import os

        print(f"load average at the end (other processes share these CPUs): {os.getloadavg()[0]:.2f}")
    viewer.close()


if __name__ == "__main__":
    main()
