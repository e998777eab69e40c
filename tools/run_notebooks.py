"""Execute the numbered notebooks in order in one process (execnb), full configuration: `make report`.

Later notebooks hit the caches of earlier ones; `09_report` writes `reports/`. Outputs are not saved into the notebooks."""
import os, sys, time
from pathlib import Path
from execnb.nbio import read_nb
from execnb.shell import CaptureShell

nbs = Path(__file__).resolve().parent.parent/'nbs'
os.environ.pop('IN_TEST', None)
os.chdir(nbs)
shell = CaptureShell()
for nb in sorted(nbs.glob('[0-9]*.ipynb')):
    t0 = time.time()
    print(f'running {nb.name} ...', flush=True)
    shell.run_all(read_nb(nb), exc_stop=True, preproc=lambda cell: '#| eval: false' in cell.source or 'nbdev_export()' in cell.source)
    print(f'  {nb.name}: {time.time() - t0:.0f} s', flush=True)
print('report written to reports/cd4_steering.md')
