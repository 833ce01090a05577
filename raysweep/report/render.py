"""A report as text (the terminal), one self-contained HTML page, CSV and JSON of the table.

The HTML page embeds its PNGs as data URIs, so it can be mailed or logged as one file.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import pandas as pd

from raysweep.errors import UserError
from raysweep.report import Report

FORMATS = ("png", "html", "csv", "json")


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UserError(f"--format: unknown format {', '.join(unknown) or '(none)'}; "
                        f"choose from {','.join(FORMATS)}")
    return formats


def _ci(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"±{value:.4f}"


def comparison_table(report: Report) -> pd.DataFrame:
    """One row per (axis, context, value): mean over seeds and, where a baseline exists, the
    paired difference to it."""
    table = report.summary.copy()
    if not report.paired.empty:
        table = table.merge(report.paired.drop(columns=["baseline"]),
                            on=["axis", "context", "value"], how="left")
    return table


def as_text(report: Report) -> str:
    sweep = report.sweep
    lines = [f"{report.metric} by swept values (sweep {sweep.sweep_id}, {len(sweep.trials)} "
             f"trials, {sweep.seeds()} seed(s), search {sweep.search_alg}):"]
    shown = comparison_table(report)
    for column in ("mean", "diff"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:+.4f}"
                                              if column == "diff" else f"{v:.4f}")
    shown["ci95"] = shown["ci95"].map(_ci)
    if "diff" in shown:  # rows without a diff are the baseline itself or have no baseline
        has_diff = shown["diff"] != ""
        shown["diff_ci95"] = [_ci(v) if d else "" for v, d in zip(shown["diff_ci95"], has_diff)]
        shown["pairs"] = [f"{int(v)}" if d else "" for v, d in zip(shown["pairs"], has_diff)]
    lines.append(shown.to_string(index=False))
    if not report.equivalents.empty:
        lines += ["", equivalents_heading(report)]
        lines += [f"  {line}" for line in equivalent_lines(report.equivalents)]
    if report.sampled:
        lines += ["", "best trials:", report.best.to_string(index=False)]
    quality = sweep.quality
    if not quality.empty:
        overall = quality[quality["class"] == "all"].drop(columns=["class"]).set_index("pool")
        lines += ["", f"synthetic quality per pool ({_feature_network(sweep)} features; per "
                      f"class in the HTML/JSON):", overall.to_string(float_format=lambda v: f"{v:.4g}")]
    if report.importances:
        lines += ["", "parameter importance (Optuna fANOVA): " + ", ".join(
            f"{k} {v:.2f}" for k, v in report.importances.items())]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def as_json(report: Report) -> dict:
    def records(frame: pd.DataFrame) -> list[dict]:
        return json.loads(frame.to_json(orient="records")) if not frame.empty else []

    sweep = report.sweep
    return {"sweep": sweep.sweep_id, "experiment": sweep.experiment, "status": sweep.status,
            "metric": report.metric, "search_alg": sweep.search_alg, "trials": len(sweep.trials),
            "seeds": sweep.seeds(), "axes": report.axes, "notes": report.notes,
            "table": records(comparison_table(report)), "best_trials": records(report.best),
            "param_importance": report.importances,
            "real_equivalents": records(report.equivalents), "real_curve": records(report.curve),
            "synthetic_quality": records(sweep.quality),
            "trial_cost_seconds": dict(zip(sweep.trials["run_id"], map(float, report.cost)))}


def as_html(report: Report) -> str:
    sweep = report.sweep
    title = f"raysweep report: {sweep.sweep_id}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title><style>body{font-family:sans-serif;max-width:60em;margin:auto}"
             "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #ccc;"
             "padding:2px 6px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p>experiment {html.escape(sweep.experiment)}, {len(sweep.trials)} trials, "
             f"{sweep.seeds()} seed(s), search {html.escape(sweep.search_alg)}, metric "
             f"{html.escape(report.metric)}, parent run {sweep.parent_run_id}</p>"]
    parts += [f"<p><b>note:</b> {html.escape(n)}</p>" for n in report.notes]
    parts += ["<h2>Comparison</h2>", comparison_table(report).to_html(index=False, na_rep="n/a")]
    if not report.equivalents.empty:
        parts += ["<h2>Worth how many real images?</h2>",
                  f"<p>{html.escape(equivalents_heading(report))}</p><ul>"]
        parts += [f"<li>{html.escape(line)}</li>" for line in equivalent_lines(report.equivalents)]
        parts.append("</ul>")
    if report.sampled:
        parts += ["<h2>Best trials</h2>", report.best.to_html(index=False)]
    if not sweep.quality.empty:
        parts += ["<h2>Synthetic quality per pool and class</h2>",
                  f"<p>Fréchet distance, KID, precision/recall on {_feature_network(sweep)} "
                  "features; SSIM to the nearest real image; CAS: balanced accuracy on real test "
                  "images of a classifier trained on the pool alone.</p>",
                  sweep.quality.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}")]
    parts.append("<h2>Figures</h2>")
    for figure in report.figures:
        data = base64.b64encode(Path(figure).read_bytes()).decode()
        parts.append(f"<p><img alt='{html.escape(Path(figure).stem)}' "
                     f"src='data:image/png;base64,{data}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: Report, out_dir: Path, formats: list[str]) -> list[Path]:
    """The files of the report in `out_dir`; PNGs are already there (build_report drew them)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = list(report.figures) if "png" in formats else []
    if "html" in formats:
        path = out_dir / "report.html"
        path.write_text(as_html(report))
        written.append(path)
    if "csv" in formats:
        path = out_dir / "report.csv"
        comparison_table(report).to_csv(path, index=False)
        written.append(path)
    if "json" in formats:
        path = out_dir / "report.json"
        path.write_text(json.dumps(as_json(report), indent=2))
        written.append(path)
    if "png" not in formats:
        for figure in report.figures:
            Path(figure).unlink(missing_ok=True)
    return written


def equivalents_heading(report: Report) -> str:
    sizes = ", ".join(f"{s:g}" for s in sorted(report.curve["size"].unique()))
    return (f"real-data equivalent of each synthetic arm ({report.metric}; real-only arms at "
            f"{sizes} images per class, monotone interpolation over seeds, 95% CI by "
            f"resampling seeds):")


def equivalent_lines(equivalents: pd.DataFrame) -> list[str]:
    """`synthetic_ratio=2 ≈ 140 real images per class (95% CI 95-210)`, one per arm."""
    from raysweep.report.yardstick import Equivalent

    lines = []
    for row in equivalents.itertuples():
        estimate = Equivalent(row.equivalent, row.censored).describe()
        if math.isnan(row.ci_low):
            ci = f"no CI: {row.n} seed(s)"
        else:
            ci = (f"95% CI {Equivalent(row.ci_low, row.ci_low_censored).describe()}–"
                  f"{Equivalent(row.ci_high, row.ci_high_censored).describe()}")
        lines.append(f"{row.arm} ≈ {estimate} real images per class ({ci}; "
                     f"{row.mean:.4f})")
    return lines


def _feature_network(sweep) -> str:
    """Which network's features the pools' distribution metrics compare."""
    if sweep.params.get("quality_features") == "inception-v3":
        return "Inception v3 (FID)"
    return "reference-classifier"
