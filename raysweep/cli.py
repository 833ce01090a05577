"""The `raysweep` command: run, validate and report sweeps; copy a shipped spec to edit.

Bad input of any kind ends with one line on stderr and exit code 2, before any compute.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from raysweep.errors import UserError
from raysweep.redaction import redact_text, redact_uri


def _add_spec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="a sweep spec file, e.g. search_spaces/ratio.yaml, or a "
                                     "shipped spec's name, e.g. ratio")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a spec key, e.g. --set training.epochs=2")
    parser.add_argument("--num-cpus", type=int, help="CPUs for the local Ray instance")
    parser.add_argument("--num-gpus", type=float, help="GPUs (logical ones too) for local Ray")
    parser.add_argument("--address", help="a running Ray cluster (`auto` on its head); "
                                          "local Ray if unset")
    parser.add_argument("--storage", metavar="URI",
                        help="one prefix every node reaches (s3://bucket/prefix) for Tune's "
                             "storage, the synthetic store and MLflow artifacts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysweep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a sweep and report it")
    _add_spec_arguments(run)
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                                            "then the spec, then sqlite:///mlflow.db)")
    run.add_argument("--resume", action="store_true",
                     help="continue the latest unfinished sweep of the spec's experiment")

    validate = commands.add_parser("validate", help="check a spec and print what it would run")
    _add_spec_arguments(validate)

    report = commands.add_parser("report", help="report one sweep: every axis, cost, importance")
    report.add_argument("--sweep", help="a sweep id from `raysweep ls` (default: the latest sweep "
                                        "of --experiment or --spec)")
    report.add_argument("--experiment", help="MLflow experiment (default: the spec's name)")
    report.add_argument("--spec", help="take the experiment name from this spec")
    report.add_argument("--metric", default="test_balanced_accuracy",
                        help="metric to compare (default: test_balanced_accuracy)")
    report.add_argument("--format", default="png,html,csv,json",
                        help="comma-separated: png,html,csv,json (default: all)")
    report.add_argument("--tracking-uri")
    report.add_argument("--out", help="folder for the report's files (default: report-<sweep>)")

    ls = commands.add_parser("ls", help="list sweeps: id, spec, trials, state, best")
    ls.add_argument("--experiment", help="only this MLflow experiment")
    ls.add_argument("--tracking-uri")

    ui = commands.add_parser("ui", help="open the MLflow UI on this project's tracking store")
    ui.add_argument("--tracking-uri")
    ui.add_argument("--spec", help="take the tracking store from this spec")
    ui.add_argument("--sweep", help="also print the page that compares this sweep's trials")
    ui.add_argument("--port", type=int, default=5000)

    init = commands.add_parser("init", help="write a shipped spec to a file to edit")
    init.add_argument("name", help="a shipped spec's name, e.g. ratio (a wrong one lists them)")
    init.add_argument("dir", nargs="?", default=".",
                      help="where to write NAME.yaml (default: here)")

    cache = commands.add_parser("cache", help="inspect the synthetic store")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    for name, text in (("ls", "list pools and trained generators"),
                       ("verify", "check every pool, generator and classifier against its "
                                  "checksums (exit 1 if anything is damaged)"),
                       ("gc", "remove what nothing references (a dry run unless --yes)")):
        sub = cache_commands.add_parser(name, help=text)
        sub.add_argument("--store", default=".raysweep/cache",
                         help="store path or s3://bucket/prefix (default: .raysweep/cache)")
        sub.add_argument("--spec", help="take the store path from this spec instead")
        if name == "ls":
            sub.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "gc":
            sub.add_argument("--yes", action="store_true",
                             help="remove them (without it, only list what would be removed)")
            sub.add_argument("--min-age-hours", type=float, default=1.0, metavar="H",
                             help="leave anything younger alone: a write may be under way "
                                  "(default: 1)")
            sub.add_argument("--pools-older-than", type=float, metavar="DAYS",
                             help="also remove whole pools last written more than DAYS ago")
    return parser


def _validate(args) -> "Plan":  # noqa: F821 - imported lazily to keep `--help` fast
    """The spec and its plan; with --address, also against the cluster (left connected)."""
    from raysweep.plan import build_plan
    from raysweep.spec import load_spec
    from raysweep.deploy.storage import apply_storage

    spec = apply_storage(load_spec(args.spec, args.overrides), args.storage)
    if spec.storage:
        from raysweep.store.store import SyntheticStore

        SyntheticStore(spec.storage).check()
    if args.address:
        _check_cluster(spec, args.address)
    return build_plan(spec, num_cpus=args.num_cpus, num_gpus=args.num_gpus,
                      local=args.address is None)


def _check_cluster(spec, address: str) -> None:
    """Connect, then check the spec against what the cluster has and its autoscaler may add."""
    from raysweep.deploy import cluster
    from raysweep.plan import check_budget
    from raysweep.deploy.storage import check_shared

    cluster.connect(address)
    capacity = cluster.capacity()
    print(capacity.describe(), flush=True)
    if capacity.multi_node:
        check_shared(spec)
    check_budget(spec, capacity.cpus, capacity.gpus, spread=capacity.multi_node)
    if spec.tune.gpus_per_trial > capacity.max_node_gpus:
        raise UserError(f"tune.gpus_per_trial: {spec.tune.gpus_per_trial:g} GPU, but no node of "
                        f"the cluster has more than {capacity.max_node_gpus:g}; lower it")


def cmd_validate(args) -> int:
    try:
        plan = _validate(args)
        print(plan.summary())
    finally:
        _disconnect()
    return 0


def _disconnect() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def cmd_run(args) -> int:
    from raysweep.sweep.lifecycle import SweepInterrupted
    from raysweep.sweep.run import find_resumable, log, run_sweep
    from raysweep.tracking import resolve_tracking_uri

    try:
        plan = _validate(args)
        tracking_uri = resolve_tracking_uri(args.tracking_uri, plan.spec.tracking.tracking_uri)
        resume = find_resumable(plan.spec, tracking_uri) if args.resume else None
        print(plan.summary(), flush=True)
        result = run_sweep(plan, tracking_uri, address=args.address, num_cpus=args.num_cpus,
                           num_gpus=args.num_gpus, resume=resume)
    except SweepInterrupted as interrupted:
        print(f"raysweep: {interrupted}: the sweep is KILLED in MLflow; continue it with "
              f"raysweep run {args.spec} --resume", file=sys.stderr)
        return 128 + interrupted.signum
    finally:
        _disconnect()
    log(f"sweep {result.sweep_id} done in {result.seconds:.0f}s: {result.trials} trials, "
        f"{result.errors} failed")
    if result.errors == result.trials:
        log("no trial finished, so there is nothing to compare; the trials' errors are above")
        return 1
    _report(tracking_uri, result.sweep_id, "test_balanced_accuracy", "png,html,csv,json", None)
    log(f"compare the trials: raysweep ui --tracking-uri {redact_uri(tracking_uri)}")
    return 1 if result.errors else 0


def cmd_report(args) -> int:
    from raysweep.report import latest_sweep_id
    from raysweep.tracking import resolve_tracking_uri

    experiment, spec_uri = args.experiment, None
    if args.spec:
        from raysweep.spec import load_spec

        spec = load_spec(args.spec)
        experiment = experiment or spec.experiment_name()
        spec_uri = spec.tracking.tracking_uri
    if not (experiment or args.sweep):
        raise UserError("report: name the sweep with --sweep ID (see `raysweep ls`), "
                        "or its experiment with --experiment NAME or --spec FILE")
    tracking_uri = resolve_tracking_uri(args.tracking_uri, spec_uri)
    sweep_id = args.sweep or latest_sweep_id(tracking_uri, experiment)
    _report(tracking_uri, sweep_id, args.metric, args.format, args.out, experiment)
    return 0


def _report(tracking_uri: str, sweep_id: str, metric: str, formats: str, out: str | None,
            experiment: str | None = None) -> None:
    """Build the sweep's report, print its table, write its files and log them on the sweep's
    parent run."""
    from mlflow.tracking import MlflowClient

    from raysweep.report import build_report, load_sweep
    from raysweep.report.render import as_text, parse_formats, write_report
    from raysweep.report.yardstick import equivalent_metrics

    chosen = parse_formats(formats)
    sweep = load_sweep(tracking_uri, sweep_id, experiment)
    out_dir = Path(out or f"report-{sweep_id}")
    report = build_report(sweep, metric, out_dir)
    print("\n" + as_text(report))
    files = write_report(report, out_dir, chosen)
    client = MlflowClient(tracking_uri)
    for name, value in equivalent_metrics(report.equivalents).items():
        client.log_metric(sweep.parent_run_id, name, value)
    for path in files:
        client.log_artifact(sweep.parent_run_id, str(path), artifact_path="report")
    print(f"report: {out_dir.resolve()} ({', '.join(p.name for p in files)}), "
          f"logged on run {sweep.parent_run_id}")


def cmd_ls(args) -> int:
    from raysweep.report import list_sweeps
    from raysweep.tracking import resolve_tracking_uri

    sweeps = list_sweeps(resolve_tracking_uri(args.tracking_uri, None), args.experiment)
    if sweeps.empty:
        print("no sweeps yet; start one with `raysweep run SPEC`")
        return 0
    print(sweeps.drop(columns=["started"]).to_string(index=False))
    return 0


def cmd_init(args) -> int:
    """Copy a shipped spec into DIR/NAME.yaml, with a header saying where it came from."""
    from raysweep.spec import shipped_specs

    shipped = shipped_specs()
    if args.name not in shipped:
        raise UserError(f"init {args.name}: no shipped spec has that name; pick one of "
                        f"{', '.join(shipped)}")
    folder = Path(args.dir)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"init: {folder} is a file, not a folder; name a folder to write "
                        f"{args.name}.yaml into")
    target = folder / f"{args.name}.yaml"
    header = (f"# Your copy of raysweep's shipped spec `{args.name}` "
              f"(`raysweep init {args.name}`); edit it, then\n"
              f"#   raysweep validate {target}\n#   raysweep run {target}\n\n")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        # "x": never overwrite, even a file that appears between a check and the write.
        with target.open("x", encoding="utf-8") as out:
            out.write(header + shipped[args.name].read_text(encoding="utf-8"))
    except FileExistsError:
        raise UserError(f"init: {target} exists and is kept; edit it, remove it, or pass "
                        f"another folder") from None
    print(f"wrote {target}; check it with `raysweep validate {target}`, "
          f"run it with `raysweep run {target}`")
    return 0


def cmd_cache(args) -> int:
    from raysweep.store.cache_cli import cache_gc, cache_ls, cache_verify
    from raysweep.store.store import SyntheticStore

    root = args.store
    if args.spec:
        from raysweep.spec import load_spec

        root = load_spec(args.spec).store.path
    store = SyntheticStore(root)
    store.check()
    if args.cache_command == "ls":
        print(cache_ls(store, as_json=args.json))
        return 0
    if args.cache_command == "gc":
        for name, value in (("--min-age-hours", args.min_age_hours),
                            ("--pools-older-than", args.pools_older_than)):
            if value is not None and not 0 <= value < 1e6:
                raise UserError(f"cache gc {name}: {value:g} is not a number of hours or days "
                                f">= 0; give e.g. 1")
        days = args.pools_older_than
        print(cache_gc(store, delete=args.yes, min_age_s=args.min_age_hours * 3600,
                       pools_older_than_s=None if days is None else days * 86400))
        return 0
    text, ok = cache_verify(store)
    print(text)
    return 0 if ok else 1


def cmd_ui(args) -> int:
    import subprocess

    from raysweep.tracking import resolve_tracking_uri

    spec_uri = None
    if args.spec:
        from raysweep.spec import load_spec

        spec_uri = load_spec(args.spec).tracking.tracking_uri
    uri = resolve_tracking_uri(args.tracking_uri, spec_uri)
    address = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI for {redact_uri(uri)} at {address}", flush=True)
    if args.sweep:
        print(f"sweep {args.sweep}: {address}/{sweep_page(uri, args.sweep)}", flush=True)
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(args.port)]
    # The store URI (maybe with a password) goes through the environment, which only this user
    # can read, not the command line, which every user sees in `ps`.
    return subprocess.call(command, env={**os.environ, "MLFLOW_BACKEND_STORE_URI": uri})


def sweep_page(tracking_uri: str, sweep_id: str) -> str:
    """The MLflow UI route that compares a sweep's trial runs (their params side by side)."""
    import json
    from urllib.parse import quote

    import mlflow

    from raysweep.report import load_sweep

    sweep = load_sweep(tracking_uri, sweep_id)
    experiment = mlflow.get_experiment_by_name(sweep.experiment).experiment_id
    runs = quote(json.dumps(list(sweep.trials["run_id"])))
    return f"#/compare-runs?runs={runs}&experiments={quote(json.dumps([experiment]))}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "validate": cmd_validate, "report": cmd_report, "ls": cmd_ls,
               "init": cmd_init, "cache": cmd_cache, "ui": cmd_ui}[args.command]
    # Credentials the user gave that an error may quote (MLflow's lines carry the URL).
    known = [getattr(args, "tracking_uri", None), os.environ.get("MLFLOW_TRACKING_URI")]
    try:
        return handler(args)
    except UserError as error:
        print(f"raysweep: error: {redact_text(str(error), known)}", file=sys.stderr)
        return 2
    except Exception as error:
        from mlflow.exceptions import MlflowException

        from raysweep.synthesis.service import SynthesisFailed
        from raysweep.store.backends import UnsafePath
        from raysweep.store.store import CorruptGenerator, CorruptPool

        # Generation that gave up, a store found damaged or tampered with, a tracking store
        # that fails: not a bug, so one line (raised in an actor, it arrives wrapped in Ray's
        # traceback), exit 1.
        if isinstance(error, (SynthesisFailed, CorruptPool, CorruptGenerator, UnsafePath)):
            print(f"raysweep: error: {getattr(error, 'cause', None) or error}", file=sys.stderr)
            return 1
        if isinstance(error, MlflowException):
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            print(f"raysweep: error: MLflow: {redact_text(first_line, known)}", file=sys.stderr)
            return 1
        # A bug: its traceback as Python prints it, exit 1, but with credentials hidden.
        print(redact_text("".join(traceback.format_exception(error)), known), end="",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
