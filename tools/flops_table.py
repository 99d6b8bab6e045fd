"""Parameters and FLOPs of the paper's ADE20K-150 models, as a markdown table for the README.

.venv/bin/python tools/flops_table.py            # prints the table (takes a few minutes: Swin-L at 640x640)
"""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import maskformer
from maskformer.engine.analysis import count_flops, count_parameters

ROOT = Path(__file__).resolve().parents[1]
ROWS = [  # config, paper Table 1 GFLOPs
    ("ade20k-150/maskformer_R50_bs16_160k.yaml", 53),
    ("ade20k-150/maskformer_R101_bs16_160k.yaml", 73),
    ("ade20k-150/maskformer_R101c_bs16_160k.yaml", 80),
    ("ade20k-150/swin/maskformer_swin_tiny_bs16_160k.yaml", 55),
    ("ade20k-150/swin/maskformer_swin_small_bs16_160k.yaml", 79),
    ("ade20k-150/swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml", 195),
    ("ade20k-150/swin/maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml", 375),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="substring filter on the config path")
    args = parser.parse_args()
    print("| config | size | params | FLOPs, original graph | lean graph | paper Table 1 |")
    print("|---|---|---:|---:|---:|---:|")
    for rel, paper in ROWS:
        if args.only and args.only not in rel:
            continue
        cfg = maskformer.load_config(ROOT / "configs" / rel)
        model = maskformer.build_model(cfg).eval()
        h, w = cfg.data.crop_size
        full, _ = count_flops(model, height=h, width=w)
        lean, _ = count_flops(model, height=h, width=w, lean=True)
        params = count_parameters(model)["total"]
        print(f"| `{rel}` | {h}² | {params:,} | {full / 1e9:.1f} G | {lean / 1e9:.1f} G | {paper} G |", flush=True)
    stamp = f"{datetime.date.today()}, {platform.machine()}, maskformer {maskformer.__version__}"
    print(f"\n`.venv/bin/python tools/flops_table.py`, {stamp}")


if __name__ == "__main__":
    main()
