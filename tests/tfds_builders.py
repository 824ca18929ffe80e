"""Real TFDS builders for the tests, prepared offline from arrays.

At module level, so that Beam pickles a reader of them by reference (a builder
class pickled by value registers its name twice and fails).
"""

import os
import time

import numpy as np
import tensorflow_datasets as tfds

from tests.conftest import SIZE


def prepared(name: str, root, file_format: str | None = None, num_shards: int | None = None) -> str:
    """The builder `name` of this module, prepared in `root`/tfds: that data_dir.

    `file_format`: TFDS's (`tfrecord` when None, or `array_record`); `num_shards`:
    the files each split is written to (TFDS's choice, one for these, when None).
    """
    data_dir = str(root / "tfds")
    builder = tfds.builder(name, data_dir=data_dir, file_format=file_format)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=num_shards)
    )
    return data_dir


class TinyShades(tfds.core.GeneratorBasedBuilder):
    """Three flat grey images, labelled a or b, in two configs: dark and light."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in ("dark", "light")]

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
            "label": tfds.features.ClassLabel(names=["a", "b"]),
        }
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        level = 40 if self.builder_config.name == "dark" else 220
        for i in range(3):
            yield i, {"image": np.full((SIZE, SIZE, 3), level + i, np.uint8), "label": i % 2}


class TinyUnlabelled(tfds.core.GeneratorBasedBuilder):
    """Two flat grey images and no label feature."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {"image": tfds.features.Image(shape=(SIZE, SIZE, 3))}
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            yield i, {"image": np.full((SIZE, SIZE, 3), 100 + i, np.uint8)}


class TinyTextLabels(tfds.core.GeneratorBasedBuilder):
    """Two flat grey images whose 'label' is text, not a ClassLabel."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
            "label": tfds.features.Text(),
        }
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            yield i, {"image": np.full((SIZE, SIZE, 3), 100 + i, np.uint8), "label": f"cls{i}"}


class TinyImagenette(tfds.core.GeneratorBasedBuilder):
    """Three flat grey images whose classes are ImageNet WordNet ids, as imagenette's
    (its first three, sorted): labels 0, 1, 2 are ImageNet classes 0, 217 and 482."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
            "label": tfds.features.ClassLabel(names=["n01440764", "n02102040", "n02979186"]),
        }
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features), supervised_keys=("image", "label")
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(3):
            yield i, {"image": np.full((SIZE, SIZE, 3), 60 + 40 * i, np.uint8), "label": i}


class TinyTwoImages(tfds.core.GeneratorBasedBuilder):
    """Two flat images per example, a mask first and the photo, named by no supervised keys."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "mask": tfds.features.Image(shape=(SIZE, SIZE, 1)),
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
        }
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            mask = np.full((SIZE, SIZE, 1), 255, np.uint8)
            yield i, {"mask": mask, "image": np.full((SIZE, SIZE, 3), 100 + i, np.uint8)}


class TinyFloatImages(tfds.core.GeneratorBasedBuilder):
    """Two flat mid-grey single-channel float32 images (TFDS stores each float as the
    four bytes of an RGBA PNG pixel)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {"image": tfds.features.Image(shape=(SIZE, SIZE, 1), dtype=np.float32)}
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            yield i, {"image": np.full((SIZE, SIZE, 1), 0.5, np.float32)}


class TinyFileNames(tfds.core.GeneratorBasedBuilder):
    """Two flat grey images whose file names are an 'image/filename' feature (as
    cats_vs_dogs, cassava and caltech_birds2011 name it), in two configs:
    'slash' spells the feature so, 'plain' spells it 'filename' (eurosat, uc_merced)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in ("slash", "plain")]

    def _key(self) -> str:
        return "image/filename" if self.builder_config.name == "slash" else "filename"

    def _info(self):
        features = {"image": tfds.features.Image(shape=(SIZE, SIZE, 3))}
        features[self._key()] = tfds.features.Text()
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            image = np.full((SIZE, SIZE, 3), 100 + i, np.uint8)
            yield i, {"image": image, self._key(): f"photo_{i}.jpg"}


class TinyTwoLabels(tfds.core.GeneratorBasedBuilder):
    """Two flat grey images with two ClassLabels, neither named 'label', and no supervised
    keys (as shapes3d's label_floor_hue, ..., label_shape)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
            "fine": tfds.features.ClassLabel(names=["w", "x", "y", "z"]),
            "coarse": tfds.features.ClassLabel(names=["a", "b"]),
        }
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            image = np.full((SIZE, SIZE, 3), 100 + i, np.uint8)
            yield i, {"image": image, "fine": 2 * i, "coarse": i}


class TinyNumberLabels(tfds.core.GeneratorBasedBuilder):
    """Two flat grey images whose supervised label is a number (an int64 Tensor, not a
    ClassLabel), with a ClassLabel 'species' beside it."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
            "label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "species": tfds.features.ClassLabel(names=["cat", "dog"]),
        }
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features), supervised_keys=("image", "label")
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            image = np.full((SIZE, SIZE, 3), 100 + i, np.uint8)
            yield i, {"image": image, "label": 5 + i, "species": i}


class TinyNumberTargets(tfds.core.GeneratorBasedBuilder):
    """Two flat grey images whose supervised label is a number named 'target' (an int64
    Tensor), and no ClassLabel."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
            "target": tfds.features.Tensor(shape=(), dtype=np.int64),
        }
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features), supervised_keys=("image", "target")
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            yield i, {"image": np.full((SIZE, SIZE, 3), 100 + i, np.uint8), "target": i}


class TinyUnnamedThousand(tfds.core.GeneratorBasedBuilder):
    """Two flat grey images of a ClassLabel of 1000 classes without names (TFDS names
    them '0' to '999'), labelled 281 and 2 (ImageNet's tabby cat and great white shark)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
            "label": tfds.features.ClassLabel(num_classes=1000),
        }
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i, label in enumerate((281, 2)):
            yield i, {"image": np.full((SIZE, SIZE, 3), 100 + i, np.uint8), "label": label}


class TinyNoise(tfds.core.GeneratorBasedBuilder):
    """Random-pixel images in two classes with file names: 8 in 'test', 4 in 'train'."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
            "label": tfds.features.ClassLabel(names=["a", "b"]),
            "file_name": tfds.features.Text(),
        }
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples(0, 8), "train": self._generate_examples(8, 4)}

    def _generate_examples(self, first: int, count: int):
        for i in range(first, first + count):
            image = np.random.default_rng(i).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            yield i, {"image": image, "label": i % 2, "file_name": f"noise_{i}.png"}


class TinyTurnedPhoto(tfds.core.GeneratorBasedBuilder):
    """One flat grey JPEG of SIZE/2 x SIZE pixels as stored, turned upright (SIZE x SIZE/2)
    by its EXIF orientation 6, as a phone writes a portrait photo: TFDS keeps the encoded
    bytes it is given, EXIF and all, as ImageNet-A's builder keeps its JPEGs."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {"image": tfds.features.Image(encoding_format="jpeg")}
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        import io

        from PIL import Image

        stored = Image.fromarray(np.full((SIZE // 2, SIZE, 3), 128, np.uint8))
        exif = Image.Exif()
        exif[0x0112] = 6  # turn 90 degrees clockwise to show
        encoded = io.BytesIO()
        stored.save(encoded, "JPEG", exif=exif.tobytes(), quality=95)
        yield 0, {"image": encoded.getvalue()}


class TinyDownload(tfds.core.GeneratorBasedBuilder):
    """One flat image, downloaded from a host that never resolves (RFC 2606's `.invalid`):
    a dataset the job must download, and cannot, wherever the tests run."""

    VERSION = tfds.core.Version("1.0.0")
    URL = "https://tiny-download.invalid/images.zip"
    # What TFDS reads from a builder's checksums file: the downloads the job probes.
    url_infos = {URL: tfds.core.download.checksums.UrlInfo(1, "0" * 64, "images.zip")}

    def _info(self):
        features = {"image": tfds.features.Image(shape=(SIZE, SIZE, 3))}
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        dl_manager.download(self.URL)
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        yield 0, {"image": np.full((SIZE, SIZE, 3), 90, np.uint8)}


class TinyOneClass(tfds.core.GeneratorBasedBuilder):
    """Two flat grey images of one class, 'only' (a dataset of a single class)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(SIZE, SIZE, 3)),
            "label": tfds.features.ClassLabel(names=["only"]),
        }
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(2):
            yield i, {"image": np.full((SIZE, SIZE, 3), 90 + i, np.uint8), "label": 0}


class TinyServed(tfds.core.GeneratorBasedBuilder):
    """One flat image, generated after downloading SERVED from $TINY_SERVED_URL (an HTTP
    server a test starts on 127.0.0.1), in three configs: 'fine' prepares, 'failing' raises
    while generating, 'page' raises an error holding a page of HTML (as a login page
    served for the file). With $TINY_SERVED_WAIT set, each example waits for that file
    to exist first (a run to stop, or to let another prepare the dataset meanwhile)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in ("fine", "failing", "page")]
    SERVED = b"tiny served bytes"
    PAGE = "<html>\n<body>\n" + "<p>Sign in to continue.</p>\n" * 60 + "</body>\n</html>\n"

    @property
    def url_infos(self):
        """What TFDS reads from a builder's checksums file: the download it expects."""
        import hashlib  # noqa: PLC0415

        checksum = hashlib.sha256(self.SERVED).hexdigest()
        url = os.environ["TINY_SERVED_URL"]
        return {url: tfds.core.download.checksums.UrlInfo(len(self.SERVED), checksum, "served")}

    def _info(self):
        features = {"image": tfds.features.Image(shape=(SIZE, SIZE, 3))}
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        dl_manager.download(os.environ["TINY_SERVED_URL"])
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        if self.builder_config.name == "failing":
            raise ValueError("the served file holds no images.")
        if self.builder_config.name == "page":
            raise ValueError(f"the served file is no archive; it reads:\n{self.PAGE}")
        wait = os.environ.get("TINY_SERVED_WAIT")
        while wait and not os.path.exists(wait):
            time.sleep(0.1)
        yield 0, {"image": np.full((SIZE, SIZE, 3), 90, np.uint8)}


class TinyDeclared(tfds.core.GeneratorBasedBuilder):
    """One flat image, downloaded from a host that never resolves, as TinyDownload, from a
    builder that declares its splits' sizes in its info (as TFDS's restored metadata
    does): which splits it has (a train split too, never generated), and their sizes,
    are known before any download."""

    VERSION = tfds.core.Version("1.0.0")
    URL = "https://tiny-declared.invalid/images.zip"
    url_infos = {URL: tfds.core.download.checksums.UrlInfo(1, "0" * 64, "images.zip")}

    def _info(self):
        features = {"image": tfds.features.Image(shape=(SIZE, SIZE, 3))}
        train = tfds.core.SplitInfo(name="train", shard_lengths=[2], num_bytes=0)
        test = tfds.core.SplitInfo(name="test", shard_lengths=[1], num_bytes=0)
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(features),
            split_dict=tfds.core.SplitDict([train, test]),
        )

    def _split_generators(self, dl_manager):
        dl_manager.download(self.URL)
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        yield 0, {"image": np.full((SIZE, SIZE, 3), 90, np.uint8)}
