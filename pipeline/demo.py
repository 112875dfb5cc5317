"""`chestxray demo MODEL`: the model's demo page (Gradio) on this machine, for a run folder, a pushed folder or a
Hub model id.

Nothing heavy is imported at the top: `chestxray demo --help` answers at once, and without Gradio installed the
command says how to install it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from pipeline.errors import UserError
from pipeline.locations import is_hub_id

INSTALL_HINT = "the demo page needs Gradio, which the core install leaves out: pip install -e '.[demo]'"
DEFAULT_HOST = "127.0.0.1"
EXAMPLES = 3


class DemoError(UserError, RuntimeError):
    """The demo cannot start: Gradio missing, or no model where the user pointed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="Run folder, pushed (--dry-run) folder or Hub id ORG/NAME.")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="Address to serve on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to your network).",
    )
    parser.add_argument("--port", type=int, help="Port (default: the first free one from 7860).")
    parser.add_argument(
        "--share", action="store_true", help="Also open a public gradio.live link (uploads then cross the internet)."
    )
    parser.add_argument("--revision", help="Branch, tag or commit of a Hub model.")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="Run a model's own code from its folder or repo (the paper's CNN needs none: this package registers it).",
    )


def _stop(_signal: int, _frame: object) -> None:
    sys.exit(0)  # SIGTERM ends like Ctrl-C: exit handlers remove the upload folder


def run_cli(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401  (the page's own module imports it; here its absence gets the install hint)
    except ImportError as error:
        raise DemoError(INSTALL_HINT) from error
    if not Path(args.model).exists() and not is_hub_id(args.model):
        raise DemoError(f"{args.model}: no such folder, and not a Hub model id (ORG/NAME)")
    from pipeline import demo_page
    from pipeline.cards import example_images

    try:
        model = demo_page.DemoModel(args.model, revision=args.revision, trust_remote_code=args.trust_remote_code)
    except (OSError, ValueError) as error:
        raise DemoError(f"cannot load model {args.model!r}: {str(error).splitlines()[0]}") from error
    demo = demo_page.build_demo(model, [(example.path, example.title) for example in example_images(EXAMPLES)])
    signal.signal(signal.SIGTERM, _stop)
    try:
        demo_page.launch(demo, host=args.host, port=args.port, share=args.share)
    except OSError as error:  # a taken port or an address this machine does not have
        reason = str(error).split(". ")[0]  # Gradio's advice that follows names its own parameters, not ours
        where = f"{args.host}:{args.port or 'a port from 7860'}"
        raise DemoError(f"cannot serve on {where}: {reason}; try another --port") from error
    return 0
