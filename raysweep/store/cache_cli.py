"""`raysweep cache ls`, `cache verify` and `cache gc`: what the synthetic store holds, whether
all of it still matches its checksums, and removing what nothing references. All three work
the same on a local store and on S3. A damaged or hostile store never becomes a traceback:
`ls` refuses in one line (exit 2), `verify` lists every problem (exit 1).
"""

from __future__ import annotations

import json
import time

from raysweep.errors import UserError
from raysweep.store.backends import UnsafePath
from raysweep.store.store import META, CorruptGenerator, CorruptPool, SyntheticStore

# What a damaged store raises when read: malformed JSON, a hostile path, a bad checksum.
STORE_ERRORS = (CorruptPool, CorruptGenerator, UnsafePath)
# Where trained models live, each `<area>/<key>/<version>/…` plus `<area>/<key>/meta.json`.
MODEL_AREAS = ("generators", "classifiers")
AREAS = ("pools", *MODEL_AREAS)
# `cache gc` leaves anything younger than this alone: a write may be under way (a shard not yet
# in its manifest, a generator's files not yet named by its meta.json).
GC_MIN_AGE_S = 3600.0

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
    """Check everything the store holds and return the report and whether all of it is good:
    every shard of every pool (checksum, arrays, labels), every file of every generator and
    reference classifier against its meta.json; then, as notes, what nothing references
    (shards no manifest lists, versions no meta.json names, temp files, unfinished uploads) and
    what raysweep did not write. Links and keys that climb out of the store are damage."""
    lines, damaged = [], 0
    try:
        pool_keys = store.pool_keys()
        model_keys = {area: store.generator_keys(area) for area in MODEL_AREAS}
    except UnsafePath as error:  # the area folder itself is a link
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
                  f"append); it is never read, `raysweep cache gc` removes it" for name in strays]
    for area in MODEL_AREAS:
        kind = area[:-1]
        for key in model_keys[area]:
            try:
                meta = store.generator_meta(key, area=area)
                problems = store.verify_generator(key, area=area)
            except (*STORE_ERRORS, FileNotFoundError) as error:
                meta, problems = {}, [str(error)]
            if problems:
                damaged += 1
                lines += [f"BAD  {problem}" for problem in problems]
            else:
                what = meta.get("generator") or meta.get("kind", "?")
                lines.append(f"ok   {kind} {key}: {what}, {len(meta['files'])} files")
        lines += [f"note {kind} {key}: version {version} is named by no {META} (an interrupted "
                  f"or losing save); it is never read, `raysweep cache gc` removes it"
                  for key, version, _ in store.unreferenced_versions(area)]
    for area in AREAS:
        for stray in store.backend.strays(area):
            damaged += stray.unsafe
            lines.append(f"{'BAD ' if stray.unsafe else 'note'} {stray.where}: {stray.reason}")
        for leftover in store.backend.leftovers(area):
            lines.append(f"note {leftover.where}: left by an interrupted write; "
                         f"`raysweep cache gc` removes it")
    models = " and ".join(f"{len(model_keys[a])} {a}" for a in MODEL_AREAS)
    checked = f"checked {len(pool_keys)} pools, {models} in {store.root}"
    if damaged:
        lines.append(f"{checked}: {damaged} damaged; the next `raysweep run` that needs a damaged "
                     f"pool keeps its good prefix and regenerates the rest")
    else:
        lines.append(f"{checked}: all good")
    return "\n".join(lines), damaged == 0


def cache_gc(store: SyntheticStore, *, delete: bool = False, min_age_s: float = GC_MIN_AGE_S,
             pools_older_than_s: float | None = None) -> str:
    """Remove what nothing references; a dry run unless `delete`. Returns the report.

    Removed: shards no manifest lists, generator and classifier versions no meta.json names,
    temp files and folders, unfinished S3 uploads, all older than `min_age_s`; with
    `pools_older_than_s`, also every pool last written longer ago than that. What raysweep did
    not write (links, odd names) is never removed, only listed.
    """
    now = time.time()
    found = []  # (what, why, size, remove)
    pool_keys = store.pool_keys()
    old_pools = set()
    if pools_older_than_s is not None:
        for key in pool_keys:
            stored = store.backend.stat(f"pools/{key}")
            newest = max(info.modified for info in stored.values())
            if now - newest >= pools_older_than_s:
                old_pools.add(key)
                found.append((f"pool {key}", f"last written {_age(now - newest)} ago",
                              sum(info.size for info in stored.values()),
                              lambda key=key: store.delete_pool(key)))
    for key in sorted(set(pool_keys) - old_pools):
        try:
            strays = store.stray_shards(key)
        except STORE_ERRORS:  # a damaged manifest: what it lists is unknown, keep everything
            continue
        stored = store.backend.stat(f"pools/{key}")
        for name in strays:
            info = stored[f"pools/{key}/{name}"]
            if now - info.modified >= min_age_s:
                found.append((f"pool {key}: {name}", "listed in no manifest", info.size,
                              lambda path=f"pools/{key}/{name}": store.backend.delete(path)))
    for area in MODEL_AREAS:
        for key, version, info in store.unreferenced_versions(area):
            if now - info.modified >= min_age_s:
                found.append((f"{area[:-1]} {key}: version {version}", f"named by no {META}",
                              info.size, lambda path=f"{area}/{key}/{version}":
                              store.backend.delete_dir(path)))
    for area in AREAS:
        for leftover in store.backend.leftovers(area):
            if now - leftover.modified >= min_age_s:
                found.append((leftover.where, "left by an interrupted write", leftover.size,
                              lambda leftover=leftover: store.backend.remove_leftover(leftover)))
    lines = []
    for what, why, size, remove in found:
        if delete:
            remove()
        lines.append(f"{'removed' if delete else 'would remove'} {what} ({why}, {_bytes(size)})")
    lines += [f"left alone {stray.where}: {stray.reason}"
              for area in AREAS for stray in store.backend.strays(area)]
    total = f"{len(found)} item(s), {_bytes(sum(size for _, _, size, _ in found))}"
    if not found:
        lines.append(f"nothing to remove in {store.root}")
    elif delete:
        lines.append(f"removed {total} from {store.root}")
    else:
        lines.append(f"{total} to remove from {store.root}; nothing removed yet (a dry run): "
                     f"run `raysweep cache gc --yes` to remove them")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _bytes(size: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


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
