"""A Keras layer that prints to stdout when called, as a debugging line left in a user's
model does: `tf.print(..., output_stream=sys.stdout)`, which TensorFlow's C++ writes to
file descriptor 1, not through `sys.stdout`. Registered (`ig_tests>Printing`), a
`.keras` file holding it loads with `keras.saving.load_model(safe_mode=True)` in a
process that imports this module first: the tests', and a command's run with
`sitecustomize` (`PRINTING_SITE`) on its PYTHONPATH, as a user's environment registers
their layers."""

from __future__ import annotations

import sys

import keras
import tensorflow as tf

#: A `sitecustomize.py` that registers `Printing` in a Python process started with its
#: folder (and this repository's) on PYTHONPATH.
PRINTING_SITE = "import tests.printing_layer  # registers ig_tests>Printing\n"


@keras.saving.register_keras_serializable(package="ig_tests")
class Printing(keras.layers.Layer):
    """The identity, printing 'batch of N' to file descriptor 1 at each call."""

    def call(self, inputs):
        tf.print("batch of", tf.shape(inputs)[0], output_stream=sys.stdout)
        return inputs


def printing_model(path: str, size: int) -> str:
    """A `.keras` file at `path`: `Printing` on a size x size RGB input, then conv (4
    filters, ReLU) -> dense logits of 1000 classes, seeded weights."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((size, size, 3))
    x = Printing(name="printing")(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)
    outputs = keras.layers.Dense(1000, name="logits")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(path)
    return path
