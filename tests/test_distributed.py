"""Scale-out path (issue 21): streaming SAE training killed and resumed, backed vs in-memory reading, `torchrun` with two
gloo processes through the command line, and input errors that only many processes can meet. The two-rank equalities on
the same global batches are in nbs/01b_source.ipynb and nbs/04d_stream.ipynb."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest, torch, anndata as ad
from cellsteer_nb.model import save_checkpoint
from cellsteer_nb.sae import SAETrainConfig, load_sae
from cellsteer_nb.source import CellSource
from cellsteer_nb.stream import StreamConfig, synthetic_cells, tiny_model, train_sae_streaming

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
TORCHRUN = Path(sys.executable).parent/'torchrun'


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny random checkpoint (layer 1 of 3) and 60 synthetic cells written as .h5ad."
    d = tmp_path_factory.mktemp('dist')
    model = tiny_model(12)
    save_checkpoint(model, model.genes, d/'ckpt')
    synthetic_cells(60, 12).write_h5ad(d/'cells.h5ad')
    return d


def _sae_args(d, out, steps=300, *extra):
    return ['sae', '--data', str(d/'cells.h5ad'), '--checkpoint', str(d/'ckpt'), '--layer', '1', '--width', '32', '--k', '4',
            '--steps', str(steps), '--batch-tokens', '32', '--buffer-tokens', '96', '--tokens-per-cell', '6', '--quiet', '--out', str(out), *extra]


def _weights(folder):
    return {k: v.clone() for k, v in load_sae(folder).state_dict().items()}


def test_sigkill_then_resume_equals_the_uninterrupted_run(tiny):
    d = tiny
    whole = subprocess.run([sys.executable, '-m', 'cellsteer_nb', *_sae_args(d, d/'whole', 300, '--save-every', '20')], env=ENV, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    out = d/'killed'
    p = subprocess.Popen([sys.executable, '-m', 'cellsteer_nb', *_sae_args(d, out, 300, '--save-every', '20')], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out/'resume').glob('step_*')) and time.monotonic() < deadline and p.poll() is None: time.sleep(0.01)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL, 'the run finished before it could be killed: give it more steps'
    assert not (out/'cfg.json').exists()
    step = int(sorted((out/'resume').glob('step_*'))[-1].name.split('_')[1])
    assert 0 < step < 300
    (out/'resume'/'.step_000000999.partial').mkdir()      # as a kill during a checkpoint would leave it
    resumed = subprocess.run([sys.executable, '-m', 'cellsteer_nb', *_sae_args(d, out, 300, '--save-every', '20', '--resume')], env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not (out/'resume'/'.step_000000999.partial').exists()
    a, b = _weights(d/'whole'), _weights(out)
    for k in a: assert torch.equal(a[k], b[k]), k          # bit-identical on one machine with fixed threads
    assert json.loads((out/'fit.json').read_text())['history'] == json.loads((d/'whole'/'fit.json').read_text())['history']


def test_backed_file_gives_the_in_memory_result(tiny):
    d = tiny
    model = tiny_model(12)
    cfg, stream = SAETrainConfig(expansion=4, k=4, steps=40, batch_size=32, heldout_frac=0.2), StreamConfig(buffer_tokens=96, tokens_per_cell=6, cell_batch=4)
    mem = train_sae_streaming(model, CellSource(ad.read_h5ad(d/'cells.h5ad'), model.genes), cfg, stream, layer=1, progress=False)
    backed = ad.read_h5ad(d/'cells.h5ad', backed='r')
    bk = train_sae_streaming(model, CellSource(backed, model.genes), cfg, stream, layer=1, progress=False)
    for k, v in mem[0].state_dict().items(): assert torch.equal(v, bk[0].state_dict()[k]), k
    assert mem[1] == bk[1]


def _torchrun(n, args):
    return subprocess.run([str(TORCHRUN), '--standalone', f'--nproc-per-node={n}', '-m', 'cellsteer_nb', *args], env=ENV, capture_output=True, text=True, timeout=180)


def test_torchrun_two_gloo_processes_train_one_sae(tiny):
    d = tiny
    r = _torchrun(2, _sae_args(d, d/'ddp', 20))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('cellsteer: wrote') == 1 and 'on 2 process(es)' in r.stdout     # rank 0 reports, once
    fit = json.loads((d/'ddp'/'fit.json').read_text())
    assert fit['quality']['n_tokens'] == 6 * 12 and len(fit['history']) == 20           # 6 held-out cells (10%) x 12 genes


def test_more_processes_than_cells_is_refused(tiny, tmp_path):
    synthetic_cells(4, 12).write_h5ad(tmp_path/'few.h5ad')   # 3 training cells
    args = _sae_args(tiny, tmp_path/'o', 5); args[args.index('--data') + 1] = str(tmp_path/'few.h5ad')
    r = _torchrun(4, args)
    assert r.returncode != 0 and 'cellsteer: error: 4 processes for 3 training cells: run at most 3' in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'o'/'cfg.json').exists()


def test_feature_statistics_from_two_ranks_equal_one_process(tiny, tmp_path, monkeypatch):
    from cellsteer_nb.features import feature_stats, unit_gene_stats
    from cellsteer_nb.sae import SAEConfig, TopKSAE
    from cellsteer_nb.source import save_call, spawn_ranks
    monkeypatch.setenv('CELLSTEER_CACHE', str(tmp_path/'cache'))     # the spawned ranks compute (and cache) it themselves
    model, sae, cells = tiny_model(12), TopKSAE(SAEConfig(8, 32, 4, hook_layer=1), seed=3), ad.read_h5ad(tiny/'cells.h5ad')
    spawn_ranks(save_call, 2, str(tmp_path), feature_stats, (model, sae, cells), timeout=120)
    r0, r1 = (torch.load(tmp_path/f'rank{r}.pt', weights_only=False) for r in (0, 1))
    one = unit_gene_stats(model, CellSource(cells, model.genes), sae.encode, 1, desc=None)
    for k in ('gene_mean', 'gene_active', 'cell_mean'):
        assert np.array_equal(r0[k], r1[k]), k                        # every rank holds the gathered result
        np.testing.assert_allclose(r0[k], one[k], rtol=1e-5, atol=1e-7, err_msg=k)
