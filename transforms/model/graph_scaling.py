"""The scaling a SavedModel applies to its images first, read from its saved_model.pb.

The launcher reads it without loading the model, as it reads the signature, so that a
remote job decides the pixel range once, where its workers take it from: from the image
input of the function the job calls (`callable_of`: the `__call__`, else the
`serving_default` signature), through ops that pass the values on and into the
functions that calls run, to the first ops that change them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from transforms.model.loading import saved_model_proto
from transforms.model.signature import CalledFunction, called_function, value_inputs

__all__ = ["GraphScaling", "saved_model_scaling"]

# Ops whose output is their input (IdentityN: its k-th output is its k-th input), in
# value if not in type: a Cast to a float type (a model's float16) keeps a pixel's
# value (`_passes`).
_PASSING_OPS = frozenset(
    {
        "Identity",
        "IdentityN",
        "Cast",
        "EnsureShape",
        "StopGradient",
        "PreventGradient",
        "Snapshot",
        "CheckNumerics",
    }
)
# Ops that run a function of the library on their inputs (`f`), in order.
_CALL_OPS = frozenset({"PartitionedCall", "StatefulPartitionedCall"})
# Ops that read a tensor's shape alone (a Keras layer's dynamic shapes), not its values.
_SHAPE_OPS = frozenset({"Shape", "ShapeN", "Rank", "Size"})
# Ops that map x to a * x + b where their other input is a constant (`_affine`).
_AFFINE_OPS = frozenset({"Mul", "RealDiv", "Add", "AddV2", "Sub"})
# Ops whose value `_constant` computes where constants alone make their inputs, as
# TensorFlow does, elementwise (broadcasting as numpy does) in their inputs' dtype: a
# Keras Normalization's divisor, Maximum(Sqrt(variance), epsilon), a deviation kept as
# its log (Exp) or a variance's Pow of 0.5, a DivNoNan's safe reciprocal (0 where it
# divides by 0); the Reshape, ExpandDims, Squeeze, BroadcastTo and Cast of a constant's
# shape and dtype. Any other op ends the folding: no guess.
_FOLDED_UNARY = {
    "Sqrt": np.sqrt,
    "Rsqrt": lambda v: 1 / np.sqrt(v),
    "Reciprocal": np.reciprocal,
    "Neg": np.negative,
    "Square": np.square,
    "Exp": np.exp,
    "Log": np.log,
}
_FOLDED_BINARY = {
    "Add": np.add,
    "AddV2": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "RealDiv": np.divide,
    "Maximum": np.maximum,
    "Minimum": np.minimum,
    "Pow": np.power,
    "DivNoNan": lambda x, y: np.where(y == 0, 0, x / np.where(y == 0, 1, y)),
}
# Ops of a float tensor and an integer one (its new shape, or an axis) that change its
# shape alone, as numpy does: a shape or axis that does not fit raises ValueError.
_FOLDED_SHAPING = {
    "Reshape": lambda v, shape: np.reshape(v, shape),
    "ExpandDims": lambda v, axis: np.expand_dims(v, int(axis.item())),
    "BroadcastTo": lambda v, shape: np.broadcast_to(v, tuple(shape)),
}
# Bounds on a walk: steps through passing ops and calls, and affine ops composed (a
# Rescaling is 2, a mean's subtraction and a deviation's division 2 more).
_MOST_STEPS = 64
_MOST_AFFINE = 4
# Bound on the ops `_constant` folds into one value.
_MOST_FOLDED = 64


@dataclasses.dataclass(frozen=True, eq=False)
class GraphScaling:
    """What a SavedModel's first ops to change its images' values do to a pixel x:
    `scale` * x + `offset`, float64 arrays (scalars, or per channel, broadcasting as the
    ops did); `ops` (name, type) of each op in order."""

    scale: np.ndarray
    offset: np.ndarray
    ops: tuple[tuple[str, str], ...]

    def same_as(self, other: GraphScaling) -> bool:
        """The same map of pixel values (the ops may be named otherwise)."""
        return all(
            np.shape(a) == np.shape(b) and np.array_equal(a, b)
            for a, b in ((self.scale, other.scale), (self.offset, other.offset))
        )

    @property
    def named(self) -> str:
        """The ops as a log names them: "op 'mul' (Mul)", "ops 'mul' (Mul) and 'add' (AddV2)"."""
        names = [f"{name!r} ({op})" for name, op in self.ops]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        return f"op{'s' if len(names) > 1 else ''} {listed}"


class _Scope:
    """The nodes of a graph or of one function of its library, by name and by the
    tensors they read: (node or argument name, output index) -> [(node, input index)];
    `bound`: a function's arguments known to be given a tensor of another scope (its
    caller's input, a captured constant of the graph), as (that scope, its input)."""

    def __init__(
        self,
        nodes: Any,
        functions: dict[str, Any],
        bound: dict[str, tuple[_Scope, str]] | None = None,
    ):
        self.functions = functions
        self.nodes = {node.name: node for node in nodes}
        self.bound = bound or {}
        self._readers: dict[tuple[str, int], list[tuple[Any, int]]] = {}
        for node in nodes:
            for k, source in enumerate(node.input):
                if not source.startswith("^"):  # a control input reads no value
                    self._readers.setdefault(_tensor(source), []).append((node, k))

    def readers(self, tensor: tuple[str, int]) -> list[tuple[Any, int]]:
        """The nodes reading `tensor`'s values, with the input they read it as."""
        return [(n, k) for n, k in self._readers.get(tensor, []) if n.op not in _SHAPE_OPS]


def _tensor(source: str) -> tuple[str, int]:
    """(node or argument name, output index) of an input: `name` (output 0), a graph's
    `name:1`, or a function's `name:output_arg:1` (the index within that output)."""
    parts = source.split(":")
    return parts[0], int(parts[-1]) if len(parts) > 1 else 0


def _function_scope(
    name: str, functions: dict[str, Any], given: dict[int, tuple[_Scope, str]]
) -> tuple[_Scope, list[str]] | None:
    """The scope of the library's function `name` and its arguments' names, in order;
    `given`: what its k-th argument is given, by k (from the end where negative:
    `_Scope.bound`)."""
    function = functions.get(name)
    if function is None:
        return None
    args = [arg.name for arg in function.signature.input_arg]
    bound = {args[k]: source for k, source in given.items() if -len(args) <= k < len(args)}
    return _Scope(function.node_def, functions, bound), args


def _next_op(scope: _Scope, tensor: tuple[str, int]) -> tuple[_Scope, Any, int] | None:
    """The op that first changes the values of `tensor` of `scope`, its scope and the
    input it reads them as: through passing ops and into the functions calls run; None
    where no single op reads them (several, or none: a function that returns them)."""
    for _ in range(_MOST_STEPS):
        readers = scope.readers(tensor)
        if len(readers) != 1:
            return None
        ((node, k),) = readers
        if _passes(node):
            tensor = (node.name, k if node.op == "IdentityN" else 0)
        elif node.op in _CALL_OPS:
            given = {j: (scope, source) for j, source in enumerate(value_inputs(node))}
            called = _function_scope(node.attr["f"].func.name, scope.functions, given)
            if called is None or k >= len(called[1]):
                return None
            scope, tensor = called[0], (called[1][k], 0)
        else:
            return scope, node, k
    return None


def _passes(node: Any) -> bool:
    """Whether `node` passes its input's values on: a passing op, a Cast to a float type
    (one to integers rounds them)."""
    import tensorflow as tf  # noqa: PLC0415

    if node.op != "Cast":
        return node.op in _PASSING_OPS
    return tf.dtypes.as_dtype(node.attr["DstT"].type).is_floating


def _constant(scope: _Scope, source: str) -> np.ndarray | None:
    """The value of input `source` of `scope` where constants alone make it: a Const,
    through the arguments of functions bound to constants (a caller's, a capture) and
    ops of `_FOLDED_UNARY`, `_FOLDED_BINARY`, `_FOLDED_SHAPING`, Squeeze, Cast and
    passing ops, as float64;
    None for any other (a variable, a computed tensor, an op not folded, a value not
    finite)."""
    try:
        with np.errstate(all="ignore"):
            value = _folded(scope, source, {})
    except ValueError:  # shapes that do not broadcast or reshape: no value to guess
        return None
    if value is None or value.dtype.kind != "f" or not np.all(np.isfinite(value)):
        return None
    return value.astype(np.float64)


def _folded(scope: _Scope, source: str, seen: dict) -> np.ndarray | None:
    """`_constant`'s value of `source` in its own dtype, or None; `seen`: the values
    folded so far, by (scope, name), at most `_MOST_FOLDED` of them."""
    name, index = _tensor(source)
    while name in scope.bound and name not in scope.nodes:  # an argument given a tensor
        scope, source = scope.bound[name]
        name, index = _tensor(source)
    key = (id(scope), name)
    if key not in seen:
        node = scope.nodes.get(name)
        if node is None or index != 0 or len(seen) >= _MOST_FOLDED:
            return None  # an unbound argument, another output, or too many ops
        seen[key] = None  # a cycle folds to nothing
        seen[key] = _folded_op(scope, node, seen)
    return seen[key]


def _folded_op(scope: _Scope, node: Any, seen: dict) -> np.ndarray | None:
    """The value of `node`'s output 0 where it is a Const or an op `_folded` folds of
    folded inputs; None for any other."""
    import tensorflow as tf  # noqa: PLC0415

    if node.op == "Const":
        value = tf.make_ndarray(node.attr["value"].tensor)
        return value if value.dtype.kind in "fiu" else None
    arity = _arity(node.op)
    if arity is None:
        return None
    inputs = [_folded(scope, source, seen) for source in value_inputs(node)]
    if len(inputs) != arity or any(value is None for value in inputs):
        return None
    if node.op == "Cast":
        dtype = tf.dtypes.as_dtype(node.attr["DstT"].type)
        return inputs[0].astype(dtype.as_numpy_dtype) if dtype.is_floating else None
    if node.op in _FOLDED_SHAPING:
        shaping = _FOLDED_SHAPING[node.op]
        return shaping(*inputs) if inputs[1].dtype.kind in "iu" else None
    if node.op == "Squeeze":  # its dimensions of size 1 given, else all of them
        # `in` first: attr["squeeze_dims"] would add the key to the shared proto.
        given = node.attr["squeeze_dims"].list.i if "squeeze_dims" in node.attr else ()
        return np.squeeze(inputs[0], tuple(given) or None)
    if node.op in _PASSING_OPS:
        return inputs[0]
    if any(value.dtype.kind != "f" for value in inputs):
        return None  # arithmetic of floats alone, as on the model's pixels
    folds = _FOLDED_UNARY.get(node.op) or _FOLDED_BINARY[node.op]
    return np.asarray(folds(*inputs), inputs[0].dtype)


def _arity(op: str) -> int | None:
    """How many inputs an op `_folded_op` folds takes; None for any other op."""
    if op in _FOLDED_UNARY or op == "Squeeze" or (op in _PASSING_OPS and op != "IdentityN"):
        return 1
    return 2 if op in _FOLDED_BINARY or op in _FOLDED_SHAPING else None


def _affine(scope: _Scope, node: Any, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) where `node` maps its input k, x, to a * x + b: a Mul, RealDiv (of x by
    it), Add or Sub of a constant; None for any other op."""
    sources = value_inputs(node)
    if node.op not in _AFFINE_OPS or len(sources) != 2:
        return None
    c = _constant(scope, sources[1 - k])
    if c is None:
        return None
    one, zero = np.float64(1.0), np.float64(0.0)
    if node.op == "Mul":
        return c, zero
    if node.op == "RealDiv":  # c / x is no scaling of x
        return (1.0 / c, zero) if k == 0 and np.all(c != 0) else None
    if node.op == "Sub":
        return (one, -c) if k == 0 else (-one, c)
    return one, c


def _scaling_from(scope: _Scope, tensor: tuple[str, int]) -> GraphScaling | None:
    """The affine ops of constants that first change the values of `tensor`, composed;
    None where the first op to change them is any other."""
    scale, offset, ops = np.float64(1.0), np.float64(0.0), []
    found = _next_op(scope, tensor)
    while found is not None and len(ops) < _MOST_AFFINE:
        scope, node, k = found
        affine = _affine(scope, node, k)
        if affine is None:
            break
        a, b = affine
        scale, offset = a * scale, a * offset + b
        ops.append((node.name, node.op))
        found = _next_op(scope, (node.name, 0))
    return GraphScaling(np.asarray(scale), np.asarray(offset), tuple(ops)) if ops else None


def _call_inputs(meta: Any, node: Any) -> list[tuple[_Scope, tuple[str, int]]]:
    """The image input of each concrete function of a `__call__` that takes one tensor
    of 4 dimensions (or of any shape), as `callable_of` calls it: its first argument;
    its last arguments, its captures, bound to the graph's Const nodes they hold."""
    from tensorflow.python.saved_model import nested_structure_coder  # noqa: PLC0415

    functions = {f.signature.name: f for f in meta.graph_def.library.function}
    graph = _Scope(meta.graph_def.node, functions)
    inputs = []
    for name in node.function.concrete_functions:
        function = meta.object_graph_def.concrete_functions[name]
        args, kwargs = nested_structure_coder.decode_proto(function.canonicalized_input_signature)
        specs = [spec for spec in (*args, *kwargs.values()) if hasattr(spec, "shape")]
        if len(specs) != 1 or specs[0].shape.rank not in (None, 4):
            continue
        called = _function_scope(name, functions, _captures(meta, function, graph))
        if called is not None and called[1]:
            inputs.append((called[0], (called[1][0], 0)))
    return inputs


def _captures(meta: Any, function: Any, graph: _Scope) -> dict[int, tuple[_Scope, str]]:
    """What a concrete function's captured constants give its last arguments (one per
    bound input, in order), by their index from the end (-1 the last): the graph's
    Const each one names; its variables are not bound."""
    nodes, bound = meta.object_graph_def.nodes, list(function.bound_inputs)
    return {
        k - len(bound): (graph, nodes[node_id].constant.operation)
        for k, node_id in enumerate(bound)
        if nodes[node_id].WhichOneof("kind") == "constant"
    }


def _signature_input(meta: Any, name: str) -> list[tuple[_Scope, tuple[str, int]]]:
    """The image input of the signature `name` of `meta`, in its graph: [] where it has
    none or several inputs (loading refuses those)."""
    signature = meta.signature_def.get(name)
    if signature is None or len(signature.inputs) != 1:
        return []
    (tensor,) = signature.inputs.values()
    if tensor.WhichOneof("encoding") != "name":
        return []
    functions = {f.signature.name: f for f in meta.graph_def.library.function}
    return [(_Scope(meta.graph_def.node, functions), _tensor(tensor.name))]


def _image_inputs(called: CalledFunction | None) -> list[tuple[_Scope, tuple[str, int]]]:
    """Where the function the job calls (`called_function`) takes its images: each of
    a `__call__`'s concrete functions of images, else the signature's input; none for
    a TF1 Hub module."""
    if called is None or called.hub_module:
        return []
    if called.call is not None:
        return _call_inputs(called.meta, called.call)
    return _signature_input(called.meta, called.signature)


def saved_model_scaling(path: str) -> GraphScaling | None:
    """The map of pixel values x -> scale * x + offset the SavedModel at `path` starts
    with: the affine ops of constants (Mul, RealDiv, Add, Sub: a Keras Rescaling's, a
    Normalization's of constant statistics) that first change the images' values in
    the function the job calls, all its concrete functions of images agreeing; None
    where any starts otherwise (a convolution, a Normalization of variables), or for a
    TF1 Hub module."""
    called = called_function(path, saved_model_proto(path).meta_graphs)
    scalings = [_scaling_from(scope, tensor) for scope, tensor in _image_inputs(called)]
    if not scalings or scalings[0] is None:
        return None
    first = scalings[0]
    return first if all(s is not None and s.same_as(first) for s in scalings) else None
