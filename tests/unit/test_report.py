"""The run report's pictures and event files: training.png and TensorBoard scalars."""

from __future__ import annotations

import glob

from tinyllm_ray.jobs.report import plot_training, render_markdown

HISTORY = [
    {"event": "report", "step": s, "loss": 2.0 / s, "loss_answer": 1.0 / s, "loss_rationale_llama": 1.5 / s,
     **({"val_accuracy": 0.1 * s} if s % 2 == 0 else {})}
    for s in range(1, 7)
]


def test_plot_training_writes_a_png(tmp_path):
    out = plot_training(HISTORY, str(tmp_path / "training.png"))
    assert out is not None
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert plot_training([], str(tmp_path / "none.png")) is None
    assert plot_training(HISTORY, "s3://bucket/training.png") is None


def test_report_links_the_plot_and_tensorboard():
    report = {"run": "r", "student": "s", "store_uri": "u", "teachers": {}, "evaluation": {}, "seconds": {},
              "training": {"best_step": 6, "total_steps": 6, "best_val_accuracy": 0.6, "task_losses": {},
                           "plot": "/runs/r/training.png", "tensorboard": "/runs/r/train/tensorboard"}}
    md = render_markdown(report)
    assert "![per-task losses and validation accuracy](training.png)" in md
    assert "`tensorboard --logdir /runs/r/train/tensorboard`" in md


def test_metrics_callback_writes_tensorboard_events(tmp_path):
    from tinyllm_ray.student.trainer import METRICS_FILE, TENSORBOARD_DIR, MetricsLogCallback

    cb = MetricsLogCallback(str(tmp_path / METRICS_FILE))
    for rec in HISTORY:
        cb.after_report(None, [{k: v for k, v in rec.items() if k != "event"}], None)
    files = glob.glob(str(tmp_path / TENSORBOARD_DIR / "events.out.tfevents.*"))
    assert len(files) == 1
    tags: dict[str, list[int]] = {}
    for event in _events(files[0]):
        for v in event.summary.value:
            tags.setdefault(v.tag, []).append(event.step)
    assert tags["loss_answer"] == [1, 2, 3, 4, 5, 6]
    assert tags["val_accuracy"] == [2, 4, 6]
    assert (tmp_path / METRICS_FILE).read_text().count('"event": "report"') == 6


def _events(path: str):
    """The records of a TFRecord event file (u64 length, u32 crc, payload, u32 crc)."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        event = Event()
        event.ParseFromString(data[i + 12:i + 12 + n])
        yield event
        i += 12 + n + 4
