"""Training on several processes with PyTorch DDP, launched by `torchrun`.

`torchrun --nproc_per_node=N $(which vigil) train ...` starts N copies of `vigil train` with the
environment variables `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT`.
`session` reads them, joins the process group (`nccl` on CUDA, `gloo` on CPU) and says which
rank this process is; without them (a plain `vigil train`), or with `WORLD_SIZE=1`, it joins
nothing and the run is exactly the single-process one. There is no cluster layer here: the
launcher is torchrun, the gradient averaging is `torch.nn.parallel.DistributedDataParallel`.

What the trainer does with a `DistContext` (see `train.trainer.fit_records`):
  * every rank trains on its own shard of each epoch's balanced batches
    (`train.sampler.BalancedBatchSampler` with `rank`/`world_size`);
  * every rank validates a disjoint shard of the validation videos (`ShardSampler`, no
    padding), the predictions are gathered on rank 0 and the metrics computed there once,
    then sent to every rank;
  * only rank 0 writes `config.yaml`, `metrics.jsonl`, checkpoints and predictions, and logs
    the epoch lines.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the ranks of a run.

    Attributes:
        rank: this process's rank, 0 .. world_size - 1 (0 in a single-process run).
        world_size: number of training processes (1 in a single-process run).
        local_rank: rank on this machine (picks the GPU: `cuda:<local_rank>`).
        device: the device this rank trains on.
    """
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when several processes train together (a process group is joined)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes files and logs (rank 0)."""
        return self.rank == 0


def env_world_size() -> int:
    """`WORLD_SIZE` from the environment torchrun sets; 1 when it is absent."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def backend_for(device: torch.device) -> str:
    """The collective backend for `device`: `nccl` for CUDA, `gloo` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, local_rank: int, world_size: int) -> torch.device:
    """The device one rank trains on: with several ranks on CUDA, `cuda:<local_rank>` (an
    explicit index in `train.device` would put every rank on one GPU, so it is replaced)."""
    if device.type == "cuda" and world_size > 1:
        return torch.device("cuda", local_rank)
    return device


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[DistContext]:
    """Join torchrun's process group for the duration of a run, if there is one.

    Args:
        device: the device `train.device` resolved to (`detector.runtime.resolve_device`).
    Yields:
        The `DistContext`; single-process (rank 0 of 1, `device` unchanged) when `WORLD_SIZE`
        is unset or 1, in which case no process group is created.
    Raises:
        ValueError: `RANK` or `LOCAL_RANK` missing or not an integer while `WORLD_SIZE` > 1.
    The group is destroyed on exit unless it existed already (a caller that made it owns it).
    """
    world = env_world_size()
    if world <= 1:
        yield DistContext(device=device)
        return
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"WORLD_SIZE={world} but RANK/LOCAL_RANK are not set ({exc}): "
                         "launch with torchrun") from None
    device = rank_device(device, local_rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend_for(device), rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)
    log.info("rank %d of %d on %s (%s)", rank, world, device, dist.get_backend())
    try:
        yield ctx
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single-process run)."""
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` on every rank (picklable objects; `obj` is returned unchanged on one
    process)."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_object(obj: Any, ctx: DistContext) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0; None on the other ranks."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def interleave(shards: list[list[Any]]) -> list[Any]:
    """Undo `ShardSampler`: shard r holds items r, r + W, r + 2W, ...; back in index order.

    Example: interleave([[0, 2, 4], [1, 3]]) == [0, 1, 2, 3, 4].
    """
    out: list[Any] = []
    for k in range(max((len(s) for s in shards), default=0)):
        out.extend(s[k] for s in shards if k < len(s))
    return out


def average_stats(stats: dict[str, float], ctx: DistContext,
                  summed: tuple[str, ...] = ()) -> dict[str, float]:
    """One epoch's training statistics over all ranks: the mean of each value, except the
    keys in `summed` (counts), which are added up. Keys must be the same on every rank."""
    if not ctx.enabled:
        return stats
    keys = sorted(stats)
    values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
    if ctx.device.type == "cuda":
        values = values.to(ctx.device)
    dist.all_reduce(values)
    values = values.cpu()
    return {k: float(v) if k in summed else float(v) / ctx.world_size
            for k, v in zip(keys, values)}


def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts them before each training forward pass, so after the last step each rank
    holds the statistics of its own last batch; this makes validation and the checkpoint the
    same on every rank.
    """
    if not ctx.enabled:
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def state_digest(model: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-1 of every parameter and buffer of `model` (a module or its `state_dict`, e.g. a
    checkpoint's): names, dtypes, shapes and bytes. Equal digests mean equal weights."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    h = hashlib.sha1()
    for name, t in sorted(state.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a `DistributedDataParallel` wrapper (or `model` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class ShardSampler(Sampler[int]):
    """Indices r, r + W, r + 2W, ... of a dataset of `n` items: one rank's share of the
    validation set. The shards are disjoint and cover every index once (no padding, so
    shards may differ in length by one); `interleave` restores the order.

    Args:
        n: dataset length.
        rank: this rank.
        world_size: number of ranks.
    """

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.n, self.rank, self.world_size = int(n), int(rank), int(world_size)

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))
