"""The demo page (Gradio): one chest X-ray in; the 14 findings, their thresholds and a heat map out.

`chestxray demo` serves it on this machine, and a Hub Space written by `chestxray push --space` runs this same
file, copied with the modules it imports. Scores come from `Predictor.predict`, the code `chestxray predict`
runs, after the same decoding (`load_image`), so the page shows predict's numbers; maps come from
`pipeline.explain`, the report's maps.

Privacy: uploads land in a folder of this process (GRADIO_TEMP_DIR), each is deleted as soon as it is decoded
and the folder at exit; the decoded image lives in the session's memory only and leaves with it; the heat map
goes to the page inline, never to a file; Gradio's telemetry is off.
"""

from __future__ import annotations

import atexit
import base64
import html
import io
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from PIL import Image

from pipeline import explain, run_folder
from pipeline.images import ImageDecodeError, load_image
from pipeline.predict import Predictor

DISCLAIMER = (
    "**Research model, not a diagnostic device.** It was trained on NIH ChestX-ray14, whose labels were mined "
    "from radiology reports; its scores are not calibrated for any clinical population and must not guide care."
)
NIH_ATTRIBUTION = (
    "Example images: NIH ChestX-ray14 test split, NIH Clinical Center "
    "([download](https://nihcc.app.box.com/v/ChestXray-NIHCC)); Wang et al., *ChestX-ray8*, CVPR 2017."
)
TABLE_HEADERS = ["Finding", "Probability", "Threshold", "Positive"]
DISPLAY_SIZE = 448  # px, the longer side of the heat map on the page
SESSION_SECONDS = 900  # a session's decoded image is dropped after this long, or when its tab closes
MAX_UPLOAD = "100mb"
# Jet, as anchor colours from 0 to 1: the usual Grad-CAM palette, without matplotlib.
PALETTE = np.array([[0, 0, 0.5], [0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0], [0.5, 0, 0]])


def model_file(model: str, name: str, revision: str | None = None) -> Path | None:
    """A file of a model folder or Hub repo; None when it has none."""
    folder = Path(model)
    if folder.is_dir():
        return folder / name if (folder / name).is_file() else None
    try:
        return Path(hf_hub_download(model, name, revision=revision))
    except EntryNotFoundError:
        return None


def test_split_note(model: str, revision: str | None = None) -> str:
    """Which test split the model's numbers come from, saying "partial" unless it is all 25,596 official images.

    The split is `test_split.json` where the model has it, else the rows of test_predictions.csv (older runs).
    """
    results_path = model_file(model, run_folder.TEST_RESULTS, revision)
    if results_path is None:
        return "This model comes without test results (no `test_results.json`)."
    results = json.loads(results_path.read_text(encoding="utf-8"))
    auroc = results.get("test_auroc_mean")
    headline = f"Mean AUROC {auroc:.3f}" if isinstance(auroc, int | float) else "Test results"
    for name in (run_folder.TEST_SPLIT, run_folder.TEST_PREDICTIONS):  # fetched beside test_results.json
        model_file(model, name, revision)
    record = run_folder.RunFolder(results_path.parent).test_split()
    if record is None:
        return f"{headline} on this model's test split, whose size is not recorded (it may be partial)."
    if record.complete:
        return f"{headline} on the official NIH ChestX-ray14 test split ({record.images:,} images)."
    return (
        f"{headline} on a **partial** NIH ChestX-ray14 test split: {record.describe()}, not comparable with "
        "published results."
    )


def overlay(image: np.ndarray, heat: np.ndarray) -> Image.Image:
    """The heat map (0–1) in jet over the grayscale image (0–255), opaque where the map is high, enlarged."""
    anchors = np.linspace(0, 1, len(PALETTE))
    colour = np.stack([np.interp(heat, anchors, PALETTE[:, c]) for c in range(3)], axis=-1) * 255
    alpha = 0.6 * heat[..., None]
    blended = image[..., None].astype(np.float64) * (1 - alpha) + colour * alpha
    picture = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mode="RGB")
    scale = DISPLAY_SIZE / max(picture.size)
    return picture.resize((round(picture.width * scale), round(picture.height * scale)), Image.Resampling.BILINEAR)


def heatmap_html(explanation: explain.Explanation) -> str:
    """The map as an inline PNG (a data URI: nothing is written to disk) with a caption saying what it shows."""
    buffer = io.BytesIO()
    overlay(explanation.image, explanation.heatmap).save(buffer, format="PNG")
    height, width = explanation.image.shape
    what = (
        f"Grad-CAM for {explanation.finding} (p = {explanation.probability:.4f})"
        if explanation.method == explain.GRAD_CAM
        else "Attention rollout: where the class token looks, the same for every finding"
    )
    caption = f"{what}, on the image as the model sees it ({width}×{height} px)."
    source = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f'<figure id="heatmap"><img alt="{html.escape(what)}" src="data:image/png;base64,{source}" '
        f'style="max-width:100%"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def findings_table(result: dict[str, Any], thresholds: dict[str, float]) -> list[list[Any]]:
    """One row per finding, most probable first: name, probability, threshold, and "yes" where the probability
    reaches the threshold (a positive, as `chestxray predict` calls it)."""
    ranked = sorted(result["probabilities"].items(), key=lambda item: -item[1])
    return [
        [name, round(p, 4), round(thresholds[name], 4), "yes" if name in result["positives"] else "no"]
        for name, p in ranked
    ]


class DemoModel:
    """The page's model: `Predictor` for the scores, the same model for the maps, and what the page says."""

    def __init__(self, model: str, *, revision: str | None = None, trust_remote_code: bool = False) -> None:
        self.name = model
        self.predictor = Predictor.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
        self.methods = explain.methods(self.predictor.model)
        self.has_thresholds = model_file(model, run_folder.THRESHOLDS, revision) is not None
        self.test_note = test_split_note(model, revision)

    def scores(self, image: Image.Image) -> dict[str, Any]:
        """`Predictor.predict` of one decoded image: probabilities and positives, as `chestxray predict` gives."""
        return self.predictor.predict([image])[0]

    def explain(self, image: Image.Image, finding: str, method: str) -> explain.Explanation:
        return explain.explain_image(self.predictor.model, self.predictor.processor, image, finding, method=method)


class Uploads:
    """Where Gradio puts uploads: this process's own folder, removed at exit; each upload deleted once read."""

    def __init__(self, examples: Sequence[Path]) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="chestxray-demo-")).resolve()
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)
        self.examples = {path.name: path for path in examples}

    def read(self, path: str) -> Image.Image:
        """The decoded upload (`load_image`, as `chestxray predict` decodes); the file is deleted, read or not.

        Raises `ImageDecodeError` naming the file as the user named it, not by its temporary path.
        """
        upload = Path(path)
        try:
            return load_image(upload)
        except ImageDecodeError as error:
            raise ImageDecodeError(str(error).replace(str(upload), upload.name)) from error
        finally:
            self.discard(upload)

    def discard(self, upload: Path) -> None:
        """Delete an upload (and its per-upload folder) inside this folder; the shipped examples stay."""
        upload = upload.resolve()
        example = self.examples.get(upload.name)
        if not upload.is_file() or self.folder not in upload.parents:
            return
        if example and example.read_bytes() == upload.read_bytes():
            return
        upload.unlink(missing_ok=True)
        if upload.parent != self.folder and not any(upload.parent.iterdir()):
            upload.parent.rmdir()


def _private_gradio(uploads: Uploads) -> None:
    """Gradio's uploads into `uploads.folder` and its telemetry off: both read from the environment."""
    os.environ["GRADIO_TEMP_DIR"] = str(uploads.folder)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def build_demo(model: DemoModel, examples: Sequence[tuple[str | Path, str]] = ()) -> gr.Blocks:
    """The page for `model`, with `examples` (path, title) one click away."""
    uploads = Uploads([Path(path) for path, _ in examples])
    _private_gradio(uploads)
    thresholds = model.predictor.thresholds
    threshold_note = (
        "Thresholds: per finding, chosen on the validation split (best F1; `thresholds.json`)."
        if model.has_thresholds
        else "Thresholds: 0.5 for every finding (this model has no `thresholds.json`)."
    )

    def analyze(path: str | None, method: str) -> tuple[Any, Any, str, Image.Image | None]:
        if not path:
            return [], gr.Dropdown(choices=[], value=None), "", None
        try:
            image = uploads.read(path)
        except ImageDecodeError as error:
            raise gr.Error(str(error), title="Cannot read this file", print_exception=False) from error
        result = model.scores(image)
        rows = findings_table(result, thresholds)
        choices = [(f"{name} ({p:.3f})", name) for name, p, _, _ in rows]
        figure = heatmap_html(model.explain(image, rows[0][0], method))
        return pd.DataFrame(rows, columns=TABLE_HEADERS), gr.Dropdown(choices=choices, value=rows[0][0]), figure, image

    def show_map(image: Image.Image | None, finding: str | None, method: str) -> str:
        if image is None or finding is None:
            return ""
        return heatmap_html(model.explain(image, finding, method))

    with gr.Blocks(title=f"Chest X-ray findings: {model.name}", analytics_enabled=False) as demo:
        gr.Markdown(f"# Chest X-ray findings\nModel: `{model.name}`\n\n{DISCLAIMER}\n\n{model.test_note}")
        image_state = gr.State(None, time_to_live=SESSION_SECONDS)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label="Chest X-ray: PNG (8 or 16 bit), JPEG or DICOM",
                    type="filepath",
                    elem_id="upload",
                )
                if examples:
                    gr.Examples(
                        examples=[[str(path)] for path, _ in examples],
                        inputs=[upload],
                        example_labels=[title for _, title in examples],
                        label="NIH ChestX-ray14 examples (click one)",
                        cache_examples=False,
                    )
                    gr.Markdown(NIH_ATTRIBUTION)
            with gr.Column(scale=1):
                table = gr.Dataframe(
                    headers=TABLE_HEADERS,
                    datatype=["str", "number", "number", "str"],
                    interactive=False,
                    label="Findings, most probable first",
                    max_height=1000,  # all 14 rows in the page, none left to virtual scrolling
                    elem_id="findings",
                )
                gr.Markdown(threshold_note)
        with gr.Row():
            finding = gr.Dropdown(label="Heat map for finding", choices=[], elem_id="finding")
            method = gr.Radio(list(model.methods), value=explain.GRAD_CAM, label="Map", visible=len(model.methods) > 1)
        figure = gr.HTML(elem_id="heatmap-panel")
        upload.change(
            analyze, [upload, method], [table, finding, figure, image_state], api_name="predict", show_progress="full"
        )
        finding.input(show_map, [image_state, finding, method], figure, api_name=False)
        method.input(show_map, [image_state, finding, method], figure, api_name=False)
    return demo


def launch(demo: gr.Blocks, *, host: str | None = "127.0.0.1", port: int | None = None, share: bool = False) -> None:
    """Serve the page until interrupted: on `host` only (None: Gradio's GRADIO_SERVER_NAME, as on Spaces), no
    public link unless `share`."""
    demo.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD)
