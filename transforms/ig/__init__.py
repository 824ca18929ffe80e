"""Integrated Gradients, framework-free.

IG attributes F(x) - F(x') to the input features along the straight path
x' + a (x - x'), a in [0, 1]:

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF/dx_i(x' + a (x - x')) da

The integral is approximated by a quadrature rule; every node costs one
gradient evaluation. Two things say how good a row's estimate is:

* completeness, sum_i IG_i = F(x) - F(x'): observed exactly, but a sum, in
  which per-pixel errors of opposite sign cancel; necessary, not sufficient.
* the per-pixel error ||A - A_true|| / ||A_true|| over all values, estimated
  from the estimate's own spread on its nodes (`rules`).

Fixed mode (tolerance 0) applies one rule with `steps` nodes, as the IG paper,
Captum and the seed notebooks do. Adaptive mode applies it on panels graded
towards a = 0 and splits, per path, the panels where the estimate still moves
most (in two, or in three where that is the cheapest way to the tolerance),
until both checks are within the tolerance or the budget is spent.

Modules: `rules` (quadrature rules by name, the error model), `engine` (the
fixed and adaptive engines), `api` (the entry point). Nothing here imports
TensorFlow or Beam: the model enters through an `IntegrandFn`, which the TF
adapter (`transforms.tf_model`) supplies.
"""

from transforms.ig.api import (
    DEFAULT_MAX_STEPS,
    DEFAULT_PATH_BATCH_SIZE,
    IGResult,
    IGSettings,
    IntegrandFn,
    ScoreFn,
    ScoreGradFn,
    completeness,
    default_max_steps,
    integrand_from_gradients,
    integrated_gradients,
)
from transforms.ig.rules import METHODS, has_baseline_node, min_steps, panel_rule, quadrature

__all__ = [
    "DEFAULT_MAX_STEPS",
    "DEFAULT_PATH_BATCH_SIZE",
    "METHODS",
    "IGResult",
    "IGSettings",
    "IntegrandFn",
    "ScoreFn",
    "ScoreGradFn",
    "completeness",
    "default_max_steps",
    "has_baseline_node",
    "integrand_from_gradients",
    "integrated_gradients",
    "min_steps",
    "panel_rule",
    "quadrature",
]
