"""`python -m pipeline.report --input OUTPUT --output report.html`: one self-contained audit page.

The page holds everything inline (CSS and PNG figures as base64 data URIs), so
it can be mailed or attached to a ticket and opened anywhere offline. It reads
only metadata columns for the whole run and the attribution arrays of the few
rows it shows, so it works the same for 10 rows and for millions.

Sections: run summary, completeness histogram, the most confident
misclassifications with heat maps, the rows with the worst completeness (with
their path curves), per-class accuracy, a gallery and the error records.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import html
import logging
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems
from matplotlib.figure import Figure

from transforms import plots, results

__all__ = ["build_report", "main", "write_report"]

# The columns the page needs for every row: no lists (top-k, path), no attributions;
# the top-1 probability is computed in Arrow (`confidence`).
_COLUMNS = ["image_id", "file_name", "label", "label_name", "predicted_class", "predicted_name",
            "target_class", "target_name", "target_score", "baseline_score", "attribution_sum",
            "relative_delta", "steps", "evaluations", "within_tolerance", "score"]  # fmt: skip

_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --bad: #b2182b; --good: #1a7f37;
        --panel: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 0 0 6px; overflow-wrap: anywhere; }
p.lead, p.note { color: var(--muted); margin: 4px 0 12px; max-width: 900px; }
nav { margin: 10px 0 0; font-size: 13px; }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 10px;
         margin: 18px 0 4px; }
.tile { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.tile .v { font-size: 22px; font-weight: 600; }
.tile .k { color: var(--muted); font-size: 12px; }
.tile.bad .v { color: var(--bad); } .tile.good .v { color: var(--good); }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 4px 10px 4px 0; border-bottom: 1px solid #eaeef2;
         vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.kv { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 8px 28px; }
.kv td:first-child { color: var(--muted); white-space: nowrap; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px;
              overflow-wrap: anywhere; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; background: #fff; }
.card img { width: 100%; height: auto; display: block; margin: 4px 0 6px; }
.card table { width: 100%; }
.wrong { color: var(--bad); font-weight: 600; } .right { color: var(--good); font-weight: 600; }
.bar { display: inline-block; height: 9px; background: var(--good); vertical-align: middle;
       border-radius: 2px; }
.barbox { display: inline-block; width: 90px; height: 9px; background: #f1c8cc; margin-right: 6px;
          vertical-align: middle; border-radius: 2px; }
img.wide { max-width: 100%; height: auto; }
pre { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px;
      overflow-x: auto; font-size: 12px; }
.cards.rows { grid-template-columns: 1fr; }
.side { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; }
.side img { width: auto; max-width: 100%; margin: 0; }
.side table { width: auto; }
ol.topk { margin: 2px 0 6px; padding-left: 22px; font-size: 13px; }
ol.topk li.truth { font-weight: 600; color: var(--good); }
ol.topk li.pred { color: var(--bad); }
.facts { font-size: 13px; margin: 2px 0; }
.facts b { font-weight: 600; }
footer { margin-top: 40px; color: var(--muted); font-size: 12px; }
"""


def _e(value: Any) -> str:
    """HTML-escaped text of a value; None and NaN become an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return html.escape(str(value))


def _png(figure: Figure, dpi: int = 100, alt: str = "", css: str = "") -> str:
    data = base64.b64encode(plots.figure_png(figure, dpi=dpi)).decode("ascii")
    klass = f' class="{css}"' if css else ""
    return f'<img{klass} alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    return f"{value:.{digits}%}"


def _num(value: Any, digits: int = 4) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _e(value)
    if not math.isfinite(number):
        return "–"
    return f"{number:.{digits}g}"


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()
) -> str:
    """An HTML table from already-escaped cells; `numeric` column indices are right-aligned."""
    head = "".join(
        f'<th class="num">{h}</th>' if i in numeric else f"<th>{h}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )  # fmt: skip
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(pairs: Sequence[tuple[str, str]]) -> str:
    return (
        "<table>" + "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in pairs) + "</table>"
    )


def _metadata(output: str) -> pd.DataFrame:
    """Every row's `_COLUMNS` and `confidence` (top-1 probability), without any list column."""
    table = results.read_table(output, [*_COLUMNS, "top_k_probs"])
    confidence = (
        pc.list_element(table["top_k_probs"], 0) if len(table) else pa.array([], pa.float32())
    )
    table = table.drop_columns(["top_k_probs"]).append_column("confidence", confidence)
    return table.to_pandas().sort_values("image_id", kind="stable").reset_index(drop=True)


def _label_rank(row: Mapping[str, Any]) -> str:
    """Where the true label sits in the top-k, e.g. '#3 (4.1%)' or 'not in top 5'."""
    label = row["label"]
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return "–"
    classes = list(row["top_k_classes"])
    if int(label) in classes:
        rank = classes.index(int(label))
        return f"#{rank + 1} ({_pct(float(row['top_k_probs'][rank]))})"
    return f"not in top {len(classes)}"


def _top_k(row: Mapping[str, Any]) -> str:
    """The top-k predictions as a list; the true label is marked, a wrong top-1 in red."""
    label = row["label"]
    truth = (
        None if label is None or (isinstance(label, float) and math.isnan(label)) else int(label)
    )
    items = []
    for rank, (cls, name, prob) in enumerate(
        zip(row["top_k_classes"], row["top_k_names"], row["top_k_probs"], strict=False)
    ):
        css = "truth" if int(cls) == truth else ("pred" if rank == 0 and truth is not None else "")
        mark = " ← label" if int(cls) == truth else ""
        items.append(
            f'<li class="{css}">{_e(name)} <span class="mono">{_pct(float(prob))}</span>{mark}</li>'
        )
    return f'<ol class="topk">{"".join(items)}</ol>'


def _duration(manifest: Mapping[str, Any]) -> str:
    try:
        start = datetime.datetime.fromisoformat(manifest["start_time"])
        end = datetime.datetime.fromisoformat(manifest["end_time"])
    except (KeyError, TypeError, ValueError):
        return "–"
    seconds = (end - start).total_seconds()
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


class _Pictures:
    """Input images and attribution arrays of the rows the page shows, read once."""

    def __init__(self, output: str, manifest: Mapping[str, Any], image_root: str | None):
        self._output = output
        self._manifest = manifest
        self._image_root = image_root
        self._rows: dict[tuple[str, int], pd.Series] = {}
        self._images: dict[str, np.ndarray | None] = {}
        self.notes: dict[str, None] = {}  # why some photos are missing, in order

    def load(self, keys: Iterable[tuple[str, int]]) -> None:
        keys = [k for k in dict.fromkeys(keys) if k not in self._rows]
        if not keys:
            return
        ids = sorted({image_id for image_id, _ in keys})
        frame = results.read_results(
            self._output, with_arrays=True, filters=pc.field("image_id").isin(ids)
        )
        wanted = set(keys)
        for _, row in frame.iterrows():
            key = (row["image_id"], int(row["target_class"]))
            if key in wanted:
                self._rows[key] = row
        for image_id in ids:
            if image_id in self._images:
                continue
            try:
                self._images[image_id] = results.load_input_image(
                    self._manifest, image_id, self._image_root
                )
            except results.ImageUnavailable as e:
                self._images[image_id] = None
                self.notes[str(e)] = None

    def row(self, image_id: str, target_class: int) -> pd.Series | None:
        return self._rows.get((image_id, int(target_class)))

    def image(self, image_id: str) -> np.ndarray | None:
        return self._images.get(image_id)

    def images(self) -> dict[str, np.ndarray]:
        return {k: v for k, v in self._images.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class _Selection:
    """The run's rows and the few the page shows, chosen once.

    Attributes:
      frame: every row (`_metadata`).
      per_image: one row per image (`results.one_row_per_image`).
      labelled: `per_image` rows with a label.
      wrong: misclassified images, most confident first.
      worst: rows by relative completeness error, worst first.
      gallery: evenly spread images for the gallery; `gallery_step` apart by image id.
    """

    frame: pd.DataFrame
    per_image: pd.DataFrame
    labelled: pd.DataFrame
    wrong: pd.DataFrame
    worst: pd.DataFrame
    gallery: pd.DataFrame
    gallery_step: int

    @classmethod
    def of(cls, frame: pd.DataFrame, gallery: int) -> _Selection:
        per_image = results.one_row_per_image(frame)
        labelled = per_image[per_image["label"].notna()]
        wrong = results.misclassified(labelled)
        wrong = wrong.sort_values(["confidence", "image_id"], ascending=[False, True])
        worst = frame.sort_values(["relative_delta", "image_id"], ascending=[False, True])
        step = max(1, math.ceil(len(per_image) / gallery)) if gallery > 0 else 1
        spread = per_image.iloc[::step].head(gallery) if gallery > 0 else per_image.head(0)
        return cls(frame, per_image, labelled, wrong, worst, spread, step)


def _heat_map(
    pictures: _Pictures,
    image_id: str,
    target_class: int,
    panels: Sequence[str],
    panel_size: float = 2.2,
    title: str | None = None,
) -> str:
    """The row's heat map as an embedded PNG, or a note saying why there is none."""
    row = pictures.row(image_id, target_class)
    if row is None:
        return '<p class="note">Row not found when reading arrays.</p>'
    try:
        attributions = results.attributions_of(row)
    except ValueError:
        return '<p class="note">No attributions stored (the run used --attributions none).</p>'
    image = pictures.image(image_id)
    figure = plots.attribution_figure(
        attributions, image, panels=panels, panel_size=panel_size, title=title
    )
    return _png(figure, alt=f"heat map of {row['file_name']} for {row['target_name']}")


def _evidence(pictures: _Pictures, meta: Mapping[str, Any]) -> str:
    """Heat maps of a misclassified image: for the attributed class and, if the run
    attributed it too (`--target top_k`), for the true label."""
    label, target = int(meta["label"]), int(meta["target_class"])
    role = ("the prediction" if target == meta["predicted_class"]
            else "the label" if target == label else "class")  # fmt: skip
    panels = ("image", "mask", "overlay")
    parts = [_heat_map(pictures, meta["image_id"], target, panels,
                       title=f"Attributed to {role}: {meta['target_name']}")]  # fmt: skip
    if target != label and pictures.row(meta["image_id"], label) is not None:
        parts.append(_heat_map(pictures, meta["image_id"], label, panels,
                               title=f"Attributed to the label: {meta['label_name']}"))  # fmt: skip
    return "".join(parts)


def _summary(manifest: Mapping[str, Any]) -> str:
    model = manifest.get("model", {})
    config = manifest.get("config", {})
    counts = manifest.get("counts", {})
    accounted = manifest.get("all_inputs_accounted_for")
    dataset = manifest.get("dataset")
    split = manifest.get("split")
    run = [
        ("Dataset", f"<b>{_e(dataset)}</b>" + (f" split <code>{_e(split)}</code>" if split else "")),
        ("Model", f"<b>{_e(model.get('reference'))}</b> ({_e(model.get('kind'))}: "
                  f"<span class=mono>{_e(model.get('location'))}</span>)"),
        ("Model identity", f"<span class=mono>{_e(model.get('identity'))}</span>"),
        ("Model input", f"{_e(model.get('image_size'))} px, range {_e(model.get('input_range'))}, "
                        f"{_e(model.get('num_outputs'))} outputs, label offset "
                        f"{_e(model.get('label_offset'))}"),
        ("Started / ended", f"{_e(manifest.get('start_time'))}<br>{_e(manifest.get('end_time'))} "
                            f"({_duration(manifest)})"),
        ("Output", f"<span class=mono>{_e(manifest.get('output'))}</span>"),
    ]  # fmt: skip
    ig = [
        ("Target / score", f"{_e(config.get('target'))} / {_e(config.get('score'))} "
                           f"(top-{_e(config.get('top_k'))} kept)"),
        ("Method", f"{_e(config.get('method'))}, {_e(config.get('steps'))} steps "
                   f"(refined up to {_e(config.get('max_steps'))})"),
        ("Baselines", _e(", ".join(config.get("baselines", [])))),
        ("Tolerance", _e(config.get("tolerance"))),
        ("Stored", f"attributions {_e(config.get('attributions'))} as "
                   f"{_e(config.get('attribution_dtype'))}; path "
                   f"{'stored' if config.get('store_path') else 'not stored'}"),
        ("Counts", ", ".join(f"{_e(k)} {_e(v)}" for k, v in counts.items())),
        ("All inputs accounted for",
         '<span class="right">yes</span>' if accounted else '<span class="wrong">NO</span>'),
    ]  # fmt: skip
    versions = ", ".join(f"{_e(k)} {_e(v)}" for k, v in manifest.get("versions", {}).items() if v)
    command = " ".join(str(a) for a in manifest.get("command", []))
    return (
        '<section id="summary"><h2>Run summary</h2><div class="kv">'
        f"{_kv(run)}{_kv(ig)}</div>"
        f'<p class="note">Versions: {versions}</p>'
        + (f"<pre>{_e(command)}</pre>" if command else "")
        + "</section>"
    )


def _tiles(manifest: Mapping[str, Any], chosen: _Selection) -> str:
    counts = manifest.get("counts", {})
    tolerance = manifest.get("config", {}).get("tolerance") or 0
    frame, per_image, labelled, wrong = (
        chosen.frame,
        chosen.per_image,
        chosen.labelled,
        chosen.wrong,
    )
    accuracy = 1 - len(wrong) / len(labelled) if len(labelled) else None
    above = int((frame["relative_delta"] > tolerance).sum()) if tolerance else None
    median = float(frame["relative_delta"].median()) if len(frame) else None
    tiles = [
        ("", _e(counts.get("inputs", per_image.shape[0])), "inputs"),
        ("", _e(len(frame)), "result rows"),
        ("bad" if counts.get("errors") else "good", _e(counts.get("errors", 0)), "errors"),
        (
            "",
            _pct(accuracy),
            f"top-1 accuracy ({len(labelled)} of {len(per_image)} images labelled)",
        ),
        ("bad" if len(wrong) else "good", _e(len(wrong)), "misclassified images"),
        ("", _pct(median, 2), "median relative completeness error"),
    ]
    if above is not None:
        tiles.append(("bad" if above else "good", _e(above), f"rows above tolerance {tolerance:g}"))
    return '<div class="tiles">' + "".join(
        f'<div class="tile {k}"><div class="v">{v}</div><div class="k">{_e(t)}</div></div>'
        for k, v, t in tiles
    ) + "</div>"  # fmt: skip


def _misclassified(chosen: _Selection, pictures: _Pictures, limit: int) -> str:
    labelled, wrong = chosen.labelled, chosen.wrong
    head = (
        '<section id="misclassified"><h2>Most confident misclassifications</h2>'
        f'<p class="lead">{len(wrong)} of {len(labelled)} labelled images are misclassified '
        f"({_pct(len(wrong) / len(labelled) if len(labelled) else None)}). The most confident "
        "first. The heat maps show the pixels that Integrated Gradients credits for the "
        "wrong prediction (what the model looked at when it got the image wrong) and, when "
        "the run attributed it too (<code>--target top_k</code> with the label in the top k), "
        "for the true label.</p>"
    )
    if labelled.empty:
        return head + '<p class="note">No image of this run has a label, so no misclassification can be shown.</p></section>'  # fmt: skip
    if wrong.empty:
        return head + '<p class="note">Every labelled image is classified correctly.</p></section>'
    cards = []
    for _, meta in wrong.head(limit).iterrows():
        row = pictures.row(meta["image_id"], meta["target_class"])  # with the top-k lists
        rank = _label_rank(row) if row is not None else "–"
        facts = (
            f'<p class="facts">Label <b>{_e(meta["label_name"])}</b> ({_e(int(meta["label"]))}), '
            f'predicted <b class="wrong">{_e(meta["predicted_name"])}</b> '
            f"({_pct(meta['confidence'])}); the label is {rank}. Relative completeness "
            f"error {_pct(meta['relative_delta'], 2)}.</p>"
        )
        cards.append(
            f'<div class="card"><h3>{_e(meta["file_name"])}</h3>'
            f'<div class="mono">{_e(meta["image_id"])}</div>'
            f"{_evidence(pictures, meta)}{facts}"
            f"{_top_k(row) if row is not None else ''}</div>"
        )
    return head + '<div class="cards">' + "".join(cards) + "</div></section>"


def _completeness(frame: pd.DataFrame, manifest: Mapping[str, Any]) -> str:
    config = manifest.get("config", {})
    tolerance = config.get("tolerance") or None
    deltas = frame["relative_delta"].to_numpy(dtype=np.float64)
    stats = ""
    if len(frame):
        p50, p95 = np.nanpercentile(deltas, [50, 95])
        refined = int((frame["steps"] > int(config.get("steps", 0) or 0)).sum())
        stats = (
            f"Median {_pct(p50, 3)}, 95th percentile {_pct(p95, 3)}, worst "
            f"{_pct(np.nanmax(deltas), 3)}; {refined} of {len(frame)} rows were refined with "
            "more path points."
        )
    figure = plots.completeness_figure(deltas, tolerance)
    return (
        '<section id="completeness"><h2>Completeness</h2>'
        '<p class="lead">Integrated Gradients are complete: the attributions of a row sum to '
        "F(x) − F(x′), the score of the image minus the score of the baseline. The relative "
        "error |Σ attributions − (F(x) − F(x′))| / |F(x) − F(x′)| measures how well the path "
        f"integral was approximated; large values mean the heat map is not trustworthy. {stats}</p>"
        f"{_png(figure, alt='completeness histogram', css='wide')}</section>"
    )


def _worst(chosen: _Selection, pictures: _Pictures, limit: int, tolerance: float | None) -> str:
    frame, worst = chosen.frame, chosen.worst.head(limit)
    above = int((frame["relative_delta"] > tolerance).sum()) if tolerance else None
    verdict = (
        ""
        if above is None
        else f" {above} of {len(frame)} rows exceed the run's tolerance {tolerance:g}"
        + ("; they are marked in red." if above else ": all attributions are within it.")
    )
    head = (
        '<section id="worst-completeness"><h2>Worst completeness</h2>'
        '<p class="lead">The rows whose attributions sum furthest from F(x) − F(x′). The path '
        "curve F(α) shows why: a steep jump between path points, or a score that saturates "
        f"early, is hard to integrate with few points.{verdict}</p>"
    )
    if worst.empty:
        return head + '<p class="note">No rows.</p></section>'
    cards = []
    for _, meta in worst.iterrows():
        row = pictures.row(meta["image_id"], meta["target_class"])
        path = ""
        if row is not None and results.path_of(row) is not None:
            path = _png(plots.path_figure(row, width=3.4, height=2.3), alt="path curve")
        bad = tolerance and meta["relative_delta"] > tolerance
        delta = _pct(meta["relative_delta"], 2)
        details = _kv(
            [("relative error", f'<span class="wrong">{delta}</span>' if bad else delta),
             ("F(x), image", _num(meta["target_score"])),
             ("F(x′), baseline", _num(meta["baseline_score"])),
             ("Σ attributions", _num(meta["attribution_sum"])),
             ("path points", f"{_e(meta['steps'])} ({_e(meta['evaluations'])} gradients)")]
        )  # fmt: skip
        cards.append(
            f'<div class="card"><h3>{_e(meta["file_name"])} → {_e(meta["target_name"])}</h3>'
            f'<div class="mono">{_e(meta["image_id"])}</div><div class="side">'
            f"{_heat_map(pictures, meta['image_id'], meta['target_class'], ('image', 'overlay'), 1.9)}"
            f"{path}"
            f"{details}</div></div>"
        )
    return head + '<div class="cards rows">' + "".join(cards) + "</div></section>"


def _per_class(per_image: pd.DataFrame, limit: int) -> str:
    table = results.per_class_accuracy(per_image)
    head = (
        '<section id="per-class"><h2>Per-class accuracy</h2>'
        '<p class="lead">Top-1 accuracy per labelled class, each image counted once, worst '
        "classes first, with the most frequent wrong prediction.</p>"
    )
    if table.empty:
        return head + '<p class="note">No labelled images.</p></section>'
    shown = table.head(limit)
    rows = []
    for label, r in shown.iterrows():
        bar = (f'<span class="barbox"><span class="bar" style="width:{r["accuracy"] * 100:.0f}%">'
               "</span></span>")  # fmt: skip
        confusion = (
            f"{_e(r['top_confusion'])} ({r['top_confusion_count']})" if r["top_confusion"] else "–"
        )
        rows.append([_e(label), _e(r["label_name"]), _e(r["images"]), _e(r["correct"]),
                     bar + _pct(r["accuracy"]), confusion])  # fmt: skip
    more = (
        f'<p class="note">Showing the {limit} worst of {len(table)} classes.</p>'
        if len(table) > limit
        else ""
    )
    return (
        head
        + _table(
            ["class", "name", "images", "correct", "accuracy", "most frequent wrong prediction"],
            rows,
            numeric=(0, 2, 3),
        )  # fmt: skip
        + more
        + "</section>"
    )


def _gallery(chosen: _Selection, pictures: _Pictures) -> str:
    if chosen.gallery.empty:
        return ""
    step = chosen.gallery_step
    rows = [pictures.row(m["image_id"], m["target_class"]) for _, m in chosen.gallery.iterrows()]
    rows = pd.DataFrame([r for r in rows if r is not None])
    if rows.empty:
        return ""
    figure = plots.grid_figure(rows, pictures.images(), columns=4, panel_size=2.6)
    spread = "" if step == 1 else f" (one in {step}, by image id)"
    return (
        '<section id="gallery"><h2>Gallery</h2>'
        f'<p class="lead">{len(rows)} images{spread}: the seed\'s overlay of the attribution '
        "mask and the photo. Red captions are misclassifications.</p>"
        f"{_png(figure, dpi=90, alt='gallery', css='wide')}</section>"
    )


def _errors(output: str, limit: int) -> str:
    errors = results.read_errors(output)
    head = '<section id="errors"><h2>Errors</h2>'
    if errors.empty:
        return head + '<p class="lead">No input failed: every input has result rows.</p></section>'
    by_stage = errors.groupby("stage").size().sort_values(ascending=False)
    stages = ", ".join(f"{_e(s)}: {n}" for s, n in by_stage.items())
    rows = [[f'<span class="mono">{_e(r.image_id)}</span>', _e(r.stage), _e(r.error)]
            for r in errors.sort_values("image_id").head(limit).itertuples()]  # fmt: skip
    return (
        head
        + f'<p class="lead">{len(errors)} inputs could not be processed ({stages}).</p>'
        + _table(["image", "stage", "reason"], rows)
        + (f'<p class="note">First {limit} shown.</p>' if len(errors) > limit else "")
        + "</section>"
    )


def _querying(output: str) -> str:
    snippet = (
        "import pandas as pd\n"
        f'meta = pd.read_parquet("{output}/results", columns=["file_name", "label_name", '
        '"predicted_name", "relative_delta"])\n\n'
        "from transforms.plots import audit_figure\n"
        f'audit_figure("{output}", "<file name or image_id>").savefig("heat_map.png")'
    )
    return (
        f'<section id="querying"><h2>Querying these results</h2><pre>{_e(snippet)}</pre></section>'
    )


def build_report(
    output: str,
    *,
    examples: int = 12,
    gallery: int = 16,
    classes: int = 100,
    image_root: str | None = None,
) -> str:
    """The HTML page of a run.

    Args:
      output: the run's `--output` folder.
      examples: cards in the misclassification and worst-completeness sections.
      gallery: images in the gallery (0: none).
      classes: classes listed in the per-class table (worst first).
      image_root: where the run's image folder is now, if it moved.
    """
    manifest = results.read_manifest(output)
    frame = _metadata(output)
    chosen = _Selection.of(frame, gallery)
    pictures = _Pictures(output, manifest, image_root)
    shown = (chosen.wrong.head(examples), chosen.worst.head(examples), chosen.gallery)
    keys = [(m["image_id"], int(m["target_class"])) for part in shown for _, m in part.iterrows()]
    # The true label's row of a misclassified image, where the run attributed it too.
    keys += [(m["image_id"], int(m["label"])) for _, m in chosen.wrong.head(examples).iterrows()]
    pictures.load(keys)

    model = manifest.get("model", {}).get("reference", "?")
    title = f"IG audit: {manifest.get('dataset')} with {model}"
    notes = "".join(f'<p class="note">Photos: {_e(n)}</p>' for n in list(pictures.notes)[:3])
    sections = [
        _summary(manifest),
        _misclassified(chosen, pictures, examples),
        _completeness(frame, manifest),
        _worst(chosen, pictures, examples, manifest.get("config", {}).get("tolerance") or None),
        _per_class(chosen.per_image, classes),
        _gallery(chosen, pictures),
        _errors(output, 50),
        _querying(output),
    ]
    links = [("summary", "Summary"), ("misclassified", "Misclassifications"),
             ("completeness", "Completeness"), ("worst-completeness", "Worst completeness"),
             ("per-class", "Per-class accuracy"), ("gallery", "Gallery"), ("errors", "Errors"),
             ("querying", "Querying")]  # fmt: skip
    nav = "".join(f'<a href="#{a}">{t}</a>' for a, t in links if f'id="{a}"' in "".join(sections))
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="lead">Integrated Gradients attributions of every image: what the model '
        f"predicted, where it looked, and how exact the attributions are. Output "
        f"<code>{_e(output)}</code>.</p>"
        f"<nav>{nav}</nav>"
        f"{_tiles(manifest, chosen)}{notes}"
        + "".join(sections)
        + f"<footer>Generated {generated} by <code>python -m pipeline.report</code>.</footer>"
        "</main></body></html>\n"
    )


def write_report(output: str, path: str, **kwargs: Any) -> str:
    """Builds the page of the run in `output` and writes it to `path` (local or gs://)."""
    page = build_report(output, **kwargs)
    with FileSystems.create(path, mime_type="text/html") as f:
        f.write(page.encode("utf-8"))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (2 for a bad --input)."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.report",
        description="Render a self-contained HTML audit page from an ig-audit output folder.",
    )
    parser.add_argument("--input", required=True, help="The run's --output folder.")
    parser.add_argument("--output", required=True, help="The HTML file to write.")
    parser.add_argument("--examples", type=int, default=12,
                        help="Cards per section (misclassifications, worst completeness).")  # fmt: skip
    parser.add_argument("--gallery", type=int, default=16, help="Images in the gallery (0: none).")
    parser.add_argument("--classes", type=int, default=100, help="Rows of the per-class table.")
    parser.add_argument("--image_root", default=None,
                        help="Where the run's image folder is now, if it moved.")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.examples < 0 or args.gallery < 0 or args.classes < 0:
        print("error: --examples, --gallery and --classes must be >= 0.", file=sys.stderr)
        return 2
    try:
        write_report(args.input, args.output, examples=args.examples, gallery=args.gallery,
                     classes=args.classes, image_root=args.image_root)  # fmt: skip
    except FileNotFoundError as e:
        print(f"error: --input {args.input!r}: {e}", file=sys.stderr)
        return 2
    print(f"Report of {args.input} written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
