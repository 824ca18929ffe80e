"""Model-randomisation sanity check of a finished run (Adebayo et al., 2018).

    python -m pipeline.sanity --input <output> [--images 8] [--stages 6] [--seed 0] [--steps N]

Takes the rows of the run's first N images (by image id; each image's
targets, with --target top_k), reloads the run's model (from
the manifest), and randomises its layers cascading from the output down: at
stage s the top s groups of layers hold Gaussian noise at their trained
scale, a weight whose values are all equal included
(`Classifier.randomize_layers`). At every stage IG is computed again for
the rows' targets with the run's settings (method, steps, tolerance,
baselines, score; --steps fixes the steps) and compared with the maps of the
intact model:

* Spearman rank correlation of the absolute per-pixel maps (|channel sum|);
* SSIM of the same maps, each scaled to [0, 1] by its 99th percentile, clipped;

both over the pixels that differ from a baseline (`content_mask`): elsewhere IG
is 0 in every map, whatever the model. IG multiplies its gradient by x - x', so
every map keeps part of the input's own structure whatever the weights: each
stage's similarity is compared, image by image, with that of the input alone
(`input_map`, x - x': IG of a model whose gradient is 1 everywhere), by an exact
sign test (`reference_test`). Maps that stay as close to the intact model's as the
input alone is, or closer, do not explain the model; maps further from them than
it depend on the trained weights beyond the input (`maps_changed`).
Writes `<output>/sanity/sanity.json` and `<output>/sanity/sanity.png` (input,
intact map and the map at each stage, per image).
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports below: a Ctrl-C in them is a stop too
    from pipeline.commands import run_module
    from pipeline.flags import sanity_parser

    run_module("pipeline.sanity", sanity_parser)

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from apache_beam.io.filesystems import FileSystems
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.commands import error_line, run_read_failure, to_stdout
from pipeline.flags import sanity_parser
from transforms import baselines as baselines_lib
from transforms import datasource, files, images, plots, results
from transforms.batch import baselines_and_scores, integrate_rows
from transforms.config import ESTIMATE_MARGIN, AttributionConfig
from transforms.errors import error_reason
from transforms.faithfulness import pixel_scores
from transforms.manifest import (
    LOCK_FILE,
    SANITY_DIR,
    SANITY_FIGURE,
    SANITY_JSON,
    awaited_template,
    completeness_bound,
    estimate_bound,
    how_it_ended,
    unfinished_status,
)
from transforms.quiet import import_tensorflow
from transforms.sign_test import binomial_tail, median_interval
from transforms.sinks import write_json
from transforms.tf_model import Classifier, ModelReference, ModelSpec, model_identity
from transforms.wording import count, printable

__all__ = [
    "MEASURES",
    "input_map",
    "main",
    "map_similarity",
    "maps_changed",
    "parse_stages",
    "print_report",
    "reference_test",
    "run",
    "signed_spearman",
    "stage_layers",
]

_LOG = logging.getLogger(__name__)
# The measures the decision tests, each against the input alone (`reference_test`).
MEASURES = ("spearman", "ssim")
# `content_box` of an image equal to its baselines: nothing differs, IG is 0 there.
_WHOLE = (slice(None), slice(None))


def _spec(model: dict[str, Any]) -> ModelSpec:
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    spec = {k: v for k, v in model.items() if k in fields}
    return ModelSpec(**{**spec, "input_range": tuple(spec["input_range"])})


def _same_model(spec: ModelSpec) -> None:
    """Refuses a model whose files changed since the run (its manifest's `identity`):
    the check would randomise another model than the one the run's maps are of."""
    reference = ModelReference(spec.reference, spec.kind, spec.location)
    try:
        now = model_identity(reference)
    except Exception as e:  # noqa: BLE001 - gone, unreadable: TF's and OS errors alike
        raise ValueError(
            f"the run's model {spec.location!r} cannot be read ({error_reason(e)}): the "
            f"check reloads the model the run used; {_restore_advice(reference)}."
        ) from e
    if now != spec.identity:
        raise ValueError(
            f"the run's model {spec.location!r} changed since the run (identity "
            f"{spec.identity} then, {now} now): the check would test another model than "
            "the one its maps are of; audit again with this model, or restore the run's."
        )


def _restore_advice(model: ModelReference) -> str:
    """How to give the check its model back: a relative location, as versions before
    absolute ones recorded a local --model, is read from the folder the check runs in."""
    if model.is_local_path and not os.path.isabs(model.location):
        return (
            "its path is relative to the folder the run was started in (as earlier "
            "versions recorded it): run the check from that folder, or restore the model there"
        )
    return "restore it where the run read it"


def _config(config: dict[str, Any]) -> AttributionConfig:
    """The run's attribution settings as its manifest records them. A run of a version
    before the estimate's margin (no `estimate_bound`) had its --tolerance bound the
    estimate itself, and one before --completeness_tolerance had it bound completeness
    too: their maps are computed again with the bounds they were held to."""
    fields = {f.name for f in dataclasses.fields(AttributionConfig)}
    values = {k: v for k, v in config.items() if k in fields}
    if values.get("tolerance"):
        values["completeness_tolerance"] = completeness_bound(config)
        if "estimate_bound" not in config:
            values["tolerance"] = estimate_bound(config) * ESTIMATE_MARGIN
    return AttributionConfig(**{**values, "baselines": tuple(values["baselines"])})


def _fixed_steps(config: AttributionConfig, steps: int | None) -> AttributionConfig:
    """The run's settings, or with `steps` (--steps) fixed: no refinement, no bound.

    The check asks how alike two maps are, not how accurate each is: on the sample's
    8 photos, 8 steps gave the same sign-test counts as the run's settings (25 steps
    refined to a 1.5 % error, up to 256) at a twentieth of the cost
    (docs/faithfulness.md). Raises `ConfigError` (a ValueError) for steps the
    method cannot take."""
    if steps is None:
        return config
    return dataclasses.replace(
        config, steps=steps, max_steps=steps, tolerance=0.0, completeness_tolerance=None
    )


def parse_stages(text: str) -> int | list[str]:
    """--stages: a number of stages, or layer names separated by commas (spaces
    around a name are not part of it: `logits, head_conv`)."""
    text = text.strip()
    if text.lstrip("+-").isdigit():  # a negative number is refused as one, not as a name
        return int(text)
    return [name.strip() for name in text.split(",")]


def stage_layers(layers: Sequence[str], stages: int | Sequence[str]) -> list[list[str]]:
    """The layers randomised at each stage, cascading from the top (output) down.

    Args:
      layers: layer names from the output down (`Classifier.weight_layers`).
      stages: a number of stages (cut points spread over the layers, the last
        randomising all of them), or layer names: stage s randomises every layer
        from the top down to the s-th name.

    Returns:
      Per stage, all layers randomised by then (a prefix of `layers`).
    """
    if isinstance(stages, int):
        if stages < 1:
            raise ValueError(f"--stages must be >= 1, got {stages}.")
        # Spread from the last cut, all layers, so that one stage is the whole model.
        cuts = sorted({int(c) for c in np.round(np.geomspace(len(layers), 1, stages))})
    else:
        _check_stage_names(layers, stages)
        cuts = sorted(layers.index(s) + 1 for s in stages)
    return [list(layers[:cut]) for cut in cuts]


def _check_stage_names(layers: Sequence[str], stages: Sequence[str]) -> None:
    """--stages names each layer with weights once: an empty name (a stray comma) or a
    name given twice is refused, as is a name of no such layer (listing the model's)."""
    twice = [s for i, s in enumerate(stages) if s in stages[:i]]
    said = None
    if "" in stages:
        said = f"--stages {','.join(stages)!r} has an empty name"
    elif twice:
        said = f"--stages {','.join(stages)!r} names {twice[0]!r} twice"
    if said:
        example = ",".join(layers[:2])
        raise ValueError(
            f"{said}; name each layer with weights once, separated by commas, e.g. "
            f"--stages {example}."
        )
    unknown = [s for s in stages if s not in layers]
    if unknown:
        listed = ", ".join(repr(s) for s in unknown)
        are = "is not a layer" if len(unknown) == 1 else "are not layers"
        raise ValueError(
            f"--stages {listed} {are} with weights; the model's, from the output down: "
            f"{', '.join(layers)}."
        )


def _attribute(
    model: Classifier,
    config: AttributionConfig,
    inputs: np.ndarray,
    image_ids: Sequence[str],
    targets: np.ndarray,
) -> np.ndarray:
    """IG of the rows with the run's settings: float32 [N, H, W, C]."""
    spec = model.spec
    # The job's baselines and their scores, computed as the job computes them.
    refs, ref_scores = baselines_and_scores(model, inputs, image_ids, config, spec)
    out = targets + spec.label_offset
    zeros = np.zeros(len(inputs), np.float32)
    target_scores = model.score_fn(config.score)(inputs, inputs, zeros, out).astype(np.float64)
    rows = (np.arange(len(inputs)), out)
    return integrate_rows(model, config, inputs, refs, ref_scores, rows, target_scores).attributions


def map_similarity(
    original: np.ndarray, other: np.ndarray, where: np.ndarray | None = None
) -> tuple[float, float]:
    """(Spearman, SSIM) of two maps' absolute per-pixel values.

    Args:
      original, other: float [H, W, C] or [H, W] attribution maps.
      where: bool [H, W], the pixels compared (default all). Pixels equal to every
        baseline have IG 0 in every map, however random the model: compared, their
        tie at 0 made unrelated maps of a mostly black image look alike.

    Returns:
      Spearman rank correlation in [-1, 1] of |pixel_scores| over `where`, and SSIM
      in [-1, 1] of the same maps scaled to [0, 1] (`_unit_range`: by their 99th
      percentile over `where`, clipped), averaged over the windows centred on
      `where` (skimage's mean when `where` is everything); NaN
      where a map is constant or not finite there, and SSIM NaN where the maps have
      fewer than 3 rows or columns (no 3 x 3 window fits: a content box of a line
      or a panorama) or no window centre is in `where`.
    """
    from scipy.stats import spearmanr  # noqa: PLC0415

    a, b = np.abs(pixel_scores(original)), np.abs(pixel_scores(other))
    where = np.ones(a.shape, bool) if where is None else np.asarray(where, bool)
    if _no_similarity(a, b, where) is not None:
        return float("nan"), float("nan")
    rho = float(spearmanr(a[where], b[where]).statistic)
    return rho, _masked_ssim(_unit_range(a, where), _unit_range(b, where), where)


def _no_similarity(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> str | None:
    """Why two maps' absolute values (float [H, W]) have no similarity over `where`
    (`map_similarity`'s NaNs: the one place that is decided): "not finite", or "first"
    / "second", that map being 0 everywhere or constant over `where`; None: they have."""
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return "not finite"
    for which, values in (("first", a), ("second", b)):
        if values.max() == 0 or not where.any() or np.ptp(values[where]) == 0:
            return which
    return None


# The percentile of a map's values over its content that `_unit_range` scales to 1.
_TOP_PERCENTILE = 99.0


def _unit_range(a: np.ndarray, where: np.ndarray) -> np.ndarray:
    """float [H, W] >= 0 scaled to [0, 1] for SSIM: divided by its `_TOP_PERCENTILE`
    over `where` (its maximum there, where that percentile is 0), clipped at 1.

    SSIM's constants are fixed for a data range of 1. Scaled by its maximum, a
    heavy-tailed map (IG's: a few pixels carry most of it) sits near 0 but for a few
    pixels, where the constants outweigh its variance: two independent such maps
    (|Cauchy| noise) had SSIM 0.89, lognormal ones 0.56, with Spearman about 0."""
    top = float(np.percentile(a[where], _TOP_PERCENTILE))
    top = top if top > 0 else float(a[where].max())
    return np.minimum(a / top, 1.0)


def _masked_ssim(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """SSIM of two [H, W] maps in [0, 1] (skimage's: 7 x 7 uniform windows, sample
    covariances, K1 0.01, K2 0.03), each window's means, variances and covariance
    taken over its pixels in `where` only, averaged over the windows centred in
    `where` and wholly inside the maps. Where `where` is everything, skimage's SSIM.

    Pixels outside `where` equal every baseline: IG is 0 there in every map, so
    zeros shared by construction would count as structure shared by the maps."""
    from scipy.ndimage import uniform_filter  # noqa: PLC0415

    if _no_ssim(where) is not None:
        return float("nan")
    window = _ssim_window(where)
    m = where.astype(np.float64)
    a, b = a.astype(np.float64) * m, b.astype(np.float64) * m
    mean = functools.partial(uniform_filter, size=window)
    share = mean(m)
    count = share * window**2
    with np.errstate(divide="ignore", invalid="ignore"):
        ua, ub = mean(a) / share, mean(b) / share
        norm = count / (count - 1)
        va = norm * (mean(a * a) / share - ua * ua)
        vb = norm * (mean(b * b) / share - ub * ub)
        vab = norm * (mean(a * b) / share - ua * ub)
    c1, c2 = 0.01**2, 0.03**2
    local = (2 * ua * ub + c1) * (2 * vab + c2) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    inner, centres = _ssim_centres(where, count)
    return float(local[inner][centres].mean())


def _ssim_window(where: np.ndarray) -> int:
    """The side of `_masked_ssim`'s windows over a region [H, W] at least 3 x 3: 7, or
    the largest odd side that fits."""
    side = min(where.shape)
    return min(7, side if side % 2 else side - 1)


def _ssim_centres(where: np.ndarray, count: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:
    """The windows `_masked_ssim` averages: (the pixels whose window is wholly inside
    the region, bool mask of those centred in `where` with 2 or more of its pixels in
    their window; `count`: per pixel, how many its window holds)."""
    pad = (_ssim_window(where) - 1) // 2
    inner = (slice(pad, where.shape[0] - pad), slice(pad, where.shape[1] - pad))
    return inner, where[inner] & (count[inner] > 1.5)


def _no_ssim(where: np.ndarray) -> str | None:
    """Why `_masked_ssim` has no value over a region's `where` whatever the maps: "thin"
    (under 3 rows or columns: no window fits), "scattered" (no window centred in
    `where` holds 2 of its pixels); None where it has windows."""
    from scipy.ndimage import uniform_filter  # noqa: PLC0415

    if min(where.shape) < 3:
        return "thin"
    window = _ssim_window(where)
    count = uniform_filter(where.astype(np.float64), size=window) * window**2
    return None if _ssim_centres(where, count)[1].any() else "scattered"


def signed_spearman(
    original: np.ndarray, other: np.ndarray, where: np.ndarray | None = None
) -> float:
    """Spearman rank correlation of two maps' signed per-pixel values (`pixel_scores`)
    over `where` (default all), in [-1, 1]; NaN where a map is constant or not finite
    there. Adebayo et al. report it beside the absolute one: a map and its negation
    are -1 here and 1 by `map_similarity`, which the decision uses (a randomised
    model's sign is arbitrary)."""
    from scipy.stats import spearmanr  # noqa: PLC0415

    a, b = pixel_scores(original), pixel_scores(other)
    where = np.ones(a.shape, bool) if where is None else np.asarray(where, bool)
    if not (np.isfinite(a[where]).all() and np.isfinite(b[where]).all()):
        return float("nan")
    if not where.any() or np.ptp(a[where]) == 0 or np.ptp(b[where]) == 0:
        return float("nan")
    return float(spearmanr(a[where], b[where]).statistic)


def input_map(inputs: np.ndarray, references: np.ndarray) -> np.ndarray:
    """The map of the input alone: x - x', averaged over the baselines.

    IG's map is x - x' times the path's mean gradient; this is IG of a model whose
    gradient is 1 everywhere (F = sum of x), a map without weights. Every map shares
    this much of the image's own structure whatever the weights: the similarity
    with it is what a map reaches without a model (`reference_test`).

    Args:
      inputs: float [H, W, C], the image in the model's input range.
      references: float [B, H, W, C], its baselines.

    Returns:
      float [H, W, C].
    """
    return np.mean(inputs[None].astype(np.float64) - references, axis=0)


# Differences from the input alone's similarity within this are ties (float rounding,
# a swap of two near-equal pixels' ranks): evidence neither way.
_TIE = 1e-3


def reference_test(
    ids: Sequence[str], values: Sequence[float | None], reference: Sequence[float | None]
) -> dict[str, Any]:
    """A stage's similarity against the input alone's, image by image: exact sign
    tests of the stage's maps being further from the intact ones than the input
    alone is, and of their not being so.

    Args:
      ids: the rows' image ids (an image's targets are rows of one image).
      values: per row, the stage's similarity with the intact map (None or NaN: none).
      reference: per row, the input alone's (`input_map`) similarity with the intact map.

    Returns:
      {"images": images with both values in some row (each its rows' median
      difference, stage minus input alone: an image's targets share its input, so
      they are not independent trials), "below" / "ties" / "above": images whose
      difference is below -`_TIE` / within `_TIE` / above it, "p_below": the one-sided
      sign test's P(X >= below), X ~ Binomial(images, 1/2) (a tie counts as no
      win: conservative), "p_not_below": P(X >= ties + above), the same test the other
      way (1 with no image), "median_difference" (None with no image) and "interval"
      (its distribution-free 95 % interval, `median_interval`; None under 6 images)}.
    """
    differences: dict[str, list[float]] = {}
    for image_id, value, ref in zip(ids, values, reference, strict=True):
        if _finite(value) and _finite(ref):
            differences.setdefault(image_id, []).append(float(value) - float(ref))
    per_image = [float(np.median(d)) for d in differences.values()]
    n = len(per_image)
    below, above = sum(d < -_TIE for d in per_image), sum(d > _TIE for d in per_image)
    interval = median_interval(per_image)
    return {
        "images": n,
        "below": below,
        "ties": n - below - above,
        "above": above,
        "p_below": binomial_tail(below, n),
        "p_not_below": binomial_tail(n - below, n),
        "median_difference": float(np.median(per_image)) if per_image else None,
        "interval": list(interval) if interval else None,
    }


def _finite(value: float | None) -> bool:
    return value is not None and bool(np.isfinite(value))


def maps_changed(stage: dict[str, Any]) -> bool | None:
    """The check's decision on a stage (`_stage_report`; the one place it is made).

    Returns:
      True when, by both measures, its maps are further from the intact model's than
      the input alone is in significantly many images (`reference_test`'s p_below <
      `results.SIGNIFICANCE`): they depend on the weights beyond the input's own
      structure (both tests at `SIGNIFICANCE`: an intersection of tests needs no
      correction). False when, by either, they are not in significantly many
      (p_not_below below `SIGNIFICANCE` / 2, Bonferroni's for either of two): they keep
      as much of the intact maps as the input alone does, or more, whatever the
      weights. None otherwise: too few images, or no clear direction.
    """
    tests = [stage["reference_test"][m] for m in MEASURES]
    if all(t["p_below"] < results.SIGNIFICANCE for t in tests):
        return True
    if any(t["p_not_below"] < results.SIGNIFICANCE / len(MEASURES) for t in tests):
        return False
    return None


def _rule() -> str:
    """`maps_changed`'s and `_decision`'s rule in a sentence, for sanity.json's readers
    (`rule`: the HTML report), whose page cannot word it otherwise than the check."""
    return (
        "pass when, by both Spearman and SSIM, the randomised model's maps are further "
        "from the intact model's than the input alone (x - x') in significantly many "
        f"images (sign test, p < {results.SIGNIFICANCE}); fail when, by either, they are "
        "as close or closer in significantly many "
        f"(p < {results.SIGNIFICANCE / len(MEASURES):g}) with every layer randomised; "
        "undecided otherwise"
    )


def _decision(stages: list[dict[str, Any]], kept: Sequence[str] = ()) -> bool | None:
    """`changed`: `maps_changed` of the last stage, but None (undecided) where its maps
    stayed similar while layers below it (`kept`) keep their weights: the maps may
    depend on those; None too where a measure has no image with a value, as the
    verdict says (`_why_no_medians`), whatever the other measure's test."""
    if not _has_images(stages[-1]):
        return None
    changed = maps_changed(stages[-1])
    return None if changed is False and kept else changed


def _has_images(stage: dict[str, Any]) -> bool:
    """Whether each measure has an image with a value (`reference_test`'s images)."""
    return all(stage["reference_test"][m]["images"] for m in MEASURES)


def _kept_weights(last: dict[str, Any], kept: Sequence[str]) -> tuple[str, str]:
    """Why maps that stayed similar above layers left intact are undecided, and what
    may decide it (`_undecided`)."""
    names = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
    keeps = "keeps its" if len(kept) == 1 else "keep their"
    why = (
        f"the maps stay closer to the intact model's than the input alone with the layers "
        f"down to {last['layer']} randomised, but {count(len(kept), 'layer')} below "
        f"{keeps} trained weights ({names}), on which they may depend"
    )
    return why, (
        "randomise down to the input to decide (--stages as a number, or names ending at "
        f"{kept[-1]})"
    )


def _fewest_images() -> int:
    """The fewest images whose sign test can fall below `results.SIGNIFICANCE` (5)."""
    n = 1
    while binomial_tail(n, n) >= results.SIGNIFICANCE:
        n += 1
    return n


def _counts(stage: dict[str, Any], below: bool = True) -> str:
    """`k of n images by Spearman (p = ...) and ... by SSIM (p = ...)`: the images of
    the stage's `reference_test`s whose maps are further from the intact ones than
    the input alone (`below`), or not."""
    said = []
    for measure, name in zip(MEASURES, ("Spearman", "SSIM"), strict=True):
        test = stage["reference_test"][measure]
        k = test["below"] if below else test["images"] - test["below"]
        p = test["p_below"] if below else test["p_not_below"]
        said.append(f"{k} of {count(test['images'], 'image')} by {name} (p = {p:.2g})")
    return " and ".join(said)


def _verdict(
    stages: list[dict[str, Any]],
    reference: dict[str, Any],
    blank: int = 0,
    kept: Sequence[str] = (),
) -> str:
    """`_outcome`'s sentence, then the images its sign tests leave out, and why
    (`_not_counted`): every image checked is accounted for."""
    return _outcome(stages, reference, blank, kept) + _not_counted(stages[-1])


def _outcome(
    stages: list[dict[str, Any]],
    reference: dict[str, Any],
    blank: int = 0,
    kept: Sequence[str] = (),
) -> str:
    """Whether the maps of the last stage are further from the intact model's than the
    input alone is (`maps_changed`), with the sign tests' counts and the medians (the
    input alone's: `reference`, `_similarities`'s); `blank`: rows whose image equals its baselines (`content_box`), whose maps are 0;
    `kept`: the layers with weights the last stage left intact (names that stop above
    the input), which leave maps that stayed similar undecided."""
    last = stages[-1]
    numbers = _medians_said(last, reference)
    changed = _decision(stages, kept)
    undecided = _undecided(stages, blank, kept)
    if undecided is not None:
        why, advice = undecided
        return f"undecided: {why}{'; ' + advice if advice else ''} ({numbers})."
    if changed:
        first = next(s["layer"] for s in stages if maps_changed(s))
        return (
            "pass: the randomised model's maps are further from the intact model's than "
            f"the input alone (x - x') in {_counts(last)}: they depend on the "
            f"model's weights beyond the input's own structure ({numbers}; first so at "
            f"{first})."
        )
    return (
        "fail: the randomised model's maps stay at least as close to the intact model's "
        f"as the input alone (x - x') in {_counts(last, below=False)}: they keep as much "
        "of them as the input gives any map, or more, whatever the weights, and do not "
        f"explain the model ({numbers})."
    )


def _medians_said(last: dict[str, Any], reference: dict[str, Any]) -> str:
    """The verdict's numbers: the last stage's medians and the input alone's, and the
    layers it randomised; "no medians" where no image has both measures (they are of
    the rows with both, `_similarities`), never "nan"."""
    layers = f"{count(last['layers_randomised'], 'layer')} randomised, down to {last['layer']}"
    values = [last[f"{m}_median"] for m in MEASURES] + [reference[f"{m}_median"] for m in MEASURES]
    if not any(_finite(v) for v in values):
        return f"no medians, with {layers}"
    rho, ssim, rho_alone, ssim_alone = (f"{v:.2f}" if _finite(v) else "none" for v in values)
    return (
        f"median Spearman {rho} (the input alone {rho_alone}), SSIM {ssim} (the input "
        f"alone {ssim_alone}) with {layers}"
    )


def _undecided(
    stages: list[dict[str, Any]], blank: int = 0, kept: Sequence[str] = ()
) -> tuple[str, str | None] | None:
    """Why the check is undecided (`_decision` None) and what may decide it (None: no
    advice), in the words its verdict ends with and sanity.json's `advice` records
    (`_report`); None where it decided. `blank`, `kept`: as `_verdict`'s."""
    last = stages[-1]
    if not _has_images(last):
        return _why_no_medians(last, blank)
    if _decision(stages, kept) is not None:
        return None
    if maps_changed(last) is False:
        return _kept_weights(last, kept)
    images = min(last["reference_test"][m]["images"] for m in MEASURES)
    advice = (
        f"{count(images, 'image')} cannot show it at p < {results.SIGNIFICANCE} "
        f"(it takes {_fewest_images()}: --images)"
        if images < _fewest_images()
        else "more images may decide it (--images, or a run of more images)"
    )
    why = (
        "the randomised model's maps are further from the intact model's than the input "
        f"alone (x - x') in {_counts(last)}: not shown by both measures at p < "
        f"{results.SIGNIFICANCE}, nor the reverse"
    )
    return why, advice


def _why_no_medians(stage: dict[str, Any], blank: int = 0) -> tuple[str, str | None]:
    """Why a stage (`_stage_report`) has no medians: its images' content is too thin for
    SSIM (a Spearman, no SSIM), or `blank` of its rows are of an image equal to its
    baselines (maps 0 whatever the model), and the others', image by image, are in the
    verdict's last sentence (`_not_counted`: a flat image's input alone, a map that is
    constant or not finite); and what may decide it (`_undecided`). A stage without
    `unscored` (`_account`'s) says its maps are not finite."""
    pairs = zip(stage["spearman"], stage["ssim"], strict=True)
    thin = sum(rho is not None and ssim is None for rho, ssim in pairs)
    listed = "unscored" in stage
    if not thin and not blank:
        if listed:
            return "no image has both measures, for the reasons this verdict ends with", (
                "check more images (--images)"
            )
        return "the randomised model gave no finite maps", None
    rows = len(stage["ssim"])
    reasons = [
        f"the image of {count(blank, 'row')} of {rows} equals its baseline, where IG is 0 "
        "whatever the model (no map to compare)"
    ] * bool(blank) + [
        f"the content of {count(thin, 'row')} of {rows} (its pixels that differ from the "
        "baseline) is under 3 pixels high or wide, too thin for SSIM (a panorama or a line "
        "on black)"
    ] * bool(thin)
    others = rows - thin - blank
    if others:
        reasons.append(
            f"{count(others, 'other row')} of {rows} lack{'s' * (others == 1)} one for the "
            "reasons this verdict ends with"
            if listed
            else "the other maps are constant or not finite"
        )
    return "no image has both measures: " + ", and ".join(reasons), "check more images (--images)"


# Why an image has no value by a measure (a stage's `unscored`), as sanity.json and
# the verdict say it (`_why_unscored`'s keys).
_UNSCORED = {
    "blank": "equal to its baseline, where IG is 0 whatever the model",
    "flat": (
        "its input alone (x - x') is constant over its content (a flat or two-colour "
        "image): no ranks or structure to compare the maps with"
    ),
    "intact": "the intact model's map is 0, or constant over its content",
    "randomised": "the randomised model's map is 0, or constant over its content",
    "not finite": "a map is not finite",
    "thin": "its content is under 3 pixels high or wide, too thin for SSIM's windows",
    "scattered": (
        "no SSIM window centred on its content holds 2 of its pixels (content of "
        "scattered single pixels)"
    ),
}


def _why_unscored(
    intact: np.ndarray, alone: np.ndarray, randomised: np.ndarray, region: tuple
) -> tuple[str | None, str | None]:
    """Why a row has no Spearman and no SSIM to test (`reference_test` takes its
    randomised map's similarity and its input alone's, each with its intact map, over
    its `_content` `region`): `_UNSCORED` keys, None where it has that measure."""
    box, where = region
    if box == _WHOLE:
        return "blank", "blank"
    a = np.abs(pixel_scores(intact[box]))
    for other, second in ((alone, "flat"), (randomised, "randomised")):
        why = _no_similarity(a, np.abs(pixel_scores(other[box])), where)
        if why is not None:
            why = {"first": "intact", "second": second}.get(why, why)
            return why, why
    return None, _no_ssim(where)


def _unscored(
    ids: Sequence[str],
    stage: dict[str, Any],
    reference: dict[str, Any],
    reasons: Sequence[tuple[str | None, str | None]],
) -> dict[str, list[dict[str, str]]]:
    """A stage's `unscored`: per measure, the images that its `reference_test` leaves
    out (no row with both the stage's and the input alone's value), in the rows'
    order, each {"image_id", "reason"} (`_UNSCORED`'s words, of its first row's
    `_why_unscored` reason)."""
    unscored = {}
    for i, measure in enumerate(MEASURES):
        scored, why = set(), {}
        for r, image_id in enumerate(ids):
            if _finite(stage[measure][r]) and _finite(reference[measure][r]):
                scored.add(image_id)
            why.setdefault(image_id, reasons[r][i] or "not finite")
        unscored[measure] = [
            {"image_id": image_id, "reason": _UNSCORED[key]}
            for image_id, key in why.items()
            if image_id not in scored
        ]
    return unscored


def _account(
    reports: list[dict[str, Any]],
    maps: Sequence[np.ndarray],
    rows: tuple[np.ndarray, np.ndarray, Sequence[tuple]],
    ids: Sequence[str],
    reference: dict[str, Any],
) -> None:
    """Adds to each stage's report (`_stage_report`'s, of `maps`: its randomised
    model's maps) its `unscored` images and why (`_unscored`); `rows`: the intact maps,
    the input alone's and the rows' `_content` regions."""
    original, plain, regions = rows
    for stage, randomised in zip(reports, maps, strict=True):
        why = [
            _why_unscored(*row) for row in zip(original, plain, randomised, regions, strict=True)
        ]
        stage["unscored"] = _unscored(ids, stage, reference, why)


# Images named per reason in the verdict's account of those without a value.
_NAMED = 5


def _not_counted(stage: dict[str, Any]) -> str:
    """The verdict's last sentence: the images checked that a measure's sign test does
    not count, having no value by it (a stage's `unscored`), by both measures and by
    one alone, each with why; "" where every image counts (or the stage, of a version
    before `unscored`, does not say)."""
    left = {m: (stage.get("unscored") or {}).get(m) or [] for m in MEASURES}
    if not any(left.values()):
        return ""
    first = MEASURES[0]
    images = count(stage["reference_test"][first]["images"] + len(left[first]), "image")
    both = set.intersection(*({u["image_id"] for u in left[m]} for m in MEASURES))
    groups = [("both measures", [u for u in left[first] if u["image_id"] in both])]
    for measure, name in zip(MEASURES, ("Spearman", "SSIM"), strict=True):
        groups.append((f"{name} alone", [u for u in left[measure] if u["image_id"] not in both]))
    said = [f"by {by}, {len(g)} of {images} ({_named(g)})" for by, g in groups if g]
    return f" Not counted, without a value: {'; '.join(said)}."


def _named(unscored: list[dict[str, str]]) -> str:
    """`a.png, b.png: why; c.png: why`: images of a stage's `unscored` by reason, in
    order, up to `_NAMED` a reason (then how many more, listed in sanity.json)."""
    by_reason: dict[str, list[str]] = {}
    for u in unscored:
        by_reason.setdefault(u["reason"], []).append(u["image_id"])
    said = []
    for reason, ids in by_reason.items():
        names = ", ".join(ids[:_NAMED])
        if len(ids) > _NAMED:
            names += f" and {len(ids) - _NAMED} more (sanity.json lists them)"
        said.append(f"{names}: {reason}")
    return "; ".join(said)


def _similarities(similarity: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Per row (Spearman, SSIM) as strict JSON (NaN as null) and their medians over
    the rows with both (so that the two medians are of the same rows; NaN with none)."""
    rho = np.array([s[0] for s in similarity], np.float64)
    ssim = np.array([s[1] for s in similarity], np.float64)
    finite = np.isfinite(rho) & np.isfinite(ssim)
    return {
        "spearman_median": float(np.median(rho[finite])) if finite.any() else float("nan"),
        "ssim_median": float(np.median(ssim[finite])) if finite.any() else float("nan"),
        # Per row; null where a map was constant or not finite (strict JSON).
        "spearman": [float(v) if np.isfinite(v) else None for v in rho],
        "ssim": [float(v) if np.isfinite(v) else None for v in ssim],
    }


def _stage_report(
    layers: list[str],
    similarity: list[tuple[float, float]],
    reference: dict[str, Any],
    ids: Sequence[str],
    signed: Sequence[float] | None = None,
) -> dict[str, Any]:
    """A stage's entry of sanity.json: its rows' `similarity` (Spearman, SSIM) with the
    intact maps, their `reference_test`s against the input alone's (`reference`,
    `_similarities`'s) for the rows' image `ids`, and the signed Spearman per row
    (`signed_spearman`, reported, not judged), and the stage's own decision: `changed`
    (`maps_changed`: true, false or null) and `similar` (its being false)."""
    stage = {"layer": layers[-1], "layers_randomised": len(layers), **_similarities(similarity)}
    signed = np.array([np.nan] * len(similarity) if signed is None else signed, np.float64)
    stage["spearman_signed"] = [float(v) if np.isfinite(v) else None for v in signed]
    finite = np.isfinite(signed)
    stage["spearman_signed_median"] = float(np.median(signed[finite])) if finite.any() else None
    stage["reference_test"] = {m: reference_test(ids, stage[m], reference[m]) for m in MEASURES}
    stage["changed"] = maps_changed(stage)
    stage["similar"] = stage["changed"] is False
    return stage


def _headings(layers: Sequence[str]) -> list[str]:
    """The figure's column headings: the intact model's, then per stage the layer its
    randomisation reached, from the output down (a layer's name alone read as a map of
    that layer); long names cut to fit the column."""
    return ["intact model", *[f"randomised down to\n{plots.shortened(n)}" for n in layers]]


def _figure(
    frame: pd.DataFrame, pictures: np.ndarray, maps: list[np.ndarray], titles: list[str]
) -> Figure:
    """Per row of `frame` (`_rows`) its image (float [H, W, 3] in [0, 1]), captioned with
    its file and target (an image's targets are rows alike; long names cut to fit the
    panel), and its maps per column: |channel sum|, scaled as the other figures' masks
    (`plots.attribution_mask`). Laid out when drawn (`plots.figure_png`, which keeps a
    glyph the font lacks off stderr)."""
    rows, cols = len(pictures), len(maps) + 1
    # Lines as tall as the maps (a square's 1.6 in), as the report's cards: square
    # panels left a blank band under each line of a 24 x 40 model's.
    height = plots.panel_height(pictures.shape[1:3], 1.6) * rows + 0.2
    fig = Figure(figsize=(1.6 * cols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(pictures[r])
        name, target = frame.file_name.iloc[r], frame.target_name.iloc[r]
        caption = f"{plots.shortened(name)}\n→ {plots.shortened(target)}"
        axes[r, 0].set_title(caption, fontsize=6, parse_math=False)  # `$` in a name is text
        for c, stage in enumerate(maps, start=1):
            scores = pixel_scores(stage[r])  # the map the check compares
            # NaN left blank (no value), where the mask would draw it at the top.
            heat = np.where(np.isnan(scores), np.nan, plots.attribution_mask(scores))
            axes[r, c].imshow(heat, cmap="inferno", vmin=0, vmax=1)
    for c, title in enumerate(titles, start=1):
        axes[0, c].set_title(title, fontsize=7, parse_math=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig


def content_mask(inputs: np.ndarray, references: np.ndarray) -> np.ndarray:
    """bool [H, W]: the pixels of an image that differ from a baseline.

    Elsewhere (the padding of a non-square image, a black background on a black
    baseline) IG is 0 by construction, x - x' being 0: the same in every map,
    however random the model. Compared there, unrelated maps would look alike.

    Args:
      inputs: float [H, W, C], the image in the model's input range.
      references: float [B, H, W, C], its baselines.
    """
    return np.any(inputs[None] != references, axis=(0, -1))


def content_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns holding a `content_mask`'s pixels: the region whose maps
    SSIM compares (its windows need whole rows and columns).

    Returns:
      (rows, columns); `_WHOLE`, (slice(None), slice(None)), where no pixel differs
      (IG is 0 everywhere then, whatever the model).
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return _WHOLE
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _content(
    config, spec, inputs, image_ids
) -> tuple[list[tuple[tuple[slice, slice], np.ndarray]], list[np.ndarray]]:
    """Per row: its image's `content_box` and, within the box, its `content_mask`; and
    its image's `input_map`, float [H, W, C]."""
    regions, plain = [], []
    for x, image_id in zip(inputs, image_ids, strict=True):
        references = baselines_lib.make_baselines(
            x, config.baselines, spec.input_range, image_id, config.seed
        )
        mask = content_mask(x, references)
        box = content_box(mask)
        regions.append((box, mask[box] if box != _WHOLE else np.ones_like(mask)))
        plain.append(input_map(x, references))
    return regions, plain


def _rows(output: str, manifest: dict[str, Any], count: int, image_root: str | None = None):
    """The rows of the first `count` images (by image id) whose input image can be
    re-loaded (from `image_root`, where the run's image folder is now, if it moved):
    every row of each, its k targets in a --target top_k run."""
    frame = results.read_results(
        output, columns=["image_id", "file_name", "target_class", "target_name"]
    )
    if frame.empty:
        raise ValueError(
            f"{output!r} has no result rows (every input failed, or the run wrote none): "
            "there is no map to check; see its errors/ or its report."
        )
    ids = frame.image_id.drop_duplicates()
    pictures = results.input_images(manifest, ids.head(4 * count), image_root)
    chosen = [i for i in ids if i in pictures][:count]
    first, frame = ids.iloc[0], frame[frame.image_id.isin(chosen)]
    if frame.empty:
        raise ValueError(
            f"No row of {output!r} has an input image that can be re-loaded "
            f"({_why_unavailable(manifest, first, image_root)}); "
            "run the check on a run over an image folder or the sample (TFDS images are "
            "not re-read), with its images where the run read them or --image_root "
            "where they are now."
        )
    return frame, np.stack([pictures[i] for i in frame.image_id])


def _why_unavailable(manifest: dict[str, Any], image_id: str, image_root: str | None) -> str:
    """Why the input image of `image_id` cannot be re-loaded (`results.ImageUnavailable`)."""
    try:
        results.load_input_image(manifest, image_id, image_root)
    except results.ImageUnavailable as e:
        return f"the first, {image_id!r}: {e}"
    return f"{image_id!r} loads now: it was unavailable a moment ago"


Regions = list[tuple[tuple[slice, slice], np.ndarray]]


def _compared(original: np.ndarray, maps: Sequence[np.ndarray], regions: Regions, measure):
    """`measure(intact, other, where)` per row, over its image's content (`_content`)."""
    return [
        measure(o[box], m[box], where)
        for o, m, (box, where) in zip(original, maps, regions, strict=True)
    ]


def _cascade(
    model: Classifier,
    plan: list[list[str]],
    seed: int,
    original: np.ndarray,
    attribute: Callable[[], np.ndarray],
    regions: Regions,
    reference: dict[str, Any],
    ids: Sequence[str],
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Randomises the model's layers stage by stage (each stage adds to the last) and
    compares the maps `attribute` gives then with the intact model's `original`,
    each over its image's content (`_content`: the box, and the pixels in it that
    differ from a baseline), and against the input alone's similarity (`reference`).

    Returns:
      Each stage's maps, float32 [N, H, W, C], and its `_stage_report`.
    """
    maps, reports, done = [], [], []
    for layers in plan:
        model.randomize_layers([name for name in layers if name not in done], seed)
        done = layers
        maps.append(attribute())
        similarity = _compared(original, maps[-1], regions, map_similarity)
        signed = _compared(original, maps[-1], regions, signed_spearman)
        stage = _stage_report(layers, similarity, reference, ids, signed)
        reports.append(stage)
        rho, ssim = stage["spearman_median"], stage["ssim_median"]
        _LOG.info("%s: median Spearman %.3f, SSIM %.3f", layers[-1], rho, ssim)
    return maps, reports


def _report(
    ids: list[str],
    targets: np.ndarray,
    config: AttributionConfig,
    seed: int,
    reports: list[dict[str, Any]],
    reference: dict[str, Any],
    blank: int = 0,
    kept: Sequence[str] = (),
) -> dict[str, Any]:
    """The contents of sanity.json (see `run`) from the stages' `_stage_report`s and
    the input alone's similarities (`reference`, `_similarities`'s); `blank`: rows
    whose image equals its baselines, `kept`: the layers left intact (see `_verdict`)."""
    report = {
        "images": len(dict.fromkeys(ids)),
        "rows": len(ids),  # an image's targets are a row each (--target top_k)
        "image_ids": ids,
        "target_classes": targets.tolist(),
        "settings": {
            "method": config.method,
            "steps": config.steps,
            "tolerance": config.tolerance,
            "baselines": list(config.baselines),
            "score": config.score,
            "seed": seed,
        },
        # No threshold on the medians (it was 0.5, a convention): each stage is tested
        # against the input alone, image by image (`reference_test`), at `significance`.
        "similar_threshold": None,
        "significance": results.SIGNIFICANCE,
        "reference": reference,
        "stages": reports,
        "verdict": _verdict(reports, reference, blank, kept),
        # The verdict's decision, for its readers (the HTML report): null is undecided.
        "changed": _decision(reports, kept),
        "rule": _rule(),
        # What may decide an undecided check, as its verdict ends (null: decided, or none).
        "advice": (_undecided(reports, blank, kept) or (None, None))[1],
    }
    for entry in [reference, *reports]:  # strict JSON: NaN medians as null, once read
        for key in ("spearman_median", "ssim_median"):
            entry[key] = entry[key] if np.isfinite(entry[key]) else None
    return report


def run(
    output: str,
    images_count: int = 8,
    stages: int | Sequence[str] = 6,
    seed: int = 0,
    image_root: str | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """Runs the check on a finished run in `output` and writes `<output>/sanity/`;
    `image_root`: where the run's image folder is now, if it moved; `steps`: IG at a
    fixed number of steps, intact model included (`_fixed_steps`), not the run's
    settings (None).

    Returns:
      The report written to sanity.json: {"images" (how many were checked), "rows"
      (their rows: each image's targets), "image_ids", "target_classes" (per row),
      "settings", "reference": the input alone's similarity with the intact maps
      ({"spearman_median", "ssim_median", "spearman", "ssim"}, `input_map`),
      "stages": [{"layer", "layers_randomised", "spearman_median", "ssim_median",
      "spearman", "ssim", "spearman_signed", "spearman_signed_median",
      "reference_test": {"spearman", "ssim"} (`reference_test`'s), "changed", "similar",
      "unscored": {"spearman", "ssim"}: the images each test leaves out, having no value,
      [{"image_id", "reason"}] (`_unscored`)}],
      "similar_threshold" (null: no threshold), "significance", "verdict",
      "changed", "rule", "advice"}: `changed` is `maps_changed` of the last stage (true,
      false or null), null too where its maps stayed similar while layers below it kept
      their weights, or where a measure has no image with a value; "rule" is the
      decision's rule in a sentence, "advice" what may decide an undecided check (null
      where decided, or where nothing more would: `_undecided`); a stage's `changed`
      is its own `maps_changed` (the cascade: where the maps first change), its
      `similar` that being false.
    """
    _check_counts(images_count, stages)  # before the rows are read, the model loaded
    manifest = results.read_manifest(output)
    _check_finished(output, manifest)
    _check_rereadable(output, manifest, image_root)
    _check_layered(output, manifest)
    _check_writable(output)
    spec, config = _spec(manifest["model"]), _fixed_steps(_config(manifest["config"]), steps)
    frame, pixels = _rows(output, manifest, images_count, image_root)
    _same_model(spec)
    inputs = images.scale_to_range(pixels, spec.input_range).astype(np.float32)
    ids, targets = list(frame.image_id), frame.target_class.to_numpy(np.int64)
    model = Classifier(spec)
    layers = model.weight_layers()
    plan = stage_layers(layers, stages)
    attribute = functools.partial(_attribute, model, config, inputs, ids, targets)
    original = attribute()
    regions, plain = _content(config, spec, inputs, ids)
    reference = _similarities(_compared(original, plain, regions, map_similarity))
    maps, reports = _cascade(model, plan, seed, original, attribute, regions, reference, ids)
    _account(reports, maps, (original, plain, regions), ids, reference)
    blank = sum(box == _WHOLE for box, _ in regions)
    kept = layers[len(plan[-1]) :]
    report = _report(ids, targets, config, seed, reports, reference, blank, kept)
    titles = _headings([s["layer"] for s in reports])
    figure = _figure(frame, pixels / 255.0, [original, *maps], titles)
    _write(output, report, plots.figure_png(figure, dpi=110))
    return report


def _check_counts(images_count: int, stages: int | Sequence[str]) -> None:
    """Refuses --images and a number of --stages under 1."""
    if images_count < 1:
        raise ValueError(f"--images must be >= 1, got {images_count}.")
    if isinstance(stages, int) and stages < 1:
        raise ValueError(f"--stages must be >= 1, got {stages}.")


class CannotWrite(Exception):
    """The check's files could not be written; the message names the folder and why."""


def _write(output: str, report: dict[str, Any], png: bytes) -> None:
    """Writes sanity/sanity.png, then sanity.json, each whole or not at all: a write
    cut short (a full disk, a quota) leaves the earlier files as they were."""
    folder = FileSystems.join(output, SANITY_DIR)
    try:
        files.write_whole(FileSystems.join(folder, SANITY_FIGURE), png, mime_type="image/png")
        write_json(FileSystems.join(folder, SANITY_JSON), report)
    except OSError as e:
        reason = f"{type(e).__name__}: {error_reason(e)}"
        raise CannotWrite(f"cannot write the sanity check to {folder!r} ({reason}).") from e


def _check_writable(output: str) -> None:
    """Refuses, before the model loads, a local `<output>/sanity` that is no folder
    (a file, or a symbolic link to nothing: a loop; a target gone, which was made, or
    could not be), or holds a folder named as one of its files: the check's write
    failed, or went astray, once the check was done.
    A link to nothing is refused as the job and the report refuse one on --output."""
    folder = files.join(output, SANITY_DIR)
    if files.is_remote(folder) or not os.path.lexists(folder):
        return
    if os.path.isdir(folder):
        _check_written_names(folder)
        return
    if os.path.islink(folder) and not os.path.exists(folder):
        why = f"a symbolic link to {os.readlink(folder)!r}, which does not exist"
        fix = "create it, or delete the link"
    else:
        why, fix = "a file, not a folder", "move it"
    raise CannotWrite(
        f"cannot write the sanity check to {folder!r}: it is {why}; {fix} (the check "
        "writes its files in that folder)."
    )


def _check_written_names(folder: str) -> None:
    """Refuses a folder, or a symbolic link into a folder that does not exist (which
    the write made: `transforms.files.links_into_no_folder`), named as a file the check
    writes in its existing `folder`."""
    for name in (SANITY_FIGURE, SANITY_JSON):
        path = files.join(folder, name)
        if os.path.isdir(path):
            raise CannotWrite(
                f"cannot write the sanity check to {folder!r}: it holds a folder named "
                f"{name}, where the check writes that file; move that folder."
            )
        if files.links_into_no_folder(path):
            raise CannotWrite(
                f"cannot write the sanity check to {folder!r}: it holds a symbolic link named "
                f"{name} to {os.readlink(path)!r}, whose folder does not exist, where the "
                "check writes that file; create that folder, or delete the link."
            )


def _check_rereadable(output: str, manifest: dict[str, Any], image_root: str | None) -> None:
    """Refuses, before the rows are read and the model loaded, a run over a TFDS
    dataset: the check recomputes IG on the input images, which are re-read from the
    run's image folder or the sample, and a TFDS dataset's are not (`results`)."""
    source = datasource.source_of_manifest(manifest)
    if image_root is None and isinstance(source, datasource.TfdsSource):
        raise ValueError(
            f"--input {output!r} is a run over the TFDS dataset {source.name!r}: the check "
            "re-reads the images it checks, and a TFDS dataset's are not re-read (it would "
            "mean scanning the dataset); run the check on a run over an image folder or the "
            "bundled sample."
        )


def _check_layered(output: str, manifest: dict[str, Any]) -> None:
    """Refuses, before the rows are read and the model loaded, a run of a SavedModel or
    a TF Hub model: they hold variables but no Keras layers, which the check randomises
    from the output down (`Classifier.weight_layers`)."""
    model = manifest.get("model") or {}
    what = {"saved_model": "SavedModel", "hub": "TF Hub model"}.get(model.get("kind"))
    if what is None:
        return
    raise ValueError(
        f"--input {output!r} is a run of the {what} {model.get('reference')!r}, which has "
        "variables but no Keras layers to randomise one by one: the check needs the bundled "
        "model or a .keras file (a Keras model of your own: save it with "
        "model.save('model.keras'), audit that into another --output and run the check on "
        "that run)."
    )


def _check_finished(output: str, manifest: dict[str, Any]) -> None:
    """Refuses a run that has not finished (the check reads a finished run's rows): its
    rows are checkpointed in .tmp/ until it ends, and results/ holds none of them yet."""
    status = unfinished_status(manifest)
    if status is None:
        return
    template = awaited_template(output, manifest)
    if template is not None:  # built, its job not run or not ended: --resume is refused
        raise ValueError(
            f"{output!r} holds a run that has not finished (its manifest says {status!r}: "
            f"the folder waits for the job of the Dataflow template {template}), whose rows "
            "are not in its results/ yet; run the check when that job has ended (if the "
            "template will not run, or its job failed or was cancelled, delete "
            f"{files.join(output, LOCK_FILE)})."
        )
    ended = how_it_ended(manifest)
    if ended is not None:  # failed or stopped
        raise ValueError(
            f"{output!r} holds a run that did not finish (its manifest says {status!r}: "
            f"{ended}), whose rows are not in its results/; run the check once --resume "
            "has finished it."
        )
    raise ValueError(
        f"{output!r} holds a run that has not finished (its manifest says {status!r}: "
        "still running, or killed), whose rows are not in its results/ yet; run the "
        "check when it has ended (a killed run ends with --resume)."
    )


def _median(value: float | None) -> str:
    """A stage's median as printed: 3 decimals, or an en dash when there is none (null)."""
    return "–" if value is None else f"{value:.3f}"


def _checked(report: dict[str, Any], asked: int | None) -> str | None:
    """What was checked, where that is not simply the `asked` (--images) images: fewer
    (all the run has), or more rows than images (an image's targets, --target top_k)."""
    images = report["images"]
    rows = report.get("rows", images)
    fewer = asked is not None and images < asked
    if not fewer and rows == images:
        return None
    said = f"Checked {count(images, 'image')}"
    if rows != images:
        said += f" ({count(rows, 'row')}: a row per image and target)"
    if fewer:
        said += (
            f" of the {asked} asked (--images): all the run has whose input image can be re-loaded"
        )
    return said + "."


def print_report(report: dict[str, Any], output: str, asked: int | None = None) -> None:
    """Prints the stages' medians, the verdict and where the report was written; first,
    when fewer images were checked than `asked` (--images), that all were, and when an
    image had several rows (targets), how many. Layer names and the folder's as the
    log lines show them (`wording.printable`)."""
    checked = _checked(report, asked)
    if checked:
        print(checked)
    for stage in report["stages"]:
        print(
            f"{printable(stage['layer']):>24}  Spearman {_median(stage['spearman_median'])}  "
            f"SSIM {_median(stage['ssim_median'])}"
        )
    print(printable(report["verdict"], lines=True))
    print(f"Written: {printable(output)}/sanity/sanity.json and sanity.png")


def main(argv: Sequence[str] | None = None) -> int:
    args = sanity_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import_tensorflow(verbose=False)  # without its start-up lines, as the job does
    stages = parse_stages(args.stages)
    try:
        report = run(args.input, args.images, stages, args.seed, args.image_root, args.steps)
    except Exception as e:
        failure = run_read_failure("--input", args.input, e)
        if failure is None and not isinstance(e, (ValueError, CannotWrite)):
            raise
        error_line(str(e) if failure is None else failure[1])
        return 2 if failure is None else failure[0]
    to_stdout(lambda: print_report(report, args.input, asked=args.images))
    return 0
