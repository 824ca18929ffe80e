# syntax=docker/dockerfile:1
# The worker image of ig-audit for Dataflow (--sdk_container_image), GPU-ready.
#
# * Python and Apache Beam of the same versions as the launcher (Dataflow runs the
#   pipeline in this image, so they must match the machine that submits it);
# * the Beam SDK worker boot copied from Beam's own image, as in Beam's custom
#   container guide (https://beam.apache.org/documentation/runtime/environments/);
# * TensorFlow with CUDA and cuDNN as pip wheels (tensorflow[and-cuda]); the NVIDIA
#   driver is the VM's (--dataflow_service_options worker_accelerator=...;install-nvidia-driver).
#   Without a GPU the same image runs on the CPU;
# * every package at the launcher's tested version (constraints.txt, as
#   ./scripts/bootstrap.sh installs them; the CUDA wheels, which it does not list,
#   as tensorflow[and-cuda] asks);
# * this package, and the models the workers load, fetched once at build time:
#   the bundled EfficientNet-Lite0 converted to Keras, and the TF Hub Inception V1.
#
# Build and push from the repository root, e.g. with Cloud Build (no local Docker):
#   gcloud builds submit --tag "$REGION-docker.pkg.dev/$PROJECT/ig-audit/worker:0.1.0" .
# tests/test_dataflow.py checks that the versions below match setup.py and the
# installed Beam and TensorFlow.

ARG PYTHON_VERSION=3.11
ARG BEAM_VERSION=2.77.0

FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam_sdk

FROM python:${PYTHON_VERSION}-slim-bookworm

ARG BEAM_VERSION
ARG TF_VERSION=2.21.0
# TF Hub models to cache in the image (space-separated handles); empty for none.
ARG HUB_MODELS="https://tfhub.dev/google/imagenet/inception_v1/classification/4"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IG_AUDIT_CACHE=/opt/ig_audit/cache \
    TFHUB_CACHE_DIR=/opt/ig_audit/tfhub \
    TF_CPP_MIN_LOG_LEVEL=1 \
    TF_FORCE_GPU_ALLOW_GROWTH=true

# The SDK harness entry point of the launcher's Beam version.
COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam

# The heavy, rarely changing dependencies first: their own cached layer.
WORKDIR /opt/ig_audit/src
COPY constraints.txt ./
RUN pip install -c constraints.txt \
      "apache-beam[gcp]==${BEAM_VERSION}" "tensorflow[and-cuda]==${TF_VERSION}"

COPY setup.py pyproject.toml ./
COPY pipeline ./pipeline
COPY transforms ./transforms
RUN pip install -c constraints.txt \
      . "apache-beam[gcp]==${BEAM_VERSION}" "tensorflow[and-cuda]==${TF_VERSION}" \
 && python -c "from transforms.bundled.efficientnet_lite import load_efficientnet_lite0 as load; load()" \
 && for handle in ${HUB_MODELS}; do \
      python -c "import sys, tensorflow_hub as hub; hub.load(sys.argv[1])" "$handle" || exit 1; \
    done \
 && chmod -R a+rX /opt/ig_audit

# Workers import the installed package, not this folder.
WORKDIR /
ENTRYPOINT ["/opt/apache/beam/boot"]
