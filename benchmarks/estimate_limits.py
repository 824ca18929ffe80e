"""Where the engine's error estimate (`attribution_error`) holds, and where it fails.

Every row is computed as the job computes it: `AttributionConfig(...).ig_settings()`
and `ig.integrated_gradients` with the Classifier's integrand and score (as
`benchmarks.ig_accuracy` does), the predicted class as target, the black
baseline, float32 maps; `within_tolerance` is the job's own (`transforms.batch`:
estimate <= --tolerance / ESTIMATE_MARGIN, the estimate's bound, and relative
completeness <= --completeness_tolerance).
The true per-pixel error ||A - A_ref|| / ||A_ref|| is against a converged
reference (`benchmarks.reference`: trapezoid on alpha = s^2), its intervals
doubled per image until N and N/2 intervals differ by < 0.1 % (printed per
table; for `--attributions pixel`, of the H x W channel sums, the map that mode
stores and estimates).

1. Tiny random-weight 32 x 32 CNNs (two 3x3 convolutions, seeded, built here,
   saved to a temporary .keras file and loaded with the job's Classifier), one
   family per activation: ReLU, ReLU + max-pool, GELU, sigmoid, tanh, clip
   (ReLU max 1), hard sigmoid, ReLU with a softmax head (the ReLU family's nets
   with a softmax appended: under --score softmax, their rows are the ReLU
   family's, a check of the softmax path); --seeds nets per
   family, --photos photos per net (scikit-image's). Steep families, only when
   named in --models: tanh30 and tanh300 (the tanh CNN with weights and biases
   times 30 or 300: each unit tanh(g z)), and sin30 and sin300 (a SavedModel,
   10 outputs sum_i v_ki sin(w x_i) over the 3072 input values, v ~ N(0, 1/3072),
   w = 30 or 300, whose IG is exactly v_ki sin(w x_i)). One table per setting
   (defaults; --tolerance 0.005; --attributions pixel; --score softmax), one
   row per family and all families pooled:
   * estimate/true: the median ratio, and the share of rows within 2x;
   * rows flagged within_tolerance, and how many of them are truly above
     --tolerance; the worst true error / --tolerance among them; and how many
     are truly above the estimate's bound: what the job without the margin
     (bound = --tolerance) would have got wrong, on the same rows;
   * gradient evaluations per image, and the worst reference convergence
     (N vs N/2) of the family's rows, to judge small true errors against.
   And per setting a table of the engine's rounding floor (`Adaptive._rounding`,
   read by a recording subclass of the engine): on how many rows it took more
   than `SCORE_RESOLUTION` (16 eps of the scores) for the scores' rounding, at
   the end and at any round, by how much (in eps of the scores' scale), the
   largest median panel excess it saw (it turns on above 16 eps); and, on
   the rows where it ever did, the same rows again with the floor off (the
   engine before it, `_rounding` = 16 eps): within rows and those truly above
   --tolerance with and without it.
2. Two constructed cases where the estimate fails (estimate, within, true):
   * a random clip + max-pool CNN with gain 30 (seed 3) on motorcycle_left at
     the defaults: within_tolerance true, the true error about twice the
     estimate;
   * two opposite-sign steep clip ramps hidden inside one gap of the starting
     mesh (alpha between (20/24)^2 and (21/24)^2): every node sees the same
     gradient, the estimate is 0 and completeness holds, the true error is
     about 13 %, at any --tolerance.

    python -m benchmarks.estimate_limits [--photos 6] [--seeds 2] [--models relu,gelu,...,sin300]
        [--settings defaults,tol0.005,pixel,softmax] [--intervals 4096]
        [--max_intervals 65536] [--no_cases] [--quick]

`--quick` (< 3 min): 2 photos, 1 seed, families relu, relu_pool, clip,
relu_softmax, all settings, and the two cases. The defaults take about 8 min on
2 CPU cores.
References are cached under benchmarks/.cache (a rerun costs only the engine).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import tempfile
import time

import keras
import numpy as np

from benchmarks.common import extra_photos, load_classifier, load_photos, print_table
from benchmarks.ig_accuracy import _run, _targets
from benchmarks.reference import reference_ig, relative_l2, weights_id
from transforms import ig
from transforms.batch import _within
from transforms.config import AttributionConfig
from transforms.ig import api
from transforms.ig.engine import _NOISE_MIN_PANELS, SCORE_RESOLUTION, Adaptive, error_map

_SIZE = 32
_EPS32 = float(np.finfo(np.float32).eps)
_OFF = SCORE_RESOLUTION / _EPS32  # the rounding without the floor, in eps: 16
_CONVERGED = 1e-3  # N vs N/2 intervals: the reference's own convergence bound
L = keras.layers

# family: (activation layer, max-pool, softmax head, weight gain). The gains put
# the saturating units' kinks along the path (a gain of 1 leaves them linear).
_FAMILIES = {
    "relu": (lambda: L.Activation("relu"), False, False, 1.0),
    "relu_pool": (lambda: L.Activation("relu"), True, False, 1.0),
    "gelu": (lambda: L.Activation("gelu"), False, False, 1.0),
    "sigmoid": (lambda: L.Activation("sigmoid"), False, False, 3.0),
    "tanh": (lambda: L.Activation("tanh"), False, False, 2.0),
    "clip": (lambda: L.ReLU(max_value=1.0), False, False, 3.0),
    "hard_sigmoid": (lambda: L.Activation("hard_sigmoid"), False, False, 4.0),
    "relu_softmax": (lambda: L.Activation("relu"), False, True, 1.0),
    # Steep: each unit tanh(g z), only when named in --models.
    "tanh30": (lambda: L.Activation("tanh"), False, False, 30.0),
    "tanh300": (lambda: L.Activation("tanh"), False, False, 300.0),
}
# Steep sine SavedModels (`_sines`), by their w.
_SINES = {"sin30": 30.0, "sin300": 300.0}
_STEEP = ("tanh30", "tanh300", *_SINES)
_KNOWN = [*_FAMILIES, *_SINES]

_SETTINGS = {
    "defaults": AttributionConfig(),
    "tol0.005": AttributionConfig(tolerance=0.005),
    "pixel": AttributionConfig(attributions="pixel"),
    "softmax": AttributionConfig(score="softmax"),
}
_TITLES = {
    "defaults": f"defaults (--tolerance {AttributionConfig().tolerance:g})",
    "tol0.005": "--tolerance 0.005",
    "pixel": "--attributions pixel (H x W channel sums)",
    "softmax": "--score softmax",
}


def _cnn(act, pool=False, softmax=False, seed=0, gain=1.0) -> keras.Model:
    """A tiny random CNN: two 3x3 convolutions (8, 16 filters) with He-normal weights
    times `gain` and N(0, 0.5 gain) biases, each followed by `act()` (and a 2x2
    max-pool), then a 10-way dense head (logits, or softmax)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((_SIZE, _SIZE, 3))
    h = inp
    for filters in (8, 16):
        h = L.Conv2D(
            filters,
            3,
            padding="same",
            kernel_initializer=keras.initializers.VarianceScaling(
                2.0 * gain**2, "fan_in", "normal"
            ),
            bias_initializer=keras.initializers.RandomNormal(0.0, 0.5 * gain),
        )(h)
        h = act()(h)
        if pool:
            h = L.MaxPooling2D(2)(h)
    h = L.Flatten()(h) if pool else L.GlobalAveragePooling2D()(h)
    out = L.Dense(
        10,
        activation="softmax" if softmax else None,
        bias_initializer=keras.initializers.RandomNormal(0.0, 0.5),
    )(h)
    return keras.Model(inp, out)


def _hidden_clip(image: np.ndarray) -> keras.Model:
    """Output 0 = a linear part + clip(ramp_1) - clip(ramp_2): ramp_1 of the left
    half of `image`'s pixels, ramp_2 of the right half, each rising from 0 to 1
    over alpha in [0.725, 0.735], inside one gap of the engine's starting mesh
    ((20/24)^2 = 0.694 .. (21/24)^2 = 0.766), so no node sees them."""
    alpha0, width = 0.725, 0.01
    flat = image.reshape(-1).astype(np.float64)
    d = flat.size
    rng = np.random.default_rng(0)
    cols = np.arange(d) // 3 % _SIZE
    w1 = np.where(cols < _SIZE // 2, rng.uniform(0, 1, d), 0.0)
    w2 = np.where(cols >= _SIZE // 2, rng.uniform(0, 1, d), 0.0)
    s1, s2 = w1 @ flat, w2 @ flat
    k1, k2 = 1 / (width * s1), 1 / (width * s2)
    inp = keras.Input((_SIZE, _SIZE, 3))
    f = L.Flatten()(inp)
    ramps = L.Dense(2, name="ramps")(f)
    lin = L.Dense(2, name="lin")(f)
    mix = L.Dense(2, use_bias=False, name="mix")(L.ReLU(max_value=1.0)(ramps))
    model = keras.Model(inp, L.Add()([mix, lin]))
    model.get_layer("ramps").set_weights(
        [
            np.stack([k1 * w1, k2 * w2], 1).astype(np.float32),
            np.array([-alpha0 * k1 * s1, -alpha0 * k2 * s2], np.float32),
        ]
    )
    lin_w = rng.normal(0, 1, d) / np.sqrt(d)
    model.get_layer("lin").set_weights(
        [np.stack([lin_w + 1.0 / d, -lin_w], 1).astype(np.float32), np.zeros(2, np.float32)]
    )
    model.get_layer("mix").set_weights([np.array([[1.0, 0.0], [-1.0, 0.0]], np.float32)])
    return model


def _sines(omega: float, seed: int, tmp: str):
    """A SavedModel (a tf.Module, as users save one) of 10 outputs
    F_k(x) = sum_i v_ki sin(omega x_i) over the image's values, v ~ N(0, 1/d)
    seeded; loaded with the job's Classifier, and an id of its weights."""
    import tensorflow as tf  # noqa: PLC0415

    d = _SIZE * _SIZE * 3
    v = (np.random.default_rng(seed).normal(0.0, 1.0, (d, 10)) / np.sqrt(d)).astype(np.float32)
    module = tf.Module()
    module.v = tf.Variable(v)

    @tf.function(input_signature=[tf.TensorSpec([None, _SIZE, _SIZE, 3], tf.float32)])
    def call(x):
        return tf.sin(omega * tf.reshape(x, [-1, d])) @ module.v

    module.__call__ = call
    name = f"sin{omega:g}_seed{seed}"
    path = os.path.join(tmp, name)
    tf.saved_model.save(module, path)
    return load_classifier(path), weights_id(f"estimate_limits:{name}", [v])


def _model(family: str, seed: int, tmp: str):
    """The family's net of `seed`, loaded as the job loads it, and its weights' id."""
    if family in _SINES:
        return _sines(_SINES[family], seed, tmp)
    act, pool, softmax, gain = _FAMILIES[family]
    model = _cnn(act, pool, softmax, seed=seed, gain=gain)
    return _load(model, tmp, f"{family}_seed{seed}")


def _load(model: keras.Model, tmp: str, name: str):
    """The model saved and loaded as the job loads it, and an id of its weights
    (the reference cache's key)."""
    path = os.path.join(tmp, f"{name}.keras")
    model.save(path)
    return load_classifier(path), weights_id(f"estimate_limits:{name}", model.get_weights())


def _references(clf, model_id, x, targets, score, intervals, limit, pixel):
    """Per image: the reference (float64 [H, W, C]), its convergence N vs N/2 (of
    the channel sums with `pixel`) and N; N doubled from `intervals` up to `limit`
    until the convergence is below 0.1 %."""
    refs, convs, used = [], [], []
    for im, t in zip(x, targets, strict=True):
        n = intervals
        while True:
            fine, coarse = reference_ig(clf, model_id, im, int(t), score, n)
            conv = relative_l2(error_map(coarse, pixel), error_map(fine, pixel))
            if conv < _CONVERGED or n >= limit:
                break
            n *= 2
        refs.append(fine)
        convs.append(conv)
        used.append(n)
    return refs, np.array(convs), np.array(used)


class _Recording(Adaptive):
    """The job's engine, recording per path what `_rounding` took for the scores'
    rounding, in eps of their scale (`_scale`; `_OFF` where the floor is off): at
    the last call (the final estimate's) and the largest over the rounds; and the
    largest median panel excess it saw (the floor turns on above `_OFF`; -inf
    where the path never had `_NOISE_MIN_PANELS` panels)."""

    made: list[_Recording] = []

    def __init__(self, paths, *args):
        self.last, self.peak = np.zeros(paths.count), np.zeros(paths.count)
        self.median = np.full(paths.count, -np.inf)
        _Recording.made.append(self)
        super().__init__(paths, *args)

    def _rounding(self, path, excess):
        out = super()._rounding(path, excess)
        unit = _EPS32 * self._scale([path])
        eps = out / unit if unit > 0 else _OFF
        self.last[path], self.peak[path] = eps, max(self.peak[path], eps)
        if excess.size >= _NOISE_MIN_PANELS and unit > 0:
            self.median[path] = np.nanmax([self.median[path], np.median(excess) / unit])
        return out


class _NoFloor(Adaptive):
    """The job's engine without the floor, as before it: the scores' rounding is
    always `_resolution`, SCORE_RESOLUTION of their scale."""

    def _rounding(self, path, excess):
        return self._resolution([path])


@contextlib.contextmanager
def _engine(cls):
    """`ig.integrated_gradients` runs `cls` for its adaptive engine (`api` makes
    its `Adaptive` by name)."""
    saved, api.Adaptive = api.Adaptive, cls
    try:
        yield
    finally:
        api.Adaptive = saved


def _recorded(x, targets, fx, f0, cfg, clf):
    """`_run` of the job's rows with `_Recording`: its results and, per row (one
    path each: the black baseline), the floor at the end, its largest, and the
    largest median panel excess (`_Recording`)."""
    _Recording.made.clear()
    with _engine(_Recording):
        run = _run(clf, x, targets, fx, f0, cfg.score, cfg.ig_settings())
    made = _Recording.made
    last, peak, median = (
        np.concatenate([getattr(r, k) for r in made]) if made else np.full(len(x), v)
        for k, v in (("last", _OFF), ("peak", _OFF), ("median", -np.inf))
    )
    return run, last, peak, median


def _judged(cfg, run, refs, fx, f0):
    """Per row of a `_run`: estimate, within (the job's), true error, relative
    completeness, evaluations."""
    a, estimate, evals, _, _ = run
    pixel = cfg.attributions == "pixel"
    sums = a.reshape(len(a), -1).sum(axis=1, dtype=np.float64)
    _, relative = ig.completeness(sums, fx, f0)
    kept = functools.partial(error_map, channel_sum=pixel)  # the engine's own
    return [
        {
            "estimate": float(estimate[i]),  # float32 storage adds nothing
            "within": _within(cfg, float(estimate[i]), float(relative[i])),
            "true": relative_l2(kept(a[i]), kept(refs[i])),
            "relative": float(relative[i]),
            "evaluations": int(evals[i]),
        }
        for i in range(len(a))
    ]


def _rows(clf, model_id, x, cfg, args, target=None):
    """The job's rows for `cfg` against the reference: dicts of estimate, within,
    true error, evaluations, the floor (`floor`, `floor_peak`, `median`, in eps) and, as
    `off`, the row computed without the floor (itself where the floor never
    turned on); and the references' convergence and intervals."""
    targets, fx, f0 = _targets(clf, x, cfg.score, target)
    pixel = cfg.attributions == "pixel"
    refs, conv, used = _references(
        clf, model_id, x, targets, cfg.score, args.intervals, args.max_intervals, pixel
    )
    run, last, peak, median = _recorded(x, targets, fx, f0, cfg, clf)
    out = _judged(cfg, run, refs, fx, f0)
    off = [dict(r) for r in out]
    if np.any(peak > _OFF):  # else the engine without the floor made the same rows
        with _engine(_NoFloor):
            off = _judged(
                cfg, _run(clf, x, targets, fx, f0, cfg.score, cfg.ig_settings()), refs, fx, f0
            )
    for row, row_off, end, most, typical in zip(out, off, last, peak, median, strict=True):
        row.update(floor=float(end), floor_peak=float(most), median=float(typical), off=row_off)
    return out, conv, used


def _share(above, within) -> str:
    return f"{above.sum()}/{within.sum()}" + (
        f" ({above.sum() / within.sum():.0%})" if within.any() else ""
    )


def _summary(label, rows, config, conv):
    est = np.array([r["estimate"] for r in rows])
    true = np.array([r["true"] for r in rows])
    ratio = est / true
    within = np.array([bool(r["within"]) for r in rows])
    tolerance, bound = config.tolerance, config.estimate_bound()
    worst = f"{true[within].max() / tolerance:.2f}" if within.any() else "-"
    return [
        label,
        len(rows),
        f"{np.median(true):.2%}",
        f"{np.median(ratio):.2f}",
        f"{np.min(ratio):.2f}",
        f"{np.mean((ratio >= 0.5) & (ratio <= 2)):.0%}",
        f"{within.sum()}",
        _share(within & (true > tolerance), within),
        worst,
        _share(within & (true > bound), within),
        f"{np.mean([r['evaluations'] for r in rows]):.1f}",
        f"{max(conv):.3%}",
    ]


def _unconverged(conv) -> str:
    """A note on references N vs N/2 still >= 0.1 % apart at --max_intervals."""
    off = int(np.sum(np.asarray(conv) >= _CONVERGED))
    return f" ({off} of {len(conv)} not within 0.1 % at --max_intervals)" if off else ""


def family_tables(args, x, tmp):
    results = {s: {} for s in args.settings}
    conv = {s: [] for s in args.settings}
    used = {s: [] for s in args.settings}
    family_conv = {s: {} for s in args.settings}
    for family in args.models:
        for seed in range(args.seeds):
            clf, model_id = _model(family, seed, tmp)
            for s in args.settings:
                rows, c, n = _rows(clf, model_id, x, _SETTINGS[s], args)
                results[s].setdefault(family, []).extend(rows)
                conv[s].extend(c)
                family_conv[s].setdefault(family, []).extend(c)
                used[s].extend(n)
            keras.backend.clear_session()
    seeds = "seed 0" if args.seeds == 1 else f"seeds 0-{args.seeds - 1}"
    for s in args.settings:
        cfg = _SETTINGS[s]
        table = [_summary(f, rows, cfg, family_conv[s][f]) for f, rows in results[s].items()]
        pooled = [r for rows in results[s].values() for r in rows]
        table.append(_summary("all families", pooled, cfg, conv[s]))
        print_table(
            f"{_TITLES[s]}: tiny random 32x32 models ({seeds}), {len(x)} photos "
            f"each, "
            f"tolerance {cfg.tolerance:g} (estimate bound {cfg.estimate_bound():g}); "
            f"reference: trapezoid on a = s^2, {min(used[s])}-{max(used[s])} "
            f"intervals, vs half: median {np.median(conv[s]):.3%}, worst {max(conv[s]):.3%}"
            + _unconverged(conv[s]),
            [
                "family",
                "rows",
                "true median",
                "estimate/true median",
                "min",
                "within 2x",
                "within_tolerance rows",
                "of them true > tol",
                "worst true/tol (within rows)",
                "true > bound (no margin)",
                "evals/image",
                "ref N vs N/2 worst",
            ],
            table,
        )
        _floor_table(s, results[s])


def _floor_table(setting, results):
    """Per family: the rounding floor's activity (`_Recording`), and its rows with
    and without it (`_NoFloor`)."""
    cfg = _SETTINGS[setting]
    table = []
    for family, rows in results.items():
        end = np.array([r["floor"] for r in rows])
        peak = np.array([r["floor_peak"] for r in rows])
        table.append(
            [
                family,
                len(rows),
                f"{np.sum(end > _OFF)}",
                f"{np.sum(peak > _OFF)}",
                f"{end.max():.0f} / {peak.max():.0f}",
                f"{max(r['median'] for r in rows):.3g}",
                sum(r["off"] != {k: r[k] for k in r["off"]} for r in rows),
                _within_above(rows, cfg.tolerance),
                _within_above([r["off"] for r in rows], cfg.tolerance),
                f"{np.mean([r['evaluations'] for r in rows]):.1f} / "
                f"{np.mean([r['off']['evaluations'] for r in rows]):.1f}",
            ]
        )
    print_table(
        f"{_TITLES[setting]}: the scores' rounding floor (Adaptive._rounding; "
        f"{_OFF:.0f} eps of the scores' scale where it is off), and the same rows "
        f"without it",
        [
            "family",
            "rows",
            "floor on at the end",
            "on in any round",
            "largest floor, end / any round (eps)",
            f"largest median panel excess (eps; on above {_OFF:.0f})",
            "rows it changed",
            "within (of them true > tol), floor",
            "without the floor",
            "evals/image, floor / without",
        ],
        table,
    )


def _within_above(rows, tolerance) -> str:
    within = [r for r in rows if r["within"]]
    return f"{len(within)} ({sum(r['true'] > tolerance for r in within)})"


def case_tables(args, tmp):
    photos = {os.path.basename(p): p for p in extra_photos()}
    out = []
    # (b) random clip + max-pool CNN, gain 30, seed 3, motorcycle_left, defaults.
    _, moto = load_photos([photos["motorcycle_left.png"]], _SIZE)
    model = _cnn(lambda: L.ReLU(max_value=1.0), pool=True, seed=3, gain=30.0)
    clf, model_id = _load(model, tmp, "clip_pool_g30_s3")
    label = "random clip + max-pool CNN, gain 30, seed 3, defaults"
    out.append(_case_row(label, "motorcycle_left", clf, model_id, moto, AttributionConfig(), args))
    keras.backend.clear_session()
    # (c) two opposite-sign clip ramps inside one gap of the starting mesh.
    _, cat = load_photos([photos["chelsea.png"]], _SIZE)
    clf, model_id = _load(_hidden_clip(cat[0]), tmp, "hidden_clip")
    for tol in (AttributionConfig().tolerance, 0.005):
        cfg = AttributionConfig(tolerance=tol)
        label = f"two clip ramps hidden in one mesh gap, --tolerance {tol:g}"
        out.append(_case_row(label, "chelsea", clf, model_id, cat, cfg, args, target=0))
    keras.backend.clear_session()
    print_table(
        "Constructed cases (black baseline, float32 maps)",
        [
            "case",
            "photo",
            "estimate",
            "within_tolerance",
            "true",
            "true/tol",
            "relative completeness",
            "evals",
            "reference N (vs N/2)",
        ],
        out,
    )


def _case_row(label, photo, clf, model_id, x, cfg, args, target=None):
    rows, conv, used = _rows(clf, model_id, x, cfg, args, target)
    r = rows[0]
    return [
        label,
        photo,
        f"{r['estimate']:.2%}",
        r["within"],
        f"{r['true']:.2%}",
        f"{r['true'] / cfg.tolerance:.2f}",
        f"{r['relative']:.3%}",
        r["evaluations"],
        f"{used[0]} ({conv[0]:.3%})",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=6, help="photos per model")
    parser.add_argument("--seeds", type=int, default=2, help="random models per family")
    parser.add_argument(
        "--models",
        default=",".join(f for f in _KNOWN if f not in _STEEP),
        help=f"families (the steep ones, {', '.join(_STEEP)}, only when named)",
    )
    parser.add_argument("--settings", default=",".join(_SETTINGS))
    parser.add_argument("--intervals", type=int, default=4096, help="first reference intervals")
    parser.add_argument("--max_intervals", type=int, default=65536)
    parser.add_argument("--no_cases", action="store_true", help="skip the constructed cases")
    parser.add_argument("--quick", action="store_true", help="2 photos, 1 seed, 4 families")
    args = parser.parse_args(argv)
    if args.quick:
        args.photos = min(args.photos, 2)
        args.seeds = 1
        if args.models == parser.get_default("models"):
            args.models = "relu,relu_pool,clip,relu_softmax"
    args.models = args.models.split(",")
    args.settings = args.settings.split(",")
    for name, known in ((args.models, _KNOWN), (args.settings, _SETTINGS)):
        unknown = set(name) - set(known)
        if unknown:
            parser.error(f"unknown {sorted(unknown)}; known: {', '.join(known)}")
    start = time.perf_counter()
    _, x = load_photos(extra_photos()[: args.photos], _SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        family_tables(args, x, tmp)
        if not args.no_cases:
            case_tables(args, tmp)
    print(f"\n({time.perf_counter() - start:.0f} s after imports)")


if __name__ == "__main__":
    main()
