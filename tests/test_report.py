"""The HTML report of a real DirectRunner run: sections, embedded images, the misclassified rows."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from pipeline import run
from pipeline.report import build_report, main
from tests.conftest import SIZE, WNID_CAT, WNID_SHARK, write_image
from tests.test_results import make_row, write_output
from transforms import labels, results

SECTIONS = ["summary", "misclassified", "completeness", "worst-completeness", "per-class",
            "gallery", "errors", "querying"]  # fmt: skip
LABELS = {f"{WNID_CAT}/cat1.png": 281, f"{WNID_CAT}/cat2.png": 281, f"{WNID_SHARK}/shark.png": 2,
          "loose.png": None}  # fmt: skip


class _Page(HTMLParser):
    """Section texts, <img> sources and every URL-bearing attribute of a page."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, str] = {}
        self.images: dict[str, list[str]] = {}
        self.alts: dict[str, list[str]] = {}
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self._section: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self._section = attrs["id"]
            self.sections[self._section] = ""
            self.images[self._section] = []
        if tag == "img":
            self.images.setdefault(self._section, []).append(attrs["src"])
            self.alts.setdefault(self._section, []).append(attrs.get("alt", ""))
        self.urls += [v for k, v in attrs.items() if k in ("src", "href") and v]

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._section:
            self.sections[self._section] += data


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, linear_keras, linear_weights):
    """A DirectRunner run of the linear model over 4 images (one unlabelled) and a broken file."""
    base = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(11)
    pixels = {}
    for image_id in LABELS:
        pixels[image_id] = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        write_image(base / "images" / image_id, pixels[image_id])
    (base / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    output = str(base / "out")
    manifest = run(["--runner", "DirectRunner", "--dataset", str(base / "images"), "--model",
                    linear_keras, "--output", output, "--steps", "4"],
                   save_main_session=False)  # fmt: skip
    weights, bias = linear_weights
    predicted = {
        i: int(np.argmax((p.astype(np.float32) / 255.0).reshape(-1) @ weights + bias))
        for i, p in pixels.items()
    }
    html_path = base / "report.html"
    assert main(["--input", output, "--output", str(html_path)]) == 0
    page = _Page()
    page.feed(html_path.read_text(encoding="utf-8"))
    return {"output": output, "manifest": manifest, "predicted": predicted, "html": html_path,
            "page": page}  # fmt: skip


def test_report_has_every_section_and_the_run_summary(real_run):
    page, manifest = real_run["page"], real_run["manifest"]
    assert list(page.sections) == SECTIONS
    summary = page.sections["summary"]
    assert manifest["model"]["identity"] in summary
    assert "linear.keras" in summary and "riemann_trapezoid, 4 steps" in summary
    assert "inputs 5" in summary and "rows 4" in summary and "errors 1" in summary
    assert "All inputs accounted foryes" in summary


def test_report_lists_the_misclassified_images_most_confident_first(real_run):
    predicted, names = real_run["predicted"], labels.imagenet_class_names()
    wrong = [i for i, label in LABELS.items() if label is not None and predicted[i] != label]
    right = [i for i, label in LABELS.items() if label is not None and predicted[i] == label]
    assert wrong  # random weights: the tiny model gets images wrong
    section = real_run["page"].sections["misclassified"]
    assert f"{len(wrong)} of 3 labelled images are misclassified" in section
    for image_id in wrong:
        assert image_id in section
        assert f"Label {names[LABELS[image_id]]} ({LABELS[image_id]}), predicted " \
               f"{names[predicted[image_id]]}" in section  # fmt: skip
    for image_id in right + ["loose.png"]:
        assert image_id not in section
    meta = results.read_results(real_run["output"]).set_index("image_id")
    confidence = {i: meta.loc[i, "top_k_probs"][0] for i in wrong}
    order = sorted(wrong, key=lambda i: (-confidence[i], i))
    assert [m for m in re.findall(r"n\d{8}/\w+\.png", section) if m in wrong] == order
    # One heat map (photo, mask, overlay) per card.
    assert len(real_run["page"].images["misclassified"]) == len(wrong)


def test_report_embeds_every_image_and_loads_nothing_external(real_run):
    page = real_run["page"]
    sources = [src for srcs in page.images.values() for src in srcs]
    assert len(sources) >= 1 + 4 + 4 + 1  # histogram, worst rows (+ paths), gallery
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and min(image.size) > 50
    assert all(url.startswith(("data:", "#")) for url in page.urls)
    assert not page.tags & {"script", "link", "iframe"}
    assert len(page.images["completeness"]) == 1 and len(page.images["gallery"]) == 1


def test_report_completeness_per_class_and_errors(real_run):
    page, predicted = real_run["page"], real_run["predicted"]
    worst = page.sections["worst-completeness"]
    assert all(i in worst for i in LABELS)
    assert "0 of 4 rows exceed the run's tolerance 0.005" in worst  # IG is exact for linear models
    per_class = page.sections["per-class"]
    cats = [predicted[i] == 281 for i in LABELS if LABELS[i] == 281]
    assert re.search(rf"281tabby cat2{sum(cats)}{sum(cats) / 2:.1%}", per_class)
    assert re.search(
        rf"2great white shark1{int(predicted[f'{WNID_SHARK}/shark.png'] == 2)}", per_class
    )
    errors = page.sections["errors"]
    assert "1 inputs could not be processed (decode: 1)" in errors and "broken.jpg" in errors


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs the chromium binary")
def test_report_renders_in_headless_chromium(real_run, tmp_path):
    shot = tmp_path / "report.png"
    profile = tmp_path / "profile"
    profile.mkdir()
    subprocess.run(
        [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
         "--window-size=1280,2400", f"--screenshot={shot}", real_run["html"].as_uri()],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape == (2400, 1280, 3)
    # Heat maps were drawn: many saturated inferno-orange pixels, not just text.
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert ((red > 150) & (red - green > 60) & (blue < 120)).sum() > 5000


def test_report_without_photos_or_attributions(tmp_path):
    image_id = "imagenet_a/imagenet_a-test.tfrecord-00000-of-00001__3"
    output = write_output(tmp_path / "out", [[make_row(image_id, 2, 3, 0.6, 0.02, mode="none")]],
                          dataset="imagenet_a", attributions="none", split="test")  # fmt: skip
    page = _Page()
    page.feed(build_report(output, gallery=0))
    assert "gallery" not in page.sections
    assert (
        "No attributions stored (the run used --attributions none)"
        in page.sections["misclassified"]
    )
    assert "1 of 1 rows exceed the run's tolerance 0.01" in page.sections["worst-completeness"]
    assert page.images["worst-completeness"]  # the path curve is still there
    text = html.unescape(build_report(output))
    assert "Photos: images of the TFDS dataset 'imagenet_a' are not re-loaded" in text


def test_misclassified_cards_show_evidence_for_prediction_and_label(tmp_path):
    # --target top_k: cat.png (label 281, predicted 282) has a row for each class.
    rows = [[make_row("n02123045/cat.png", 281, 282, 0.7, 0.0, seed=1),
             make_row("n02123045/cat.png", 281, 282, 0.7, 0.0, target=281, seed=2),
             make_row("n01484850/shark.png", 2, 3, 0.9, 0.0, seed=3)]]  # fmt: skip
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path / "gone"))
    page = _Page()
    page.feed(build_report(output, gallery=0))
    assert page.alts["misclassified"] == [
        "heat map of shark.png for class 3",  # most confident first
        "heat map of cat.png for class 282",
        "heat map of cat.png for class 281",
    ]
    assert "the label is not in top 3" in page.sections["misclassified"]


def test_report_command_line_errors(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path / "r.html")]) == 2
    assert "error: --input" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
