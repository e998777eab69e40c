"""Issue 21, the scale-out path: streaming SAE training and the sharded feature-means pass.

1. `stream_rss_mb_{1,4,16}x`: peak RSS (VmHWM) above the process baseline (imports, model, SAE and the backed file opened) of
   (a) streaming SAE training (`ActivationStream` + `SAETrainer`, 20 steps of 1,024 tokens, 64 gene tokens sampled per cell,
   buffer 8,192 tokens) and (b) the feature-means pass (`features.feature_stats` over every cell), on the bundled 700 cells
   replicated 1x, 4x, 16x, written as CSR `.h5ad` and read backed; each in a fresh process, a fresh cache folder, `--repeats`
   times (median: the peak of the same pass moves by about 20 MiB between runs, with the allocator); and the bytes of activation
   store written (the cache's `activations/` folder). The feature-means pass returns per-cell means, `(cells, features)`
   float32, which grow with the cells by design (the caller asked for them): its flatness is judged on its working memory,
   the peak above the baseline less the bytes of the arrays it returns; the ratio with them is reported beside it.
2. `ddp_speedup_2ranks`: tokens/s of the sharded extraction + SAE step (the same stream and trainer, 40 steps of 2,048 tokens,
   every gene token of each cell) with 2 gloo ranks of one thread each over 1 rank of one thread, alternately three times in one run (median ratio), and the time split
   per rank (reading cells / model forward / SAE step, of which gradient all-reduce).
3. `seed_shape_stream_s_per_step`, `seed_shape_peak_rss_mb`: the streaming trainer on a random AIDO.Cell-100M-shaped model
   (18 x 640, 19,264 gene tokens) with a 5,120-feature k 32 SAE, 2 steps of 4,096 tokens sampled from one cell each
   (`--seed-steps`), one thread; from it and the counted FLOPs, the predicted cost of the seed's SAE on PBMC3K on 1 and 8 H100s.

    python bench/bench_stream.py [--only rss ddp seed] [--seed-steps 2] [--means-mults 1 4 16] [--repeats 3]
"""
import _common as C
import argparse, json, tempfile, time
from pathlib import Path

MULTS = (1, 4, 16)


def _write_cells(path, mult):
    import numpy as np, scipy.sparse as sp, anndata as ad
    from cellsteer_nb.data import load_pbmc68k
    a = load_pbmc68k()
    X = sp.csr_matrix(np.tile(a.X, (mult, 1)))
    obs = a.obs[['n_counts']].iloc[np.tile(np.arange(a.n_obs), mult)].reset_index(drop=True); obs.index = obs.index.astype(str)
    ad.AnnData(X, obs=obs, var=a.var[[]]).write_h5ad(path)


def rss_child(h5ad, what):
    "One pass in this fresh process: JSON with the baseline and peak RSS and the store bytes written."
    import anndata as ad
    C.set_threads()
    from cellsteer_nb.core import DEFAULT_CHECKPOINT, cache_dir
    from cellsteer_nb.model import load_checkpoint
    from cellsteer_nb.sae import DEFAULT_SAE, load_sae, SAETrainer, TopKSAE, SAEConfig
    from cellsteer_nb.source import CellSource
    from cellsteer_nb.stream import ActivationStream, StreamConfig
    from cellsteer_nb.features import feature_stats
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT); sae = load_sae(DEFAULT_SAE)
    src = CellSource(ad.read_h5ad(h5ad, backed='r'), genes)
    base = C.peak_rss_mb(); t0 = time.perf_counter()
    if what == 'train':
        stream = ActivationStream(model, src, 12, 1024, StreamConfig(buffer_tokens=8_192, tokens_per_cell=64, cell_batch=16))
        SAETrainer(TopKSAE(SAEConfig(64, 512, 8)), 1e-3).fit(iter(stream), 20, progress=False)
        result_mb = 0.0
    else:
        result_mb = sum(a.nbytes for a in feature_stats(model, sae, src).values()) / 2**20
    store = cache_dir()/'activations'
    nbytes = sum(f.stat().st_size for f in store.rglob('*') if f.is_file()) if store.exists() else 0
    peak = C.peak_rss_mb(); above = peak - base
    print(json.dumps({'n_cells': src.n_cells, 'baseline_mb': base, 'peak_mb': peak, 'above_baseline_mb': above,
                      'result_mb': result_mb, 'working_mb': above - result_mb, 'seconds': time.perf_counter() - t0, 'store_bytes': nbytes}))


def _median_run(runs: list) -> dict:
    "The run whose peak above the baseline is the median of `runs` (an odd number), with every run's figure under `repeats_above_baseline_mb`."
    mid = sorted(runs, key=lambda r: r['above_baseline_mb'])[len(runs) // 2]
    return {**mid, 'repeats_above_baseline_mb': [r['above_baseline_mb'] for r in runs], 'store_bytes': max(r['store_bytes'] for r in runs)}


def bench_rss(d, means_mults=MULTS, repeats=3):
    out = {}
    for m in MULTS:
        f = d/f'cells_{m}x.h5ad'; _write_cells(f, m)
        for what in ('train', 'means') if m in means_mults else ('train',):
            runs = []
            for i in range(repeats):
                runs.append(C.run_child([__file__, '--rss-child', str(f), what], env={'CELLSTEER_CACHE': str(d/f'cache_{m}_{what}_{i}')}))
                print(what, m, i, runs[-1], flush=True)
            out[f'{what}_{m}x'] = _median_run(runs)
    big = {'train': MULTS[-1], 'means': max(means_mults)}
    ratio = lambda w, m, fig: out[f'{w}_{m}x'][fig] / max(out[f'{w}_1x'][fig], 1e-9)
    flat = {w: ratio(w, m, 'working_mb') for w, m in big.items()}
    top = {f'stream_rss_mb_{m}x': out[f'train_{m}x']['peak_mb'] for m in MULTS}
    top.update({f'means_rss_mb_{m}x': out[f'means_{m}x']['peak_mb'] for m in means_mults})
    top['stream_store_bytes_written'] = max(r['store_bytes'] for r in out.values())
    C.save_results('stream_rss', {'runs': out, 'largest': big, 'repeats': repeats, 'ratio_largest_over_1x_above_baseline': flat,
                                  'ratio_with_result': {w: ratio(w, m, 'above_baseline_mb') for w, m in big.items()}}, top)


def ddp_worker(out_dir, h5ad, steps):
    "Spawned by `source.spawn_ranks` (or called with no group): stream + train, timing each part; this rank's JSON."
    import torch, anndata as ad
    from cellsteer_nb.core import DEFAULT_CHECKPOINT
    from cellsteer_nb.model import load_checkpoint
    from cellsteer_nb.sae import SAETrainer, TopKSAE, SAEConfig
    from cellsteer_nb.source import CellSource, rank_world
    from cellsteer_nb.stream import ActivationStream, StreamConfig
    torch.set_num_threads(1)
    rank, world = rank_world()
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    stream = ActivationStream(model, CellSource(ad.read_h5ad(h5ad, backed='r'), genes), 12, 2048, StreamConfig(buffer_tokens=8192, cell_batch=4), rank=rank, world=world)
    tr = SAETrainer(TopKSAE(SAEConfig(64, 512, 8)), 1e-3)
    t0 = time.perf_counter(); tr.fit(iter(stream), steps, progress=False); wall = time.perf_counter() - t0
    Path(out_dir, f'rank{rank}.json').write_text(json.dumps({'wall_s': wall, 'tokens': steps * 2048, **{f'{k}_s': v for k, v in {**stream.seconds, **tr.seconds}.items()}}))


def bench_ddp(d, steps=40):
    from cellsteer_nb.source import spawn_ranks
    f = d/'cells_1x.h5ad'
    if not f.exists(): _write_cells(f, 1)
    runs = {}
    for world in (1, 2) * 3:   # alternately, three times
        o = d/f'ddp_{world}_{len(runs)}'; o.mkdir()
        spawn_ranks(ddp_worker, world, str(o), str(f), steps, timeout=1800)
        ranks = [json.loads((o/f'rank{r}.json').read_text()) for r in range(world)]
        runs[f'{world}_ranks_run{len(runs)}'] = {'tokens_per_s': steps * 2048 / max(r['wall_s'] for r in ranks), 'ranks': ranks}
        print(world, runs[list(runs)[-1]]['tokens_per_s'], flush=True)
    one = [v['tokens_per_s'] for k, v in runs.items() if k.startswith('1_')]; two = [v['tokens_per_s'] for k, v in runs.items() if k.startswith('2_')]
    speedup = C.median([b / a for a, b in zip(one, two)])
    C.save_results('ddp', {'steps': steps, 'batch_tokens': 2048, 'runs': runs, 'loadavg': C.loadavg()}, {'ddp_speedup_2ranks': speedup})


def bench_seed(steps):
    import torch
    C.set_threads()
    from cellsteer_nb.model import CellFoundation, CellFoundationConfig
    from cellsteer_nb.sae import SAETrainer, TopKSAE, SAEConfig
    from cellsteer_nb.stream import ActivationStream, StreamConfig
    from bench_extract import flops_per_cell, H640
    from bench_seed_scale import N_GENES, H100
    import numpy as np, anndata as ad, pandas as pd
    from cellsteer_nb.source import CellSource
    cfg = CellFoundationConfig(max_position_embeddings=N_GENES, **H640)
    torch.manual_seed(0); model = CellFoundation(cfg).eval(); model.genes = [f'G{i}' for i in range(N_GENES)]
    rng = np.random.default_rng(0)
    X = np.where(rng.random((steps, N_GENES)) < 0.1, rng.random((steps, N_GENES)) * 3, 0).astype(np.float32)
    cells = ad.AnnData(X, obs=pd.DataFrame({'n_counts': [3000.0] * steps}, index=[f'c{i}' for i in range(steps)]), var=pd.DataFrame(index=model.genes))
    stream = ActivationStream(model, CellSource(cells, model.genes), 12, 4096, StreamConfig(buffer_tokens=4096, tokens_per_cell=4096, cell_batch=1))
    tr = SAETrainer(TopKSAE(SAEConfig(640, 5120, 32)), 1e-3)
    t0 = time.perf_counter(); tr.fit(iter(stream), steps, progress=False); wall = time.perf_counter() - t0
    sae_step_s = tr.seconds['step'] / steps
    fl = flops_per_cell(cfg, N_GENES)['counted']
    sae_flops_per_token = 3 * 2 * 640 * 5120 + 3 * 2 * 32 * 640   # encode (dense) and top-k decode, forward + backward (~2x)
    epochs, n_cells = 10, 2_700
    tokens = epochs * n_cells * N_GENES
    gpu = H100['bf16_dense_tflops'] * 1e12 * H100['utilisation']
    one_gpu_h = (epochs * n_cells * fl + tokens * sae_flops_per_token) / gpu / 3600
    out = {'steps': steps, 'wall_s': wall, 's_per_step': wall / steps, 'forward_s_per_step': stream.seconds['forward'] / steps,
           'sae_step_s': sae_step_s, 'peak_rss_mb': C.peak_rss_mb(), 'forward_flops_per_cell': fl, 'sae_flops_per_token': sae_flops_per_token,
           'prediction': {'assumptions': f'the seed recipe: every gene token of every PBMC3K cell ({n_cells:,} cells x {N_GENES:,} tokens), {epochs} epochs, '
                                         'each epoch runs the model forward again (streaming, no store); bf16 at the H100 utilisation of bench_seed_scale '
                                         f"({H100['utilisation']:.0%} of {H100['bf16_dense_tflops']:.0f} TFLOP/s); 8 GPUs: data-parallel, 90% scaling "
                                         '(the gradient all-reduce is 26 MB a step)',
                          'pbmc3k_1gpu_hours': one_gpu_h, 'pbmc3k_8gpu_hours': one_gpu_h / (8 * 0.9),
                          'pbmc3k_cpu_1thread_hours_measured_rate': epochs * n_cells * stream.seconds['forward'] / steps / 3600}}
    C.save_results('seed_stream', out, {'seed_shape_stream_s_per_step': out['s_per_step'], 'seed_shape_peak_rss_mb': out['peak_rss_mb']})
    print(json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--only', nargs='*', default=['rss', 'ddp', 'seed'])
    ap.add_argument('--seed-steps', type=int, default=2)
    ap.add_argument('--means-mults', type=int, nargs='*', default=list(MULTS), help='multipliers at which the feature-means pass is measured (1 must be one)')
    ap.add_argument('--repeats', type=int, default=3, help='fresh processes per peak-RSS figure (median; odd)')
    ap.add_argument('--rss-child', nargs=2)
    a = ap.parse_args()
    if a.rss_child: return rss_child(*a.rss_child)
    with tempfile.TemporaryDirectory(prefix='cellsteer_stream_bench_') as d:
        d = Path(d)
        if 'rss' in a.only: bench_rss(d, tuple(a.means_mults), a.repeats)
        if 'ddp' in a.only: bench_ddp(d)
    if 'seed' in a.only: bench_seed(a.seed_steps)


if __name__ == '__main__':
    main()
