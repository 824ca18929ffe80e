"""Decoding, resizing with padding and scaling."""

import io
import struct
import sys
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, PngImagePlugin

from transforms import images


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_png_round_trip_is_exact():
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        images.decode_image(_encode(Image.fromarray(array), "PNG")), array
    )


@pytest.mark.parametrize(
    "img, fmt, expected",
    [
        (Image.new("L", (3, 2), 100), "PNG", [100, 100, 100]),
        (Image.new("RGBA", (3, 2), (200, 100, 50, 0)), "PNG", [0, 0, 0]),  # transparent -> black
        (Image.new("RGBA", (3, 2), (200, 100, 50, 255)), "PNG", [200, 100, 50]),
        (
            Image.new("RGB", (3, 2), (10, 20, 30)).convert("P", palette=Image.Palette.ADAPTIVE),
            "PNG",
            [10, 20, 30],
        ),
        (Image.new("RGB", (3, 2), (10, 20, 30)), "BMP", [10, 20, 30]),
        (Image.new("RGB", (3, 2), (10, 20, 30)), "GIF", [10, 20, 30]),
        (Image.new("I;16", (3, 2), 65535), "PNG", [255, 255, 255]),
    ],
)
def test_decodes_common_modes_to_rgb(img, fmt, expected):
    out = images.decode_image(_encode(img, fmt))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    np.testing.assert_allclose(out[0, 0], expected, atol=2)


@pytest.mark.parametrize("side, hint, decoded", [(6, None, 6), (64, 8, 16)])  # 64: shrunk first
def test_a_16_bit_image_is_scaled_by_its_depth_not_its_content(side, hint, decoded):
    # Dark 16-bit greys: 200 and 300 of 65535 are both about 1 of 255 (200 read as
    # 8-bit used to give 200 of 255, while 300 gave 1).
    for level in (200, 300, 51400):
        img = Image.fromarray(np.full((side, side), level, np.uint16))
        out = images.decode_image(_encode(img, "PNG"), max_side_hint=hint)
        assert img.mode == "I;16" and out.shape == (decoded, decoded, 3)
        np.testing.assert_array_equal(out, round(level / 257))


def test_cmyk_jpeg_decodes_to_rgb():
    out = images.decode_image(_encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))
    assert out.shape == (8, 8, 3)
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 60  # red


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"hello, world", "not an image"),
        (b"\x89PNG\r\n\x1a\n\0\0", "^broken image: Pillow cannot open this PNG file"),
    ],
)
def test_bad_bytes_raise_image_error_with_reason(data, reason):
    with pytest.raises(images.ImageError, match=reason):
        images.decode_image(data)


_README = b"BMW service notes\n\nOil changed on 2024-05-01; tyres next spring.\n" * 20


@pytest.mark.parametrize(
    "text, fmt",
    [
        (b"BMW service notes\n", "BMP"),
        (_README, "BMP"),
        (b"P1 meeting notes: discuss the plan\n", "PPM"),
        ("P3 priorit\u00e9s: r\u00e9union\n".encode(), "PPM"),
        (b"GIF89a is a format\r\n", "GIF"),
    ],
)
def test_a_text_file_starting_like_an_image_format_is_not_an_image(text, fmt):
    # A note whose first bytes happen to be a BMP's ('BM') or a PPM's ('P1') signature
    # was 'broken image: Truncated File Read' or 'broken image: Pillow cannot open this
    # PPM file (ValueError: invalid literal for int() with base 10: ...)'.
    with pytest.raises(images.ImageError) as refused:
        images.decode_image(text)
    assert str(refused.value) == (
        f"not an image Pillow can read ({len(text)} bytes of text, starting with {fmt}'s signature)"
    )


def test_a_broken_bmp_or_ppm_is_still_a_broken_image():
    # Real files cut short (a plain PPM, text, in its header), which no text check takes.
    stored = Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 30, 3), np.uint8))
    bmp, ppm = _encode(stored, "BMP"), _encode(stored, "PPM")
    broken = {
        bmp[:20]: "broken image: Truncated File Read",
        bmp[: len(bmp) // 2]: "broken image: image file is truncated",
        ppm[:12]: "broken image: image file is truncated",
        b"P3\n# made by hand\n30": "broken image: Pillow cannot open this PPM file (ValueError",
        b"P1\n3 2\n0 1 0\n1 x 1\n": "broken image: Pillow cannot decode this PPM file (",
        # A JPEG's start of image and APP0 marker, then words: bytes no UTF-8 text holds.
        b"\xff\xd8\xff\xe0 truncated jpeg": "broken image: ",
    }
    for data, reason in broken.items():
        with pytest.raises(images.ImageError) as refused:
            images.decode_image(data)
        assert str(refused.value).startswith(reason), (data, str(refused.value))


def _iso_bmff(major: bytes, *compatible: bytes) -> bytes:
    """The start of an ISO base media file (HEIF, AVIF, MP4): its `ftyp` box, then data."""
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\0\0\0\x08free" * 8


@pytest.mark.parametrize("brand", [b"heic", b"heix", b"hevc", b"mif1"])
def test_a_heic_photo_is_refused_naming_its_format_and_the_fix(brand):
    # An iPhone's photos are HEIC by default; Pillow reads no HEIF: the reason said
    # only "not an image Pillow can read", as for a file of garbage.
    data = _iso_bmff(brand, b"mif1", b"heic")
    with pytest.raises(images.ImageError) as refused:
        images.decode_image(data)
    assert str(refused.value) == (
        f"a HEIF/HEIC image (iPhone photos), which the job cannot decode: convert it to "
        f"JPEG or PNG ({len(data)} bytes)"
    )
    mp4 = _iso_bmff(b"isom", b"mp41")  # a video is no HEIC
    no_box = data[:4] + b"moov" + data[8:]  # a brand's letters outside an ftyp box neither
    for other in (mp4, no_box):
        with pytest.raises(images.ImageError, match=r"^not an image Pillow can read \("):
            images.decode_image(other)


@pytest.mark.parametrize(
    "exif, said",
    [
        (b"Exif\0\0II*\0\x40\0\0\0", "Corrupt EXIF data"),  # IFD past the end
        (b"Exif\0\0II*\0\x08\0\0\0\x03\0", "Corrupt EXIF data"),  # 3 tags, none there
        (b"Exif\0\0II*\0\x08\0\0\0\x01\0\x0e\x01\x02\0\x40\0\0\0\0\x01\0\0", "Truncated"),
    ],
)
def test_a_corrupt_exif_block_decodes_without_pillows_warning(exif, said):
    # Pillow warned (UserWarning) on each of these, once per file, on the job's stderr.
    stored = np.random.default_rng(4).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(stored), "PNG", exif=exif)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Image.open(io.BytesIO(data)).getexif()  # the warning these bytes give Pillow
    assert [said in str(w.message) for w in caught] == [True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(images.decode_image(data), stored)  # taken as stored


def _decode_in_threads(inputs: list[bytes], threads: int, rounds: int) -> list[str]:
    """Each input decoded `rounds` times in each of `threads` threads started together;
    the outcomes (a shape or an ImageError's message), one per decode."""
    start, outcomes = threading.Barrier(threads), []

    def work() -> None:
        start.wait()
        for _ in range(rounds):
            for data in inputs:
                try:
                    outcomes.append(str(images.decode_image(data, max_side_hint=16).shape))
                except images.ImageError as e:
                    outcomes.append(str(e))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return outcomes


def test_threads_decoding_at_once_leave_the_warning_filters_as_they_were():
    """Beam runs bundles in threads of one process (--direct_running_mode multi_threading,
    Dataflow's workers). Each decode swapped the process's warning filters for a copy
    with its own and put back the list it had saved (`warnings.catch_warnings`): one
    thread's exit dropped the filter another's decode still needed (Pillow's warning
    reached stderr), and a thread that saved another's copy put that copy back for
    good. Each thread holds the filters' state here, at the switch interval of 1 us."""
    exif = _encode(Image.new("RGB", (30, 20), (9, 8, 7)), "PNG", exif=b"Exif\0\0II*\0\x40\0\0\0")
    big = _png_declaring(12000, 9000, rows=8)  # Pillow warns: a decompression bomb?
    inputs = [exif, big, b"II*\0\x08\0\0\0"]  # and a TIFF header alone (`_open_error`)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often: between a filter's install and removal
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            before = list(warnings.filters)
            outcomes = _decode_in_threads(inputs, threads=8, rounds=200)
            after = list(warnings.filters)
    finally:
        sys.setswitchinterval(interval)
    assert after == before
    assert [str(w.message) for w in caught] == []
    assert len(set(outcomes)) == len(inputs) and len(outcomes) == 8 * 200 * len(inputs)


def test_truncated_jpeg_is_an_error():
    data = _encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(images.ImageError, match="broken image"):
        images.decode_image(data[: len(data) // 2])


def test_resize_with_pad_centres_and_pads_black():
    wide = np.full((10, 20, 3), 255, np.uint8)
    out = images.resize_with_pad(wide, 8)
    assert out.shape == (8, 8, 3)
    # 20x10 -> 8x4, centred: rows 2..5 white, rows 0-1 and 6-7 black.
    assert (out[2:6] == 255).all() and (out[:2] == 0).all() and (out[6:] == 0).all()
    tall = images.resize_with_pad(np.full((9, 3, 3), 255, np.uint8), 9)
    assert (tall[:, 3:6] == 255).all() and (tall[:, :3] == 0).all()


def test_resize_with_pad_fits_a_non_square_input_keeping_the_aspect():
    """A model fixing a 24 x 40 (height x width) input: a uniform red 10 x 40 banner
    keeps its size and sits in rows 7-16, black above and below; a 40 x 10 strip is
    shrunk by 0.6 to 24 x 6, centred in columns 17-22; a 12 x 20 image fills it."""
    red = (255, 0, 0)
    wide = images.resize_with_pad(np.full((10, 40, 3), red, np.uint8), (24, 40))
    assert wide.shape == (24, 40, 3) and images.pad_box(10, 40, (24, 40)) == (7, 0, 10, 40)
    assert (wide[7:17] == red).all() and (wide[:7] == 0).all() and (wide[17:] == 0).all()
    tall = images.resize_with_pad(np.full((40, 10, 3), red, np.uint8), (24, 40))
    assert tall.shape == (24, 40, 3) and images.pad_box(40, 10, (24, 40)) == (0, 17, 24, 6)
    assert (tall[:, 17:23] == red).all() and (tall[:, :17] == 0).all() and (tall[:, 23:] == 0).all()
    same_aspect = images.resize_with_pad(np.full((12, 20, 3), red, np.uint8), (24, 40))
    assert (same_aspect == red).all()
    assert images.pad_box(10, 20, 8) == images.pad_box(10, 20, (8, 8)) == (2, 0, 4, 8)


def test_resize_one_pixel_image():
    out = images.resize_with_pad(np.full((1, 1, 3), 7, np.uint8), 4)
    assert (out == 7).all()


def test_scale_to_range():
    pixels = np.array([[[0, 255, 51]]], np.uint8)
    np.testing.assert_allclose(images.scale_to_range(pixels, (0.0, 1.0)), [[[0, 1, 0.2]]])
    np.testing.assert_allclose(images.scale_to_range(pixels, (-1.0, 1.0)), [[[-1, 1, -0.6]]])


def _png_declaring(width: int, height: int, rows: int) -> bytes:
    """A valid 1-bit PNG header declaring width x height, with only `rows` rows of data:
    a few hundred bytes that ask a naive decoder for width * height pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    scanlines = (b"\x00" + bytes((width + 7) // 8)) * rows
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_refused_before_decoding_and_pillow_is_left_alone():
    import PIL.Image

    # Importing the module changed no Pillow setting (it raised MAX_IMAGE_PIXELS to 400 MP).
    assert PIL.Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)
    bomb = _png_declaring(28000, 28000, rows=8)  # 784 MP: above Pillow's own 179 MP limit
    with pytest.raises(images.ImageError, match="too large to decode safely") as refused:
        images.decode_image(bomb, max_side_hint=16)
    assert "Pillow refuses more than 179.0 MP" in str(refused.value)
    assert str(refused.value).endswith("shrink it before auditing it")
    big = _png_declaring(12000, 9000, rows=8)  # 108 MP: Pillow only warns; our limit refuses
    with pytest.raises(
        images.ImageError,
        match=r"12000x9000 pixels \(108.0 MP\) exceeds the decode limit of 67.1 MP ",
    ):
        images.decode_image(big, max_side_hint=16)
    small = _png_declaring(4000, 3000, rows=8)  # 12 MP: under the limit, read
    # (Pillow reads the rows the data lacks as 0), then shrunk by 125.
    assert images.decode_image(small, max_side_hint=16).shape == (24, 32, 3)


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small baseline JPEG whose frame header (SOF0) declares width x height."""
    data = bytearray(_encode(Image.fromarray(np.zeros((8, 8, 3), np.uint8)), "JPEG"))
    start = data.index(b"\xff\xc0") + 5  # marker, length (2), precision (1)
    data[start : start + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_bomb_is_told_of_reduced_size_decoding_only_when_it_is_a_jpeg():
    """The refusal of a 784 MP PNG (or GIF, TIFF, ...) said that Pillow refuses it
    before the job can decode a JPEG at reduced size: no JPEG was involved."""
    with pytest.raises(images.ImageError) as refused:
        images.decode_image(_png_declaring(28000, 28000, rows=8), max_side_hint=16)
    assert "JPEG" not in str(refused.value)
    assert str(refused.value).endswith(
        "attack. Pillow refuses more than 179.0 MP before reading it; shrink it before auditing it"
    )
    with pytest.raises(images.ImageError) as refused:
        images.decode_image(_jpeg_declaring(28000, 28000), max_side_hint=16)
    assert str(refused.value).endswith(
        "Pillow refuses more than 179.0 MP before the job can decode a JPEG at reduced "
        "size; shrink it before auditing it"
    )


def _mpo(first: Image.Image) -> bytes:
    """A Multi-Picture JPEG of `first` and a small second picture: what Pillow opens a
    phone photo holding an MPF preview or gain map as (format 'MPO', not 'JPEG')."""
    return _encode(first, "MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))])


def test_a_multi_picture_jpeg_is_decoded_at_a_reduced_size_as_a_jpeg_is():
    """An MPO's first picture is a JPEG, but only format 'JPEG' was decoded at a reduced
    size: a phone photo that Pillow opens as MPO was decoded whole, and one over 67 MP
    was refused, though the same picture as a plain JPEG was read at 1/8."""
    blocks = np.random.default_rng(0).uniform(0, 255, (32, 24, 3))
    photo = Image.fromarray(np.kron(blocks, np.ones((8, 8, 1))).astype(np.uint8))
    assert Image.open(io.BytesIO(_mpo(photo))).format == "MPO"
    np.testing.assert_array_equal(
        images.decode_image(_mpo(photo), max_side_hint=16),
        images.decode_image(_encode(photo, "JPEG"), max_side_hint=16),
    )
    big = Image.new("RGB", (8200, 8200), (200, 100, 50))  # 67.2 MP; 1025 x 1025 at 1/8
    assert images.decode_image(_mpo(big), max_side_hint=16).shape == (32, 32, 3)  # shrunk


def test_a_large_image_is_shrunk_before_any_float_copy():
    # 6000 x 4000 PNG (24 MP): decoded, then box-averaged to >= 2x the model's side.
    pixels = np.zeros((4000, 6000, 3), dtype=np.uint8)
    pixels[:, 3000:] = 200
    decoded = images.decode_image(
        _encode(Image.fromarray(pixels), "PNG", compress_level=1), max_side_hint=224
    )
    assert decoded.shape == (298, 448, 3)  # twice the 149 x 224 it takes in the square
    assert decoded[0, 0, 0] == 0 and decoded[0, -1, 0] == 200
    # A model's square from it matches the one made from the full image.
    direct = images.resize_with_pad(pixels, 224).astype(int)
    assert np.abs(images.resize_with_pad(decoded, 224).astype(int) - direct).mean() < 1.0


def test_exif_orientation_is_applied():
    # A landscape photo stored as portrait pixels with "rotate 90 clockwise" in EXIF
    # (orientation 6), as phones write it: it must come out 40 wide, 20 high.
    stored = np.zeros((40, 20, 3), dtype=np.uint8)
    stored[:, :10] = 255  # left half white in storage -> top half white once upright
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95)
    decoded = images.decode_image(data)
    assert decoded.shape == (20, 40, 3)
    assert decoded[2, :, 0].min() > 200 and decoded[-3, :, 0].max() < 50


def test_a_photo_whose_exif_has_a_malformed_tag_is_decoded_upright():
    # A camera wrote text where EXIF wants a number (ImageLength, 0x0101, as ASCII):
    # Pillow reads the pixels and the orientation, but exif_transpose re-encoded the
    # EXIF and failed ('required argument is not an integer'): the photo was an error.
    stored = np.zeros((40, 20, 3), dtype=np.uint8)
    stored[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x0110] = "Model"  # big-endian entry: tag 0x0110, type 2 (ASCII)
    raw = exif.tobytes().replace(b"\x01\x10\x00\x02", b"\x01\x01\x00\x02")
    data = _encode(Image.fromarray(stored), "JPEG", exif=raw, quality=95)
    assert Image.open(io.BytesIO(data)).getexif()[0x0101] == "Model"
    decoded = images.decode_image(data)
    assert decoded.shape == (20, 40, 3)
    assert decoded[2, :, 0].min() > 200 and decoded[-3, :, 0].max() < 50


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
@pytest.mark.parametrize(
    "exif",
    [
        b"not a TIFF header at all",  # garbage
        b"MM\x00*\x00\x00",  # cut before its IFD offset
        b"MM\x00*\x00\x00\x10\x00",  # its IFD offset (4096) past its end
    ],
    ids=["not-tiff", "truncated", "ifd-past-end"],
)
def test_an_image_whose_exif_block_is_unreadable_is_decoded_as_stored(fmt, exif):
    # A PNG's eXIf chunk or a WebP's EXIF chunk that Pillow cannot parse (SyntaxError
    # 'not a TIFF file', struct.error 'unpack requires a buffer'): Pillow reads the
    # pixels, as viewers show them, but reading the orientation raised and the image
    # was an error record ('broken image: not a TIFF file', or 'error: unpack ...').
    # An IFD past the end raises nothing: Pillow warns ('Corrupt EXIF data') and reads
    # no tag.
    stored = np.random.default_rng(4).integers(0, 256, (40, 20, 3), dtype=np.uint8)
    data = _encode(Image.fromarray(stored), fmt, exif=exif, lossless=True)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), stored)
    np.testing.assert_array_equal(images.decode_image(data), stored)


@pytest.mark.parametrize("compressed", [False, True], ids=["tEXt", "zTXt"])
def test_a_png_whose_raw_exif_profile_is_not_hex_is_decoded_as_stored(compressed):
    # ImageMagick keeps a PNG's EXIF as hex in a "Raw profile type exif" text chunk;
    # Pillow's getexif() decodes it with bytes.fromhex, which raises ValueError on one
    # that is not hex ('non-hexadecimal number found'), after the pixels read.
    stored = np.random.default_rng(5).integers(0, 256, (40, 20, 3), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", "\nexif\n      20\nnot hex, cut short\n", compressed)
    data = _encode(Image.fromarray(stored), "PNG", pnginfo=info)
    with pytest.raises(ValueError, match="non-hexadecimal"):
        Image.open(io.BytesIO(data)).getexif()
    np.testing.assert_array_equal(images.decode_image(data), stored)


@pytest.mark.parametrize(
    "mode, fmt, expected",
    [("P", "PNG", [10, 20, 30]), ("P", "GIF", [10, 20, 30]), ("1", "PNG", [255, 255, 255])],
)
def test_large_palette_and_one_bit_images_are_shrunk_and_decoded(mode, fmt, expected):
    # 80 x 60 with a model side of 8: shrunk by 5 (Image.reduce refuses modes P and 1).
    img = Image.new("RGB", (80, 60), (10, 20, 30) if mode == "P" else (255, 255, 255))
    img = img.convert(mode) if mode == "1" else img.convert("P", palette=Image.Palette.ADAPTIVE)
    out = images.decode_image(_encode(img, fmt), max_side_hint=8)
    assert out.shape == (12, 16, 3)
    np.testing.assert_allclose(out[0, 0], expected, atol=2)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_float_image_with_nan_or_inf_pixels_is_an_error(value):
    pixels = np.full((4, 5), 0.5, np.float32)
    pixels[1, :3] = value
    with pytest.raises(images.ImageError, match=r"float image with 3 NaN or infinite pixels"):
        images.decode_image(_encode(Image.fromarray(pixels, mode="F"), "TIFF"))


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_a_float_image_in_0_1_or_0_255_decodes_to_its_grey_levels(scale):
    # A 32-bit float TIFF (mode F) declares no range: [0, 1] and [0, 255] are both common.
    levels = np.array([[0, 51, 102], [153, 204, 255]], np.float32)
    data = _encode(Image.fromarray(levels * (scale / 255.0), mode="F"), "TIFF")
    out = images.decode_image(data)
    np.testing.assert_array_equal(out, np.repeat(levels.astype(np.uint8)[..., None], 3, -1))


@pytest.mark.parametrize(
    "mode, colour, key",
    [
        ("RGB", (10, 20, 30), (10, 20, 30)),
        ("L", 10, 10),
        ("I;16", 2570, 2570),  # 16-bit grey: 2570 of 65535 is 10 of 255
    ],
)
@pytest.mark.parametrize("side, hint", [(4, None), (64, 8)])  # 64: shrunk first
def test_a_pngs_transparent_colour_is_composited_onto_black_like_alpha(
    mode, colour, key, side, hint
):
    # A PNG without an alpha channel may name one colour transparent (its tRNS chunk):
    # those pixels were read as their colour, while the same picture with an alpha
    # channel, or as a palette, came out black where transparent.
    img = Image.new(mode, (side, side), colour)
    img.paste(Image.new(mode, (side, side // 2), 200 if mode != "RGB" else (200,) * 3))
    out = images.decode_image(_encode(img, "PNG", transparency=key), max_side_hint=hint)
    half = out.shape[0] // 2
    np.testing.assert_array_equal(out[half:], 0)
    assert out[:half].min() > 0


@pytest.mark.parametrize(
    "shape, size",
    [((23, 320), 16), ((320, 23), 16), ((300, 5000), 224), ((1, 500), 16), ((2000, 10), 16)],
)
def test_a_shrunk_image_fills_the_models_square_as_the_whole_image_does(shape, size):
    # A much larger image is box-averaged down before it is resized (_shrink). A side
    # that was not a multiple of the box made its last, partial box a whole pixel: a
    # 320 x 23 banner filled 2 rows of a 16-pixel square, resized whole it fills 1
    # (a 5000 x 300 one 14 rows of 224 instead of 13), so the model saw image for padding.
    array = np.full((*shape, 3), 200, np.uint8)
    decoded = images.decode_image(_encode(Image.fromarray(array), "PNG"), max_side_hint=size)
    assert images.pad_box(*decoded.shape[:2], size) == images.pad_box(*shape, size)
    np.testing.assert_array_equal(
        images.resize_with_pad(decoded, size), images.resize_with_pad(array, size)
    )


def _png(samples: np.ndarray, depth: int, colour_type: int, key: tuple[int, ...]) -> bytes:
    """A PNG written by hand, as Pillow writes no 16-bit RGB nor 2-bit grey one: `samples`
    [H, W, C] at `depth` bits, `key` its transparent colour (tRNS chunk)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    height, width = samples.shape[:2]
    rows = samples.reshape(height, -1)
    if depth == 16:
        raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rows)
    else:
        raw = b"".join(
            b"\0"
            + np.packbits(
                np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, -depth:]
            ).tobytes()
            for row in rows
        )
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"tRNS", struct.pack(f">{len(key)}H", *key)),
            chunk(b"IDAT", zlib.compress(raw)),
            chunk(b"IEND", b""),
        ]
    )


@pytest.mark.parametrize("hint", [None, 2])  # 2: shrunk after the colour is cleared
def test_a_16_bit_rgb_pngs_transparent_colour_is_cleared_at_the_depth_pillow_reads(hint):
    # Pillow reads a 16-bit RGB PNG as 8-bit RGB (each sample's high byte) but gives its
    # transparent colour in 16-bit units: comparing the two failed the image
    # ('OverflowError: Python integer 2570 out of bounds for uint8').
    samples = np.zeros((16, 16, 3), np.uint16)
    samples[:8] = (200 * 257, 100 * 257, 50 * 257)
    samples[8:] = (10 * 257, 20 * 257, 30 * 257)
    out = images.decode_image(_png(samples, 16, 2, (2570, 5140, 7710)), max_side_hint=hint)
    half = out.shape[0] // 2
    np.testing.assert_array_equal(out[half:], 0)
    np.testing.assert_array_equal(out[:half], np.broadcast_to([200, 100, 50], out[:half].shape))


def test_a_16_bit_rgb_pngs_dark_transparent_colour_is_not_taken_for_a_bright_one():
    # A 16-bit key of (0, 0, 255) is nearly black; read as 8-bit units it named pure blue.
    samples = np.zeros((2, 2, 3), np.uint16)
    samples[0] = (0, 0, 65535)
    samples[1] = (0, 0, 255)
    out = images.decode_image(_png(samples, 16, 2, (0, 0, 255)))
    np.testing.assert_array_equal(out[0], [[0, 0, 255]] * 2)
    np.testing.assert_array_equal(out[1], 0)


def test_a_2_bit_grey_pngs_transparent_level_is_cleared():
    # Pillow scales 2-bit grey levels 0..3 to 0..255 but gives the key unscaled: level 3
    # (white) was compared with 3 and never cleared.
    levels = np.array([[[0], [1], [2], [3]]] * 2)
    out = images.decode_image(_png(levels, 2, 0, (3,)))
    np.testing.assert_array_equal(out[0, :, 0], [0, 85, 170, 0])


def test_a_1_bit_grey_pngs_transparent_level_is_cleared():
    # Pillow reads a 1-bit PNG in mode "1", which was left out: its key was never cleared.
    levels = np.array([[[0], [1], [1], [0]]] * 2)
    out = images.decode_image(_png(levels, 1, 0, (1,)))
    np.testing.assert_array_equal(out[..., 0], 0)
    out = images.decode_image(_png(levels, 1, 0, (0,)))
    np.testing.assert_array_equal(out[0, :, 0], [0, 255, 255, 0])


def _checkerboard(mode: str, side: int) -> Image.Image:
    """A `side` x `side` board of single pixels, black and grey 200, in `mode`."""
    board = np.indices((side, side)).sum(axis=0) % 2
    if mode == "I;16B":  # 200 * 256 + 1: its two bytes differ, so a swap shows
        return Image.frombytes(mode, (side, side), (board * 51201).astype(">u2").tobytes())
    img = Image.fromarray((board * 200).astype(np.uint8)).convert("RGB")
    return img.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else img


@pytest.mark.parametrize("mode, fmt", [("RGB", "PNG"), ("P", "PNG"), ("I;16B", "TIFF")])
def test_a_shrunk_image_is_box_averaged_in_every_mode(mode, fmt):
    # _shrink averages each box of pixels: a fine pattern becomes its mean grey. Pillow
    # resizes a palette image by nearest pixel and averages a big-endian 16-bit image's
    # bytes swapped (as noise), hence the conversions before it.
    out = images.decode_image(_encode(_checkerboard(mode, 64), fmt), max_side_hint=8)
    assert out.shape == (16, 16, 3)
    np.testing.assert_allclose(out, 100, atol=1)


@pytest.mark.parametrize("side, shrunk", [(47, 47), (48, 48), (63, 63), (64, 32), (80, 32)])
def test_only_an_image_4_times_the_models_side_or_more_is_shrunk(side, shrunk):
    # With a model side of 16: an image under 64 pixels is decoded whole; from 64 on,
    # it is box-averaged to twice the side it takes in the model's square.
    array = np.full((side, side, 3), 200, np.uint8)
    out = images.decode_image(_encode(Image.fromarray(array), "PNG"), max_side_hint=16)
    assert out.shape == (shrunk, shrunk, 3)


def test_a_turned_pngs_transparent_colour_is_cleared_and_the_image_turned():
    # A PNG may hold both EXIF (orientation 6, turn 90 clockwise) and a transparent
    # colour: both apply, the colour cleared where it lands once upright.
    stored = np.full((40, 20, 3), 200, np.uint8)
    stored[:2, :2] = (10, 20, 30)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.fromarray(stored), "PNG", exif=exif.tobytes(), transparency=(10, 20, 30))
    out = images.decode_image(data)
    assert out.shape == (20, 40, 3)
    np.testing.assert_array_equal(out[:2, -2:], 0)
    assert out[2:, :].min() == 200 and out[:, :-2].min() == 200


def test_a_16_bit_pngs_transparent_colour_is_matched_by_its_high_byte():
    # Pillow keeps a 16-bit sample's high byte: a key of 10 * 256 is read as 10 (not as
    # 10 * 256 / 257, 9.96, rounded down to 9).
    samples = np.full((2, 2, 3), 200 * 257, np.uint16)
    samples[1] = (10 * 256, 20 * 256, 30 * 256)
    out = images.decode_image(_png(samples, 16, 2, (10 * 256, 20 * 256, 30 * 256)))
    np.testing.assert_array_equal(out[1], 0)
    np.testing.assert_array_equal(out[0], 200)


def test_a_4_bit_grey_pngs_transparent_level_is_cleared():
    # Pillow scales 4-bit grey levels 0..15 to 0..255 (by 17), the key given unscaled.
    levels = np.array([[[0], [5], [10], [15]]] * 2)
    out = images.decode_image(_png(levels, 4, 0, (10,)))
    np.testing.assert_array_equal(out[0, :, 0], [0, 85, 0, 255])


def test_a_spider_image_is_decoded():
    # A SPIDER file (a float image, as electron microscopy writes them) that is one
    # image, not a stack: Pillow opens it, but its seek(0) raises EOFError ('attempt to
    # seek in a non-stack file'), and every such file was an error record.
    pixels = np.random.default_rng(6).uniform(0.0, 1.0, (6, 5)).astype(np.float32)
    data = _encode(Image.fromarray(pixels), "SPIDER")
    assert Image.open(io.BytesIO(data)).format == "SPIDER"
    expected = np.repeat((pixels * 255.0).round().astype(np.uint8)[..., None], 3, axis=-1)
    np.testing.assert_array_equal(images.decode_image(data), expected)


def _tiff_with(data: bytes, tag: int, value: int) -> bytes:
    """A little-endian TIFF written by Pillow with one SHORT tag's value changed, in
    place, in its first IFD (as another program may write it)."""
    count = struct.unpack_from("<H", data, 8)[0]
    for entry in range(10, 10 + 12 * count, 12):
        if struct.unpack_from("<HH", data, entry) == (tag, 3):
            return data[: entry + 8] + struct.pack("<H", value) + data[entry + 10 :]
    raise AssertionError(f"no SHORT tag {tag}")


def _broken_files() -> dict[str, bytes]:
    """Files of three formats made by Pillow, then cut short or altered."""
    rgb = Image.fromarray(np.random.default_rng(7).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    qoi, tiff = _encode(rgb, "QOI"), _encode(rgb, "TIFF")
    spider = _encode(rgb.convert("F"), "SPIDER")
    return {
        "qoi-cut-at-half": qoi[: len(qoi) // 2],  # ValueError in Pillow's QOI decoder
        "qoi-cut-short": qoi[: len(qoi) - 20],  # IndexError
        "spider-cut-short": spider[: len(spider) - 100],
        "tiff-icc-lab": _tiff_with(tiff, 262, 9),  # Photometric ICCLab: Pillow lacks it
        "tiff-compression-99": _tiff_with(tiff, 259, 99),  # no such compression
        "tiff-no-ifd": tiff[:8],  # header alone
    }


@pytest.mark.parametrize("name", list(_broken_files()))
def test_every_broken_file_is_said_to_be_broken_and_why(name):
    # A QOI file cut short raised IndexError in Pillow, which escaped as 'IndexError:
    # index out of range', or ValueError, 'broken image: not enough values to unpack
    # (expected 4, got 2)'; a TIFF whose header Pillow refuses was 'not an image Pillow
    # can read', like a text file. Each reason now says the file is broken, its format
    # when its first bytes name one, and Pillow's own error.
    with pytest.raises(images.ImageError) as refused:
        images.decode_image(_broken_files()[name], max_side_hint=8)
    said = str(refused.value)
    assert said.startswith("broken image: "), said
    expected = {
        "qoi-cut-at-half": "Pillow cannot decode this QOI file (ValueError: not enough values",
        "qoi-cut-short": "Pillow cannot decode this QOI file (IndexError: index out of range)",
        "spider-cut-short": "image file is truncated",
        "tiff-icc-lab": "Pillow cannot open this TIFF file (unknown pixel mode)",
        "tiff-compression-99": "Pillow cannot open this TIFF file (SyntaxError: 99)",
        "tiff-no-ifd": "Pillow cannot open this TIFF file (",
    }[name]
    assert said.startswith(f"broken image: {expected}"), said


def _xmp(orientation: int) -> bytes:
    """An XMP packet holding a TIFF orientation alone, as Adobe's tools or exiftool
    (`-XMP-tiff:Orientation`) write it."""
    return (
        b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        b'rdf:about="" xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        b'tiff:Orientation="%d"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>' % orientation
    )


def _with_xmp(stored: np.ndarray, fmt: str, xmp: bytes, **kwargs) -> bytes:
    """`stored` as a JPEG, PNG or WebP file carrying `xmp`, written by Pillow."""
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", xmp.decode())
        kwargs["pnginfo"] = info
    else:
        kwargs["xmp"] = xmp
    return _encode(Image.fromarray(stored), fmt, quality=95, lossless=True, **kwargs)


def _turned_upright(decoded: np.ndarray) -> bool:
    """Whether a 40 x 20 picture white on its left half, turned by orientation 6, came
    out 20 x 40, white on its top half."""
    top, bottom = decoded[2, :, 0], decoded[-3, :, 0]
    return decoded.shape == (20, 40, 3) and top.min() > 200 and bottom.max() < 50


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_xmp_orientation_is_applied_where_the_exif_names_none(fmt):
    # Pillow's getexif() reads an XMP tiff:Orientation where the EXIF has none, as its
    # ImageOps.exif_transpose applies it; an EXIF orientation, 1 here, comes first.
    stored = np.zeros((40, 20, 3), dtype=np.uint8)
    stored[:, :10] = 255
    assert _turned_upright(images.decode_image(_with_xmp(stored, fmt, _xmp(6))))
    exif = Image.Exif()
    exif[0x0112] = 1
    as_stored = images.decode_image(_with_xmp(stored, fmt, _xmp(6), exif=exif.tobytes()))
    assert as_stored.shape == (40, 20, 3)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_xmp_orientation_is_applied_where_the_exif_block_is_unreadable(fmt):
    # An EXIF block Pillow cannot parse names no orientation, as one without the tag:
    # the XMP orientation was then ignored (Pillow raises before reading the XMP),
    # though it was applied beside a readable EXIF block without one.
    stored = np.zeros((40, 20, 3), dtype=np.uint8)
    stored[:, :10] = 255
    data = _with_xmp(stored, fmt, _xmp(6), exif=b"not a TIFF header at all")
    with pytest.raises(SyntaxError):
        Image.open(io.BytesIO(data)).getexif()
    assert _turned_upright(images.decode_image(data))


def _s15(value: float) -> bytes:
    """An ICC s15Fixed16Number."""
    return struct.pack(">i", round(value * 65536))


def _icc(device: bytes, space: bytes, pcs: bytes, tags: dict[bytes, bytes]) -> bytes:
    """An ICC v2.1 profile (D50) of a description, a white point and `tags`."""
    d50 = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    name = b"profile made by the test\0"
    tags = {
        b"desc": b"desc\0\0\0\0" + struct.pack(">I", len(name)) + name + bytes(79),
        b"wtpt": b"XYZ \0\0\0\0" + d50,
        **tags,
    }
    table, body, start = b"", b"", 128 + 4 + 12 * len(tags)
    for signature, data in tags.items():
        table += signature + struct.pack(">II", start + len(body), len(data))
        body += data + bytes(-len(data) % 4)
    header = struct.pack(">I4sI4s4s4s", start + len(body), b"lcms", 0x02100000, device, space, pcs)
    header += bytes(12) + b"acsp" + bytes(28) + d50
    return header + bytes(128 - len(header)) + struct.pack(">I", len(tags)) + table + body


def _display_p3() -> bytes:
    """Display P3 (an iPhone photo's profile): its D50 primaries and sRGB's curve."""
    curve = b"para\0\0\0\0" + struct.pack(">HH", 3, 0)
    curve += b"".join(_s15(v) for v in (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045))
    primaries = [(0.515121, 0.241196, -0.001053), (0.291977, 0.692245, 0.041885)]
    primaries.append((0.157104, 0.066574, 0.784073))
    tags = {b"rTRC": curve, b"gTRC": curve, b"bTRC": curve}
    for signature, xyz in zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries, strict=True):
        tags[signature] = b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)
    return _icc(b"mntr", b"RGB ", b"XYZ ", tags)


def _press_cmyk() -> bytes:
    """A printer's CMYK profile: a table (2 points per ink) of each corner's colour,
    darkened as a press prints it (Lab, by Pillow's own sRGB -> Lab transform)."""
    corners = [[(1 - ink) * (1 - k) for ink in (c, m, y)] for c, m, y, k in _corners()]
    rgb = Image.fromarray((np.reshape(corners, (1, 16, 3)) * 220).astype(np.uint8))
    srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
    as_lab = ImageCms.profileToProfile(rgb, srgb, lab, outputMode="LAB")
    lab_pixels = np.array([as_lab.getpixel((i, 0)) for i in range(16)], dtype=np.uint16)
    grid = (lab_pixels << 8).astype(">u2").tobytes()  # L 0-100, a and b -128-127: 0-0xFF00
    identity = b"".join(_s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    lut = b"mft2\0\0\0\0" + bytes((4, 3, 2, 0)) + identity + struct.pack(">HH", 2, 2)
    lut += struct.pack(">HH", 0, 65535) * 4 + grid + struct.pack(">HH", 0, 65535) * 3
    return _icc(b"prtr", b"CMYK", b"Lab ", {b"A2B0": lut})


def _corners() -> list[tuple[int, int, int, int]]:
    return [(c, m, y, k) for c in (0, 1) for m in (0, 1) for y in (0, 1) for k in (0, 1)]


def _managed(img: Image.Image, profile: bytes) -> np.ndarray:
    """What a colour-managed viewer shows of `img`: its pixels through `profile` to sRGB."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    srgb = ImageCms.createProfile("sRGB")
    return np.asarray(ImageCms.profileToProfile(img, source, srgb, outputMode="RGB"))


def test_an_embedded_icc_profile_is_not_applied():
    # Like tf.io and Keras' load_img (and the pixels ImageNet models were trained on),
    # the job takes a Display P3 photo's values as sRGB ones: P3 (200, 100, 50), which
    # a colour-managed viewer shows as about sRGB (215, 93, 31), is fed as (200, 100, 50).
    stored = np.full((8, 8, 3), (200, 100, 50), dtype=np.uint8)
    p3 = _encode(Image.fromarray(stored), "PNG", icc_profile=_display_p3())
    assert Image.open(io.BytesIO(p3)).info["icc_profile"] == _display_p3()
    np.testing.assert_array_equal(images.decode_image(p3), stored)
    assert np.abs(_managed(Image.fromarray(stored), _display_p3()) - stored.astype(int)).max() > 10
    jpeg = _encode(Image.fromarray(stored), "JPEG", quality=95)
    tagged = _encode(Image.fromarray(stored), "JPEG", quality=95, icc_profile=_display_p3())
    np.testing.assert_array_equal(images.decode_image(tagged), images.decode_image(jpeg))


def test_a_cmyk_jpeg_is_converted_by_pillows_formula_with_or_without_its_profile():
    # Pillow's CMYK -> RGB: R = (255 - C)(255 - K) / 255 (G of M, B of Y), not through the
    # JPEG's profile: a press profile's colours (what a viewer managing colour shows)
    # are not what the model gets.
    cmyk = Image.new("CMYK", (8, 8), (100, 50, 0, 50))
    plain = _encode(cmyk, "JPEG", quality=100)
    profiled = _encode(cmyk, "JPEG", quality=100, icc_profile=_press_cmyk())
    assert Image.open(io.BytesIO(profiled)).info["icc_profile"] == _press_cmyk()
    decoded = images.decode_image(profiled)
    np.testing.assert_array_equal(decoded, images.decode_image(plain))
    np.testing.assert_allclose(decoded[0, 0], [125, 165, 205], atol=1)  # 155 * 205 / 255
    assert np.abs(_managed(cmyk, _press_cmyk())[0, 0] - decoded[0, 0].astype(int)).max() > 10


def test_decoding_keeps_a_callers_filter_equal_to_its_own():
    """The decoder's filter is taken out as the very one it put in: a caller's own
    filter of the same warnings is left where the caller put it."""
    exif = _encode(Image.new("RGB", (30, 20), (9, 8, 7)), "PNG", exif=b"Exif\0\0II*\0\x40\0\0\0")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        before = list(warnings.filters)
        images.decode_image(exif)
        assert warnings.filters == before
