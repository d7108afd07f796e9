"""engine/training/files.py and the pure parts around it: checkpoints a resume trusts, the steps log, rank 0's
events, the progress detail and its sparkline, step counts and process counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelbay.engine.jobs.progress import ProgressEvent
from modelbay.engine.training.distributed import rank_environment, read_events, torchrun_command
from modelbay.engine.training.files import RunFiles, last_checkpoint, read_jsonl, trim_steps, write_jsonl
from modelbay.engine.training.progress import TrainingDetail, sparkline
from modelbay.engine.training.run import processes_for
from modelbay.engine.training.templates import resolve
from modelbay.engine.training.training import total_steps


def _checkpoint(root: Path, step: int, state: str | None) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    return folder


def test_a_resume_trusts_the_newest_checkpoint_whose_state_parses(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path / "none") is None
    good = _checkpoint(tmp_path, 10, json.dumps({"global_step": 10}))
    _checkpoint(tmp_path, 15, '{"global_step": 1')  # cut by a kill while saving
    _checkpoint(tmp_path, 20, None)  # killed before the state was written
    _checkpoint(tmp_path, 25, json.dumps({"global_step": 5}))  # not the step its name says
    (tmp_path / "checkpoint-30").write_text("a file, not a folder")
    assert last_checkpoint(tmp_path) == good
    assert RunFiles(tmp_path.parent).checkpoints.name == "checkpoints"


def test_checkpoints_are_ordered_by_step_not_by_name(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 9, json.dumps({"global_step": 9}))
    newest = _checkpoint(tmp_path, 100, json.dumps({"global_step": 100}))
    assert last_checkpoint(tmp_path) == newest


def test_a_resume_cuts_the_steps_it_repeats_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "steps.jsonl"
    write_jsonl(log, [{"step": s, "loss": 1.0 / s} for s in range(1, 9)])
    with log.open("a") as handle:
        handle.write('{"step": 9, "lo')  # a kill mid-write
    assert [r["step"] for r in read_jsonl(log)] == list(range(1, 9))
    trim_steps(log, 5)
    assert [r["step"] for r in read_jsonl(log)] == [1, 2, 3, 4, 5]


def test_events_are_read_whole_lines_only_and_resume_at_the_offset(tmp_path: Path) -> None:
    files = RunFiles(tmp_path)
    files.events.write_text('{"fraction": 0.1}\n{"fraction": 0.2}\n{"fract')
    events, offset = read_events(files, 0)
    assert [e["fraction"] for e in events] == [0.1, 0.2]
    with files.events.open("a") as handle:
        handle.write('ion": 0.3}\n')
    more, end = read_events(files, offset)
    assert [e["fraction"] for e in more] == [0.3] and end == files.events.stat().st_size
    assert read_events(RunFiles(tmp_path / "none"), 0) == ([], 0)


def test_a_training_detail_crosses_the_channel_and_a_stored_row_unchanged() -> None:
    detail = TrainingDetail(phase="training", step=12, total_steps=40, epoch=1.5, loss=0.42, eval_loss=0.5,
                            learning_rate=1e-4, tokens=3000, tokens_per_s=812.5, eta=30.0,
                            peak_memory_bytes=2**30, recent_losses=[0.9, 0.6, 0.42], processes=2)
    event = ProgressEvent.from_json(ProgressEvent("j", "started", 0.3, "step 12/40", detail).to_json())
    again = TrainingDetail.of(event.detail)
    assert again == detail and again.step == 12 and again.recent_losses == [0.9, 0.6, 0.42]
    assert TrainingDetail.of({"step": 3, "from_a_newer_version": 1}).extra == {"from_a_newer_version": 1}


def test_the_sparkline_spans_its_own_range() -> None:
    assert sparkline([]) == ""
    assert sparkline([3.0, 2.0, 1.0, 0.5]) == "█▅▂▁"
    assert sparkline([1.0, 1.0]) == "▁▁"
    assert sparkline(range(100), width=5) == "▁▃▅▇█"  # 95..99 only


def test_total_steps_count_whole_batches_per_epoch_as_transformers_does() -> None:
    config = resolve(None, {"parameters": {"epochs": 3, "batch_size": 8}})
    assert total_steps(32, config) == 12
    assert total_steps(33, config) == 15  # a last, short batch is a step
    assert total_steps(32, config, processes=2) == 6
    assert total_steps(32, resolve(None, {"parameters": {"batch_size": 8, "gradient_accumulation": 2}})) == 6
    assert total_steps(32, resolve(None, {"parameters": {"epochs": 0.5, "batch_size": 8}})) == 2
    assert total_steps(10**6, resolve(None, {"parameters": {"max_steps": 7}})) == 7


@pytest.mark.parametrize(("overrides", "setting", "gpus", "expected"), [
    ({}, None, 0, 1),
    ({}, None, 4, 4),
    ({}, 2, 0, 2),
    ({"hardware": {"processes": 3}}, 2, 8, 3),
    ({"hardware": {"device": "cpu"}}, None, 8, 1),
])
def test_processes_come_from_the_config_then_the_setting_then_the_gpus(overrides: dict, setting: int | None,
                                                                        gpus: int, expected: int) -> None:
    assert processes_for(resolve(None, overrides), setting, gpus) == expected


def test_a_launch_runs_the_rank_entry_point_with_no_modelbay_secrets(tmp_path: Path) -> None:
    command = torchrun_command(RunFiles(tmp_path), 2, python="/py")
    assert command == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                       "modelbay.engine.training.distributed", str(tmp_path)]
    env = rank_environment({"PATH": "/bin", "MODELBAY_DATABASE_URL": "postgresql://secret", "HF_TOKEN": "hf_x",
                            "HF_HOME": "/hf", "CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "4"})
    assert env["PATH"] == "/bin" and env["HF_HOME"] == "/hf" and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "MODELBAY_DATABASE_URL" not in env and "HF_TOKEN" not in env
    assert env["OMP_NUM_THREADS"] == "4" and env["HF_HUB_OFFLINE"] == "1"
    assert rank_environment({})["OMP_NUM_THREADS"] == "1"


def test_a_loss_chart_of_one_step_shows_a_marker_on_whole_steps() -> None:
    from modelbay.engine.training.files import loss_figure

    axes = loss_figure([{"step": 5, "loss": 2.5}], "one step").axes[0]
    (train,) = axes.lines
    assert train.get_marker() == "." and axes.get_xlim() == (4, 6)
    assert all(float(t).is_integer() for t in axes.get_xticks())
    assert loss_figure([{"step": 1}], "no loss") is None
