"""The converted ChestX-ray14 `DatasetDict`: its features, how it is built from an NIH download, loaded, pushed.

Images are stored as 8-bit grayscale PNG bytes, by default 256 px on the shorter side: training runs at
224 px, so 256 leaves room for random crops while each example has 16x fewer pixels to decode than NIH's
1024 px originals (~1 ms instead of ~10 ms per image: on CPU the decode, not the model, bounds data loading).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from pipeline.images import prepare_png
from pipeline.labels import FINDINGS, to_multi_hot
from pipeline.locations import looks_like_local_path
from pipeline.nih import NIHSource

# Rows `map` buffers before writing them out: datasets' record-batch size for image data (100), not its
# default of 1,000 rows (~30 MB of 256 px PNG bytes per process, ~375 MB of original 1024 px NIH PNGs).
IMAGES_PER_WRITE = datasets.config.ARROW_RECORD_BATCH_SIZE_FOR_IMAGE_DATASETS
SPLITS = ("train", "validation", "test")
FEATURES = Features(
    {
        "image": datasets.Image(),
        "labels": List(Value("float32"), length=len(FINDINGS)),
        "findings": List(ClassLabel(names=list(FINDINGS))),
        "image_id": Value("string"),
        "patient_id": Value("int32"),
        "age_years": Value("int32"),
        "sex": Value("string"),
        "view_position": Value("string"),
        "follow_up": Value("int32"),
    }
)
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Before the images are read: the file to read instead of the image.
_METADATA_FEATURES = Features({"path": Value("string"), **{k: v for k, v in FEATURES.items() if k != "image"}})


def finding_names(dataset: Dataset | DatasetDict) -> list[str]:
    """The finding names, in `labels` order, as stored in the dataset's `findings` feature."""
    if isinstance(dataset, DatasetDict):
        dataset = next(iter(dataset.values()))
    return list(dataset.features["findings"].feature.names)


def load_dataset_dict(name_or_path: str | Path) -> DatasetDict:
    """A converted dataset from a local folder (`save_to_disk`) or from the Hub (a dataset repo id).

    A mistyped folder raises `FileNotFoundError` ("no such folder") rather than a Hub error about a repo id.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return datasets.load_from_disk(str(path))
    if isinstance(name_or_path, Path) or looks_like_local_path(str(name_or_path)):
        raise FileNotFoundError(
            f"{name_or_path}: no such folder (expected a folder written by `chestxray "
            "convert`, or a Hub dataset id such as org/name)"
        )
    return datasets.load_dataset(str(name_or_path))


def metadata_table(source: NIHSource, names: Sequence[str]) -> dict[str, list]:
    """Columns for `names` (all present on disk) from the label records: everything except the image."""
    records = [source.records[name] for name in names]
    return {
        "path": [str(source.image_files[name]) for name in names],
        "labels": [to_multi_hot(record.findings) for record in records],
        "findings": [list(record.findings) for record in records],
        "image_id": [record.image_id for record in records],
        "patient_id": [record.patient_id for record in records],
        "age_years": [record.age_years for record in records],
        "sex": [record.sex for record in records],
        "view_position": [record.view_position for record in records],
        "follow_up": [record.follow_up for record in records],
    }


def _read_image(example: dict, image_size: int) -> dict:
    return {"image": {"bytes": prepare_png(example["path"], image_size), "path": None}}


# While a conversion runs: the pid of the process that is forking, and whether its children die with it.
_fork_state = {"parent": 0, "die_with_parent": False}


def _before_fork() -> None:
    _fork_state["parent"] = os.getpid()


def _after_fork_in_child() -> None:
    """Have the kernel kill this forked child when its parent dies (Linux `PR_SET_PDEATHSIG`).

    `Dataset.map(num_proc)` forks a pool and a manager process that outlive a `kill -9` of the conversion
    (~130 MB each, for minutes). The setting is not inherited by a child's own children: each fork runs this.
    """
    if not _fork_state["die_with_parent"]:
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != _fork_state["parent"]:  # the parent died before prctl took effect
        os._exit(1)


if sys.platform == "linux":
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def children_die_with_this_process() -> Iterator[None]:
    """Within this block, processes forked (by `Dataset.map` and their own forks) die when their parent dies."""
    previous = _fork_state["die_with_parent"]
    _fork_state["die_with_parent"] = True
    try:
        yield
    finally:
        _fork_state["die_with_parent"] = previous


def build_split(
    source: NIHSource, names: Sequence[str], image_size: int, num_proc: int | None, cache_file: Path, split: str
) -> Dataset:
    """Read, normalise, resize and encode the images of one split, streaming them to `cache_file`.

    Only the metadata is in memory; `Dataset.map` writes the PNG bytes to disk batch by batch, so memory
    does not grow with the number of images. `num_proc` worker processes read images in parallel.
    """
    metadata = Dataset.from_dict(metadata_table(source, names), features=_METADATA_FEATURES, split=split)
    workers = min(num_proc or 1, len(metadata))
    return metadata.map(
        _read_image,
        fn_kwargs={"image_size": image_size},
        features=FEATURES,
        remove_columns=["path"],
        num_proc=workers if workers > 1 else None,
        cache_file_name=str(cache_file),
        writer_batch_size=IMAGES_PER_WRITE,
        desc=f"Converting {split} images",
    )


def build_dataset_dict(
    source: NIHSource, splits: dict[str, Sequence[str]], image_size: int, num_proc: int | None, work_dir: Path
) -> DatasetDict:
    """One `build_split` per split; the Arrow files live in `work_dir` until the caller saves the result."""
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    with children_die_with_this_process():
        return DatasetDict(
            {
                split: build_split(source, names, image_size, num_proc, Path(work_dir) / f"{split}.arrow", split)
                for split, names in splits.items()
            }
        )


def default_num_proc() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def push_dataset_dict(
    dataset: DatasetDict, repo_id: str, card: str, private: bool = False, token: str | None = None
) -> None:
    """Upload `dataset` as Parquet shards to the dataset repo `repo_id`, with `card` as its README.

    The card goes first: `DatasetDict.push_to_hub` keeps an existing README's text and only adds its
    `dataset_info`/`configs` metadata, so both end up in the final README.
    """
    from huggingface_hub import DatasetCard, HfApi

    HfApi(token=token).create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    DatasetCard(card).push_to_hub(repo_id, token=token, repo_type="dataset")
    dataset.push_to_hub(repo_id, private=private, token=token)
