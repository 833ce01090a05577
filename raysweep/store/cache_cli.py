"""`raysweep cache ls` and `raysweep cache verify`: what the synthetic store holds, and whether
every pool and generator still matches its checksums. Both work the same on a local store and
on S3. A damaged or hostile store never becomes a traceback: `ls` refuses in one line (exit 2),
`verify` lists every problem (exit 1).
"""

from __future__ import annotations

import json

from raysweep.errors import UserError
from raysweep.store.backends import UnsafePath
from raysweep.store.store import META, CorruptGenerator, CorruptPool, SyntheticStore

# What a damaged store raises when read: malformed JSON, a hostile path, a bad checksum.
STORE_ERRORS = (CorruptPool, CorruptGenerator, UnsafePath)

# Generator meta.json fields shown by `cache ls`, in this order.
GENERATOR_COLUMNS = ("generator", "dataset", "train_images", "seed", "fit_seconds")


def cache_ls(store: SyntheticStore, as_json: bool = False) -> str:
    """Pools (key fields from meta.json, image and shard counts) and trained generators.

    Args:
        store: the store to list.
        as_json: one JSON document with every meta.json in full, instead of a table.
    """
    try:
        pools = [_pool_entry(store, key) for key in store.pool_keys()]
        generators = [{"key": key, "meta": _shown_meta(store.generator_meta(key))}
                      for key in store.generator_keys()]
    except STORE_ERRORS as error:
        raise UserError(f"{error}; run `raysweep cache verify` to list every problem") from None
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
    """Read every shard of every pool and every generator file against its checksum; report
    problems, shards no manifest lists, and temp files left by interrupted writes; return the
    report and whether everything is good.

    Generators without a meta.json are incomplete leftovers of an interrupted save, which the
    next sweep trains again.
    """
    lines, damaged = [], 0
    try:
        pool_keys, stored = store.pool_keys(), store.backend.list("generators")
    except UnsafePath as error:
        return f"BAD  {error}", False
    for key in pool_keys:
        try:
            problems = store.verify(key)
            manifest = store.manifest(key)
            strays = store.stray_shards(key)
        except STORE_ERRORS as error:
            problems, strays = [str(error)], []
        if problems:
            damaged += 1
            lines += [f"BAD  {problem}" for problem in problems]
        else:
            lines.append(f"ok   pool {key}: {manifest['count']} images "
                         f"in {len(manifest['shards'])} shards")
        lines += [f"note pool {key}: {name} is listed in no manifest (an interrupted or running "
                  f"append); it is never read" for name in strays]
    complete = store.generator_keys()
    for key in complete:
        try:
            meta = store.generator_meta(key)
            store.generator_dir(key)
            lines.append(f"ok   generator {key}: {meta.get('generator', '?')}, "
                         f"{len(meta['files'])} files")
        except (*STORE_ERRORS, FileNotFoundError) as error:
            damaged += 1
            lines.append(f"BAD  {error}")
    for key in sorted({path.split("/")[1] for path in stored if "/" in path} - set(complete)):
        lines.append(f"note generator {key}: incomplete (no {META}); "
                     f"the next sweep trains it again")
    for leftover in store.backend.leftovers("pools") + store.backend.leftovers("generators"):
        lines.append(f"note {leftover}: a temp file left by an interrupted write; delete it")
    checked = f"checked {len(pool_keys)} pools and {len(complete)} generators in {store.root}"
    if damaged:
        lines.append(f"{checked}: {damaged} damaged; the next `raysweep run` that needs a damaged "
                     f"pool keeps its good prefix and regenerates the rest")
    else:
        lines.append(f"{checked}: all good")
    return "\n".join(lines), damaged == 0


def _pool_entry(store: SyntheticStore, key: str) -> dict:
    manifest = store.manifest(key)
    return {"key": key, "images": int(manifest["count"]), "shards": len(manifest["shards"]),
            "meta": store.pool_meta(key)}


def _shown_meta(meta: dict) -> dict:
    """A generator's meta.json without its per-file checksums (long; `cache verify` uses them)."""
    return {name: value for name, value in meta.items() if name != "files"}


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
