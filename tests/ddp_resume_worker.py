"""Run under ``torchrun --nproc_per_node 2``: ``train`` on a folder dataset of landscape and portrait pictures
(aspect-ratio grouping on, so each process holds its own pending buckets), straight or stopped and resumed.

    ddp_resume_worker.py DATA_ROOT OUTPUT_DIR straight|stop|resume
"""

from __future__ import annotations

import sys
from pathlib import Path

import maskformer
from maskformer.engine.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SETS = [
    "train.max_iters=6", "train.batch_size=2", "train.checkpoint_period=3", "train.eval_period=-1",
    "train.log_period=1", "data.num_workers=0", "data.min_size_train=[48]", "data.crop_size=[40,40]",
    "data.aspect_ratio_grouping=true", "model.dropout=0.1", "test.min_size=48", "model.num_classes=3",
]  # fmt: skip


def main() -> None:
    root, out, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    cfg = maskformer.load_config(CONFIGS / "folder" / "small.yaml", [*SETS, f"data.root={root}"])
    train(cfg, output_dir=out, progress=False, stop_at=3 if how == "stop" else None, resume=how == "resume")


if __name__ == "__main__":
    main()
