"""The explorer in a real browser: JupyterLab on a loopback port, Debian's headless Chromium driven by Playwright.

Runs the start of nbs/10_explorer.ipynb (up to the cell that opens the explorer) in a temporary folder, moves the time
slider, clicks "new motion" and play, and checks that the displayed frame changed by comparing screenshots of the image widget.
Screenshots are kept under tests/artifacts/browser/ (a folder that ignores itself in git).
Needs `chromium` on PATH (tools/setup_browser.sh installs it as root); skipped without it, failed under CI=true.
"""
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get('STYLEGAN_V_TEST_ARTIFACTS', REPO / 'tests' / 'artifacts')) / 'browser'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage']

pytestmark = pytest.mark.timeout(150)


def _missing(what: str):
    msg = f"browser test: {what}; enable it with `sudo apt-get install chromium` (or run tools/setup_browser.sh as root)"
    if os.environ.get('CI', '').lower() == 'true': pytest.fail(msg + ' [CI=true: a missing browser is a failure]')
    pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _small_notebook(dst: Path) -> Path:
    "The explorer notebook's cells up to the one that opens the explorer (the rest is the tutorial and its checks)."
    nb = json.loads((REPO / 'nbs' / '10_explorer.ipynb').read_text())
    cells = []
    for cell in nb['cells']:
        if cell['cell_type'] != 'code': continue
        src = ''.join(cell['source'])
        if src.lstrip().startswith('#| hide'): continue
        cells.append(cell)
        if 'explore(' in src: break
    else: raise AssertionError("nbs/10_explorer.ipynb: no cell calls explore(...)")
    nb['cells'] = cells
    nb['metadata']['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3 (ipykernel)', 'language': 'python'}
    path = dst / 'explorer.ipynb'
    path.write_text(json.dumps(nb))
    return path


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None: raise RuntimeError(f"jupyter lab exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return
        except OSError: pass
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer 200 within {timeout} s")


@pytest.fixture
def chromium() -> str:
    "Debian's chromium (and Playwright to drive it), checked before any server starts."
    path = shutil.which('chromium')
    if path is None: _missing("Debian's chromium is not installed")
    try: import playwright.sync_api  # noqa: F401
    except ImportError: _missing("playwright is not installed (pip install playwright; never `playwright install`)")
    return path


@pytest.fixture
def lab(tmp_path, chromium):
    "A JupyterLab server on a free loopback port, no token, serving a copy of the explorer notebook; stopped by PID."
    root = tmp_path / 'lab'; root.mkdir()
    nb = _small_notebook(root)
    notes = tmp_path / 'settings' / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings'
    notes.parent.mkdir(parents=True)
    notes.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news toast over the notebook
    port = _free_port()
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(tmp_path / 'settings'), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / 'ws'),
               JUPYTER_RUNTIME_DIR=str(tmp_path / 'runtime'), OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'),
               TORCH_EXTENSIONS_DIR=os.environ.get('TORCH_EXTENSIONS_DIR', str(REPO / '.torch_extensions')),
               HF_HUB_OFFLINE='1', MPLBACKEND='Agg')
    log = open(tmp_path / 'lab.log', 'wb')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--allow-root', '--no-browser', '--ip', '127.0.0.1',
                             f'--port={port}', '--ServerApp.port_retries=0', "--ServerApp.token=", "--ServerApp.password=",
                             '--ServerApp.disable_check_xsrf=True', f'--ServerApp.root_dir={root}',
                             '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate'],
                            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f'http://127.0.0.1:{port}/lab', proc, timeout=40)
        yield f'http://127.0.0.1:{port}/lab/tree/{nb.name}'
    except BaseException:
        log.flush(); print((tmp_path / 'lab.log').read_text(errors='replace')[-3000:], file=sys.stderr)
        raise
    finally:
        os.kill(proc.pid, signal.SIGTERM)            # the server shuts its kernels down
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=5)
        log.close()


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(png)).convert('RGB')).astype(int)


def _changed(a: bytes, b: bytes) -> bool:
    pa, pb = _pixels(a), _pixels(b)
    return pa.shape != pb.shape or np.abs(pa - pb).mean() > 1.0


def test_explorer_in_jupyterlab(chromium, lab):
    from playwright.sync_api import sync_playwright
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob('*.png'): old.unlink()
    (ARTIFACTS.parent / '.gitignore').write_text('*\n')
    shots = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True, timeout=30_000)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 1000})
            page.set_default_timeout(30_000)
            page.goto(lab, wait_until='domcontentloaded')
            page.locator('.jp-Notebook').first.wait_for()
            page.get_by_text('Python 3 (ipykernel) | Idle').first.wait_for(timeout=40_000)
            page.get_by_role('menuitem', name='Run', exact=True).click()
            page.get_by_text('Run All Cells', exact=True).click()
            image = page.locator('img.svx-image').first
            image.wait_for(state='visible', timeout=60_000)
            page.wait_for_function("() => { const i = document.querySelector('img.svx-image');"
                                   " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)

            def shot(name: str) -> bytes:
                shots[name] = image.screenshot(path=str(ARTIFACTS / f'{name}.png'))
                return shots[name]

            def wait_change(name: str, before: bytes, timeout: float = 20) -> bytes:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    after = shot(name)
                    if _changed(before, after): return after
                    time.sleep(0.25)
                raise AssertionError(f"{name}: the displayed frame did not change within {timeout} s "
                                     f"(screenshots in {ARTIFACTS})")

            first = shot('0_start')
            time.sleep(1.0)
            assert not _changed(first, shot('1_unchanged')), "the frame changed although no control was touched"

            handle = page.locator('.svx-t .noUi-handle').first
            box = handle.bounding_box()
            x, y = box['x'] + box['width'] / 2, box['y'] + box['height'] / 2
            page.mouse.move(x, y); page.mouse.down()
            page.mouse.move(x + 120, y, steps=8); page.mouse.up()
            moved = wait_change('2_time_moved', first)
            readout = page.locator('.svx-t .widget-readout').first.inner_text()
            assert float(readout) > 0, f"the time slider reads {readout!r} after dragging it"

            page.locator('button.svx-new-motion').first.click()
            new_motion = wait_change('3_new_motion', moved)

            def wait_readout(ok, what: str, timeout: float = 20) -> float:
                # the time slider follows play through the kernel, so its readout is polled, never read once
                deadline = time.monotonic() + timeout
                while True:
                    value = float(page.locator('.svx-t .widget-readout').first.inner_text())
                    if ok(value): return value
                    if time.monotonic() > deadline: raise AssertionError(f"{what}: the time slider reads {value}")
                    time.sleep(0.1)

            buttons = page.locator('.svx-play button')       # ipywidgets 8: play/pause, stop, repeat
            buttons.nth(0).click()
            wait_change('4_playing', new_motion)
            wait_readout(lambda t: t > float(readout), "play did not advance t")
            buttons.nth(1).click()
            wait_readout(lambda t: t == 0, "stop did not take t back to 0")
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / 'failure_page.png'))
            raise
        finally:
            browser.close()
