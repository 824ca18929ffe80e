"""A model's signature without loading it: known models and a SavedModel's saved_model.pb."""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import numpy as np

from transforms.config import MAX_IMAGE_SIZE
from transforms.model.calls import scores_output
from transforms.model.loading import is_hub_module_folder, saved_model_proto, serving_tag_sets
from transforms.model.reference import HUB_ALIASES, ModelReference

__all__ = [
    "KNOWN_SIGNATURES",
    "CalledFunction",
    "REFERENCE_VARIABLE_OPS",
    "called_function",
    "check_batch_independent",
    "hub_image_sides",
    "meta_graph_loaded",
    "signature_without_loading",
    "value_inputs",
]

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Signature:
    """What the launcher needs of a model besides its files.

    Attributes:
      input_shape: [batch, height, width, channels], None where the model leaves it open.
      num_outputs: width of the output vector.
      image_sides: the (height, width) to use when `input_shape` leaves it open (None:
        not known).
      input_range: the pixel range the model takes (None: not known).
      reference_variables: its graph reads TF1 reference variables, which XLA cannot
        compile (`_holds_reference_variables` of the loaded model).
    """

    input_shape: tuple[int | None, ...] | None
    num_outputs: int
    image_sides: tuple[int, int] | None = None
    input_range: tuple[float, float] | None = None
    reference_variables: bool = False


# Known facts about named models, by location: a remote job's launcher learns their
# signature here instead of downloading (TF Hub) or converting (bundled) the model.
KNOWN_SIGNATURES: dict[str, _Signature] = {
    # The seed's Inception V1 takes any size, was trained at 224, and has a
    # background class at output 0; like every TF Hub image model, it takes [0, 1] pixels.
    HUB_ALIASES["inception_v1"]: _Signature(
        (None, None, None, 3), 1001, image_sides=(224, 224), input_range=(0.0, 1.0)
    ),
    # transforms.bundled.efficientnet_lite: 224x224 RGB in [0, 1] (normalised inside),
    # 1000 ImageNet logits out.
    "efficientnet_lite0": _Signature((None, 224, 224, 3), 1000, input_range=(0.0, 1.0)),
}


@dataclasses.dataclass(frozen=True)
class CalledFunction:
    """The function of a SavedModel `callable_of` calls, as its saved_model.pb tells
    (`called_function`): the one home of that choice for a launcher that reads the
    proto instead of loading the model.

    Attributes:
      meta: the MetaGraph loading takes.
      call: the object graph's `__call__` node (a function's) where the loaded root is
        callable; None where a signature is called instead.
      signature: else the key of that signature in `meta.signature_def`.
      tf1: a TF1 export (MetaGraphs of graphs, no object graph).
      hub_module: a TF1 Hub module (`is_hub_module_folder`).
    """

    meta: Any
    call: Any = None
    signature: str | None = None
    tf1: bool = False
    hub_module: bool = False


def called_function(path: str, metas: list) -> CalledFunction | None:
    """What `callable_of` calls of the SavedModel at `path` (its MetaGraphs `metas`, as
    `saved_model_proto` reads them), without loading it: the loaded root's `__call__`
    where it is callable, else its serving_default signature; of a TF1 export, that
    signature of the MetaGraph `hub.load` loads, else a TF1 Hub module's `default`
    one. None where there is none (loading decides or refuses)."""
    if len(metas) == 1 and metas[0].object_graph_def.nodes:
        meta, graph = metas[0], metas[0].object_graph_def
        children = {child.local_name: child.node_id for child in graph.nodes[0].children}
        if "__call__" in children:  # the loaded root is callable
            node = graph.nodes[children["__call__"]]
            return CalledFunction(meta, call=node) if node.HasField("function") else None
        found = "serving_default" in meta.signature_def
        return CalledFunction(meta, signature="serving_default") if found else None
    hub_module = is_hub_module_folder(path)  # no object graph: a TF1 graph's export
    meta = meta_graph_loaded(metas, hub_module)
    if meta is None:
        return None
    keys = ("serving_default", "default") if hub_module else ("serving_default",)
    key = next((key for key in keys if key in meta.signature_def), None)
    if key is None:
        return None  # loading refuses it, naming its signatures
    return CalledFunction(meta, signature=key, tf1=True, hub_module=hub_module)


def _saved_model_signature(path: str) -> _Signature | None:
    """The signature `callable_of` finds in the SavedModel at `path`, read from its
    saved_model.pb without restoring any variable; None when the proto leaves the
    input or output width open or ambiguous (the model is then loaded instead)."""
    called = called_function(path, saved_model_proto(path).meta_graphs)
    if called is None:
        return None
    if called.call is not None:
        found = _function_signature(called.meta.object_graph_def, called.call)
    elif called.tf1:
        found = _tf1_signature(called)
    else:
        found = _signature_def_signature(called.meta.signature_def[called.signature])
    if found is not None and _loading_tells(_bodies_called(called)):
        return None  # whether its scores move, only a call tells (loading)
    return found


def _loading_tells(bodies: list[_Body]) -> bool:
    """Whether only a call tells if the function of `bodies` scores an image by itself
    alone: it draws random numbers, or may normalise by the batch's statistics (where
    it surely does, `check_batch_independent` refuses it first)."""
    ops = {node.op for body in bodies for node in body.nodes.values()}
    random = any(_RANDOM_OPS.search(op) for op in ops)
    return random or any(_batch_statistics(body) for body in bodies)


def check_batch_independent(model: ModelReference) -> None:
    """Refuses a SavedModel whose called function (`called_function`) normalises the
    images by their batch's statistics (`_batch_statistics`, surely): a
    BatchNormalization in training mode scores an image by the other images of its
    batch, and the path points IG sums over by those sharing its calls. Any other
    model, or a proto this cannot read, is left to loading.

    Raises:
      ValueError: naming the model, the op and the export that fits.
    """
    if model.kind != "saved_model":
        return
    try:
        called = called_function(model.location, saved_model_proto(model.location).meta_graphs)
        found = _sure_batch_statistics(called) if called is not None else None
    except Exception as e:  # an odd proto: loading settles it, or reports why
        _LOG.info("Could not read the ops of %s without loading it: %s", model.reference, e)
        return
    if found is not None:
        raise ValueError(_batch_statistics_refusal(model.reference, *found))


def _sure_batch_statistics(called: CalledFunction) -> tuple[_Body, Any] | None:
    """The first op (and its body) of the function `called` that surely normalises by
    the batch's statistics (`_batch_statistics`); None where none does."""
    for body in _bodies_called(called):
        found = _batch_statistics(body)
        if found is not None and found[1]:
            return body, found[0]
    return None


def _batch_statistics_refusal(reference: str, body: _Body, node: Any) -> str:
    """Why a model whose op `node` (of `body`) normalises by the batch is refused."""
    where = f" of function {body.function!r}" if body.function and "/" not in node.name else ""
    return (
        f"--model {reference!r} scores an image by the other images of its batch: its op "
        f"{node.name!r} ({node.op}{where}) normalises by the batch's own statistics, as a "
        "BatchNormalization in training mode does; Integrated Gradients needs an image's "
        "scores to depend on it alone: export it calling the model with training=False "
        "(in inference mode)."
    )


# Ops that draw random numbers (stateful, or stateless of a seed that may change): a
# Dropout's, a RandomFlip's or RandomRotation's, which Keras 3's model.export keeps on.
_RANDOM_OPS = re.compile(r"Random|TruncatedNormal|Multinomial|^StatefulUniform|^StatefulStandard")
# A BatchNormalization's fused ops, which normalise by the batch's own statistics where
# is_training (its default, which a SavedModel strips from the proto) is true.
_FUSED_BATCH_NORMS = frozenset({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"})
# Ops after which, anywhere between the images and a tensor, its axis 0 may not be the
# batch's: they move the batch's axis (a sequence-first layout) or take an element of it
# (a tf.map_fn's image, an unstacked or gathered one).
_AXIS_MOVING_OPS = frozenset(
    {"Transpose", "ConjugateTranspose", "Einsum", "Unpack", "Gather", "GatherV2"}
    | {"TensorListGetItem", "TensorArrayReadV3"}
)
# Ops that lay a tensor out anew (or move its axes, `_AXIS_MOVING_OPS`), or slice it:
# just before a normalisation, which of its axes holds the batch, if any, only a call
# tells (tf_keras's LayerNormalization reshapes each image's rows into channels).
_LAYOUT_OPS = _AXIS_MOVING_OPS | {"Reshape", "ExpandDims", "Squeeze", "StridedSlice"}
# Attributes of the functions a cond runs one of (If, StatelessIf, Case): a flag decides.
_BRANCH_ATTRS = frozenset({"then_branch", "else_branch", "branches"})


@dataclasses.dataclass(frozen=True)
class _Body:
    """The nodes of the graph, or of one function of its library (`function`: its
    name), that the called function runs, by name; `values`: the function's arguments
    that hold values (not a variable's handle); `branch`: run by a cond (a branch of
    an If or Case, or a TF1 graph's Switch), which a flag may decide."""

    nodes: dict[str, Any]
    values: frozenset[str] = frozenset()
    function: str | None = None
    branch: bool = False


def _bodies_called(called: CalledFunction) -> list[_Body]:
    """The graph's nodes the function `called` runs (its signature's outputs read
    them), and the library's functions it calls, those they call too (through any
    function attribute: a call's, a loop's body, a branch)."""
    meta = called.meta
    if called.call is not None:
        traces = _traces_called(meta.object_graph_def, called.call.function)
        bodies, todo = [], [(name, False) for name in traces]
    else:
        outputs = meta.signature_def[called.signature].outputs.values()
        nodes = {n.name: n for output in outputs for n in _nodes_reaching(meta.graph_def, output)}
        switched = any(node.op in ("Switch", "RefSwitch") for node in nodes.values())
        bodies = [_Body(nodes, branch=switched)]
        todo = [(name, switched) for node in nodes.values() for name in _functions_of(node)]
    import tensorflow as tf  # noqa: PLC0415

    functions = {f.signature.name: f for f in meta.graph_def.library.function}
    resource, seen = tf.resource.as_datatype_enum, set()
    while todo:
        name, branch = todo.pop()
        if (name, branch) in seen or name not in functions:
            continue
        seen.add((name, branch))
        function = functions[name]
        values = [a.name for a in function.signature.input_arg if a.type != resource]
        body = _Body({n.name: n for n in function.node_def}, frozenset(values), name, branch)
        bodies.append(body)
        for node in function.node_def:
            for key, attr in node.attr.items():
                inner = branch or key in _BRANCH_ATTRS
                todo += [(f.name, inner) for f in (attr.func, *attr.list.func) if f.name]
    return bodies


def _batch_statistics(body: _Body) -> tuple[Any, bool] | None:
    """(node, sure) of a node of `body` that may normalise a tensor of the images by
    their batch's own statistics, the first sure one where there is one: a
    FusedBatchNorm in training mode (is_training true, or left out: its default),
    tf.nn.moments over the batch (`_batch_moments`: a Keras 3 or non-fused
    BatchNormalization's), or any other Mean over it (`_over_batch`: a hand-written
    standardisation, tf.math.reduce_std's); None where it has none. Sure, of the first
    two, over axis 0, outside any cond, of a tensor not laid out anew (`_LAYOUT_OPS`)
    just before, nor computed by an op that moves the batch's axis (`_AXIS_MOVING_OPS`):
    tf_keras's LayerNormalization reshapes each image's rows into a FusedBatchNorm's
    channels, tf.map_fn's function has an image, not the batch."""
    found = None
    for node in body.nodes.values():
        if node.op in _FUSED_BATCH_NORMS:
            training = "is_training" not in node.attr or node.attr["is_training"].b
            x, normalising, axis_0 = (
                (value_inputs(node)[0], node, True) if training else (None,) * 3
            )
        elif node.op == "SquaredDifference":
            x, normalising, axis_0 = _batch_moments(body, node)
        elif node.op == "Mean" and _over_batch(body, node) is not None:
            x, normalising, axis_0 = value_inputs(node)[0], node, False
        else:
            continue
        ops = None if x is None else _of_images(body, x)
        if ops is not None:
            moved = _laid_out(body, x) or bool(ops & _AXIS_MOVING_OPS)
            sure = axis_0 and not body.branch and not moved
            if sure:
                return normalising, True
            found = found or (normalising, False)
    return found


def _laid_out(body: _Body, source: str) -> bool:
    """Whether input `source` of `body` comes straight (through passing ops) of an op
    that lays a tensor out anew or takes a part of it (`_LAYOUT_OPS`), after which the
    batch's axis is not known."""
    node = body.nodes.get(_name(source))
    while node is not None and node.op in ("Identity", "Cast", "StopGradient"):
        node = body.nodes.get(_name(value_inputs(node)[0]))
    return node is not None and node.op in _LAYOUT_OPS


def _batch_moments(body: _Body, difference: Any) -> tuple[str | None, Any, bool]:
    """(x, its Mean, whether axis 0 is among its axes) where `difference` is
    SquaredDifference(x, Mean(x)), the variance (through a StopGradient, as
    tf.nn.moments has it), of a Mean over the batch (`_over_batch`); else (None, None,
    False)."""
    sources = value_inputs(difference)
    mean = body.nodes.get(_name(sources[1])) if len(sources) == 2 else None
    while mean is not None and mean.op in ("StopGradient", "Identity") and mean.input:
        mean = body.nodes.get(_name(value_inputs(mean)[0]))
    if mean is None or mean.op != "Mean" or value_inputs(mean)[:1] != sources[:1]:
        return None, None, False
    over = _over_batch(body, mean)
    return (None, None, False) if over is None else (sources[0], mean, over)


def _over_batch(body: _Body, mean: Any) -> bool | None:
    """Whether the Mean `mean` of `body` reduces axis 0, the batch's (True), or else a
    negative axis but -1 (False: it counts back from a rank the proto does not give, -4
    is the batch's of images; -1 is the batch's only of a tensor of one value per image,
    and Keras 3's LayerNormalization's axis); None where neither, or its axes are not a
    constant."""
    axes = body.nodes.get(_name(value_inputs(mean)[-1]))
    if axes is None or axes.op != "Const" or len(value_inputs(mean)) != 2:
        return None
    import tensorflow as tf  # noqa: PLC0415

    held = np.ravel(tf.make_ndarray(axes.attr["value"].tensor))
    return True if 0 in held else (False if np.any(held < -1) else None)


def _of_images(body: _Body, source: str) -> set[str] | None:
    """The op types of the nodes input `source` of `body` is computed by (their inputs,
    and theirs) where its values come of the images: of a value argument of its function
    (not a variable's handle) or a TF1 graph's Placeholder (not a variable's value, not a
    constant alone); None where they do not."""
    todo, seen, ops, images = [_name(source)], set(), set(), False
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        node = body.nodes.get(name)
        if node is None:
            images = images or name in body.values
        elif node.op == "Placeholder":
            images = True
        else:
            ops.add(node.op)
            todo += [_name(source) for source in value_inputs(node)]
    return ops if images else None


def _name(source: str) -> str:
    """The node or argument an input reads: `name`, `name:1`, `name:output:0`."""
    return source.split(":")[0]


def value_inputs(node: Any) -> list[str]:
    """The inputs of a graph's `node` that give it values, in order (not its control
    inputs)."""
    return [source for source in node.input if not source.startswith("^")]


def _traces_called(graph: Any, function: Any) -> list[str]:
    """The concrete functions of a saved `__call__` (`function`, a node of the object
    `graph`) that `callable_of`'s call runs: it passes the images alone, so the restored
    function runs a trace whose further arguments hold their defaults (a tf_keras
    model's training=False trace, not its training=True one of a Dropout's random op).
    All of them where none does: loading then decides."""
    from tensorflow.python.saved_model import nested_structure_coder  # noqa: PLC0415

    spec = nested_structure_coder.decode_proto(function.function_spec.fullargspec)
    names = spec.args[1:] if function.function_spec.is_method else spec.args
    given = spec.defaults or ()
    defaults = dict(zip(names[len(names) - len(given) :], given, strict=True))
    defaults.update(spec.kwonlydefaults or {})
    called = []
    for name in function.concrete_functions:
        coded = graph.concrete_functions[name].canonicalized_input_signature
        args, kwargs = nested_structure_coder.decode_proto(coded)
        if len(args) > len(names):
            continue
        further = {**dict(zip(names[1 : len(args)], args[1:], strict=True)), **kwargs}
        if all(_holds_default(defaults, key, value) for key, value in further.items()):
            called.append(name)
    return called or list(function.concrete_functions)


def _holds_default(defaults: dict[str, Any], key: str, value: Any) -> bool:
    """Whether a trace's argument `key` holds the value a call that leaves it out gives
    it (a tensor's spec holds none: the call passes no tensor there)."""
    return key in defaults and not hasattr(value, "shape") and value == defaults[key]


def _functions_of(node: Any) -> list[str]:
    """The names of the library functions a node's attributes name."""
    attrs = node.attr.values()
    return [f.name for attr in attrs for f in (attr.func, *attr.list.func) if f.name]


def _function_signature(graph, node) -> _Signature | None:
    """Input shape of the first 4-D concrete function (as `callable_of`) and the output
    width all concrete functions agree on; None for a function of further tensors
    (`callable_of` calls it on the images alone: loading reports what it lacks)."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow.python.saved_model import nested_structure_coder  # noqa: PLC0415

    shape, widths = None, set()
    for name in node.function.concrete_functions:
        function = graph.concrete_functions[name]
        args, kwargs = nested_structure_coder.decode_proto(function.canonicalized_input_signature)
        specs = [spec for spec in (*args, *kwargs.values()) if hasattr(spec, "shape")]
        if len(specs) > 1:
            return None
        if shape is None and specs and specs[0].shape.rank == 4:
            if specs[0].dtype != tf.float32:
                return None
            shape = tuple(specs[0].shape)
        output = nested_structure_coder.decode_proto(function.output_signature)
        widths.add(_width(getattr(output, "shape", None)))
    if shape is None or len(widths) != 1 or None in widths:
        return None
    return _Signature(shape, widths.pop())


def _signature_def_signature(signature, key: str | None = None) -> _Signature | None:
    """Input shape and output width of a serving signature, for its output `key` or else
    the one `callable_of` picks (`scores_output`); None where loading must decide or refuse
    (several inputs, one not float32 or not a plain tensor, undecided outputs)."""
    import tensorflow as tf  # noqa: PLC0415

    if len(signature.inputs) != 1:
        return None  # loading reports the several inputs
    (tensor,) = signature.inputs.values()
    key = key or scores_output(signature.outputs)
    if tensor.dtype != tf.float32.as_datatype_enum or key is None:
        return None  # loading refuses several outputs that do not decide
    if any(t.WhichOneof("encoding") != "name" for t in (tensor, signature.outputs[key])):
        return None  # a sparse or composite tensor: loading tells what it is
    width = _width(tf.TensorShape(signature.outputs[key].tensor_shape))
    shape = tf.TensorShape(tensor.tensor_shape)
    if width is None or shape.rank is None:
        return None
    return _Signature(tuple(shape), width)


# Ops of a TF1 graph's tf.while_loop (control flow v1), whose gradient TensorFlow 2
# cannot take in a loaded SavedModel (`_V1_LOOP_ERROR`); its tf.cond's (Switch, Merge)
# has one.
_V1_LOOP_OPS = frozenset({"Enter", "RefEnter", "Exit", "RefExit", "NextIteration", "LoopCond"})


def _tf1_signature(called: CalledFunction) -> _Signature | None:
    """`_signature_def_signature` of the signature `callable_of` calls in a TF1 export
    (`called_function`), for a TF1 Hub module's `default` signature of its `default`
    output where it has one; None where loading must decide or refuse (a v1 while loop
    on the way to the scores: whether its gradient can be taken, only loading tells)."""
    meta, hub_module = called.meta, called.hub_module
    signature = meta.signature_def[called.signature]
    hub_default = hub_module and called.signature == "default"
    outputs = signature.outputs
    key = "default" if hub_default and "default" in outputs else scores_output(outputs)
    found = _signature_def_signature(signature, key)
    if found is None:
        return None
    ops = _ops_reaching(meta.graph_def, outputs[key])
    if ops & _V1_LOOP_OPS:
        return None
    return dataclasses.replace(
        found,
        image_sides=hub_image_sides(meta) if hub_module else None,
        reference_variables=bool(ops & REFERENCE_VARIABLE_OPS),
    )


def meta_graph_loaded(metas: list, hub_module: bool) -> Any | None:
    """The MetaGraph `load_model` loads (`_serving_tags`; a TF1 Hub module's is tagged []),
    None where there is none or loading refuses the choice."""
    tag_sets = [sorted(meta.meta_info_def.tags) for meta in metas]
    if hub_module:
        wanted = [[]]
    elif len(metas) == 1:
        return metas[0]
    else:
        wanted = serving_tag_sets(tag_sets)
    chosen = [meta for meta, tags in zip(metas, tag_sets, strict=True) if tags in wanted]
    return chosen[0] if len(chosen) == 1 else None


# Where TF Hub's TF1 format (hub.Module's exports) keeps the messages attached to a
# module: in each MetaGraph's collection of this name, as serialized ModuleAttachment
# protos {1: key, 2: value} (tensorflow_hub's saved_model_lib); an image module's
# ImageModuleInfo {1: default_image_size {1: height, 2: width}} under this key
# (image_util, whose get_expected_image_size reads it before the input's shape).
_HUB_ATTACHMENTS = "hub_module_attachments"
_IMAGE_MODULE_INFO = b"image_module_info"


def hub_image_sides(meta: Any) -> tuple[int, int] | None:
    """The (height, width) of the images a TF1 Hub module's MetaGraph records as its
    expected input size, square or not; None where it records none or one beyond the
    job's bound."""
    if _HUB_ATTACHMENTS not in meta.collection_def:
        return None
    for attachment in meta.collection_def[_HUB_ATTACHMENTS].bytes_list.value:
        fields = _proto_fields(attachment)
        if fields.get(1) == [_IMAGE_MODULE_INFO]:
            info = _proto_fields(fields.get(2, [b""])[-1])
            size = _proto_fields(info.get(1, [b""])[-1])
            height, width = size.get(1, [0])[-1], size.get(2, [0])[-1]
            fits = 0 < min(height, width) <= max(height, width) <= MAX_IMAGE_SIZE
            return (height, width) if fits else None
    return None


def _proto_fields(data: bytes) -> dict[int, list[int | bytes]]:
    """A serialized protobuf message's fields by number, in order: varints as ints,
    length-delimited ones as bytes; fixed-width ones skipped. Enough for the small
    messages of TF Hub's TF1 format, whose classes tensorflow_hub no longer ships.

    Raises:
      ValueError: `data` is not a protobuf message.
    """
    fields: dict[int, list[int | bytes]] = {}
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire in (1, 5):  # 64- and 32-bit fixed width
            at += 8 if wire == 1 else 4
            continue
        if wire not in (0, 2):
            raise ValueError(f"wire type {wire} of field {number}")
        value, at = _varint(data, at)
        if wire == 2:
            value, at = data[at : at + value], at + value
        fields.setdefault(number, []).append(value)
    if at != len(data):
        raise ValueError("a field runs past the message's end")
    return fields


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at `data[at:]` and the index after it."""
    value = shift = 0
    for index in range(at, len(data)):
        value |= (data[index] & 0x7F) << shift
        shift += 7
        if data[index] < 0x80:
            return value, index + 1
    raise ValueError("a varint runs past the message's end")


def _ops_reaching(graph_def: Any, output: Any) -> set[str]:
    """The op types of `_nodes_reaching` `output`."""
    return {node.op for node in _nodes_reaching(graph_def, output)}


def _nodes_reaching(graph_def: Any, output: Any) -> list[Any]:
    """The nodes of `graph_def` that `output` (a TensorInfo) reads, through inputs and
    control inputs: those of the function loading makes of it, which keeps them alone."""
    nodes = {node.name: node for node in graph_def.node}
    todo, seen = [output.name.split(":")[0]], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        todo += [source.lstrip("^").split(":")[0] for source in nodes[name].input]
    return [nodes[name] for name in seen]


def _width(shape) -> int | None:
    """K of a [batch, K] output shape; None for any other or an open K."""
    if shape is None or shape.rank != 2 or shape[1] is None:
        return None
    return int(shape[1])


def signature_without_loading(model: ModelReference) -> _Signature | None:
    """From the table of known models or the SavedModel's proto; None if neither knows."""
    signature = KNOWN_SIGNATURES.get(model.location)
    if signature is None and model.kind == "saved_model":
        try:
            signature = _saved_model_signature(model.location)
        except Exception as e:  # an odd proto: loading the model settles it, or reports why
            _LOG.info(
                "Could not read the signature of %s without loading it: %s", model.reference, e
            )
    if signature is not None:
        _LOG.info(
            "Signature of %s read without loading it: input %s, %d outputs.",
            model.reference,
            signature.input_shape,
            signature.num_outputs,
        )
    return signature


# TF1's reference variables, the default before TF2: ops XLA has no kernel for.
REFERENCE_VARIABLE_OPS = frozenset({"Variable", "VariableV2"})
