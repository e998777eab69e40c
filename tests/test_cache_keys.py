"""Per-step cache keys: a step's key hashes the source of the modules it depends on, not the whole package.
In a temporary copy of the package with an empty cache: editing report.py re-uses the cached embedding; editing model.py
makes a new entry."""
import os, shutil, subprocess, sys
from pathlib import Path
import cellsteer_nb

EMBED = """
from cellsteer_nb.core import DEFAULT_CHECKPOINT
from cellsteer_nb.data import load_pbmc68k, align_to_panel
from cellsteer_nb.model import load_checkpoint
from cellsteer_nb.hooks import embed_cells
model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
embed_cells(align_to_panel(load_pbmc68k()[:6].copy(), genes), model)
"""


def test_editing_a_module_invalidates_only_the_steps_that_depend_on_it(tmp_path):
    pkg = tmp_path/'src'/'cellsteer_nb'
    shutil.copytree(Path(cellsteer_nb.__file__).parent, pkg, ignore=shutil.ignore_patterns('__pycache__'))
    cache = tmp_path/'cache'
    env = {**os.environ, 'PYTHONPATH': str(tmp_path/'src'), 'CELLSTEER_CACHE': str(cache), 'OMP_NUM_THREADS': '1'}
    def entries():
        subprocess.run([sys.executable, '-c', EMBED], env=env, check=True, cwd=tmp_path, capture_output=True)
        return sorted(p.name for p in (cache/'embeddings').iterdir())
    first = entries()
    assert len(first) == 1
    with open(pkg/'report.py', 'a') as f: f.write('\n# an edit to the report\n')
    assert entries() == first
    with open(pkg/'model.py', 'a') as f: f.write('\n# an edit to the model\n')
    after = entries()
    assert len(after) == 2 and first[0] in after
