"""Loading a model: its files' checks and identity, TF Hub, SavedModel and Keras loads, load errors."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import zipfile
from typing import Any

from transforms import files
from transforms.model.reference import (
    KNOWN_NAMES,
    SAVED_MODEL_FILES,
    ModelReference,
    no_keras_file,
)

__all__ = [
    "check_remote_readable",
    "check_saved_model_folder",
    "is_hub_module_folder",
    "load_model",
    "model_identity",
    "saved_model_file",
    "saved_model_proto",
    "serving_tag_sets",
]


def check_remote_readable(model: ModelReference) -> None:
    """A gs:// model is read at launch: one Cloud Storage cannot serve (offline, no
    credentials) is said so, not taken for a folder without a model (a SavedModel)
    or a failed run (a .keras file, exit 1)."""
    if not model.is_path or model.is_local_path:
        return
    import tensorflow as tf  # noqa: PLC0415

    try:
        tf.io.gfile.exists(model.location)  # False, not an error, for a missing one
    except tf.errors.OpError as e:
        reason = " ".join(next(iter(e.message.splitlines()), "").split())
        raise ValueError(
            f"--model {model.reference!r} cannot be read ({type(e).__name__}: {reason}); a "
            "gs:// --model is read at launch (a Dataflow dry run too): it needs network and "
            "Google Cloud credentials (gcloud auth application-default login)."
        ) from e


def saved_model_file(folder: str) -> str | None:
    """The name of the SavedModel proto a folder (local or remote) holds, the one
    TensorFlow reads: saved_model.pb, else saved_model.pbtxt; None for neither."""
    import tensorflow as tf  # noqa: PLC0415

    names = (name for name in SAVED_MODEL_FILES if tf.io.gfile.exists(os.path.join(folder, name)))
    return next(names, None)


def saved_model_proto(folder: str) -> Any:
    """The SavedModel proto (saved_model_pb2.SavedModel) of a folder, local or remote,
    as TensorFlow's loader_impl.parse_saved_model reads it (saved_model.pb, else its
    text form), parsed once per version of that file in this process: a launch's
    checks of one model (batch statistics, signature, pixel range, the tags to load, a
    TF1 Hub module's recorded size) each read it, and a large or gs:// one takes
    seconds to read and parse. A file saved anew at the same path is read anew
    (`_proto_version`). `saved_model_proto.cache_info()` counts the parses (misses).

    The proto is shared by its callers: read it, never change it (a map read by
    `[key]` adds a missing key: ask `key in` first, or `.get(key)`).

    Raises:
      OSError: the folder holds no proto, or one that does not parse (TensorFlow's).
    """
    version = _proto_version(folder)
    where = folder if files.is_remote(folder) else os.path.abspath(folder)
    return _parsed_saved_model(where, version)


# Protos kept parsed: a launch reads one model; each one more kept would hold up to
# hundreds of MB for the process's life (a DirectRunner launcher is the job's runner).
_KEPT_PROTOS = 1


@functools.lru_cache(maxsize=_KEPT_PROTOS)
def _parsed_saved_model(folder: str, version: tuple | None) -> Any:
    """loader_impl.parse_saved_model(folder), kept for `version` of its file."""
    # TF's own reader of saved_model.pb(txt), local or gs://; private but pinned (setup.py).
    from tensorflow.python.saved_model import loader_impl  # noqa: PLC0415

    return loader_impl.parse_saved_model(folder)


saved_model_proto.cache_info = _parsed_saved_model.cache_info
saved_model_proto.cache_clear = _parsed_saved_model.cache_clear


def _proto_version(folder: str) -> tuple | None:
    """What tells a version of a folder's proto file from another: its name, size and
    modification time, and a local one's inode (a save writes a new file and renames
    it over the old one); of a remote one, what its file system states (Cloud Storage:
    the object's size and update time, one metadata request where parsing downloads
    it; one that states no time: a version never found again, the file parsed at each
    read). None for a folder without one (parsing raises, and nothing is kept)."""
    import tensorflow as tf  # noqa: PLC0415

    name = saved_model_file(folder)
    if name is None:
        return None
    path = os.path.join(folder, name)
    if files.is_remote(folder):
        stat = tf.io.gfile.stat(path)
        # ram:// states no time: a file saved anew of the same size looks the same.
        return name, stat.length, stat.mtime_nsec or object()
    stat = os.stat(path)  # in ns: tf.io.gfile.stat's local times are whole seconds
    return name, stat.st_size, stat.st_mtime_ns, stat.st_ino


def check_saved_model_folder(model: ModelReference) -> None:
    """A `saved_model` reference must be a folder holding saved_model.pb or
    saved_model.pbtxt (local or remote)."""
    if model.kind != "saved_model":
        return
    import tensorflow as tf  # noqa: PLC0415

    reference = model.reference
    if tf.io.gfile.isdir(reference):
        if saved_model_file(reference) is not None:
            return
        raise ValueError(
            f"--model {reference!r} is a folder without saved_model.pb; {_models_in(reference)}"
        )
    raise ValueError(
        f"--model {reference!r} is not a SavedModel folder, a .keras file, a TF Hub handle "
        f"(https://...), or a known name ({', '.join(KNOWN_NAMES)})."
    )


# Models a folder holds one level down that an error names (the rest are counted).
_LISTED_MODELS = 5


def _models_in(folder: str) -> str:
    """What to pass for a folder that holds its model one level down (`_held_models`);
    else the kinds of model the job takes."""
    held = _held_models(folder)
    if not held:
        return (
            "pass a SavedModel folder, a .keras file, a TF Hub handle, or one of: "
            f"{', '.join(KNOWN_NAMES)}."
        )
    listed = ", ".join(held[:_LISTED_MODELS])
    more = f" and {len(held) - _LISTED_MODELS} more" if len(held) > _LISTED_MODELS else ""
    first = os.path.join(folder, os.path.dirname(held[0]) or held[0])
    pass_ = f"--model {first!r}" if len(held) == 1 else f"one of them, e.g. --model {first!r}"
    return f"it holds {listed}{more}: pass {pass_}."


def _held_models(folder: str) -> list[str]:
    """The models a folder (local or remote) holds one level down, as paths in it: its
    .keras files, then the saved_model.pb (or .pbtxt: `saved_model_file`) of its
    sub-folders, the highest number first (TF Serving's version folders: it serves the
    highest); [] where it cannot be listed."""
    import tensorflow as tf  # noqa: PLC0415

    try:
        names = sorted(name.rstrip("/") for name in tf.io.gfile.listdir(folder))
        files = {n: saved_model_file(os.path.join(folder, n)) for n in names}
    except tf.errors.OpError:  # unreadable: the error names what the job takes
        return []
    saved = sorted(
        (n for n in names if files[n] is not None),
        key=lambda n: (n.isdigit(), int(n) if n.isdigit() else 0, n),
        reverse=True,
    )
    keras_files = [n for n in names if n.endswith(".keras") and n not in saved]
    return [*keras_files, *(f"{n}/{files[n]}" for n in saved)]


def _hash_path(path: str) -> str:
    import tensorflow as tf  # noqa: PLC0415

    digest = hashlib.sha256()
    paths = sorted(p for p in _walk_files(path)) if tf.io.gfile.isdir(path) else [path]
    for p in paths:
        digest.update(os.path.relpath(p, path).encode() if p != path else b"")
        with tf.io.gfile.GFile(p, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _walk_files(root: str):
    import tensorflow as tf  # noqa: PLC0415

    for folder, _, names in tf.io.gfile.walk(root):
        for name in names:
            yield os.path.join(folder, name)


def model_identity(model: ModelReference) -> str:
    """sha256 of the model's files (of its handle for TF Hub), as manifests record it."""
    if model.kind == "hub":
        return "sha256:" + hashlib.sha256(model.location.encode()).hexdigest()
    if model.kind == "bundled":
        from transforms.bundled.efficientnet_lite import model_identity  # noqa: PLC0415

        return model_identity()
    return "sha256:" + _hash_path(model.location)


def load_model(model: ModelReference) -> Any:
    """Loads the model object; errors name the model and the fix."""
    kind, location = model.kind, model.location
    if kind == "bundled":
        from transforms.bundled.efficientnet_lite import load_efficientnet_lite0  # noqa: PLC0415

        return load_efficientnet_lite0()
    if kind == "keras":
        import keras  # noqa: PLC0415
        import tensorflow as tf  # noqa: PLC0415

        if not tf.io.gfile.exists(location):
            raise ValueError(no_keras_file(location, location, _gfile_keras_files))
        try:
            return keras.saving.load_model(location, safe_mode=True, compile=False)
        except Exception as e:
            raise _keras_load_error(location, e) from e
    return _hub_load(model)


# What TensorFlow raises loading, without tags, a SavedModel of several MetaGraphs.
_SEVERAL_METAGRAPHS = "if there is more than one MetaGraph"


def _hub_load(model: ModelReference) -> Any:
    """`hub.load` of a SavedModel folder or TF Hub handle; errors name the model and the
    fix. A SavedModel folder of several MetaGraphs is loaded with the tags
    `_serving_tags` chooses (or refused by it); those are looked for only when TensorFlow
    finds several, so a file of one (every TF2 export) is read once, not once more for
    its tags by the launch and every worker."""
    import tensorflow_hub as hub  # noqa: PLC0415

    kind, location = model.kind, model.location
    try:
        return hub.load(location)
    except Exception as e:
        if kind != "saved_model" or _SEVERAL_METAGRAPHS not in str(e):
            raise _saved_model_load_error(kind, location, e) from e
    tags = _serving_tags(model)
    try:
        return hub.load(location, tags=tags)
    except Exception as e:
        raise _saved_model_load_error(kind, location, e) from e


def _gfile_keras_files(folder: str) -> list[str] | None:
    """`_local_keras_files` of a folder TensorFlow reads (local or gs://)."""
    import tensorflow as tf  # noqa: PLC0415

    if not tf.io.gfile.isdir(folder):
        return None
    return sorted(name for name in tf.io.gfile.listdir(folder) if name.endswith(".keras"))


_SERVE = "serve"


def _serving_tags(model: ModelReference) -> list[str] | None:
    """The tags of the MetaGraph to load of a SavedModel folder holding several (a TF1
    export's `serve` graph beside its `train` one): the one tagged `serve` alone, else the
    only one tagged `serve`, as TF Serving runs it; None for one MetaGraph (or a TF1 Hub
    module, which hub.load loads by its own tags), or a proto loading reports on.

    Raises:
      ValueError: several MetaGraphs, none or several of them `serve` ones.
    """
    if is_hub_module_folder(model.location):
        return None
    try:
        metas = saved_model_proto(model.location).meta_graphs
    except Exception:  # unreadable: loading it says why
        return None
    tag_sets = [sorted(meta.meta_info_def.tags) for meta in metas]
    if len(tag_sets) < 2:
        return None
    chosen = serving_tag_sets(tag_sets)
    if len(chosen) == 1:
        return chosen[0]
    raise ValueError(
        f"--model {model.reference!r} holds {len(tag_sets)} MetaGraphs, tagged "
        f"{', '.join(str(tags) for tags in tag_sets)}, and the job loads its only one or the "
        f"one tagged {_SERVE!r}: save the graph that scores images alone, tagged {_SERVE!r}."
    )


def serving_tag_sets(tag_sets: list[list[str]]) -> list[list[str]]:
    """Of several MetaGraphs' sorted tags, those the job may load: the one tagged `serve`
    alone, else every one tagged `serve` among others (one: loaded; more: refused)."""
    serving = [tags for tags in tag_sets if _SERVE in tags]
    return [tags for tags in serving if tags == [_SERVE]] or serving


def _saved_model_load_error(kind: str, location: str, error: Exception) -> ValueError:
    """Why a SavedModel or hub handle did not load, with the fix."""
    if "there are 0 MetaGraphs" in str(error):  # TF's advice (pass tags=) cannot help
        proto = (kind == "saved_model" and saved_model_file(location)) or "saved_model.pb"
        return ValueError(
            f"--model {location!r}: its {proto} holds no model (empty or cut short); save "
            "or download the model again."
        )
    hint = (
        " Downloading TF Hub models needs network; offline, download the model "
        "elsewhere and pass its SavedModel folder, or set TFHUB_CACHE_DIR to a cache "
        "that holds it."
        if kind == "hub"
        else ""
    )
    return ValueError(f"--model {location!r} could not be loaded: {str(error).rstrip('.')}.{hint}")


# What a .keras file's export may lose: the pixel range its layers tell, which a
# SavedModel's graph tells only where its first ops rescale the pixels (`model_input_range`).
_EXPORTED_RANGE = (
    " with --input_range for the pixels it takes where its graph does not show them (a "
    "SavedModel whose first ops rescale 8-bit pixels is fed 0,255, any other 0,1 unless "
    "given)"
)
_UNKNOWN_KERAS_OBJECT = re.compile(r"Could not locate (class|function) '([^']+)'")


def _keras_load_error(location: str, error: Exception) -> ValueError:
    """Why a .keras file did not load, with the fix: Keras' own advice (safe_mode=False,
    registering the class) needs code the job does not run or import."""
    if "safe_mode" in str(error):
        return ValueError(
            f"--model {location!r} holds Python code (a Lambda layer), which the job "
            "does not run from a file (it loads .keras files with safe_mode=True): "
            "export the model as a SavedModel (model.export(folder)) and pass that "
            f"folder{_EXPORTED_RANGE}, or rebuild it without the Lambda layer."
        )
    version = _saved_by_keras(location)
    if version.startswith("2."):  # Keras 3 reads its own format alone
        return ValueError(
            f"--model {location!r} was saved by Keras {version} (tf_keras), whose .keras files "
            "Keras 3 does not read: load it with tf_keras (tf_keras.models.load_model) and "
            "export it as a SavedModel (model.export(folder)), then pass that folder"
            f"{_EXPORTED_RANGE}."
        )
    unknown = _UNKNOWN_KERAS_OBJECT.search(str(error))
    if unknown is not None:
        kind, name = unknown.groups()
        return ValueError(
            f"--model {location!r} uses the custom {kind} {name!r}, whose code a .keras "
            "file does not hold and the job cannot import: export the model as a "
            f"SavedModel (model.export(folder)) and pass that folder{_EXPORTED_RANGE}, or "
            "rebuild it from Keras' own layers."
        )
    return ValueError(f"--model {location!r} could not be loaded as a Keras model: {error}")


def _saved_by_keras(location: str) -> str:
    """The Keras version a .keras file's metadata.json names; "" where it names none or
    the file is no zip."""
    import tensorflow as tf  # noqa: PLC0415

    try:
        with tf.io.gfile.GFile(location, "rb") as f, zipfile.ZipFile(f) as archive:
            return str(json.loads(archive.read("metadata.json")).get("keras_version", ""))
    except Exception:  # not a zip, no metadata: Keras' own error says what it is
        return ""


def is_hub_module_folder(folder: str) -> bool:
    """A folder holding a module in TF Hub's TF1 format: a tfhub_module.pb beside its
    saved_model.pb (local or gs://)."""
    import tensorflow as tf  # noqa: PLC0415

    return tf.io.gfile.exists(os.path.join(folder, "tfhub_module.pb"))
