"""Multi-process training: the same run in N processes through torchrun (DDP; NCCL on GPUs, gloo on the CPU).

The job (`run.py`) starts `python -m torch.distributed.run --standalone --nproc_per_node=N -m
modelbay.engine.training.distributed <run folder>` in its own process group and forwards what rank 0 reports. Each
rank runs `trainer.train` on the run folder with a `RankChannel`: rank 0 appends its reports to `events.jsonl`,
and every rank stops when the job's `cancel` file appears (the flag is all-reduced in the trainer's callback, so all
ranks stop at the same step). The launcher dies with the job (PR_SET_PDEATHSIG) and each rank with the launcher, so
a killed work horse leaves no training process behind; its retry resumes from the last checkpoint.

Multi-node runs (`MODELBAY_TRAIN_NODES` above 1) use the same entry point with torchrun's c10d rendezvous instead of
`--standalone`: `--nnodes`, `--rdzv-endpoint` (`MODELBAY_TRAIN_RDZV_ENDPOINT`) and `--rdzv-id` the run's name (the
first job's id), so every node's launcher of one run meets the others and no other run; `--node-rank` when
`MODELBAY_TRAIN_NODE_RANK` fixes it. The job starts this machine's launcher; each other node runs the same command
(the worker log prints it), and the run folder must be on storage every node sees (a shared `MODELBAY_HOME`).

The strategy (`memory.strategy_for`, kept in run.json) is DDP, or FSDP when the model must be sharded across the
GPUs; the ranks read it from run.json, so every rank, a retry and a resume train the same way.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelbay.engine.training.files import RunFiles
from modelbay.engine.training.progress import TrainingDetail

__all__ = ["RankChannel", "die_with_parent", "main", "rank_environment", "read_events", "torchrun_command"]

_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
PR_SET_PDEATHSIG = 1
# What a rank inherits from the job: what it needs to run, never ModelBay's own settings and secrets.
_ENV_NAMES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "PYTHONPATH",
                        "VIRTUAL_ENV", "XDG_CACHE_HOME", "TOKENIZERS_PARALLELISM"})
_ENV_PREFIXES = ("LC_", "HF_", "CUDA_", "NVIDIA_", "NCCL_", "TORCH_", "GLOO_", "OMP_", "MKL_")
_ENV_SECRETS = frozenset({"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"})


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux; elsewhere nothing).

    Safe between fork and exec (only a libc call), and at the start of a rank.
    """
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, sig)


def torchrun_command(files: RunFiles, processes: int, python: str | None = None, *, nodes: int = 1,
                     rdzv_endpoint: str | None = None, node_rank: int | None = None) -> list[str]:
    """The command line that runs this run in `processes` processes on this machine: alone (`--standalone`), or as
    one of `nodes` machines meeting at `rdzv_endpoint` (host:port) in a rendezvous named after the run.

    Raises:
        ValueError: several nodes and no rendezvous endpoint.
    """
    if nodes > 1:
        if not rdzv_endpoint:
            raise ValueError(f"a run on {nodes} nodes needs a rendezvous endpoint (MODELBAY_TRAIN_RDZV_ENDPOINT)")
        where = [f"--nnodes={nodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                 f"--rdzv-id={files.root.name}", "--max-restarts=0"]
        if node_rank is not None:
            where.append(f"--node-rank={node_rank}")
    else:
        where = ["--standalone"]
    return [python or sys.executable, "-m", "torch.distributed.run", *where, f"--nproc_per_node={processes}",
            "-m", "modelbay.engine.training.distributed", str(files.root)]


def rank_environment(worker_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a launch: the allowed part of the worker's, offline, one thread per process unless set."""
    env = {k: v for k, v in worker_env.items()
           if (k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)) and k not in _ENV_SECRETS}
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default for several processes, said out loud
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    return env


class RankChannel:
    """A rank's channel: rank 0 appends reports to events.jsonl; every rank stops once the cancel file exists."""

    def __init__(self, files: RunFiles, rank: int) -> None:
        self.files = files
        self.rank = rank

    def report(self, fraction: float, message: str, detail: TrainingDetail, *, force: bool = False) -> None:
        """Append one report (rank 0 only) as a JSON line the job forwards."""
        if self.rank != 0:
            return
        line = json.dumps({"fraction": fraction, "message": message, "detail": detail.to_dict(), "force": force})
        with self.files.events.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def stop_requested(self) -> bool:
        """Whether the job wrote its cancel file."""
        return self.files.cancel.exists()


def main(argv: list[str] | None = None) -> int:
    """A rank's entry point: train the run folder named on the command line."""
    from modelbay.engine.training.trainer import train

    die_with_parent()  # the launcher died (its job was killed): so does this rank
    args = sys.argv[1:] if argv is None else argv
    files = RunFiles(Path(args[0]))
    channel = RankChannel(files, int(os.environ.get("RANK", "0")))
    try:
        train(files, channel)
    finally:
        import torch.distributed as dist  # extra: ml

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


def read_events(files: RunFiles, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete event lines written since byte `offset`, and the offset after the last of them."""
    if not files.events.exists():
        return [], offset
    with files.events.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    events = []
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events, offset + end


if __name__ == "__main__":
    sys.exit(main())
