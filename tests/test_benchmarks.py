"""The benchmark scripts' own checks (fast: no model, no job)."""

import dataclasses
import os
import pathlib
import re
import subprocess
import sys

import pytest

from benchmarks import throughput


@pytest.mark.parametrize("copies", ["1", "0"])
def test_throughput_refuses_copies_below_two_before_any_work(copies, capsys):
    # One copy is the small set itself: the marginal rate would divide by 0 images
    # after minutes of runs.
    with pytest.raises(SystemExit) as exit_info:
        throughput._parse(["--copies", copies, "--path_batch_size", "8"])
    assert exit_info.value.code == 2
    assert "--copies must be 2 or more" in capsys.readouterr().err


def test_throughput_accepts_two_copies():
    assert throughput._parse(["--copies", "2", "--path_batch_size", "8"]).copies == 2


def _doc_figure(text: str, pattern: str) -> float:
    return float(re.search(pattern, text).group(1))


def _scale_doc() -> tuple[str, list[dict]]:
    """docs/scale.md and the projection from the per-image figures its section 1 states."""
    text = (pathlib.Path(__file__).parents[1] / "docs" / "scale.md").read_text()
    per_image = {
        "model_s": _doc_figure(text, r"\|\s+inside the model \(uses both cores\)\s+\| ([\d.]+) s"),
        "other_s": _doc_figure(text, r"\|\s+everything else \([^|]*\| ([\d.]+) s"),
        "grad_points": _doc_figure(
            text, r"\| forward\+backward path points per image\s+\| ([\d.]+)"
        ),
        "fwd_points": _doc_figure(text, r"\| forward-only points per image \([^|]*\| ([\d.]+)"),
    }
    cpus = int(_doc_figure(text, r"Machine: (\d+) vCPUs"))
    return text, throughput.projection({"per_image": per_image, "machine": {"cpus": cpus}})


def test_scale_doc_projection_table_follows_from_its_stated_figures():
    text, rows = _scale_doc()
    for row in rows:
        rate = f"| {row['images_per_s_per_worker']:.2f} | {row['hours'] * 60:.0f} min |"
        cost = f"| ${row['usd']:.2f} | ${row['usd_per_1000_images']:.2f} |"
        assert rate in text and cost in text, (row["model"], row["workers"])


def test_scale_doc_gpu_to_cpu_worker_ratio_covers_the_projection():
    text, rows = _scale_doc()
    low, high = re.search(r"a GPU worker does (\d+)-(\d+)x the images", text).groups()
    for model in ("efficientnet_lite0", "inception_v1"):
        cpu, *gpus = [r["images_per_s_per_worker"] for r in rows if r["model"] == model]
        for gpu in gpus:
            assert int(low) <= round(gpu / cpu) <= int(high), (model, gpu / cpu)


def test_throughput_warns_when_start_up_comes_out_negative():
    # A reduced run on a shared 2-core machine measured -14.9 s: the large run's
    # marginal images were slower than the small run's, so the projection is noise.
    warning = throughput.noise_warning({"job_startup_s": -14.9})
    assert "noise" in warning and "-14.9 s" in warning
    # The cause, in the direction a negative start-up means (it once said the
    # opposite: "the small run was slower per image than the large one").
    assert "the large run's extra images each took longer than the small run's" in warning
    assert throughput.noise_warning({"job_startup_s": 5.8}) is None


def test_efficiency_fixed_gauss_legendre_row_runs_gauss_legendre():
    # The row was labelled Gauss-Legendre while it ran the default rule (the
    # trapezoid) at 64 steps, after the default method changed.
    from benchmarks import efficiency  # noqa: PLC0415

    configs = efficiency.handler_configs("32")
    fixed = configs["fixed gausslegendre 64"]
    assert (fixed.method, fixed.steps, fixed.tolerance) == ("gausslegendre", 64, 0.0)
    assert fixed.faithfulness == "none"
    defaults = [c for label, c in configs.items() if label.startswith("defaults (")]
    assert defaults[0].method == efficiency._D.method
    assert configs["defaults, --path_batch_size 32"].path_batch_size == 32


def test_memory_table_names_the_reference_it_divides_by(monkeypatch, capsys):
    # The reference is the first job measured; the title said "16 steps" whatever
    # --steps was.
    from benchmarks import memory  # noqa: PLC0415

    peaks = iter([1000.0, 1500.0, 1200.0, 1800.0])
    monkeypatch.setattr(memory, "peak_mb", lambda job: next(peaks))
    memory.main(["--steps", "64,256"])
    out = capsys.readouterr().out
    assert "(reference: fixed, 64 steps)" in out
    assert "| fixed " in out and "| 1000 " in out and "1.00x" in out and "1.80x" in out


def test_memory_child_runs_the_job_with_its_steps(monkeypatch):
    # peak_mb's child process: the job's --steps was parsed as the script's own
    # --steps and dropped, so every row of the table ran at the default --steps.
    from benchmarks import memory  # noqa: PLC0415

    ran = []
    monkeypatch.setattr(memory, "_child", ran.append)
    job = ["--dataset", "sample", "--steps", "64", "--max_steps", "256", "--tolerance", "0"]
    memory.main(["--child", *job])
    assert ran == [job]


def _fake_jobs(batch_size: int) -> throughput._Jobs:
    clock = {"grad_s": 0.0, "grad_points": 0, "grad_calls": 0, "fwd_s": 0.0, "fwd_points": 0}
    small = dict(clock, grad_s=20.0, grad_points=1000, grad_calls=125, fwd_s=2.0, fwd_points=80)
    large = dict(clock, grad_s=80.0, grad_points=4000, grad_calls=500, fwd_s=8.0, fwd_points=320)
    config = {"steps": 25, "method": "riemann_trapezoid", "tolerance": 0.01875}
    config |= {"max_steps": 256, "path_batch_size": None}
    rows = {"evaluations_per_row": 125.0, "evaluations_max": 150, "parquet_mb_per_row": 0.4}
    manifest = {"config": config, "batch_size": batch_size}  # as the job writes them
    return throughput._Jobs(8, 32, 40.0, 136.0, 130.0, small, large, manifest, rows)


def test_throughput_numbers_are_the_large_runs_marginal_images_and_the_jobs_flags():
    args = throughput._parse(["--copies", "4", "--path_batch_size", "8", "--batch_size", "16"])
    bare = {"forward_images_per_s": 100.0, "grad_points_per_s": 50.0}
    bare |= {"grad_call_peak_rss_mb": 200.0, "image_bytes": 224 * 224 * 3 * 4}
    numbers = throughput._numbers(args, bare, _fake_jobs(batch_size=8), proxy=1.0)
    per = numbers["per_image"]
    # 24 extra images in 96 s more: 4 s each, (60 + 6) / 24 s of them in the model.
    assert per["wall_s"] == 4.0 and per["model_s"] == 2.75 and per["other_s"] == 1.25
    assert per["grad_points"] == 125.0 and per["fwd_points"] == 10.0
    assert numbers["job_images_per_s"] == 0.25
    assert numbers["job_startup_s"] == 40.0 - 8 * 4.0
    assert numbers["in_job_points_per_grad_call"] == 8.0
    # --batch_size sets the bare model's forward batch; the flags are the job's.
    assert numbers["flags"]["batch_size"] == 8


def test_throughput_reads_the_jobs_flags_from_the_manifest_the_job_writes(
    image_folder, linear_keras, tmp_path
):
    # The job's --batch_size was read from the manifest's "config", where the job
    # never writes it: every run ended in a KeyError after its last job, minutes
    # in (the test above builds its own manifest and passed).
    extra = ["--batch_size", "3", "--faithfulness", "none"]
    _, manifest, _ = throughput._run_job(
        image_folder["root"], str(tmp_path / "out"), linear_keras, extra
    )
    jobs = dataclasses.replace(_fake_jobs(batch_size=8), manifest=manifest)
    args = throughput._parse(["--copies", "4", "--path_batch_size", "8"])
    bare = {"forward_images_per_s": 100.0, "grad_points_per_s": 50.0}
    bare |= {"grad_call_peak_rss_mb": 200.0, "image_bytes": 16 * 16 * 3 * 4}
    flags = throughput._numbers(args, bare, jobs, proxy=1.0)["flags"]
    assert flags["batch_size"] == 3 and flags["path_batch_size"] == "auto"
    assert (flags["steps"], flags["method"]) == (25, "riemann_trapezoid")


def test_efficiency_times_each_handler_on_its_own_model(monkeypatch, capsys):
    # With one model shared, the first handler's cold batch traced the gradient
    # functions for all (the others' "first (cold) batch" was warm) and the
    # call-size tuner learned from every handler's calls.
    import numpy as np  # noqa: PLC0415

    from benchmarks import efficiency  # noqa: PLC0415

    class Handler:
        def __init__(self, spec, config, *args, **kwargs):
            self.config = config

        def load_model(self):
            return object()

    seen: dict[int, set[int]] = {}
    bare_models: set[int] = set()

    def handler_throughput(handler, model, examples):
        seen.setdefault(id(handler), set()).add(id(model))
        return 10.0, 64.0

    def bare_throughput(model, images, batch, seconds=8.0):
        bare_models.add(id(model))
        return 20.0

    monkeypatch.setattr(efficiency, "IGModelHandler", Handler)
    monkeypatch.setattr(efficiency, "resolve_model", lambda name: None)
    monkeypatch.setattr(efficiency, "extra_photos", lambda: [])
    photos = (["a.png", "b.png"], np.zeros((2, 4, 4, 3), np.float32))
    monkeypatch.setattr(efficiency, "load_photos", lambda paths=None: photos)
    monkeypatch.setattr(efficiency, "handler_throughput", handler_throughput)
    monkeypatch.setattr(efficiency, "bare_throughput", bare_throughput)
    efficiency.main(["--rounds", "2", "--path_batch_sizes", "8,16"])
    assert len(seen) == 4  # fixed, defaults, defaults at 8 and at 16
    models = [next(iter(ids)) for ids in seen.values()]
    assert all(len(ids) == 1 for ids in seen.values())  # cold and steady on the same one
    assert len(set(models)) == 4 and not set(models) & bare_models
    assert "50.0%" in capsys.readouterr().out  # 10 / 20 evaluations per second


class _CosineIntegrand:
    """c(a) = (x - x') cos(3 a): IG = (x - x') sin(3) / 3, the integrand's sum is known."""

    def integrand_fn(self, score):
        import numpy as np  # noqa: PLC0415

        def run(images, references, index, alphas, targets):
            delta = images[index] - references[index]
            c = delta * np.cos(3.0 * alphas)[:, None, None, None]
            return None, None, np.ones(len(alphas), bool), c

        return run


def test_reference_ig_converges_and_its_coarse_half_is_the_rule_on_every_other_node(
    tmp_path, monkeypatch
):
    import numpy as np  # noqa: PLC0415

    from benchmarks import reference  # noqa: PLC0415

    monkeypatch.setattr(reference, "_CACHE", str(tmp_path))
    image = np.random.default_rng(0).uniform(0, 1, (4, 4, 3)).astype(np.float32)
    fine, coarse = reference.reference_ig(_CosineIntegrand(), "cos", image, 0, "raw", 64)
    exact = image.astype(np.float64) * np.sin(3.0) / 3.0
    alphas, weights = reference.graded_rule(32)
    direct = reference._integrate(_CosineIntegrand().integrand_fn("raw"), image, 0, alphas, weights)
    np.testing.assert_allclose(coarse, direct, rtol=1e-6)
    # Second order in the interval: halving it divides the error by about 4.
    fine_error, coarse_error = (
        reference.relative_l2(fine, exact),
        reference.relative_l2(coarse, exact),
    )
    assert fine_error < 5e-3 and 3.5 < coarse_error / fine_error < 4.5
    # Cached: the second call reads the same arrays back.
    again = reference.reference_ig(_CosineIntegrand(), "cos", image, 0, "raw", 64)
    np.testing.assert_array_equal(again[0], fine)
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("intervals", [1, 63])
def test_reference_ig_refuses_intervals_it_cannot_halve(intervals, tmp_path, monkeypatch):
    import numpy as np  # noqa: PLC0415

    from benchmarks import reference  # noqa: PLC0415

    monkeypatch.setattr(reference, "_CACHE", str(tmp_path))
    image = np.ones((2, 2, 3), np.float32)
    with pytest.raises(ValueError, match="must be even"):
        reference.reference_ig(_CosineIntegrand(), "cos", image, 0, "raw", intervals)


def test_teardown_reference_runs_the_commands_main_and_keeps_its_status(tmp_path):
    # The reference process of benchmarks/teardown.py: the command's own main, its
    # status and its error line, only the exit differs (a plain sys.exit).
    root = pathlib.Path(__file__).parents[1]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.teardown", "--plain", "pipeline.sanity"]
        + ["--input", str(tmp_path / "no_run")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("error: ") and "no_run" in done.stderr


def _tiny_bn_net(weights, input_shape, classifier_activation):
    """A stand-in for keras.applications.MobileNetV2 with its signature: a strided
    convolution and a batch norm, whose statistics the calibration sets."""
    import keras  # noqa: PLC0415

    assert weights is None and classifier_activation is None
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(4, 3, strides=16)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def test_ig_accuracy_random_net_references_are_keyed_by_its_calibrated_weights(
    tmp_path, monkeypatch
):
    # The random net's batch norms are calibrated on the photos measured
    # (--photos, --random_photos), but its references were cached under one fixed
    # id: a run on fewer photos read the references of another net.
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from benchmarks import ig_accuracy  # noqa: PLC0415

    monkeypatch.setattr(keras.applications, "MobileNetV2", _tiny_bn_net)
    photos = np.random.default_rng(0).uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)
    _, one = ig_accuracy._random_mobilenet(str(tmp_path), photos[:1])
    _, two = ig_accuracy._random_mobilenet(str(tmp_path), photos)
    _, again = ig_accuracy._random_mobilenet(str(tmp_path), photos[:1])
    assert one != two and one == again


def test_memory_names_the_jobs_own_error_when_it_fails():
    # A job that failed (here --steps 1, which the job refuses) surfaced as a bare
    # CalledProcessError of the script's child process: the job's error line, in
    # the captured stderr of a grandchild, was never shown.
    from benchmarks import memory  # noqa: PLC0415

    with pytest.raises(RuntimeError, match="--steps must be >= 2"):
        memory.main(["--steps", "1"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--images", "49"], "--images must be 1 to 48"),
        (["--images", "0"], "--images must be 1 to 48"),
        (["--intervals", "255"], "--intervals must be a power of two"),
    ],
)
def test_seed_speed_refuses_what_it_cannot_measure_before_any_work(flags, message, capsys):
    # 16 photos x 3 variants make 48 images: --images 49 measured 48 under a title
    # saying 49; 0 images, and an odd reference (255 intervals: its coarse half
    # cannot be taken), failed only after the images and the SavedModel were made.
    from benchmarks import seed_speed  # noqa: PLC0415

    with pytest.raises(SystemExit) as exit_info:
        seed_speed._parse(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_seed_speed_makes_the_images_it_is_asked_for(tmp_path):
    from benchmarks import seed_speed  # noqa: PLC0415

    assert seed_speed._parse(["--images", "48"]).images == 48
    seed_speed._make_images(str(tmp_path), 48)
    assert len(list(tmp_path.iterdir())) == 48


@pytest.mark.parametrize("sizes", ["auto", "16,x", "0"])
def test_efficiency_refuses_path_batch_sizes_that_are_not_sizes(sizes, capsys):
    # The help read "(auto: the device's)", but `auto` (what the defaults row
    # runs at) ended in a ValueError traceback after the model and photos loaded.
    from benchmarks import efficiency  # noqa: PLC0415

    with pytest.raises(SystemExit) as exit_info:
        efficiency.main(["--path_batch_sizes", sizes])
    assert exit_info.value.code == 2
    assert "--path_batch_sizes" in capsys.readouterr().err


def test_teardown_names_a_failing_commands_own_error():
    # A command that failed was reported as "... exited 1", its output (read line
    # by line for the timing) dropped.
    from benchmarks import teardown  # noqa: PLC0415

    failing = [sys.executable, "-c", "import sys; print('working'); sys.exit('error: no run')"]
    with pytest.raises(RuntimeError, match="exited 1:\nworking\nerror: no run"):
        teardown._timed(failing)


def test_no_photos_is_an_error_not_the_sample_photos(capsys):
    # faithfulness, ig_accuracy and estimate_limits load extra_photos()[:--photos]:
    # --photos 0 gave no path, which load_photos took for "the sample's 8 photos",
    # and the tables measured 8 photos under a title saying 0.
    from benchmarks.common import extra_photos, load_photos

    with pytest.raises(SystemExit, match=r"error: no photos to measure; pass --photos 1 or more"):
        load_photos(extra_photos()[:0])
    names, images = load_photos(extra_photos()[:1], size=32)
    assert len(names) == 1 and images.shape == (1, 32, 32, 3)


def test_ig_accuracy_refuses_a_net_it_does_not_know(capsys):
    # Any --nets value but 'pretrained' ran the random MobileNetV2: a typo measured it.
    from benchmarks import ig_accuracy

    with pytest.raises(SystemExit) as stop:
        ig_accuracy.main(["--nets", "pretrianed", "--photos", "1"])
    assert stop.value.code == 2
    assert "unknown net 'pretrianed'; choose pretrained, random or both" in capsys.readouterr().err


def test_storage_writes_row_groups_as_the_sink_groups_them(tmp_path):
    # benchmarks.storage's table is the sink's layout only if it groups rows as the
    # sink does: 64 full float32 224 x 224 x 3 maps to a group, small rows in one.
    import pyarrow.parquet as pq  # noqa: PLC0415

    from benchmarks.row_groups import main as row_groups  # noqa: PLC0415
    from benchmarks.storage import synthetic_rows, write_like_sink  # noqa: PLC0415

    for attributions, rows, groups in (("full", 130, [64, 64, 2]), ("none", 300, [300])):
        path = str(tmp_path / f"{attributions}.parquet")
        write_like_sink(path, synthetic_rows(rows, 224, attributions, "float32"), "float32")
        meta = pq.ParquetFile(path).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == groups
    assert row_groups(["--rows", "130", "--repeats", "1"]) == 0


def test_storage_writes_into_a_folder_it_creates(tmp_path, capsys):
    # `--folder` named a place to write: one that did not exist yet failed with
    # FileNotFoundError from tempfile, after the imports, before any table.
    from benchmarks.storage import main as storage  # noqa: PLC0415

    folder = tmp_path / "new" / "sub"
    assert storage(["--rows", "2", "--side", "8", "--repeats", "1", "--folder", str(folder)]) == 0
    assert "Raw float32 attributions of a 8x8x3 image: 768 bytes." in capsys.readouterr().out
    assert folder.is_dir() and not any(folder.iterdir())  # its temp files cleaned up


def test_estimate_limits_sine_model_is_its_formula_and_its_rows_report_the_floor(
    tmp_path, monkeypatch, capsys
):
    # The steep models of docs/accuracy.md §5d (tanh(g z) convolutions, sine
    # SavedModels) had no script, and whether the scores' rounding floor
    # (Adaptive._rounding) turned on for them was never read.
    import argparse  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from benchmarks import estimate_limits as el  # noqa: PLC0415
    from benchmarks import reference  # noqa: PLC0415

    monkeypatch.setattr(reference, "_CACHE", str(tmp_path))
    clf, model_id = el._model("sin300", 0, str(tmp_path))  # loaded as the job loads it
    x = np.random.default_rng(0).uniform(0, 1, (1, 32, 32, 3)).astype(np.float32)
    v = np.random.default_rng(0).normal(0.0, 1.0, (32 * 32 * 3, 10)) / np.sqrt(32 * 32 * 3)
    sines = np.sin(300.0 * x.reshape(1, -1).astype(np.float64)) @ v
    np.testing.assert_allclose(clf.logits(x), sines, atol=1e-4)
    args = argparse.Namespace(intervals=16, max_intervals=16)
    rows, _, _ = el._rows(clf, model_id, x, el._SETTINGS["defaults"], args)
    assert rows[0]["floor"] >= el._OFF and rows[0]["floor_peak"] >= rows[0]["floor"]
    assert np.isfinite(rows[0]["median"])  # read: the path had panels enough
    el._floor_table("defaults", {"sin300": rows})
    table = capsys.readouterr().out.splitlines()
    assert "| floor on at the end |" in table[2] and table[4].startswith("| sin300 | 1 ")


def test_estimate_limits_reads_the_floor_where_it_turns_on_and_can_run_without_it():
    # Scores off by up to 80 eps (tests/test_ig_engine.py: a linear probe whose
    # scores round as a float32 mean of many values do): the floor turns on, and the
    # engine without it is the engine before it (refined to --max_steps, flagged).
    import numpy as np  # noqa: PLC0415

    from benchmarks import estimate_limits as el  # noqa: PLC0415
    from tests.test_ig_engine import _PROBE_SHAPE, _probe_fn, _rounded  # noqa: PLC0415
    from transforms import ig  # noqa: PLC0415

    x = np.random.default_rng(1).uniform(0.0, 1.0, size=(1, *_PROBE_SHAPE)).astype(np.float32)
    base = np.zeros((1, 1, *_PROBE_SHAPE), np.float32)
    fn = _rounded(_probe_fn, 80)
    settings = ig.IGSettings("riemann_trapezoid", 25, tolerance=0.015, completeness_tolerance=0.005)

    def run(engine):
        with el._engine(engine):
            return ig.integrated_gradients(
                ig.integrand_from_gradients(fn),
                x,
                base,
                [0],
                [0],
                settings,
                target_scores=fn(x, base[:, 0], np.ones(1), None)[0],
                baseline_scores=fn(x, base[:, 0], np.zeros(1), None)[0].reshape(1, 1),
            )

    el._Recording.made.clear()
    on, off = run(el._Recording), run(el._NoFloor)
    (recorded,) = el._Recording.made
    assert recorded.last[0] > el._OFF and recorded.peak[0] >= recorded.last[0]
    assert recorded.median[0] > el._OFF  # what turned it on
    assert on.error[0] <= 0.015 and on.evaluations[0] < 256
    assert off.error[0] > 0.015 and off.evaluations[0] >= 256


def test_the_faithfulness_benchmarks_photos_carry_their_content_box_as_the_jobs_do():
    # The benchmark's examples had no content box: its handler runs and its K table
    # ranked a padded photo's black bars with its own pixels, which the job no longer
    # does (a map ranking them last beat its control by the padding alone).
    from benchmarks.common import extra_photos, load_examples, load_photos
    from transforms import images

    path = next(p for p in extra_photos() if p.endswith("chelsea.png"))  # 451 x 300
    (example,) = load_examples([path], size=32)
    assert example.content == images.pad_box(300, 451, 32) and example.content[2] < 32
    assert example.content_mask().sum() == example.content[2] * example.content[3]
    names, pixels = load_photos([path], size=32)
    assert names == [example.image_id] and (pixels[0] == example.image).all()


def test_the_faithfulness_benchmark_counts_rows_beating_chance_as_the_job_does():
    # Its "beats chance on both" line compared the AUCs itself: a check that measured
    # nothing (both AUCs 1) counted as a loss, and no line said how far above half
    # the counts were. It uses the job's chance_losses, judged and chance_test.
    import numpy as np

    from benchmarks.faithfulness import _chance_rows
    from transforms.faithfulness import FaithfulnessResult

    # Rows: beats both; ties on deletion; insertion measured nothing; loses insertion;
    # beats both; beats both.
    aucs = {
        "deletion_auc": [0.1, 0.3, 0.1, 0.1, 0.2, 0.1],
        "deletion_auc_random": [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],
        "insertion_auc": [0.8, 0.8, 1.0, 0.4, 0.9, 0.7],
        "insertion_auc_random": [0.5, 0.5, 1.0, 0.5, 0.5, 0.5],
    }
    curves = np.zeros((6, 3))
    result = FaithfulnessResult(
        curves,
        curves,
        curves,
        curves,
        **{k: np.array(v) for k, v in aucs.items()},
        forward_evaluations=np.zeros(6, np.int64),
    )
    deletion, both = _chance_rows(result, [f"p{i}.png" for i in range(6)])
    assert deletion[3:5] == ["5 of 6 (sign test p = 0.11)", "4 of 5 (sign test p = 0.19)"]
    assert both[3] == "3 of 5"  # the third row is judged on deletion alone
    # A photo measured twice (the sample's astronaut and --photos 1's) counts once:
    # its first row, here the one that beats its control.
    deletion, _ = _chance_rows(result, ["p0.png", "p0.png", *(f"p{i}.png" for i in range(2, 6))])
    assert deletion[3] == "5 of 5 (sign test p = 0.031)"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rounds", "0"], "--rounds must be 1 or more"),
        (["--base", "/"], "is no checkout of the project (no transforms/)"),
    ],
)
def test_launch_parse_refuses_what_it_cannot_measure_before_any_work(flags, message, capsys):
    # Both would fail only after the two SavedModels were made (about 20 s): no round
    # to take a median of, and a --base whose launches import no project.
    from benchmarks import launch_parse  # noqa: PLC0415

    with pytest.raises(SystemExit) as exit_info:
        launch_parse.main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
