"""Algorithm settings of an audit run, validated once, before any work."""

from __future__ import annotations

import dataclasses

from transforms.faithfulness import FAITHFULNESS_MODES
from transforms.ig import METHODS, min_steps

__all__ = [
    "ATTRIBUTION_DTYPES",
    "ATTRIBUTION_MODES",
    "BASELINES",
    "FAITHFULNESS_MODES",
    "SCORES",
    "TARGETS",
    "AttributionConfig",
]

BASELINES: tuple[str, ...] = ("black", "white", "grey", "blur", "noise")
TARGETS: tuple[str, ...] = ("predicted", "label", "top_k")
SCORES: tuple[str, ...] = ("raw", "softmax")
ATTRIBUTION_MODES: tuple[str, ...] = ("full", "pixel", "none")
ATTRIBUTION_DTYPES: tuple[str, ...] = ("float16", "float32")


def _choice(name: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ValueError(f"--{name} {value!r} is not supported; use one of: {', '.join(accepted)}.")


@dataclasses.dataclass(frozen=True)
class AttributionConfig:
    """How attributions are computed and stored.

    Attributes:
      steps: gradient evaluations per image, target and baseline (the rule's nodes);
        with a tolerance, the initial ones, spread over panels graded towards 0.
      method: quadrature rule, one of `transforms.ig.METHODS`.
      baselines: one or more of `BASELINES`; attributions are averaged over them.
      target: which classes to attribute: `predicted`, `label` or `top_k`.
      score: `raw` (model output, usually a logit) or `softmax` (probability).
      top_k: predictions kept per image (and targets for `--target top_k`).
      tolerance: relative completeness tolerance; rows above it are refined (their
        worst panels bisected) up to `max_steps` and flagged when they still miss
        it. 0 turns refinement off: the plain rule with `steps` nodes.
      max_steps: cap on gradient evaluations per baseline during refinement.
      path_batch_size: path points per gradient call (bounds memory).
      attributions: `full` (H x W x C), `pixel` (H x W, channel sum) or `none`.
      attribution_dtype: `float16` or `float32` storage.
      seed: seed of the `noise` baseline.
      store_path: keep F(alpha) at the path nodes per row.
      faithfulness: `deletion_insertion` (per-row deletion and insertion curves of
        the map and of a random ranking, see `transforms.faithfulness`) or `none`.
      faithfulness_steps: K, steps per deletion or insertion curve (K + 1 points).
    """

    # Defaults chosen by benchmarks/ig_accuracy.py: the adaptive trapezoid rule
    # reaches the accuracy goal (median relative delta <= 0.5 %, p95 <= 2 %)
    # with the fewest gradient evaluations on the bundled model and real photos.
    # A per-row tolerance of 0.5 % meets that goal by construction on any images
    # and model, wherever refinement converges within --max_steps.
    steps: int = 12
    method: str = "riemann_trapezoid"
    baselines: tuple[str, ...] = ("black",)
    target: str = "predicted"
    score: str = "raw"
    top_k: int = 5
    tolerance: float = 0.005
    max_steps: int = 256
    path_batch_size: int = 32
    attributions: str = "full"
    attribution_dtype: str = "float32"
    seed: int = 0
    store_path: bool = True
    # K = 16: the cheapest of 16-32 (62 forward passes per row, 1.6x the IG time in
    # benchmarks/faithfulness.py); its AUC stability is not measured yet (docs/faithfulness.md).
    faithfulness: str = "deletion_insertion"
    faithfulness_steps: int = 16

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("target", self.target, TARGETS)
        _choice("score", self.score, SCORES)
        _choice("attributions", self.attributions, ATTRIBUTION_MODES)
        _choice("attribution_dtype", self.attribution_dtype, ATTRIBUTION_DTYPES)
        if not self.baselines:
            raise ValueError(f"--baseline needs at least one of: {', '.join(BASELINES)}.")
        for baseline in self.baselines:
            _choice("baseline", baseline, BASELINES)
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError(f"--baseline lists a baseline twice: {','.join(self.baselines)}.")
        minimum = min_steps(self.method)
        if self.steps < minimum:
            raise ValueError(f"--steps must be >= {minimum} for {self.method}, got {self.steps}.")
        if self.top_k < 1:
            raise ValueError(f"--top_k must be >= 1, got {self.top_k}.")
        if not self.tolerance >= 0:
            raise ValueError(
                f"--tolerance must be >= 0 (0 turns refinement off), got {self.tolerance}."
            )
        if self.max_steps < self.steps:
            raise ValueError(f"--max_steps ({self.max_steps}) must be >= --steps ({self.steps}).")
        _choice("faithfulness", self.faithfulness, FAITHFULNESS_MODES)
        if not 2 <= self.faithfulness_steps <= 1024:
            raise ValueError(
                f"--faithfulness_steps must be in [2, 1024], got {self.faithfulness_steps}; "
                "16 to 32 are enough for AUCs stable to about 0.01."
            )
        if self.path_batch_size < 1:
            raise ValueError(f"--path_batch_size must be >= 1, got {self.path_batch_size}.")
