"""How `--model` names a model: its kind and location, decided once."""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Literal

from transforms import files

__all__ = [
    "BUNDLED_MODELS",
    "HUB_ALIASES",
    "KNOWN_NAMES",
    "ModelKind",
    "ModelReference",
    "SAVED_MODEL_FILES",
    "model_reference",
    "no_keras_file",
]

BUNDLED_MODELS: tuple[str, ...] = ("efficientnet_lite0",)
HUB_ALIASES: dict[str, str] = {
    "inception_v1": "https://tfhub.dev/google/imagenet/inception_v1/classification/4",
}

# The files a SavedModel folder holds its proto in, in the order TensorFlow looks for
# them (loader_impl.parse_saved_model, which tf.saved_model.load reads it with): the
# binary proto, else its text form.
SAVED_MODEL_FILES: tuple[str, ...] = ("saved_model.pb", "saved_model.pbtxt")


ModelKind = Literal["bundled", "hub", "saved_model", "keras"]


@dataclasses.dataclass(frozen=True)
class ModelReference:
    """What a `--model` value names, decided in one place (`model_reference`).

    Attributes:
      reference: the `--model` value.
      kind: `bundled` (a name in BUNDLED_MODELS), `hub` (a TF Hub handle or a name
        in HUB_ALIASES), `keras` (a `.keras` file) or `saved_model` (any other path:
        a SavedModel folder, checked when the model is resolved).
      location: handle, path or bundled name that is loaded.
    """

    reference: str
    kind: ModelKind
    location: str

    @property
    def is_path(self) -> bool:
        """A file or folder (local or remote), not a bundled name or a TF Hub handle."""
        return self.kind in ("saved_model", "keras")

    @property
    def is_local_path(self) -> bool:
        """A path on this machine's disk (no `scheme://`)."""
        return self.is_path and not files.is_remote(self.location)

    def check_exists(self) -> None:
        """A local path that does not exist fails here, before TensorFlow is imported.

        Raises:
          ValueError: naming the missing file or folder and what `--model` accepts.
        """
        if not self.is_local_path:
            return
        if os.path.exists(self.location):
            if self.kind == "keras" and os.path.isfile(self.location):
                if not zipfile.is_zipfile(self.location):
                    raise ValueError(
                        f"--model {self.reference!r} is not a .keras file: a .keras file is a "
                        "zip archive (model.save('x.keras')), and this file is not one."
                    )
            if self.kind == "saved_model" and os.path.isfile(self.location):
                raise ValueError(_not_a_folder(self.reference, self.location))
            return
        bare = self.location.rstrip("/")
        if bare != self.location and os.path.isfile(bare):  # "does not exist" would mislead
            raise ValueError(
                f"--model {self.reference!r} ends in '/', a folder's name, but {bare!r} is a "
                "file: drop the '/'."
            )
        if self.kind == "keras":
            raise ValueError(no_keras_file(self.reference, self.location, _local_keras_files))
        raise ValueError(
            f"--model {self.reference!r} is not a SavedModel folder, a .keras file, a TF Hub "
            f"handle (https://...), or a known name ({', '.join(KNOWN_NAMES)}): "
            "no such file or folder."
        )


KNOWN_NAMES = BUNDLED_MODELS + tuple(HUB_ALIASES)
# At most this many .keras files of a missing one's folder are named in its error.
_LISTED_KERAS_FILES = 5


def no_keras_file(reference: str, location: str, list_keras) -> str:
    """Why `--model location` is no .keras file, and what to check: the path it was read
    as (a relative one from the working folder) and the .keras files its folder holds,
    named if few. `list_keras(folder)`: their names, None where the folder is missing."""
    remote = files.is_remote(location)
    path = location if remote else os.path.abspath(location)
    folder = os.path.dirname(path)
    read_as = ""
    if not remote and not os.path.isabs(location):
        read_as = f" (read as {path!r}: a relative path starts at the working folder)"
    names = list_keras(folder)
    if names is None:
        found = f"its folder {folder!r} does not exist"
    elif not names:
        found = f"its folder {folder!r} holds no .keras file"
    elif len(names) <= _LISTED_KERAS_FILES:
        found = f"its folder {folder!r} holds {', '.join(names)}"
    else:
        found = f"its folder {folder!r} holds {len(names)} .keras files, none of this name"
    return f"--model {reference!r}: no such .keras file{read_as}; {found}. Check the path."


def _local_keras_files(folder: str) -> list[str] | None:
    """The names of the .keras files in a local folder, sorted; None if it is none."""
    if not os.path.isdir(folder):
        return None
    return sorted(name for name in os.listdir(folder) if name.endswith(".keras"))


def _not_a_folder(reference: str, path: str) -> str:
    """Why a file that is not a .keras file is no --model, and what to pass instead."""
    name = os.path.basename(path)
    if name in SAVED_MODEL_FILES:
        folder = os.path.dirname(reference) or "."
        return (
            f"--model {reference!r} is the {name} file of a SavedModel; pass its folder, "
            f"--model {folder!r}."
        )
    if name.lower().endswith(".weights.h5"):  # keras.saving.load_model finds no model in it
        return (
            f"--model {reference!r} holds a Keras model's weights alone (model.save_weights), "
            "not the model: build the model in its code, load them (model.load_weights("
            f"{path!r})), save it as a .keras file (model.save('model.keras')), then pass "
            "that file."
        )
    if name.lower().endswith((".h5", ".hdf5")):
        return (
            f"--model {reference!r} is a Keras HDF5 file, which the job does not load: load "
            "it in Keras (keras.saving.load_model) and save it as a .keras file "
            "(model.save('model.keras')), then pass that file."
        )
    return (
        f"--model {reference!r} is a file, but not a .keras file (by its name); pass a "
        "SavedModel folder, a .keras file, a TF Hub handle (https://...), or one of: "
        f"{', '.join(KNOWN_NAMES)}."
    )


def model_reference(reference: str) -> ModelReference:
    """The kind and location `--model reference` names, from the string alone (no I/O)."""
    if reference in BUNDLED_MODELS:
        return ModelReference(reference, "bundled", reference)
    if reference in HUB_ALIASES:
        return ModelReference(reference, "hub", HUB_ALIASES[reference])
    if reference.startswith(("http://", "https://")):
        return ModelReference(reference, "hub", reference)
    if reference.endswith(".keras"):
        return ModelReference(reference, "keras", reference)
    return ModelReference(reference, "saved_model", reference)
