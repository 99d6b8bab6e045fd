"""``maskformer models``: the pretrained models that have a name (the original model zoo and transformers Hub ids)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the pretrained models by name (original model zoo, transformers Hub ids)",
        description="Every name here works wherever a MODEL is asked for (predict, eval, serve, export, convert to-hf,"
        " benchmark, maskformer.from_pretrained). The first use downloads and converts; `cached` says which are done"
        " (MASKFORMER_CACHE, default ~/.cache/maskformer; `mirror`: converted from a MASKFORMER_ZOO_URL mirror's own"
        " file, not the released one; `damaged`: a copy no command can read: delete it). Metrics are the original model"
        " zoo's own.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from maskformer.zoo import cached_model_path, damaged_copy, mirror_note_path, zoo_table, zoo_url

    rows = []
    for entry in zoo_table().values():
        there = cached_model_path(entry.name).is_file()
        damaged = there and damaged_copy(cached_model_path(entry.name))  # (every command refuses it: not "yes")
        rows.append({
            "name": entry.name, "task": entry.task, "dataset": entry.dataset, "backbone": entry.backbone,
            "metric": entry.metric, "reported": entry.reported, "source": "hub" if entry.hub else zoo_url(entry),
            "cached": there and not damaged, "cached_damaged": damaged,
            # (converted from a mirror's own file, not the released one: the reported score is not its own)
            "cached_from_mirror": there and not damaged and mirror_note_path(entry.name).is_file(),
        })  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        r["shown"] = f"{r['reported']:.1f} {r['metric']}" if r["reported"] is not None else "(Hub)"
    # each column as wide as its longest entry (a fixed width cut "ade20k-150-panoptic" short of its column)
    w = {
        k: max(len(head), *(len(str(r[k])) for r in rows))
        for k, head in (
            ("name", "name"),
            ("task", "task"),
            ("dataset", "dataset"),
            ("backbone", "backbone"),
            ("shown", "reported"),
        )
    }
    print(f"{'name':<{w['name']}}  {'task':<{w['task']}}  {'dataset':<{w['dataset']}}  {'backbone':<{w['backbone']}}  "
          f"{'reported':>{w['shown']}}  cached")  # fmt: skip
    for r in rows:
        cached = "mirror" if r["cached_from_mirror"] else "yes" if r["cached"] else "-"
        cached = "damaged" if r["cached_damaged"] else cached
        print(
            f"{r['name']:<{w['name']}}  {r['task']:<{w['task']}}  {r['dataset']:<{w['dataset']}}  "
            f"{r['backbone']:<{w['backbone']}}  {r['shown']:>{w['shown']}}  {cached}"
        )
    return 0
