"""``maskformer models``: the pretrained models that have a name (the original model zoo and transformers Hub ids)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the pretrained models by name (original model zoo, transformers Hub ids)",
        description="Every name here works wherever a MODEL is asked for (predict, eval, serve, export, convert to-hf,"
        " benchmark, maskformer.from_pretrained). The first use downloads and converts; `cached` says which are done"
        " (MASKFORMER_CACHE, default ~/.cache/maskformer). Metrics are the original model zoo's own.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from maskformer.zoo import cached_model_path, zoo_table, zoo_url

    rows = []
    for entry in zoo_table().values():
        rows.append({
            "name": entry.name, "task": entry.task, "dataset": entry.dataset, "backbone": entry.backbone,
            "metric": entry.metric, "reported": entry.reported, "source": "hub" if entry.hub else zoo_url(entry),
            "cached": cached_model_path(entry.name).is_file(),
        })  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'task':<8}  {'dataset':<18}  {'backbone':<12}  {'reported':>9}  cached")
    for r in rows:
        metric = f"{r['reported']:.1f} {r['metric']}" if r["reported"] is not None else "(Hub)"
        print(f"{r['name']:<{width}}  {r['task']:<8}  {r['dataset']:<18}  {r['backbone']:<12}  {metric:>9}  "
              f"{'yes' if r['cached'] else '-'}")  # fmt: skip
    return 0
