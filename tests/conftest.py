"""Shared fixtures: tiny real models (Keras and SavedModel) and image folders, all offline."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import zipfile
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZE = 16  # side of the tiny models' input
WNID_CAT = "n02123045"  # ImageNet class 281, tabby cat
WNID_SHARK = "n01484850"  # ImageNet class 2, great white shark


# The test files that take longest, run first, longest first (the sums of their
# tests' junit times in `.ci/run` on a clean clone, 2026-12-07 night, on a 2-core
# AMD EPYC, a fast hour: 1,263 test-seconds):
# with a worker process per file (run_tests.sh's `-n 2 --dist loadfile`), each worker
# takes the next file as it finishes one, so the last files are short ones, not
# minutes of killed-run or report tests while the other worker waits. The rest follow
# by name.
_SLOW_FIRST = (
    "test_cli.py",  # ~260 s
    "test_multiprocess.py",  # ~185 s
    "test_output_folder.py",  # ~180 s
    "test_report.py",  # ~145 s
    "test_reliability.py",  # ~70 s
    "test_sources.py",  # ~70 s
    "test_sanity.py",  # ~65 s
    "test_plots.py",  # ~55 s
    "test_sample_run.py",  # ~50 s
    "test_dataflow.py",  # ~35 s
    "test_pipeline.py",  # ~35 s
    "test_faithfulness_pipeline.py",
    "test_attribution.py",
    "test_commands.py",  # ~15-20 s each
)


@pytest.fixture(autouse=True)
def _no_worker_ends_from_other_tests():
    """Each test starts with no ended worker process on record. `pipeline.logs` keeps
    a run's worker ends (and installs a thread hook) for its process, which is one run
    in a user's process but many tests here: a test that saw a worker end (return
    code 134) made a later test's error summary blame that worker."""
    import threading

    from pipeline import logs

    hook = threading.excepthook
    logs.forget_worker_ends()
    yield
    threading.excepthook = hook
    logs.forget_worker_ends()


# The job's `dofn_specs_kept` for the whole session: Beam asks a DoFn's state and
# timer specs about 8 times for each of a run's ~55 DoFns, each time taking the
# signature of every method of the DoFn, and the tests build graphs outside a run's
# own block too (hundreds of runs and graphs in each test process).
# tests/test_pipeline.py checks its answers are Beam's for every DoFn of a run.
_SESSION = contextlib.ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    from pipeline.beam_reuse import dofn_specs_kept

    _SESSION.enter_context(dofn_specs_kept())
    # pytest-xdist hands out the files in this order only with --no-loadscope-reorder:
    # by default (3.x) it takes the files of most tests first, which put the longest
    # file, test_multiprocess.py (12 tests), near the end, one worker on it alone.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_unconfigure(config: pytest.Config) -> None:
    _SESSION.close()


@pytest.fixture
def beams_own_dofn_specs():
    """Beam's own `userstate.get_dofn_specs`, the session's `dofn_specs_kept` left for
    the test's length: the test's own blocks are the only ones, its first the one
    that makes the change."""
    from apache_beam.transforms import userstate

    from pipeline.beam_reuse import dofn_specs_kept

    _SESSION.close()
    try:
        yield userstate.get_dofn_specs
    finally:
        _SESSION.enter_context(dofn_specs_kept())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return _SLOW_FIRST.index(name) if name in _SLOW_FIRST else len(_SLOW_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


def job_dofns(*flags: str) -> list:
    """The DoFns of the job's graph (its own and Beam's, of the read, RunInference and
    the sinks) as `python -m pipeline FLAGS` builds it, not run."""
    import apache_beam as beam
    from apache_beam.pipeline import PipelineVisitor

    from pipeline.main import build_pipeline, prepare

    job, options = prepare(list(flags))
    job.lock.release()  # built, not run
    p = beam.Pipeline(options=options)
    build_pipeline(p, job)
    fns = []

    class DoFns(PipelineVisitor):
        def visit_transform(self, node):
            if isinstance(getattr(node.transform, "fn", None), beam.DoFn):
                fns.append(node.transform.fn)

    p.visit(DoFns())
    return fns


@pytest.fixture(scope="session")
def linear_weights() -> tuple[np.ndarray, np.ndarray]:
    """W float32 [16*16*3, 1000] and b [1000] of the linear test classifier."""
    rng = np.random.default_rng(1)
    return (
        rng.normal(0, 0.05, size=(SIZE * SIZE * 3, 1000)).astype(np.float32),
        rng.normal(0, 0.1, size=1000).astype(np.float32),
    )


def dense_keras(path, weights: np.ndarray, bias: np.ndarray) -> str:
    """A `.keras` file at `path` of SIZE x SIZE x 3 inputs: logits = flatten(x) @ weights
    + bias (no softmax), so IG = x * weights[:, t] exactly against a black baseline."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 3))
    dense = keras.layers.Dense(weights.shape[1])
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights, bias])
    model.save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def linear_keras(tmp_path_factory, linear_weights) -> str:
    """A `.keras` file: logits = flatten(x) @ W + b, so IG = x * W[:, t] exactly."""
    return dense_keras(tmp_path_factory.mktemp("models") / "linear.keras", *linear_weights)


def _save_quadratic(path: str, weights: np.ndarray, num_outputs: int) -> None:
    """A SavedModel F_k(x) = sum_i x_i^2 W_ik with a fixed input size: IG = x^2 * W[:, k]."""
    import tensorflow as tf

    class Quadratic(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(weights[:, :num_outputs])

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            return tf.reshape(x * x, [-1, SIZE * SIZE * 3]) @ self.w

    tf.saved_model.save(Quadratic(), path)


@pytest.fixture(scope="session")
def quadratic_saved_model(tmp_path_factory, quadratic_weights) -> str:
    """A SavedModel folder with 1000 outputs and a static 16x16 input signature."""
    path = str(tmp_path_factory.mktemp("models") / "quadratic")
    _save_quadratic(path, quadratic_weights, 1000)
    return path


@pytest.fixture(scope="session")
def quadratic_weights() -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.normal(0, 0.1, size=(SIZE * SIZE * 3, 1001)).astype(np.float32)


@pytest.fixture(scope="session")
def printing_saved_model(tmp_path_factory, quadratic_weights) -> str:
    """A SavedModel of 3 outputs, F(x) = flatten(x) @ W, whose every call prints 'batch
    of N' to stdout with `tf.print(..., output_stream=sys.stdout)` (a debugging line
    left in a user's model): TensorFlow's C++ writes it to file descriptor 1."""
    import tensorflow as tf

    class Printing(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(quadratic_weights[:, :3])

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x):
            tf.print("batch of", tf.shape(x)[0], output_stream=sys.stdout)
            return tf.reshape(x, [-1, SIZE * SIZE * 3]) @ self.w

    path = str(tmp_path_factory.mktemp("models") / "printing")
    tf.saved_model.save(Printing(), path)
    return path


@pytest.fixture
def unloadable_keras(tmp_path) -> str:
    """A .keras file no load takes (a zip archive, as one is, holding no weights): a
    launch that loads it fails saying so, after --output's checks; one refused before
    the model loads says its own error alone."""
    path = tmp_path / "unloadable.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
    return str(path)


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory, quadratic_weights) -> str:
    """A TF Hub cache holding a 1001-output model under the seed's Inception V1 handle.

    `hub.load(handle)` finds the handle's cache folder (sha1 of the handle) and
    loads it without network, exactly as after a real download.
    """
    from transforms.tf_model import HUB_ALIASES

    cache = tmp_path_factory.mktemp("tfhub_cache")
    handle = HUB_ALIASES["inception_v1"]
    _save_quadratic(str(cache / hashlib.sha1(handle.encode()).hexdigest()), quadratic_weights, 1001)
    return str(cache)


@pytest.fixture
def offline_hub(hub_cache):
    with mock.patch.dict(os.environ, {"TFHUB_CACHE_DIR": hub_cache}):
        yield hub_cache


@pytest.fixture
def no_proxy_set(monkeypatch) -> None:
    """No proxy in the environment (as on many CI machines, `https_proxy` may be set):
    connections go to their hosts, and the network probes ask the hosts."""
    for scheme in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)


@pytest.fixture
def unreachable_storage(monkeypatch, no_proxy_set) -> None:
    """gs:// calls go to a storage host that never resolves (an emulator's), with no
    proxy (through one, the probe would ask the proxy)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://storage.invalid:4443")


@pytest.fixture
def gcs_stub(tmp_path, monkeypatch, no_proxy_set):
    """gs://bucket/... answered by a local peer speaking Cloud Storage's JSON API
    (`tests.gcs_stub`), through the real Beam file system and storage client (and
    Arrow's, which reads a run's Parquet files): its `objects` (name: bytes) are the
    bucket's, empty at first; any other object is Google's 404. Beam's credentials, kept for the process once looked up, are looked up
    again, a service account's whose tokens the peer gives (a lookup that finds none
    retries for 28 s)."""
    from apache_beam.internal.gcp import auth  # noqa: PLC0415 - slow; these tests only

    from tests import gcs_stub as peer  # noqa: PLC0415

    with peer.serving("bucket") as stub:
        key = tmp_path / "service_account.json"
        key.write_text(json.dumps(peer.service_account_key(f"{stub.url}/token")))
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", stub.url)
        monkeypatch.setenv("CLOUD_STORAGE_EMULATOR_ENDPOINT", stub.url)  # Arrow's reads
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login
        monkeypatch.setenv("NO_GCE_CHECK", "True")  # google.auth: not a Google Cloud VM
        monkeypatch.setattr(auth._Credentials, "_credentials_init", False)
        monkeypatch.setattr(auth._Credentials, "_credentials", None)
        yield stub


def closed_port() -> int:
    """A local port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_image(path, array: np.ndarray, **save_kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_kwargs)


def user_doc_blocks(language: str) -> list[tuple[str, str]]:
    """The ```language blocks of the user docs, README.md then docs/*.md by name:
    (file, block). Their examples run as is against ./output/sample wherever they live."""
    root = Path(__file__).resolve().parents[1]
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    pattern = rf"^```{language}\n(.*?)^```"
    return [
        (str(f.relative_to(root)), block)
        for f in files
        for block in re.findall(pattern, f.read_text(), flags=re.S | re.M)
    ]


def cli_args(**flags: object) -> list[str]:
    """Command-line arguments from keywords, in their order; True is a flag without a value.

    cli_args(dataset=root, steps=2, overwrite=True) == ["--dataset", root, "--steps", "2",
    "--overwrite"].
    """
    args = []
    for name, value in flags.items():
        args += [f"--{name}"] if value is True else [f"--{name}", str(value)]
    return args


def launched(
    command: list[str],
    *,
    ctrl_c: bool = False,
    file_size_limit: int | None = None,
    no_stdout: bool = False,
) -> list[str]:
    """`command` started by a small Python that sets up the process, then execs `command`
    in it (same pid): with `ctrl_c`, SIGINT back to its default, so that Python turns it
    into KeyboardInterrupt as at a terminal, even when the tests run as a background job
    of a shell without job control (whose children start with SIGINT ignored); with
    `file_size_limit`, files may grow to that many bytes (RLIMIT_FSIZE, as `ulimit -f`
    sets), then a write fails with EFBIG (SIGXFSZ ignored, the process not killed), as
    on a full disk or quota: the real write path, failing; with `no_stdout`, fd 1 is
    closed (`>&-`).

    Not a `preexec_fn`: with one, Popen forks this process (no vfork), and once a test
    here has run Beam, gRPC's fork handlers (grpcio >= 1.80) made about 1 % of such
    children abort before their exec ("epoll_wait error: Bad file descriptor",
    grpc/grpc#43055): a job dead of SIGABRT without a line of its own. The launcher runs
    isolated (`-I -S`: no module of the working folder can shadow `resource`); the
    command it execs keeps the environment."""
    steps = ["import os, resource, signal, sys"]
    if ctrl_c:
        steps.append("signal.signal(signal.SIGINT, signal.SIG_DFL)")
    if file_size_limit is not None:
        steps.append("signal.signal(signal.SIGXFSZ, signal.SIG_IGN)")
        steps.append(f"resource.setrlimit(resource.RLIMIT_FSIZE, ({file_size_limit},) * 2)")
    if no_stdout:
        steps.append("os.close(1)")
    steps.append("os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-I", "-S", "-c", "; ".join(steps), *command]


def bash_words(command: str, locale: str = "C.UTF-8") -> list[bytes]:
    """The words a real bash makes of `command`, a printed command line without its
    program (the bytes each argument holds), in `locale`: what pasting it runs."""
    done = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {command}"],
        capture_output=True,
        check=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": locale},
    )
    return done.stdout.split(b"\0")[:-1]


def printed_summary(output: Path) -> str:
    """The end-of-run summary of the run in `output`, as the command prints it."""
    from pipeline.summary import print_summary  # noqa: PLC0415 - pandas, when needed

    out = io.StringIO()
    with redirect_stdout(out):
        print_summary(json.loads((Path(output) / "manifest.json").read_text()))
    return out.getvalue()


def has_loaded(pid: int, library: str) -> bool:
    """Whether process `pid` maps a shared library whose path holds `library` (Linux)."""
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except FileNotFoundError:  # it ended
        return False


def run_to_a_closed_stdout(
    module: str, *args: str, none: bool = False
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS | head -0`: the command's stdout has lost its reader before
    the first line; with `none`, `python -m MODULE ARGS >&-`: it has no stdout at all
    (Python's sys.stdout is None). stderr is captured."""
    read, write = os.pipe()
    os.close(read)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        return subprocess.run(
            launched([sys.executable, "-m", module, *args], no_stdout=none),
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
        )
    finally:
        os.close(write)


def run_to_an_ascii_stdout(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` whose stdout takes ASCII alone (`PYTHONIOENCODING=ascii`,
    as a C locale without Python's UTF-8 mode gives, or a CI's setting). stdout and
    stderr are captured."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root, "PYTHONIOENCODING": "ascii"},
        capture_output=True,
        timeout=600,
    )


@pytest.fixture
def image_folder(tmp_path) -> dict[str, np.ndarray]:
    """A folder: two cats and a shark in WordNet-id folders, one unlabelled, one broken.

    Returns the folder and, per image id, the uint8 pixels the model sees
    (16x16, so preprocessing only scales them).
    """
    return make_image_folder(tmp_path / "images")


def make_image_folder(root: Path) -> dict:
    """`image_folder`'s images, the same pixels each time, written in `root`; for
    fixtures of a wider scope than a test's."""
    rng = np.random.default_rng(3)
    pixels = {}
    for image_id in (
        f"{WNID_CAT}/cat1.png",
        f"{WNID_CAT}/cat2.png",
        f"{WNID_SHARK}/shark.png",
        "loose.png",
    ):
        array = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
        write_image(root / image_id, array)
        pixels[image_id] = array
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return {"root": str(root), "pixels": pixels}


@pytest.fixture
def folder_run(tmp_path):
    """Four images in a folder and an output of known rows over them, in two shards.

    cat1 (label 281) is right, cat2 (281 -> 282, 90%) and shark (2 -> 3, 60%,
    relative delta 5%) are wrong, loose.png has no label.
    """
    return write_folder_run(tmp_path)


def write_folder_run(tmp_path: Path) -> dict:
    """`folder_run`'s images and output, written under `tmp_path` (for a module-scoped
    fixture whose tests only read them)."""
    from tests.known_rows import make_row, write_output  # noqa: PLC0415 - it imports SIZE from here

    rng = np.random.default_rng(7)
    root = tmp_path / "images"
    pixels = {}
    for image_id, shape in (
        (f"{WNID_CAT}/cat1.png", (SIZE, SIZE, 3)),
        (f"{WNID_CAT}/cat2.png", (SIZE, SIZE, 3)),
        (f"{WNID_SHARK}/shark.png", (SIZE // 2, SIZE, 3)),  # landscape: padded
        ("loose.png", (SIZE, SIZE, 3)),
    ):
        pixels[image_id] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        write_image(root / image_id, pixels[image_id])
    rows = [
        [
            make_row(f"{WNID_SHARK}/shark.png", 2, 3, 0.6, 0.05, seed=3),
            make_row(f"{WNID_CAT}/cat1.png", 281, 281, 0.8, 0.001, seed=1),
        ],
        [
            make_row(f"{WNID_CAT}/cat2.png", 281, 282, 0.9, 0.002, seed=2),
            make_row("loose.png", None, 7, 0.3, 0.004, seed=4),
        ],
    ]
    output = write_output(tmp_path / "out", rows, dataset=str(root))
    return {"output": output, "root": str(root), "pixels": pixels}
