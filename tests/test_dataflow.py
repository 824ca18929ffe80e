"""Dataflow, offline: the GPU job a dry run builds, package staging, and the worker image.

`--dry_run=True --no_auth` makes DataflowRunner build the whole job (pipeline proto,
options, environment) without contacting Google Cloud. The job's Dataflow
environment (worker pool, service options) is built from it offline the way
Beam's own `apiclient_test.py` does. A Dataflow launcher does not load
`inception_v1`: its signature is a known fact, so nothing here needs network
(some tests still set a local TF Hub cache, `offline_hub`).
"""

import ast
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
from contextlib import redirect_stdout
from importlib import metadata
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
from apache_beam.runners.dataflow.internal import apiclient
from apache_beam.utils import proto_utils
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from pipeline import run
from pipeline.__main__ import main
from pipeline.main import launch, prepare
from tests.conftest import SIZE, run_to_a_closed_stdout
from transforms import sources, tf_model
from transforms.tf_model import HUB_ALIASES

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "us-central1-docker.pkg.dev/my-project/ig-audit/worker:0.1.0"
GPU = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver;use_nvidia_mps"
GCP = [
    "--runner",
    "DataflowRunner",
    "--project",
    "my-project",
    "--region",
    "us-central1",
    "--temp_location",
    "gs://my-bucket/tmp",
    "--dry_run=True",
    "--no_auth",
]
# The L4 command of README.md ("GPU workers"), with the dry-run flags.
GPU_JOB = [
    *GCP,
    "--sdk_container_image",
    IMAGE,
    "--machine_type",
    "g2-standard-4",
    "--dataflow_service_options",
    GPU,
    "--number_of_worker_harness_threads",
    "2",
    "--max_num_workers",
    "2",
    "--dataset",
    "gs://my-bucket/imagenet-a",
    "--model",
    "inception_v1",
    "--target",
    "label",
    "--output",
    "gs://my-bucket/audits/imagenet-a",
]


def _environment(dataflow_job):
    """The Dataflow environment the runner would submit with the job (as in apiclient_test)."""
    return apiclient.Environment(
        packages=[],
        options=dataflow_job.options,
        environment_version="8",
        proto_pipeline_staged_url="gs://my-bucket/staging/pipeline.pb",
        proto_pipeline=dataflow_job.proto_pipeline,
    ).proto


def _docker_images(proto_pipeline) -> set[str]:
    return {
        proto_utils.parse_Bytes(env.payload, beam_runner_api_pb2.DockerPayload).container_image
        for env in proto_pipeline.components.environments.values()
    }


def _staged(proto_pipeline) -> dict[str, str]:
    """Staged name -> local file of every artifact the workers get."""
    staged = {}
    for env in proto_pipeline.components.environments.values():
        for dep in env.dependencies:
            name = proto_utils.parse_Bytes(
                dep.role_payload, beam_runner_api_pb2.ArtifactStagingToRolePayload
            ).staged_name
            path = proto_utils.parse_Bytes(
                dep.type_payload, beam_runner_api_pb2.ArtifactFilePayload
            ).path
            staged[name] = path
    return staged


def test_dry_run_builds_the_l4_gpu_job_for_a_gcs_image_folder(offline_hub):
    job, result = launch(GPU_JOB)
    assert job.model_handoff is None  # the launcher keeps no model for remote workers

    # What the launcher resolved: the folder is left to the workers, the model is
    # the seed's Inception V1 with its background class.
    assert job.source == sources.FolderSource("gs://my-bucket/imagenet-a")  # no TFDS source
    assert (job.spec.kind, job.spec.location) == ("hub", HUB_ALIASES["inception_v1"])
    assert (job.spec.num_outputs, job.spec.label_offset) == (1001, 1)

    dataflow_job = result.job
    assert dataflow_job.proto.type_ == apiclient.dataflow.JobType.JOB_TYPE_BATCH
    names = {t.unique_name for t in dataflow_job.proto_pipeline.components.transforms.values()}
    assert {
        "ReadImages/MatchFiles",  # the folder is listed by a worker...
        "ReadImages/ToFolderFiles",
        "ReadImages/CountFiles",  # ...which fails the job when it holds no file,
        "ReadImages/SpreadFiles",  # ...and the files are spread and read in parallel.
        "ReadImages/ReadFiles",
        "Preprocess",
        "Attribute/BeamML_RunInference",
        "SplitOutcomes",
        "WriteResults/WriteResultsParquet",
        "WriteErrors/WriteErrorsParquet",
        "Manifest/WriteManifestJson",
    } <= names
    # No file list made on the launcher, no TFDS reader.
    assert not any("ListFiles" in n or "ReadFromTFDS" in n for n in names)

    environment = _environment(dataflow_job)
    assert list(environment.service_options) == [GPU]
    (pool,) = environment.worker_pools
    assert pool.machine_type == "g2-standard-4"
    assert pool.num_threads_per_worker == 2
    assert pool.autoscaling_settings.max_num_workers == 2
    # Every step runs in the custom GPU image, nothing else.
    assert pool.worker_harness_container_image == IMAGE
    assert [image.container_image for image in pool.sdk_harness_container_images] == [IMAGE]
    assert _docker_images(dataflow_job.proto_pipeline) == {IMAGE}
    # One SDK process per vCPU (the default, which MPS needs) was not turned off.
    assert "no_use_multiple_sdk_containers" not in environment.experiments
    assert "use_multiple_sdk_containers" in environment.experiments
    # The image holds the package: no sdist staged. The run's flags travel with the job.
    assert "workflow.tar.gz" not in _staged(dataflow_job.proto_pipeline)
    options = environment.sdk_pipeline_options["options"]
    assert (options["dataset"], options["model"], options["output"], options["target"]) == (
        "gs://my-bucket/imagenet-a",
        "inception_v1",
        "gs://my-bucket/audits/imagenet-a",
        "label",
    )


def _no_loads(monkeypatch) -> None:
    def refuse(model):
        raise AssertionError(f"{model.reference} was loaded")

    monkeypatch.setattr(tf_model, "_load", refuse)


def test_dry_run_of_inception_v1_needs_no_hub_cache(tmp_path, monkeypatch):
    # An empty TF Hub cache and no network: the launcher takes the seed model's
    # signature from the table of known models instead of downloading it.
    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path))
    _no_loads(monkeypatch)
    job, result = launch(GPU_JOB)
    assert (job.spec.kind, job.spec.location) == ("hub", HUB_ALIASES["inception_v1"])
    assert (job.spec.image_size, job.spec.num_outputs, job.spec.label_offset) == (224, 1001, 1)
    assert job.spec.num_classes == 1000 and job.model_handoff is None
    assert "Attribute/BeamML_RunInference" in {
        t.unique_name for t in result.job.proto_pipeline.components.transforms.values()
    }
    assert not any(tmp_path.iterdir())  # nothing downloaded


def test_a_saved_models_signature_is_read_from_its_proto_without_loading(
    quadratic_saved_model, monkeypatch
):
    loaded = tf_model.resolve_model(quadratic_saved_model)
    _no_loads(monkeypatch)
    assert tf_model.resolve_model(quadratic_saved_model, load=False) == loaded
    assert (loaded.image_size, loaded.num_outputs) == (16, 1000)


def test_a_keras_exported_saved_models_serving_signature_is_read_without_loading(
    tmp_path, monkeypatch
):
    import keras

    inputs = keras.Input((24, 24, 3))
    outputs = keras.layers.Dense(7, name="logits")(keras.layers.GlobalAveragePooling2D()(inputs))
    keras.Model(inputs, outputs).export(str(tmp_path / "exported"), verbose=False)
    loaded = tf_model.resolve_model(str(tmp_path / "exported"))
    _no_loads(monkeypatch)
    assert tf_model.resolve_model(str(tmp_path / "exported"), load=False) == loaded
    assert (loaded.image_size, loaded.num_outputs) == (24, 7)


def test_a_saved_models_pixel_range_is_read_from_its_graph_without_loading(tmp_path, monkeypatch):
    """A remote job's launcher does not load a SavedModel whose signature its proto
    gives: the range its graph takes (a Keras Rescaling of 8-bit pixels, exported) is
    read from the proto too, the one a local run's loaded model gets, for its workers."""
    import keras

    inputs = keras.Input((24, 24, 3))
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    outputs = keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(scaled))
    keras.Model(inputs, outputs).export(str(tmp_path / "exported"), verbose=False)
    loaded = tf_model.resolve_model(str(tmp_path / "exported"))
    _no_loads(monkeypatch)
    assert tf_model.resolve_model(str(tmp_path / "exported"), load=False) == loaded
    assert loaded.input_range == (0.0, 255.0)


def test_a_saved_model_that_draws_random_numbers_is_loaded_and_refused_at_launch(tmp_path):
    """A remote job's launcher read a Keras export's signature from its proto and did
    not load it: one whose RandomFlip and RandomRotation model.export keeps on passed
    the launch, and each worker's load failed on the check that an image's scores do
    not move between calls (a local run of such a launch: "the run failed", after the
    workers started). Its graph draws random numbers: the launcher loads it and refuses
    it at once, with the same reason; a model's random ops that leave its scores fixed
    (a constant seed) pass once loaded."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(4)
    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 3))
    x = layers.RandomRotation(0.1)(layers.RandomFlip()(inputs))
    x = layers.Conv2D(4, 3, activation="relu", bias_initializer="glorot_uniform")(x)
    x = layers.Dense(5, bias_initializer="glorot_uniform")(layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, x).export(str(tmp_path / "random"), verbose=False)
    loads = []
    real = tf_model._load
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_model, "_load", lambda m: loads.append(m) or real(m))
        with pytest.raises(ValueError, match="gives other scores for the same images on each"):
            tf_model.resolve_model(str(tmp_path / "random"), load=False)
        assert len(loads) == 1

        class Seeded(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
            def __call__(self, x):
                noise = tf.random.stateless_uniform([3], seed=[1, 2])
                return tf.reduce_mean(x, [1, 2]) + noise

        tf.saved_model.save(Seeded(), str(tmp_path / "seeded"))
        assert tf_model.resolve_model(str(tmp_path / "seeded"), load=False).num_outputs == 3
        assert len(loads) == 2


def test_a_tf_keras_saved_model_with_a_dropout_is_read_without_loading(tmp_path, monkeypatch):
    """A Keras 2 (tf_keras) model saved in the TF format keeps a trace of its __call__
    for training=True, whose Dropout draws random numbers, beside the training=False
    one the job calls (images alone: `training` at its default, False): the launcher
    of a remote job loaded it for a random op its call never runs. Only the traces the
    call runs count: it is read from its proto, as a model without the Dropout is."""
    import tf_keras

    layers = tf_keras.layers
    model = tf_keras.Sequential(
        [layers.Input((SIZE, SIZE, 3)), layers.Conv2D(4, 3), layers.GlobalAveragePooling2D()]
        + [layers.Dropout(0.5), layers.Dense(5)]
    )
    model.save(str(tmp_path / "dropout"), save_format="tf")
    loaded = tf_model.resolve_model(str(tmp_path / "dropout"))
    _no_loads(monkeypatch)
    assert tf_model.resolve_model(str(tmp_path / "dropout"), load=False) == loaded
    assert (loaded.image_size, loaded.num_outputs) == (SIZE, 5)


def _batch_norm_module(path, training) -> str:
    """A tf.Module scoring images through a fused batch norm in inference mode
    (is_training=False: the given statistics), or, where `training` is a variable,
    through a tf.cond on it whose true branch normalises by the batch's statistics."""
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]))
            self.training = training

        def _normalised(self, h, is_training):
            stats = {} if is_training else {"mean": tf.zeros([4]), "variance": tf.ones([4])}
            scale, offset = tf.ones([4]), tf.zeros([4])
            fused = tf.compat.v1.nn.fused_batch_norm
            return fused(h, scale, offset, is_training=is_training, **stats)[0]

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            h = tf.nn.conv2d(x, self.kernel, 1, "SAME")
            if self.training is None:
                h = self._normalised(h, False)
            else:
                h = tf.cond(
                    self.training,
                    lambda: self._normalised(h, True),
                    lambda: self._normalised(h, False),
                )
            return tf.reduce_mean(tf.nn.relu(h), [1, 2])

    tf.saved_model.save(Model(), str(path))
    return str(path)


def _weight_standardised_module(path) -> str:
    """A convolution whose kernel is standardised by tf.nn.moments over its axes 0-2
    (BiT's StandardizedConv2D): moments over axis 0 of a variable, not of the images."""
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 4], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            mean, variance = tf.nn.moments(self.kernel, axes=[0, 1, 2], keepdims=True)
            kernel = (self.kernel - mean) / tf.sqrt(variance + 1e-10)
            return tf.reduce_mean(tf.nn.conv2d(x, kernel, 1, "SAME"), [1, 2])

    tf.saved_model.save(Model(), str(path))
    return str(path)


def test_batch_norms_in_inference_mode_are_read_without_loading(tmp_path, monkeypatch):
    """No false refusal of the graph's check for batch statistics: a fused batch norm
    in inference mode, a tf_keras model saved in the TF format (a training=True trace of
    its BatchNormalization kept beside the training=False one the job calls), a
    weight-standardised convolution (moments over a variable's axis 0) and Keras 3's
    exports of a model with a BatchNormalization, or a LayerNormalization (moments over
    axis -1: never the batch's of a tensor of the images' pixels), are read from their
    proto as before, and load and run as they did."""
    import keras
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.layers.Input((SIZE, SIZE, 3)), tf_keras.layers.Conv2D(4, 3)]
        + [tf_keras.layers.BatchNormalization(), tf_keras.layers.GlobalAveragePooling2D()]
    )
    model.save(str(tmp_path / "tf_keras"), save_format="tf")
    keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3)]
        + [keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D()]
    ).export(str(tmp_path / "keras"), verbose=False)
    keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(4, 3)]
        + [keras.layers.LayerNormalization(), keras.layers.GlobalAveragePooling2D()]
    ).export(str(tmp_path / "keras_layer_norm"), verbose=False)
    paths = [
        _batch_norm_module(tmp_path / "inference", None),
        str(tmp_path / "tf_keras"),
        _weight_standardised_module(tmp_path / "standardised"),
        str(tmp_path / "keras"),
        str(tmp_path / "keras_layer_norm"),
    ]
    loaded = [tf_model.resolve_model(path) for path in paths]
    _no_loads(monkeypatch)
    assert [tf_model.resolve_model(path, load=False) for path in paths] == loaded
    assert {(spec.image_size, spec.num_outputs) for spec in loaded} == {(SIZE, 4)}


def test_a_batch_norm_a_flag_decides_is_loaded_and_its_call_tells(tmp_path):
    """A batch norm in one branch of a tf.cond on a variable: whether the call runs the
    branch of the batch's statistics only the flag tells, so the launcher loads the model
    (a remote job's too) and its call decides: the flag off runs, on is refused."""
    import tensorflow as tf

    loads = []
    real = tf_model._load
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_model, "_load", lambda m: loads.append(m) or real(m))
        off = _batch_norm_module(tmp_path / "off", tf.Variable(False))
        assert tf_model.resolve_model(off, load=False).num_outputs == 4
        assert len(loads) == 1
        on = _batch_norm_module(tmp_path / "on", tf.Variable(True))
        with pytest.raises(ValueError, match="scores an image by the other images of its batch"):
            tf_model.resolve_model(on, load=False)
        assert len(loads) == 2


def test_a_tf_keras_layer_normalization_is_loaded_and_runs(tmp_path):
    """tf_keras's LayerNormalization normalises each image's rows by a FusedBatchNorm in
    training mode, on the images reshaped so that each row is one of its channels: the
    graph's check for batch statistics refused it (a ViT's, a ConvNeXt's), though each
    image's scores depend on it alone. Which axis a reshape leaves the batch on, only a
    call tells: the launcher loads it, its call runs."""
    import numpy as np
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    inputs = layers.Input((SIZE, SIZE, 3))
    x = layers.LayerNormalization()(layers.Conv2D(4, 3)(inputs))
    model = tf_keras.Model(inputs, layers.Dense(5)(layers.GlobalAveragePooling2D()(x)))
    model.save(str(tmp_path / "layer_norm"), save_format="tf")
    images = np.random.default_rng(0).uniform(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    moved = model(images[[0, 1]])[0] - model(images[[0, 2]])[0]
    assert np.abs(moved).max() < 1e-5  # its scores of an image: of that image alone
    loads = []
    real = tf_model._load
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf_model, "_load", lambda m: loads.append(m) or real(m))
        assert tf_model.resolve_model(str(tmp_path / "layer_norm"), load=False).num_outputs == 5
    assert len(loads) == 1


def _moments_module(path, how: str) -> str:
    """A tf.Module standardising images by their moments: `how` "per_image", each by
    its own through tf.map_fn (tf.nn.moments over the image's axes 0 and 1, its rows and
    columns), "per_scaled_image" the same of the image divided by 255 first;
    "sequence_first", each by its own pixels' moments over axis 0 of its tokens laid out
    sequence-first ([tokens, batch, channels], scaled); "negative_axes", over the batch by tf.nn.moments of axes -4, -3, -2 of the
    images (the batch's axis among them); "reduce_std", over the batch by
    tf.math.reduce_std of axes 0-2 (no SquaredDifference in the graph)."""
    import tensorflow as tf

    def standardised(x, axes):
        mean, variance = tf.nn.moments(x, axes=axes)
        return (x - mean) / tf.sqrt(variance + 1e-3)

    def sequence_first(x):  # [tokens, batch, channels], scaled: each image's moments
        tokens = tf.transpose(tf.reshape(x, [-1, SIZE * SIZE, 3]), [1, 0, 2]) * 2.0
        return tf.reshape(tf.transpose(standardised(tokens, [0]), [1, 0, 2]), tf.shape(x))

    ways = {
        "per_image": lambda x: tf.map_fn(lambda image: standardised(image, [0, 1]), x),
        "per_scaled_image": lambda x: tf.map_fn(
            lambda image: standardised(image / 255.0, [0, 1]), x
        ),
        "sequence_first": sequence_first,
        "negative_axes": lambda x: standardised(x, [-4, -3, -2]),
        "reduce_std": lambda x: (
            (x - tf.reduce_mean(x, [0, 1, 2])) / (tf.math.reduce_std(x, [0, 1, 2]) + 1e-3)
        ),
    }

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal([3, 5], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return tf.nn.softmax(tf.reduce_mean(ways[how](x), [1, 2]) @ self.kernel)

    tf.saved_model.save(Model(), str(path))
    return str(path)


def test_moments_of_each_image_alone_are_not_refused(tmp_path):
    """A serving function standardising each image by its own moments in tf.map_fn
    reads a Mean over axes 0 and 1 of an element of the batch (not the batch's axis 0):
    the graph's check refused it, though an image's scores move by nothing beside other
    images; so were one dividing each image by 255 first, and one standardising each
    image's tokens laid out sequence-first (moments over axis 0 after a Transpose and a
    Mul). Which axis an element or a transposition leaves the batch on, only a call
    tells: the launcher (a remote job's too) loads each, and it runs."""
    import numpy as np
    import tensorflow as tf

    images = np.random.default_rng(0).uniform(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    loads = []
    real = tf_model._load
    for how in ("per_image", "per_scaled_image", "sequence_first"):
        path = _moments_module(tmp_path / how, how)
        call = tf.saved_model.load(path)
        moved = np.abs(call(images[:1])[0] - call(images)[0]).max()
        assert moved < 1e-5, how  # of the image alone
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tf_model, "_load", lambda m: loads.append(m) or real(m))
            assert tf_model.resolve_model(path, load=False).num_outputs == 5, how
    assert len(loads) == 3


def test_moments_over_the_batch_by_negative_axes_are_loaded_and_refused(tmp_path):
    """tf.nn.moments over axes -4, -3, -2 of the images is over their batch (the same
    image's scores move beside others): a remote job's launcher read its signature from
    the proto and passed it, the check reading axis 0 alone. A negative axis counts back
    from a rank the proto does not give: the launcher loads it, and its call refuses it
    (the probe's words: a plain image's scores moved beside a copy of itself)."""
    path = _moments_module(tmp_path / "negative", "negative_axes")
    with pytest.raises(ValueError, match="beside a copy of itself instead of another image"):
        tf_model.resolve_model(path, load=False)


def test_a_standardisation_by_the_batch_the_proto_does_not_show_is_refused_by_its_call(
    tmp_path,
):
    """A hand-written standardisation by the batch's mean and tf.math.reduce_std (no
    SquaredDifference: the graph's check does not refuse it) is refused by the probe's
    call, the one test of that refusal since the graph refuses a training-mode
    BatchNormalization first: at a local launch, and at a remote one, which loads it."""
    path = _moments_module(tmp_path / "reduce_std", "reduce_std")
    with pytest.raises(ValueError, match="beside a copy of itself instead of another image"):
        tf_model.resolve_model(path)
    # A remote job's launcher read its signature from the proto and passed it: a Mean
    # over the batch's axis of the images' tensor, only a call tells what it does.
    with pytest.raises(ValueError, match="beside a copy of itself instead of another image"):
        tf_model.resolve_model(path, load=False)


def test_a_keras_file_whose_batch_norm_was_built_in_training_mode_runs(tmp_path):
    """Keras 3 saves a BatchNormalization called with training=True as the model is built
    in its .keras file, but the job calls a Keras model with training=False, which
    overrides it: an image's scores do not depend on the images beside it, and it runs."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs), training=True)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model.save(str(tmp_path / "model.keras"))
    images = np.random.default_rng(0).uniform(size=(3, SIZE, SIZE, 3)).astype(np.float32)
    moved = model(images[[0, 1]])[0] - model(images[[0, 2]])[0]  # its own call: training=True
    assert np.abs(moved).max() > 1e-3
    assert tf_model.resolve_model(str(tmp_path / "model.keras")).num_outputs == 4


def test_a_saved_model_whose_proto_leaves_the_outputs_open_is_loaded(tmp_path, monkeypatch):
    import tensorflow as tf

    class Flatten(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32)])
        def __call__(self, x):
            return tf.reshape(x, [tf.shape(x)[0], -1])  # [batch, None] in the proto

    tf.saved_model.save(Flatten(), str(tmp_path / "flatten"))
    loads = []
    real = tf_model._load
    monkeypatch.setattr(tf_model, "_load", lambda m: loads.append(m) or real(m))
    spec = tf_model.resolve_model(str(tmp_path / "flatten"), load=False)
    assert (spec.image_size, spec.num_outputs, len(loads)) == (4, 48, 1)


def test_the_bundled_models_known_signature_is_what_loading_gives(monkeypatch):
    loaded = tf_model.resolve_model("efficientnet_lite0")
    _no_loads(monkeypatch)
    assert tf_model.resolve_model("efficientnet_lite0", load=False) == loaded


def test_dry_run_returns_no_manifest_and_the_command_line_exits_cleanly(offline_hub):
    assert run(GPU_JOB) is None
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(GPU_JOB) == 0
    assert (
        "No results to show here: a Dataflow dry run or template builds the job" in out.getvalue()
    )


@pytest.mark.parametrize("verbose", [False, True])
def test_a_dry_runs_log_has_beams_info_records_with_verbose_only(verbose):
    # README: --verbose shows "the INFO logs of Beam". Without it, the launch still
    # said 'INFO root: Runner defaulting to pickling library: cloudpickle.': Beam logs
    # it on the root logger, which the job keeps at INFO for its own lines.
    image = ["--sdk_container_image", IMAGE, "--model", "inception_v1"]
    paths = ["--dataset", "gs://my-bucket/images", "--output", "gs://my-bucket/out"]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *GCP, *image, *paths]
        + (["--verbose"] if verbose else []),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    beams = "INFO root: Runner defaulting to pickling library: cloudpickle."
    assert (beams in done.stderr) == verbose, done.stderr
    if not verbose:
        shown = {line.split(":")[0] for line in done.stderr.splitlines()}
        assert shown == {
            "INFO pipeline.resolve",
            "INFO pipeline.main",
            "INFO transforms.model.signature",
        }


def test_a_dry_run_whose_stdout_reader_stopped_reading_exits_0():
    # `... | head -0`: its one line to stdout was a BrokenPipeError traceback and exit 1.
    image = ["--sdk_container_image", IMAGE, "--model", "efficientnet_lite0"]
    paths = ["--dataset", "gs://my-bucket/images", "--output", "gs://my-bucket/out"]
    done = run_to_a_closed_stdout("pipeline", *GCP, *image, *paths)
    assert (done.returncode, "Traceback" in done.stderr) == (0, False), done.stderr


def test_setup_file_stages_this_package_for_the_default_workers(offline_hub, tmp_path):
    # A copy of the project, so building the sdist leaves the checkout untouched.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(ROOT / name, project / name)
    for package in ("pipeline", "transforms"):
        shutil.copytree(
            ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    _, result = launch(
        [
            *GCP,
            "--setup_file",
            str(project / "setup.py"),
            "--dataset",
            "gs://my-bucket/imagenet-a",
            "--model",
            "inception_v1",
            "--output",
            "gs://my-bucket/audits/a",
        ]
    )

    staged = _staged(result.job.proto_pipeline)
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        files = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {
        "setup.py",
        "pipeline/main.py",
        "transforms/attribution.py",
        "transforms/sources.py",
        "transforms/tf_model.py",
        "pipeline/templates/report.html.j2",  # the report's page, package data
        "pipeline/templates/report.css",
    } <= files
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    beam = metadata.version("apache-beam")
    assert _docker_images(result.job.proto_pipeline) == {
        f"gcr.io/cloud-dataflow/v1beta3/beam_python{python}_sdk:{beam}"
    }


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--output", "/tmp/out"], "--output '/tmp/out' is not a gs:// folder"),
        (["--dataset", "/data/imagenet-a"], "is a local folder that Dataflow workers cannot"),
        (["--dataset", "imagenet_a", "--data_dir", "/data/tfds"], "--data_dir '/data/tfds' is"),
        (["--dataset", "imagenet_a"], "--dataset 'imagenet_a' on Dataflow needs --data_dir"),
        (["--model", "/models/mine.keras"], "is a local path that Dataflow workers cannot"),
    ],
)
def test_dataflow_refuses_paths_its_workers_cannot_read(flags, message):
    args = [
        *GCP,
        "--dataset",
        "gs://b/images",
        "--model",
        "efficientnet_lite0",
        "--output",
        "gs://b/out",
        *flags,
    ]
    with pytest.raises(ValueError, match=re.escape(message)):
        launch(args)


def test_the_short_runner_name_dataflow_gets_the_dataflow_launch_checks():
    # Beam takes `--runner dataflow` for its DataflowRunner, as `--runner direct`.
    args = [*GCP, "--runner", "dataflow", "--dataset", "gs://b/images", "--model"]
    args += ["efficientnet_lite0", "--output", "/tmp/out"]
    with pytest.raises(ValueError, match=re.escape("--output '/tmp/out' is not a gs:// folder")):
        launch(args)


DOCS = "(README.md, 'Scale: Dataflow, GPUs, parallel local runs')."
PROJECT_FIX = "pass --project <your Google Cloud project id, e.g. my-project>"
REGION_FIX = "pass --region <a Dataflow region, e.g. us-central1>"
DRY_RUN = ["--runner", "DataflowRunner", "--dry_run=True", "--no_auth"]
SHIPPED = ["--sdk_container_image", IMAGE, "--output", "gs://my-bucket/out"]
PROJECT_REGION = ["--project", "my-project", "--region", "us-central1"]


def _exit_and_error(args, monkeypatch, capsys) -> tuple[int, str]:
    """`python -m pipeline args`: its exit status and stderr; the model must not be read."""
    from pipeline import main as pipeline_main

    def refuse(*_):
        raise AssertionError("the model was resolved before the flags were checked")

    monkeypatch.setattr(pipeline_main, "resolve_model_spec", refuse)
    # No default region from the environment or gcloud's configuration.
    monkeypatch.delenv("CLOUDSDK_COMPUTE_REGION", raising=False)
    monkeypatch.setattr(DataflowRunner, "get_default_gcp_region", lambda self: None)
    status = main(args)
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, error",
    [
        (
            [],  # Beam would look for a default bucket in Cloud Storage for minutes
            "--temp_location: Dataflow needs a gs:// folder for the job's staged and "
            "temporary files (Missing GCS path option: temp_location. Missing GCS path "
            "option: staging_location.); pass --temp_location gs://<bucket>/tmp.",
        ),
        (
            ["--temp_location", "/tmp/beam", *PROJECT_REGION],
            "--temp_location '/tmp/beam' is not a Cloud Storage folder Dataflow can use for "
            "the job's staged and temporary files (Invalid GCS path (/tmp/beam), given for "
            "the option: temp_location. Missing GCS path option: staging_location.); pass "
            "--temp_location gs://<bucket>/tmp.",
        ),
        (  # a gs:// path whose bucket name is too short: it said a gs:// folder was needed
            ["--temp_location", "gs://b/tmp", *PROJECT_REGION],
            "--temp_location 'gs://b/tmp' is not a Cloud Storage folder Dataflow can use for "
            "the job's staged and temporary files (Invalid GCS bucket (gs://b/tmp), given for "
            "the option: temp_location. See https://developers.google.com/storage/docs/"
            "bucketnaming for more details. Missing GCS path option: staging_location.); "
            "pass --temp_location gs://<bucket>/tmp.",
        ),
        (
            ["--temp_location", "gs://my-bucket/tmp"],
            "--runner DataflowRunner: Beam refuses these options: Missing required option: "
            f"project. Missing required option: region. Fix: {PROJECT_FIX}; {REGION_FIX} {DOCS}",
        ),
        (
            ["--temp_location", "gs://my-bucket/tmp", "--region", "us-central1"],
            "--runner DataflowRunner: Beam refuses these options: Missing required option: "
            f"project. Fix: {PROJECT_FIX} {DOCS}",
        ),
        (  # `--region "$REGION"`, unset: Beam took it, and Dataflow refused the staged job
            ["--temp_location", "gs://my-bucket/tmp", "--region", "", "--project", "my-project"],
            f"--region '' is empty; {REGION_FIX}.",
        ),
        (  # `--region "$REGION "`, unset: spaces alone name no region either
            ["--temp_location", "gs://my-bucket/tmp", "--region", " ", "--project", "my-project"],
            f"--region ' ' is empty; {REGION_FIX}.",
        ),
        (  # a refusal Beam words otherwise gets no --region fix, though "region" is in it
            [
                *("--temp_location", "gs://my-bucket/tmp", "--region", "us-central1"),
                *("--project", "my-project-123", "--worker_region", "us-central1"),
                *("--worker_zone", "us-central1-a"),
            ],
            "--runner DataflowRunner: Beam refuses these options: worker_region and "
            f"worker_zone are mutually exclusive. Fix: correct the options it names {DOCS}",
        ),
        (
            ["--temp_location", "gs://my-bucket/tmp", "--region", "us-central1", "--project", "p"],
            "--runner DataflowRunner: Beam refuses these options: Invalid Project ID (p). "
            "Please make sure you specified the Project ID, not project description. "
            f"Fix: {PROJECT_FIX} {DOCS}",
        ),
    ],
)
def test_dataflow_settings_beam_needs_are_refused_before_the_model(
    flags, error, monkeypatch, capsys
):
    status, err = _exit_and_error([*DRY_RUN, *SHIPPED, *flags], monkeypatch, capsys)
    assert (status, err) == (2, f"error: {error}\n")


@pytest.mark.parametrize(
    "flags, error",
    [
        (
            [],
            "--setup_file or --sdk_container_image is needed on Dataflow: no flag ships this "
            "package to the workers, which would fail with ModuleNotFoundError: No module "
            "named 'transforms'; pass --setup_file ./setup.py, or --sdk_container_image "
            f"with the worker image built from the Dockerfile {DOCS}",
        ),
        (
            ["--setup_file", "/nowhere/setup.py"],
            "--setup_file '/nowhere/setup.py' is not a file; pass an existing file.",
        ),
        (  # Beam's stager refused it after the model loaded: exit 1, "the run failed"
            ["--sdk_location", "/nowhere/beam.tar.gz"],
            "--sdk_location '/nowhere/beam.tar.gz' is neither a file nor a folder holding "
            "dataflow_python_sdk.tar; pass Beam's SDK tarball, or leave --sdk_location out.",
        ),
        (
            ["--sdk_location", "{tmp}"],
            "--sdk_location '{tmp}' is neither a file nor a folder holding "
            "dataflow_python_sdk.tar;",
        ),
        (  # Beam's stager refused it after the model loaded: exit 1, "the run failed"
            ["--setup_file", "{tmp}/commented.txt"],
            "--setup_file '{tmp}/commented.txt' is not named setup.py or pyproject.toml, the "
            "build files Beam stages a package with; pass --setup_file ./setup.py.",
        ),
        (  # a commented-out line ships nothing
            ["--requirements_file", "{tmp}/commented.txt"],
            "--setup_file or --sdk_container_image is needed on Dataflow",
        ),
        (
            ["--requirements_file", "{tmp}/binary.txt"],
            "--requirements_file '{tmp}/binary.txt' is not a UTF-8 text file (invalid start "
            "byte); pass a pip requirements file.",
        ),
    ],
)
def test_dataflow_launch_that_does_not_ship_this_package_is_refused(
    flags, error, monkeypatch, capsys, tmp_path
):
    (tmp_path / "commented.txt").write_text("# ig-audit==0.1.0\nnumpy\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe ig-audit")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    error = error.format(tmp=tmp_path)
    args = [*GCP, "--output", "gs://my-bucket/out", *flags]
    status, err = _exit_and_error(args, monkeypatch, capsys)
    assert status == 2 and err.startswith(f"error: {error}") and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "request_flags",
    [
        ["--dataflow_service_options", GPU],
        ["--experiments", "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"],
        ["--resource_hints", "accelerator=type:nvidia-l4;count:1;install-nvidia-driver"],
    ],
)
def test_gpu_workers_without_the_worker_image_are_refused(
    request_flags, monkeypatch, capsys, tmp_path
):
    # The default image with --setup_file gets TensorFlow without CUDA: GPUs paid, unused.
    (tmp_path / "setup.py").write_text("")
    args = [*GCP, "--setup_file", str(tmp_path / "setup.py"), *request_flags]
    status, err = _exit_and_error([*args, "--output", "gs://my-bucket/out"], monkeypatch, capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(
        f"error: {' '.join(request_flags)} asks for GPUs, which need --sdk_container_image "
        "with the worker image built from the Dockerfile"
    ), err
    monkeypatch.undo()  # the model may be resolved again
    image = ["--sdk_container_image", IMAGE, "--machine_type", "g2-standard-4"]
    job, _ = prepare([*args, *image, "--output", "gs://my-bucket/out"])
    assert job.lock is None  # with the image: built (a dry run)
    # Beam's older name of the flag names the worker image as well.
    image[0] = "--worker_harness_container_image"
    job, _ = prepare([*args, *image, "--output", "gs://my-bucket/out2"])
    assert job.lock is None


@pytest.mark.parametrize("machine", [[], ["--machine_type", "n1-standard-4"]])
def test_l4_gpus_without_a_g2_machine_type_are_refused(machine, monkeypatch, capsys):
    # Dataflow attaches L4s to G2 machines only: the job failed there, after staging.
    request = ["--dataflow_service_options", GPU]
    args = [*GCP, "--sdk_container_image", IMAGE, *request, *machine, *SHIPPED[2:]]
    status, err = _exit_and_error(args, monkeypatch, capsys)
    given = f"--machine_type {machine[1]!r}" if machine else "no --machine_type"
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(
        f"error: --dataflow_service_options {GPU} asks for NVIDIA L4 GPUs, which Dataflow "
        f"attaches only to G2 machine types, and {given}"
    ), err
    assert "pass --machine_type g2-standard-4" in err


L4_HINT = "accelerator=type:nvidia-l4;count:1;install-nvidia-driver"


@pytest.mark.parametrize(
    "flags",
    [
        [  # a machine type as a full URL: its last part names it
            *["--dataflow_service_options", GPU, "--machine_type"],
            "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a/"
            "machineTypes/g2-standard-8",
        ],
        # Dataflow Prime picks the worker's machine for the hint itself
        ["--dataflow_service_options", "enable_prime", "--resource_hints", L4_HINT],
        ["--experiments", "enable_prime", "--resource_hints", L4_HINT],
    ],
)
def test_l4_gpus_on_a_g2_machine_named_by_url_or_with_prime_are_not_refused(flags):
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.runner import _check_l4_machine

    assert _check_l4_machine(PipelineOptions(flags)) is None


@pytest.mark.parametrize(
    "flags, error",
    [
        (
            ["--output", "gs://my-bucket/out", "--resume", "--overwrite"],
            "--resume continues an earlier run and --overwrite replaces it: pick one.",
        ),
        (
            ["--output", "gs://my-bucket/out[1]"],
            "--output 'gs://my-bucket/out[1]' holds a glob character (*, ? or [)",
        ),
    ],
)
def test_a_dry_run_refuses_output_flags_the_real_launch_refuses(flags, error, monkeypatch, capsys):
    # These read no file system: the dry run skips only the checks that need GCS.
    args = [*GCP, "--sdk_container_image", IMAGE, *flags]
    status, err = _exit_and_error(args, monkeypatch, capsys)
    assert status == 2 and err.startswith(f"error: {error}") and err.count("\n") == 1, err


@pytest.mark.parametrize("value", ["False", "false", "0", "no", "off"])
def test_a_dry_run_flag_that_reads_false_is_refused(value, monkeypatch, capsys):
    # Beam takes any value of --dry_run for true: '--dry_run=False' built the job and
    # submitted nothing, where the user asked for a real run.
    args = [a for a in GCP if not a.startswith("--dry_run")] + ["--sdk_container_image", IMAGE]
    args += ["--output", "gs://my-bucket/out", f"--dry_run={value}"]
    status, err = _exit_and_error(args, monkeypatch, capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert err == (
        f"error: --dry_run {value!r} is a dry run all the same (Beam takes any value for "
        "true): drop --dry_run to run the job, or pass --dry_run=True to build it only.\n"
    )


def test_a_gcs_bucket_named_with_dots_is_taken():
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    from pipeline.options import AuditOptions, check_schemes  # noqa: PLC0415

    # Cloud Storage names a bucket by a domain, dots and all (audits.example.com).
    argv = ["--output", "gs://audits.example.com/out", "--dataset", "gs://a.b/images"]
    check_schemes(PipelineOptions(argv).view_as(AuditOptions))


@pytest.mark.parametrize(
    "flag, value, extra",
    [
        ("--output", "gs:///audits/a", []),  # README's gs://$BUCKET/... with BUCKET unset
        ("--output", "gs://My_Bucket/out", []),
        ("--output", "gs://-bucket/out", []),  # a name starts and ends with a letter or digit
        ("--output", "gs://bucket./out", []),
        ("--dataset", "gs:///imagenet-a", []),
        ("--data_dir", "gs:///tfds", ["--dataset", "imagenet_a"]),
        ("--model", "gs:///models/m.keras", []),
        ("--class_names", "gs://my bucket/names.txt", []),
    ],
)
def test_a_gcs_path_without_a_valid_bucket_is_refused_naming_it(
    flag, value, extra, monkeypatch, capsys
):
    # The dry run built a job writing to or reading from no bucket ('gs:///audits/a').
    args = [*GCP, "--sdk_container_image", IMAGE, "--output", "gs://my-bucket/out", *extra]
    status, err = _exit_and_error([*args, flag, value], monkeypatch, capsys)
    bucket = value[len("gs://") :].split("/")[0]
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {flag} {value!r} names no valid Cloud Storage bucket "), err
    assert f"({bucket!r})" in err and "gs://<bucket>/" in err, err
    assert ("(is a variable such as $BUCKET unset?)" in err) is (not bucket), err


@pytest.mark.parametrize(
    "flags",
    [
        ["--extra_package", "{tmp}/ig_audit-0.1.0.tar.gz"],
        ["--extra_package", "gs://my-bucket/ig_audit-0.1.0.tar.gz"],  # Beam's stager fetches it
        ["--requirements_file", "{tmp}/requirements.txt"],  # its line names ig-audit
        ["--setup_file", "{tmp}/pyproject.toml"],  # the other build file Beam stages with
    ],
)
def test_a_dataflow_package_or_requirement_naming_this_package_ships_it(tmp_path, flags):
    (tmp_path / "ig_audit-0.1.0.tar.gz").write_bytes(b"")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "requirements.txt").write_text("# the job\nig-audit==0.1.0\n")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    job, _ = prepare([*GCP, "--output", "gs://my-bucket/out", *flags])
    assert job.lock is None  # a dry run: --output untouched


@pytest.mark.parametrize(
    "flags, error",
    [
        ([], "--output 'gs://my-bucket/out' needs Google Cloud credentials to write"),
        (  # read at launch: it was read first, offline for minutes, then said it could not be
            ["--class_names", "gs://b1/names.txt"],
            "--output 'gs://my-bucket/out' needs Google Cloud credentials to write",
        ),
        (
            ["--class_names", "gs://b1/names.txt", "--dry_run=True", "--no_auth"],
            "--class_names 'gs://b1/names.txt' needs Google Cloud credentials to read",
        ),
    ],
)
def test_a_dataflow_launch_without_credentials_is_refused_before_beam_looks_at_gcs(
    flags, error, tmp_path, monkeypatch, capsys
):
    # Beam's checks look the staging bucket up (soft-delete policy), offline for minutes.
    from apache_beam.io.gcp import gcsio

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google.auth: not a Google Cloud VM
    monkeypatch.setattr(gcsio, "GcsIO", lambda *_: pytest.fail("Cloud Storage was called"))
    args = ["--runner", "DataflowRunner", *PROJECT_REGION, "--temp_location", "gs://my-bucket/tmp"]
    status, err = _exit_and_error([*args, *SHIPPED, *flags], monkeypatch, capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {error}, and none were found; run `gcloud auth"), err


@pytest.mark.parametrize(
    "flags, error",
    [
        ([], "--temp_location: Dataflow needs a gs:// folder"),
        (["--temp_location", "gs://my-bucket/tmp"], "--runner DataflowRunner: Beam refuses"),
        ([*PROJECT_REGION, "--temp_location", "gs://my-bucket/tmp"], "--setup_file or --sdk_"),
    ],
)
def test_a_dataflow_launch_names_missing_flags_before_missing_credentials(
    flags, error, tmp_path, monkeypatch, capsys
):
    # Without credentials, a launch missing flags named the credentials alone: set up
    # (gcloud auth), it then named each missing flag in turn.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # google.auth: not a Google Cloud VM
    args = ["--runner", "DataflowRunner", "--output", "gs://my-bucket/out", *flags]
    status, err = _exit_and_error(args, monkeypatch, capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {error}"), err
    if "Beam refuses" in error:
        assert "Missing required option: project. Missing required option: region." in err


# `main` of the job's flags (argv[2:]) with each --model of argv[1] (comma-separated)
# in turn, in one process (one each spent its time starting TensorFlow): each run's
# stderr follows a `run: MODEL` line and ends in a `ran: STATUS` line.
_EACH_MODEL = """
import sys
from pipeline.__main__ import main
for model in sys.argv[1].split(","):
    print("run:", model, file=sys.stderr, flush=True)
    print("ran:", main([*sys.argv[2:], "--model", model]), file=sys.stderr, flush=True)
"""


def test_a_gcs_model_cloud_storage_cannot_serve_is_refused_saying_so():
    # A .keras file was a failed run (exit 1), a SavedModel "not a SavedModel folder".
    # Cloud Storage unreachable at once: TensorFlow's requests go to a closed port, once.
    models = ["gs://my-bucket/models/m.keras", "gs://my-bucket/models/saved"]
    env = {"https_proxy": "http://127.0.0.1:9", "GCS_RETRY_CONFIG_MAX_RETRIES": "0"}
    paths = ["--dataset", "gs://my-bucket/images", "--output", "gs://my-bucket/out"]
    done = subprocess.run(
        [sys.executable, "-c", _EACH_MODEL, ",".join(models), *GCP, "--setup_file", "setup.py"]
        + paths,
        cwd=ROOT,
        env={**os.environ, **env, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    runs = re.findall(r"^run: (.*)\n((?:.*\n)*?)ran: (.*)$", done.stderr, re.M)
    assert [(model, status) for model, _, status in runs] == [(m, "2") for m in models], done.stderr
    for model, stderr, _ in runs:
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, stderr
        assert errors[0].startswith(f"error: --model {model!r} cannot be read ("), errors[0]
        assert errors[0].endswith(
            "it needs network and Google Cloud credentials (gcloud auth application-default login)."
        )


def test_dataflow_takes_the_region_from_the_environment_and_staging_for_temp(monkeypatch):
    # What Beam accepts is accepted: its default region, a staging location alone.
    monkeypatch.setenv("CLOUDSDK_COMPUTE_REGION", "europe-west4")
    _, options = prepare(
        [
            *DRY_RUN,
            "--project",
            "my-project",
            "--staging_location",
            "gs://my-bucket/stage",
            *SHIPPED,
        ]
    )
    cloud = options.view_as(GoogleCloudOptions)
    assert (cloud.region, cloud.temp_location) == ("europe-west4", "gs://my-bucket/stage")


def test_unprepared_tfds_dataset_is_not_prepared_by_a_dataflow_launcher(tmp_path):
    with pytest.raises(ValueError, match=r"does not prepare datasets.*tfds build imagenet_a"):
        sources.resolve_tfds("imagenet_a", "test", str(tmp_path), True, remote_workers=True)
    assert not any(tmp_path.iterdir())  # nothing downloaded or written


def _dockerfile_args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=\"?([^\"\n]*)\"?$", text, flags=re.MULTILINE))


def _setup_py(variable: str = "REQUIRED") -> tuple[dict[str, SpecifierSet], SpecifierSet]:
    """setup.py's requirements (name -> specifier; `variable`: REQUIRED, or EXTRAS for
    all its extras') and python_requires, read statically."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    value = ast.literal_eval(
        next(
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == variable
        )
    )
    requirements = value if isinstance(value, list) else [r for v in value.values() for r in v]
    specs = {}
    for requirement in requirements:
        name, spec = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?(.*)", requirement).groups()
        specs[name.lower()] = SpecifierSet(spec)
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.keywords)
    python = next(k.value.value for k in call.keywords if k.arg == "python_requires")
    return specs, SpecifierSet(python)


def test_dockerfile_matches_setup_py_and_the_launcher():
    text = (ROOT / "Dockerfile").read_text()
    args = _dockerfile_args(text)
    required, python_requires = _setup_py()

    # Dataflow runs the job in this image: Python and Beam must be the launcher's.
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert args["PYTHON_VERSION"] + ".0" in python_requires
    assert args["BEAM_VERSION"] == metadata.version("apache-beam")
    assert args["BEAM_VERSION"] in required["apache-beam"]
    assert args["TF_VERSION"] == metadata.version("tensorflow")
    assert args["TF_VERSION"] in required["tensorflow"]

    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam_sdk" in text
    assert "COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam" in text
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
    assert '"tensorflow[and-cuda]==${TF_VERSION}"' in text
    assert '"apache-beam[gcp]==${BEAM_VERSION}"' in text
    # Both installs at the launcher's tested versions (a worker with another keras or
    # numpy than the launcher's computes with code no test ran).
    installs = re.findall(r"^RUN pip install (.*?)(?<!\\)$", text, flags=re.MULTILINE | re.S)
    assert len(installs) == 2 and all(i.startswith("-c constraints.txt ") for i in installs)
    assert re.search(r"^RUN pip install -c constraints\.txt \\\n\s+\. ", text, flags=re.M)
    assert HUB_ALIASES["inception_v1"] in args["HUB_MODELS"].split()


def _constraints() -> dict[str, str]:
    """constraints.txt: the versions bootstrap.sh installs, by canonical name."""
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pins}


def test_constraints_pin_what_setup_py_accepts_the_dockerfile_builds_and_the_tests_run():
    # Fresh checkouts and CI install these versions, not the newest a range allows
    # on the day (a new Beam would fail the Dockerfile's pin above).
    pins = _constraints()
    required = {**_setup_py()[0], **_setup_py("EXTRAS")[0]}
    outside = {n: pins.get(canonicalize_name(n)) for n, s in required.items()}
    outside = {n: v for n, v in outside.items() if v is None or v not in required[n]}
    assert not outside, f"constraints.txt misses or pins outside setup.py's range: {outside}"
    args = _dockerfile_args((ROOT / "Dockerfile").read_text())
    assert (pins["apache-beam"], pins["tensorflow"]) == (args["BEAM_VERSION"], args["TF_VERSION"])
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    moved = {n: (v, installed[n]) for n, v in pins.items() if installed.get(n, v) != v}
    assert not moved, (
        f"installed versions differ from constraints.txt (pinned, installed): {moved}; "
        "test them, then pip freeze them into constraints.txt (see its header)"
    )


def test_dockerfile_copies_what_the_package_needs_and_dockerignore_lets_it_through():
    text = (ROOT / "Dockerfile").read_text()
    copied = {
        source
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE)
        for source in line.split()[:-1]
    }
    assert copied == {"constraints.txt", "setup.py", "pyproject.toml", "pipeline", "transforms"}
    assert all((ROOT / source).exists() for source in copied)
    # setup.py's packages are exactly the copied folders.
    assert re.search(
        r'include=\["pipeline", "pipeline\.\*", "transforms", "transforms\.\*"\]',
        (ROOT / "setup.py").read_text(),
    )
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Everything is excluded first, then exactly what the image copies comes back.
    assert rules[0] == "*"
    included = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert included == copied


def test_gpu_settings_xla_with_padded_calls_give_the_same_numbers_on_cpu(
    quadratic_saved_model, quadratic_weights
):
    # On a GPU, XLA is on (--jit_compile auto) and calls are padded to powers of
    # two so that XLA compiles few shapes; the same code runs on CPU here.
    import numpy as np

    from transforms.tf_model import Classifier, padded_batch, resolve_model

    assert [padded_batch(n) for n in (1, 2, 3, 4, 5, 8, 9, 23, 32, 33)] == [
        1,
        2,
        4,
        4,
        8,
        8,
        16,
        32,
        32,
        64,
    ]
    spec = resolve_model(quadratic_saved_model)
    plain, xla = Classifier(spec, jit_compile=False), Classifier(spec, jit_compile=True)
    assert xla.settings.jit_compile and not plain.settings.jit_compile
    weights = quadratic_weights[:, :1000]
    rng = np.random.default_rng(5)
    for rows in (3, 5):  # run as 4 and 8 rows
        inputs = rng.random((rows, 16, 16, 3), dtype=np.float32)
        baselines = rng.random((rows, 16, 16, 3), dtype=np.float32)
        alphas = rng.random(rows, dtype=np.float32)
        targets = rng.integers(0, 1000, rows)
        args = (inputs, baselines, alphas, targets)

        scores, grads = xla.score_grad_fn("raw")(*args)
        points = baselines + alphas[:, None, None, None] * (inputs - baselines)
        flat = points.reshape(rows, -1)
        expected = np.einsum("ni,in->n", flat * flat, weights[:, targets])
        np.testing.assert_allclose(scores, expected, rtol=1e-4)
        np.testing.assert_allclose(
            grads, (2 * flat * weights[:, targets].T).reshape(points.shape), rtol=1e-4, atol=1e-6
        )
        for got, want in zip(
            xla.score_grad_fn("softmax")(*args), plain.score_grad_fn("softmax")(*args), strict=True
        ):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(xla.score_fn("raw")(*args), expected, rtol=1e-4)
        np.testing.assert_allclose(xla.logits(inputs), plain.logits(inputs), rtol=1e-4, atol=1e-5)
        assert xla.logits(inputs).shape == (rows, 1000)


def test_every_package_the_job_imports_is_a_requirement_of_setup_py():
    # Dataflow workers pip-install setup.py's requirements: a module that arrives
    # only as another package's dependency today may not tomorrow.
    required, _ = _setup_py()
    distributions = metadata.packages_distributions()
    # google.auth (for gs:// credentials) is what the [gcp] extra of Beam is for.
    distributions["google"] = ["apache-beam"]
    imported = set()
    for path in [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("transforms/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                imported.add(node.module.split(".")[0])
    undeclared = {}
    for module in sorted(imported - set(sys.stdlib_module_names) - {"pipeline", "transforms"}):
        names = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        if not names & {r.replace("_", "-") for r in required}:
            undeclared[module] = sorted(names)
    assert undeclared == {}


def test_a_dry_run_of_a_resume_says_it_reads_no_earlier_run(caplog):
    # It cannot (no Google Cloud access): the job it builds skips no image, and
    # writes nothing (a real launch writes the skipped ids' file in --output).
    with caplog.at_level(logging.INFO, logger="pipeline.main"):
        job, _ = prepare(
            [*GCP, "--sdk_container_image", IMAGE, "--output", "gs://b/out", "--resume"]
        )
    assert job.lock is None and job.done_file is None and not job.done_before
    assert "Dry run: --resume reads no earlier run, so the job built skips no image." in (
        caplog.text
    )


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "launch"])
def test_a_resume_built_as_a_template_is_refused_before_anything_is_read(
    dry_run, tmp_path, monkeypatch, capsys
):
    """A template runs later, maybe more than once; a --resume reads the earlier run's
    rows as it is built. The template's job skipped the images done at build time
    (redoing those done since: two rows each) and read their ids from the build's
    `<output>/.tmp/checkpoints/<run id>/done_before.json.gz`, which the next run on the
    folder deletes: its workers then failed, telling the user to run the same command
    again. The build also left the folder's manifest "running" and its errors deleted."""
    from apache_beam.io.gcp import gcsio

    monkeypatch.setattr(gcsio, "GcsIO", lambda *_: pytest.fail("Cloud Storage was called"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login
    args = ["--runner", "DataflowRunner", *PROJECT_REGION, "--temp_location", "gs://my-bucket/tmp"]
    args += [*SHIPPED, "--resume", "--template_location", "gs://my-bucket/templates/audit"]
    if dry_run:
        args += ["--dry_run=True", "--no_auth"]
    status, err = _exit_and_error(args, monkeypatch, capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert err == (
        "error: --resume with --template_location: a template runs later, but a --resume "
        "reads the earlier run's rows in 'gs://my-bucket/out' as it is built, so its job "
        "would redo the images done in between, giving them a second row. Launch the "
        "--resume itself (drop --template_location), or build the template for a new "
        "--output.\n"
    )


def test_a_template_of_a_run_that_is_no_resume_is_still_built(offline_hub):
    # The refusal above is of --resume alone: the same template without it is built.
    template = ["--template_location", "gs://my-bucket/templates/audit"]
    job, options = prepare([*GCP, *SHIPPED, *template])
    assert job.lock is None and not job.done_before
    assert options.view_as(GoogleCloudOptions).template_location == template[1]
