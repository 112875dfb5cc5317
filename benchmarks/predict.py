"""Benchmark `chestxray predict`: `Predictor.predict` on image files (decode, grayscale, RGB, the model's image
processor, forward, sigmoid, thresholds) against the bare forward pass of the same model, on the same device, in
the same dtype, at the same batch size, on random tensors already on the device. Both in one process.

The model is a run folder or Hub id (--model, loaded as `chestxray predict` loads it), or else built from a
recipe's flags with random weights (`--model_type vit --image_size 224`, `--config recipe.yaml`), which is all a
throughput number needs. The images are the files under --images-dir (default: the 28 shipped NIH PNGs,
1024 px), cycled to --images files.

    python benchmarks/predict.py --model outputs/runs/vit_b16_pretrained --batch-size 256 --images 2048
    python benchmarks/predict.py --batch-size 64 --images 256 --model_type vit --image_size 224
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.common import environment, model_description, rates, recipe_argv, scratch_folder  # noqa: E402
from benchmarks.machine import report  # noqa: E402
from pipeline.arguments import parse_args  # noqa: E402
from pipeline.errors import UserError  # noqa: E402
from pipeline.labels import FINDINGS  # noqa: E402
from pipeline.models import build_image_processor, build_model  # noqa: E402
from pipeline.predict import Predictor, expand_inputs  # noqa: E402
from pipeline.transforms import processor_geometry  # noqa: E402

SAMPLE_IMAGES = REPO / "pipeline" / "assets" / "nih_sample" / "images"


def build_predictor(args: argparse.Namespace, rest: Sequence[str], workdir: Path) -> tuple[Predictor, dict]:
    """The Predictor of --model, or of a random-weight model built from the recipe flags in `rest`."""
    device = args.device
    if args.model is not None:
        if rest:
            raise SystemExit(f"error: --model loads a trained model; unexpected recipe flags {' '.join(rest)}")
        predictor = Predictor.from_pretrained(args.model, device=device)
        return predictor, {"model": args.model}
    # The recipe needs a dataset name (a user's or the YAML's wins); prediction never reads it.
    model_args, _, _ = parse_args(recipe_argv(["--dataset_name_or_path", "unused", *rest], workdir, {}))
    processor = build_image_processor(model_args)
    predictor = Predictor(build_model(model_args, names=FINDINGS), processor, device=device)
    return predictor, model_description(model_args, processor_geometry(processor)[0])


@torch.inference_mode()
def interleaved_rates(predictor: Predictor, files: Sequence[str], batch_size: int) -> dict[str, float]:
    """Images/s (overall, median batch) of `Predictor.predict` on files, one batch a call as `chestxray predict`
    runs it, and of the bare forward pass on a random batch already on the device in the model's dtype; the
    two alternate batch by batch, so that other load on the machine slows both alike. Both bring the logits
    back to the CPU, which syncs the device."""
    image_size = processor_geometry(predictor.processor)[0]
    pixels = torch.randn(batch_size, 3, image_size, image_size, device=predictor.device, dtype=predictor.dtype)
    predict_seconds, bare_seconds = [], []
    for start in range(0, len(files), batch_size):
        begin = time.perf_counter()
        results = predictor.predict(files[start : start + batch_size], batch_size=batch_size)
        predict_seconds.append(time.perf_counter() - begin)
        if any("error" in result for result in results):
            raise RuntimeError(f"predict failed: {results}")
        begin = time.perf_counter()
        predictor.model(pixel_values=pixels).logits.cpu()
        bare_seconds.append(time.perf_counter() - begin)
    predicted, predicted_median = rates(list(itertools.accumulate(predict_seconds, initial=0.0)), batch_size)
    bare, bare_median = rates(list(itertools.accumulate(bare_seconds, initial=0.0)), batch_size)
    return {
        "bare_forward_img_s": round(bare, 2),
        "bare_forward_img_s_median_batch": round(bare_median, 2),
        "predict_img_s": round(predicted, 2),
        "predict_img_s_median_batch": round(predicted_median, 2),
        "predict_vs_bare": round(predicted / bare, 3),
        "predict_vs_bare_median_batch": round(predicted_median / bare_median, 3),
    }


def measure(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="run folder or Hub id (default: build from recipe flags)")
    parser.add_argument("--images-dir", type=Path, default=SAMPLE_IMAGES, help="folder of X-rays to predict")
    parser.add_argument(
        "--images", type=int, default=128, help="files predicted (the folder's, cycled; a multiple of --batch-size)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="as `chestxray predict --batch-size`")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches before each measurement")
    parser.add_argument("--device", default=None, help="cpu, cuda, … (default: as chestxray predict)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=None, help="also append the JSON line to this file")
    args, rest = parser.parse_known_args(argv)
    if args.images % args.batch_size:
        parser.error(f"--images {args.images} is not a multiple of --batch-size {args.batch_size}")
    try:
        files = expand_inputs([args.images_dir])
    except UserError as error:
        parser.error(str(error))
    files = [str(path) for path in itertools.islice(itertools.cycle(files), args.images)]
    with scratch_folder(args.workdir) as workdir:
        predictor, description = build_predictor(args, rest, workdir)
    predictor.predict(files[: args.warmup * args.batch_size], batch_size=args.batch_size)
    result = {
        "benchmark": "predict",
        **environment(predictor.device),
        **description,
        "image_size": processor_geometry(predictor.processor)[0],
        "dtype": str(predictor.dtype).removeprefix("torch."),
        "batch_size": args.batch_size,
        "images": len(files),
        "images_dir": str(args.images_dir),
        **interleaved_rates(predictor, files, args.batch_size),
    }
    report(result, args.output)
    return result


if __name__ == "__main__":
    measure()
