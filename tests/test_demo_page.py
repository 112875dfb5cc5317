"""`chestxray demo` in a real browser (Debian's Chromium driven by Playwright) and through `gradio_client`.

One server for the module: the command itself, on 127.0.0.1 and a free port, with a tiny run folder, its
temporary files under this test's own TMPDIR so that what it keeps can be inspected. The page's numbers are
compared with `chestxray predict` on the same shipped NIH PNG.

Under CI (CI=true) a missing Gradio, Playwright or Chromium fails these tests; elsewhere they are skipped
with the install hint.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from run_folder_factory import SAMPLE_ROOT, make_run_folder
from test_images import write_dicom

from pipeline.cli import main
from pipeline.labels import FINDINGS

IN_CI = os.environ.get("CI", "").lower() == "true"
INSTALL_HINT = "pip install -e '.[demo]' (and apt-get install chromium)"
XRAY = SAMPLE_ROOT / "images" / "00000282_000.png"  # not one of the page's examples
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEAVY = ("torch", "transformers", "datasets", "timm", "matplotlib", "gradio")


def _need(available: bool, what: str) -> None:
    if not available:
        message = f"{what} is not installed: {INSTALL_HINT}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, run_dir: Path, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "pipeline.cli", "demo", str(run_dir), "--port", str(self.port)]
        self.log = tmp.parent / "server.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                urllib.request.urlopen(self.url, timeout=5).close()
                return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise AssertionError(f"the demo did not start:\n{self.log.read_text()}")

    def config(self) -> dict:
        with urllib.request.urlopen(self.url + "config", timeout=10) as response:
            return json.load(response)

    def files(self) -> list[Path]:
        return [path for path in self.tmp.rglob("*") if path.is_file()]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return make_run_folder(tmp_path_factory.mktemp("demo") / "run", with_checkpoint=False, test_images=12)


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    _need(importlib.util.find_spec("gradio") is not None, "gradio")
    tmp = tmp_path_factory.mktemp("server") / "tmp"
    tmp.mkdir()
    server = Server(run_dir, tmp)
    yield server
    server.stop()


def _predict(run_dir: Path, image: Path) -> dict[str, float]:
    """`chestxray predict --format json` on one image: finding → probability."""
    out = StringIO()
    with redirect_stdout(out):
        assert main(["predict", "--model", str(run_dir), "--format", "json", str(image)]) == 0
    return json.loads(out.getvalue())[0]["probabilities"]


@pytest.fixture(scope="module")
def predicted(run_dir) -> dict[str, float]:
    return _predict(run_dir, XRAY)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on `port` (Linux /proc), as dotted IPv4 or 'ipv6'."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                addresses.add(".".join(str(b) for b in raw[::-1]) if len(raw) == 4 else "ipv6")
    return addresses


def _table(page) -> list[list[str]]:
    """The findings table as the page shows it: Gradio's grid cells, by their row and column."""
    cells = page.locator("#findings [role=gridcell]")
    page.wait_for_function("() => document.querySelectorAll('#findings [role=gridcell]').length === 56")
    found = cells.evaluate_all("cells => cells.map(c => [+c.dataset.row, +c.dataset.col, c.innerText.trim()])")
    table = [[""] * 4 for _ in range(len(found) // 4)]
    for row, column, text in found:
        table[row][column] = text
    return table


def test_demo_help_imports_nothing_heavy():
    code = (
        "import sys\nfrom pipeline.cli import main\ntry:\n    main(['demo', '--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "--share" in result.stdout and result.stdout.strip().endswith("[]"), result.stdout + result.stderr


def test_without_gradio_the_command_prints_the_install_hint(run_dir):
    code = (
        "import sys\nclass NoGradio:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.partition('.')[0] == 'gradio':\n            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NoGradio())\nfrom pipeline.cli import main\n"
        f"sys.exit(main(['demo', {str(run_dir)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the demo page needs Gradio, which the core install leaves out: pip install -e '.[demo]'"
    ]


def test_page_in_a_real_browser(server, predicted, run_dir, tmp_path):
    _need(importlib.util.find_spec("playwright") is not None, "playwright")
    _need(CHROMIUM is not None, "chromium")
    from playwright.sync_api import sync_playwright

    assert _listening_addresses(server.port) in ({"127.0.0.1"}, set())  # set(): no /proc here
    config = server.config()
    assert config["analytics_enabled"] is False
    thresholds = json.loads((run_dir / "thresholds.json").read_text())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(server.url)
            page.get_by_text("Research model, not a diagnostic device").wait_for()
            assert page.get_by_text("partial").count() >= 1  # 12 of the 25,596 official test images
            page.locator("#upload input[type=file]").set_input_files(str(XRAY))
            page.locator("#heatmap img").wait_for(timeout=120_000)

            rows = _table(page)
            assert [row[0] for row in rows] == sorted(predicted, key=lambda name: -predicted[name])
            assert sorted(row[0] for row in rows) == sorted(FINDINGS)
            for name, probability, threshold, above in rows:
                assert float(probability) == pytest.approx(predicted[name], abs=1e-4)
                assert float(threshold) == pytest.approx(thresholds[name], abs=1e-4)
                assert above == ("yes" if predicted[name] >= thresholds[name] else "no")
            top, other = rows[0][0], rows[5][0]
            assert top in page.locator("#heatmap figcaption").inner_text()
            first_map = page.locator("#heatmap img").get_attribute("src")

            page.locator("#finding input").click()
            page.get_by_role("option", name=re.compile(rf"^{other} \(")).click()
            page.locator("#heatmap figcaption", has_text=other).wait_for(timeout=60_000)
            assert page.locator("#heatmap img").get_attribute("src") != first_map
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            # Nothing of the upload is left on the server's disk once the page has its answer.
            assert not [path for path in server.files() if path.name == XRAY.name]

            broken = tmp_path / "broken.png"
            broken.write_bytes(XRAY.read_bytes()[:100])
            page.locator("#upload button[aria-label='Clear']").click()
            page.locator("#upload input[type=file]").set_input_files(str(broken))
            page.get_by_text("broken.png: not a readable or complete image file").wait_for(timeout=60_000)
            assert not [path for path in server.files() if path.name == broken.name]

            page.locator("#upload button[aria-label='Clear']").click()
            page.locator("#upload input[type=file]").set_input_files(str(XRAY))  # still serving
            page.locator("#heatmap figcaption", has_text=top).wait_for(timeout=60_000)
            assert [row[1] for row in _table(page)] == [row[1] for row in rows]
        finally:
            browser.close()


def test_gradio_client_matches_predict_on_png_and_dicom_and_reads_errors(server, predicted, run_dir, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False)
    table, _, figure = client.predict(handle_file(str(XRAY)), "Grad-CAM", api_name="/predict")
    assert table["headers"] == ["Finding", "Probability", "Threshold", "Positive"]
    assert {row[0]: row[1] for row in table["data"]} == pytest.approx(predicted, abs=1e-4)
    assert figure.startswith('<figure id="heatmap"><img') and "data:image/png;base64," in figure
    _, _, rollout = client.predict(handle_file(str(XRAY)), "attention rollout", api_name="/predict")
    assert "Attention rollout" in rollout and "Grad-CAM" not in rollout  # the ViT's finding-independent view
    # A 12-bit MONOCHROME1 DICOM through the same upload: predict's decoding (rescale, inversion) and scores.
    pixels = np.asarray(Image.open(XRAY).convert("L").resize((64, 64)), dtype=np.uint16) * 16
    dicom = write_dicom(tmp_path / "xray.dcm", 4095 - pixels, "MONOCHROME1")
    table, _, _ = client.predict(handle_file(str(dicom)), "Grad-CAM", api_name="/predict")
    assert {row[0]: row[1] for row in table["data"]} == pytest.approx(_predict(run_dir, dicom), abs=1e-4)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(AppError, match=r"broken\.png: not a readable image file"):
        client.predict(handle_file(str(broken)), "Grad-CAM", api_name="/predict")
    assert not [path for path in server.files() if path.name in (XRAY.name, dicom.name, broken.name)]


def test_server_exits_on_sigterm_and_leaves_no_upload_folder(server):
    assert [path for path in server.tmp.iterdir() if path.name.startswith("chestxray-demo-")]
    assert server.stop() == 0
    assert not [path for path in server.tmp.iterdir() if path.name.startswith("chestxray-demo-")]
    assert "gradio.live" not in server.log.read_text()
