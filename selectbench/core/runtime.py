"""Process set-up shared by the stages: thread limits, seeds and derived random streams, device,
torch.distributed, DVCLive loggers, and the one-line error wrapper of every stage's main."""
from __future__ import annotations

import functools
import gc
import hashlib
import os
import random
import sys
from typing import Any, Callable

import numpy as np

from selectbench.core.errors import UserError
from selectbench.core.io import write_json
from selectbench.core.layout import cost
from selectbench.core.layout import live as live_dir


def stage_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a stage's main(argv) so user mistakes exit 2 with one line on stderr."""

    @functools.wraps(fn)
    def wrapper(argv=None):
        limit_threads(int(os.environ.get("SELECT_THREADS", "1")))
        try:
            return fn(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except FileNotFoundError as e:
            # An input an upstream stage should have written: say which, not a traceback.
            print(f"error: missing input {e.filename} (run `dvc repro` to build upstream stages)", file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            if fn.__module__ == "__main__":
                # The process ends here: spare it the exit-time collections over the ~10^6 objects torch
                # and timm create (1.0-1.2 s per stage, measured); everything it writes is closed by now.
                gc.freeze()

    return wrapper


def all_threads() -> int:
    """Threads for a stage with no worker processes: 2, or SELECT_THREADS (the tests set 1, as they
    run two processes at once), never more than the cores. A constant, not the core count: float
    reductions differ with the thread count, so outputs would otherwise hash differently on a
    bigger machine of the same CPU type."""
    return max(1, min(int(os.environ.get("SELECT_THREADS") or 2), os.cpu_count() or 1))


def limit_threads(n: int) -> None:
    """Cap BLAS/OpenMP/torch intra-op threads. On 2 cores, spin-waiting pools oversubscribed by
    a data worker or a second process made stages 10x slower (evaluate: 197 s -> 15 s measured);
    stages that can use more (train) raise it themselves."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass


def seed_everything(seed: int) -> np.random.Generator:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def compute_device(local_rank: int = 0):
    """cuda:<local_rank> where a GPU is visible, else cpu (`CUDA_VISIBLE_DEVICES=` forces cpu).
    The embedded profile's committed hashes come from cpu runs."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def record_pretrained(stage: str, **info) -> None:
    """The live log and cost record a training stage declares as outputs, for a run that loads
    pretrained weights instead of training (full profile)."""
    write_json(live_dir(stage) / "metrics.json", {"pretrained": True})
    write_json(cost(stage), {"wall_s": 0.0, "pretrained": True, **info})


def flush_denormal() -> None:
    """Flush subnormal floats to zero: images with black backgrounds drive conv gradients into
    subnormals, which made CPU training 6-8x slower (0.82 s vs 0.14 s per step, measured)."""
    import torch

    torch.set_flush_denormal(True)


def derive_seed(seed: int, tag: str, index: int) -> int:
    """A 63-bit seed for (seed, tag, index): independent streams that need no saved state."""
    words = [int(seed), int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "little"), int(index)]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


def replicate_seed(seed: int, rep: str) -> int:
    """The seed of replicate `rep` (a name from `replicates:`), derived from a section's seed. It
    depends on the name, not the position, so adding a replicate leaves the others unchanged; 31
    bits because the trainer multiplies it into torch seeds, which must fit 64 bits."""
    return derive_seed(seed, f"replicate:{rep}", 0) % 2**31


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    # One independent stream per simulated process, so changing e.g. clipart.max leaves the
    # Fashion-MNIST captions and perturbations unchanged.
    tag = int.from_bytes(hashlib.sha256(stream.encode()).digest()[:4], "little")
    return np.random.default_rng([seed, tag])


def init_distributed() -> tuple[int, int]:
    """(rank, world) under torchrun (gloo on CPU, NCCL on GPU), else (0, 1)."""
    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ:
        return 0, 1
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":  # each rank on its own GPU before NCCL starts (torchrun sets LOCAL_RANK)
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    dist.init_process_group(backend)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.get_world_size()))
    return dist.get_rank(), dist.get_world_size()


def run_distributed(nproc: int, module: str, argv: list[str], nnodes: int = 1) -> None:
    """Re-run ``python -m module argv`` as ``nproc`` ranks per node under torchrun, unless this
    process already is a rank (torchrun set RANK) or one process is asked for: then it returns and
    the caller goes on as rank (0, 1) or its own rank. ``nnodes`` > 1 joins a c10d rendezvous at
    $MASTER_ADDR:$MASTER_PORT, where the other nodes run the same command (README "Several
    machines"). A failed rank fails the stage with one line; a stage that resumes (generation,
    training) keeps what its ranks finished for the rerun."""
    if "RANK" in os.environ or (nproc <= 1 and nnodes <= 1):
        return
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes > 1:
        if "MASTER_ADDR" not in os.environ:
            raise UserError(f"{nnodes} nodes need MASTER_ADDR (and MASTER_PORT) of the rendezvous host")
        endpoint = f"{os.environ['MASTER_ADDR']}:{os.environ.get('MASTER_PORT', '29500')}"
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                f"--rdzv-id={os.environ.get('SLURM_JOB_ID', module)}"]
    else:
        cmd += ["--standalone"]
    rc = subprocess.call([*cmd, "-m", module, *argv])
    if rc != 0:
        raise UserError(f"{module}: a rank failed under torchrun (exit {rc}; the rank's own error is above); "
                        "no output was written")
    raise SystemExit(0)


def start_ranks(nproc: int, module: str, argv: list[str], nnodes: int = 1):
    """The communicator (selectbench.core.comm) of a stage that splits its work over nproc ranks per
    node: relaunches under torchrun when asked (run_distributed), joins the group, and gives every
    rank the threads one process uses (all_threads), not cores // world: float results can depend on
    the thread count (evaluate@in-r1's transfer items differ between 1 and 2 threads, measured)."""
    from selectbench.core.comm import LOCAL, Dist

    run_distributed(nproc, module, argv, nnodes)
    _, world = init_distributed()
    limit_threads(all_threads())
    return Dist() if world > 1 else LOCAL


def live(record: str):
    """The DVCLive logger of a training stage. Its metrics and plots are declared in dvc.yaml, so it
    writes no dvc.yaml, experiment or HTML report of its own."""
    from dvclive import Live

    return Live(str(live_dir(record)), dvcyaml=False, save_dvc_exp=False, report=None)


def finish_distributed(world: int) -> None:
    """Every rank waits for the others, then leaves the process group (no-op for one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
