"""`chestxray predict`: the 14 finding probabilities for X-rays as they come from the field.

Files are decoded by `pipeline.images.load_image` (8/16-bit PNG, RGB/RGBA, JPEG, DICOM) to 8-bit grayscale,
converted to RGB and passed through the model's own image processor, exactly what
`pipeline("image-classification")` and the Hub widget do, so all three give the same scores for an NIH PNG.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from tqdm.auto import tqdm

from pipeline.errors import UserError
from pipeline.images import DICOM_SUFFIXES, ImageDecodeError, load_image, to_grayscale
from pipeline.labels import NO_FINDING
from pipeline.locations import is_hub_id
from pipeline.run_folder import THRESHOLDS, RunFolder, read_thresholds

# torch and transformers are imported where a model is loaded or run, so that `--help` and input errors are instant.
if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", *DICOM_SUFFIXES)
FORMATS = ("table", "json", "csv")

ImageInput = str | Path | Image.Image


class ModelLoadError(UserError, OSError):
    """A model folder or Hub repo that cannot be loaded; the message names the model and the file."""


def load_thresholds(name_or_dir: str | Path, labels: Sequence[str], **hub_kwargs: Any) -> dict[str, float] | None:
    """Per-finding thresholds from thresholds.json in a model folder or Hub repo; None when it has none."""
    if Path(name_or_dir).is_dir():
        return RunFolder(Path(name_or_dir)).thresholds(labels)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    try:
        path = Path(hf_hub_download(str(name_or_dir), THRESHOLDS, **hub_kwargs))
    except RemoteEntryNotFoundError:
        return None
    except LocalEntryNotFoundError as error:  # offline, and not cached: 0.5 in its place would silently differ
        raise ModelLoadError(
            f"{name_or_dir}: {THRESHOLDS} is not in the local cache and the Hub cannot be reached; connect once, "
            "or pass --threshold"
        ) from error
    return read_thresholds(path, labels)


def default_device_and_dtype() -> tuple[torch.device, torch.dtype]:
    """The GPU in bf16 where it supports it, else the GPU in fp32, else the CPU in fp32."""
    import torch

    from pipeline.hardware import bf16_supported

    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16 if bf16_supported() else torch.float32
    return torch.device("cpu"), torch.float32


def describe_load_error(error: BaseException, name_or_dir: str | Path) -> str:
    """One line for a model that failed to load (transformers' messages run to many lines, with a table)."""
    from safetensors import SafetensorError

    message = str(error)
    if "ignore_mismatched_sizes" in message:
        return "the shapes in its config.json do not match its weights (config.json edited, or from another model?)"
    if isinstance(error, SafetensorError):
        damaged = [path for path in sorted(Path(name_or_dir).glob("*.safetensors")) if not _safetensors_readable(path)]
        where = damaged[0] if damaged else "a *.safetensors weights file"
        return f"{where} is truncated or damaged ({message}); copy or download it again"
    return (message.strip().splitlines() or [type(error).__name__])[0]


def _safetensors_readable(path: Path) -> bool:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "np"):  # opening checks the header against the file's length
            pass
    except (SafetensorError, OSError):
        return False
    return True


def _as_rgb(image: ImageInput) -> Image.Image:
    """The RGB image the image processor gets: decoded to grayscale first, as the training images were."""
    grayscale = to_grayscale(image) if isinstance(image, Image.Image) else load_image(image)
    return grayscale.convert("RGB")


class Predictor:
    """A multi-label X-ray classifier with its image processor and decision thresholds, ready for inference."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: Any,
        thresholds: dict[str, float] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        import torch

        from pipeline.metrics import DEFAULT_THRESHOLD

        default_device, default_dtype = default_device_and_dtype()
        self.device = torch.device(device) if device is not None else default_device
        self.dtype = dtype or (default_dtype if self.device.type == "cuda" else torch.float32)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor
        id2label = model.config.id2label
        self.labels = [id2label[i] for i in sorted(id2label, key=int)]
        self.thresholds = thresholds or dict.fromkeys(self.labels, DEFAULT_THRESHOLD)

    @classmethod
    def from_pretrained(
        cls,
        name_or_dir: str | Path,
        *,
        revision: str | None = None,
        trust_remote_code: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Predictor:
        """Load a published model (Hub id) or a run folder, with thresholds.json when it has one.

        A model that cannot be loaded (a missing or truncated file, weights that do not fit config.json) raises
        `ModelLoadError`, one line naming the model.
        """
        from safetensors import SafetensorError
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        from pipeline import paper_cnn  # noqa: F401  (registers "paper_cnn", so run folders load without remote code)

        hub_kwargs = {"revision": revision} if revision else {}
        try:
            model = AutoModelForImageClassification.from_pretrained(
                name_or_dir, trust_remote_code=trust_remote_code, **hub_kwargs
            )
            processor = AutoImageProcessor.from_pretrained(
                name_or_dir, trust_remote_code=trust_remote_code, **hub_kwargs
            )
        except (OSError, ValueError, RuntimeError, SafetensorError) as error:
            reason = describe_load_error(error, name_or_dir)
            raise ModelLoadError(f"cannot load model {str(name_or_dir)!r}: {reason}") from error
        labels = [model.config.id2label[i] for i in sorted(model.config.id2label, key=int)]
        thresholds = load_thresholds(name_or_dir, labels, **hub_kwargs)
        return cls(model, processor, thresholds, device=device, dtype=dtype)

    def thresholds_for(self, threshold: float | None = None) -> dict[str, float]:
        """The decision threshold of each finding: `threshold` for all when given, else the model's own."""
        return self.thresholds if threshold is None else dict.fromkeys(self.labels, threshold)

    def probabilities(self, images: Sequence[Image.Image]) -> list[list[float]]:
        """Sigmoid scores (one list of len(labels) per image) for RGB images."""
        import torch

        pixel_values = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            logits = self.model(pixel_values=pixel_values.to(device=self.device, dtype=self.dtype)).logits
            return torch.sigmoid(logits.float()).cpu().tolist()

    def predict(
        self,
        images: Sequence[ImageInput],
        *,
        batch_size: int = 16,
        threshold: float | None = None,
        on_error: str = "raise",
        progress: bool = False,
    ) -> list[dict[str, Any]]:
        """One dict per input: `image`, `probabilities` {finding: p}, `positives` [findings at the threshold].

        `threshold` overrides the per-finding thresholds. With `on_error="record"` an unreadable file gives
        `{"image": ..., "error": message}` and the others go on; with "raise" it raises `ImageDecodeError`.
        """
        if on_error not in ("raise", "record"):
            raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
        thresholds = self.thresholds_for(threshold)
        starts = range(0, len(images), batch_size)
        results: list[dict[str, Any]] = []
        # Threads decode the next batch while the model runs this one (Pillow and zlib release the GIL).
        with (
            ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool,
            tqdm(total=len(images), unit="image", disable=not progress, file=sys.stderr) as bar,
        ):
            upcoming = [pool.submit(_decode, image) for image in images[:batch_size]]
            for start in starts:
                decoding = upcoming
                upcoming = [
                    pool.submit(_decode, image) for image in images[start + batch_size : start + 2 * batch_size]
                ]
                batch = images[start : start + batch_size]
                decoded = [future.result() for future in decoding]
                results += self._predict_batch(batch, decoded, start, thresholds, on_error)
                bar.update(len(batch))
        return results

    def _predict_batch(
        self,
        batch: Sequence[ImageInput],
        decoded: Sequence[Image.Image | ImageDecodeError],
        start: int,
        thresholds: dict[str, float],
        on_error: str,
    ) -> list[dict[str, Any]]:
        results = [{"image": _image_name(image, start + offset)} for offset, image in enumerate(batch)]
        good: list[tuple[dict[str, Any], Image.Image]] = []
        for result, image in zip(results, decoded, strict=True):
            if isinstance(image, ImageDecodeError):
                if on_error == "raise":
                    raise image
                result["error"] = str(image)
            else:
                good.append((result, image))
        if good:
            for (result, _), scores in zip(good, self.probabilities([rgb for _, rgb in good]), strict=True):
                result["probabilities"] = dict(zip(self.labels, scores, strict=True))
                result["positives"] = [
                    name for name, p in zip(self.labels, scores, strict=True) if p >= thresholds[name]
                ]
        return results


def _decode(image: ImageInput) -> Image.Image | ImageDecodeError:
    """The RGB image, or the decode error (returned, so that one bad file does not stop a batch)."""
    try:
        return _as_rgb(image)
    except ImageDecodeError as error:
        return error


def _image_name(image: ImageInput, index: int) -> str:
    return f"image {index}" if isinstance(image, Image.Image) else str(image)


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files to predict, folders searched recursively for image suffixes; checked before any model is loaded.

    Every bad input (a missing path, a folder without images, a broken symbolic link, also inside a folder) is
    collected into one `UserError`, so that one run names them all.
    """
    files: list[Path] = []
    errors: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
            errors += [_broken_link(path) for path in found if not path.exists()]
            files += [path for path in found if path.exists()]
            if not found:
                errors.append(f"{item}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        elif item.is_file():
            files.append(item)
        else:
            errors.append(_broken_link(item) if item.is_symlink() else f"{item}: no such file or folder")
    if errors:
        shown = "; ".join(errors[:3]) + (f"; and {len(errors) - 3} more" if len(errors) > 3 else "")
        raise UserError(f"{len(errors)} input(s) cannot be read: {shown}")
    return files


def _broken_link(path: Path) -> str:
    return f"{path}: broken symbolic link to {os.readlink(path)}"


def format_table(results: Sequence[dict[str, Any]], thresholds: dict[str, float]) -> Iterator[str]:
    for result in results:
        if "error" in result:
            continue
        yield f"{result['image']}  positives: {', '.join(result['positives']) or NO_FINDING}"
        for name, p in result["probabilities"].items():
            mark = "*" if name in result["positives"] else " "
            yield f"  {mark} {name:<20s} {p:8.4f}   (threshold {thresholds[name]:.3f})"


def write_results(
    results: Sequence[dict[str, Any]], fmt: str, labels: Sequence[str], thresholds: dict[str, float]
) -> None:
    """Print the successful results to stdout as a table, JSON or CSV (one row per image)."""
    ok = [r for r in results if "error" not in r]
    if fmt == "json":
        json.dump([{key: r[key] for key in ("image", "probabilities", "positives")} for r in ok], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["image", *labels, "positives"])
        for r in ok:
            writer.writerow(
                [r["image"], *(f"{r['probabilities'][n]:.6f}" for n in labels), "|".join(r["positives"]) or NO_FINDING]
            )
    else:
        for line in format_table(ok, thresholds):
            print(line)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hub model id or a local model/run folder.")
    parser.add_argument(
        "inputs", nargs="+", metavar="IMAGE_OR_DIR", help="Image files or folders (searched recursively)."
    )
    parser.add_argument(
        "--threshold", type=float, help="One threshold for all findings (default: thresholds.json, else 0.5)."
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="Output format (default: table).")
    parser.add_argument("--batch-size", type=int, default=16, help="Images per forward pass (default: 16).")
    parser.add_argument("--revision", help="Branch, tag or commit of a Hub model.")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="Run a model's own code from its folder or repo (the paper's CNN needs none: this package registers it).",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, … (default: the GPU if there is one).")


def parse_device(value: str) -> torch.device:
    """`--device`: a torch device this machine has."""
    import torch

    try:
        device = torch.device(value)
    except RuntimeError:
        raise UserError(f"--device {value!r} is not a device (cpu, cuda, cuda:1, …)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {value!r}: no CUDA GPU is available here")
    return device


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" bar above a one-image table, and a load failure is our one line, not also
    transformers' 40-line report; a Hub model's download still shows its bar."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    hub_bars_disabled = are_progress_bars_disabled()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.disable_progress_bar()
    if not hub_bars_disabled:
        enable_progress_bars()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()
        if hub_bars_disabled:
            disable_progress_bars()
        transformers_logging.set_verbosity(verbosity)


def run_cli(args: argparse.Namespace) -> int:
    """Check every input, then load the model, predict and print; exit 1 when some files could not be decoded."""
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if not Path(args.model).exists() and not is_hub_id(args.model):
        raise UserError(f"--model {args.model}: no such folder, and not a Hub id (ORG/NAME)")
    files = expand_inputs(args.inputs)
    device = parse_device(args.device) if args.device is not None else None
    with quiet_loading():
        predictor = Predictor.from_pretrained(
            args.model, revision=args.revision, trust_remote_code=args.trust_remote_code, device=device
        )
    results = predictor.predict(
        [str(f) for f in files],
        batch_size=args.batch_size,
        threshold=args.threshold,
        on_error="record",
        progress=any(Path(item).is_dir() for item in args.inputs),
    )
    write_results(results, args.format, predictor.labels, predictor.thresholds_for(args.threshold))
    errors = [r["error"] for r in results if "error" in r]
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0
