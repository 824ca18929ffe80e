"""A SavedModel's saved_model.pb, parsed once for all of a launch's checks of it
(`transforms.model.loading.saved_model_proto`), and anew once the file changes."""

from __future__ import annotations

import pytest

from tests.conftest import SIZE
from tests.test_graph_scaling import _FOLDED_OPS
from tests.test_tf1_models import CLASSES, _tf1_hub_module, _tf1_saved_model


def _dense(path, outputs: int, side: int = SIZE) -> str:
    """A TF2 SavedModel F(x) = flatten(x) @ W of `outputs` scores for side x side images."""
    import numpy as np
    import tensorflow as tf

    pixels = side * side * 3
    weights = np.random.default_rng(outputs).normal(size=(pixels, outputs)).astype(np.float32)

    class Dense(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(weights)

        @tf.function(input_signature=[tf.TensorSpec([None, side, side, 3], tf.float32)])
        def __call__(self, x):
            return tf.reshape(x, [-1, pixels]) @ self.w

    tf.saved_model.save(Dense(), str(path))
    return str(path)


def _parses() -> int:
    """How many times the job's reader has parsed a saved_model.pb in this process."""
    from transforms.model.loading import saved_model_proto

    return saved_model_proto.cache_info().misses


_MODELS = {
    "tf2": lambda path: _dense(path, CLASSES),
    # its size read from the module's attachments (the recorded size's reader)
    "tf1-hub-module": lambda path: _tf1_hub_module(path, recorded_side=20),
    # loaded by the tags chosen from its proto (the tags' reader)
    "tf1-serve-and-train": lambda path: _tf1_saved_model(path, [["serve"], ["train"]]),
}


@pytest.mark.parametrize("load", [False, True], ids=["no-load", "load"])
@pytest.mark.parametrize("kind", list(_MODELS))
def test_a_launch_parses_the_saved_model_pb_once(kind, load, tmp_path):
    """The launch's checks of one SavedModel (batch statistics, signature, pixel range,
    the tags to load, a TF1 Hub module's recorded size) each read its proto: a launch
    parsed saved_model.pb up to three times (a large or gs:// one: seconds each). Now
    once; a second launch of the unchanged model parses it no more, and learns the same."""
    from transforms.tf_model import resolve_model

    model = _MODELS[kind](tmp_path / "model")
    before = _parses()
    spec = resolve_model(model, load=load)
    assert _parses() - before == 1
    assert spec.num_outputs == CLASSES
    assert resolve_model(model, load=load) == spec
    assert _parses() - before == 1


def test_a_saved_model_saved_anew_at_its_path_is_read_anew(tmp_path):
    """A model saved again at the same path (other outputs, another input size) is read
    from its new file, not the proto parsed before: the launch learns its new signature."""
    from transforms.tf_model import resolve_model

    model = _dense(tmp_path / "model", 3)
    first = resolve_model(model, load=False)
    assert (first.num_outputs, first.image_shape) == (3, (SIZE, SIZE))
    _dense(tmp_path / "model", 7, side=SIZE + 8)
    before = _parses()
    again = resolve_model(model, load=False)
    assert (again.num_outputs, again.image_shape) == (7, (SIZE + 8, SIZE + 8))
    assert _parses() - before == 1


def test_the_launch_leaves_the_shared_proto_as_its_file_holds_it(tmp_path):
    """The parsed proto is shared by every reader: none may change it. Reading a
    Squeeze's dimensions by `attr["squeeze_dims"]` where the export left them out (their
    default, all) added the key to the shared proto, which then differed from its file."""
    import tensorflow as tf
    from tensorflow.python.saved_model import loader_impl

    from transforms.model.loading import saved_model_proto
    from transforms.tf_model import resolve_model

    class Normalizing(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return tf.reduce_mean(_FOLDED_OPS["Squeeze all"](tf, x), [1, 2])

    model = str(tmp_path / "model")
    tf.saved_model.save(Normalizing(), model)
    assert resolve_model(model, load=False).input_range == (0.0, 255.0)
    assert saved_model_proto(model) == loader_impl.parse_saved_model(model)


def test_a_remote_saved_model_of_no_stated_time_is_parsed_at_each_read(tmp_path):
    """A remote file is told from its earlier versions by what its file system states:
    Cloud Storage an object's size and update time. TensorFlow's ram:// states its size
    alone (time 0), which a model saved anew at its path may keep: there the proto is
    not kept by its size but parsed at each read, as before it was kept at all, and a
    model saved again is the one learnt."""
    import tensorflow as tf

    from transforms.tf_model import resolve_model

    folder = f"ram://{tmp_path.name}/model"
    assert resolve_model(_dense(folder, 3), load=False).num_outputs == 3
    assert tf.io.gfile.stat(f"{folder}/saved_model.pb").mtime_nsec == 0
    before = _parses()
    assert resolve_model(folder, load=False).num_outputs == 3
    assert _parses() > before
    _dense(folder, 7)
    assert resolve_model(folder, load=False).num_outputs == 7
