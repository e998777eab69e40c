"""`make lab`'s server: JupyterLab starts headless on localhost, answers its API and serves the lab page with the notebooks
of nbs/, within a bounded time, and is stopped afterwards."""
import json, os, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _get(url: str) -> tuple:
    with urllib.request.urlopen(url, timeout=5) as r: return r.status, r.read()


def test_jupyterlab_answers_on_localhost(tmp_path):
    port, token = _free_port(), 'cellsteer-test'
    env = {**os.environ, 'JUPYTER_CONFIG_DIR': str(tmp_path/'config'), 'JUPYTER_DATA_DIR': str(tmp_path/'data'), 'JUPYTER_RUNTIME_DIR': str(tmp_path/'runtime')}
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}', '--port-retries=0', '--allow-root', f'--IdentityProvider.token={token}',
           f'--ServerApp.root_dir={ROOT/"nbs"}']
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path/'lab.log', 'w'), start_new_session=True)
    try:
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try: status = _get(f'http://127.0.0.1:{port}/api/status?token={token}'); break
            except OSError: time.sleep(0.5)
        assert status and status[0] == 200, (tmp_path/'lab.log').read_text()[-2000:]
        code, body = _get(f'http://127.0.0.1:{port}/lab?token={token}')
        assert code == 200 and b'JupyterLab' in body
        code, body = _get(f'http://127.0.0.1:{port}/api/contents?token={token}')
        assert '09_report.ipynb' in {c['name'] for c in json.loads(body)['content']}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    assert proc.returncode is not None
