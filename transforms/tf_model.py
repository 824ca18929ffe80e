"""The TensorFlow model adapter: loads a classifier and gives scores and gradients.

Models are referenced as in `--model`:
  * `efficientnet_lite0`: bundled, offline (see `transforms.bundled.efficientnet_lite`);
  * `inception_v1`: the TF Hub model of the seed notebook;
  * any TF Hub handle (`https://tfhub.dev/...`, `https://www.kaggle.com/models/...`);
  * a SavedModel folder (loaded with `hub.load`, i.e. `tf.saved_model.load`);
  * a `.keras` file (loaded with `keras.saving.load_model(safe_mode=True)`).

Everything here runs the same on CPU and GPU; only the compile settings
depend on the device (`device_settings`).

This module holds the model's spec, the device settings and call sizes,
`resolve_model`, `ModelHandoff` and the `Classifier` with its compiled
functions. Its parts live in `transforms/model/`: `reference` (`--model`
values), `loading`, `calls` (the function of images a loaded object is called
through), `inputs` (image size and pixel range), `probes` (checks and warnings
of a model's outputs), `signature` (a SavedModel's signature read without
loading it) and `graph_scaling` (the rescaling its graph starts with, read so);
the names other code imports from here are re-exported.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import secrets
import threading
import time
import weakref
from typing import Any

import numpy as np

from transforms import labels
from transforms.ig import IntegrandFn, ScoreFn, ScoreGradFn
from transforms.model.calls import callable_of
from transforms.model.inputs import (
    fixes_size,
    hub_side,
    image_size_for,
    input_range_for,
    model_input_range,
    own_input_range,
    side_taken,
    what_flags_set,
)
from transforms.model.loading import (
    check_remote_readable,
    check_saved_model_folder,
    model_identity,
)

# Under its old name: tests patch tf_model._load, the name resolve_model and
# _load_for look up here.
from transforms.model.loading import load_model as _load
from transforms.model.probes import (
    narrow_float,
    outputs_are_probabilities,
    probe_images,
    probe_outputs,
    warn_of_low_precision,
    warn_of_one_output,
    warn_of_probabilities,
)
from transforms.model.reference import (
    BUNDLED_MODELS,
    HUB_ALIASES,
    ModelKind,
    ModelReference,
    model_reference,
)
from transforms.model.signature import (
    KNOWN_SIGNATURES,
    REFERENCE_VARIABLE_OPS,
    check_batch_independent,
    signature_without_loading,
)
from transforms.model.signature import hub_image_sides as _hub_image_sides  # noqa: F401 (tests read it here)

__all__ = [
    "BUNDLED_MODELS",
    "HUB_ALIASES",
    "CallSizeTuner",
    "Classifier",
    "DeviceSettings",
    "ModelHandoff",
    "ModelKind",
    "ModelReference",
    "ModelSpec",
    "device_settings",
    "known_outputs",
    "model_evaluations",
    "model_identity",
    "model_reference",
    "padded_batch",
    "resolve_model",
    "what_flags_set",
]

_LOG = logging.getLogger(__name__)


# Images and path points every Classifier of this process has evaluated, by kind.
_EVALUATIONS = {"gradient": 0, "forward": 0}
_EVALUATIONS_LOCK = threading.Lock()


def model_evaluations() -> dict[str, int]:
    """Gradient evaluations and forward passes (per image or path point) every
    Classifier of this process has made so far: what a local run's progress line
    shows while a batch runs (the DirectRunner runs its workers in the launcher's
    process)."""
    with _EVALUATIONS_LOCK:
        return dict(_EVALUATIONS)


def _count(kind: str, points: int) -> None:
    with _EVALUATIONS_LOCK:
        _EVALUATIONS[kind] += points


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the launcher learnt about a model; workers load it from this.

    Attributes:
      reference: the `--model` value.
      kind: `bundled`, `hub`, `saved_model` or `keras`.
      location: handle, path or bundled name that is loaded.
      image_size: height of the input images: their side, for a square input.
      image_width: their width where the model fixes one other than its height
        (a non-square input); None for a square one.
      input_range: (low, high) pixel range the model expects.
      num_outputs: width of the model's output vector.
      label_offset: output index of dataset class 0 (1 for 1001-output models
        with a background class at index 0).
      identity: sha256 of the model's files (or of the handle when remote).
      fixed_size: its input fixes its size (its signature's or Input's, square or not),
        refusing another --image_size; False for an open size (--image_size's, a known
        model's, a TF1 Hub module's or a first Resizing's, or 224).
    """

    reference: str
    kind: str
    location: str
    image_size: int
    input_range: tuple[float, float]
    num_outputs: int
    label_offset: int
    identity: str
    image_width: int | None = None
    fixed_size: bool = False

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the model's input images."""
        return self.image_size, self.image_width or self.image_size

    @property
    def input_flags(self) -> tuple[str, ...]:
        """The flags that feed the model other images than these: --image_size for an
        open size, --input_range for a model not known to take its own range."""
        fixed = {"--image_size": self.fixed_size, "--input_range": own_input_range(self.location)}
        return tuple(flag for flag, is_fixed in fixed.items() if not is_fixed)

    @property
    def num_classes(self) -> int:
        """Classes in the dataset's label space that the model scores."""
        return self.num_outputs - self.label_offset

    @property
    def model(self) -> ModelReference:
        """The model's reference, kind and location (the manifest keeps them flat)."""
        return ModelReference(self.reference, self.kind, self.location)


@dataclasses.dataclass(frozen=True)
class DeviceSettings:
    """Device-dependent execution choices."""

    device: str
    jit_compile: bool
    path_batch_size: int  # path points per gradient call unless --path_batch_size says
    # With --path_batch_size auto: the call sizes timed against each other (`CallSizeTuner`)
    # within calls of at most path_batch_size points; () runs path_batch_size as is.
    tuned_sizes: tuple[int, ...] = ()


# Path points per gradient call. On this project's 2-core CPUs the fastest
# size moved between days: EfficientNet-Lite0's forward+backward ran 1.3x
# faster per point at 8 than at 32 on one (the activations of a smaller call
# stay in cache), and the handler 1.1x faster at 16-64 than at 8 on another
# (docs/performance.md). So on CPUs `auto` times 8 and 16 against each other as
# it goes and keeps the faster (`CallSizeTuner`). Not 32: its activations
# raised the bundled run's peak memory from 2.2 to 2.7 GB (8: 1.9 GB), for
# little more speed. GPUs want larger calls: 32, untimed.
CPU_PATH_BATCH_SIZE = 16
CPU_TUNED_SIZES = (8, 16)
GPU_PATH_BATCH_SIZE = 32


def device_settings(jit_compile: bool | None = None) -> DeviceSettings:
    """GPU memory growth on; XLA on GPUs only, unless `jit_compile` forces it;
    on CPUs calls of at most 16 path points, timed at 8 and 16; 32 on GPUs.

    On this project's CPUs XLA was measured 2-3x slower for convolution nets,
    while on GPUs it usually helps; one SDK process per core shares a GPU, so
    memory growth keeps each from grabbing all of it.
    """
    import tensorflow as tf  # noqa: PLC0415

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass
    device = "GPU" if gpus else "CPU"
    return DeviceSettings(
        device=device,
        jit_compile=bool(gpus) if jit_compile is None else jit_compile,
        path_batch_size=GPU_PATH_BATCH_SIZE if gpus else CPU_PATH_BATCH_SIZE,
        tuned_sizes=() if gpus else CPU_TUNED_SIZES,
    )


class CallSizeTuner:
    """The path points per gradient call that run fastest here, learnt from the calls.

    Each size is timed on its first `_FIRST` full calls (more than half its
    points); then the size whose recent calls (`_WINDOW`) ran most points per
    second at the median is used, and every `_EXPLORE_EVERY`-th choice (`size`,
    asked once per request of the engine, which may take several calls) tries
    one of the others in turn, so that the choice follows the machine's load.
    Every call is real work: trying a slower size costs only its own few calls.
    A point's result does not depend on its call's size beyond float rounding
    (rows are independent, but a model's kernels may sum in another order at
    another batch size: the bundled run's maps came out bit-identical at 8, 16 and
    timed, others differ in their last bits), so the choice changes no map beyond
    float rounding (docs/performance.md; README, Reliability: bit-identical reruns
    need a fixed --path_batch_size).

    Threads may share one tuner (Beam's RunInference shares a process's model
    between its threads): a call's timing is filed by its own number of points,
    never by the latest choice, which another thread may have changed meanwhile.
    """

    _FIRST = 3
    _WINDOW = 3
    _EXPLORE_EVERY = 8

    def __init__(self, sizes: tuple[int, ...]):
        self.sizes = tuple(sorted(sizes))
        self._rates = {s: collections.deque(maxlen=self._WINDOW) for s in self.sizes}
        self._calls = 0
        self._lock = threading.Lock()

    def best(self) -> int:
        """The size with the most points per second at the median of its recent calls."""
        with self._lock:
            return self._best()

    def _best(self) -> int:
        timed = [s for s in self.sizes if self._rates[s]]
        return max(timed, key=lambda s: float(np.median(self._rates[s])), default=self.sizes[0])

    def size(self) -> int:
        """The size for the next calls: one not yet timed enough, a turn at
        exploring, or the best."""
        with self._lock:
            self._calls += 1
            return self._choose()

    def _choose(self) -> int:
        for s in self.sizes:
            if len(self._rates[s]) < self._FIRST:
                return s
        best = self._best()
        if self._calls % self._EXPLORE_EVERY:
            return best
        others = [s for s in self.sizes if s != best]
        return others[(self._calls // self._EXPLORE_EVERY) % len(others)] if others else best

    def observe(self, points: int, seconds: float) -> None:
        """Records a call of `points` points that took `seconds`, as one of the
        smallest size that holds it (a call of half that size or less, or of
        more than the largest size, says little of a size: not kept)."""
        size = next((s for s in self.sizes if s >= points), None)
        if size is not None and 2 * points > size and seconds > 0:
            with self._lock:
                self._rates[size].append(points / seconds)


def padded_batch(rows: int) -> int:
    """The batch size an XLA-compiled call runs `rows` rows at: the next power of two.

    XLA compiles a function once per input shape, and the IG engine's calls vary
    in size (refinement evaluates a few points at a time). Padding to powers of
    two bounds the compilations per process to log2(max rows) + 1 shapes, at
    most doubling the rows of a call; a power-of-two --path_batch_size is never padded.
    """
    return 1 << max(rows - 1, 0).bit_length()


# The fewest rows a model call runs. On CPUs a call of one row takes other kernels
# (a matrix-vector product) than the same row in a call of two or more, whose float
# sums differ in their last bits: F(x) of --batch_size 1 moved by 5e-7 of the logit
# on the bundled model and by 0.7% on a logit that is a small difference of large
# terms, while calls of 2 to 256 rows gave each row the same bits (docs/accuracy.md,
# section 7). A lone row runs with a zero row: about 10 ms more on the bundled model.
_MIN_CALL_ROWS = 2


def _call_rows(rows: int, jit: bool) -> int:
    """The rows a call of `rows` rows runs at: at least `_MIN_CALL_ROWS`, and
    `padded_batch(rows)` when XLA compiles the call; an empty call stays empty."""
    if rows == 0:
        return 0
    return max(padded_batch(rows) if jit else rows, _MIN_CALL_ROWS)


def _pad_rows(rows: int, jit: bool, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Zero rows appended up to `_call_rows(rows, jit)`; rows are independent, so
    the padding changes no real row's result."""
    extra = _call_rows(rows, jit) - rows
    if extra == 0:
        return arrays
    return tuple(np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)]) for a in arrays)


def _label_offset(reference, num_outputs, label_offset, num_dataset_classes) -> int:
    """Output index of dataset class 0: given, or ImageNet's (1 for 1001 outputs, a
    background class), else 0. A model of one output (a binary classifier's logit or
    sigmoid) scores no classes: a dataset of any number of classes is not read in its
    outputs, so it fits."""
    if label_offset is None:
        label_offset = labels.imagenet_label_offset(num_outputs) or 0
    if not 0 <= label_offset < num_outputs:
        raise ValueError(
            f"--label_offset {label_offset} does not fit --model {reference!r} with "
            f"{num_outputs} outputs; use 0 (or 1 for a background class at index 0)."
        )
    scored = num_outputs - label_offset
    if num_outputs > 1 and num_dataset_classes is not None and scored < num_dataset_classes:
        raise ValueError(
            f"--model {reference!r} has {num_outputs} outputs; with --label_offset "
            f"{label_offset} it scores {scored} class{'es' if scored != 1 else ''}, fewer "
            f"than the --dataset's {num_dataset_classes} classes (its labels are read as the "
            "model's classes): use a model that scores them"
            + (", or a smaller --label_offset." if label_offset else ".")
        )
    return label_offset


def known_outputs(model: ModelReference, label_offset: int | None = None) -> tuple[int, int] | None:
    """The outputs and label offset (--label_offset, else as `resolve_model` takes it) of
    a model of the known models' table (`KNOWN_SIGNATURES`: efficientnet_lite0,
    inception_v1), from the table alone: no TensorFlow, no file or network read. None for
    any other model: only its files tell its outputs.

    Raises:
      ValueError: the offset does not fit its outputs.
    """
    signature = KNOWN_SIGNATURES.get(model.location)
    if signature is None:
        return None
    outputs = signature.num_outputs
    return outputs, _label_offset(model.reference, outputs, label_offset, None)


def resolve_model(
    reference: str | ModelReference,
    image_size: int | None = None,
    input_range: tuple[float, float] | None = None,
    label_offset: int | None = None,
    num_dataset_classes: int | None = None,
    *,
    load: bool = True,
    handoff: ModelHandoff | None = None,
    jit_compile: bool | None = None,
) -> ModelSpec:
    """Learns the model's input size and outputs at launch, loading it if need be.

    Args:
      reference: the `--model` value, or its `model_reference`.
      image_size: the side of square images to feed a model whose signature leaves
        its size open; required for one that is not a known one or a TF1 Hub module
        that records its size (else 224 with a warning). A model that fixes its
        size is fed that (H x W: `ModelSpec.image_shape`), refusing another.
      input_range: overrides the pixel range; default (0, 255) for a Keras model
        whose first layer to change pixel values, or a SavedModel whose graph's first
        ops to, rescale 8-bit pixels (`model_input_range`), else (0, 1).
      label_offset: overrides the automatic offset (1 for 1001 outputs, else 0).
      num_dataset_classes: classes of the dataset, to check the offset fits.
      load: True loads the model and runs it on one black image. False (a launcher
        whose workers are elsewhere) takes the signature from the table of known
        models or the SavedModel's saved_model.pb when they give it, and loads
        only when they do not (or its graph draws random numbers, or may normalise
        by the batch's statistics, as in a branch a flag picks: whether its scores
        move, only a call tells).
      handoff: receives the loaded model, for a `Classifier` of this process.
      jit_compile: True (`--jit_compile on`) refuses a loaded model XLA cannot compile.

    Raises:
      ValueError: the model cannot be found or loaded, its input is not an
        image batch, its graph normalises by the batch's statistics (a SavedModel's
        BatchNormalization in training mode), or the offset does not fit its outputs.
    """
    model = reference if isinstance(reference, ModelReference) else model_reference(reference)
    default_range = input_range_for(model, input_range)  # a bad range: before any file
    check_remote_readable(model)
    check_saved_model_folder(model)
    check_batch_independent(model)
    signature = None if load else signature_without_loading(model)
    if signature is not None:
        learnt = _learnt_from_signature(
            model, signature, image_size, input_range, default_range, jit_compile
        )
    else:
        learnt = _learnt_by_loading(model, image_size, input_range, default_range, jit_compile)
    spec = _spec(model, learnt, label_offset, num_dataset_classes)
    if handoff is not None and learnt.obj is not None:
        handoff.offer(spec, learnt.obj)
    return spec


@dataclasses.dataclass(frozen=True)
class _Learnt:
    """What the launcher learnt of a model: its input `shape` (the signature's or
    the loaded model's), the (height, width) it is fed, its pixel range and number
    of outputs, and the loaded object (None when its signature told all)."""

    shape: Any
    image_size: tuple[int, int]
    input_range: tuple[float, float]
    num_outputs: int
    obj: Any = None


def _learnt_from_signature(
    model: ModelReference,
    signature: Any,
    image_size: int | None,
    given: tuple[float, float] | None,
    default_range: tuple[float, float],
    jit_compile: bool | None,
) -> _Learnt:
    """What the known models' table or saved_model.pb tell of a model not loaded; the
    range `given` (--input_range) or found in its graph's first ops to change pixel
    values, else `default_range`."""
    if jit_compile and signature.reference_variables:
        raise _xla_refusal(model.reference)
    input_range = model_input_range(model, None, given, default_range)
    shape, recorded = signature.input_shape, hub_side(signature.image_sides)
    size = image_size_for(model.reference, model.location, shape, image_size, recorded)
    if signature.num_outputs == 1:  # what the unloaded model tells of its probabilities
        warn_of_one_output(model.reference)
    return _Learnt(shape, size, input_range, signature.num_outputs)


def _learnt_by_loading(
    model: ModelReference,
    image_size: int | None,
    given: tuple[float, float] | None,
    default_range: tuple[float, float],
    jit_compile: bool | None,
) -> _Learnt:
    """What the loaded model tells, run on one black image; the range `given`
    (--input_range) or found in its first layer to change pixel values, else `default_range`."""
    obj = _load(model)
    if jit_compile and _holds_reference_variables(obj):
        raise _xla_refusal(model.reference)
    call, shape = callable_of(obj, model.reference)  # refusals before the range's log
    input_range = model_input_range(model, obj, given, default_range)
    recorded = None if fixes_size(shape) else side_taken(model, obj)
    size = image_size_for(model.reference, model.location, shape, image_size, recorded)
    keras_file = model.kind == "keras" and len(getattr(obj, "outputs", None) or []) == 1
    outputs = probe_outputs(model.reference, call, size, input_range, keras_file)
    warn_of_probabilities(model.reference, outputs, obj)  # of a model the job audits
    warn_of_low_precision(model.reference, narrow_float(obj, outputs))
    return _Learnt(shape, size, input_range, int(outputs.shape[1]), obj)


def _spec(model: ModelReference, learnt: _Learnt, label_offset, num_dataset_classes) -> ModelSpec:
    """The ModelSpec; a local path's location absolute, so that the manifest's names the
    model from any folder (the sanity check's reload), while `reference` stays as typed."""
    image_size, input_range, num_outputs = learnt.image_size, learnt.input_range, learnt.num_outputs
    label_offset = _label_offset(model.reference, num_outputs, label_offset, num_dataset_classes)
    return ModelSpec(
        reference=model.reference,
        kind=model.kind,
        location=os.path.abspath(model.location) if model.is_local_path else model.location,
        image_size=int(image_size[0]),
        input_range=(float(input_range[0]), float(input_range[1])),
        num_outputs=num_outputs,
        label_offset=int(label_offset),
        identity=model_identity(model),
        image_width=int(image_size[1]) if image_size[1] != image_size[0] else None,
        fixed_size=fixes_size(learnt.shape),
    )


_Key = tuple[str, str, str]
# Open hand-offs by token: how an unpickled `ModelHandoff` finds its launcher's.
_HANDOFFS: weakref.WeakValueDictionary[str, ModelHandoff] = weakref.WeakValueDictionary()


class ModelHandoff:
    """Hands the model object the launcher loaded to the first `Classifier` of the
    same model in this process, so that a local (DirectRunner) job loads it once.

    Lifetime: the launcher makes one per local job and passes it to `resolve_model`
    (which offers the object it loaded) and, through the `IGModelHandler`, to the
    job's `Classifier`s (the first of the same spec takes it); `release` drops an
    object nobody took when the job ends. It pickles as a token: unpickled in the
    launching process (the DirectRunner's in-process workers) it is the launcher's
    hand-off, anywhere else (remote or multi-process workers) an empty one, so
    those workers load their own model.
    """

    def __init__(self) -> None:
        self._token = secrets.token_hex(16)
        self._lock = threading.Lock()
        self._held: tuple[_Key, Any] | None = None
        _HANDOFFS[self._token] = self

    def __reduce__(self):
        return _handoff_for_token, (self._token,)

    def offer(self, spec: ModelSpec, obj: Any) -> None:
        """Keeps `obj`, the loaded model of `spec`, replacing any earlier one."""
        with self._lock:
            self._held = (_handoff_key(spec), obj)

    def take(self, spec: ModelSpec) -> Any | None:
        """The kept object if it is `spec`'s model (then no longer kept), else None."""
        with self._lock:
            if self._held is None or self._held[0] != _handoff_key(spec):
                return None
            obj, self._held = self._held[1], None
            return obj

    def release(self) -> None:
        """Drops the kept object if no `Classifier` took it."""
        with self._lock:
            self._held = None

    @property
    def holding(self) -> bool:
        """Whether an object is kept."""
        with self._lock:
            return self._held is not None


def _handoff_for_token(token: str) -> ModelHandoff:
    found = _HANDOFFS.get(token)
    return found if found is not None else ModelHandoff()


def _handoff_key(spec: ModelSpec) -> _Key:
    return spec.kind, spec.location, spec.identity


def _load_for(spec: ModelSpec, handoff: ModelHandoff | None) -> tuple[Any, bool]:
    """The model object, and whether it is the one the launcher loaded and probed."""
    obj = handoff.take(spec) if handoff is not None else None
    return (obj, True) if obj is not None else (_load(spec.model), False)


_SCORES = ("raw", "softmax")


def _holds_reference_variables(obj: Any) -> bool:
    """Whether a loaded TF1 SavedModel's signatures hold reference variables."""
    for function in getattr(obj, "signatures", {}).values():
        graph = getattr(function, "graph", None)
        if graph is not None and any(
            op.type in REFERENCE_VARIABLE_OPS for op in graph.get_operations()
        ):
            return True
    return False


_NO_XLA = "holds TF1 reference variables (VariableV2), which XLA cannot compile"


def _xla_refusal(reference: str) -> ValueError:
    return ValueError(
        f"--jit_compile on does not fit --model {reference!r}: it {_NO_XLA}; use "
        "--jit_compile off, or build its graph again after "
        "tf.compat.v1.enable_resource_variables() and export it."
    )


def _xla_settings(
    settings: DeviceSettings, jit_compile: bool | None, obj: Any, reference: str
) -> DeviceSettings:
    """`settings` without XLA for a model of TF1 reference variables, which XLA cannot
    compile (the calls would fail mid-run): said where `--jit_compile auto` chose it,
    refused where `--jit_compile on` asks for it."""
    if not settings.jit_compile or not _holds_reference_variables(obj):
        return settings
    if jit_compile:
        raise _xla_refusal(reference)
    _LOG.warning("Model %s %s: it runs without XLA (--jit_compile auto).", reference, _NO_XLA)
    return dataclasses.replace(settings, jit_compile=False)


def _compiled(functions: dict[str, Any], score: str) -> Any:
    """The compiled function of `score`, one of `_SCORES` (else a ValueError naming
    them, not a KeyError of the bare name)."""
    if score not in functions:
        raise ValueError(f"score must be one of {', '.join(_SCORES)}, got {score!r}.")
    return functions[score]


class Classifier:
    """A loaded model with graph-compiled forward and gradient functions."""

    def __init__(
        self,
        spec: ModelSpec,
        jit_compile: bool | None = None,
        handoff: ModelHandoff | None = None,
    ):
        """Loads `spec`'s model (or takes it from `handoff`) and compiles its functions.

        Args:
          spec: the model, as `resolve_model` resolved it.
          jit_compile: XLA on or off; None decides by device (`device_settings`).
          handoff: where the launcher left the model it loaded, if in this process.
        """
        self.spec = spec
        self._model, probed = _load_for(spec, handoff)  # keeps variables alive
        settings = device_settings(jit_compile)
        self.settings = _xla_settings(settings, jit_compile, self._model, spec.reference)
        call, _ = callable_of(self._model, spec.reference, announce=not probed)
        jit = self.settings.jit_compile
        # Calls of one row run as two; compiled functions get few distinct shapes
        # (see `_call_rows`).
        self._jit = bool(jit)
        size = spec.image_shape
        self._logits = _compile_logits(call, size, jit)
        if probed:  # by the launcher, in this process: the outputs alone, in their dtype
            outputs = _outputs_of(call, probe_images(size, spec.input_range))
        else:  # checked here: a launch that read only the model's saved_model.pb could not
            outputs = probe_outputs(spec.reference, call, size, spec.input_range)
        #: The model ends in a softmax: its outputs are the probabilities.
        self.outputs_probabilities = outputs_are_probabilities(outputs)
        soft = {s: self._softmax_of(s) for s in _SCORES}
        self._integrands = {s: _compile_integrand(call, size, jit, soft[s]) for s in _SCORES}
        self._grads = {s: _compile_score_and_grad(call, size, jit, soft[s]) for s in _SCORES}
        self._scores = {s: _compile_score(call, size, jit, soft[s]) for s in _SCORES}
        tuned = self.settings.tuned_sizes
        self.tuner = CallSizeTuner(tuned) if tuned else None

    def _softmax_of(self, score: str) -> bool:
        """Whether `score` takes a softmax of the outputs: `softmax`, unless they are
        probabilities already (then `softmax` and `raw` both attribute them)."""
        return score == "softmax" and not self.outputs_probabilities

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """float64 [N, outputs] class probabilities of the model's outputs: their
        softmax, or the outputs themselves when the model ends in a softmax."""
        outputs = np.asarray(outputs, np.float64)
        return outputs if self.outputs_probabilities else softmax(outputs)

    def _path_args(self, inputs, baselines, alphas, targets) -> tuple[int, tuple[np.ndarray, ...]]:
        args = (
            np.asarray(inputs, np.float32),
            np.asarray(baselines, np.float32),
            np.asarray(alphas, np.float32),
            np.asarray(targets, np.int64),
        )
        rows = len(args[0])
        return rows, _pad_rows(rows, self._jit, *args)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, H, W, 3] in the input range -> float32 [N, num_outputs]."""
        images = np.asarray(images, np.float32)
        rows = len(images)
        (images,) = _pad_rows(rows, self._jit, images)
        _count("forward", rows)
        return self._logits(images).numpy()[:rows]

    def score_grad_fn(self, score: str) -> ScoreGradFn:
        """The `ScoreGradFn` of `score` (`raw` or `softmax`), targets as output indices."""
        fn = _compiled(self._grads, score)

        def run(inputs, baselines, alphas, targets):
            rows, args = self._path_args(inputs, baselines, alphas, targets)
            scores, grads = fn(*args)
            _count("gradient", rows)
            return scores.numpy()[:rows], grads.numpy()[:rows]

        return run

    def integrand_fn(self, score: str, tuned: bool = False) -> IntegrandFn:
        """The `IntegrandFn` of `score`: the IG arithmetic (c, its sum, its finiteness)
        done in the graph, next to the gradients, which never leave TensorFlow.

        tuned: the function's `call_size` is `self.tuner`'s choice, which its
        calls' timings teach (`--path_batch_size auto` on CPUs).
        """
        fn = _compiled(self._integrands, score)
        tuner = self.tuner if tuned else None

        def run(images, references, index, alphas, targets):
            args = (
                np.asarray(images, np.float32),
                np.asarray(references, np.float32),
                np.asarray(index, np.int32),
                np.asarray(alphas, np.float32),
                np.asarray(targets, np.int64),
            )
            rows = len(args[2])
            # Padding points are cut off below; XLA pads the images too (its shapes).
            if self._jit:
                args = (*_pad_rows(len(args[0]), True, *args[:2]), *args[2:])
            args = (*args[:2], *_pad_rows(rows, self._jit, *args[2:]))
            start = time.perf_counter()
            outputs = fn(*args)
            if tuner:
                tuner.observe(rows, time.perf_counter() - start)
            _count("gradient", rows)
            # np.asarray: read-only views of TensorFlow's buffers, not copies.
            return tuple(np.asarray(out)[:rows] for out in outputs)

        if tuner:
            run.call_size = tuner.size
        return run

    def score_fn(self, score: str) -> ScoreFn:
        """The forward-only `ScoreFn` of `score`, for points whose gradient is not needed."""
        fn = _compiled(self._scores, score)

        def run(inputs, baselines, alphas, targets):
            rows, args = self._path_args(inputs, baselines, alphas, targets)
            _count("forward", rows)
            return fn(*args).numpy()[:rows]

        return run

    def weight_layers(self) -> list[str]:
        """Names of the model's layers that hold weights, from the output down.

        Raises:
          ValueError: the model is not a Keras model (a SavedModel or TF Hub model
            has variables but no layers to order).
        """
        import keras  # noqa: PLC0415

        if not isinstance(self._model, keras.Model):
            raise ValueError(
                f"--model {self.spec.reference!r} is a {self.spec.kind} model without Keras "
                "layers; layer randomisation needs the bundled model or a .keras file."
            )
        return [layer.name for layer in reversed(self._model.layers) if layer.weights]

    def randomize_layers(self, names: list[str], seed: int = 0) -> None:
        """Replaces, in place, each weight of the named layers by Gaussian noise with the
        trained weight's own mean and standard deviation (a re-initialisation at the
        trained scale; a weight whose values are all equal at `_constant_spread`),
        seeded by `seed` and the layer name; a weight never negative (a
        BatchNormalization's or Normalization's variance: `_never_negative`) by the
        noise's absolute value, as a negative variance makes every output NaN. The
        compiled functions read the new values."""
        known = self.weight_layers()
        for name in names:
            if name not in known:
                raise ValueError(f"No layer {name!r} with weights; the layers: {known}.")
            digest = hashlib.sha256(f"randomize:{seed}:{name}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            weights = self._model.get_layer(name).weights
            # Not keras.ops.convert_to_numpy: NumPy 2 warns of its __array__ call.
            values = [np.asarray(weight.numpy()) for weight in weights]
            for weight, value in zip(weights, values, strict=True):
                spread = value.std() if value.size else 0.0
                # min == max, not std == 0: float32 rounding gives 1/768's std as 1e-10.
                floating = np.issubdtype(value.dtype, np.floating)
                if value.size and floating and value.min() == value.max():
                    spread = _constant_spread(value, values)
                noise = rng.normal(value.mean() if value.size else 0.0, spread, value.shape)
                if value.size and _never_negative(weight, value):
                    noise = np.abs(noise)
                weight.assign(noise.astype(value.dtype))


def _never_negative(weight: Any, value: np.ndarray) -> bool:
    """Whether a weight must stay non-negative when randomised: a variance (a
    BatchNormalization's `moving_variance`, a Normalization's `variance`: known by
    its name, zeros included) or a weight whose values are all non-negative, not all
    zero (a zero bias has no sign to keep)."""
    name = str(getattr(weight, "path", None) or getattr(weight, "name", ""))
    return name.endswith("variance") or (value.min() >= 0 and value.max() > 0)


def _constant_spread(value: np.ndarray, layer: list[np.ndarray]) -> float:
    """The noise's standard deviation for a weight whose values are all equal (a zero
    bias, an untrained BatchNormalization's gamma of ones, a Dense(1)'s one bias),
    which has no spread of its own: the larger of its |value| (noise as large as the
    value, whatever its unit) and the root mean square of its layer's values (the
    scale its layer works at); where both are 0 (a layer of zeros), the Glorot-normal
    deviation of its shape, sqrt(2 / (fan_in + fan_out)), Keras's default kernel
    initialiser's, as a re-initialisation would draw."""
    floats = [v.astype(np.float64).ravel() for v in layer if np.issubdtype(v.dtype, np.floating)]
    rms = float(np.sqrt(np.mean(np.square(np.concatenate(floats)))))
    scale = max(abs(float(value.flat[0])), rms)
    if scale > 0 and np.isfinite(scale):
        return scale
    shape = value.shape
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in = shape[-2] * receptive if len(shape) > 1 else (shape[0] if shape else 1)
    fan_out = shape[-1] * receptive if shape else 1
    return float(np.sqrt(2.0 / (fan_in + fan_out)))


def _image_spec(size: tuple[int, int]):
    """float32 [N, H, W, 3] images, `size` (H, W)."""
    import tensorflow as tf  # noqa: PLC0415

    return tf.TensorSpec([None, *size, 3], tf.float32)


def _path_spec(size: tuple[int, int]) -> list:
    """inputs, baselines [N, H, W, 3] float32; alphas [N] float32; targets [N] int64."""
    import tensorflow as tf  # noqa: PLC0415

    image = _image_spec(size)
    return [image, image, tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int64)]


def softmax(outputs: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float64 [N, outputs]."""
    shifted = outputs - outputs.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _outputs_of(call, images: np.ndarray) -> np.ndarray:
    """The model's outputs on float32 images, in the dtype it returns them in (as
    `probe_outputs` gives them), not cast to float32."""
    import tensorflow as tf  # noqa: PLC0415

    return np.asarray(call(tf.constant(images)))


def _path_points(inputs, baselines, alphas):
    """x' + a (x - x') per row: [N, S, S, 3] from inputs and baselines [N, S, S, 3], alphas [N]."""
    return baselines + alphas[:, None, None, None] * (inputs - baselines)


def _target_scores(call, points, targets, take_softmax: bool):
    """Each row's target output, after a softmax over the outputs if `take_softmax`."""
    import tensorflow as tf  # noqa: PLC0415

    out = tf.cast(call(points), tf.float32)
    if take_softmax:
        out = tf.nn.softmax(out, axis=-1)
    return tf.gather(out, targets, axis=1, batch_dims=1)


def _compile_logits(call, size: tuple[int, int], jit: bool):
    import tensorflow as tf  # noqa: PLC0415

    @tf.function(input_signature=[_image_spec(size)], jit_compile=jit)
    def logits(images):
        return tf.cast(call(images), tf.float32)

    return logits


def _compile_score_and_grad(call, size: tuple[int, int], jit: bool, take_softmax: bool):
    import tensorflow as tf  # noqa: PLC0415

    @tf.function(input_signature=_path_spec(size), jit_compile=jit)
    def score_and_grad(inputs, baselines, alphas, targets):
        points = _path_points(inputs, baselines, alphas)
        with tf.GradientTape() as tape:
            tape.watch(points)
            scores = _target_scores(call, points, targets, take_softmax)
        # Rows are independent (inference mode), so the gradient of
        # the sum is each row's own gradient.
        return scores, tape.gradient(scores, points)

    return score_and_grad


def _compile_score(call, size: tuple[int, int], jit: bool, take_softmax: bool):
    import tensorflow as tf  # noqa: PLC0415

    @tf.function(input_signature=_path_spec(size), jit_compile=jit)
    def score_fn(inputs, baselines, alphas, targets):
        points = _path_points(inputs, baselines, alphas)
        return _target_scores(call, points, targets, take_softmax)

    return score_fn


def _integrand_spec(size: tuple[int, int]) -> list:
    """images, references [M, H, W, 3] float32; then per point: index int32, alphas
    float32, targets int64."""
    import tensorflow as tf  # noqa: PLC0415

    image = _image_spec(size)
    return [
        image,
        image,
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.int64),
    ]


def _compile_integrand(call, size: tuple[int, int], jit: bool, take_softmax: bool):
    import tensorflow as tf  # noqa: PLC0415

    @tf.function(input_signature=_integrand_spec(size), jit_compile=jit)
    def integrand(images, references, index, alphas, targets):
        delta = tf.gather(images - references, index)
        points = tf.gather(references, index) + alphas[:, None, None, None] * delta
        with tf.GradientTape() as tape:
            tape.watch(points)
            scores = _target_scores(call, points, targets, take_softmax)
        contribution = delta * tape.gradient(scores, points)
        finite = tf.math.is_finite(scores) & tf.reduce_all(
            tf.math.is_finite(contribution), axis=[1, 2, 3]
        )
        derivatives = tf.reduce_sum(contribution, axis=[1, 2, 3])
        return scores, derivatives, finite, contribution

    return integrand
