"""The training cards: the live card at each report, and the card that replaces it when the job ends."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from modelbay.bot.progress import advance
from modelbay.bot.reply import Attachment, Reply
from modelbay.bot.commands.train import live_card, result_card
from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.records import JobRecord
from modelbay.engine.training.progress import TrainingDetail
from modelbay.engine.training.templates import resolve
from modelbay.engine.training.training import TrainingStatus

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def _status(status: str = "queued", *, detail: TrainingDetail | None = None, result: dict | None = None,
            steps: tuple[dict, ...] = (), error: str | None = None) -> TrainingStatus:
    detail = detail or TrainingDetail()
    job = JobRecord(id="j1", kind="train", queue="gpu", status=status, progress=0.0, progress_detail=detail,
                    requester="console:ann", params={"name": "tiny-colors", "base": "tiny-chat", "dataset": "3",
                                                     "dataset_name": "colors"},
                    result=result, error=error, attempts=1, created_at=NOW, started_at=NOW,
                    ended_at=None if status in ("queued", "started") else NOW)
    return TrainingStatus(job=job, detail=detail, config=resolve(None, {"parameters": {"max_steps": 12}}),
                          name="tiny-colors", base="tiny-chat", dataset="colors", run="j1", steps=steps, chart=None,
                          result=result)


def _event(status: str, **detail: object) -> ProgressEvent:
    message = "step 6/12 · loss 1.0882"
    return ProgressEvent("j1", status, 0.5, message, TrainingDetail(**detail))  # type: ignore[arg-type]


def _fields(reply: Reply) -> dict[str, str]:
    return {f.name: f.value for f in reply.fields}


def test_the_live_card_draws_each_report_below_what_it_started_with() -> None:
    card = live_card(_status(), intro="29 training rows, 3 held out; 12 steps.")
    assert card.title == "Fine-tuning tiny-chat → tiny-colors" and "Waiting for a gpu worker…" in card.text
    assert list(_fields(card)) == ["Base", "Dataset", "New model", "Settings"]
    assert "lr 0.0002" in _fields(card)["Settings"] and "12 steps" in _fields(card)["Settings"]
    assert [b.command for b in card.buttons] == ["/jobs cancel j1"]

    loading = advance(card, _event("started", phase="loading"))
    assert loading.text == "29 training rows, 3 held out; 12 steps.\nLoading the base model…"

    step = _event("started", phase="training", step=6, total_steps=12, epoch=1.5, loss=1.0882, eval_loss=1.7755,
                  eval_loss_before=3.1908, learning_rate=1.42e-3, tokens_per_s=3344.2, eta=95.0,
                  peak_memory_bytes=709_000_000, recent_losses=(3.5, 3.0, 2.0, 1.0882))
    moving = advance(card, step)
    assert moving.text.splitlines() == ["29 training rows, 3 held out; 12 steps.",
                                        "Loss `█▇▄▁` 3.500 → 1.088 over the last 4 steps"]
    assert _fields(moving) == {**_fields(card), "Step": "6/12 · epoch 1.50", "Loss": "1.0882",
                               "Held-out loss": "1.7755 (base 3.1908)", "Learning rate": "1.42e-03",
                               "Tokens/s": "3,344", "Time left": "2 min", "Peak memory": "709 MB"}
    assert moving.progress is not None and moving.progress.detail == "step 6/12 · loss 1.0882 · 2 min left"
    assert _fields(advance(moving, step)) == _fields(moving)  # each report is drawn afresh, never added up

    ended = advance(moving, ProgressEvent("j1", "finished", 1.0, "Done", TrainingDetail(phase="saving")))
    assert _fields(ended) == _fields(card) and [b.command for b in ended.buttons] == ["/chat tiny-colors"]


def test_the_result_card_shows_the_losses_the_answers_side_by_side_the_chart_and_try_it() -> None:
    answers = [{"prompt": f"What is the secret color of the {thing}?", "reference": "It is blue.",
                "base": "The  banana\nis red.", "tuned": "It is blue."} for thing in ("fish", "car", "cup", "coin")]
    result = {"eval_loss_before": 3.1908, "eval_loss_after": 0.7951, "perplexity_before": 24.31,
              "perplexity_after": 2.21, "step": 12, "total_steps": 12, "tokens": 2700, "runtime_s": 130.0,
              "peak_memory_bytes": 709_000_000, "device": "cpu", "precision": "fp32", "processes": 1,
              "answers": answers, "model": "tiny-colors", "version_id": 2, "train_rows": 29, "validation_rows": 3,
              "resumed_from": 5}
    steps = tuple({"step": i, "loss": 3.5 - i * 0.25} for i in range(1, 13))
    chart = Attachment("train-j1-loss.png", b"\x89PNG", "image/png")
    card = result_card(_status("finished", result=result, steps=steps), chart)
    assert card.title == "Fine-tuned tiny-colors" and card.tone == "success" and card.attachments == [chart]
    assert "Held-out loss 3.1908 → 0.7951 (-75%), perplexity 24.31 → 2.21." in card.text
    assert "over 12 steps" in card.text
    assert card.table is not None and card.table.columns == ["Prompt", "Base", "Tuned"]
    assert card.table.rows[0] == ["What is the secret color of the fish?", "The banana is red.", "It is blue."]
    assert len(card.table.rows) == 3
    fields = _fields(card)
    assert fields["Steps"] == "12 (resumed at 5)" and fields["Time"] == "2 min" and fields["Ran on"] == "cpu · fp32"
    assert [(b.label, b.command) for b in card.buttons] == [("Try it", "/chat tiny-colors"),
                                                            ("Model info", "/models info tiny-colors")]


def test_a_canceled_job_says_where_it_stopped_and_offers_resume(tmp_path: Path) -> None:
    steps = tuple({"step": i, "loss": 2.0} for i in range(1, 8))
    card = result_card(_status("canceled", detail=TrainingDetail(step=5, total_steps=40, loss=2.0), steps=steps))
    assert card.title == "Fine-tuning tiny-colors: canceled" and card.tone == "warning"
    assert card.text.startswith("Stopped at step 7/40; a checkpoint was saved")
    assert [b.command for b in card.buttons] == ["/train resume j1"]

    failed = result_card(_status("failed", error="The worker stopped while running this job."))
    assert failed.tone == "error" and failed.text.startswith("The worker stopped while running this job.")
    assert [b.command for b in failed.buttons] == ["/train resume j1"]
