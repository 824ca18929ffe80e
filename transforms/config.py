"""Algorithm settings of an audit run, validated once, before any work."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

import numpy as np

from transforms.baselines import BASELINES
from transforms.faithfulness import FAITHFULNESS_MODES
from transforms.ig import (
    DEFAULT_MAX_STEPS,
    DEFAULT_PATH_BATCH_SIZE,
    METHODS,
    IGSettings,
    default_max_steps,
    min_steps,
    panel_rule,
)

__all__ = [
    "ATTRIBUTION_DTYPES",
    "ATTRIBUTION_MODES",
    "BASELINES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_COMPLETENESS_TOLERANCE",
    "DEFAULT_MAX_STEPS",
    "ESTIMATE_MARGIN",
    "FAITHFULNESS_MODES",
    "MAX_BATCH_SIZE",
    "MAX_FAITHFULNESS_STEPS",
    "MAX_IMAGE_SIZE",
    "MAX_MAX_STEPS",
    "MAX_STEPS",
    "MIN_IMAGE_SIZE",
    "SCORES",
    "TARGETS",
    "AttributionConfig",
    "ConfigError",
    "baseline_names",
]

TARGETS: tuple[str, ...] = ("predicted", "label", "top_k")
SCORES: tuple[str, ...] = ("raw", "softmax")
ATTRIBUTION_MODES: tuple[str, ...] = ("full", "pixel", "none")
ATTRIBUTION_DTYPES: tuple[str, ...] = ("float16", "float32")
#: float16's relative rounding (half an ulp): the storage error of a map stored as
#: float16 is at most this where its values are normal (overflows and values
#: flushed to 0 are measured and added per row). Refinement leaves room for it.
FLOAT16_ROUNDING = 2.0**-11
#: How far below --tolerance refinement drives a row's estimated per-pixel error
#: (`attribution_error`), so that a row flagged within the tolerance is within it
#: per pixel, not only by its estimate. Refinement stops at the first estimate under
#: its bound, so the rows it lets stop lean towards underestimates: with the bound at
#: the tolerance itself, up to 1.23x the tolerance on small random CNNs with kinks
#: and 1.13x with the bundled model (benchmarks/estimate_limits.py, ig_accuracy.py;
#: docs/accuracy.md#limits-of-the-estimate).
ESTIMATE_MARGIN = 1.25
# The bound on a row's relative completeness delta where --completeness_tolerance is
# not given, unless --tolerance is lower (it bounds completeness too, DESIGN.md):
# a sum, met far more cheaply than the per-pixel bound, so it can be tighter.
DEFAULT_COMPLETENESS_TOLERANCE = 0.005
# Upper bounds on gradient evaluations per image, target and baseline: far above
# what any rule needs here (256 nodes reach 0.5 %), low enough that a typo such as
# --steps 1000000000 fails at once instead of running for hours.
MAX_STEPS = 4096
MAX_MAX_STEPS = 16384
#: Images per RunInference batch (--batch_size) unless told otherwise, and its bound.
DEFAULT_BATCH_SIZE = 8
MAX_BATCH_SIZE = 1024
# The bounds of --image_size; the largest bounds the side a model fixes too (a smaller
# fixed side is the model's to take). The largest: a 4096 x 4096 x 3 float32 image is
# 192 MiB, and IG holds tens of such vectors per path (a larger side ran out of memory,
# exit 1, not 2).
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 4096
#: The most steps per deletion or insertion curve (--faithfulness_steps; at least 2).
MAX_FAITHFULNESS_STEPS = 1024


class ConfigError(ValueError):
    """Bad configuration: a flag, dataset, model or output folder that cannot work.

    Raised before any work starts; the message names the bad value and the fix.
    `python -m pipeline` prints it as one `error:` line and exits with status 2.
    Any other exception is a failure while running (exit status 1).
    """


def _choice(name: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(
            f"--{name} {value!r} is not supported; use one of: {', '.join(accepted)}."
        )


def baseline_names(value: str | Sequence[str]) -> tuple[str, ...]:
    """--baseline's names: one string of names separated by commas, as the flag takes
    it (`"black, blur"`), or a sequence of names; each stripped of spaces.

    Raises:
      ConfigError: an empty name (`"black,,blur"`), or a value that is neither.
    """
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise ConfigError(
            f"--baseline must be names of baselines (a string or a sequence), got {value!r}; "
            f"e.g. 'black,blur' or ['black', 'blur'], of: {', '.join(BASELINES)}."
        )
    stripped = tuple(name.strip() for name in names)
    if not all(stripped):
        given = value if isinstance(value, str) else ",".join(names)
        raise ConfigError(
            f"--baseline {given!r} has an empty name; give names separated by single commas, "
            "e.g. --baseline black,blur."
        )
    return stripped


@dataclasses.dataclass(frozen=True)
class AttributionConfig:
    """How attributions are computed and stored.

    Attributes:
      steps: gradient evaluations per image, target and baseline (the rule's nodes);
        with a tolerance, the initial ones, spread over panels graded towards 0
        (at least one panel: 2 nodes for trapezoid panels, 3 for riemann_middle,
        4 or 5 for the others).
      method: quadrature rule, one of `transforms.ig.METHODS`.
      baselines: one or more of `BASELINES` (a sequence, or one string of names
        separated by commas, as --baseline takes them: `"black, blur"`; names are
        stripped of spaces); attributions are averaged over them.
      target: which classes to attribute: `predicted`, `label` or `top_k`.
      score: `raw` (model output, usually a logit) or `softmax` (probability).
      top_k: predictions kept per image (and targets for `--target top_k`).
      tolerance: bound on each row's per-pixel relative error
        ||A - A_true|| / ||A_true||: its estimate must be within `estimate_bound()`
        (`tolerance` / `ESTIMATE_MARGIN`), and, with `completeness_tolerance`, its
        relative completeness delta too; rows above them are refined (the panels
        whose estimate still moves most are split) up to `max_steps`, and flagged
        (`within_tolerance` false) when they still miss them. 0 turns refinement
        off: the plain rule with `steps` nodes. A fraction: the flag refuses more than 1.
      completeness_tolerance: bound on the relative completeness delta, with a
        tolerance (a sum, which cancels per-pixel errors: it is met far more
        cheaply than the per-pixel bound, so it can be tighter). A fraction, as
        --tolerance. None (the default) gives `DEFAULT_COMPLETENESS_TOLERANCE`, or
        `tolerance` where that is lower: the tolerance bounds completeness too.
      max_steps: cap on gradient evaluations per baseline during refinement
        (re-evaluations of points the memory budget dropped not counted);
        None (the default) gives `default_max_steps(steps)`.
      path_batch_size: path points per gradient call (bounds memory); None (or
        "auto", as the flag takes it): the device's choice
        (`transforms.tf_model.device_settings`: on CPUs 8 or 16, timed as the run
        goes; 32 on GPUs).
      attributions: `full` (H x W x C), `pixel` (H x W, channel sum) or `none`.
      attribution_dtype: `float16` or `float32` storage.
      seed: seed of the `noise` baseline and of the faithfulness control's random
        ranking (each with the image id).
      store_path: keep F(alpha) at the path nodes per row.
      faithfulness: `deletion_insertion` (per-row deletion and insertion curves of
        the map and of a random ranking, see `transforms.faithfulness`) or `none`.
      faithfulness_steps: K, steps per deletion or insertion curve (K + 1 points).
    """

    # Defaults chosen by benchmarks/ig_accuracy.py against a converged reference
    # IG, pixel by pixel (docs/accuracy.md): adaptive trapezoid panels from 25
    # nodes graded towards the baseline, refined until the estimated per-pixel
    # error is within 1.5 % (the tolerance over its margin) and the completeness
    # delta within 0.5 %.
    steps: int = 25
    method: str = "riemann_trapezoid"
    baselines: tuple[str, ...] = ("black",)
    target: str = "predicted"
    score: str = "raw"
    top_k: int = 5
    tolerance: float = 0.015 * ESTIMATE_MARGIN
    completeness_tolerance: float | None = None  # resolved in __post_init__: always a float
    max_steps: int | None = None  # resolved in __post_init__: always an int after
    path_batch_size: int | None = None
    attributions: str = "full"
    attribution_dtype: str = "float32"
    seed: int = 0
    store_path: bool = True
    faithfulness: str = "deletion_insertion"
    # K = 32 (126 forward passes per row): benchmarks/faithfulness.py, 16 photos,
    # against K = 128: K = 16 moved the deletion AUC by 0.02 at the median (more
    # than its median value, 0.017), K = 32 by 0.006 (docs/faithfulness.md).
    faithfulness_steps: int = 32

    def points_per_call(self, device_default: int = DEFAULT_PATH_BATCH_SIZE) -> int:
        """Path points per gradient call: `path_batch_size`, or the device's choice."""
        return self.path_batch_size or device_default

    def ig_settings(self, device_default: int = DEFAULT_PATH_BATCH_SIZE) -> IGSettings:
        """The IG engine's settings of this configuration (`device_default`: the
        device's path points per call, used unless `path_batch_size` is set)."""
        return IGSettings(
            self.method,
            self.steps,
            self.engine_tolerance(),
            self.max_steps,
            self.points_per_call(device_default),
            completeness_tolerance=self.completeness_tolerance,
            channel_sum=self.attributions == "pixel",  # the error of the map stored
        )

    def estimate_bound(self) -> float:
        """The bound on a row's estimated per-pixel error (`attribution_error`) for
        it to be within the tolerance: `tolerance` / `ESTIMATE_MARGIN`."""
        return self.tolerance / ESTIMATE_MARGIN

    def engine_tolerance(self) -> float:
        """The per-pixel bound refinement aims at: `estimate_bound()`, less float16's
        rounding when maps are stored as float16, so that the stored map (whose
        `attribution_error` adds its storage error) is within the bound too. With
        `attributions` none no map is stored: nothing rounds."""
        bound = self.estimate_bound()
        stored16 = self.attribution_dtype == "float16" and self.attributions != "none"
        if stored16 and bound > 2 * FLOAT16_ROUNDING:
            return bound - FLOAT16_ROUNDING
        return bound

    def __post_init__(self) -> None:
        # As the flags take them: "black, blur" is two baselines, "auto" the device's choice.
        object.__setattr__(self, "baselines", baseline_names(self.baselines))
        if self.path_batch_size == "auto":
            object.__setattr__(self, "path_batch_size", None)
        self._check_types()
        if self.max_steps is None:  # frozen: set once, here
            object.__setattr__(self, "max_steps", default_max_steps(self.steps))
        if self.completeness_tolerance is None:
            object.__setattr__(self, "completeness_tolerance", self._default_completeness())
        self._check_choices()
        self._check_steps()
        self._check_bounds()

    def _default_completeness(self) -> float:
        """`DEFAULT_COMPLETENESS_TOLERANCE`, or the tolerance where that is lower (and
        above 0: at 0 nothing is refined or flagged)."""
        if 0 < self.tolerance < DEFAULT_COMPLETENESS_TOLERANCE:
            return self.tolerance
        return DEFAULT_COMPLETENESS_TOLERANCE

    def _check_types(self) -> None:
        """Integers and numbers where they go (from Python, `AttributionConfig(steps="25")`
        was a bare TypeError, and `top_k=2.5` failed only in the first batch)."""
        integers = ("steps", "top_k", "max_steps", "path_batch_size", "seed", "faithfulness_steps")
        for name in integers + ("tolerance", "completeness_tolerance"):
            value = getattr(self, name)
            if value is None and name in ("max_steps", "path_batch_size", "completeness_tolerance"):
                continue
            kind = (int, np.integer) if name in integers else numbers.Real
            if isinstance(value, bool) or not isinstance(value, kind):
                what = "an integer" if name in integers else "a number"
                raise ConfigError(f"--{name} must be {what}, got {value!r}.")

    def _check_choices(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("target", self.target, TARGETS)
        _choice("score", self.score, SCORES)
        _choice("attributions", self.attributions, ATTRIBUTION_MODES)
        _choice("attribution_dtype", self.attribution_dtype, ATTRIBUTION_DTYPES)
        _choice("faithfulness", self.faithfulness, FAITHFULNESS_MODES)
        if not self.baselines:
            raise ConfigError(f"--baseline needs at least one of: {', '.join(BASELINES)}.")
        for baseline in self.baselines:
            _choice("baseline", baseline, BASELINES)
        twice = [b for i, b in enumerate(self.baselines) if b in self.baselines[:i]]
        if twice:
            given, once = ",".join(self.baselines), ",".join(dict.fromkeys(self.baselines))
            raise ConfigError(
                f"--baseline {given!r} lists {twice[0]} twice; give each baseline once, "
                f"e.g. --baseline {once}."
            )

    def _check_steps(self) -> None:
        minimum = min_steps(self.method)
        if self.steps < minimum:
            raise ConfigError(f"--steps must be >= {minimum} for {self.method}, got {self.steps}.")
        if self.steps > MAX_STEPS:
            raise ConfigError(
                f"--steps must be <= {MAX_STEPS}, got {self.steps}; for more accuracy lower "
                "--tolerance instead (refinement adds points where they are needed)."
            )
        if self.max_steps < self.steps:
            raise ConfigError(
                f"--max_steps ({self.max_steps}) must be >= --steps ({self.steps}); pass "
                f"--max_steps {self.steps} or more, or fewer --steps."
            )
        panel = len(panel_rule(self.method).nodes)
        if self.tolerance > 0 and self.steps < panel:
            raise ConfigError(
                f"--steps {self.steps} is less than one adaptive panel of {self.method} "
                f"({panel} nodes), which --tolerance > 0 starts from; pass --steps {panel} or "
                "more, or --tolerance 0."
            )
        if self.max_steps > MAX_MAX_STEPS:
            raise ConfigError(f"--max_steps must be <= {MAX_MAX_STEPS}, got {self.max_steps}.")

    def _check_bounds(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"--top_k must be >= 1, got {self.top_k}.")
        if not 0 <= self.tolerance < math.inf:
            raise ConfigError(
                f"--tolerance must be a finite number >= 0 (0 turns refinement off), got "
                f"{self.tolerance}."
            )
        if not 0 < self.completeness_tolerance < math.inf:
            raise ConfigError(
                "--completeness_tolerance must be a finite number > 0, got "
                f"{self.completeness_tolerance}."
            )
        if not 2 <= self.faithfulness_steps <= MAX_FAITHFULNESS_STEPS:
            raise ConfigError(
                f"--faithfulness_steps must be in [2, {MAX_FAITHFULNESS_STEPS}], got "
                f"{self.faithfulness_steps}."
            )
        if self.path_batch_size is not None and self.path_batch_size < 1:
            raise ConfigError(f"--path_batch_size must be >= 1, got {self.path_batch_size}.")
