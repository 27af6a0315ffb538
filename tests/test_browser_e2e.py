"""The heatmap browser in a real browser: JupyterLab on loopback, driven by Playwright in
Debian's headless Chromium, as a person would use it.

Opens a notebook that shows the browser over a demo run on a blank Grad-CAM map and checks the
picture's message; changes the method to one whose maps are computed and checks that a
"computing" state showed; presses the image slider three times quickly and checks that one
rendering ran (the debounce); and opens an executed copy of the notebook in a second JupyterLab
that has no kernel at all, and checks that the kernel indicator says "No Kernel" and the output
shows the stored picture and caption.
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
TOKEN = "chexlib-e2e"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _blank_case(run_dir: Path) -> tuple[str, int]:
    """(observation, row) of an all-zero Grad-CAM map of the demo run (it is deterministic)."""
    from chexlib.browser import HeatmapBrowser
    from chexlib.observations import OBSERVATIONS

    source = HeatmapBrowser.from_run(run_dir, methods=["gradcam"]).source
    for row in range(len(source.reported)):
        maps = source.maps("gradcam", row)
        for j, name in enumerate(OBSERVATIONS):
            if not maps[j].any():
                return name, row
    pytest.fail("the demo run has no all-zero Grad-CAM map")


def _notebook(path: Path, run_dir: Path, observation: str, row: int) -> None:
    # Opens on a blank Grad-CAM map; the last cell reports how many renderings ran.
    code = (f"from chexlib.browser import BrowserState, HeatmapBrowser\n"
            f"browser = HeatmapBrowser.from_run({str(run_dir)!r}, "
            f"methods=['gradcam', 'epsilon_plus_flat'], state=BrowserState("
            f"observation={observation!r}, method='gradcam', position={row}))\n"
            f"browser")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Browser test"),
                                         nbformat.v4.new_code_cell(code),
                                         nbformat.v4.new_code_cell(
                                             'print(f"renders={browser.renders}")')])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


def _executed_copy(source: Path, target: Path, env: dict) -> None:
    """The notebook executed as the series executes its notebooks (nbclient, widget state
    stored in the notebook's metadata)."""
    from nbclient import NotebookClient

    nb = nbformat.read(source, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={
        "metadata": {"path": str(source.parent)}}).execute(env=env)
    nbformat.write(nb, target)


def _start_lab(env: dict, work: Path, log_path: Path, *options: str):
    """A JupyterLab server on loopback serving ``work``: (process, url, log)."""
    port, token = _free_port(), TOKEN
    log = open(log_path, "w")  # noqa: SIM115 (open while the server runs)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", "--allow-root",
         f"--ServerApp.root_dir={work}", "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True",
         *options], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            return server, url, log
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)


def _stop_lab(server, log) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory, tiny_run):
    """Two JupyterLab servers on loopback over the same folder: one whose python3 kernel is this
    interpreter, and one with no kernel at all (every kernel spec filtered out), where an
    executed notebook opens as it would for a reader without the project installed."""
    data_root, run_dir, _, _ = tiny_run
    home = tmp_path_factory.mktemp("jupyter")
    kernel_dir = home / "data" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    work = home / "work"
    work.mkdir()
    observation, row = _blank_case(run_dir)
    _notebook(work / "browser.ipynb", run_dir, observation, row)
    env = {**os.environ, "JUPYTER_PATH": str(home / "data"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "rt"),
           "OMP_NUM_THREADS": "1"}
    _executed_copy(work / "browser.ipynb", work / "executed.ipynb", env)
    lab, url, log = _start_lab(env, work, home / "server.log")
    bare, bare_url, bare_log = _start_lab(
        env, work, home / "server_no_kernel.log",
        "--KernelSpecManager.allowed_kernelspecs={'no-such-kernel'}")
    yield url, bare_url, row
    _stop_lab(lab, log)
    _stop_lab(bare, bare_log)


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


def _run_cell(page, index: int) -> str:
    """Run code cell ``index`` of the open notebook (Shift+Enter) and return its new output."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    before = cell.locator(".jp-OutputArea-output").all_inner_texts()
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = cell.locator(".jp-OutputArea-output").all_inner_texts()
        if now and now != before:
            return " ".join(now)
        page.wait_for_timeout(200)
    raise AssertionError(f"cell {index} gave no new output")


def _renders(page) -> int:
    text = _run_cell(page, 2)
    return int(text.split("renders=")[1].split()[0])


# Records whether the browser's status line ever said "computing" (it may show only briefly).
_WATCH_BUSY = """() => {
  window.__sawBusy = false;
  new MutationObserver(() => {
    const status = document.querySelector('.chexlib-browser-status');
    if (status && status.innerText.includes('computing')) { window.__sawBusy = true; }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _open(page, url, name, workspace="default"):
    # A workspace of its own per notebook: only that notebook is open in the page.
    page.goto(f"{url}/lab/workspaces/{workspace}/tree/{name}?reset&token={TOKEN}")
    page.locator(".jp-Notebook").first.wait_for(timeout=90_000)


def test_browser_in_jupyterlab(jupyterlab, tmp_path):
    url, bare_url, row = jupyterlab
    shots = [tmp_path, ROOT / "runs" / "test-output" / "browser_e2e"]
    shots[1].mkdir(parents=True, exist_ok=True)

    def screenshot(page, name):
        page.screenshot(path=str(tmp_path / name), full_page=True)
        shutil.copy(tmp_path / name, shots[1] / name)

    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = chromium.new_page(viewport={"width": 1280, "height": 1300})
        _open(page, url, "browser.ipynb")
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
        screenshot(page, "01_opened_on_a_blank_map.png")
        caption = page.locator(".widget-html-content", has_text="image").first.inner_text()
        # 1. A blank map says so, with the reason.
        assert "This map shows nothing" in caption and "zero everywhere" in caption, caption

        # 2. Busy state: a method whose maps are not stored is computed; the status says so.
        page.evaluate(_WATCH_BUSY)
        page.locator(".widget-dropdown", has_text="method").locator("select").select_option(
            label="LRP ε+flat (zennit)")
        second = _wait_for_new_picture(page, first)
        assert page.evaluate("window.__sawBusy"), "no 'computing' state was shown"
        screenshot(page, "02_method_changed.png")

        # 3. Debounce: three quick slider moves, one rendering (of the last position).
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(
            timeout=90_000)
        before = _renders(page)
        handle = page.locator(".widget-hslider", has_text="image").locator(".noUi-handle").first
        handle.focus()
        key = "ArrowRight" if row + 3 < 12 else "ArrowLeft"
        for _ in range(3):
            handle.press(key)
        _wait_for_new_picture(page, second)
        page.locator(".chexlib-browser-status").first.wait_for(state="attached")
        page.wait_for_timeout(1500)  # any further (wrong) rendering would have started by now
        assert _renders(page) == before + 1
        caption = page.locator(".widget-html-content", has_text="image").first.inner_text()
        expected = row + 1 + (3 if key == "ArrowRight" else -3)
        assert f"image {expected} of 12" in caption, caption
        screenshot(page, "03_three_quick_moves.png")

        errors = page.locator(".jp-OutputArea-output[data-mime-type="
                              "'application/vnd.jupyter.stderr']")
        texts = [errors.nth(i).inner_text() for i in range(errors.count())]
        assert not [t for t in texts if "Error" in t or "Traceback" in t], texts
        assert page.locator(".jp-RenderedText:has-text('Traceback')").count() == 0

        # 4. The executed notebook opened where no kernel exists (as a reader without the project
        # would open it): the kernel indicator says "No Kernel", and the output shows the stored
        # picture and caption, not a line of text.
        static = chromium.new_page(viewport={"width": 1280, "height": 1300})
        _open(static, bare_url, "executed.ipynb", workspace="static")
        no_kernel = static.locator(".jp-Dialog button", has_text="No Kernel")
        try:  # JupyterLab asks which kernel, the notebook's python3 being missing: none
            no_kernel.first.click(timeout=20_000)
        except playwright.TimeoutError:
            pass
        kernel_name = static.locator(".jp-KernelName").first
        kernel_name.wait_for(timeout=30_000)
        output = static.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea-output")
        try:
            output.locator("img").first.wait_for(state="visible", timeout=60_000)
        except Exception:
            screenshot(static, "failed_static.png")
            raise
        screenshot(static, "04_executed_opened_without_a_kernel.png")
        assert kernel_name.inner_text().strip() == "No Kernel", kernel_name.inner_text()
        text = output.first.inner_text()
        assert "VBox(" not in text and "Error displaying widget" not in text, text
        assert "This map shows nothing" in text
        assert output.locator("img").first.bounding_box()["width"] > 100

        chromium.close()
