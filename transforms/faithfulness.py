"""Faithfulness of attribution maps: deletion and insertion curves, framework-free.

Deletion and insertion (Petsiuk et al., RISE, 2018) ask whether the pixels a
map ranks first are the pixels the model needs:

* deletion: starting from the image, the pixels are set to the deletion
  reference (the run's baseline) in rank order; a faithful map makes the
  target's probability fall fast (small area under the curve);
* insertion: starting from a blurred copy of the image, the image's own
  pixels are revealed in rank order; a faithful map makes the probability rise
  fast (large area).

Ranking: a map of shape H x W x C is reduced to one value per pixel by
summing its channels, signed, and pixels are ranked by that value,
descending (positive evidence first; equal values in the order of the row's
random control, below, so that a map of one value everywhere is the control). For a
linear model and a map against the deletion reference alone, the signed channel
sum is exactly what removing the pixel takes off the score, so this ranking is
the one that drops the score fastest (a map averaged over several baselines is not
against the reference alone); the curves follow the probability, in which softmax
cancels what every class's score gains alike, so a map exact for a logit can lose
to a random ranking. An H x W map is ranked as it is.

Steps: a curve has K steps, i.e. K + 1 points at fractions k / K of the pixels
(k = 0..K), ``round(k * P / K)`` pixels of P switched at point k.

Padding: of an image padded to the model's height x width, only its own P pixels
are ranked and switched (both rankings); its padding keeps the image's values in
every perturbed image, the blurred start included. Ranked with the rest, the
bars (0 in a map against a black baseline, and unchanged when deleted to black)
would let a map that ranks them last beat its random control by them alone.

AUC: with p_k the target's probability at point k and p(x) the image's own
probability for the target, the normalised curve is
``c_k = clip(p_k / p(x), 0, 1)`` and the AUC is its trapezoid-rule area over
[0, 1]: ``AUC = (1 / K) * (sum_k c_k - (c_0 + c_K) / 2)``, in [0, 1]. Points
where a perturbed image scores above the image itself count as 1.

Control: the same curves for a random ranking of the pixels, seeded by the
run seed and the image id (reruns and other targets of the image get the same
ranking); a map no better than chance has deletion AUC >= its random control
and insertion AUC <= its control.

Cost per row: 4 (K - 1) forward passes for the curves' inner points, plus the
blurred image and the deletion reference (the image's own probability is
known from the prediction). All rows' points share model calls of at most
`chunk_size` images, built chunk by chunk, so memory is bounded whatever the
batch and K.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from transforms.ig.engine import even_parts

__all__ = [
    "COLUMNS",
    "FAITHFULNESS_MODES",
    "FaithfulnessResult",
    "ProbabilityFn",
    "auc",
    "content_first",
    "deletion_insertion",
    "for_rows",
    "forward_passes_per_row",
    "from_outputs",
    "image_probability",
    "normalised",
    "pixel_scores",
    "random_ranking",
    "ranking",
    "row_columns",
    "step_counts",
]

FAITHFULNESS_MODES: tuple[str, ...] = ("deletion_insertion", "none")

ProbabilityFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``fn(images, targets) -> probabilities``.

Args:
  images: float32 [N, H, W, C], in the model's input range.
  targets: int64 [N], the output index of each image's target.

Returns:
  float [N]: the target's probability (softmax of the model's output), in [0, 1].
"""


def from_outputs(
    outputs_fn: Callable[[np.ndarray], np.ndarray],
    probabilities_fn: Callable[[np.ndarray], np.ndarray],
) -> ProbabilityFn:
    """The `ProbabilityFn` of a model's outputs and their float64 probabilities
    (`Classifier.logits` and `Classifier.probabilities`), computed as the image's own
    p(x) is: a float32 softmax flushes a probability below about 1e-38 to 0, and a
    target that improbable had curves of 0 against a p(x) above 0, and wrong AUCs."""

    def probabilities(images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        outputs = outputs_fn(np.asarray(images, dtype=np.float32))
        with np.errstate(invalid="ignore"):  # an infinite output: NaN, the AUC null
            values = np.asarray(probabilities_fn(outputs), dtype=np.float64)
        return values[np.arange(len(values)), np.asarray(targets, dtype=np.int64)]

    return probabilities


def pixel_scores(attribution: np.ndarray) -> np.ndarray:
    """One value per pixel: the signed sum over channels of an H x W x C map.

    Args:
      attribution: float [H, W, C] or [H, W].

    Returns:
      float64 [H, W].
    """
    attribution = np.asarray(attribution, dtype=np.float64)
    if attribution.ndim == 3:
        return attribution.sum(axis=-1)
    if attribution.ndim == 2:
        return attribution
    raise ValueError(f"An attribution map is [H, W, C] or [H, W], got shape {attribution.shape}.")


def ranking(attribution: np.ndarray, ties: np.ndarray | None = None) -> np.ndarray:
    """Pixels in the order they are switched: highest signed channel sum first.

    Args:
      attribution: float [H, W, C] or [H, W].
      ties: int [H * W], a permutation of the pixels that orders equal values (the
        row's `random_ranking`, as the job does); default index (row-major) order.

    Returns:
      int64 [H * W], flat (row-major) pixel indices; NaN values come last.

    Raises:
      ValueError: `ties` of another size, or no permutation (an entry repeated or
        outside 0..H*W-1, or not integers), naming the first entries at fault.
    """
    scores = pixel_scores(attribution).ravel()
    if ties is None:
        return np.argsort(-scores, kind="stable")
    ties = np.asarray(ties)
    if ties.shape != scores.shape:
        raise ValueError(
            f"ties must be a permutation of the {scores.size} pixels, got {ties.shape}."
        )
    if not np.issubdtype(ties.dtype, np.integer) or not np.array_equal(
        np.sort(ties), np.arange(scores.size)
    ):
        raise ValueError(_not_a_permutation(ties))
    return np.lexsort((_positions(ties[None])[0], -scores))


def _not_a_permutation(ties: np.ndarray) -> str:
    """Why `ties` (any dtype, [P]) is no permutation of 0..P-1: its first few faults."""
    pixels = ties.size
    said = f"ties must be a permutation of the {pixels} pixels (0 to {pixels - 1}, each once)"
    if not np.issubdtype(ties.dtype, np.integer):
        return f"{said}: {ties.dtype} values, not integers."
    inside = (ties >= 0) & (ties < pixels)
    counts = np.bincount(ties[inside], minlength=pixels)
    faults = [f"{v} is no pixel" for v in np.unique(ties[~inside])[:3].tolist()]
    for v in np.flatnonzero(counts > 1)[:3].tolist():
        faults.append(f"{v} given twice" if counts[v] == 2 else f"{v} given {counts[v]} times")
    faults += [f"{v} missing" for v in np.flatnonzero(counts == 0)[:3].tolist()]
    return f"{said}: {'; '.join(faults)}."


def _ranking_seed(seed: int, image_id: str) -> int:
    # Salted, so that the ranking is independent of the `noise` baseline's draw.
    digest = hashlib.sha256(f"faithfulness:{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def random_ranking(num_pixels: int, image_id: str, seed: int = 0) -> np.ndarray:
    """The control's ranking: a permutation of the pixels seeded by `seed` and `image_id`.

    Returns:
      int64 [num_pixels], a permutation of 0..num_pixels-1.
    """
    return np.random.default_rng(_ranking_seed(seed, image_id)).permutation(num_pixels)


def step_counts(num_pixels: int, steps: int) -> np.ndarray:
    """Pixels switched at each of the K + 1 points: int64 [steps + 1], 0 to num_pixels."""
    if not isinstance(steps, int | np.integer) or not 1 <= steps <= num_pixels:
        raise ValueError(
            f"faithfulness steps must be an integer in [1, {num_pixels}] (the image's pixels), "
            f"got {steps!r}."
        )
    return _counts(num_pixels, steps)


def _counts(num_pixels: int | np.ndarray, steps: int) -> np.ndarray:
    """`step_counts` of each of `num_pixels` (a scalar, or [R] for [R, K + 1]); an
    image's own pixels may be fewer than K (a line of a panorama): points repeat."""
    pixels = np.asarray(num_pixels, dtype=np.float64)[..., None]
    return np.round(np.arange(steps + 1) * pixels / steps).astype(np.int64)


def content_first(order: np.ndarray, content: np.ndarray) -> np.ndarray:
    """`order` with the image's own pixels (`content`, bool [H, W], True there) first,
    each part in its order: a uniform permutation stays one of the image's pixels."""
    own = np.asarray(content, dtype=bool).ravel()[order]
    return np.concatenate([order[own], order[~own]])


def auc(curves: np.ndarray, image_probabilities: np.ndarray) -> np.ndarray:
    """Trapezoid area of curves normalised by the image's own probability.

    Args:
      curves: float [R, K + 1], the target's probability at each point.
      image_probabilities: float [R], p(x), the image's probability for the target.

    Returns:
      float64 [R] in [0, 1]: the area under clip(curve / p(x), 0, 1) over
      fractions k / K; NaN where p(x) is 0 or not finite.
    """
    curves = normalised(curves, image_probabilities)
    steps = curves.shape[1] - 1
    return (curves.sum(axis=1) - (curves[:, 0] + curves[:, -1]) / 2.0) / steps


def normalised(curves: np.ndarray, image_probabilities: np.ndarray) -> np.ndarray:
    """The curves as their AUCs measure them: clip(curve / p(x), 0, 1).

    Args:
      curves: float [R, K + 1], the target's probability at each point.
      image_probabilities: float [R], p(x).

    Returns:
      float64 [R, K + 1]; rows of NaN where p(x) is 0 or not finite.
    """
    curves = np.asarray(curves, dtype=np.float64)
    reference = np.asarray(image_probabilities, dtype=np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.clip(curves / reference, 0.0, 1.0)
    values[~(np.isfinite(reference) & (reference > 0)).repeat(curves.shape[1], 1)] = np.nan
    return values


def forward_passes_per_row(steps: int) -> int:
    """Model evaluations per row: 4 curves' inner points, the blurred image, the reference."""
    return 4 * (steps - 1) + 2


@dataclasses.dataclass
class FaithfulnessResult:
    """Deletion and insertion of R rows, IG's ranking and the random control.

    Attributes:
      deletion_curve, insertion_curve: float64 [R, K + 1], the target's
        probability at each point (not normalised), for the map's ranking.
      deletion_curve_random, insertion_curve_random: float64 [R, K + 1], the same
        for the random ranking.
      deletion_auc, insertion_auc, deletion_auc_random, insertion_auc_random:
        float64 [R] in [0, 1], see `auc`.
      forward_evaluations: int64 [R], model evaluations spent per row.
    """

    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    deletion_curve_random: np.ndarray
    insertion_curve_random: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray
    deletion_auc_random: np.ndarray
    insertion_auc_random: np.ndarray
    forward_evaluations: np.ndarray


def scattered(result: FaithfulnessResult, rows: np.ndarray, count: int) -> FaithfulnessResult:
    """`result` of the rows `rows` of `count` as a result of all of them: NaN curves
    and AUCs (0 evaluations) for the rows it does not hold."""

    def spread(values: np.ndarray) -> np.ndarray:
        fill = 0 if values.dtype.kind in "iu" else np.nan
        out = np.full((count, *values.shape[1:]), fill, dtype=values.dtype)
        out[rows] = values
        return out

    return FaithfulnessResult(
        **{f.name: spread(getattr(result, f.name)) for f in dataclasses.fields(result)}
    )


def _positions(orders: np.ndarray) -> np.ndarray:
    """Rank position of every pixel: int32 [R, P] from orders int [R, P] (inverse permutations)."""
    rows, pixels = orders.shape
    positions = np.empty((rows, pixels), dtype=np.int32)
    np.put_along_axis(positions, orders, np.arange(pixels, dtype=np.int32)[None], axis=1)
    return positions


def _points(rows: int, steps: int, image_known: bool) -> tuple[np.ndarray, np.ndarray]:
    """The (curve, point) pairs that need the model, curve = 4 * row + kind
    (0 deletion, 1 insertion, 2 and 3 the same for the random ranking).

    IG's deletion curve holds the image (point 0, unless known) and the reference
    (point K); its insertion curve the blurred image (point 0). Every other end is
    one of these, copied.
    """
    inner = np.arange(1, steps)
    deletion = np.concatenate([[0] if not image_known else [], inner, [steps]])
    insertion = np.concatenate([[0], inner])
    per_row = [deletion, insertion, inner, inner]
    curve = np.concatenate([np.full(len(k), kind) for kind, k in enumerate(per_row)])
    point = np.concatenate(per_row).astype(np.int64)
    curve = (np.arange(rows)[:, None] * 4 + curve[None]).ravel()
    return curve, np.tile(point, rows)


def _perturbed(images, references, starts, image_index, positions, counts, curve, point):
    """float32 [N, H, W, C]: for each (curve, point), the curve's start with the first
    counts[point] pixels of its ranking switched to its end."""
    out = np.empty((len(curve), *images.shape[1:]), dtype=np.float32)
    height, width = images.shape[1:3]
    for j, (c, k) in enumerate(zip(curve.tolist(), point.tolist(), strict=True)):
        row, kind = divmod(c, 4)
        i = image_index[row]
        start, end = (images[i], references[i]) if kind % 2 == 0 else (starts[i], images[i])
        switched = (positions[row, kind // 2] < counts[row, k]).reshape(height, width, 1)
        np.copyto(out[j], np.where(switched, end, start))
    return out


def _float_images(
    images: np.ndarray, references: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The images, references and starts as float32 [M, H, W, C], checked to be one shape."""
    images = np.asarray(images, dtype=np.float32)
    references = np.asarray(references, dtype=np.float32)
    starts = np.asarray(starts, dtype=np.float32)
    if references.shape != images.shape or starts.shape != images.shape:
        raise ValueError(
            f"references {references.shape} and starts {starts.shape} must have the images' "
            f"shape {images.shape}."
        )
    return images, references, starts


def _switch_positions(
    orders: np.ndarray, random_orders: np.ndarray, rows: int, pixels: int
) -> np.ndarray:
    """int32 [R, 2, P]: each pixel's rank in the map's ranking (0) and the control's (1)."""
    orders = np.stack([np.asarray(orders), np.asarray(random_orders)], axis=1)
    if orders.shape != (rows, 2, pixels):
        raise ValueError(f"orders must be [R, H * W] = [{rows}, {pixels}], got {orders.shape}.")
    return _positions(orders.reshape(rows * 2, pixels)).reshape(rows, 2, pixels)


def deletion_insertion(
    probability_fn: ProbabilityFn,
    images: np.ndarray,
    references: np.ndarray,
    starts: np.ndarray,
    image_index: Sequence[int] | np.ndarray,
    targets: Sequence[int] | np.ndarray,
    orders: np.ndarray,
    random_orders: np.ndarray,
    *,
    steps: int,
    chunk_size: int,
    image_probabilities: np.ndarray | None = None,
    own_pixels: np.ndarray | None = None,
) -> FaithfulnessResult:
    """Deletion and insertion curves and AUCs of R rows, for their rankings and the control.

    Args:
      probability_fn: the target's probability of a batch, see `ProbabilityFn`.
      images: float32 [M, H, W, C], the images in the model's input range.
      references: float32 [M, H, W, C], what deletion sets pixels to (the baseline).
      starts: float32 [M, H, W, C], what insertion reveals pixels over (a blurred image).
      image_index: int [R], the image of each row.
      targets: int [R], the output index each row scores.
      orders: int [R, H * W], each row's pixels in switching order (`ranking`).
      random_orders: int [R, H * W], the control's orders (`random_ranking`).
      steps: K, points per curve minus one.
      chunk_size: images per call of `probability_fn`, across rows; bounds memory.
      image_probabilities: float [R], p(x) for the target when known (saves a pass).
      own_pixels: int [R], how many pixels each row switches, its orders' first ones
        (an image's own, not its padding: `content_first`); default all H * W.

    Returns:
      A `FaithfulnessResult`.
    """
    images, references, starts = _float_images(images, references, starts)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    image_index = np.asarray(image_index, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    rows, pixels = len(image_index), images.shape[1] * images.shape[2]
    counts = _switch_counts(own_pixels, rows, pixels, steps)
    positions = _switch_positions(orders, random_orders, rows, pixels)
    curve, point = _points(rows, steps, image_probabilities is not None)
    perturb = functools.partial(
        _perturbed, images, references, starts, image_index, positions, counts
    )
    values = _probabilities(probability_fn, perturb, targets, curve, point, rows, steps, chunk_size)
    return _result(values, image_probabilities, curve)


def _switch_counts(own_pixels, rows: int, pixels: int, steps: int) -> np.ndarray:
    """int64 [R, K + 1]: the pixels each row's curves have switched at each point, its
    own pixels (`own_pixels`, int [R], default all `pixels`) spread over K steps.

    Raises:
      ValueError: K is not in [1, pixels], or `own_pixels` is not R counts in [1, pixels].
    """
    step_counts(pixels, steps)  # checks K
    own = np.full(rows, pixels) if own_pixels is None else np.asarray(own_pixels, np.int64)
    if own.shape != (rows,) or not ((own >= 1) & (own <= pixels)).all():
        raise ValueError(f"own_pixels must be [R] = [{rows}] counts in [1, {pixels}].")
    return _counts(own, steps)


def _probabilities(
    probability_fn: ProbabilityFn,
    perturb: Callable[[np.ndarray, np.ndarray], np.ndarray],
    targets: np.ndarray,
    curve: np.ndarray,
    point: np.ndarray,
    rows: int,
    steps: int,
    chunk_size: int,
) -> np.ndarray:
    """float64 [R, 4, K + 1]: the target's probability at each (curve, point) of
    `_points`, NaN elsewhere; `perturb(curve, point)` gives their images, evaluated
    in calls of at most `chunk_size`."""
    values = np.full((rows * 4, steps + 1), np.nan)
    for part in even_parts(len(curve), chunk_size):
        batch = perturb(curve[part], point[part])
        values[curve[part], point[part]] = probability_fn(batch, targets[curve[part] // 4])
    return values.reshape(rows, 4, steps + 1)


def _result(values: np.ndarray, image_probabilities, curve: np.ndarray) -> FaithfulnessResult:
    """Fills the ends every curve shares with IG's and computes the AUCs.

    values: float64 [R, 4, K + 1], NaN where not evaluated.
    """
    deletion, insertion = values[:, 0], values[:, 1]
    if image_probabilities is not None:
        deletion[:, 0] = np.asarray(image_probabilities, dtype=np.float64)
    insertion[:, -1] = deletion[:, 0]  # the image itself
    for kind in (2, 3):  # the control starts and ends where IG's curve of that kind does
        values[:, kind, [0, -1]] = values[:, kind - 2, [0, -1]]
    p_image = deletion[:, 0]
    aucs = [auc(values[:, kind], p_image) for kind in range(4)]
    rows = len(values)
    return FaithfulnessResult(
        *(values[:, kind].copy() for kind in range(4)),
        *aucs,
        forward_evaluations=np.bincount(curve // 4, minlength=rows).astype(np.int64),
    )


def image_probability(deletion: np.ndarray | None, insertion: np.ndarray | None) -> float | None:
    """p(x) read back from a row's stored curves, where `_result` put it: the deletion
    curve's start (nothing removed), else the insertion curve's end (all revealed);
    None where neither holds a value above 0."""
    ends = [c[i] for c, i in ((deletion, 0), (insertion, -1)) if c is not None and len(c)]
    known = [float(v) for v in ends if np.isfinite(v) and v > 0]
    return known[0] if known else None


def for_rows(
    probability_fn: ProbabilityFn,
    images: np.ndarray,
    references: np.ndarray,
    image_ids: Sequence[str],
    image_index: Sequence[int] | np.ndarray,
    targets: Sequence[int] | np.ndarray,
    attributions: np.ndarray,
    *,
    steps: int,
    chunk_size: int,
    seed: int = 0,
    image_probabilities: np.ndarray | None = None,
    content: np.ndarray | None = None,
) -> FaithfulnessResult:
    """`deletion_insertion` of attributed rows, with the job's rankings and blurred images
    (each image's `blur` baseline, `transforms.baselines.blurred`, on its own pixels).

    Args:
      probability_fn, images, references, image_index, targets, steps, chunk_size,
        image_probabilities: as in `deletion_insertion`.
      image_ids: str [M], the images' ids (they seed the random control).
      attributions: float [R, H, W, C] or [R, H, W], the rows' maps (see `ranking`).
      seed: the run's seed.
      content: bool [M, H, W], True on each image's own pixels, False on the padding
        that fits it to the model's height x width (see the module's docstring);
        default all True.
    """
    from transforms.baselines import blurred  # noqa: PLC0415 - NumPy only

    images = np.asarray(images, dtype=np.float32)
    if content is None:
        content = np.ones(images.shape[:3], dtype=bool)
    starts = np.where(content[..., None], np.stack([blurred(x) for x in images]), images)
    image_index = np.asarray(image_index, dtype=np.int64)
    return deletion_insertion(
        probability_fn,
        images,
        references,
        starts,
        image_index,
        targets,
        *_orders(attributions, image_ids, image_index, content, seed),
        steps=steps,
        chunk_size=chunk_size,
        image_probabilities=image_probabilities,
        own_pixels=content.reshape(len(images), -1).sum(axis=1)[image_index],
    )


def _orders(attributions, image_ids, image_index, content, seed) -> tuple[np.ndarray, ...]:
    """The rows' switching orders, the map's and the control's, int [R, H * W] each,
    each image's own pixels first (`content_first`). The map's equal values are
    ordered as the control orders them: a map of one value everywhere (no
    information) is its control, not a row-major scan that beats it where the
    evidence lies in the top rows."""
    pixels = content.shape[1] * content.shape[2]
    randoms = [random_ranking(pixels, image_ids[i], seed) for i in image_index]
    rows = zip(attributions, randoms, image_index, strict=True)
    orders = [content_first(ranking(a, ties=r), content[i]) for a, r, i in rows]
    controls = [content_first(r, content[i]) for r, i in zip(randoms, image_index, strict=True)]
    return np.stack(orders), np.stack(controls)


COLUMNS: tuple[str, ...] = (
    "deletion_auc",
    "insertion_auc",
    "deletion_auc_random",
    "insertion_auc_random",
    "deletion_curve",
    "insertion_curve",
)


def row_columns(result: FaithfulnessResult | None, r: int) -> dict[str, object]:
    """Row r's result columns (`COLUMNS`): AUCs as floats, curves float32 [K + 1];
    all None when faithfulness is off (`result` None), and an AUC None (null, not
    NaN) where it is undefined: the image's probability for the target is 0, or a
    point of its curve is NaN (the model's output there was NaN or infinite)."""
    if result is None:
        return dict.fromkeys(COLUMNS)
    aucs = {name: float(getattr(result, name)[r]) for name in COLUMNS[:4]}
    out: dict[str, object] = {k: None if np.isnan(v) else v for k, v in aucs.items()}
    out["deletion_curve"] = result.deletion_curve[r].astype(np.float32)
    out["insertion_curve"] = result.insertion_curve[r].astype(np.float32)
    return out
