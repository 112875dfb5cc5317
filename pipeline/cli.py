"""The entry points: the `chestxray` command and the recipe scripts. Each subcommand lives in the module that
does the work.

A command module defines `add_arguments(parser)` and `run_cli(args) -> int | None`; it is imported only when
its subcommand runs, and imports torch, transformers or datasets only inside the functions that use them, so
that `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pipeline.arguments import parse_args
from pipeline.errors import run_main

COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("pipeline.convert", "Convert an NIH ChestX-ray14 download into a 🤗 DatasetDict."),
    "push": ("pipeline.hub", "Publish a training run folder to the Hugging Face Hub."),
    "predict": ("pipeline.predict", "Predict the 14 findings for images, folders or DICOM files."),
    "compare": ("pipeline.report.command", "Compare training runs: report.md with tables and figures."),
    "study": ("pipeline.study", "Train every model of the comparison study, then write the report."),
    "demo": ("pipeline.demo", "Serve a model's demo page (Gradio): upload an X-ray, see findings and heat maps."),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Only the chosen subcommand imports its module and adds its arguments.
    parser = argparse.ArgumentParser(
        prog="chestxray", description="Chest X-ray classifiers with 🤗 libraries.", allow_abbrev=False
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        sub.set_defaults(_module=module)
        if argv[:1] == [name]:
            importlib.import_module(module).add_arguments(sub)
    args = parser.parse_args(argv)
    return run_main(lambda: importlib.import_module(args._module).run_cli(args))


def run_recipe(argv: list[str] | None = None) -> int:
    """The recipe scripts' entry point: the recipe and flags are checked before the training stack (datasets,
    timm, the models) is imported; `pipeline.train.main` then trains with them."""
    argv = sys.argv[1:] if argv is None else argv
    parsed = None

    def check() -> None:
        nonlocal parsed
        parsed = parse_args(argv)

    return run_main(check) or importlib.import_module("pipeline.train").main(argv, parsed=parsed)

if __name__ == "__main__":
    sys.exit(main())
