"""The benchmark scripts' own checks (fast: no model, no job)."""

import pathlib
import re

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
