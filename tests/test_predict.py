"""`chestxray predict` and `Predictor`: images from the field, thresholds, formats, per-file errors, and the same
scores as the 🤗 image-classification pipeline (what the Hub widget runs) on a published folder."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image, ImageOps
from run_folder_factory import SAMPLE_ROOT, make_run_folder
from test_images import write_dicom
from transformers import pipeline as hf_pipeline

from pipeline import synthetic
from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.hub import prepare_dry_run
from pipeline.images import ImageDecodeError
from pipeline.labels import FINDINGS
from pipeline.predict import Predictor, load_thresholds

NIH_PNG = SAMPLE_ROOT / "images" / "00004296_000.png"
LOSSLESS = ("gray16.png", "rgb.png", "rgba.png", "scan.dcm")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run_folder(tmp_path_factory.mktemp("run") / "run", with_checkpoint=False)


@pytest.fixture(scope="module")
def predictor(run_dir):
    return Predictor.from_pretrained(run_dir, device="cpu")


@pytest.fixture(scope="module")
def field_images(tmp_path_factory):
    """One NIH image (256 px) as hospitals send it: 8/16-bit gray PNG, RGB, RGBA, JPEG, 12-bit DICOM."""
    folder = tmp_path_factory.mktemp("field")
    # Full 0..255 range: 16-bit and DICOM pixels are rescaled by their range, so they decode to the same pixels.
    gray = ImageOps.autocontrast(Image.open(NIH_PNG).resize((256, 256)))
    pixels = np.asarray(gray)
    assert (pixels.min(), pixels.max()) == (0, 255)
    gray.save(folder / "gray8.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(folder / "gray16.png")
    gray.convert("RGB").save(folder / "rgb.png")
    gray.convert("RGBA").save(folder / "rgba.png")
    gray.save(folder / "photo.jpg", quality=95)
    write_dicom(folder / "scan.dcm", pixels.astype(np.uint16) * 16)
    return folder


def _probabilities(result: dict) -> np.ndarray:
    return np.array([result["probabilities"][name] for name in FINDINGS])


def test_every_field_format_gives_14_probabilities(predictor, field_images):
    names = ["gray8.png", *LOSSLESS, "photo.jpg"]
    results = {r["image"].split("/")[-1]: r for r in predictor.predict([str(field_images / n) for n in names])}
    reference = _probabilities(results["gray8.png"])
    assert reference.shape == (14,) and ((reference > 0) & (reference < 1)).all()
    for name in LOSSLESS:
        np.testing.assert_allclose(_probabilities(results[name]), reference, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(_probabilities(results["photo.jpg"]), reference, atol=0.05)
    (inverted,) = predictor.predict([ImageOps.invert(Image.open(field_images / "gray8.png"))])
    assert np.abs(_probabilities(inverted) - reference).max() > 1e-3  # the model does look at the pixels


def test_same_scores_as_the_image_classification_pipeline(run_dir, tmp_path):
    published = tmp_path / "published"
    prepare_dry_run(run_dir, published, "org/chest-vit")
    classifier = hf_pipeline("image-classification", model=str(published), top_k=14, device="cpu")
    widget = {item["label"]: item["score"] for item in classifier(str(NIH_PNG))}
    (ours,) = Predictor.from_pretrained(published, device="cpu").predict([NIH_PNG])
    assert set(widget) == set(FINDINGS)
    for name in FINDINGS:
        assert widget[name] == pytest.approx(ours["probabilities"][name], abs=1e-5)
    assert abs(sum(widget.values()) - 1) > 0.1  # independent sigmoid scores, not a softmax


def test_per_finding_thresholds_from_the_model_folder_and_the_override(run_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(run_dir, model_dir)
    (probabilities,) = Predictor.from_pretrained(model_dir, device="cpu").predict([NIH_PNG])
    expected = list(FINDINGS[::2])
    thresholds = {
        name: p - 1e-4 if name in expected else p + 1e-4 for name, p in probabilities["probabilities"].items()
    }
    (model_dir / "thresholds.json").write_text(json.dumps(thresholds))
    predictor = Predictor.from_pretrained(model_dir, device="cpu")
    assert predictor.predict([NIH_PNG])[0]["positives"] == expected
    assert predictor.predict([NIH_PNG], threshold=0.0)[0]["positives"] == list(FINDINGS)
    assert predictor.predict([NIH_PNG], threshold=1.0)[0]["positives"] == []


def test_library_takes_pil_images_and_raises_on_a_bad_file(predictor, field_images, tmp_path):
    image = Image.open(field_images / "gray8.png")
    from_pil, from_path = predictor.predict([image, field_images / "gray8.png"], batch_size=1)
    assert from_pil["image"] == "image 0" and from_path["image"] == str(field_images / "gray8.png")
    np.testing.assert_allclose(_probabilities(from_pil), _probabilities(from_path), atol=1e-6)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ImageDecodeError, match=r"bad\.png"):
        predictor.predict([bad])


def test_cli_reports_a_bad_file_and_goes_on(run_dir, field_images, tmp_path, capsys):
    folder = tmp_path / "batch"
    folder.mkdir()
    shutil.copy(field_images / "gray8.png", folder / "a.png")
    shutil.copy(field_images / "rgb.png", folder / "c.png")
    (folder / "b.png").write_text("a text file with a .png name")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image either")
    code = main(["predict", "--model", str(run_dir), str(folder), str(notes), "--format", "csv", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert code == 1
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert [row["image"] for row in rows] == [str(folder / "a.png"), str(folder / "c.png")]
    assert list(rows[0])[1:15] == list(FINDINGS)
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert "b.png" in errors[0] and "notes.txt" in errors[1]
    assert "image" in captured.err.replace(errors[0], "")  # the tqdm progress bar on a folder


def test_cli_json_and_table_formats(run_dir, field_images, capsys):
    assert main(["predict", "--model", str(run_dir), str(field_images / "gray8.png"), "--format", "json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert set(result) == {"image", "probabilities", "positives"} and list(result["probabilities"]) == list(FINDINGS)
    assert main(["predict", "--model", str(run_dir), str(field_images / "gray8.png"), "--threshold", "0"]) == 0
    table = capsys.readouterr().out
    assert f"positives: {', '.join(FINDINGS)}" in table
    assert all(f"* {name}" in table for name in FINDINGS)


def test_cli_unknown_model_is_one_line(tmp_path, field_images, capsys):
    assert main(["predict", "--model", str(tmp_path / "nope"), str(field_images / "gray8.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --model") and "no such folder" in err and err.count("\n") == 1


def test_cli_bad_device_is_a_usage_error(field_images, capsys):
    assert main(["predict", "--model", "org/name", "--device", "foo", str(field_images / "gray8.png")]) == 2
    assert "'foo' is not a device" in capsys.readouterr().err


def test_cli_prints_the_good_rows_beside_a_decompression_bomb(run_dir, field_images, tmp_path, capsys):
    """A file over Pillow's decompression-bomb limit among good ones: its one error line, every other row."""
    bomb = tmp_path / "bomb.png"
    synthetic.write_decompression_bomb(bomb)
    good = [str(field_images / "gray8.png"), str(field_images / "rgb.png")]
    code = main(["predict", "--model", str(run_dir), good[0], str(bomb), good[1], "--format", "csv"])
    captured = capsys.readouterr()
    assert code == 1
    assert [row["image"] for row in csv.DictReader(io.StringIO(captured.out))] == good
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {bomb}: not decoded: Image size (400000000 pixels)")


def test_cli_checks_every_input_before_loading_the_model(run_dir, field_images, tmp_path, capsys, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(Predictor, "from_pretrained", must_not_load)
    (tmp_path / "empty").mkdir()
    links = tmp_path / "links"
    links.mkdir()
    (links / "gone.png").symlink_to(tmp_path / "deleted.png")
    (links / "ok.png").symlink_to(field_images / "gray8.png")
    inputs = [tmp_path / "empty", tmp_path / "missing.png", links, field_images / "gray8.png"]
    assert main(["predict", "--model", str(run_dir), *map(str, inputs)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1  # no progress bar, no partial table
    assert captured.err.startswith("error: 3 input(s) cannot be read: ")
    assert f"{tmp_path / 'empty'}: no images" in captured.err
    assert f"{tmp_path / 'missing.png'}: no such file or folder" in captured.err
    assert f"{links / 'gone.png'}: broken symbolic link to {tmp_path / 'deleted.png'}" in captured.err


def _broken_copy(run_dir, tmp_path, name, damage):
    broken = tmp_path / name
    shutil.copytree(run_dir, broken)
    damage(broken)
    return broken


def _truncate_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _widen_config(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 64, "intermediate_size": 128}))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_truncate_weights, r"model\.safetensors is truncated or damaged"),
        (_widen_config, "the shapes in its config.json do not match its weights"),
        (lambda folder: (folder / "thresholds.json").write_text('{"Atelectasis": 0.5,'), "thresholds.json: not valid"),
        (lambda folder: (folder / "thresholds.json").write_text('{"Atelectasis": 0.5}'), "thresholds.json: expected"),
    ],
    ids=["truncated weights", "config shapes", "broken thresholds", "incomplete thresholds"],
)
def test_cli_a_damaged_model_is_one_line_naming_the_file(run_dir, field_images, tmp_path, capsys, damage, expected):
    broken = _broken_copy(run_dir, tmp_path, "broken", damage)
    assert main(["predict", "--model", str(broken), str(field_images / "gray8.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: ")
    assert str(broken) in captured.err and re.search(expected, captured.err), captured.err


def test_cli_one_image_prints_its_table_and_nothing_else(run_dir, field_images, capsys):
    assert main(["predict", "--model", str(run_dir), str(field_images / "gray8.png")]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # no "Loading weights" bar
    assert len(captured.out.splitlines()) == 1 + len(FINDINGS)


def test_thresholds_of_a_hub_model_not_cached_offline_are_an_error_not_a_silent_default(monkeypatch):
    """Offline, a Hub model whose thresholds.json was never downloaded: say so, rather than score at 0.5."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def not_cached(*args, **kwargs):
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_cached)
    with pytest.raises(UserError, match=r"org/model: thresholds\.json is not in the local cache"):
        load_thresholds("org/model", FINDINGS)
