"""The baselines x' of IG: known values in the model's input range, the noise's seeding."""

import numpy as np
import pytest

from transforms.baselines import BASELINES, make_baselines

RANGE = (-1.0, 3.0)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(*RANGE, size=(8, 6, 3)).astype(np.float32)


def test_constant_baselines_are_the_ends_and_middle_of_the_input_range():
    out = make_baselines(_image(), ("black", "white", "grey"), RANGE, "a.png")
    assert out.shape == (3, 8, 6, 3) and out.dtype == np.float32
    assert [np.unique(b).tolist() for b in out] == [[-1.0], [3.0], [1.0]]


def test_blur_keeps_a_constant_image_and_smooths_a_varied_one():
    flat = np.full((8, 6, 3), 0.5, np.float32)
    np.testing.assert_allclose(make_baselines(flat, ("blur",), RANGE, "a")[0], flat, atol=1e-6)
    image = _image()
    (blurred,) = make_baselines(image, ("blur",), RANGE, "a")
    assert blurred.std() < image.std()
    assert abs(blurred.mean() - image.mean()) < 0.1


@pytest.mark.parametrize("side", [16, 224])
@pytest.mark.parametrize("input_range", [(0.0, 1.0), (0.0, 255.0), (-1.0, 1.0)])
def test_a_uniform_image_is_exactly_its_own_blur(side, input_range):
    # A uniform image is its own blur; float32 sums missed most 8-bit colours by a
    # rounding (x - x' ~ 1e-8), and IG refined that noise up to --max_steps.
    low, high = input_range
    colours = np.random.default_rng(0).integers(0, 256, size=(40, 3))
    for colour in colours.astype(np.float32) / 255:
        image = np.broadcast_to(low + colour * (high - low), (side, side, 3)).astype(np.float32)
        (blurred,) = make_baselines(image, ("blur",), input_range, "a")
        np.testing.assert_array_equal(blurred, image)


def test_noise_is_in_range_and_seeded_by_the_image_id_and_the_run_seed():
    image = _image()
    (noise,) = make_baselines(image, ("noise",), RANGE, "a.png", seed=1)
    assert RANGE[0] <= noise.min() and noise.max() <= RANGE[1] and noise.std() > 0.5
    np.testing.assert_array_equal(
        noise, make_baselines(_image(1), ("noise",), RANGE, "a.png", 1)[0]
    )
    assert not np.array_equal(noise, make_baselines(image, ("noise",), RANGE, "b.png", 1)[0])
    assert not np.array_equal(noise, make_baselines(image, ("noise",), RANGE, "a.png", 2)[0])


def test_every_listed_baseline_is_drawn_and_another_names_the_choices():
    assert make_baselines(_image(), BASELINES, RANGE, "a").shape == (len(BASELINES), 8, 6, 3)
    with pytest.raises(ValueError, match="'gray'; choose from: black, white, grey, blur, noise"):
        make_baselines(_image(), ("gray",), RANGE, "a")


def test_blur_is_a_gaussian_of_sigma_side_over_16_along_both_axes():
    # A point of light in a 32 x 32 image (sigma 2): its blur is the Gaussian's
    # outer product, the same across as down, with neighbours at exp(-d^2 / 8).
    image = np.zeros((32, 32, 3), np.float32)
    image[16, 16] = 1.0
    (blurred,) = make_baselines(image, ("blur",), (0.0, 1.0), "a")
    np.testing.assert_allclose(blurred, blurred.transpose(1, 0, 2), atol=1e-7)
    profile = blurred[16, :, 0]
    for d in (1, 2, 3, 4):
        np.testing.assert_allclose(profile[16 + d] / profile[16], np.exp(-(d**2) / 8), rtol=1e-5)
    np.testing.assert_allclose(
        blurred[16 + 2, 16 + 2, 0] / blurred[16, 16, 0], np.exp(-1), rtol=1e-5
    )
    np.testing.assert_allclose(blurred.sum(axis=(0, 1)), [1.0] * 3, rtol=1e-5)  # light is kept
    # Its taps reach 3 sigma (6 px) and no further.
    np.testing.assert_allclose(profile[16 + 6] / profile[16], np.exp(-36 / 8), rtol=1e-5)
    assert profile[16 + 7] == 0 and profile[16 - 7] == 0


def test_blur_reflects_the_image_at_its_edges():
    # A point of light one pixel in from the top edge (sigma 2): reflected at the
    # edge (numpy's "reflect", the edge row not repeated), its mirror image is one
    # pixel outside, so the edge row gets the light from both, at distance 1 each,
    # and the row below the light gets it at 1 and its mirror at 3.
    image = np.zeros((32, 32, 3), np.float32)
    image[1, 16] = 1.0
    (blurred,) = make_baselines(image, ("blur",), (0.0, 1.0), "a")
    tap1, tap3 = np.exp(-1 / 8), np.exp(-9 / 8)
    np.testing.assert_allclose(
        blurred[0, 16, 0] / blurred[2, 16, 0], 2 * tap1 / (tap1 + tap3), rtol=1e-5
    )


def test_one_string_of_names_and_a_batch_of_images_are_refused_naming_the_argument():
    # "black" was read as the names b, l, a, c, k ('Unknown baseline 'b''), and a
    # batch [N, H, W, C] as one image: its blur ran over N and H without a word.
    with pytest.raises(TypeError, match=r"names must be a list of baselines, e.g. \['black'\]"):
        make_baselines(_image(), "black", RANGE, "a")
    batch = np.stack([_image(0), _image(1)])
    with pytest.raises(ValueError, match=r"image must be one image \[H, W, C\], got shape \(2, "):
        make_baselines(batch, ("blur",), RANGE, "a")
