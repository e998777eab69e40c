"""The `cellsteer` command line end to end: a run on a pair of labels nobody tuned for, determinism, all-or-nothing outputs
when killed, and every bad input (one line on stderr, a non-zero exit, nothing written to --out)."""
import contextlib, hashlib, io, json, os, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path
import numpy as np, pytest, anndata as ad, torch
from cellsteer_nb.cli import main, load_inputs
from cellsteer_nb.data import load_pbmc68k
from cellsteer_nb.core import DEFAULT_CHECKPOINT
from cellsteer_nb.sae import DEFAULT_SAE

CLI = [sys.executable, '-m', 'cellsteer_nb', 'report']
PAIR = ['--label-key', 'bulk_labels', '--source', 'CD14+ Monocyte', '--target', 'Dendritic']


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp('cli')
    load_pbmc68k().write_h5ad(d/'pbmc.h5ad')
    env = {**os.environ, 'CELLSTEER_CACHE': str(d/'cache'), 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'NUMBA_NUM_THREADS': '1'}
    return d, env


def _run(args, env, **kw):
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, **kw)


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def first_run(work):
    d, env = work
    r = _run(['--data', str(d/'pbmc.h5ad'), *PAIR, '--small', '--quiet', '--out', str(d/'a')], env)
    assert r.returncode == 0, r.stderr
    return d/'a', r


def test_untuned_pair_runs_and_writes_everything(first_run):
    out, r = first_run
    res = json.loads((out/'results.json').read_text())
    assert 0 <= res['steering']['fraction_closer_heldout'] <= 1
    assert (res['config']['source'], res['config']['target'], res['data']['label_key']) == ('CD14+ Monocyte', 'Dendritic', 'bulk_labels')
    assert res['config']['wrong_targets'] == ['CD19+ B', 'CD4+/CD25 T Reg', 'CD8+ Cytotoxic T']
    for k in ('probe', 'sae', 'go', 'steering', 'expression', 'gene_baseline'): assert k in res, k
    assert res['gene_baseline']['markers_from_de'] and res['gene_baseline']['source_markers_from_de']   # no --markers: the pair's own DE genes
    for f in ('report.md', 'features.csv', 'steering_alpha.csv', 'timings.json', 'figures/steering_umap.png', 'figures/expression_topn.png'): assert (out/f).exists(), f
    for f in ('browser/index.html', 'browser/feature.html', 'browser/steering.html', 'browser/data/index.js', 'browser/img/umap.png'): assert (out/f).exists(), f
    assert len(list((out/'browser/data/f').iterdir())) == res['sae']['n_features']   # every feature has its page's data
    md = (out/'report.md').read_text()
    assert md.startswith('# Steering CD14+ Monocyte cells toward Dendritic') and 'CD8-relevant' not in md and '## Editing genes vs steering features' in md
    a = ad.read_h5ad(out/'cellsteer.h5ad')
    assert {'X_cellsteer_L12', 'X_cellsteer_fbar'} <= set(a.obsm) and 'cellsteer_steered' in a.layers
    assert {'cellsteer_steer', 'cellsteer_de'} <= set(a.uns) and len(a.uns['cellsteer_steer']['alpha']) == res['sae']['n_features']
    assert 'Dendritic' in r.stdout and 'closer' in r.stdout and 'it/s' not in r.stderr and '[1/6]' not in r.stderr   # the summary; --quiet: no progress


def test_two_runs_give_identical_results(first_run, work):
    "A second process (disk caches warm, in-process memo empty: the steering and expression steps are recomputed)."
    d, env = work
    out, _ = first_run
    r = _run(['--data', str(d/'pbmc.h5ad'), *PAIR, '--small', '--quiet', '--out', str(d/'b')], env)
    assert r.returncode == 0, r.stderr
    for f in ('results.json', 'report.md', 'steering_alpha.csv', 'features.csv', 'browser/data/index.js', 'browser/data/f/00000.js'):
        assert (out/f).read_bytes() == (d/'b'/f).read_bytes(), f


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (run where one is lent)')
def test_gpu_run_agrees_with_the_cpu_run(first_run, work):
    "The model's and the SAE's passes on the GPU: the same analysis within float tolerance (discrete choices may differ at ties)."
    d, env = work
    out, _ = first_run
    r = _run(['--data', str(d/'pbmc.h5ad'), *PAIR, '--small', '--quiet', '--device', 'cuda', '--out', str(d/'gpu')], env)
    assert r.returncode == 0, r.stderr
    cpu, gpu = (json.loads((o/'results.json').read_text()) for o in (out, d/'gpu'))
    assert cpu['data']['device'] == 'cpu' and gpu['data']['device'].startswith('cuda')
    assert gpu['sae']['fvu'] == pytest.approx(cpu['sae']['fvu'], rel=1e-3)
    assert gpu['probe']['layer12_cv_accuracy'] == pytest.approx(cpu['probe']['layer12_cv_accuracy'], abs=0.05)
    assert gpu['steering']['median_relative_shrink_heldout'] == pytest.approx(cpu['steering']['median_relative_shrink_heldout'], abs=0.05)


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_leaves_earlier_outputs_intact(first_run, work, sig):
    d, env = work
    out, _ = first_run
    before = _digest(out)
    p = subprocess.Popen(CLI + ['--data', str(d/'pbmc.h5ad'), *PAIR, '--small', '--quiet', '--seed', '1', '--out', str(out)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not list(d.glob('.a.partial-*')) and time.time() - t0 < 120: time.sleep(0.2)   # the run has started writing
    assert list(d.glob('.a.partial-*')), 'the run never started its staging folder'
    time.sleep(2); p.send_signal(sig); p.wait(60)
    assert _digest(out) == before                                           # nothing of the killed run reached --out
    if sig == signal.SIGTERM: assert not list(d.glob('.a.partial-*'))       # cleaned up on the way out
    shutil.rmtree(next(iter(d.glob('.a.partial-*')), d/'none'), ignore_errors=True)


def test_missing_file_and_unknown_label_through_the_console(work, tmp_path):
    d, env = work
    r = _run(['--data', str(tmp_path/'missing.h5ad'), *PAIR, '--out', str(tmp_path/'o')], env)
    assert r.returncode == 2 and r.stderr == f'cellsteer: error: --data {tmp_path}/missing.h5ad: no such file; pass the path of an .h5ad file\n'
    r = _run(['--data', str(d/'pbmc.h5ad'), '--label-key', 'bulk_labels', '--source', 'T cells', '--target', 'Dendritic', '--out', str(tmp_path/'o')], env)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr
    assert "label 'T cells' not found; available labels (cells): Dendritic (240), CD14+ Monocyte (129), CD19+ B (95)" in r.stderr
    assert not (tmp_path/'o').exists()


# ---- bad inputs, through the command line's entry point in this process (each fails before any computation) ----

def _cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()): rc = main(['report', *argv])
    return rc, err.getvalue()


def _h5ad(path, X=None, var_names=None, obs=None):
    a = load_pbmc68k()
    if X is not None: a.X = X
    if var_names is not None: a.var_names = var_names
    if obs is not None: a.obs = obs
    a.write_h5ad(path); return path


@pytest.fixture(scope='module')
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp('bad')
    X = load_pbmc68k().X
    files = {'good': _h5ad(d/'good.h5ad')}
    (d/'text.h5ad').write_text('not an h5ad'); files['not_h5ad'] = d/'text.h5ad'
    files['scaled'] = _h5ad(d/'scaled.h5ad', X=(X - X.mean(0)) / (X.std(0) + 1e-6))
    files['nan'] = _h5ad(d/'nan.h5ad', X=np.where(np.arange(X.shape[1]) == 3, np.nan, X).astype(np.float32))
    files['inf'] = _h5ad(d/'inf.h5ad', X=np.where(np.arange(X.shape[1]) == 3, np.inf, X).astype(np.float32))
    files['panel'] = _h5ad(d/'panel.h5ad', var_names=[f'GENE{i}' for i in range(X.shape[1])])
    names = list(load_pbmc68k().var_names); names[1] = names[0]
    files['dup'] = _h5ad(d/'dup.h5ad', var_names=names)
    load_pbmc68k()[:0].copy().write_h5ad(d/'empty.h5ad'); files['empty'] = d/'empty.h5ad'
    ck = d/'ckpt'; shutil.copytree(DEFAULT_CHECKPOINT, ck)
    cfg = json.loads((ck/'config.json').read_text()); cfg['intermediate_size'] += 8; (ck/'config.json').write_text(json.dumps(cfg))
    files['ckpt'] = ck
    s = d/'sae'; shutil.copytree(DEFAULT_SAE, s)
    c = json.loads((s/'cfg.json').read_text()); c['metadata']['model_hash'] = 'another-model'; (s/'cfg.json').write_text(json.dumps(c))
    files['sae'] = s
    (d/'a_file').write_text('x')
    return d, files


CASES = {  # name: (extra argv given the files, text the one-line error must contain)
    'missing file': (lambda d, f: ['--data', str(d/'nope.h5ad'), *PAIR], 'no such file'),
    'not an h5ad': (lambda d, f: ['--data', str(f['not_h5ad']), *PAIR], 'is not a readable .h5ad file'),
    'label key absent': (lambda d, f: ['--data', str(f['good']), '--label-key', 'louvain', '--source', 'a', '--target', 'b'], "available columns: ['bulk_labels'"),
    'source absent': (lambda d, f: ['--data', str(f['good']), '--label-key', 'bulk_labels', '--source', 'Mono', '--target', 'Dendritic'], 'Dendritic (240), CD14+ Monocyte (129)'),
    'target absent': (lambda d, f: ['--data', str(f['good']), '--label-key', 'bulk_labels', '--source', 'Dendritic', '--target', 'DC'], "label 'DC' not found"),
    'source equals target': (lambda d, f: ['--data', str(f['good']), '--label-key', 'bulk_labels', '--source', 'Dendritic', '--target', 'Dendritic'], 'two different labels'),
    'group too small': (lambda d, f: ['--data', str(f['good']), '--label-key', 'bulk_labels', '--source', 'CD4+/CD45RA+/CD25- Naive T', '--target', 'Dendritic'], 'has 8 cells, fewer than the minimum 10'),
    'scaled values': (lambda d, f: ['--data', str(f['scaled']), *PAIR], 'negative values: it looks scaled'),
    'NaN values': (lambda d, f: ['--data', str(f['nan']), *PAIR], 'NaN or inf'),
    'inf values': (lambda d, f: ['--data', str(f['inf']), *PAIR], 'NaN or inf'),
    'too few panel genes': (lambda d, f: ['--data', str(f['panel']), *PAIR], 'panel genes are missing'),
    'checkpoint config vs weights': (lambda d, f: ['--data', str(f['good']), *PAIR, '--checkpoint', str(f['ckpt'])], 'config does not match weights'),
    'SAE of another model': (lambda d, f: ['--data', str(f['good']), *PAIR, '--sae', str(f['sae'])], 'model_hash: SAE has'),
    'SAE of another layer': (lambda d, f: ['--data', str(f['good']), *PAIR, '--layer', '11'], 'hook_layer: SAE has 12, model has 11'),
    'layer out of range': (lambda d, f: ['--data', str(f['good']), *PAIR, '--layer', '40'], 'the model has layers 0 … 17'),
    'marker not in panel': (lambda d, f: ['--data', str(f['good']), *PAIR, '--markers', 'FCER1A,NOTAGENE'], 'NOTAGENE not in the model'),
    'duplicated gene names': (lambda d, f: ['--data', str(f['dup']), *PAIR], 'call adata.var_names_make_unique()'),
    'no cells': (lambda d, f: ['--data', str(f['empty']), *PAIR], 'the data has no cells'),
    'negative seed': (lambda d, f: ['--data', str(f['good']), *PAIR, '--seed', '-3'], '--seed -3: pass 0 or a positive integer'),
    'unknown device': (lambda d, f: ['--data', str(f['good']), *PAIR, '--device', 'gpu'], '--device gpu: Expected one of cpu, cuda'),
    **({} if torch.cuda.is_available() else
       {'no CUDA on this machine': (lambda d, f: ['--data', str(f['good']), *PAIR, '--device', 'cuda'], 'leave --device out to run on the CPU')}),
}


@pytest.mark.parametrize('case', list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(bad, case):
    d, files = bad
    argv, text = CASES[case]
    out = d/f'out-{case.replace(" ", "_")}'
    rc, err = _cli(*argv(d, files), '--out', str(out), '--quiet')
    assert rc == 2, (case, err)
    assert err.startswith('cellsteer: error: ') and err.count('\n') == 1 and text in err, (case, err)
    assert not out.exists()


def test_out_not_writable(bad):
    d, files = bad
    rc, err = _cli('--data', str(files['good']), *PAIR, '--out', str(d/'a_file'/'run'))
    assert rc == 2 and 'is not writable' in err and err.count('\n') == 1
    rc, err = _cli('--data', str(files['good']), *PAIR, '--out', str(d/'a_file'))
    assert rc == 2 and 'exists and is not a folder' in err


def test_debug_shows_the_traceback(bad):
    d, files = bad
    with pytest.raises(Exception, match='two different labels'):
        main(['report', '--data', str(files['good']), '--label-key', 'bulk_labels', '--source', 'B', '--target', 'B', '--out', str(d/'x'), '--debug'])


def test_raw_counts_are_normalised_with_a_warning(tmp_path):
    a = load_pbmc68k()
    counts = np.round(np.expm1(a.X) * 3).astype(np.float32)      # integer counts
    path = _h5ad(tmp_path/'counts.h5ad', X=counts)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        adata, *_ = load_inputs(path, 'bulk_labels', 'CD14+ Monocyte', 'Dendritic', small=True)
    assert any('raw counts detected' in str(x.message) for x in w)
    assert adata.X.max() < 15 and np.allclose(np.expm1(adata.X).sum(1), 1e4, rtol=1e-3)   # log1p(CP10k)


def test_torchrun_report_on_two_processes_agrees(first_run, work):
    """`torchrun --nproc-per-node 2 -m cellsteer_nb report`: the cell passes (embedding, feature and neuron statistics) are
    sharded over two gloo processes (recomputed: their cache entries are removed from a copy of the first run's cache) and
    rank 0 alone writes; the results equal the one-process run's within the cross-hardware tolerances."""
    from cellsteer_nb.reference import close_enough
    d, env = work
    out, _ = first_run
    cache = d/'cache_ddp'; shutil.copytree(d/'cache', cache)
    for step in ('embeddings', 'feature_stats', 'neuron_stats'): shutil.rmtree(cache/step, ignore_errors=True)
    torchrun = Path(sys.executable).parent/'torchrun'
    r = subprocess.run([str(torchrun), '--standalone', '--nproc-per-node=2', '-m', 'cellsteer_nb', 'report', '--data', str(d/'pbmc.h5ad'), *PAIR,
                        '--small', '--quiet', '--out', str(d/'ddp')], env={**env, 'CELLSTEER_CACHE': str(cache)}, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('cellsteer: wrote') == 1                                  # one summary: rank 0's
    assert sorted((cache/'feature_stats').iterdir())                                 # recomputed by the two ranks
    def flat(o, pre=''):
        if isinstance(o, dict): return {k2: v2 for k, v in o.items() for k2, v2 in flat(v, f'{pre}{k}.').items()}
        return {pre[:-1]: o}
    one, two = (flat(json.loads((p/'results.json').read_text())) for p in (out, d/'ddp'))
    assert set(one) == set(two)
    bad = [k for k in one if k != 'data.file' and isinstance(one[k], (int, float)) and not isinstance(one[k], bool) and not close_enough(k, one[k], two[k])]
    assert not bad, [(k, one[k], two[k]) for k in bad[:10]]
