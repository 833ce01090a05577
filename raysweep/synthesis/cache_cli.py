"""`raysweep cache ls` and `raysweep cache verify`: what the synthetic store holds, and whether
every pool still matches its checksums. Both work the same on a local store and on S3.
"""

from __future__ import annotations

import json

from raysweep.synthesis.store import META, SyntheticStore

# Generator meta.json fields shown by `cache ls`, in this order.
GENERATOR_COLUMNS = ("generator", "dataset", "train_images", "seed", "fit_seconds")


def cache_ls(store: SyntheticStore, as_json: bool = False) -> str:
    """Pools (key fields from meta.json, image and shard counts) and trained generators.

    Args:
        store: the store to list.
        as_json: one JSON document with every meta.json in full, instead of a table.
    """
    pools = [_pool_entry(store, key) for key in store.pool_keys()]
    generators = [{"key": key, "meta": store.generator_meta(key)} for key in store.generator_keys()]
    if as_json:
        return json.dumps({"store": str(store.root), "pools": pools, "generators": generators},
                          indent=2, default=str)
    lines = [f"store {store.root}", f"pools ({len(pools)}):"]
    lines += _table(["KEY", "IMAGES", "SHARDS", "FIELDS"],
                    [[p["key"], p["images"], p["shards"], _summary(p["meta"])] for p in pools])
    lines.append(f"generators ({len(generators)}):")
    lines += _table(["KEY", *(c.upper() for c in GENERATOR_COLUMNS)],
                    [[g["key"], *(_cell(g["meta"].get(c, "")) for c in GENERATOR_COLUMNS)]
                     for g in generators])
    return "\n".join(lines)


def cache_verify(store: SyntheticStore) -> tuple[str, bool]:
    """Read every shard of every pool against its checksum; report, and whether all are good.

    Generators have no checksums: they are listed as complete (meta.json present) or as
    incomplete leftovers of an interrupted save, which the next sweep trains again.
    """
    lines, damaged = [], 0
    pool_keys = store.pool_keys()
    for key in pool_keys:
        try:
            problems = store.verify(key)
            manifest = store.manifest(key)
        except ValueError as error:  # an unreadable manifest.json
            problems = [f"pool {key}: manifest.json is unreadable ({error})"]
        if problems:
            damaged += 1
            lines += [f"BAD  {problem}" for problem in problems]
        else:
            lines.append(f"ok   pool {key}: {manifest['count']} images "
                         f"in {len(manifest['shards'])} shards")
    complete = store.generator_keys()
    for key in complete:
        lines.append(f"ok   generator {key}: {store.generator_meta(key).get('generator', '?')}")
    stored = {path.split("/")[1] for path in store.backend.list("generators") if "/" in path}
    for key in sorted(stored - set(complete)):
        lines.append(f"note generator {key}: incomplete (no {META}); "
                     f"the next sweep trains it again")
    checked = f"checked {len(pool_keys)} pools and {len(complete)} generators in {store.root}"
    if damaged:
        lines.append(f"{checked}: {damaged} damaged pools; the next `raysweep run` that needs them "
                     f"keeps the good prefix and regenerates the rest")
    else:
        lines.append(f"{checked}: all good")
    return "\n".join(lines), damaged == 0


def _pool_entry(store: SyntheticStore, key: str) -> dict:
    manifest = store.manifest(key)
    return {"key": key, "images": int(manifest["count"]), "shards": len(manifest["shards"]),
            "meta": store.pool_meta(key)}


def _summary(meta: dict) -> str:
    """The short scalar fields of a pool's meta.json (long hashes left to `--json`)."""
    return " ".join(f"{name}={value}" for name, value in meta.items()
                    if isinstance(value, (str, int, float, bool)) and len(str(value)) <= 24
                    and " " not in str(value))


def _cell(value) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    if not rows:
        return ["  (none)"]
    cells = [header, *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
