"""ig-audit's library: the job's Beam transforms, its IG engine, and reading results back.

For reading an audit's output (no TensorFlow, no Beam for a local folder):

* `transforms.results`: result rows, attribution arrays, errors, the manifest,
  filters (`misclassified`, `above_tolerance`, `per_class_accuracy`) and the run's
  input images;
* `transforms.plots`: matplotlib figures of a row (`audit_figure`), a grid of rows,
  and the distributions of the checks.

The job's parts: `sources` and `datasource` (inputs), `images` and `preprocess`,
`tf_model` (loading the classifier; its parts in `model`), `baselines`, `ig` (the
Integrated Gradients engine: `ig.integrated_gradients`), `faithfulness`,
`attribution` and `batch` (the model handler), `schema`, `sinks` and `manifest`
(the output).
"""
