"""Preprocessing: raw inputs to model-ready images, or dead-letter records."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from transforms import images
from transforms.sources import RawImage

__all__ = ["ERRORS_TAG", "NAMESPACE", "ImageExample", "Preprocess", "error_record"]

ERRORS_TAG = "errors"
NAMESPACE = "ig_audit"


def error_record(image_id: str, file_name: str, stage: str, error: str) -> dict[str, str]:
    """A dead-letter record: which input, at which stage, and why."""
    return {"image_id": image_id, "file_name": file_name, "stage": stage, "error": error}


@dataclasses.dataclass(frozen=True)
class ImageExample:
    """A preprocessed image.

    Attributes:
      image: float32 [H, W, 3] in the model's input range, padded to the model's
        input size (a square, or the H x W a model fixes).
      content: (top, left, height, width) of the image itself in it, the rest
        being padding (`images.pad_box`); None: the whole image.
    """

    image_id: str
    file_name: str
    label: int | None
    image: np.ndarray
    content: tuple[int, int, int, int] | None = None

    def content_mask(self) -> np.ndarray:
        """bool [H, W]: True on the image's own pixels, False on its padding."""
        mask = np.zeros(self.image.shape[:2], dtype=bool)
        top, left, height, width = self.content or (0, 0, *mask.shape)
        mask[top : top + height, left : left + width] = True
        return mask


class Preprocess(beam.DoFn):
    """RawImage -> ImageExample (main output) or an error record (ERRORS_TAG).

    `image_size`: the model's input, a square's side or (height, width)."""

    def __init__(self, image_size: int | tuple[int, int], input_range: tuple[float, float]):
        self._size = image_size
        self._range = input_range
        self._decoded = beam.metrics.Metrics.counter(NAMESPACE, "images_decoded")
        self._failed = beam.metrics.Metrics.counter(NAMESPACE, "images_failed_preprocess")

    def process(self, raw: RawImage) -> Iterator[Any]:
        if raw.error is not None:
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, error_record(raw.image_id, raw.file_name, "read", raw.error)
            )
            return
        try:
            if raw.pixels is not None:
                pixels = images.to_rgb_uint8(raw.pixels)
            else:
                hint = max(images.sides(self._size))
                pixels = images.decode_image(raw.data, max_side_hint=hint)
            padded = images.resize_with_pad(pixels, self._size)
            content = images.pad_box(*pixels.shape[:2], self._size)
        except Exception as e:  # one bad input must not end the bundle
            # ImageError says what is wrong with the file; anything else (MemoryError,
            # a Pillow bug) is still this one input's failure, not the job's.
            reason = str(e) if isinstance(e, images.ImageError) else f"{type(e).__name__}: {e}"
            self._failed.inc()
            yield beam.pvalue.TaggedOutput(
                ERRORS_TAG, error_record(raw.image_id, raw.file_name, "decode", reason)
            )
            return
        self._decoded.inc()
        yield ImageExample(
            image_id=raw.image_id,
            file_name=raw.file_name,
            label=raw.label,
            image=images.scale_to_range(padded, self._range),
            content=content,
        )
