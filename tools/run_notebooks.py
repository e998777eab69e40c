"""Execute notebooks in one process (execnb), full configuration, outputs not saved into the notebooks.

`make report` runs `09_report.ipynb` alone: its `write_report` computes every step (each cached on disk under a key of its
inputs, configuration and code) and writes `reports/` and the README's headline. `make notebooks` (`--all`) runs every
numbered notebook in order, as a reader would, each step's demonstration and tests included."""
import argparse, os, time
from pathlib import Path
from execnb.nbio import read_nb
from execnb.shell import CaptureShell

REPORT_NOTEBOOKS = ['09_report.ipynb']

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument('--all', action='store_true', help='run every numbered notebook in order instead of the report notebook alone')
args = ap.parse_args()
nbs = Path(__file__).resolve().parent.parent/'nbs'
os.environ.pop('IN_TEST', None)
os.chdir(nbs)
shell = CaptureShell()
for nb in sorted(nbs.glob('[0-9]*.ipynb')) if args.all else [nbs/n for n in REPORT_NOTEBOOKS]:
    t0 = time.time()
    print(f'running {nb.name} ...', flush=True)
    shell.run_all(read_nb(nb), exc_stop=True, preproc=lambda cell: '#| eval: false' in cell.source or 'nbdev_export()' in cell.source)
    print(f'  {nb.name}: {time.time() - t0:.0f} s', flush=True)
print('report written to reports/cd4_steering.md')
