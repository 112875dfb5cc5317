"""Shared fixtures: the shipped NIH sample, generated NIH trees, and a converted tiny dataset."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.convert import convert
from pipeline.synthetic import SyntheticTree, generate_nih_tree

SAMPLE_ROOT = Path(__file__).resolve().parent.parent / "pipeline" / "assets" / "nih_sample"
TINY_IMAGE_SIZE = 64


@pytest.fixture(scope="session", autouse=True)
def tracker_storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every run of the session (recipes log to trackio by default) stores its tracking in a temporary folder,
    never in the user's ~/.cache/huggingface/trackio; subprocesses inherit it."""
    # trackio reads TRACKIO_DIR once, at import.
    assert "trackio" not in sys.modules, "trackio was imported before its storage was redirected"
    path = tmp_path_factory.mktemp("trackio")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRACKIO_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def sample_nih_root() -> Path:
    """The 28 real NIH images with both label CSVs and split lists, shipped in the repo (read only)."""
    return SAMPLE_ROOT


@pytest.fixture
def make_nih_tree(tmp_path: Path) -> Callable[..., SyntheticTree]:
    """Factory for a fresh generated NIH tree in this test's tmp_path (safe to break on purpose)."""

    def make(name: str = "nih", **kwargs) -> SyntheticTree:
        kwargs.setdefault("n_images", 30)
        kwargs.setdefault("image_size", 32)
        return generate_nih_tree(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def nih_tree(tmp_path_factory: pytest.TempPathFactory) -> SyntheticTree:
    """A generated official-layout tree with both CSV formats (read only: do not modify)."""
    return generate_nih_tree(
        tmp_path_factory.mktemp("nih_tree"), n_images=60, image_size=32, csv_formats=("2017", "2020")
    )


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A converted DatasetDict folder (train/validation/test, 320 images of 64 px) with a planted signal:
    each finding is a bright blob at its own cell of a 4x4 grid (`pipeline.synthetic.signal_center`),
    so a tiny model reaches a mean AUROC >= 0.9 in seconds. Read only: load it with `load_from_disk`."""
    root = tmp_path_factory.mktemp("tiny")
    generate_nih_tree(root / "nih", n_images=320, image_size=TINY_IMAGE_SIZE, seed=1)
    convert(root / "nih", root / "dataset", image_size=TINY_IMAGE_SIZE, validation_fraction=0.15, num_proc=2)
    return root / "dataset"


@pytest.fixture(scope="session")
def trained_run(tiny_dataset_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder: the paper's CNN trained 6 epochs on `tiny_dataset_dir` (read only)."""
    from training import argv

    from pipeline.arguments import parse_args
    from pipeline.train import run

    output_dir = tmp_path_factory.mktemp("runs") / "paper_cnn"
    run(*parse_args(argv(tiny_dataset_dir, output_dir)))
    return output_dir
