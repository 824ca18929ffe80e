"""What the per-batch checkpoint files cost, against the batch they keep.

    python -m benchmarks.checkpoint [--repeats 5]

A run writes each RunInference batch's rows twice: once, whole, to
`<output>/.tmp/checkpoints/` as the batch ends (what a `--resume` keeps of a
killed run), and once through Beam's sink when the run ends. This measures, in
one run, on one batch of the 8 sample photos with the bundled model at the
defaults (faithfulness on, as shipped):

* the batch itself (`IGModelHandler.run_inference`, after a warm-up batch);
* writing its real rows as one checkpoint file (`write_parquet_file`);
* writing the same rows as the sink does (`storage.write_like_sink`), the
  reference for the write;

and prints the checkpoint's time against both.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from benchmarks.common import load_photos, print_table
from benchmarks.efficiency import photo_examples
from benchmarks.storage import _timed, write_like_sink
from transforms.attribution import IGModelHandler
from transforms.config import AttributionConfig
from transforms.schema import results_schema, rows_to_table
from transforms.sinks import write_parquet_file, writer_options
from transforms.tf_model import resolve_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="writes timed (median)")
    args = parser.parse_args(argv)
    config = AttributionConfig()
    handler = IGModelHandler(resolve_model("efficientnet_lite0"), config, None, batch_size=8)
    model = handler.load_model()
    examples = photo_examples(*load_photos())
    handler.run_inference(examples, model)  # warm-up: tracing
    start = time.perf_counter()
    rows = [row for outcome in handler.run_inference(examples, model) for row in outcome.rows]
    batch = time.perf_counter() - start
    schema = results_schema(config.attribution_dtype)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = os.path.join(folder, "checkpoint.parquet")
        sink = os.path.join(folder, "sink.parquet")
        ckpt = _timed(
            lambda: write_parquet_file(checkpoint, [rows_to_table(rows, schema)], schema, folder),
            args.repeats,
        )
        ref = _timed(
            lambda: write_like_sink(
                sink, iter(rows), config.attribution_dtype, **writer_options(schema)
            ),
            args.repeats,
        )
        size = os.path.getsize(checkpoint)
    print_table(
        f"One batch of {len(rows)} rows at the defaults ({size / 1e6:.1f} MB as a checkpoint file; "
        f"write times: median of {args.repeats})",
        ["what", "seconds", "vs the sink's write", "vs the batch"],
        [
            ["the batch (run_inference, warm)", f"{batch:.1f}", "", "100%"],
            ["sink's write of its rows (reference)", f"{ref:.3f}", "1.00x", f"{ref / batch:.2%}"],
            [
                "checkpoint file of its rows",
                f"{ckpt:.3f}",
                f"{ckpt / ref:.2f}x",
                f"{ckpt / batch:.2%}",
            ],
        ],
    )


if __name__ == "__main__":
    main()
