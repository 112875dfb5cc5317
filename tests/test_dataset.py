"""The converted dataset (pipeline.dataset), its card (pipeline.cards), the planted signal, Hub error lines."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pytest
from huggingface_hub.errors import OfflineModeIsEnabled
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from pipeline import cards, dataset, nih
from pipeline.hub import describe_hub_error
from pipeline.labels import FINDINGS, NO_FINDING


@pytest.fixture(scope="module")
def tiny(tiny_dataset_dir: Path) -> datasets.DatasetDict:
    return dataset.load_dataset_dict(tiny_dataset_dir)


def test_tiny_dataset_features_and_values(tiny: datasets.DatasetDict) -> None:
    assert list(tiny) == ["train", "validation", "test"]
    assert sum(ds.num_rows for ds in tiny.values()) == 320
    for ds in tiny.values():
        assert ds.features == dataset.FEATURES
        labels = np.asarray(ds.with_format("numpy")["labels"])
        assert labels.dtype == np.float32 and labels.shape == (ds.num_rows, len(FINDINGS))
        names = ds.features["findings"].feature.names
        for row, findings in zip(labels, ds["findings"], strict=True):
            assert [names[i] for i in findings] == [FINDINGS[i] for i in np.flatnonzero(row)]
    image = tiny["train"][0]["image"]
    assert image.mode == "L" and image.size == (64, 64)


def test_tiny_dataset_splits_are_patient_disjoint(tiny: datasets.DatasetDict) -> None:
    patients = {split: set(ds["patient_id"]) for split, ds in tiny.items()}
    assert not patients["train"] & patients["validation"]
    assert not patients["train"] & patients["test"] and not patients["validation"] & patients["test"]


def test_finding_names(tiny: datasets.DatasetDict) -> None:
    assert dataset.finding_names(tiny) == list(FINDINGS)
    assert dataset.finding_names(tiny["test"]) == list(FINDINGS)


def pixels(ds: datasets.Dataset, size: int = 32) -> np.ndarray:
    return np.stack([np.asarray(image.resize((size, size))).ravel() / 255.0 for image in ds["image"]])


def test_planted_signal_is_learnable_at_32_px(tiny: datasets.DatasetDict) -> None:
    """A linear model on 32 px pixels reaches mean AUROC >= 0.9: what training tests rely on."""
    train, test = tiny["train"], tiny["test"]
    x_train, x_test = pixels(train), pixels(test)
    y_train, y_test = np.asarray(train["labels"]), np.asarray(test["labels"])
    aurocs = []
    for i in range(len(FINDINGS)):
        if 0 < y_test[:, i].sum() < len(y_test):
            model = LogisticRegression(C=1.0, max_iter=500).fit(x_train, y_train[:, i])
            aurocs.append(roc_auc_score(y_test[:, i], model.predict_proba(x_test)[:, 1]))
    assert len(aurocs) >= 12
    assert np.mean(aurocs) >= 0.9


def test_label_counts_match_the_labels(tiny: datasets.DatasetDict) -> None:
    counts = cards.label_counts(tiny)
    for split, ds in tiny.items():
        labels = np.asarray(ds["labels"])
        for i, name in enumerate(FINDINGS):
            assert counts[name][split] == int(labels[:, i].sum())
        assert counts[NO_FINDING][split] == int((labels.sum(axis=1) == 0).sum())


def test_dataset_card(tiny: datasets.DatasetDict) -> None:
    options = {"image_size": 64, "validation_fraction": 0.15, "seed": 42}
    card = cards.render_dataset_card(tiny, "Data_Entry_2017_v2020.csv", options, repo_id="someone/nih-cxr14")
    text = str(card)
    assert card.data.license == "other" and "image-classification" in card.data.task_categories
    assert card.data.size_categories == ["n<1K"]
    assert 'load_dataset("someone/nih-cxr14")' in text
    assert "https://nihcc.app.box.com/v/ChestXray-NIHCC" in text and "CVPR" in text and "Wang" in text
    assert "64 px on the shorter side" in text and "seed 42" in text and "Data_Entry_2017_v2020.csv" in text
    counts = cards.label_counts(tiny)
    row = "| Hernia | " + " | ".join(str(counts["Hernia"][s]) for s in tiny) + " |"
    assert row in text
    assert "`test` is exactly NIH's official `test_list.txt`" in text and "--allow-missing" not in text
    local = str(cards.render_dataset_card(tiny, "x.csv", options))
    assert "load_from_disk" in local
    partial = " ".join(str(cards.render_dataset_card(tiny, "x.csv", options, missing={"train": 4, "test": 0})).split())
    assert "4 images named by the split lists were missing on disk" in partial and "(train: 4)" in partial
    assert "`test` is exactly NIH's official" in partial and "not** the complete" not in partial


@pytest.mark.parametrize(("rows", "tag"), [(999, "n<1K"), (1000, "1K<n<10K"), (112_120, "100K<n<1M")])
def test_size_category(rows: int, tag: str) -> None:
    assert cards.size_category(rows) == tag


def test_describe_hub_error() -> None:
    assert "offline" in describe_hub_error(OfflineModeIsEnabled("no"))
    assert "cannot reach the Hub" in describe_hub_error(ConnectionError("refused"))
    assert describe_hub_error(RuntimeError("boom\nmore")) == "RuntimeError: boom"


def test_push_sends_card_before_data(tiny: datasets.DatasetDict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The card goes first so that DatasetDict.push_to_hub merges its metadata into it, not the reverse."""
    calls = []
    monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, repo_id, **kw: calls.append(("repo", kw)))
    monkeypatch.setattr(
        "huggingface_hub.DatasetCard.push_to_hub", lambda self, repo_id, **kw: calls.append(("card", str(self)))
    )
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", lambda self, repo_id, **kw: calls.append(("data", kw)))
    dataset.push_dataset_dict(tiny, "someone/nih", "---\nlicense: other\n---\n# card", private=True)
    assert [name for name, _ in calls] == ["repo", "card", "data"]
    assert calls[0][1]["repo_type"] == "dataset" and calls[2][1]["private"] is True
    assert "# card" in calls[1][1]


def test_map_writes_images_in_small_batches(make_nih_tree, tmp_path: Path) -> None:
    """The converted split's Arrow file holds record batches of at most `IMAGES_PER_WRITE` (100) rows: memory
    per worker is bounded by 100 images, not by datasets' default of 1,000."""
    tree = make_nih_tree(n_images=230, image_size=8, modes=("L",))
    source = nih.load_source(tree.root)
    names = [*source.train_val, *source.test]
    split = dataset.build_split(source, names, 0, None, tmp_path / "all.arrow", "train")
    with pa.memory_map(split.cache_files[0]["filename"]) as handle:
        batch_rows = [batch.num_rows for batch in pa.ipc.open_stream(handle)]
    assert sum(batch_rows) == len(names) == 230
    assert max(batch_rows) == dataset.IMAGES_PER_WRITE == 100


@pytest.mark.parametrize("name", ["./outputs/nih", "/no/such/folder", "~/nope", "a/b/c", "outputs_typo/nih"])
def test_mistyped_local_dataset_path_says_no_such_folder(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs_typo").mkdir()
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("asked the Hub for a local path"))
    with pytest.raises(FileNotFoundError, match=f"{name}: no such folder"):
        dataset.load_dataset_dict(name)


def test_hub_id_still_goes_to_the_hub(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name: calls.append(name))
    dataset.load_dataset_dict("someone/nih-cxr14")
    dataset.load_dataset_dict("nih-cxr14")
    assert calls == ["someone/nih-cxr14", "nih-cxr14"]
