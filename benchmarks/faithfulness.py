"""What per-row faithfulness costs, and how its AUCs depend on the steps K.

1. Cost: the job's model handler at the defaults, with and without
   faithfulness, on real photos (skimage) and the bundled EfficientNet-Lite0, in
   RunInference batches of 8 after a warm-up batch. This shared 2-core
   machine's speed drifts by 10-30 %, so each round times both configurations
   back to back (alternating which goes first) and the table gives the median
   over rounds of the ratio to the same round's run without faithfulness.
2. Split: inside the same handler calls at the defaults, the time spent in
   IG and in the faithfulness checks of each batch, wall and CPU (the two run
   back to back on the same rows, so the machine's drift cancels in their ratio).
3. K sensitivity: for the maps of those photos, the four AUCs at several K
   against a fine reference (K = 128): the median and largest absolute change,
   and the time per row of the faithfulness evaluation alone; then, at K = 128,
   in how many rows IG beats its control, counted and tested as the report does
   (`results.chance_test`). Each photo's own pixels alone are ranked, as in the
   job (`load_examples`: its content box).

    python -m benchmarks.faithfulness [--rounds 3] [--steps 4,8,16,24,32,64] [--photos 16]
        [--tables cost,split,sensitivity]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time

import numpy as np
import pandas as pd

from benchmarks.common import extra_photos, load_examples, print_table
from transforms import faithfulness as fa
from transforms import ig, results
from transforms.attribution import IGModelHandler
from transforms.config import AttributionConfig
from transforms.tf_model import resolve_model

_BATCH = 8
_REFERENCE_STEPS = 128
_AUCS = ("deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random")


def _time_handler(handler, model, examples) -> tuple[float, list[dict]]:
    """Seconds per row over RunInference batches of 8, and the rows."""
    start, rows = time.perf_counter(), []
    for i in range(0, len(examples), _BATCH):
        rows += [r for o in handler.run_inference(examples[i : i + _BATCH], model) for r in o.rows]
    return (time.perf_counter() - start) / len(rows), rows


def cost_table(spec, warm, measured, rounds: int) -> list[list[str]]:
    """Seconds per row with and without the checks, each handler on its own model
    (as in a job: a shared one would share its traced functions and call-size tuner)."""
    defaults = AttributionConfig()
    handlers = {
        "IG only (--faithfulness none)": IGModelHandler(
            spec, dataclasses.replace(defaults, faithfulness="none"), None, batch_size=_BATCH
        ),
        f"IG + faithfulness (K = {defaults.faithfulness_steps})": IGModelHandler(
            spec, defaults, None, batch_size=_BATCH
        ),
    }
    models = {name: handler.load_model() for name, handler in handlers.items()}
    for name, handler in handlers.items():
        _time_handler(handler, models[name], warm)  # tracing, first calls at each shape
    seconds = {name: [] for name in handlers}
    for r in range(rounds):
        order = list(handlers) if r % 2 == 0 else list(reversed(handlers))
        for name in order:
            seconds[name].append(_time_handler(handlers[name], models[name], measured)[0])
    off, on = (np.array(seconds[name]) for name in handlers)
    ratios = on / off
    passes = fa.forward_passes_per_row(defaults.faithfulness_steps)
    return [
        [list(handlers)[0], f"{np.median(off):.3f}", "1.00", "-", "0"],
        [
            list(handlers)[1],
            f"{np.median(on):.3f}",
            f"{np.median(ratios):.2f}",
            f"{ratios.min():.2f}-{ratios.max():.2f}",
            str(passes),
        ],
        [
            "faithfulness alone (difference)",
            f"{np.median(on - off):.3f}",
            f"{np.median(ratios) - 1:.2f}",
            "",
            str(passes),
        ],
    ]


@contextlib.contextmanager
def _timed(module, name: str, spent: list[list[float]]):
    """Appends [wall, cpu] seconds of every call of module.name while inside."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent.append([time.perf_counter() - wall, time.process_time() - cpu])

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def split_table(spec, model, warm, measured, steps: list[int]) -> list[list[str]]:
    """Per K: seconds per row in IG and in the checks, measured inside each batch."""
    table = []
    for k in steps:
        config = dataclasses.replace(AttributionConfig(), faithfulness_steps=k)
        handler = IGModelHandler(spec, config, None, batch_size=_BATCH)
        _time_handler(handler, model, warm[:2])  # tracing (shapes are dynamic: 2 rows do)
        in_ig, in_checks = [], []
        with _timed(ig, "integrated_gradients", in_ig), _timed(fa, "for_rows", in_checks):
            _, rows = _time_handler(handler, model, measured)
        a, b = np.array(in_ig), np.array(in_checks)  # [batches, (wall, cpu)]
        ratio = b / a
        n = len(rows)
        table.append(
            [
                str(k),
                str(fa.forward_passes_per_row(k)),
                f"{a[:, 0].sum() / n:.3f}",
                f"{b[:, 0].sum() / n:.3f}",
                f"{np.median(ratio[:, 0]):.2f} ({ratio[:, 0].min():.2f}-{ratio[:, 0].max():.2f})",
                f"{np.median(ratio[:, 1]):.2f} ({ratio[:, 1].min():.2f}-{ratio[:, 1].max():.2f})",
            ]
        )
    return table


def _maps(spec, model, examples) -> tuple[list[dict], np.ndarray]:
    config = dataclasses.replace(AttributionConfig(), faithfulness="none")
    _, rows = _time_handler(IGModelHandler(spec, config, None, batch_size=_BATCH), model, examples)
    maps = np.stack([np.reshape(r["attributions"], r["attribution_shape"]) for r in rows])
    return rows, maps


def sensitivity_table(spec, model, examples, steps: list[int]) -> list[list[str]]:
    rows, maps = _maps(spec, model, examples)
    by_id = {ex.image_id: ex for ex in examples}
    ids = [r["image_id"] for r in rows]
    images = np.stack([by_id[i].image for i in ids])
    content = np.stack([by_id[i].content_mask() for i in ids])  # as the job: own pixels alone
    targets = np.array([r["target_class"] + spec.label_offset for r in rows])
    p_image = np.array([r["top_k_probs"][0] for r in rows], dtype=np.float64)
    probability = fa.from_outputs(model.logits, model.probabilities)  # as the job's
    refs = np.zeros_like(images)  # the default black baseline
    aucs, seconds = {}, {}
    for k in [_REFERENCE_STEPS, *steps]:
        start = time.perf_counter()
        aucs[k] = fa.for_rows(
            probability,
            images,
            refs,
            ids,
            np.arange(len(ids)),
            targets,
            maps,
            steps=k,
            chunk_size=AttributionConfig().points_per_call(model.settings.path_batch_size),
            image_probabilities=p_image,
            content=content,
        )
        seconds[k] = (time.perf_counter() - start) / len(ids)
    reference = aucs[_REFERENCE_STEPS]
    table = []
    for k in steps:
        errors = np.stack([np.abs(getattr(aucs[k], a) - getattr(reference, a)) for a in _AUCS])
        cells = [f"{np.median(e):.4f} / {e.max():.4f}" for e in errors]
        table.append([str(k), str(fa.forward_passes_per_row(k)), f"{seconds[k]:.3f}", *cells])
    ref = [f"{np.median(getattr(reference, a)):.3f}" for a in _AUCS]
    table.append(
        [
            f"{_REFERENCE_STEPS} (reference: median AUC)",
            str(fa.forward_passes_per_row(_REFERENCE_STEPS)),
            f"{seconds[_REFERENCE_STEPS]:.3f}",
            *ref,
        ]
    )
    return table + _chance_rows(reference, ids)


def _chance_rows(reference: fa.FaithfulnessResult, ids: list[str]) -> list[list[str]]:
    """The table's lines of how often IG beats its control at the reference K, as the
    job's report counts it: per check over its trials (`results.judged`: a check that
    measured nothing is none), a tie no win (`results.chance_losses`), with the sign
    test (`results.chance_test`); and the rows that beat it on both, of those judged
    on both."""
    frame = pd.DataFrame({"image_id": ids} | {a: getattr(reference, a) for a in _AUCS})
    losses = dict(zip(("deletion", "insertion"), results.chance_losses(frame), strict=True))
    cells = {}
    for check in losses:
        test = results.chance_test(frame, check)
        # Over images: a photo measured twice (the sample's and --photos') counts once.
        cells[check] = f"{test.beats} of {test.images} (sign test p = {test.p_value:.2g})"
    both = results.judged(frame, "deletion") & results.judged(frame, "insertion")
    won = both & ~losses["deletion"] & ~losses["insertion"]
    return [
        ["rows where IG beats chance", "", "", cells["deletion"], cells["insertion"], "", ""],
        ["rows where IG beats chance on both", "", "", f"{won.sum()} of {both.sum()}", "", "", ""],
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", default="4,8,16,24,32,64")
    parser.add_argument("--photos", type=int, default=16, help="measured photos (batches of 8)")
    parser.add_argument("--tables", default="cost,split,sensitivity", help="which to measure")
    args = parser.parse_args(argv)
    tables = args.tables.split(",")
    spec = resolve_model("efficientnet_lite0")
    warm = load_examples()  # the 8 sample photos: the warm-up batch
    measured = load_examples(extra_photos()[: args.photos])
    model = IGModelHandler(spec, AttributionConfig(), None).load_model()
    steps = [int(k) for k in args.steps.split(",")]
    if "split" in tables:
        print_table(
            f"Inside the handler at the defaults, {len(measured)} photos in batches of {_BATCH}: "
            "seconds per row in IG and in the faithfulness checks, and their ratio per batch "
            "(median, range)",
            [
                "K",
                "forward passes/row",
                "IG s/row",
                "checks s/row",
                "checks / IG (wall)",
                "checks / IG (CPU)",
            ],
            split_table(spec, model, warm, measured, steps),
        )
    if "cost" in tables:
        _print_cost(spec, warm, measured, args.rounds)
    if "sensitivity" in tables:
        print_table(
            f"AUC change against K = {_REFERENCE_STEPS}, {len(warm) + len(measured)} photos "
            "(median / max absolute difference)",
            ["K", "forward passes/row", "s/row (faithfulness only)", *_AUCS],
            sensitivity_table(spec, model, warm + measured, steps),
        )


def _print_cost(spec, warm, measured, rounds: int) -> None:
    print_table(
        f"Seconds per row at the defaults, {len(measured)} photos in batches of {_BATCH} "
        f"(median of {rounds} interleaved rounds; ratio to the same round's IG only)",
        ["configuration", "s/row", "ratio", "ratio range", "forward passes/row"],
        cost_table(spec, warm, measured, rounds),
    )


if __name__ == "__main__":
    main()
