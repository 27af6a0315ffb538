"""The heatmap browser in a real browser: JupyterLab on loopback, driven by Playwright in
Debian's headless Chromium, as a person would use it.

Opens a notebook that shows the browser over a demo run, runs it, changes the class and moves
the image slider, and checks that the picture changes each time and that no error appears.
Screenshots go to the test's folder and to ``runs/test-output/browser_e2e/`` (git-ignored).
Skips, saying why, where Chromium or Playwright is missing (``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
SIZE = 48
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _notebook(path: Path, data_root: Path, run_dir: Path) -> None:
    code = (f"from chexlib.browser import HeatmapBrowser\n"
            f"browser = HeatmapBrowser.from_run({str(run_dir)!r}, "
            f"methods=['epsilon_plus_flat', 'gradcam'])\n"
            f"browser")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Browser test"),
                                         nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory, tiny_run):
    """A JupyterLab server on loopback whose python3 kernel is this interpreter."""
    data_root, run_dir, _, _ = tiny_run
    home = tmp_path_factory.mktemp("jupyter")
    kernel_dir = home / "data" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    work = home / "work"
    work.mkdir()
    _notebook(work / "browser.ipynb", data_root, run_dir)
    port, token = _free_port(), "chexlib-e2e"
    env = {**os.environ, "JUPYTER_PATH": str(home / "data"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "rt"),
           "OMP_NUM_THREADS": "1"}
    log = open(home / "server.log", "w")  # noqa: SIM115 (open while the server runs)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--allow-root",
         f"--ServerApp.root_dir={work}", "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url, token
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def _picture(page):
    return page.locator("img.widget-image").first


def _wait_for_new_picture(page, before: bytes, timeout: float = 90.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _picture(page).screenshot()
        if now != before:
            return now
        page.wait_for_timeout(300)
    raise AssertionError("the browser's picture did not change")


def test_browser_in_jupyterlab(jupyterlab, tmp_path):
    url, token = jupyterlab
    shots = [tmp_path, ROOT / "runs" / "test-output" / "browser_e2e"]
    shots[1].mkdir(parents=True, exist_ok=True)

    def screenshot(page, name):
        page.screenshot(path=str(tmp_path / name), full_page=True)
        shutil.copy(tmp_path / name, shots[1] / name)

    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(f"{url}/lab/tree/browser.ipynb?token={token}")
        page.locator(".jp-Notebook").first.wait_for(timeout=90_000)
        select = page.locator(".jp-Dialog button", has_text="Select")
        try:  # JupyterLab may ask which kernel to start: the (only) Python 3
            select.first.click(timeout=20_000)
        except playwright.TimeoutError:
            pass
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
            timeout=90_000)
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            _picture(page).wait_for(state="visible", timeout=180_000)
        except Exception:
            screenshot(page, "failed_to_open.png")  # what the page showed instead
            raise
        first = _picture(page).screenshot()
        screenshot(page, "01_opened.png")

        page.locator(".widget-dropdown", has_text="class").locator("select").select_option(
            "Edema")
        second = _wait_for_new_picture(page, first)
        screenshot(page, "02_class_edema.png")

        handle = page.locator(".widget-hslider", has_text="image").locator(".noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")
        _wait_for_new_picture(page, second)
        screenshot(page, "03_slider_moved.png")
        caption = page.locator(".widget-html-content").first.inner_text()
        assert "image 2 of" in caption and "Edema" in caption

        errors = page.locator(".jp-OutputArea-output[data-mime-type="
                              "'application/vnd.jupyter.stderr']")
        texts = [errors.nth(i).inner_text() for i in range(errors.count())]
        assert not [t for t in texts if "Error" in t or "Traceback" in t], texts
        assert page.locator(".jp-RenderedText:has-text('Traceback')").count() == 0
        chromium.close()
