"""torchrun worker for the DDP test: ``python -m torch.distributed.run --standalone
--nproc_per_node 2 tests/_ddp_worker.py OUT``. Each rank dumps the dataset indices it trained
on and its final weights to OUT/rank{r}.pt."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
torch.set_num_threads(1)

from _tiny import make_method, tiny_data  # noqa: E402

from pointssl.engine import distributed as dist  # noqa: E402
from pointssl.engine.trainer import Trainer  # noqa: E402


def main(out: str) -> None:
    method = make_method(seed=int(os.environ["RANK"]))  # different init: DDP must sync it
    trainer = Trainer(method, tiny_data(n=26), Path(out) / "run", epochs=2, batch_size=8,
                      progress=False, log_every=1)
    metrics = trainer.fit()
    torch.save({"seen": method.seen, "state": method.state_dict(), "metrics": metrics,
                "world": dist.world_size()}, Path(out) / f"rank{dist.rank()}.pt")
    dist.cleanup()
    dist.finish(0)  # as the CLI ends a torchrun rank


if __name__ == "__main__":
    main(sys.argv[1])
