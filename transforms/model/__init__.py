"""The TensorFlow model adapter's parts; `transforms.tf_model` is its interface."""
