"""Command-line flags of the job (Beam's own flags pass through)."""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.config import (
    ATTRIBUTION_DTYPES,
    ATTRIBUTION_MODES,
    BASELINES,
    FAITHFULNESS_MODES,
    SCORES,
    TARGETS,
    AttributionConfig,
)
from transforms.ig import METHODS

__all__ = ["AuditOptions", "attribution_config", "parse_input_range"]

_DEFAULTS = AttributionConfig()


def parse_input_range(text: str | None) -> tuple[float, float] | None:
    """'0,1' or '-1,1' -> (low, high); None stays None."""
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as e:
        raise ValueError(
            f"--input_range {text!r} must be two numbers 'low,high', e.g. '0,1' or '-1,1'."
        ) from e
    if not low < high:
        raise ValueError(f"--input_range {text!r} needs low < high.")
    return low, high


class AuditOptions(PipelineOptions):
    """The project's flags; see README.md and DESIGN.md for their contract."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        add = parser.add_argument
        add(
            "--dataset",
            default="sample",
            help="TFDS name (imagenet_a), an image folder (local or gs://), or 'sample'.",
        )
        add("--split", default="test", help="TFDS split spec, e.g. 'test' or 'test[:2%%]'.")
        add("--data_dir", default=None, help="TFDS data folder (default: TFDS's own).")
        add(
            "--no_download",
            action="store_true",
            help="Fail instead of downloading a TFDS dataset that is not prepared.",
        )
        add(
            "--model",
            default="efficientnet_lite0",
            help="efficientnet_lite0 (bundled), inception_v1, a TF Hub handle, a SavedModel "
            "folder or a .keras file.",
        )
        add("--output", default=None, help="Output folder, local or gs:// (required).")
        add(
            "--overwrite",
            action="store_true",
            help="Replace the results of an earlier run in --output instead of refusing.",
        )
        add(
            "--resume",
            action="store_true",
            help="Continue an earlier run with the same flags in --output: images whose rows "
            "are there already are skipped; the others (errors included) are processed.",
        )
        add(
            "--steps",
            type=int,
            default=_DEFAULTS.steps,
            help="Points on the path: gradient evaluations per image, target and baseline "
            "(with a --tolerance, the initial ones; refinement adds more). With --tolerance 0, "
            "use 64 or more.",
        )
        add("--method", default=_DEFAULTS.method, help=f"One of {', '.join(METHODS)}.")
        add(
            "--baseline",
            default=",".join(_DEFAULTS.baselines),
            help=f"Comma-separated, averaged: {', '.join(BASELINES)}.",
        )
        add("--target", default=_DEFAULTS.target, help=f"One of {', '.join(TARGETS)}.")
        add("--score", default=_DEFAULTS.score, help=f"One of {', '.join(SCORES)}.")
        add("--top_k", type=int, default=_DEFAULTS.top_k, help="Predictions kept per image.")
        add(
            "--tolerance",
            type=float,
            default=_DEFAULTS.tolerance,
            help="Relative completeness tolerance; rows above it are refined, then flagged. "
            "0 turns refinement off.",
        )
        add(
            "--max_steps",
            type=int,
            default=None,
            help=f"Cap on points per baseline when refining; default max({_DEFAULTS.max_steps}, "
            "--steps).",
        )
        add(
            "--batch_size",
            type=int,
            default=None,
            help="Images per RunInference batch (full batches; their path points share "
            "gradient calls); default 8.",
        )
        add(
            "--path_batch_size",
            type=int,
            default=_DEFAULTS.path_batch_size,
            help="Path points per gradient call; bounds memory.",
        )
        add(
            "--image_size",
            type=int,
            default=None,
            help="Model input side; default from the model's signature.",
        )
        add("--input_range", default=None, help="Model pixel range 'low,high'; default 0,1.")
        add(
            "--label_offset",
            type=int,
            default=None,
            help="Output index of class 0; default 1 for 1001-output models, else 0.",
        )
        add(
            "--attributions",
            default=_DEFAULTS.attributions,
            help=f"One of {', '.join(ATTRIBUTION_MODES)}.",
        )
        add(
            "--attribution_dtype",
            default=_DEFAULTS.attribution_dtype,
            help=f"One of {', '.join(ATTRIBUTION_DTYPES)}.",
        )
        add(
            "--faithfulness",
            default=_DEFAULTS.faithfulness,
            help="Per-row deletion and insertion curves of the map and of a random ranking "
            f"(one of {', '.join(FAITHFULNESS_MODES)}; none turns them off).",
        )
        add(
            "--faithfulness_steps",
            type=int,
            default=_DEFAULTS.faithfulness_steps,
            help="Steps per deletion or insertion curve; each row costs 4 (K - 1) + 2 "
            "forward passes.",
        )
        add("--seed", type=int, default=_DEFAULTS.seed,
            help="Seed of the noise baseline and of the faithfulness control's ranking.")  # fmt: skip
        add("--jit_compile", default="auto", choices=("auto", "on", "off"),
            help="XLA compilation: auto = on GPUs only.")  # fmt: skip


def attribution_config(options: AuditOptions) -> AttributionConfig:
    """The validated algorithm settings of parsed options."""
    return AttributionConfig(
        steps=options.steps,
        method=options.method,
        baselines=tuple(b.strip() for b in options.baseline.split(",") if b.strip()),
        target=options.target,
        score=options.score,
        top_k=options.top_k,
        tolerance=options.tolerance,
        max_steps=(
            options.max_steps
            if options.max_steps is not None
            else max(_DEFAULTS.max_steps, options.steps)
        ),
        path_batch_size=options.path_batch_size,
        attributions=options.attributions,
        attribution_dtype=options.attribution_dtype,
        seed=options.seed,
        faithfulness=options.faithfulness,
        faithfulness_steps=options.faithfulness_steps,
    )
