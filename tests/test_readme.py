"""The README's Python examples run as written, on the bundled data, in a fresh process, within 2 GB peak RSS (VmHWM)."""
import os, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEAK = "print('VMHWM_KB', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"


def test_readme_python_blocks_run_within_2_gb():
    blocks = re.findall(r'```python\n(.*?)```', (ROOT/'README.md').read_text(), flags=re.S)
    assert blocks, 'no python block in README.md'
    r = subprocess.run([sys.executable, '-c', '\n'.join(blocks + [PEAK])], cwd=ROOT, capture_output=True, text=True, timeout=1800,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    peak_mb = int(r.stdout.split('VMHWM_KB')[-1].strip().strip("[]'")) / 1024
    assert peak_mb < 2048, f'README example peaked at {peak_mb:.0f} MB'
