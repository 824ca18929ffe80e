"""Figures: what each panel draws (array data, titles), PNG output, no pyplot state."""

from __future__ import annotations

import io
import re
import sys
import warnings
from concurrent import futures

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import NullFormatter
from PIL import Image

from tests.conftest import SIZE, WNID_CAT, cli_args, write_image
from tests.known_rows import SIDE, known_attributions, make_row, write_output
from transforms import faithfulness, plots, results, wording

A = np.array([[[1, -1, 0], [0, 0, 0]], [[2, 0, 0], [0, 0, -4]]], dtype=np.float32)  # [2, 2, 3]


@pytest.fixture(autouse=True)
def no_pyplot_state():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _images(ax):
    return [im.get_array() for im in ax.get_images()]


def _suptitle(figure: Figure) -> Text:
    """The Text of the figure's title: one of its texts (Figure has no public getter of
    the Text, only of its string)."""
    title = figure.get_suptitle()
    return next(text for text in figure.texts if text.get_text() == title)


def test_attribution_mask_is_the_seeds_abs_channel_sum():
    np.testing.assert_array_equal(
        plots.attribution_mask(A, clip_percentile=100), [[0.5, 0.0], [0.5, 1.0]]
    )
    # 50th percentile of [0, 2, 2, 4] is 2: larger values clip to 1.
    np.testing.assert_array_equal(plots.attribution_mask(A, clip_percentile=50), [[1, 0], [1, 1]])
    pixel = A.sum(axis=-1)  # [[0, 0], [2, -4]]
    np.testing.assert_array_equal(plots.attribution_mask(pixel, 100), [[0, 0], [0.5, 1]])
    assert not plots.attribution_mask(np.zeros((3, 3, 3))).any()
    # A value that overflowed (float16 inf) or is NaN: its pixel at the top, the others
    # scaled among themselves (not all blank, as inf / inf made them).
    broken = np.array([[[np.inf, 0.0], [1.0, 0.0]], [[2.0, 0.0], [np.nan, 1.0]]])
    np.testing.assert_array_equal(plots.attribution_mask(broken, 100), [[1, 0.5], [1, 1]])
    figure = plots.attribution_figure(broken, title="t")
    assert figure.get_suptitle() == (
        "t\n2 values of this map not finite (inf/NaN, e.g. a float16 overflow): drawn at the "
        "top of the mask"
    )
    # Wrapped to the figure's width: compared as one line.
    signed = plots.channel_figure(np.nan_to_num(broken, nan=0.0)).get_suptitle()
    assert signed.replace("\n", " ") == (
        "1 value of this map not finite (inf/NaN, e.g. a float16 overflow): inf at the ends "
        "of the scale, NaN blank"
    )
    assert plots.attribution_figure(A, title="t").get_suptitle() == "t"
    # A map 0 everywhere (the image is its baseline, or no gradient on the path) drew
    # a plain black mask, which a reader could not tell from a dark one.
    zero = "every value of this map is 0 (the image equals its baseline, or the score has "
    zero += "no gradient along the path)"
    assert plots.attribution_figure(np.zeros((2, 2, 3)), title="t").get_suptitle() == f"t\n{zero}"
    assert plots.channel_figure(np.zeros((2, 2))).get_suptitle().replace("\n", " ") == zero
    with pytest.raises(ValueError, match="expected attributions"):
        plots.attribution_mask(np.zeros((2, 2, 2, 2)))


def _padded(content: np.ndarray, side: int) -> tuple[np.ndarray, tuple[slice, slice]]:
    """`content` [h, w, ...] centred in a side x side map of zeros, as a non-square
    image's padding is on the black baseline; and where the content is in it."""
    top, left = (side - content.shape[0]) // 2, (side - content.shape[1]) // 2
    box = slice(top, top + content.shape[0]), slice(left, left + content.shape[1])
    padded = np.zeros((side, side, *content.shape[2:]), content.dtype)
    padded[box] = content
    return padded, box


@pytest.mark.parametrize("height", [8, 2, 1])  # a panorama, a 2-pixel bar, a line
@pytest.mark.parametrize("tall", [False, True])  # padded above and below, or at the sides
def test_a_maps_scale_is_its_images_not_its_padding(height, tall):
    """The padding of a wide or tall image (0 on the black baseline) is left out of the
    99th percentile: counted, its zeros lowered the percentile, and a 1:8 panorama's map
    had 8 % of its pixels at the top of the scale, a 2-pixel bar's three quarters."""
    rng = np.random.default_rng(0)
    content = rng.normal(size=(64, height, 3) if tall else (height, 64, 3)).astype(np.float32)
    padded, box = _padded(content, 64)
    np.testing.assert_array_equal(
        plots.attribution_mask(padded)[box], plots.attribution_mask(content)
    )
    pixel, _ = _padded(content.sum(axis=-1), 64)
    np.testing.assert_array_equal(
        plots.attribution_mask(pixel)[box], plots.attribution_mask(content.sum(axis=-1))
    )
    limits = [
        {ax.get_images()[0].get_clim() for ax in plots.channel_figure(a).axes[:3]}
        for a in (padded, content)
    ]
    assert limits[0] == limits[1]


def test_seed_figure_panels_draw_the_right_arrays():
    image = np.full((2, 2, 3), 255, np.uint8)
    baseline = np.zeros((2, 2, 3), np.float32)
    figure = plots.attribution_figure(
        A, image, baseline, title="cat", baseline_title="Baseline (black)"
    )
    assert isinstance(figure, Figure)
    axes = [ax for ax in figure.axes if ax.get_images()]
    assert [ax.get_title() for ax in axes] == [
        "Baseline (black)",
        "Original image",
        "Attribution mask (magnitude)",
        "Overlay",
    ]
    mask = plots.attribution_mask(A)
    np.testing.assert_array_equal(_images(axes[0])[0], baseline)
    np.testing.assert_array_equal(_images(axes[1])[0], np.ones((2, 2, 3)))
    np.testing.assert_array_equal(_images(axes[2])[0], mask)
    overlay = axes[3].get_images()
    np.testing.assert_array_equal(overlay[0].get_array(), mask)  # the mask, then the photo on top
    assert overlay[1].get_alpha() == 0.4
    assert figure.get_suptitle() == "cat"


def test_without_the_photo_the_figure_says_so():
    figure = plots.attribution_figure(
        A, None, None, panels=("image", "overlay"), note="No photo: TFDS"
    )
    image_ax, overlay_ax = figure.axes
    assert not image_ax.get_images() and "image not available" in image_ax.texts[0].get_text()
    assert overlay_ax.get_title() == "Attribution mask\n(magnitude; no image)"
    assert "No photo: TFDS" in figure.get_suptitle()
    with pytest.raises(ValueError, match="panel 'photo' is not one of"):
        plots.attribution_figure(A, panels=("photo",))


def test_figure_png_has_the_figures_size():
    figure = plots.attribution_figure(A, panels=("mask", "overlay"), panel_size=2.0)
    png = plots.figure_png(figure, dpi=50)
    assert png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(png)).size == (200, 100)


def _counting_draws(monkeypatch) -> list[Figure]:
    """The figures drawn from now on in this test, each time one is (`Figure.draw`)."""
    draws: list[Figure] = []
    draw = Figure.draw

    def counting(self, renderer):
        draws.append(self)
        return draw(self, renderer)

    monkeypatch.setattr(Figure, "draw", counting)
    return draws


def _saved(figure: Figure, dpi: int) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "dpi"),
    [
        (lambda: plots.attribution_figure(A, panels=("mask", "overlay"), title="t"), 50),
        (lambda: plots.completeness_figure(np.geomspace(1e-4, 0.05, 50), 0.01), 100),
        (lambda: plots.faithfulness_curves_figure(_CURVES_ROW, title="t"), 110),  # sanity's
    ],
    ids=["heat-map", "histogram", "curves"],
)
def test_figure_png_draws_a_figure_once_into_the_bytes_savefig_writes(make, dpi, monkeypatch):
    # savefig laid the figure out in a draw that rendered nothing, then drew it again
    # with its layout engine off: a tenth of a heat map's time and more. The canvas's
    # own PNG lays it out and renders it in one draw, the same bytes.
    expected = _saved(make(), dpi)
    draws = _counting_draws(monkeypatch)
    figure = make()
    assert plots.figure_png(figure, dpi=dpi) == expected
    assert draws == [figure]
    assert figure.dpi == 100  # drawn at `dpi`, then as it was


def test_channel_figure_is_signed_on_one_scale():
    figure = plots.channel_figure(A)
    axes = [ax for ax in figure.axes if ax.get_images()]
    assert [ax.get_title() for ax in axes] == ["red: sum +3", "green: sum -1", "blue: sum -4"]
    limits = {ax.get_images()[0].get_clim() for ax in axes}
    assert len(limits) == 1 and limits.pop()[0] < 0
    np.testing.assert_array_equal(axes[2].get_images()[0].get_array(), A[..., 2])
    with pytest.raises(ValueError, match="need \\[H, W, C\\] or \\[H, W\\]"):
        plots.channel_figure(A[None])


def test_masks_say_they_are_magnitudes_and_channels_show_a_pixel_runs_sign(tmp_path):
    """A linear model scoring the left half +1 and the right half -1 per channel: on a
    uniform grey image IG (black baseline) is +3x per pixel on the left, -3x on the right,
    --attributions pixel. The mask cannot tell the halves apart, so it is titled a
    magnitude; kind="channels" draws the stored signed sums, centred at zero."""
    import keras

    from pipeline import run

    weights = np.ones((SIZE, SIZE, 3, 2), np.float32)
    weights[:, SIZE // 2 :] *= -1
    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights.reshape(-1, 2), np.array([1.0, 0.0], np.float32)])
    model.save(tmp_path / "halves.keras")
    write_image(tmp_path / "images" / "grey.png", np.full((SIZE, SIZE, 3), 102, np.uint8))
    args = cli_args(
        dataset=tmp_path / "images", model=tmp_path / "halves.keras", output=tmp_path / "out"
    )
    run([*args, "--steps", "4", "--attributions", "pixel"], save_main_session=False)
    output = str(tmp_path / "out")
    signed = np.where(np.arange(SIZE) < SIZE // 2, 1.2, -1.2) * np.ones((SIZE, 1))  # 3 * 0.4
    np.testing.assert_allclose(
        results.attributions_of(results.read_row(output, "grey.png")), signed, rtol=1e-5
    )
    mask_ax = next(
        a
        for a in plots.audit_figure(output, "grey.png").axes
        if a.get_title() == "Attribution mask (magnitude)"
    )
    np.testing.assert_array_equal(mask_ax.get_images()[0].get_array(), np.ones((SIZE, SIZE)))
    channels = plots.audit_figure(output, "grey.png", kind="channels")
    (ax,) = [a for a in channels.axes if a.get_images()]
    assert ax.get_title().startswith("sum over channels: sum")
    np.testing.assert_allclose(ax.get_images()[0].get_array(), signed, rtol=1e-5)
    low, high = ax.get_images()[0].get_clim()
    assert low == -high == pytest.approx(-1.2)


def test_path_figure_plots_the_stored_curve(folder_run):
    row = results.read_row(folder_run["output"], "cat1.png")
    figure = plots.path_figure(row, title="t")
    ax = figure.axes[0]
    curve, target, baseline = ax.get_lines()
    assert curve.get_xdata().tolist() == pytest.approx([0.1, 0.5, 0.9])
    assert curve.get_ydata().tolist() == pytest.approx([1.5, 3.0, 4.9])
    assert target.get_ydata()[0] == 5.0 and baseline.get_ydata()[0] == 1.0
    assert ax.get_ylabel() == "F(alpha) (raw)"
    both = plots.path_figure(results.read_results(folder_run["output"]).head(2))
    assert len(both.axes[0].get_lines()) == 2
    none = pd.Series(make_row("a.png", None, 1, 0.5, 0.0))
    none["path_alphas"] = None
    assert "no path stored" in plots.path_figure(none).axes[0].texts[0].get_text()


def test_path_figure_of_several_baselines_marks_the_drawn_paths_own_start(linear_keras, tmp_path):
    from pipeline import run

    write_image(tmp_path / "images" / "a.png", np.full((SIZE, SIZE, 3), 90, np.uint8))
    args = cli_args(dataset=tmp_path / "images", model=linear_keras, output=tmp_path / "out")
    run([*args, "--steps", "8", "--baseline", "black,white"], save_main_session=False)
    row = results.read_row(str(tmp_path / "out"), "a.png")
    alphas, scores = results.path_of(row)
    curve, target, first, mean = plots.path_figure(row).axes[0].get_lines()
    assert alphas[0] == 0.0 and first.get_ydata()[0] == pytest.approx(scores[0])
    assert mean.get_ydata()[0] == pytest.approx(row["baseline_score"])
    assert first.get_label() == "F(x'), the black baseline (this path)"
    assert mean.get_ydata()[0] != pytest.approx(first.get_ydata()[0])  # white moves the mean


def test_completeness_histogram_counts_every_row():
    deltas = np.array([1e-4, 2e-3, 3e-3, 0.05, np.nan])
    figure = plots.completeness_figure(deltas, tolerance=0.01)
    ax = figure.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 4
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert set(labels) == {"tolerance 0.01: 1 row above", "4 rows", "1 row without a value"}
    assert "no rows" in plots.completeness_figure([]).axes[0].texts[0].get_text()
    one = plots.completeness_figure([0.05], tolerance=0.01).axes[0].get_legend().get_texts()
    assert [t.get_text() for t in one] == ["1 row", "tolerance 0.01: 1 row above"]
    # Errors of 0 (a map exact to float precision) have no place on a log axis: the bar
    # at 1e-7 says it holds them, not rows 1e-7 off. ("(0 too), drawn at it" left the
    # reader to guess what "it" was and that the zeros are among those rows.)
    figure = plots.attribution_error_figure([0.0, 0.0, 3e-9, 0.02], 0.015)
    exact = figure.axes[0]
    assert sum(p.get_height() for p in exact.patches) == 4
    figure.canvas.draw()  # the legend hides no bar (in the upper left it hid the zeros')
    legend = exact.get_legend().get_window_extent()
    assert not any(legend.overlaps(p.get_window_extent()) for p in exact.patches if p.get_height())
    assert [t.get_text() for t in exact.get_legend().get_texts()] == [
        "4 rows",
        "bound 0.015: 1 row above",
        "3 rows below 1e-07 (0 included), drawn at 1e-07",
    ]


@pytest.mark.parametrize("figure", [plots.completeness_figure, plots.attribution_error_figure])
def test_error_histogram_legend_hides_no_bar_of_a_few_rows(figure):
    # A run of a few rows: one row a bar, all as tall, so no corner of the axes is free
    # (the values of a 5-image run; "best" put the legend over its worst rows' bars).
    ax = figure([0.0032, 0.0040, 0.0059, 0.0086, 0.0217], 0.005).axes[0]
    ax.figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    bars = [p for p in ax.patches if p.get_height()]
    assert len(bars) == 5
    assert not any(legend.overlaps(p.get_window_extent()) for p in bars)


def test_grid_figure_captions_and_marks_misclassifications(folder_run):
    output = folder_run["output"]
    rows = results.read_results(output, with_arrays=True)
    pictures = results.input_images(output, rows.image_id)
    figure = plots.grid_figure(rows, pictures, columns=3)
    shown = [ax for ax in figure.axes if ax.get_title()]
    assert len(shown) == 4 and len(figure.axes) == 6
    titles = {ax.get_title().split("\n")[0]: ax for ax in shown}
    assert set(titles) == {"shark.png", "cat1.png", "cat2.png", "loose.png"}
    assert titles["cat2.png"].get_title() == "cat2.png\npred: class 282 (90%)\nlabel: class 281"
    red = {name for name, ax in titles.items() if ax.title.get_color() != "black"}
    assert red == {"shark.png", "cat2.png"}
    # The overlay of cat1: its mask under its re-loaded photo.
    mask, photo = (im.get_array() for im in titles["cat1.png"].get_images())
    np.testing.assert_array_equal(mask, plots.attribution_mask(known_attributions(1)))
    np.testing.assert_allclose(
        photo, folder_run["pixels"][f"{WNID_CAT}/cat1.png"] / 255.0, atol=1e-6
    )


def test_grid_figure_refuses_more_rows_than_it_draws_in_reasonable_time(folder_run):
    """It drew every row given: 256 took 23 s to lay out and save, 2,000 minutes and
    never saved. Above its limit it says so and how to pick rows, before drawing."""
    rows = results.read_results(folder_run["output"], with_arrays=True)
    many = pd.concat([rows] * 26, ignore_index=True)  # 104 rows
    message = "grid_figure draws at most 100 rows, one panel each; got 104: pass rows.head(100)"
    with pytest.raises(ValueError, match=re.escape(message)):
        plots.grid_figure(many)
    assert plots.GRID_MAX_ROWS == 100
    figure = plots.grid_figure(many.head(100), columns=10)
    assert len([ax for ax in figure.axes if ax.get_title()]) == 100


def test_grid_figure_refuses_one_row_above_its_limit(folder_run):
    rows = results.read_results(folder_run["output"], with_arrays=True)
    many = pd.concat([rows] * 26, ignore_index=True).head(plots.GRID_MAX_ROWS + 1)
    with pytest.raises(ValueError, match=r"at most 100 rows, one panel each; got 101"):
        plots.grid_figure(many)


def test_grid_figure_names_images_that_share_a_file_name_by_their_ids(tmp_path):
    # Both were captioned 'x.png': the grid did not say which panel was which image.
    long_folder = "a_folder_with_a_rather_long_name"
    rows = [
        [
            make_row("a/x.png", None, 5, 0.5, 0.0, seed=1),
            make_row(f"{long_folder}/x.png", None, 5, 0.5, 0.0, seed=2),
            make_row("b/y.png", None, 6, 0.5, 0.0, seed=3),
        ]
    ]
    output = write_output(tmp_path / "out", rows, dataset=str(tmp_path))
    figure = plots.grid_figure(results.read_results(output, with_arrays=True))
    names = [ax.get_title().split("\n")[0] for ax in figure.axes if ax.get_title()]
    assert names == ["a/x.png", "…th_a_rather_long_name/x.png", "y.png"]


def test_grid_figure_says_when_a_map_is_0_everywhere_or_not_finite(tmp_path):
    # The gallery drew inf/NaN at the top of the scale and a 0 map as plain black,
    # where the single-row figures say so.
    rows = [make_row(f"{name}.png", None, 5, 0.5, 0.0, seed=i) for i, name in enumerate("abc")]
    rows[1]["attributions"] = np.zeros_like(rows[1]["attributions"])
    rows[2]["attributions"] = rows[2]["attributions"].copy()
    rows[2]["attributions"][0, 0, :2] = [np.inf, np.nan]
    output = write_output(tmp_path / "out", [rows], dataset=str(tmp_path))
    figure = plots.grid_figure(results.read_results(output, with_arrays=True))
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert [t.splitlines()[2] if t.count("\n") == 2 else "" for t in titles] == [
        "",
        "(map 0 everywhere)",
        "(2 values not finite: drawn at the top)",
    ], titles


def test_grid_figure_says_when_it_shows_photos_without_maps(folder_run, tmp_path):
    """Rows without attributions (`--attributions none`) show the photo, captioned so."""
    rows = [[make_row("loose.png", None, 7, 0.3, 0.004, mode="none")]]
    output = write_output(tmp_path / "none", rows, folder_run["root"], attributions="none")
    frame = results.read_results(output, with_arrays=True)
    figure = plots.grid_figure(frame, results.input_images(output, frame.image_id))
    (ax,) = [ax for ax in figure.axes if ax.get_title()]
    assert len(ax.get_images()) == 1  # the photo, no mask
    assert ax.get_title().endswith("\n(no attributions stored)")
    with_maps = plots.grid_figure(results.read_results(folder_run["output"], with_arrays=True))
    assert not any("no attributions" in ax.get_title() for ax in with_maps.axes)


def test_names_with_dollar_signs_are_drawn_as_written_not_as_tex(tmp_path):
    """Matplotlib reads text between two `$` as TeX math: a file named `x$^$y.png`
    failed every figure captioning it (a ValueError when drawn, so the report too), and
    `a$b$.png` or a class named `$5 bill$` showed as a formula."""
    rows = [
        make_row("x$^$y.png", None, 5, 0.5, 0.0, seed=1),
        make_row("a$b$.png", None, 6, 0.5, 0.0, seed=2),
    ]
    rows[1]["target_name"] = "$5 bill$"
    output = write_output(tmp_path / "out", [rows], dataset=str(tmp_path))
    frame = results.read_results(output, with_arrays=True)
    figures = [
        plots.grid_figure(frame, title="run $a$"),
        plots.path_figure(frame, title="$x^$"),
        plots.faithfulness_curves_figure(rows[0], title="$x^$"),
        *(
            plots.audit_figure(output, "x$^$y.png", kind=k)
            for k in ("attributions", "channels", "path")
        ),
    ]
    for figure in figures:
        assert plots.figure_png(figure).startswith(b"\x89PNG")
        texts = [t for t in figure.findobj(Text) if "$" in t.get_text()]
        assert texts and not any(t.get_parse_math() for t in texts), figure
    legend = [t.get_text() for t in figures[1].axes[0].get_legend().get_texts()]
    assert legend == ["a$b$.png -> $5 bill$", "x$^$y.png -> class 5"]


#: Characters a name must not carry raw into a figure: they reorder (U+202E), hide
#: (U+200B) or break (a newline, ESC) the text around them.
_UNSHOWN = ("\u202e", "\u200b", "\x1b", "\r")


def test_names_with_control_and_format_characters_are_drawn_escaped(tmp_path):
    """File, image and class names were drawn raw: a right-to-left override reversed
    the caption after it ('x\u202egnp.exe' drawn as 'xexe.png'), a newline split a
    name over two caption lines. They are drawn as the terminal and the page show
    them (`wording.printable`); ordinary names are unchanged (the other tests)."""
    image_id = "d/x\u202egnp.exe\x1b[2J\n.png"
    rows = [
        make_row(image_id, 5, 6, 0.5, 0.0, seed=1),
        make_row("e/x\u202egnp.exe\x1b[2J\n.png", None, 5, 0.5, 0.0, seed=2),
    ]
    rows[0].update(
        predicted_name="cat\u200b\nfish", label_name="dog\u202eeno", target_name="t\x1bt"
    )
    output = write_output(tmp_path / "out", [rows], dataset=str(tmp_path))
    frame = results.read_results(output, with_arrays=True)
    figures = [
        plots.grid_figure(frame),  # the two share a file name: captioned by image ids
        plots.grid_figure(frame.head(1)),  # by file name
        plots.path_figure(frame),
        *(
            plots.audit_figure(output, image_id, kind=k)
            for k in ("attributions", "channels", "path")
        ),
    ]
    texts = [t.get_text() for figure in figures for t in figure.findobj(Text)]
    drawn = [t for t in texts if any(c in t for c in _UNSHOWN) or "\n.png" in t]
    assert not drawn, drawn
    shown = "\n".join(texts)
    for name in ("x\u202egnp.exe\x1b[2J\n.png", "cat\u200b\nfish", "dog\u202eeno", "t\x1bt"):
        assert wording.printable(name) in shown, (name, texts)


def test_a_long_name_is_cut_on_whole_escapes_in_a_caption():
    # Escaped, then cut at 28 characters: 'x...x\u202egnp.exe' was drawn 'x...x\u…', and
    # an image id cut at its start '…02egnp.exe...': escapes of no character.
    name = "x" * 25 + "\u202egnp.exe"
    assert plots.shortened(name) == "x" * 25 + "…"
    row = make_row("d/\u202e" + "y" * 30, 5, 5, 0.5, 0.0)
    assert plots.row_title(row, by_id=True)[0].splitlines()[0] == "…" + "y" * 27


def test_a_callers_titles_and_channel_names_are_drawn_escaped():
    # The public figures drew a caller's title, note and channel names raw: a
    # right-to-left override in a title (a file name put in it) reordered it. They
    # are escaped as names are; a title's own line breaks stay.
    title, name = "heat map of x\u202egnp.exe\nsecond line", "re\u202ed\x1b"
    maps = np.ones((SIZE, SIZE, 3), np.float32)
    figures = [
        plots.channel_figure(maps, title=title, channel_names=[name, "g", "b"]),
        plots.attribution_figure(maps, title=title, note=name, baseline_title=name),
        plots.grid_figure(pd.DataFrame(), title=title),
        plots.faithfulness_curves_figure(make_row("a.png", 5, 5, 0.5, 0.0), title=title),
    ]
    texts = [t.get_text() for figure in figures for t in figure.findobj(Text)]
    drawn = [t for t in texts if any(c in t for c in _UNSHOWN)]
    assert not drawn, drawn
    assert "re\\u202ed\\x1b: sum +256" in texts
    assert "heat map of x\\u202egnp.exe\nsecond line" in texts  # grid_figure's, its lines kept


def test_a_long_title_is_wrapped_on_whole_escapes():
    # textwrap broke a long unspaced title inside an escape: 'x...x\u2' / '02egnp.exe'.
    # A figure 8.6 inches wide holds lines of 111 characters; a long word fills the line.
    title = "x" * 108 + "\u202egnp.exe " + "y" * 120 + " z"
    figure = plots.channel_figure(np.ones((SIZE, SIZE, 3), np.float32), title=title)
    lines = next(t.get_text() for t in figure.findobj(Text) if "gnp" in t.get_text())
    assert lines.split("\n") == ["x" * 108, "\\u202egnp.exe " + "y" * 97, "y" * 23 + " z"]


def test_audit_figure_reads_row_photo_and_baseline(folder_run):
    output = folder_run["output"]
    figure = plots.audit_figure(output, "cat2.png")
    axes = [ax for ax in figure.axes if ax.get_images()]
    assert [ax.get_title() for ax in axes] == [
        "Baseline (black)",
        "Original image",
        "Attribution mask (magnitude)",
        "Overlay",
    ]
    np.testing.assert_allclose(
        axes[1].get_images()[0].get_array(),
        folder_run["pixels"][f"{WNID_CAT}/cat2.png"] / 255.0,
        atol=1e-6,
    )
    assert not axes[0].get_images()[0].get_array().any()  # black baseline
    assert figure.get_suptitle().startswith("cat2.png | pred: class 282 (90%) | label: class 281")
    assert len(plots.audit_figure(output, "cat2.png", kind="channels").axes) == 4  # + colour bar
    assert plots.audit_figure(output, "cat2.png", kind="path").axes[0].get_lines()
    with pytest.raises(ValueError, match="kind 'heat' is not one of"):
        plots.audit_figure(output, "cat2.png", kind="heat")


@pytest.mark.parametrize("baseline", ["black", "noise", "blur"])
def test_a_moved_folders_figure_draws_each_baseline_that_needs_no_photo(
    baseline, linear_keras, tmp_path
):
    # The folder moved after the run: the black baseline (constant) and the noise one
    # (seeded by the image id) need no photo, yet read "baseline not available"; the
    # blur one is made from the photo, whose absence the panels now name.
    from pipeline.main import run

    rng = np.random.default_rng(5)
    write_image(tmp_path / "images" / "a.png", rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    args = cli_args(
        dataset=tmp_path / "images",
        model=linear_keras,
        output=tmp_path / "out",
        baseline=baseline,
        steps=2,
        faithfulness="none",
    )
    run(args, save_main_session=False)
    output = str(tmp_path / "out")

    def panels() -> dict[str, plt.Axes]:
        figure = plots.audit_figure(output, "a.png")
        return {ax.get_title().split("\n")[0]: ax for ax in figure.axes}

    drawn = panels()[f"Baseline ({baseline})"].get_images()[0].get_array()
    (tmp_path / "images").rename(tmp_path / "moved")
    moved = panels()
    image_ax, baseline_ax = moved["Original image"], moved[f"Baseline ({baseline})"]
    assert not image_ax.get_images()
    said = image_ax.texts[0].get_text()
    assert said == "image not found where\nthe run read it"  # in lines, inside the panel
    if baseline == "blur":
        assert not baseline_ax.get_images()
        assert baseline_ax.texts[0].get_text().split() == (
            "made from the image: image not found where the run read it".split()
        )
    else:
        np.testing.assert_array_equal(baseline_ax.get_images()[0].get_array(), drawn)


def test_audit_figure_names_a_bad_kind_before_reading_anything(tmp_path):
    # A bad kind was found only after the row was read: on a run of --attributions
    # none (or no run) the error named the run, not kind="mask".
    with pytest.raises(ValueError, match="kind 'mask' is not one of: attributions, channels"):
        plots.audit_figure(str(tmp_path), "x.png", kind="mask")


def test_audit_figure_title_and_note_stay_inside_the_figure(tmp_path):
    """A top-k row's long caption and a long note are wrapped, not cut at the edges."""
    name = "a_photo_with_the_long_name_a_camera_gives_it_0001.png"
    rows = [[make_row(f"{WNID_CAT}/{name}", 281, 282, 0.9, 0.002, target=281)]]
    output = write_output(
        tmp_path / "out", rows, dataset=str(tmp_path / ("moved_image_folder_" * 4))
    )
    figure = plots.audit_figure(output, name, target_class=281)
    text = figure.get_suptitle()
    assert "attributed: class 281" in text and "pass image_root=" in text  # the note
    figure.canvas.draw()
    box = _suptitle(figure).get_window_extent(figure.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= figure.bbox.width, (box, figure.bbox)
    path = plots.audit_figure(output, name, kind="path", target_class=281)
    path.canvas.draw()
    box = path.axes[0].title.get_window_extent(path.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= path.bbox.width, (box, path.bbox)
    channels = plots.audit_figure(output, name, kind="channels", target_class=281)
    assert "attributed: class 281" in channels.get_suptitle().replace("\n", " ")
    channels.canvas.draw()
    box = _suptitle(channels).get_window_extent(channels.canvas.get_renderer())
    assert 0 <= box.x0 and box.x1 <= channels.bbox.width, (box, channels.bbox)


def test_audit_figure_for_tfds_rows_shows_heat_map_without_photo(tmp_path):
    image_id = "imagenet_a/imagenet_a-test.tfrecord-00000-of-00001__3"
    output = write_output(
        tmp_path / "out",
        [[make_row(image_id, 2, 3, 0.6, 0.0)]],
        dataset="imagenet_a",
        image_size=SIDE,
        split="test",
    )
    figure = plots.audit_figure(output, image_id)
    assert (
        "No photo: images of the TFDS dataset 'imagenet_a' are not re-loaded"
        in figure.get_suptitle()
    )
    titles = [ax.get_title() for ax in figure.axes]
    assert "Attribution mask\n(magnitude; no image)" in titles
    assert "Attribution mask (magnitude)" in titles


def test_attribution_error_histogram_shares_the_completeness_axes():
    figure = plots.attribution_error_figure([0.002, 0.03, 0.2, np.nan], tolerance=0.015)
    ax = figure.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 3
    assert ax.get_xscale() == "log" and "per-pixel error" in ax.get_xlabel()
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert labels == {"3 rows", "bound 0.015: 2 rows above", "1 row without a value"}


def test_error_histogram_counts_an_infinite_row_above_the_bound_not_as_missing():
    # attribution_error is inf where a stored map overflowed float16: a value, the worst.
    figure = plots.attribution_error_figure([0.002, 0.03, np.inf, np.nan], tolerance=0.015)
    ax = figure.axes[0]
    assert sum(p.get_height() for p in ax.patches) == 2
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert labels == {
        "2 rows",
        "bound 0.015: 2 rows above",
        "1 row infinite (off the scale)",
        "1 row without a value",
    }
    only = plots.attribution_error_figure([np.inf], tolerance=0.015).axes[0]
    assert "1 row infinite" in only.texts[0].get_text()


def test_error_histogram_bins_span_the_data_with_an_edge_on_the_tolerance():
    # The defaults' per-pixel errors: all within 1.43-1.48 %, around the tolerance 1.5 %.
    errors = np.array([0.0143, 0.0145, 0.01499, 0.015, 0.0151, 0.0148])
    edges = plots.log_bins(errors, tolerance=0.015)
    assert np.all(np.diff(edges) > 0)
    assert edges[0] < errors.min() and edges[-1] > errors.max()
    assert np.isclose(edges, 0.015, rtol=1e-12, atol=0).any()
    counts, _ = np.histogram(errors, edges)
    line = np.searchsorted(edges, 0.015, side="right")  # the bars right of the line
    assert counts[:line].sum() == 5 and counts[line:].sum() == 1  # 0.015 itself is within
    # A tolerance far outside the data is still on the axis; no tolerance: the data alone.
    wide = plots.log_bins(np.array([1e-6, 2e-4]), tolerance=0.1)
    assert wide[0] < 1e-6 and wide[-1] > 0.1 and np.isclose(wide, 0.1, rtol=1e-12).any()
    alone = plots.log_bins(np.array([0.02]))
    assert len(alone) == 31 and alone[0] < 0.02 < alone[-1]


def test_error_histogram_keeps_rows_above_the_tolerance_out_of_the_bars_within_it():
    figure = plots.attribution_error_figure([0.0143, 0.0145, 0.0148, 0.0152], tolerance=0.015)
    ax = figure.axes[0]
    within = sum(p.get_height() for p in ax.patches if p.get_x() < 0.015)  # bars left of it
    assert within == 3 and sum(p.get_height() for p in ax.patches) == 4
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert "bound 0.015: 1 row above" in labels


def test_faithfulness_figure_draws_ig_against_the_random_control():
    frame = pd.DataFrame(
        {
            "deletion_auc": [0.1, 0.2, np.nan],
            "deletion_auc_random": [0.4, 0.5, 0.6],
            "insertion_auc": [0.9, 0.7, 0.8],
            "insertion_auc_random": [0.5, 0.5, 0.4],
        }
    )
    deletion, insertion = plots.faithfulness_figure(frame).axes
    assert deletion.get_xlabel() == "deletion AUC (lower is better)"
    assert insertion.get_xlabel() == "insertion AUC (higher is better)"
    assert [t.get_text() for t in deletion.get_legend().get_texts()] == [
        "random ranking (3 rows, median 0.500)",
        "IG (2 rows, median 0.150)",
    ]
    assert [t.get_text() for t in insertion.get_legend().get_texts()] == [
        "random ranking (3 rows, median 0.500)",
        "IG (3 rows, median 0.800)",
    ]
    ig_counts = deletion.patches[1].get_path().vertices[:, 1]  # a step outline over the bins
    assert ig_counts.max() == 1
    assert not deletion.texts  # measured: no note
    # Null IG AUCs, whatever the reason (--faithfulness none, a model's NaN on every
    # curve): the default note names none; a caller that knows says why with `empty`.
    unmeasured = frame.assign(**{c: np.nan for c in frame.columns})
    for ax in plots.faithfulness_figure(unmeasured).axes:
        assert ax.texts[0].get_text() == "no IG AUCs in these rows"
    for ax in plots.faithfulness_figure(unmeasured, empty="--faithfulness none").axes:
        assert ax.texts[0].get_text() == "--faithfulness none"


def test_faithfulness_curves_are_drawn_as_their_aucs_measure_them():
    # p(x) = 0.2: the curves relative to it, capped at 1 (insertion overshoots p(x)).
    deletion_curve = np.array([0.2, 0.1, 0.0], np.float32)
    insertion_curve = np.array([0.0, 0.3, 0.2], np.float32)
    aucs = faithfulness.auc(np.stack([deletion_curve, insertion_curve]), np.array([0.2, 0.2]))
    row = pd.Series(
        {
            "deletion_curve": deletion_curve,
            "insertion_curve": insertion_curve,
            "deletion_auc": aucs[0],
            "deletion_auc_random": 0.6,
            "insertion_auc": aucs[1],
            "insertion_auc_random": None,
        }
    )
    figure = plots.faithfulness_curves_figure(row, title="t")
    ax = figure.axes[0]
    assert figure.get_suptitle() == "t"
    deletion, insertion = ax.get_lines()
    assert deletion.get_xdata().tolist() == [0.0, 0.5, 1.0]
    assert deletion.get_ydata().tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert insertion.get_ydata().tolist() == pytest.approx([0.0, 1.0, 1.0])
    for line, area in zip((deletion, insertion), aucs, strict=True):  # the legend's AUC
        assert np.trapezoid(line.get_ydata(), line.get_xdata()) == pytest.approx(area)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "deletion: AUC 0.500 (random 0.600)",
        "insertion: AUC 0.750 (random -)",
    ]
    assert ax.get_ylabel() == "probability / p(x), capped at 1\np(x) = 0.2"
    # p(x) 0 (a softmax underflow: AUCs null): the probabilities themselves.
    zero = row.copy()
    zero["deletion_curve"] = np.array([0.0, 0.1, 0.0], np.float32)
    zero["insertion_curve"] = np.array([0.0, 0.3, 0.0], np.float32)
    raw = plots.faithfulness_curves_figure(zero).axes[0]
    assert raw.get_lines()[1].get_ydata().tolist() == pytest.approx([0.0, 0.3, 0.0])
    assert raw.get_ylabel() == "probability of the target"
    for same in (row.to_dict(), next(row.to_frame().T.itertuples())):  # named tuple too
        lines = plots.faithfulness_curves_figure(same).axes[0].get_lines()
        assert [line.get_ydata().tolist() for line in lines] == [
            line.get_ydata().tolist() for line in ax.get_lines()
        ]
    empty = plots.faithfulness_curves_figure(pd.Series({"deletion_auc": 0.4}))
    assert "no deletion / insertion curves stored" in empty.axes[0].texts[0].get_text()


def test_a_caption_never_rounds_a_confidence_to_certainty_or_to_nothing():
    # A caption said "(100%)" of a prediction at 99.8 %, as if the model were certain.
    row = {
        "file_name": "a.png",
        "image_id": "a.png",
        "predicted_name": "tabby cat",
        "label": None,
        "label_name": None,
        "target_class": 281,
        "predicted_class": 281,
    }

    def caption(p):
        return plots.row_title({**row, "top_k_probs": [p]})[0].splitlines()[1]

    assert caption(0.998) == "pred: tabby cat (99.8%)"
    assert caption(0.99996) == "pred: tabby cat (>99.9%)"
    # A float32 probability of 1 is any value above 1 - 3e-8: no certainty either.
    assert caption(1.0) == "pred: tabby cat (>99.9%)"
    assert caption(0.62) == "pred: tabby cat (62%)"
    assert caption(0.004) == "pred: tabby cat (0.4%)"
    assert caption(0.00004) == "pred: tabby cat (<0.1%)"
    # The end-of-run table's one decimal, likewise.
    from transforms.wording import probability

    assert [probability(p, 1) for p in (0.452, 0.9996, 0.999996, 1.0, 0.0)] == [
        "45.2%",
        "99.96%",
        ">99.99%",
        ">99.99%",
        "<0.01%",
    ]


def test_a_value_that_is_not_a_number_is_not_shown_as_infinite_or_certain():
    # NaN is neither: infinite() said '−∞' of it (so percent() too), probability() '>99.9%'.
    from transforms.wording import infinite, percent, probability

    nan = float("nan")
    assert infinite(nan) is None and infinite(float("inf")) == "∞"
    assert percent(nan) == "nan%" and probability(nan) == "nan%"


def _shown_tick_labels(ax) -> list:
    """The window boxes of the x tick labels a reader sees (major and minor)."""
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    low, high = sorted(ax.get_xlim())
    return [
        label.get_window_extent(renderer)
        for tick in ax.xaxis.get_major_ticks() + ax.xaxis.get_minor_ticks()
        for label in (tick.label1,)
        if label.get_visible() and label.get_text() and low <= tick.get_loc() <= high
    ]


@pytest.mark.parametrize("figure", [plots.completeness_figure, plots.attribution_error_figure])
@pytest.mark.parametrize(
    ("values", "tolerance"),
    [
        # The sample run's relative deltas: the labels read "3×10⁻³4×10⁻³".
        ([5.45e-4, 1.4e-3, 2.5e-3, 2.6e-3, 2.7e-3, 4.0e-3, 4.2e-3, 4.3e-3], 0.005),
        ([0.0143, 0.0145, 0.0146, 0.0147, 0.0148], 0.015),  # its per-pixel errors
        ([8.7e-4] * 12, 0.005),  # one bar, less than a decade
        ([1e-6, 0.3], 0.01),  # many decades
    ],
)
def test_error_histogram_tick_labels_do_not_run_into_each_other(figure, values, tolerance):
    ax = figure(values, tolerance).axes[0]
    boxes = sorted(_shown_tick_labels(ax), key=lambda box: box.x0)
    assert len(boxes) >= 2  # the axis still reads
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 + 4 <= right.x0, (left, right)  # a gap of a few pixels at least


@pytest.mark.parametrize("figure", [plots.completeness_figure, plots.attribution_error_figure])
@pytest.mark.parametrize(
    "values",
    [np.full(99_999, 8.7e-4), np.r_[np.full(99_991, 0.0143), np.geomspace(0.0143, 0.0148, 8)]],
    ids=["one-bar", "per-pixel-errors"],
)
def test_a_narrow_histogram_of_many_rows_keeps_labels_that_clear_where_it_is_drawn(figure, values):
    # A 2.5-inch histogram of 99,999 rows, its row counts ("100000") wide on the left,
    # is drawn narrower than matplotlib's default margins: labels thinned there ran into
    # each other as drawn (10 to 12 pixels over). The histogram's legend is fitted in a
    # layout first, so this test holds without `_thin_tick_labels`' own layout step
    # too; `test_tick_labels_are_thinned_where_the_layout_puts_the_axes` pins that step.
    ax = figure(values, None, width=2.5).axes[0]
    boxes = sorted(_shown_tick_labels(ax), key=lambda box: box.x0)
    assert len(boxes) >= 2  # the axis still reads
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 + 4 <= right.x0, (left, right)


def _labels_left_out_that_clear(ax) -> list[str]:
    """The x tick labels left out (the inner formatter's, at their ticks) that would
    clear every label shown by 4 pixels where the figure is drawn."""
    shown = _shown_tick_labels(ax)  # draws the figure
    renderer = ax.figure.canvas.get_renderer()
    low, high = sorted(ax.get_xlim())
    clear = []
    for minor in (False, True):
        kept = ax.xaxis.get_minor_formatter() if minor else ax.xaxis.get_major_formatter()
        locs = ax.xaxis.get_ticklocs(minor=minor)
        ticks = ax.xaxis.get_minor_ticks() if minor else ax.xaxis.get_major_ticks()
        for tick, loc, text in zip(ticks, locs, kept.inner.format_ticks(locs), strict=False):
            if tick.label1.get_text() or not text or not low <= loc <= high:
                continue
            tick.label1.set_text(text)  # where the label would be, its tick's
            box = tick.label1.get_window_extent(renderer)
            tick.label1.set_text("")
            if all(box.x1 + 4 <= other.x0 or other.x1 + 4 <= box.x0 for other in shown):
                clear.append(text)
    return clear


def _bare_histogram(values: np.ndarray, tolerance: float | None, width: float):
    """The axes of a log histogram of `values` (and its `tolerance` line) in a
    constrained figure `width` inches wide, its layout not yet run: no legend, whose
    fitting runs one."""
    figure = plots._figure(width, 3.0)
    ax = figure.subplots()
    ax.hist(values, bins=plots.log_bins(values, tolerance))
    ax.set_xscale("log")
    if tolerance:
        ax.axvline(tolerance)
    ax.set_xlabel("relative completeness error")
    ax.set_ylabel("rows")
    return ax


@pytest.mark.parametrize(
    ("values", "tolerance", "width"),
    [(np.full(99_999, 8.7e-4), None, 2.5), (np.full(12, 8.7e-4), 0.005, 6.0)],
    ids=["many-rows-2.5in", "one-bar-6in"],
)
def test_tick_labels_are_thinned_where_the_layout_puts_the_axes(values, tolerance, width):
    # `_thin_tick_labels` lays the figure out before it measures. Without that step, on
    # axes never laid out, it measured them at matplotlib's default margins: at 2.5
    # inches (wide row counts) the kept labels then ran into each other as drawn, at
    # 6 inches "4x10^-3" was left out though it clears its neighbours.
    ax = _bare_histogram(values, tolerance, width)
    plots._thin_tick_labels(ax)
    boxes = sorted(_shown_tick_labels(ax), key=lambda box: box.x0)
    assert len(boxes) >= 2
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 + 4 <= right.x0, (left, right)
    assert _labels_left_out_that_clear(ax) == []


@pytest.mark.parametrize("figure", [plots.completeness_figure, plots.attribution_error_figure])
def test_an_error_histogram_leaves_out_only_labels_that_would_run_into_another(figure):
    # At the page's 6 inches the layout draws the axes wider than matplotlib's default
    # margins. Measured at those, one bar at 8.7e-4 lost its "4x10^-3", which clears
    # its neighbours as drawn. (The legend's fitting lays the figure out first, so this
    # holds without `_thin_tick_labels`' own layout step: the test above pins that.)
    assert _labels_left_out_that_clear(figure([8.7e-4] * 12, 0.005).axes[0]) == []


def test_thinned_tick_labels_are_kept_by_np_isclose_s_test():
    # The kept labels' test is np.isclose's (rtol 1e-9, atol 0) in plain floats: the
    # same ticks labelled, at the edge of that tolerance and across decades.
    kept = np.array([1e-7, 3e-3, 4e-3, 0.01, 2.0])
    rng = np.random.default_rng(0)
    edges = [
        np.nextafter(k * (1 + s * 1e-9), k + s * t) for k in kept for s in (-1, 1) for t in (1, -1)
    ]
    values = np.r_[kept, edges, kept * (1 + rng.normal(0, 2e-9, 5)), rng.uniform(0, 3, 20)]
    kept_by = plots._Kept(NullFormatter(), kept)
    for value in values:
        assert kept_by._is_kept(value) == np.isclose(value, kept, rtol=1e-9, atol=0.0).any()


def test_an_error_histogram_is_not_drawn_before_it_is_saved(monkeypatch):
    # Its tick labels are thinned where the figure's layout puts them: that took a
    # whole draw of the figure (bars, legend, grid) besides those of its saving, a
    # fifth of a histogram's time. The layout alone places the labels; the PNGs are
    # the same bytes.
    draws = _counting_draws(monkeypatch)
    figure = plots.completeness_figure([5.45e-4, 1.4e-3, 2.5e-3, 4.0e-3, 4.3e-3], 0.005)
    assert draws == []
    assert plots.figure_png(figure).startswith(b"\x89PNG") and draws


@pytest.mark.parametrize("figure", [plots.completeness_figure, plots.attribution_error_figure])
@pytest.mark.parametrize("width", [1.9, 1.1])
def test_an_error_histogram_narrower_than_2_inches_is_refused(figure, width):
    # At 1.9 inches the layout collapsed the axes to nothing ("axes sizes collapsed to
    # zero"), tick labels 21 pixels into each other; at 1.5 a legend fitted to the axes
    # took a 2.5-point font, at 1.1 the axes still narrowed on each save.
    with pytest.raises(ValueError, match=rf"width {width:g} inches .* at least 2 inches"):
        figure(np.geomspace(1e-4, 0.05, 50), 0.01, width=width)


def test_faithfulness_curves_axis_label_stays_inside_the_figure():
    # With a title, "probability / p(x), p(x) = 0.136 (capped at 1)" ran past both ends
    # of its 2.7-inch figure, cut at the top and the bottom (a tiny model's row).
    row = {
        "deletion_curve": np.linspace(0.136, 0.1, 33, dtype=np.float32),
        "insertion_curve": np.linspace(0.0, 0.136, 33, dtype=np.float32),
        "deletion_auc": 0.845,
        "deletion_auc_random": 0.86,
        "insertion_auc": 1.0,
        "insertion_auc_random": 0.998,
    }
    figure = plots.faithfulness_curves_figure(row, title="img00.png")
    figure.canvas.draw()
    label = figure.axes[0].yaxis.label
    box = label.get_window_extent(figure.canvas.get_renderer())
    assert 0 <= box.y0 and box.y1 <= figure.bbox.height, (box, figure.bbox)
    assert label.get_text() == "probability / p(x), capped at 1\np(x) = 0.136"


def _panels(figure) -> list[np.ndarray]:
    """The drawn pixels (R + G + B, float64 [h, w]) of each axes' image, colour bars out."""
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(np.float64)
    drawn = []
    for ax in figure.axes:
        if ax.get_images() and ax.get_label() != "<colorbar>":
            box = ax.get_images()[0].get_window_extent()
            rows = slice(rgba.shape[0] - round(box.y1), rgba.shape[0] - round(box.y0))
            drawn.append(rgba[rows, round(box.x0) : round(box.x1)].sum(axis=-1))
    return drawn


def _around(panel: np.ndarray, spots: list[tuple[int, int]], side: int, reduce) -> list[float]:
    """`reduce` of the drawn pixels within 2 of where each map pixel `spots` lands."""
    places = [(r * panel.shape[0] // side, c * panel.shape[1] // side) for r, c in spots]
    return [float(reduce(panel[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3])) for y, x in places]


def test_a_map_drawn_in_fewer_pixels_than_it_has_loses_no_bright_pixel():
    # The report's heat maps draw 224-pixel maps in about 190 pixels: with "nearest",
    # 1 row and column in 7 was dropped, and the bright pixel on it (spot 2 here) was
    # drawn black (3 of 765; the others 670).
    side = 224
    spots = [(10 + 25 * i, 13 + 23 * i) for i in range(9)]
    a = np.zeros((side, side), np.float32)
    a[tuple(np.array(spots).T)] = 1.0
    a[0, 0] = a[-1, -1] = 1e-3  # no zero edges: all of it is scaled, none left out
    mask = plots.attribution_figure(a, panels=("mask", "overlay"), panel_size=2.2)
    for panel in _panels(mask):
        assert panel.shape[0] < side
        assert min(_around(panel, spots, side, np.max)) > 100
    # Signed maps likewise: each spot redder (darker) than the white of 0.
    signed = plots.channel_figure(np.stack([a, a, a], axis=-1), panel_size=2.0)
    for panel in _panels(signed):
        white = float(np.median(panel))
        assert max(_around(panel, spots, side, np.min)) < white - 60
    # A 16-pixel map drawn 12 times larger stays crisp: its two values, no blend between.
    small = _panels(plots.attribution_figure(np.eye(16, dtype=np.float32), panels=("mask",)))
    assert len(np.unique(small[0][3:-3, 3:-3])) == 2  # inside the frame's antialiased edge


def _blank_rows(figure: Figure, left: float = 1.0) -> float:
    """The share of the figure's PNG rows of pixels that are white throughout (in its
    `left` share of the width: left of a colour bar)."""
    pixels = np.asarray(Image.open(io.BytesIO(plots.figure_png(figure))).convert("L"))
    return float((pixels[:, : int(left * pixels.shape[1])] >= 250).all(axis=1).mean())


def test_a_grid_of_maps_wider_than_tall_leaves_no_blank_band_under_each_line(tmp_path):
    """The maps of a model fixing a 24 x 40 input filled the width of square cells: 47 %
    of a gallery's pixel rows were blank. Its cells are as tall as such a map; square
    maps keep square cells."""
    rng = np.random.default_rng(4)
    rows = [make_row(f"{i}.png", None, 5, 0.5, 0.0, seed=i) for i in range(8)]
    for row in rows:
        row["attributions"] = rng.normal(size=(24, 40, 3)).astype(np.float32)
        row["attribution_shape"] = np.asarray([24, 40, 3], np.int32)
    output = write_output(tmp_path / "wide", [rows], dataset=str(tmp_path))
    wide = plots.grid_figure(results.read_results(output, with_arrays=True))
    assert _blank_rows(wide) < 0.25
    assert wide.get_size_inches()[1] == pytest.approx(2 * (2.4 * 24 / 40 + 0.7))
    square = [make_row(f"{i}.png", None, 5, 0.5, 0.0, seed=i) for i in range(8)]
    output = write_output(tmp_path / "square", [square], dataset=str(tmp_path))
    figure = plots.grid_figure(results.read_results(output, with_arrays=True))
    assert figure.get_size_inches()[1] == pytest.approx(2 * (2.4 + 0.7))


def test_a_map_wider_than_tall_fills_its_figure_and_a_square_keeps_its_size():
    """A report's card of a model fixing a 24 x 40 (or 16 x 96) input drew its image and
    overlay in square panels, the maps filling their width: 42 % (77 %) of the figure's
    pixel rows were blank (24 % and 43 % now, the rest the space around its titles). Its
    panels are as tall as such a map; square and tall maps keep square panels."""
    rng = np.random.default_rng(5)
    for height, width, blank in ((24, 40, 0.3), (16, 96, 0.5)):
        maps = rng.normal(size=(height, width, 3)).astype(np.float32)
        image = rng.integers(0, 256, (height, width, 3), np.uint8)
        figure = plots.attribution_figure(maps, image, panels=("image", "overlay"), title="t")
        assert _blank_rows(figure) < blank, (height, width, _blank_rows(figure))
    for height, width in ((24, 24), (40, 24)):
        maps = rng.normal(size=(height, width, 3)).astype(np.float32)
        figure = plots.attribution_figure(maps, panels=("image", "overlay"), title="t")
        assert tuple(figure.get_size_inches()) == pytest.approx((2 * 2.6, 2.6 + 0.5))


def test_a_non_square_runs_channel_figure_has_panels_as_tall_as_its_maps(tmp_path):
    """A real run of a model fixing a 24 x 40 input: `audit_figure(kind="channels")` drew
    its signed maps in square panels, the maps filling their width: 44 % of the pixel
    rows left of the colour bar were blank (25 % now), as the cards' were before their
    panels were made as tall as the maps. A square map keeps square panels."""
    import keras

    from pipeline import run

    keras.utils.set_random_seed(3)
    inputs = keras.Input((24, 40, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(3, 3)(inputs))
    keras.Model(inputs, keras.layers.Dense(4)(pooled)).save(tmp_path / "wide.keras")
    image = np.random.default_rng(8).integers(0, 256, (24, 40, 3), np.uint8)
    write_image(tmp_path / "images" / "wide.png", image)
    args = cli_args(
        dataset=tmp_path / "images", model=tmp_path / "wide.keras", output=tmp_path / "out"
    )
    run([*args, "--steps", "4", "--faithfulness", "none"], save_main_session=False)
    figure = plots.audit_figure(str(tmp_path / "out"), "wide.png", kind="channels")
    assert figure.get_size_inches()[1] == pytest.approx(2.6 * 24 / 40 + 0.3 + 0.5)
    assert _blank_rows(figure, left=0.85) < 0.3, _blank_rows(figure, left=0.85)
    square = plots.channel_figure(np.ones((24, 24, 3), np.float32), title="t")
    assert tuple(square.get_size_inches()) == pytest.approx((3 * 2.6 + 0.8, 2.6 + 0.5))


def _every_kind_of_row(rows: int) -> np.ndarray:
    """`rows` errors of 0, `rows` infinite and `rows` NaN, and 50 across three decades:
    a histogram whose legend has all five lines."""
    kinds = [np.zeros(rows), np.full(rows, np.inf), np.full(rows, np.nan)]
    return np.concatenate([*kinds, np.geomspace(1e-4, 0.05, 50)])


@pytest.mark.parametrize("figure", [plots.completeness_figure, plots.attribution_error_figure])
@pytest.mark.parametrize(
    ("values", "width", "usual"),
    [
        (_every_kind_of_row(99_999), 6.0, 0.8),  # a large run at the report's width
        (_every_kind_of_row(99_999), 5.0, 0.8),
        (_every_kind_of_row(3), 5.0, 0.85),
        (np.r_[np.zeros(99_999), np.geomspace(1e-4, 0.05, 50)], 5.5, 0.8),  # fewer lines
        (_every_kind_of_row(99_999), 2.5, 0.55),  # one column is too wide: lines wrap
        (np.geomspace(1e-4, 0.05, 50), 6.0, 0.8),  # two lines, in two columns that fit
        # Wrapped to lines of 12 characters, one column is still too wide: a smaller font.
        (_every_kind_of_row(99_999), 2.0, 0.45),
    ],
    ids=[
        "all-6in",
        "all-5in",
        "few-rows-5in",
        "zeros-5.5in",
        "all-2.5in",
        "bars-6in",
        "all-2in",
    ],
)
def test_an_error_histogram_keeps_its_width_however_often_it_is_laid_out(
    figure, values, width, usual
):
    # Its legend sits above the axes from their left edge. Two columns of five lines
    # ran past the axes' right edge, and each layout shrank the axes to make room for
    # it, which only made the overhang wider: 0.58, 0.49 then 0.39 of a 6-inch figure
    # after each save, thinned tick labels drawn 8 pixels into each other, and at
    # 5 inches the axes collapsed to nothing.
    drawn = figure(values, 0.01, width=width)
    ax = drawn.axes[0]
    widths = []
    for _ in range(3):
        plots.figure_png(drawn)
        widths.append(ax.get_position().width)
    assert widths[2] == pytest.approx(widths[0], abs=1e-6), widths
    assert widths[0] > usual, widths  # the axes' usual width, its y labels aside
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x1 <= axes.x1 and legend.y0 >= axes.y1  # above them, no wider
    # In the figure: a legend of 2 columns left out of the layout ran past its top.
    assert legend.y1 <= drawn.bbox.y1, (legend, drawn.bbox)
    shown = [" ".join(t.get_text().split()) for t in ax.get_legend().get_texts()]
    assert shown == ax.get_legend_handles_labels()[1]  # every line, wrapped or not
    boxes = sorted(_shown_tick_labels(ax), key=lambda box: box.x0)
    assert len(boxes) >= 2
    for left, right in zip(boxes, boxes[1:], strict=False):
        assert left.x1 + 4 <= right.x0, (left, right)


@pytest.mark.parametrize("figure", [plots.completeness_figure, plots.attribution_error_figure])
@pytest.mark.parametrize(
    ("width", "height"), [(6.0, 1.5), (4.0, 2.0), (3.0, 2.0), (2.0, 2.0), (2.0, 3.0)]
)
def test_an_error_histogram_keeps_a_usable_height_whatever_its_legend(figure, width, height):
    # A legend of five lines sits above the axes, wrapped to many lines at narrow
    # widths. In a figure shorter than it needed, the layout gave the axes what was
    # left: 35 pixels of a 3 x 2-inch figure, 72 of a 2 x 3-inch one, and at 2 x 2
    # inches none ("axes sizes collapsed to zero"), drawn at matplotlib's default
    # margins with the legend above the figure's top, out of the picture.
    drawn = figure(_every_kind_of_row(3), 0.01, width=width, height=height)
    png = Image.open(io.BytesIO(plots.figure_png(drawn)))
    ax = drawn.axes[0]
    drawn.canvas.draw()
    renderer = drawn.canvas.get_renderer()
    axes, legend = ax.get_window_extent(renderer), ax.get_legend().get_window_extent(renderer)
    assert axes.height / drawn.dpi >= 1.5, axes.height / drawn.dpi
    assert drawn.get_size_inches()[0] == pytest.approx(width)  # only taller
    assert drawn.get_size_inches()[1] >= height
    assert png.size == (round(width * 100), round(drawn.get_size_inches()[1] * 100))
    assert legend.y0 >= axes.y1 and legend.y1 <= drawn.bbox.y1  # above them, in the picture
    tight = ax.get_tightbbox(renderer)  # tick and axis labels, legend
    assert tight.y0 >= drawn.bbox.y0 and tight.y1 <= drawn.bbox.y1


@pytest.mark.parametrize("figure", [plots.completeness_figure, plots.attribution_error_figure])
@pytest.mark.parametrize("width", [2.0, 2.5, 3.0, 4.0])
def test_an_error_histogram_axis_label_stays_inside_a_narrow_figure(figure, width):
    # "relative completeness error |delta| / |F(x) - F(x')|" is 3.5 inches long at its
    # 10 points: in a 3-inch histogram it ran past the right edge ("... / |F(x) -"), in
    # a 2-inch one past both. It wraps to the figure's width instead, no word lost.
    drawn = figure(np.geomspace(1e-4, 0.05, 50), 0.01, width=width)
    plots.figure_png(drawn)
    label = drawn.axes[0].xaxis.label
    box = label.get_window_extent(drawn.canvas.get_renderer())
    assert box.x0 >= drawn.bbox.x0 and box.x1 <= drawn.bbox.x1, (box, drawn.bbox)
    assert box.y0 >= drawn.bbox.y0
    words = {
        plots.completeness_figure: "|F(x) - F(x')|",
        plots.attribution_error_figure: "||A_true||",
    }
    assert " ".join(label.get_text().split()).endswith(words[figure])


def _aucs(rows: int) -> pd.DataFrame:
    """`rows` rows of the four faithfulness AUCs, seeded, spread over [0, 1]."""
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "deletion_auc": rng.uniform(0.0, 0.5, rows),
            "deletion_auc_random": rng.uniform(0.2, 0.7, rows),
            "insertion_auc": rng.uniform(0.3, 1.0, rows),
            "insertion_auc_random": rng.uniform(0.2, 0.8, rows),
        }
    )


def _laid_out(make) -> tuple[Figure, list[str], object]:
    """The figure `make()` draws, saved and drawn again (the layout as a page shows
    it), the warnings its making and drawing gave, and the renderer."""
    import warnings  # noqa: PLC0415 - only these layout tests record warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = make()
        plots.figure_png(figure)
        figure.canvas.draw()
    return figure, [str(w.message) for w in caught], figure.canvas.get_renderer()


def _legend_fits_above(ax, figure, renderer) -> None:
    """The axes' legend sits above them, no wider than they are, inside the figure,
    every line of it shown (wrapped or not)."""
    axes, legend = ax.get_window_extent(renderer), ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= axes.x0 - 1 and legend.x1 <= axes.x1 + 1, (legend, axes)
    assert legend.y0 >= axes.y1 - 1 and legend.y1 <= figure.bbox.y1 + 1, (legend, figure.bbox)
    shown = [" ".join(t.get_text().split()) for t in ax.get_legend().get_texts()]
    assert shown == ax.get_legend_handles_labels()[1]


@pytest.mark.parametrize("width", [4.0, 4.5, 5.0, 6.0, 7.0, 9.0])
@pytest.mark.parametrize("height", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("rows", [40, 500])
def test_faithfulness_figure_panels_stay_usable_and_apart_at_any_size(width, height, rows):
    # Below about 7 inches each panel's legend ran past its axes, at 5 inches into the
    # other panel; the layout shrank the axes for it (1.04 of 5 inches, 0.55 of 4:
    # "constrained_layout not applied because axes sizes collapsed to zero"). At 9 x 2
    # inches the plots were 1.1 inches tall, at 9 x 1.5 0.6, at 9 x 1 0.1. Of 500 rows
    # at 4.5 inches, the deletion label ran under the insertion panel's "rows".
    figure, caught, renderer = _laid_out(
        lambda: plots.faithfulness_figure(_aucs(rows), width=width, height=height)
    )
    assert not [w for w in caught if "constrained_layout" in w], caught
    assert figure.get_size_inches()[0] == pytest.approx(width)
    assert figure.get_size_inches()[1] >= height
    deletion, insertion = figure.axes
    for ax in (deletion, insertion):
        box = ax.get_window_extent(renderer)
        assert box.height / figure.dpi >= 1.5 and box.width / figure.dpi >= 1.0, box
        _legend_fits_above(ax, figure, renderer)
        tight = ax.get_tightbbox(renderer)  # tick and axis labels, legend
        assert tight.x0 >= 0 and tight.x1 <= figure.bbox.x1, (tight, figure.bbox)
        assert tight.y0 >= 0 and tight.y1 <= figure.bbox.y1, (tight, figure.bbox)
    left, right = (ax.get_tightbbox(renderer) for ax in (deletion, insertion))
    assert left.x1 <= right.x0, (left, right)  # nothing of one panel over the other
    words = [" ".join(ax.get_xlabel().split()) for ax in (deletion, insertion)]
    assert words == ["deletion AUC (lower is better)", "insertion AUC (higher is better)"]


@pytest.mark.parametrize("width", [3.9, 2.0])
def test_a_faithfulness_figure_narrower_than_4_inches_is_refused(width):
    # At 3 inches two panels of 1 inch each had their legends over each other.
    with pytest.raises(ValueError, match=rf"width {width:g} inches .* at least 4 inches"):
        plots.faithfulness_figure(_aucs(5), width=width)


_CURVES_ROW = {
    "deletion_curve": np.linspace(0.8, 0.0, 33, dtype=np.float32),
    "insertion_curve": np.linspace(0.1, 0.8, 33, dtype=np.float32),
    "deletion_auc": 0.3,
    "deletion_auc_random": 0.5,
    "insertion_auc": 0.6,
    "insertion_auc_random": 0.4,
}


@pytest.mark.parametrize("width", [2.0, 2.5, 3.0, 3.6])
@pytest.mark.parametrize("height", [1.0, 1.5, 2.0, 2.7])
@pytest.mark.parametrize("title", [None, "coffee.png → espresso"])
def test_faithfulness_curves_stay_usable_at_any_size(width, height, title):
    # At 3.6 x 2 inches the plot was 0.92 inches tall, at 3.6 x 1.5 0.42, at 3.6 x 1.2
    # 0.12; at 3 inches wide the legend ran past the axes, at 2.5 the axes were 1 inch
    # wide for it, at 2 the layout collapsed ("axes sizes collapsed to zero").
    figure, caught, renderer = _laid_out(
        lambda: plots.faithfulness_curves_figure(
            _CURVES_ROW, title=title, width=width, height=height
        )
    )
    assert not [w for w in caught if "constrained_layout" in w], caught
    assert figure.get_size_inches()[0] == pytest.approx(width)
    assert figure.get_size_inches()[1] >= height
    ax = figure.axes[0]
    box = ax.get_window_extent(renderer)
    assert box.height / figure.dpi >= 1.5 and box.width / figure.dpi >= 1.0, box
    _legend_fits_above(ax, figure, renderer)
    tight = ax.get_tightbbox(renderer)
    assert tight.x0 >= 0 and tight.x1 <= figure.bbox.x1, (tight, figure.bbox)
    assert tight.y0 >= 0 and tight.y1 <= figure.bbox.y1, (tight, figure.bbox)
    if title:  # over the legend, in the picture
        above = _suptitle(figure).get_window_extent(renderer)
        assert above.y0 >= ax.get_legend().get_window_extent(renderer).y1, above
        assert above.y1 <= figure.bbox.y1 and above.x0 >= 0 and above.x1 <= figure.bbox.x1
    label = " ".join(ax.get_xlabel().split())
    assert label == "fraction of the image's pixels removed / revealed"


def test_faithfulness_curves_without_curves_keep_a_usable_height():
    figure, caught, renderer = _laid_out(
        lambda: plots.faithfulness_curves_figure({"deletion_auc": 0.4}, height=1.0)
    )
    assert not [w for w in caught if "constrained_layout" in w], caught
    assert figure.axes[0].get_window_extent(renderer).height / figure.dpi >= 1.5


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots.faithfulness_figure(_aucs(500), width=9.0, height=3.0),
        lambda: plots.faithfulness_curves_figure(_CURVES_ROW, title="t", width=3.6, height=2.7),
    ],
    ids=["faithfulness", "curves"],
)
def test_fitted_panels_are_put_back_into_the_layout(make):
    # The fitting moves the panels back to where `subplots` placed them, for the save's
    # layout to start there. Axes.set_position alone takes them out of the layout: the
    # report's 9 x 3-inch faithfulness figure kept subplots' margins, its x labels cut
    # off at the bottom.
    figure, _, renderer = _laid_out(make)
    assert all(ax.get_in_layout() for ax in figure.axes)
    for ax in figure.axes:  # the x label in the picture
        assert ax.xaxis.label.get_window_extent(renderer).y0 >= 0


@pytest.mark.parametrize("width", [1.9, 1.0])
def test_a_faithfulness_curves_figure_narrower_than_2_inches_is_refused(width):
    with pytest.raises(ValueError, match=rf"width {width:g} inches .* at least 2 inches"):
        plots.faithfulness_curves_figure(_CURVES_ROW, width=width)


def test_figures_drawn_in_threads_leave_the_warning_filters_as_they_were():
    """A report drawn in threads (a notebook rendering several runs' reports at once):
    each `figure_png` swapped the process's warning filters for a copy and put back
    the one it saved (`warnings.catch_warnings`), so one thread's exit dropped the
    filter another's drawing needed and a saved copy stayed installed for good."""

    def draw(_: int) -> bytes:
        figure = Figure(figsize=(1, 1))
        figure.text(0.1, 0.5, "猫の写真")  # DejaVu Sans has no glyph: a UserWarning each
        return plots.figure_png(figure, dpi=20)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: between a filter's install and removal
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            before = list(warnings.filters)
            with futures.ThreadPoolExecutor(8) as pool:
                drawn = list(pool.map(draw, range(48)))
            after = list(warnings.filters)
    finally:
        sys.setswitchinterval(interval)
    assert after == before
    assert [str(w.message) for w in caught] == []
    assert all(png.startswith(b"\x89PNG") for png in drawn)
