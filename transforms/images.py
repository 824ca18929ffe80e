"""Decoding, resizing with padding and scaling of images, with NumPy and Pillow."""

from __future__ import annotations

import codecs
import contextlib
import io
import re
import struct
from collections.abc import Iterator

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from transforms import quiet

__all__ = [
    "MAX_PIXELS",
    "ImageError",
    "decode_image",
    "pad_box",
    "resize_with_pad",
    "scale_to_range",
    "sides",
    "to_rgb_uint8",
]

#: Largest image decoded, in pixels (8192 x 8192): a larger one becomes an error
#: record (stage `decode`) before any pixel is decoded. A JPEG counts at the reduced
#: size it is decoded at (1/2 to 1/8, as the model's input size allows), so large
#: photos pass; formats without reduced decoding (PNG, ...) count at full size.
#: Decoding holds about 4 bytes per counted pixel at most: 256 MiB per image.
#: (Pillow itself refuses to open an image declaring more than 179 MP.)
MAX_PIXELS = 8192 * 8192
# What Pillow opens a JPEG as: a phone photo holding a second picture (an MPF preview,
# depth or gain map) is a Multi-Picture JPEG, "MPO", whose first picture is read.
_JPEG_FORMATS = ("JPEG", "MPO")
# Pillow modes that `Image.reduce` cannot shrink; "I" (32-bit) holds their values.
_WIDE_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# Palette and 1-bit modes, which neither `Image.reduce` nor `to_rgb_uint8` reads,
# and the modes they are converted to first.
_INDEXED_MODES = {"P": "RGBA", "PA": "RGBA", "1": "L"}
# An orientation in an XMP packet, as Pillow's `Image.getexif` matches it.
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')
# The transpose that turns stored pixels upright, per EXIF orientation (2 to 8).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """An input that cannot be turned into an image; the message says why."""


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any decoded pixel array to uint8 RGB.

    Args:
      image: [H, W] (grey), [H, W, 1], [H, W, 3] or [H, W, 4] (alpha is
        composited onto black, like the padding), integer or float.

    Returns:
      uint8 [H, W, 3].
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4) or min(image.shape[:2]) < 1:
        raise ImageError(f"expected an image of shape [H, W] or [H, W, 1|3|4], got {image.shape}")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round()
    elif image.dtype.kind == "f":
        image = np.clip(image, 0.0, 1.0) * 255.0
    image = image.astype(np.float32)
    if image.shape[-1] in (2, 4):
        color, alpha = image[..., :-1], image[..., -1:] / 255.0
        image = color * alpha
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.clip(image.round(), 0, 255).astype(np.uint8)


def _bomb_limit(data: bytes) -> str:
    """Why Pillow's limit, not the job's, refused an image: for a JPEG (its magic
    bytes) the limit comes before the job's reduced-size decoding could apply."""
    limit = f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.1f} MP"
    if data.startswith(b"\xff\xd8"):
        return (
            f"Pillow refuses more than {limit} before the job can decode a JPEG at reduced "
            "size; shrink it before auditing it"
        )
    return f"Pillow refuses more than {limit} before reading it; shrink it before auditing it"


def _open_bounded(data: bytes, max_side_hint: int | None, max_pixels: int) -> Image.Image:
    """Opens the image and refuses it, before decoding, when it is too large.

    A 762 KB PNG may declare 28000 x 28000 pixels (a decompression bomb): its
    size is read from the header and checked here, per call, without changing
    Pillow's global limit. Pillow's own bomb warning is silenced while it opens
    the image, as this check replaces it.
    """
    with quiet.ignoring_warnings(Image.DecompressionBombWarning):
        try:
            img = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ImageError(f"image too large to decode safely: {e} {_bomb_limit(data)}") from e
        except UnidentifiedImageError as e:
            raise ImageError(_unidentified(data)) from e
        except MemoryError:
            raise
        except (OSError, SyntaxError) as e:
            if (text := _text_reason(data)) is None:
                raise  # Pillow's own words, made a reason by `decode_image`
            raise ImageError(text) from e
        except Exception as e:  # a plugin's Python error (PPM's int(), AVIF's RuntimeError)
            raise ImageError(_text_reason(data) or _cannot("open", _claimed_format(data), e)) from e
    # Pillow opens an image at its first frame (an animation's); no seek(0): a SPIDER
    # file that is no stack raises EOFError on any seek.
    if max_side_hint and img.format in _JPEG_FORMATS:
        img.draft("RGB", (max_side_hint, max_side_hint))  # decode at 1/2 .. 1/8 size
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageError(
            f"image of {width}x{height} pixels ({width * height / 1e6:.1f} MP) exceeds the "
            f"decode limit of {max_pixels / 1e6:.1f} MP (transforms.images.MAX_PIXELS); "
            "shrink it before auditing it"
        )
    return img


def _load(img: Image.Image) -> None:
    """Decodes the pixels. Pillow says in its own words why most broken files fail
    (OSError 'image file is truncated', SyntaxError); a decoder written in Python (QOI's)
    fails on a file cut short with Python's errors (IndexError, ValueError 'not enough
    values to unpack'), which name neither the file nor the fault: they are said so."""
    try:
        img.load()
    except (OSError, SyntaxError, MemoryError):
        raise
    except Exception as e:
        raise ImageError(_cannot("decode", img.format, e)) from e


def _shrink(img: Image.Image, max_side_hint: int | None) -> Image.Image:
    """Box-averages a much larger image (4x the model's side or more) down to twice the
    size it takes in the model's square (`pad_box`), still as integers: the float copies
    that follow then stay bounded by the model's size, and it fills the square as the
    whole image resized does. (`Image.reduce` by a whole factor made each side's last,
    partial box a whole pixel: a 320 x 23 banner took 2 rows of a 16-pixel square, not 1.)"""
    if not max_side_hint or max(img.size) // (2 * max_side_hint) < 2:
        return img
    _, _, height, width = pad_box(img.height, img.width, max_side_hint)
    if img.mode in _WIDE_INT_MODES:
        img = img.convert("I")
    elif img.mode in _INDEXED_MODES:
        img = img.convert(_INDEXED_MODES[img.mode])
    return img.resize((2 * width, 2 * height), Image.Resampling.BOX)


def _orientation(img: Image.Image) -> object:
    """The image's EXIF orientation; where the EXIF names none, its XMP's (`_xmp_
    orientation`), as Pillow's `getexif` and `ImageOps.exif_transpose` read it; else 1,
    upright. An EXIF block Pillow cannot parse names none: the pixels read, and are taken
    as stored, as viewers show them. Pillow raises SyntaxError for a PNG's eXIf chunk (or
    a WebP's EXIF) that is no TIFF structure, struct.error for one cut short, ValueError
    for a PNG's "Raw profile type exif" text that is not hex, before it reads the XMP; an
    IFD or a value past the block's end only warns (Pillow catches its own OSError)."""
    try:
        return img.getexif().get(ExifTags.Base.Orientation, 1)
    except (SyntaxError, ValueError, struct.error):
        return _xmp_orientation(img)


def _xmp_orientation(img: Image.Image) -> int:
    """The orientation the image's XMP packet holds (`tiff:Orientation="6"`), found as
    Pillow's `getexif` finds it; 1 without one."""
    xmp = img.info.get("xmp") or img.info.get("XML:com.adobe.xmp") or b""
    found = _XMP_ORIENTATION.search(xmp.encode() if isinstance(xmp, str) else xmp)
    return int(found[2]) if found else 1


def _upright(img: Image.Image) -> Image.Image:
    """The decoded image turned as its EXIF (or XMP) orientation says (a phone photo taken
    upright comes out upright); a turned image replaces `img`, which is closed, so
    one full-size copy is held at a time. Pillow's `exif_transpose` also re-encodes
    the EXIF, which fails on a malformed tag (text where a number belongs) although
    the pixels and the orientation read: only the orientation is read here."""
    method = _UPRIGHT.get(_orientation(img))
    if method is None:
        return img
    turned = img.transpose(method)
    img.close()
    return turned


def _clear_transparent(img: Image.Image, depth: int | None) -> Image.Image:
    """The image with the pixels of its transparent colour black, as compositing onto
    black makes them: a PNG without an alpha channel may name one colour transparent
    (its tRNS chunk, `info["transparency"]`), as a palette image names an index. Done
    before `_shrink`, whose averages would mix that colour into its neighbours.
    `depth`: the PNG's bits per sample (`_png_bit_depth`), the key's units."""
    key = img.info.get("transparency")
    if key is None or img.mode not in ("1", "L", "RGB", "I", *_WIDE_INT_MODES):
        return img
    array = np.array(img)
    hit = array == _key_as_read(np.asarray(key, dtype=np.int64), img.mode, depth)
    array[hit.all(axis=-1) if array.ndim == 3 else hit] = 0
    cleared = Image.fromarray(array)  # the same mode, from the dtype and shape
    img.close()
    return cleared


def _png_bit_depth(data: bytes) -> int | None:
    """A PNG's bits per sample (its IHDR chunk's); None for another format."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 25:
        return None
    return data[24]


def _key_as_read(key: np.ndarray, mode: str, depth: int | None) -> np.ndarray:
    """A PNG's transparent colour, in its samples' units, in those of the pixels Pillow
    decodes: an 8-bit mode holds a 16-bit sample's high byte (the colours within 1/256
    of the key, which the 8 bits left cannot tell apart, are cleared with it), and a
    1, 2 or 4-bit grey level scaled to 0-255; a 1-bit image in mode "1" (booleans), whose
    key Pillow gives as 0 or 255, as a boolean."""
    if mode == "1":
        return key > 0
    if mode in ("L", "RGB") and depth == 16:
        return key >> 8
    if mode == "L" and depth in (1, 2, 4):
        return key * 255 // (2**depth - 1)
    return key


def _to_array(img: Image.Image, sixteen_bit: bool) -> np.ndarray:
    """A decoded image in a mode `to_rgb_uint8` reads, as an array.

    `sixteen_bit`: the file's mode was 16-bit (`I;16*`), so its values are in
    [0, 65535] however dark the image is. A 32-bit integer image (mode `I`)
    declares no range: values above 255 are read as 16-bit, else as 8-bit.
    """
    if img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img = img.convert("RGB")
    elif img.mode in _INDEXED_MODES:
        img = img.convert(_INDEXED_MODES[img.mode])
    array = np.asarray(img)
    if img.mode in ("I", *_WIDE_INT_MODES):
        wide = sixteen_bit or array.max(initial=0) > 255
        array = np.clip(array, 0, 65535 if wide else 255).astype(np.uint16 if wide else np.uint8)
    elif img.mode == "F":
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise ImageError(f"float image with {bad} NaN or infinite pixels")
        peak = float(array.max(initial=0.0))
        array = array / (255.0 if peak > 1.0 else 1.0)
    return array


@contextlib.contextmanager
def _quiet_pillow() -> Iterator[None]:
    """Pillow's warnings about the file being decoded kept off the terminal: 'Corrupt
    EXIF data. Expecting to read 2 bytes but only got 0.', 'Truncated File Read' (an
    EXIF block or a TIFF's IFD cut short), 'Image appears to be a malformed MPO file'.
    Each came out as a raw Python warning with Pillow's file and line, once per file,
    naming none. What matters is in the file's row or error record: an EXIF block that
    does not read names no orientation (`_orientation`), a TIFF without its IFD is
    'broken image'. (`quiet.ignoring_warnings`: Beam decodes in several threads at once.)"""
    with quiet.ignoring_warnings(UserWarning, module=r"PIL\."):
        yield


def decode_image(
    data: bytes, max_side_hint: int | None = None, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decodes encoded image bytes (JPEG, PNG, GIF, BMP, TIFF, WebP, ...).

    Grayscale, palette, RGBA, 16-bit and CMYK images are converted; an animated
    image gives its first frame; the EXIF orientation, or without one the XMP's, is
    applied (a phone photo taken upright comes out upright).

    Args:
      data: the file's bytes.
      max_side_hint: the model's input side. A JPEG is decoded at a reduced
        size (a power of two) keeping both sides >= this, and any image much
        larger than this is shrunk before it is turned into arrays.
      max_pixels: larger images are refused before decoding (`MAX_PIXELS`).

    Returns:
      uint8 [H, W, 3] RGB.

    Raises:
      ImageError: empty, truncated, too large or not an image, with the reason.
    """
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with _quiet_pillow(), _open_bounded(data, max_side_hint, max_pixels) as img:
            _load(img)
            upright = _clear_transparent(_upright(img), _png_bit_depth(data))
            array = _to_array(_shrink(upright, max_side_hint), img.mode in _WIDE_INT_MODES)
    except (OSError, SyntaxError, ValueError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"broken image: {e}") from e
    return to_rgb_uint8(array)


#: Major brands of HEIF files (`ftyp` box): HEIC photos (an iPhone's default), image
#: sequences, and the generic HEIF brands. AVIF, also HEIF, is read by Pillow.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})
# Bytes no text holds (control characters but tab, line feed, vertical tab, form feed
# and carriage return), and a word: two letters in a row.
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
_WORD = re.compile(r"[^\W\d_]{2}")


def _unidentified(data: bytes) -> str:
    """Why bytes Pillow does not recognise are no image: a HEIF/HEIC photo is named
    as one, with the fix, rather than left to look like a broken file."""
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return (
            "a HEIF/HEIC image (iPhone photos), which the job cannot decode: convert it to "
            f"JPEG or PNG ({len(data)} bytes)"
        )
    fmt = _claimed_format(data)
    error = _open_error(data, fmt) if fmt is not None else None
    # A TIFF of a pixel layout Pillow lacks, a header cut short, ... is a broken image;
    # bytes its format's opener disowns ('not a XBM file': a C header's '#define') none.
    if fmt is not None and not re.match(r"not an? \S+ file", str(error)):
        return _text_reason(data) or _cannot("open", fmt, error)
    return f"not an image Pillow can read ({len(data)} bytes)"


def _text_reason(data: bytes) -> str | None:
    """Why a text file whose first bytes happen to be a format's signature, which Pillow
    then fails to open, is no image: a note starting 'BMW' (a BMP's 'BM') or 'P1 '
    (a PPM's) is not a broken BMP or PPM. None for other bytes."""
    fmt = _claimed_format(data)
    if fmt is None or not _is_text(data):
        return None
    return (
        f"not an image Pillow can read ({len(data)} bytes of text, starting with {fmt}'s signature)"
    )


def _is_text(data: bytes) -> bool:
    """Whether the file's first 4 KiB read as text: UTF-8, no control character but
    whitespace, and a word (two letters) past the first two bytes outside '#' comments.
    A BMP, GIF or TIFF header holds binary (NUL) bytes, a JPEG's markers bytes no UTF-8
    holds; a plain PPM ('P3'), text, holds numbers and comments alone before its pixels,
    so one cut in its header stays a broken image."""
    head = data[:4096]
    if _CONTROL.search(head):
        return False
    try:  # a character cut at the 4 KiB's end is no fault; a JPEG's \xff\xd8 marker is
        text = codecs.getincrementaldecoder("utf-8")().decode(head[2:], final=False)
    except UnicodeDecodeError:
        return False
    return _WORD.search(re.sub(r"#[^\r\n]*", "", text)) is not None


def _claimed_format(data: bytes) -> str | None:
    """The format whose signature the file's first bytes carry, by each Pillow format's
    own check of them; formats that have none (TGA, SPIDER, ...) claim no bytes, as any
    could be theirs."""
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(data[:16]):
                return fmt
        except Exception:  # a check that fails on these bytes claims them not
            continue
    return None


def _open_error(data: bytes, fmt: str) -> Exception | None:
    """What Pillow's opener of `fmt` raised on the bytes: `Image.open` drops it and
    says only that it cannot identify the file."""
    with quiet.ignoring_warnings():
        try:
            Image.OPEN[fmt][0](io.BytesIO(data), "").close()
        except Exception as e:
            return e
    return None


def _cannot(step: str, fmt: str | None, error: Exception | None) -> str:
    """A broken file's reason, worded as Pillow's own ('broken image: image file is
    truncated'): which step failed on which format, and Pillow's error, with its type
    where its message is Python's (`index out of range`) or a bare number (`99`)."""
    why = str(error) if error is not None else "no reason given"
    if error is not None and not (isinstance(error, OSError | SyntaxError) and _words(why)):
        why = f"{type(error).__name__}: {why}"
    return f"broken image: Pillow cannot {step} this {fmt or 'image'} file ({why})"


def _words(message: str) -> bool:
    """Whether an error's message says something in words (not `99`, not empty)."""
    return any(c.isalpha() for c in message)


def sides(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a model's input `size`: a square's side, or (height, width)."""
    if isinstance(size, int | np.integer):
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def resize_with_pad(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Fits the image in the model's input keeping its aspect, padding with black.

    Like `tf.image.resize_with_pad` of the seed notebook (centred, zero padding),
    with antialiased bilinear resampling so that large photos shrink cleanly.

    Args:
      image: uint8 [H, W, 3].
      size: side of the output square, or (height, width) of the output.

    Returns:
      uint8 [size, size, 3], or [height, width, 3].
    """
    top, left, new_h, new_w = pad_box(*image.shape[:2], size)
    resized = np.asarray(
        Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=None)
    )
    out = np.zeros((*sides(size), 3), dtype=np.uint8)
    out[top : top + new_h, left : left + new_w] = resized
    return out


def pad_box(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int, int, int]:
    """Where `resize_with_pad` puts an image of `height` x `width` in the model's input
    (`size`: a square's side, or (height, width)): (top, left, height, width) of the
    resized image; the rest is padding."""
    out_h, out_w = sides(size)
    scale = min(out_h / height, out_w / width)
    new_h = max(1, min(out_h, round(height * scale)))
    new_w = max(1, min(out_w, round(width * scale)))
    return (out_h - new_h) // 2, (out_w - new_w) // 2, new_h, new_w


def scale_to_range(image: np.ndarray, input_range: tuple[float, float]) -> np.ndarray:
    """uint8 [H, W, 3] in [0, 255] -> float32 [H, W, 3] in [low, high]."""
    low, high = input_range
    return (np.float32(low) + image.astype(np.float32) * np.float32((high - low) / 255.0)).astype(
        np.float32
    )
