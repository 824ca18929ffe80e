"""TF1-style SavedModels (written by tf.compat.v1.saved_model.Builder in graph mode, as
models exported long ago were) and TF Hub's TF1 format, run through the job."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.__main__ import main
from tests.conftest import SIZE, cli_args

CLASSES = 5


def _graph(
    tf,
    dtype=None,
    scale: float = 1.0,
    loop: bool = False,
    examples: bool = False,
    side: int | tuple[int, int] | None = SIZE,
    saturate: bool = False,
):
    """images [N, side, side, 3] of `dtype` (float32) -> logits [N, CLASSES] of the
    images as floats times `scale`: a conv, a mean, a dense, in variables (as a TF1
    export holds them), seeded; `loop`: the images pass a tf.while_loop that keeps them;
    `examples`: the input is serialized tf.Example records [N] holding the images as
    `image`, parsed in the graph, as an Estimator's parsing serving_input_receiver_fn
    exports it; `side` None: images of any size, (height, width): a non-square input;
    `saturate`: they pass
    tf.image.adjust_saturation, an op TF has no gradient for."""
    v1 = tf.compat.v1
    rng = np.random.default_rng(5)
    if examples:
        images = v1.placeholder(tf.string, [None], name="input_example_tensor")
        image = tf.io.FixedLenFeature([SIZE, SIZE, 3], tf.float32)
        parsed = tf.io.parse_example(images, {"image": image})["image"]
    else:
        shape = [None, *(side if isinstance(side, tuple) else (side, side)), 3]
        images = parsed = v1.placeholder(dtype or tf.float32, shape, name="input")
    pixels = tf.cast(parsed, tf.float32) * scale
    if loop:
        _, pixels = tf.while_loop(lambda i, x: i < 2, lambda i, x: (i + 1, x), [0, pixels])
    if saturate:
        pixels = tf.image.adjust_saturation(pixels, 2.0)
    kernel = v1.get_variable("conv", initializer=rng.normal(size=(3, 3, 3, 4)).astype("f4"))
    dense = v1.get_variable("dense", initializer=rng.normal(size=(4, CLASSES)).astype("f4"))
    hidden = tf.reduce_mean(tf.nn.relu(tf.nn.conv2d(pixels, kernel, 1, "SAME")), [1, 2])
    return images, tf.identity(hidden @ dense, name="logits")


def _tf1_saved_model(
    path, tag_sets: list[list[str]], name: str | tuple[str, ...] = "serving_default", **graph
) -> str:
    """A TF1 SavedModel of `_graph(**graph)`, one MetaGraph per tag set, each with a
    signature `name` (or one of each name) {images} -> {logits}."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        images, logits = _graph(tf, **graph)
        session.run(v1.global_variables_initializer())
        builder = v1.saved_model.Builder(str(path))
        signature = v1.saved_model.predict_signature_def({"images": images}, {"logits": logits})
        signatures = dict.fromkeys([name] if isinstance(name, str) else name, signature)
        builder.add_meta_graph_and_variables(session, tag_sets[0], signature_def_map=signatures)
        for tags in tag_sets[1:]:
            builder.add_meta_graph(tags, signature_def_map=signatures)
        builder.save()
    return str(path)


def _tf1_logits(
    model: str, tags: list[str], images: np.ndarray, name: str = "serving_default"
) -> np.ndarray:
    """The logits of the model's signature `name`, run as TF1 ran it: in a Session."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        meta = v1.saved_model.loader.load(session, tags, model)
        signature = meta.signature_def[name]
        return session.run(
            signature.outputs["logits"].name, {signature.inputs["images"].name: images}
        )


def _run(image_folder, model: str, output, *extra: str) -> int:
    args = cli_args(
        runner="DirectRunner",
        dataset=image_folder["root"],
        model=model,
        output=output,
        steps=4,
        faithfulness="none",
    )
    return main([*args, *extra])


def _check_rows(image_folder, output, logits_of) -> None:
    """The rows' classes and scores are the model's own on the images the job fed it
    (16x16 already, so only scaled to [0, 1]); their attributions are finite."""
    rows = pd.read_parquet(output / "results").set_index("image_id")
    ids = sorted(image_folder["pixels"])
    images = np.stack([image_folder["pixels"][i] for i in ids]).astype(np.float32) / 255
    logits = logits_of(images)
    assert rows.loc[ids, "predicted_class"].tolist() == logits.argmax(1).tolist()
    np.testing.assert_allclose(rows.loc[ids, "target_score"], logits.max(1), rtol=1e-5)
    assert all(np.isfinite(np.asarray(a)).all() for a in rows["attributions"])


def test_a_tf1_saved_model_of_serve_and_train_graphs_is_audited_on_its_serve_one(
    image_folder, tmp_path, capsys
):
    """A TF1 export holding a `train` MetaGraph beside the `serve` one was refused with
    TF's advice to pass `tags=`, which no flag of the job does: it is audited on the
    `serve` graph, as TF Serving runs it."""
    model = _tf1_saved_model(tmp_path / "model", [["serve"], ["train"]])
    assert _run(image_folder, model, tmp_path / "out") == 0, capsys.readouterr().err
    _check_rows(image_folder, tmp_path / "out", lambda x: _tf1_logits(model, ["serve"], x))


def test_a_tf1_saved_model_of_several_graphs_none_for_serving_is_refused_naming_them(
    image_folder, tmp_path, capsys
):
    model = _tf1_saved_model(tmp_path / "model", [["train"], ["eval"]])
    assert _run(image_folder, model, tmp_path / "out") == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == (
        f"error: --model '{model}' holds 2 MetaGraphs, tagged ['train'], ['eval'], and the job "
        "loads its only one or the one tagged 'serve': save the graph that scores images "
        "alone, tagged 'serve'."
    ), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "tag_sets",
    [[["serve", "gpu"], ["serve"]], [["train"]]],
    ids=["serve-alone-beside-serve-gpu", "only-graph-tagged-train"],
)
def test_a_tf1_saved_model_loads_its_serve_alone_graph_or_its_only_one(tag_sets, tmp_path):
    """Of several MetaGraphs tagged `serve` (a CPU and a GPU one), the one tagged `serve`
    alone is loaded, as TF Serving picks it; a SavedModel of one MetaGraph is loaded
    whatever its tags, as hub.load loads it. Neither is refused as ambiguous."""
    from transforms.tf_model import model_reference, resolve_model

    model = _tf1_saved_model(tmp_path / "model", tag_sets)
    assert resolve_model(model_reference(model)).num_outputs == CLASSES


@pytest.mark.parametrize("export", ["tf2", "tf1"])
def test_a_saved_model_of_one_graph_is_read_no_more_often_than_tensorflow_reads_it(
    export, tmp_path, quadratic_saved_model, monkeypatch
):
    """The job's load of a SavedModel of one MetaGraph (every TF2 export) reads its
    saved_model.pb as often as tf.saved_model.load alone does: the tags are looked
    for only in a file of several MetaGraphs (at launch and on every worker, a
    large or gs:// file was read once more for nothing)."""
    import tensorflow as tf
    from tensorflow.python.saved_model import loader_impl

    from transforms.tf_model import _load, model_reference

    model = quadratic_saved_model if export == "tf2" else _tf1_saved_model(tmp_path / "m", [[]])
    reads = []
    parse = loader_impl.parse_saved_model
    monkeypatch.setattr(
        loader_impl, "parse_saved_model", lambda path: reads.append(path) or parse(path)
    )
    tf.saved_model.load(model)
    by_tensorflow, reads[:] = len(reads), []
    _load(model_reference(model))
    assert by_tensorflow >= 1 and len(reads) == by_tensorflow, (by_tensorflow, reads)


def _tf1_hub_module(
    path, recorded_side: int | tuple[int, int] | None = None, side: int | tuple[int, int] = SIZE
) -> str:
    """A module in TF Hub's TF1 format (as hub.Module exported it, which tensorflow_hub
    no longer can): a SavedModel of MetaGraphs tagged [] and ['train'] beside a
    tfhub_module.pb, whose `default` and `image_classification` signatures map `images`
    to the logits as `default`, among the hidden layer's activations. `recorded_side`:
    its images are of any size, and it records its expected size as side x side (or
    (height, width)), as hub.attach_image_module_info did; else its input fixes `side`
    (or (height, width))."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph, v1.Session() as session:
        images, logits = _graph(tf, side=side if recorded_side is None else None)
        if recorded_side is not None:
            recorded = recorded_side if isinstance(recorded_side, tuple) else (recorded_side,)
            v1.add_to_collection("hub_module_attachments", _image_module_info(*recorded))
        session.run(v1.global_variables_initializer())
        hidden = graph.get_tensor_by_name("Relu:0")
        outputs = {"default": logits, "Net/hidden": hidden}
        signature = v1.saved_model.predict_signature_def({"images": images}, outputs)
        signatures = {"default": signature, "image_classification": signature}
        builder = v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(session, [], signature_def_map=signatures)
        builder.add_meta_graph(["train"], signature_def_map=signatures)
        builder.save()
    (path / "tfhub_module.pb").write_bytes(b"\x08\x03")  # ModuleDef {format: FORMAT_V3}
    return str(path)


def _image_module_info(side: int, width: int | None = None) -> bytes:
    """A serialized ModuleAttachment holding an ImageModuleInfo of side x side images
    under the key `image_module_info`, as hub.attach_image_module_info stored it: of
    classes made from tensorflow_hub's module_attachment.proto and image_module_info.proto
    (tensorflow_hub no longer ships them). `width`: another than `side`."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="hub_messages.proto", package="tensorflow_hub", syntax="proto3"
    )
    attachment = proto.message_type.add(name="ModuleAttachment")
    attachment.field.add(name="key", number=1, type=field.TYPE_STRING)
    attachment.field.add(name="value", number=2, type=field.TYPE_BYTES)
    info = proto.message_type.add(name="ImageModuleInfo")
    size = info.nested_type.add(name="InputSize")
    size.field.add(name="height", number=1, type=field.TYPE_INT32)
    size.field.add(name="width", number=2, type=field.TYPE_INT32)
    info.field.add(
        name="default_image_size",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".tensorflow_hub.ImageModuleInfo.InputSize",
    )
    for f in [*attachment.field, *size.field, *info.field]:
        f.label = field.LABEL_OPTIONAL
    classes = message_factory.GetMessages([proto], pool=descriptor_pool.DescriptorPool())
    info_message = classes["tensorflow_hub.ImageModuleInfo"]()
    info_message.default_image_size.height = side
    info_message.default_image_size.width = side if width is None else width
    value = info_message.SerializeToString()
    attached = classes["tensorflow_hub.ModuleAttachment"](key="image_module_info", value=value)
    return attached.SerializeToString()


def test_a_tf1_hub_module_is_audited_on_its_default_signature_and_output(
    image_folder, tmp_path, capsys
):
    """TF Hub's TF1 format calls a module by its `default` signature and takes its
    `default` output (TF Hub's common signatures for images: the logits); such a module
    was refused for want of a serving_default signature."""
    module = _tf1_hub_module(tmp_path / "module")
    assert _run(image_folder, module, tmp_path / "out") == 0, capsys.readouterr().err

    def logits(images):
        import tensorflow as tf

        v1 = tf.compat.v1
        with tf.Graph().as_default(), v1.Session() as session:
            signature = v1.saved_model.loader.load(session, [], module).signature_def["default"]
            feed = {signature.inputs["images"].name: images}
            return session.run(signature.outputs["default"].name, feed)

    _check_rows(image_folder, tmp_path / "out", logits)


def _hub_module_logits(module: str, images: np.ndarray) -> np.ndarray:
    """A TF1 Hub module's `default` output on `images`, run by TensorFlow's TF1 loader."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        signature = v1.saved_model.loader.load(session, [], module).signature_def["default"]
        feed = {signature.inputs["images"].name: images}
        return session.run(signature.outputs["default"].name, feed)


def test_a_tf1_hub_module_of_a_fixed_non_square_input_is_audited_at_its_size(
    image_folder, tmp_path, capsys
):
    """A TF1 Hub module whose `images` are [None, 24, 40, 3] was refused at launch
    ('takes non-square images (24, 40)'). Loaded or not, its size is 24 x 40; the
    16 x 16 images are fitted into it with padding (24 x 24, columns 8-31), and the
    rows hold the module's own scores on them, maps of [24, 40, 3]."""
    from transforms import results, tf_model

    module = _tf1_hub_module(tmp_path / "module", side=(24, 40))
    for load in (True, False):
        assert tf_model.resolve_model(module, load=load).image_shape == (24, 40)
    assert _run(image_folder, module, tmp_path / "out") == 0, capsys.readouterr().err
    rows = results.read_results(str(tmp_path / "out"), with_arrays=True).set_index("image_id")
    seen = results.input_images(str(tmp_path / "out"), rows.index)
    ids = sorted(seen)
    assert ids == sorted(image_folder["pixels"])
    images = np.stack([seen[i] for i in ids]).astype(np.float32) / 255
    assert images.shape[1:] == (24, 40, 3) and not images[:, :, :8].any()
    assert not images[:, :, 32:].any() and images[:, :, 8:32].any(axis=(1, 2, 3)).all()
    logits = _hub_module_logits(module, images)
    assert rows.loc[ids, "predicted_class"].tolist() == logits.argmax(1).tolist()
    np.testing.assert_allclose(rows.loc[ids, "target_score"], logits.max(1), rtol=1e-5)
    for _, row in rows.iterrows():
        assert results.attributions_of(row).shape == (24, 40, 3)


def test_a_tf1_hub_module_of_any_input_size_is_fed_the_size_it_records(
    tmp_path, monkeypatch, caplog
):
    """A TF1 Hub image module that takes any size records the size it expects
    (ImageModuleInfo, which hub.get_expected_image_size read before the input's shape);
    the job fed it 224x224 images, warning that the model does not fix its size. It
    takes the recorded size, loaded or not (a launch for workers elsewhere); --image_size
    still sets another."""
    from transforms import tf_model

    module = _tf1_hub_module(tmp_path / "module", recorded_side=20)
    with caplog.at_level("INFO"):
        spec = tf_model.resolve_model(module)
    assert spec.image_size == 20 and spec.num_outputs == CLASSES
    assert "its TF Hub module records 20x20 images (ImageModuleInfo): using 20" in caplog.text
    assert "using 224" not in caplog.text
    assert tf_model.resolve_model(module, image_size=24).image_size == 24

    def refuse(model):
        raise AssertionError(f"{model.reference} was loaded")

    monkeypatch.setattr(tf_model, "_load", refuse)
    assert tf_model.resolve_model(module, load=False) == spec


def test_a_tf1_hub_module_of_any_input_size_recording_a_non_square_is_fed_that(
    tmp_path, monkeypatch, caplog
):
    """A TF1 Hub image module of any input size that records a 12 x 20 size (its
    ImageModuleInfo; hub.get_expected_image_size gives [12, 20]) was fed 224x224 squares,
    with a warning to set --image_size, which sets only a square: a non-square recorded
    size was passed over. Loaded or not, it is fed the 12 x 20 it records."""
    from transforms import tf_model

    module = _tf1_hub_module(tmp_path / "module", recorded_side=(12, 20))
    with caplog.at_level("INFO"):
        spec = tf_model.resolve_model(module)
    assert spec.image_shape == (12, 20) and spec.num_outputs == CLASSES
    assert "its TF Hub module records 12x20 images (ImageModuleInfo): using 12x20" in caplog.text
    assert "using 224" not in caplog.text
    assert tf_model.resolve_model(module, image_size=24).image_shape == (24, 24)

    def refuse(model):
        raise AssertionError(f"{model.reference} was loaded")

    monkeypatch.setattr(tf_model, "_load", refuse)
    assert tf_model.resolve_model(module, load=False) == spec


def test_a_tf1_saved_model_of_a_predict_signature_alone_is_refused_with_a_resave_that_runs(
    image_folder, tmp_path, capsys
):
    """A TF1 export whose only signature is `predict` was told to save 'the function that
    scores images' with tf.saved_model.save(model, ...): a TF1 graph has no such model
    or function. The refusal names a re-save of its own signature, which runs."""
    import tensorflow as tf

    model = _tf1_saved_model(tmp_path / "model", [["serve"]], name="predict")
    assert _run(image_folder, model, tmp_path / "out") == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.endswith(
        "A signature it has becomes serving_default so: m = tf.saved_model.load(folder); "
        "tf.saved_model.save(m, new_folder, signatures={'serving_default': "
        "m.signatures['predict']}); pass new_folder."
    ), line
    assert not (tmp_path / "out").exists()
    m = tf.saved_model.load(model)
    new_folder = str(tmp_path / "resaved")
    tf.saved_model.save(m, new_folder, signatures={"serving_default": m.signatures["predict"]})
    assert _run(image_folder, new_folder, tmp_path / "out") == 0, capsys.readouterr().err
    _check_rows(
        image_folder, tmp_path / "out", lambda x: _tf1_logits(model, ["serve"], x, "predict")
    )


def test_a_tf1_saved_model_of_several_signatures_none_serving_default_is_told_to_pick_one(
    tmp_path,
):
    """Of several signatures, the re-save cannot know which scores images: it names
    them, and the line holds NAME for the user to fill in, not the first of them."""
    from transforms.tf_model import model_reference, resolve_model

    model = _tf1_saved_model(tmp_path / "model", [["serve"]], name=("classify", "predict"))
    with pytest.raises(ValueError) as refused:
        resolve_model(model_reference(model))
    assert "(its signatures: classify, predict)" in str(refused.value)
    assert str(refused.value).endswith(
        "tf.saved_model.save(m, new_folder, signatures={'serving_default': "
        "m.signatures[NAME]}) (NAME: the one that scores images); pass new_folder."
    )


def test_a_tf1_saved_model_of_uint8_input_is_refused_naming_where_floats_go_in(
    image_folder, tmp_path, capsys
):
    """A TF1 export taking uint8 pixels was told to take float32 'cast to its type inside
    the model': a cast to uint8 has no gradient, and the job then refused that model for
    want of one. The refusal says to feed floats where the model turns its pixels into
    floats; that export, with --input_range 0,255, gives the uint8 model's own scores."""
    import tensorflow as tf

    model = _tf1_saved_model(tmp_path / "uint8", [["serve"]], dtype=tf.uint8, scale=1 / 255)
    assert _run(image_folder, model, tmp_path / "out") == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "cast to its type" not in line, line
    assert (
        "export the model with a float32 input, fed in where it turns its uint8 one into "
        "floats (a cast of float32 images to uint8 inside it would leave no gradient either)"
    ) in line, line
    floats = _tf1_saved_model(tmp_path / "floats", [["serve"]], scale=1 / 255)
    args = [*cli_args(input_range="0,255")]
    assert _run(image_folder, floats, tmp_path / "out", *args) == 0, capsys.readouterr().err
    _check_rows(
        image_folder,
        tmp_path / "out",
        lambda x: _tf1_logits(model, ["serve"], np.rint(x * 255).astype(np.uint8)),
    )


def test_a_tf1_estimator_export_of_tf_example_input_is_refused_naming_the_export_that_fits(
    image_folder, tmp_path, capsys
):
    """An Estimator's export takes serialized tf.Example records (strings) and parses them
    in its graph; the refusal spoke of "encoded images (strings, such as JPEG bytes)",
    which it does not take. It names both, and an Estimator's export of float32 images."""
    model = _tf1_saved_model(tmp_path / "examples", [["serve"]], examples=True)
    assert _run(image_folder, model, tmp_path / "out") == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(
        f"error: --model '{model}' takes strings: encoded images (such as JPEG bytes) that it "
        "decodes, or serialized tf.Example records that it parses (an Estimator's export); "
    ), line
    assert (
        "export the function after the decoding or parsing, taking float32 images [N, H, W, 3] "
        "(an Estimator: export_saved_model with "
        "tf.estimator.export.build_raw_serving_input_receiver_fn of such images)"
    ) in line, line
    assert not (tmp_path / "out").exists()


def test_a_tf1_graph_whose_loop_has_no_gradient_in_tf2_is_refused_saying_so(
    image_folder, tmp_path, capsys
):
    """A TF1 graph's tf.while_loop (control flow v1; tf.map_fn makes one too) runs in a
    loaded SavedModel, but TensorFlow 2 cannot take its gradient there
    (tensorflow/tensorflow#7404). The refusal said the model 'fails on a batch of 2
    images: 'NoneType' object has no attribute 'outer_context''; it says that the
    gradient is what fails, and how to export the graph so that it has one, which runs."""
    import tensorflow as tf

    v1 = tf.compat.v1
    v1.disable_control_flow_v2()
    try:
        model = _tf1_saved_model(tmp_path / "v1_loop", [["serve"]], loop=True)
    finally:
        v1.enable_control_flow_v2()
    assert _run(image_folder, model, tmp_path / "out") == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line.startswith(
        f"error: --model '{model}' runs on a batch of 2 images [2, {SIZE}, {SIZE}, 3], but "
        "TensorFlow cannot take its gradient with respect to them ("
    ), line
    assert line.endswith(
        "A TF1 graph's tf.while_loop (tf.map_fn makes one) has none in TensorFlow 2: build "
        "the graph again after tf.compat.v1.enable_control_flow_v2() and export it."
    ), line
    assert not (tmp_path / "out").exists()
    rebuilt = _tf1_saved_model(tmp_path / "v2_loop", [["serve"]], loop=True)
    assert _run(image_folder, rebuilt, tmp_path / "out") == 0, capsys.readouterr().err
    _check_rows(image_folder, tmp_path / "out", lambda x: _tf1_logits(model, ["serve"], x))


def test_a_tf1_graph_of_an_op_without_a_gradient_is_refused_without_the_loop_advice(tmp_path):
    """Another op TensorFlow has no gradient for (AdjustSaturation) is refused as a
    gradient that cannot be taken, naming the op, but not told to rebuild a while loop
    it does not have."""
    from transforms.tf_model import model_reference, resolve_model

    model = _tf1_saved_model(tmp_path / "saturated", [["serve"]], saturate=True)
    with pytest.raises(ValueError) as refused:
        resolve_model(model_reference(model))
    message = str(refused.value)
    assert message.startswith(
        f"--model '{model}' runs on a batch of 2 images [2, {SIZE}, {SIZE}, 3], but "
        "TensorFlow cannot take its gradient with respect to them ("
    ), message
    assert "No gradient defined for operation" in message and "AdjustSaturation" in message
    assert message.endswith("); Integrated Gradients needs it."), message


def _reference_variable_model(path) -> str:
    """`_tf1_saved_model` of TF1's reference variables (VariableV2), as before TF2."""
    import tensorflow as tf

    tf.compat.v1.disable_resource_variables()
    try:
        return _tf1_saved_model(path, [["serve"]])
    finally:
        tf.compat.v1.enable_resource_variables()


def test_a_tf1_saved_model_of_reference_variables_is_not_compiled_with_xla(
    image_folder, tmp_path, capsys, caplog
):
    """TF1's variables (VariableV2, the default before TF2) have no XLA kernel: with XLA,
    which `--jit_compile auto` picks on GPUs, such a model failed mid-run ("the run
    failed: ... No registered 'VariableV2' OpKernel for XLA_CPU_JIT"). `auto` now runs
    it without XLA, saying so; `on` is refused at launch naming the model's variables and
    the fix."""
    import dataclasses

    import tensorflow as tf

    from transforms import tf_model
    from transforms.tf_model import device_settings, model_reference, resolve_model

    model = _reference_variable_model(tmp_path / "ref")
    resource = _tf1_saved_model(tmp_path / "resource", [["serve"]])
    on_a_gpu = dataclasses.replace(device_settings(), jit_compile=True)  # auto's GPU choice
    loaded = {m: tf.saved_model.load(m) for m in (model, resource)}
    assert tf_model._xla_settings(on_a_gpu, None, loaded[resource], resource).jit_compile
    with caplog.at_level("WARNING"):
        assert not tf_model._xla_settings(on_a_gpu, None, loaded[model], model).jit_compile
    assert "TF1 reference variables (VariableV2), which XLA cannot compile" in caplog.text
    with pytest.raises(ValueError, match="--jit_compile on does not fit --model") as refused:
        tf_model._xla_settings(on_a_gpu, True, loaded[model], model)
    assert "tf.compat.v1.enable_resource_variables()" in str(refused.value)
    assert resolve_model(model_reference(model)).num_outputs == CLASSES

    assert _run(image_folder, model, tmp_path / "on", "--jit_compile", "on") == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert line == f"error: {refused.value}", line
    assert not (tmp_path / "on").exists()  # refused at launch, before any work
    assert _run(image_folder, model, tmp_path / "auto") == 0, capsys.readouterr().err
    _check_rows(image_folder, tmp_path / "auto", lambda x: _tf1_logits(model, ["serve"], x))


def _tf1_models(tmp_path) -> dict[str, str]:
    """Every kind of TF1 export this file audits or refuses, by what it is."""
    import tensorflow as tf

    v1 = tf.compat.v1
    models = {
        "serve and train": _tf1_saved_model(tmp_path / "st", [["serve"], ["train"]]),
        "hub module": _tf1_hub_module(tmp_path / "hub"),
        "v2 loop": _tf1_saved_model(tmp_path / "v2_loop", [["serve"]], loop=True),
        "train and eval": _tf1_saved_model(tmp_path / "te", [["train"], ["eval"]]),
        "predict": _tf1_saved_model(tmp_path / "predict", [["serve"]], name="predict"),
        "uint8": _tf1_saved_model(tmp_path / "uint8", [["serve"]], dtype=tf.uint8),
        "examples": _tf1_saved_model(tmp_path / "examples", [["serve"]], examples=True),
    }
    v1.disable_control_flow_v2()
    try:
        models["v1 loop"] = _tf1_saved_model(tmp_path / "v1_loop", [["serve"]], loop=True)
    finally:
        v1.enable_control_flow_v2()
    v1.disable_resource_variables()
    try:
        models["reference variables"] = _tf1_saved_model(tmp_path / "ref", [["serve"]])
    finally:
        v1.enable_resource_variables()
    return models


def _resolved(model: str, **options):
    """resolve_model's spec, or the ValueError it raised."""
    from transforms.tf_model import resolve_model

    try:
        return resolve_model(model, **options)
    except ValueError as e:
        return e


def test_a_tf1_exports_signature_is_read_without_loading_where_loading_would_accept_it(
    tmp_path, monkeypatch
):
    """A launch whose workers are elsewhere (Dataflow, a dry run too) loaded every TF1
    export, as its saved_model.pb has no object graph: it reads the signature the job
    calls (the `serve` graph's serving_default, a TF1 Hub module's `default` output)
    from the proto, giving the spec loading gives. Those loading refuses (or whose
    gradient only loading can tell: a v1 while loop) are loaded, and refused alike;
    `--jit_compile on` is refused for reference variables without loading too."""
    from transforms import tf_model

    loaded, real_load = [], tf_model._load
    monkeypatch.setattr(tf_model, "_load", lambda m: loaded.append(m) or real_load(m))
    models = _tf1_models(tmp_path)
    for what, model in models.items():
        on_load = _resolved(model)
        loaded.clear()
        unloaded = _resolved(model, load=False)
        assert type(unloaded) is type(on_load) and str(unloaded) == str(on_load), what
        refused = isinstance(on_load, ValueError)
        assert bool(loaded) == (refused or what == "v1 loop"), what
    ref = models["reference variables"]
    loaded.clear()
    assert str(_resolved(ref, load=False, jit_compile=True)) == str(tf_model._xla_refusal(ref))
    assert not loaded


def test_a_worker_told_to_compile_a_model_of_reference_variables_refuses_it(tmp_path):
    """The worker's Classifier applies the same rule as the launch: XLA asked for
    (`jit_compile=True`) is refused, naming the variables and the fix, rather than
    compiled to fail at its first batch; without XLA the model runs."""
    from transforms.tf_model import Classifier, model_reference, resolve_model

    spec = resolve_model(model_reference(_reference_variable_model(tmp_path / "ref")))
    with pytest.raises(ValueError, match="^--jit_compile on does not fit --model "):
        Classifier(spec, jit_compile=True)
    assert not Classifier(spec, jit_compile=False).settings.jit_compile


@pytest.mark.parametrize("height, width", [(5000, 5000), (20, 5000), (0, 24)])
def test_a_recorded_image_size_beyond_the_bound_is_not_taken(height, width):
    from tensorflow.core.protobuf import meta_graph_pb2

    from transforms import tf_model

    meta = meta_graph_pb2.MetaGraphDef()
    attachments = meta.collection_def["hub_module_attachments"].bytes_list.value
    attachments.append(_image_module_info(height, width))
    assert tf_model._hub_image_sides(meta) is None
    del attachments[:]
    attachments.append(_image_module_info(20))
    assert tf_model._hub_image_sides(meta) == (20, 20)
    del attachments[:]
    attachments.append(_image_module_info(20, 24))
    assert tf_model._hub_image_sides(meta) == (20, 24)
