"""Analytic integrands and constants shared by the IG tests (test_ig_*.py)."""

import numpy as np

from transforms import ig

SHAPE = (3, 4, 2)
# Drawn once, in this order, from one generator: every test sees the same values
# whichever tests run. Tests that need inputs draw them with `uniform(seed)`.
_RNG = np.random.default_rng(0)
WEIGHTS = _RNG.normal(size=SHAPE).astype(np.float32)
SLOPES = np.repeat(_RNG.uniform(2, 40, size=(*SHAPE[:2], 1)), 2, axis=-1)
OFFSETS2 = np.repeat(_RNG.uniform(0.1, 1.5, size=(*SHAPE[:2], 1)), 2, axis=-1)
OFFSETS = _RNG.uniform(0, 5, size=SHAPE)


def uniform(count: int, low: float = 0.0, high: float = 1.0, seed: int = 1) -> np.ndarray:
    """`count` inputs of SHAPE, uniform in [low, high), the same for a given seed."""
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, size=(count, *SHAPE)).astype(np.float32)


def analytic(point: np.ndarray, target: int) -> tuple[float, np.ndarray]:
    """Three analytic outputs: 0 linear w.x, 1 sum x^3, 2 sum sin x."""
    if target == 0:
        return float(np.sum(WEIGHTS * point)), WEIGHTS
    if target == 1:
        return float(np.sum(point**3)), 3.0 * point**2
    return float(np.sum(np.sin(point))), np.cos(point)


calls: list[int] = []


def score_grad_fn(inputs, baselines, alphas, targets):
    calls.append(len(alphas))
    points = baselines + alphas.reshape(-1, 1, 1, 1) * (inputs - baselines)
    out = [analytic(p.astype(np.float64), int(t)) for p, t in zip(points, targets, strict=True)]
    return np.array([s for s, _ in out]), np.stack([g for _, g in out]).astype(np.float32)


def integrate(fn, x, base, image_index, targets, method, steps, **kwargs):
    scores = {k: kwargs.pop(k) for k in ("target_scores", "baseline_scores") if k in kwargs}
    settings = ig.IGSettings(method, steps, **kwargs)
    return ig.integrated_gradients(
        ig.integrand_from_gradients(fn), x, base, image_index, targets, settings, **scores
    )


def run(method, steps, targets, path_batch_size=16, x=None, **kwargs):
    if x is None:
        x = uniform(len(targets), 0.2, 1.0, seed=len(targets))
    base = np.zeros((len(targets), 1, *SHAPE), np.float32)
    result = integrate(
        score_grad_fn,
        x,
        base,
        np.arange(len(targets)),
        targets,
        method,
        steps,
        path_batch_size=path_batch_size,
        **kwargs,
    )
    return x, result
