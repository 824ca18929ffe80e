"""The algorithm settings' own checks (`transforms.config`), without a run.

The flags that reach them, and the messages a user sees, are tested in
tests/test_cli.py and tests/test_pipeline.py.
"""

import pytest

from transforms.config import (
    ESTIMATE_MARGIN,
    FLOAT16_ROUNDING,
    MAX_FAITHFULNESS_STEPS,
    MAX_MAX_STEPS,
    MAX_STEPS,
    AttributionConfig,
    ConfigError,
)


def test_each_bound_is_accepted_at_its_value():
    config = AttributionConfig(
        steps=MAX_STEPS,
        max_steps=MAX_MAX_STEPS,
        top_k=1,
        path_batch_size=1,
        faithfulness_steps=MAX_FAITHFULNESS_STEPS,
    )
    assert (config.steps, config.max_steps, config.faithfulness_steps) == (4096, 16384, 1024)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": MAX_STEPS + 1}, "--steps must be <= 4096, got 4097"),
        ({"max_steps": MAX_MAX_STEPS + 1}, "--max_steps must be <= 16384, got 16385"),
        ({"faithfulness_steps": 1025}, r"--faithfulness_steps must be in \[2, 1024\], got 1025"),
        ({"top_k": 0}, "--top_k must be >= 1, got 0"),  # no flag check refuses it first
        ({"path_batch_size": 0}, "--path_batch_size must be >= 1, got 0"),
        # NaN is neither above nor below a bound: every row would be flagged.
        ({"tolerance": float("nan")}, "--tolerance must be a finite number >= 0"),
        ({"completeness_tolerance": float("nan")}, "--completeness_tolerance must be a finite"),
        # A bool is an int to Python: top_k=True was 1 without a word.
        ({"top_k": True}, "--top_k must be an integer, got True"),
        ({"seed": False}, "--seed must be an integer, got False"),
    ],
)
def test_a_value_past_a_bound_or_of_the_wrong_type_is_refused_naming_it(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AttributionConfig(**kwargs)


@pytest.mark.parametrize(
    "bound, engine",
    [
        (3.0, 2.0),  # float16 storage: room left for its rounding (2^-11)
        (1.5, 1.5),  # a bound within twice the rounding: leaving room would halve it, or more
    ],
)
def test_refinement_leaves_room_for_float16_rounding_above_twice_it(bound, engine):
    config = AttributionConfig(
        tolerance=bound * FLOAT16_ROUNDING * ESTIMATE_MARGIN, attribution_dtype="float16"
    )
    assert config.estimate_bound() == pytest.approx(bound * FLOAT16_ROUNDING)
    assert config.engine_tolerance() == pytest.approx(engine * FLOAT16_ROUNDING)


def test_fewer_steps_than_a_panel_are_taken_with_tolerance_0_as_the_refusal_advises():
    with pytest.raises(
        ConfigError, match=r"\(4 nodes\), .*; pass --steps 4 or more, or --tolerance 0"
    ):
        AttributionConfig(method="gausslegendre", steps=2, max_steps=2)
    config = AttributionConfig(method="gausslegendre", steps=2, max_steps=2, tolerance=0)
    assert (config.steps, config.tolerance) == (2, 0)
