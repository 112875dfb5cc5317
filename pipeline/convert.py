"""`chestxray convert`: an NIH ChestX-ray14 download → a `datasets.DatasetDict` folder (and the Hub).

The output appears only when complete: everything is written to a hidden temporary folder next to it and
renamed at the end, so an interrupted or failed conversion never leaves a loadable half dataset, and an
existing output is replaced only with `--overwrite`. A killed conversion's hidden folder is removed by the next
conversion to the same output once its owner is provably dead (`pipeline.scratch`).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from pipeline.errors import UserError
from pipeline.hub import describe_hub_error
from pipeline.images import DEFAULT_IMAGE_SIZE
from pipeline.locations import check_repo_id
from pipeline.nih import NIHSource, load_source, split_by_patient
from pipeline.scratch import make_scratch_dir, remove_stale_scratch

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
# What `DatasetDict.save_to_disk` writes at the top of its folder: marks a folder --overwrite may replace.
DATASET_DICT_FILE = "dataset_dict.json"
# --image-size: 0 keeps the source size; below 32 px a chest X-ray is no longer readable, above NIH's 1024 px
# nothing is gained (images are never enlarged).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 1024


class ConversionError(UserError, ValueError):
    """The conversion cannot proceed (missing images, existing output…); the message says what to do."""


@dataclass
class ConversionSummary:
    """What was written: images per split, and images listed in the split but absent on disk."""

    output: Path
    labels_csv: Path
    counts: dict[str, int] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)


def check_output(output: Path, nih_root: Path, overwrite: bool) -> None:
    """Refuse to write over the input, to replace an existing output without `overwrite`, and even with it
    to replace anything but a converted dataset (a folder with `dataset_dict.json`) or an empty folder."""
    output, nih_root = output.resolve(), nih_root.resolve()
    if output == nih_root or nih_root in output.parents:
        raise ConversionError(f"{output}: the output folder must not be or be inside the NIH root {nih_root}")
    if output in nih_root.parents:
        raise ConversionError(f"{output}: the output folder must not contain the NIH root {nih_root}")
    if not output.exists():
        return
    if not overwrite:
        raise ConversionError(f"{output} already exists; pass --overwrite to replace it")
    if not output.is_dir():
        raise ConversionError(f"{output} exists and is not a folder")
    if not (output / DATASET_DICT_FILE).is_file() and any(output.iterdir()):
        raise ConversionError(
            f"{output} is not a converted dataset (no {DATASET_DICT_FILE}) and not empty; --overwrite only "
            "replaces the output of an earlier conversion: choose another --output or remove it yourself"
        )


def present_splits(
    source: NIHSource, splits: dict[str, list[str]], allow_missing: bool
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The names of each split that have an image on disk, and how many are missing per split.

    Missing images are an error unless `allow_missing`, since a partial download would otherwise turn
    silently into a smaller dataset.
    """
    present = {split: [n for n in names if n in source.image_files] for split, names in splits.items()}
    missing = {split: len(names) - len(present[split]) for split, names in splits.items()}
    if sum(missing.values()) and not allow_missing:
        absent = [n for names in splits.values() for n in names if n not in source.image_files]
        total = sum(len(names) for names in splits.values())
        raise ConversionError(
            f"{len(absent)} of {total} images listed in {source.labels_csv.name} and the split lists are missing "
            f"under {source.root}, e.g. {', '.join(absent[:5])}; finish the download, or pass --allow-missing "
            "to convert the images that are present"
        )
    return present, missing


def check_not_empty(splits: dict[str, list[str]], missing: dict[str, int]) -> None:
    """Refuse to write a split without images: `load_from_disk` cannot load a DatasetDict that has one."""
    empty = [split for split, names in splits.items() if not names]
    if empty:
        reasons = "; ".join(
            f"{split}: all {missing[split]} listed images are missing on disk"
            if missing.get(split)
            else f"{split}: no image assigned to it"
            for split in empty
        )
        raise ConversionError(
            f"the {', '.join(empty)} split would be empty ({reasons}), and a saved DatasetDict with an "
            "empty split cannot be loaded; convert more images or change --validation-fraction"
        )


def _move_into_place(built: Path, output: Path, scratch: Path) -> None:
    """Rename the finished build to `output`; an output being replaced is put back if that rename fails."""
    replaced = scratch / "replaced"
    try:
        if output.exists():
            output.rename(replaced)
        try:
            built.rename(output)
        except OSError:
            if replaced.exists():
                replaced.rename(output)
            raise
    except OSError as exc:
        raise ConversionError(f"cannot move the converted dataset to {output} ({exc}); nothing was changed") from exc


def check_image_size(image_size: int) -> int:
    """`image_size` if it is 0 (keep the source size) or within MIN_IMAGE_SIZE..MAX_IMAGE_SIZE."""
    if image_size != 0 and not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ConversionError(
            f"--image-size {image_size}: expected 0 (keep the source size) "
            f"or {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels"
        )
    return image_size


def warn_if_mixed_sizes(source: NIHSource, splits: dict[str, list[str]]) -> None:
    """With `--image-size 0` the images keep their own sizes: say so when the sources differ (PNG headers only)."""
    sizes: Counter[tuple[int, int]] = Counter()
    for name in (name for names in splits.values() for name in names):
        try:
            with Image.open(source.image_files[name]) as image:
                sizes[image.size] += 1
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue  # the conversion names the unreadable file
    if len(sizes) > 1:
        common = ", ".join(f"{width}x{height}: {count}" for (width, height), count in sizes.most_common(3))
        logger.warning(
            "--image-size 0 keeps each image's own size, and the sources have %d sizes (%s); the dataset "
            "will hold images of different sizes (pass --image-size 256, say, for one shorter side)",
            len(sizes),
            common,
        )


def _write_failure(exc: OSError, output: Path) -> ConversionError:
    """A failed write (disk full, permission denied…) as one line; the existing output is unchanged."""
    where = f" ({exc.filename})" if exc.filename else ""
    return ConversionError(
        f"cannot write the dataset next to {output}: {exc.strerror or exc}{where}; nothing was changed at {output}"
    )


def convert(
    nih_root: Path,
    output: Path,
    labels_csv: Path | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    validation_fraction: float = 0.1,
    seed: int = 42,
    num_proc: int | None = None,
    allow_missing: bool = False,
    overwrite: bool = False,
    repo_id: str | None = None,
    train_val_list: Path | None = None,
    test_list: Path | None = None,
) -> ConversionSummary:
    """Convert the NIH download at `nih_root` into a DatasetDict saved at `output`, with a README card
    (whose usage snippet names `repo_id` when the dataset is going to the Hub)."""
    # datasets is imported when a conversion runs, not for `convert --help`
    from pipeline.cards import render_dataset_card
    from pipeline.dataset import build_dataset_dict, default_num_proc

    nih_root, output = Path(nih_root), Path(output)
    check_image_size(image_size)
    check_output(output, nih_root, overwrite)
    source = load_source(nih_root, labels_csv, train_val_list, test_list)
    train, validation = split_by_patient(source.train_val, source.records, validation_fraction, seed)
    splits, missing = present_splits(
        source, {"train": train, "validation": validation, "test": source.test}, allow_missing
    )
    check_not_empty(splits, missing)
    if image_size == 0:
        warn_if_mixed_sizes(source, splits)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_scratch(output)
        scratch = make_scratch_dir(output)
    except OSError as exc:
        raise _write_failure(exc, output) from exc
    try:
        dataset = build_dataset_dict(source, splits, image_size, num_proc or default_num_proc(), scratch / "cache")
        built = scratch / "dataset"
        dataset.save_to_disk(str(built))
        options = {
            "image_size": image_size,
            "validation_fraction": validation_fraction,
            "seed": seed,
            "allow_missing": allow_missing,
        }
        render_dataset_card(dataset, source.labels_csv.name, options, repo_id, missing).save(built / CARD_FILE)
        _move_into_place(built, output, scratch)
    except OSError as exc:  # image reads fail as ImageDecodeError: an OSError here is a failed write
        raise _write_failure(exc, output) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return ConversionSummary(output, source.labels_csv, {s: len(n) for s, n in splits.items()}, missing)


def push_converted(output: Path, repo_id: str, private: bool = False) -> None:
    """Upload a converted folder: its README card and its splits as Parquet shards."""
    from pipeline.dataset import load_dataset_dict, push_dataset_dict

    card = (output / CARD_FILE).read_text(encoding="utf-8")
    push_dataset_dict(load_dataset_dict(output), repo_id, card, private=private)


def _fraction(text: str) -> float:
    """A validation fraction strictly between 0 and 1: each split must hold images."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1 (both excluded)")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (worker processes, images)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nih-root",
        type=Path,
        required=True,
        help="NIH download: images_001/images/*.png … or images/*.png, the label CSV, split lists",
    )
    parser.add_argument("--output", type=Path, required=True, help="folder for the DatasetDict (save_to_disk)")
    parser.add_argument(
        "--labels-csv",
        type=Path,
        default=None,
        help="label CSV (default: Data_Entry_2017_v2020.csv, else Data_Entry_2017.csv, in --nih-root or one "
        "folder down); a bare name means the file in --nih-root",
    )
    parser.add_argument(
        "--train-val-list",
        type=Path,
        default=None,
        help="official train/validation list (default: train_val_list.txt in --nih-root or one folder down)",
    )
    parser.add_argument(
        "--test-list",
        type=Path,
        default=None,
        help="official test list (default: test_list.txt in --nih-root or one folder down)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        help=f"shorter side in pixels, {MIN_IMAGE_SIZE}-{MAX_IMAGE_SIZE} (default 256: room for 224 px crops at "
        "~1/16 of the decode cost of the 1024 px originals); never enlarges; 0 keeps the source size",
    )
    parser.add_argument(
        "--validation-fraction",
        type=_fraction,
        default=0.1,
        help="fraction of the train_val patients held out as validation, between 0 and 1 (default 0.1)",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/validation patient split")
    parser.add_argument("--num-proc", type=positive_int, default=None, help="worker processes (default: all cores)")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="convert the images present when some listed images are missing on disk",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        default=None,
        help="also upload the dataset (Parquet) with its card to this Hub dataset repo",
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")


def _print_summary(summary: ConversionSummary) -> None:
    for split, count in summary.counts.items():
        missing = summary.missing.get(split, 0)
        print(f"{split}: {count} images" + (f" ({missing} listed but missing on disk)" if missing else ""))
    print(f"saved to {summary.output} (labels from {summary.labels_csv.name})")


def run_cli(args: argparse.Namespace) -> int:
    if args.push_to_hub:
        check_repo_id(args.push_to_hub, "--push-to-hub")  # before the conversion, not after it
    summary = convert(
        args.nih_root,
        args.output,
        labels_csv=args.labels_csv,
        image_size=args.image_size,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        num_proc=args.num_proc,
        allow_missing=args.allow_missing,
        overwrite=args.overwrite,
        repo_id=args.push_to_hub,
        train_val_list=args.train_val_list,
        test_list=args.test_list,
    )
    _print_summary(summary)
    if args.push_to_hub:
        try:
            push_converted(summary.output, args.push_to_hub, private=args.private)
        except Exception as exc:  # any Hub/network failure: one line, not a traceback
            print(f"error: upload to {args.push_to_hub} failed: {describe_hub_error(exc)}", file=sys.stderr)
            return 1
        print(f"pushed to https://huggingface.co/datasets/{args.push_to_hub}")
    return 0
