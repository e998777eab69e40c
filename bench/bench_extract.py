"""Item 4, activation extraction: achieved GFLOP/s of the forward pass up to layer 12 against this machine's matmul peak,
measured in the same run (`torch.matmul`, float32, same one thread), at our width (hidden 64, the default checkpoint) and
at hidden 640 (AIDO.Cell-100M's width: 18 layers, 16 heads, SwiGLU 1,664 — the intermediate size is our assumption,
8/3 x 640 rounded to a multiple of 64 — random weights, our 765-gene panel, a few cells). Then the peak RSS of the
activation-store build and of one SAE epoch at 1x, 2x and 4x the bundled cells (replicated), each in a fresh process
(peak = VmHWM; the N x store an epoch reads is the 1x store's shards hard-linked N times; builds are measured at
--build-scales, default all three, and a scale left out is taken from bench/activation_store_rss.json when it has it).

FLOPs counted (2 per multiply-add), per block and cell of S = genes + 2 tokens, hidden d, SwiGLU width m:
  Q, K, V, output projections 4 x 2 S d^2; attention scores Q K' 2 S^2 d; attention x V 2 S^2 d; MLP (up, gate, down) 3 x 2 S d m.
Left out (reported as a share of the counted FLOPs where it is a matmul): the value embedding (linear1 1 -> bins,
linear2 bins x bins, softmax-weighted bin lookup bins x d), and all elementwise work (RMSNorm, softmax, SiLU, residual adds,
biases, the attention scaling).
Peak = best of 5 `torch.matmul` of two 2048 x 2048 float32 matrices (1 thread), measured right before each repeat of the
forward; the forward runs `model(values, depth, stop_after=12)` in inference mode, batch 16 (as `write_activation_store`).
Ratio achieved / peak per repeat, median of 3.

    python bench/bench_extract.py [--repeats 3] [--skip-rss] [--build-scales 1 2 4] [--child PHASE SCALE DIR]
"""
import _common as C
import argparse, json, os, resource, shutil, tempfile, time
from pathlib import Path
import numpy as np

H640 = dict(hidden_size=640, num_hidden_layers=18, num_attention_heads=16, intermediate_size=1664)


def flops_per_cell(cfg, n_genes, layer=12) -> dict:
    "Matmul FLOPs of a forward up to and including block `layer` for one cell (counted parts, and the left-out embedding matmuls)."
    S, d, m, L = n_genes + 2, cfg.hidden_size, cfg.intermediate_size, layer + 1
    proj, scores, values_, mlp = 8 * S * d * d, 2 * S * S * d, 2 * S * S * d, 6 * S * d * m
    emb = 2 * S * cfg.bin_num + 2 * S * cfg.bin_num ** 2 + 2 * S * cfg.bin_num * d
    return {'per_block': {'qkvo_projections': proj, 'attention_scores': scores, 'attention_values': values_, 'mlp': mlp},
            'counted': L * (proj + scores + values_ + mlp), 'left_out_value_embedding': emb, 'blocks': L, 'tokens': S}


def matmul_peak(n=2048, reps=5) -> float:
    "Best GFLOP/s of torch.matmul on two n x n float32 matrices."
    import torch
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter(); torch.matmul(a, b); best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def forward_gflops(model, values, depth, flops, batch=16) -> tuple:
    "(GFLOP/s, seconds) of the forward to layer 12 over all `values` in batches of `batch`."
    import torch
    with torch.inference_mode():
        model(values[:1], depth[:1], stop_after=12)  # warm-up
        t0 = time.perf_counter()
        for s in range(0, len(values), batch): model(values[s:s + batch], depth[s:s + batch], stop_after=12)
        t = time.perf_counter() - t0
    return flops['counted'] * len(values) / t / 1e9, t


def shape_gflops(rows, d_in, d_out, reps=5) -> float:
    "GFLOP/s of one (rows x d_in) @ (d_in x d_out) float32 matmul: the projection shape of the forward (diagnostic)."
    import torch
    a, b = torch.randn(rows, d_in), torch.randn(d_in, d_out)
    torch.matmul(a, b); best = np.inf
    for _ in range(reps):
        t0 = time.perf_counter(); torch.matmul(a, b); best = min(best, time.perf_counter() - t0)
    return 2 * rows * d_in * d_out / best / 1e9


def profile_forward(model, values, depth, batch=16, top=12) -> list:
    "torch.profiler self-CPU time by operator for one batch of the forward to layer 12."
    import torch
    from torch.profiler import profile, ProfilerActivity
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(values[:batch], depth[:batch], stop_after=12)
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    tot = sum(e.self_cpu_time_total for e in rows)
    return [{'op': e.key, 'self_ms': e.self_cpu_time_total / 1e3, 'share': e.self_cpu_time_total / tot, 'calls': e.count} for e in rows[:top]]


# ---------------------------------------------------------------- RSS children (fresh process per phase and scale)
def child(phase, scale, path):
    from activation_store_rss import Sampler, _status
    import warnings
    C.set_threads()
    from cellsteer_nb.core import DEFAULT_CHECKPOINT
    from cellsteer_nb.data import load_pbmc68k, align_to_panel
    from cellsteer_nb.model import load_checkpoint, cell_inputs
    from cellsteer_nb.store import write_activation_store, ActivationStore
    from cellsteer_nb.sae import TopKSAE, SAEConfig, SAETrainer, SAETrainConfig
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        values, depth = cell_inputs(align_to_panel(load_pbmc68k(), genes))
    values, depth = values.repeat(scale, 1), depth.repeat(scale)
    res = {'phase': phase, 'scale': scale, 'n_cells': len(values), 'after_load_kib': _status()}
    sampler = Sampler(); sampler.start(); t0 = time.perf_counter()
    if phase == 'baseline': pass
    elif phase == 'build':
        store = write_activation_store(model, values, depth, path)
        res['store_mb'] = sum(f.stat().st_size for f in Path(path).iterdir()) / 2**20
    elif phase == 'sae_epoch':
        store = ActivationStore(path)
        tc = SAETrainConfig()
        n_tokens = store.n_cells * store.n_genes
        steps = n_tokens // tc.batch_size
        sae = TopKSAE(SAEConfig(store.d, tc.expansion * store.d, tc.k))
        SAETrainer(sae, tc.lr).fit(store.token_batches(tc.batch_size), steps, log_every=max(1, steps // 10), progress=False)
        res.update(n_tokens=n_tokens, steps=steps)
    res['seconds'] = time.perf_counter() - t0
    peak = sampler.finish()
    res.update(peak_rss_mb=C.peak_rss_mb(), ru_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               peak_anon_mb=peak['RssAnon'] / 1024, peak_file_mb=peak['RssFile'] / 1024)
    print(json.dumps(res))


def linked_store(src: Path, dst: Path, scale: int):
    "An activation store of the 1x store's cells replicated `scale` times (hard links to its shards, a manifest with shifted cells)."
    src, dst = Path(src), Path(dst); dst.mkdir(parents=True)
    man = json.loads((src/'manifest.json').read_text()); n = man['n_cells']; shards = []
    for r in range(scale):
        for sh in man['shards']:
            f = f"r{r}_{sh['file']}"; os.link(src/sh['file'], dst/f)
            shards.append({'file': f, 'start': sh['start'] + r * n, 'end': sh['end'] + r * n})
    (dst/'manifest.json').write_text(json.dumps({**man, 'n_cells': n * scale, 'shards': shards}))


def previous_build(scale: int) -> dict | None:
    "The store build at `scale` from bench/activation_store_rss.json (same phase, fresh child of a light parent, ru_maxrss), if there."
    p = C.BENCH/'activation_store_rss.json'
    if not p.exists(): return None
    runs = {(r['phase'], r['scale']): r for r in json.loads(p.read_text())['runs']}
    b, base = runs.get(('build', scale)), runs.get(('baseline', scale))
    if not (b and base): return None
    return {'build_mb': b['ru_maxrss_kib'] / 1024, 'baseline_mb': base['ru_maxrss_kib'] / 1024, 'seconds': b['seconds'],
            'source': 'bench/activation_store_rss.json (its own run; ru_maxrss of a fresh child)'}


def rss(scales=(1, 2, 4), build_scales=(1, 2, 4)) -> dict:
    """Fresh child per row: baseline (imports, model, data at N x), build (`write_activation_store` of N x the cells), SAE epoch
    (one epoch of `SAETrainer` over every token of an N x store; the N x store for the epoch is the 1x store's shards linked N
    times — the same bytes a built N x store holds, since the cells are replicated)."""
    rows = []
    out = {'rows': rows, 'build_scales_measured': list(build_scales)}
    d = Path(tempfile.mkdtemp(prefix='cellsteer_rss_'))
    try:
        for sc in scales:
            for phase in ('baseline', 'build', 'sae_epoch'):
                if phase == 'build' and sc not in build_scales and sc != 1: continue
                path = d/f'store_{sc}x'
                if phase == 'sae_epoch' and sc != 1 and not path.exists(): linked_store(d/'store_1x', path, sc)
                if phase == 'build' and path.exists(): shutil.rmtree(path)
                r = C.run_child([str(C.BENCH/'bench_extract.py'), '--child', phase, str(sc), str(path)])
                rows.append(r)
                print(f"  {phase} {sc}x: peak RSS {r['peak_rss_mb']:.0f} MiB, {r['seconds']:.0f} s", flush=True)
            if sc != 1 and (d/f'store_{sc}x').exists(): shutil.rmtree(d/f'store_{sc}x')
    finally: shutil.rmtree(d, ignore_errors=True)
    by = {(r['phase'], r['scale']): r for r in rows}
    for sc in scales:
        base = by[('baseline', sc)]['peak_rss_mb']
        b = by.get(('build', sc))
        if b: build, bdelta, src = b['peak_rss_mb'], b['peak_rss_mb'] - base, 'measured'
        else:
            prev = previous_build(sc)
            build, bdelta, src = (prev['build_mb'], prev['build_mb'] - prev['baseline_mb'], prev['source']) if prev else (None, None, 'not measured')
        out[f'{sc}x'] = {'baseline_mb': base, 'build_mb': build, 'build_delta_mb': bdelta, 'build_source': src,
                         'sae_epoch_mb': by[('sae_epoch', sc)]['peak_rss_mb'], 'sae_epoch_delta_mb': by[('sae_epoch', sc)]['peak_rss_mb'] - base,
                         'store_mb': by[('build', 1)]['store_mb'] * sc, 'build_seconds': b['seconds'] if b else None,
                         'sae_epoch_seconds': by[('sae_epoch', sc)]['seconds']}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--cells', type=int, default=64)
    ap.add_argument('--cells-h640', type=int, default=4)
    ap.add_argument('--skip-rss', action='store_true')
    ap.add_argument('--build-scales', type=int, nargs='*', default=[1, 2, 4], help='scales whose store build is measured (1 always)')
    ap.add_argument('--child', nargs=3)
    a = ap.parse_args()
    if a.child: return child(a.child[0], int(a.child[1]), a.child[2])
    import torch
    from cellsteer_nb.model import CellFoundation, CellFoundationConfig
    from cellsteer_nb.model import model_inputs
    model, adata, sae = C.pipeline()
    values, depth = model_inputs(adata, model)
    vals, dep = values[:a.cells], depth[:a.cells]
    cfg640 = CellFoundationConfig(**{**model.config.to_dict(), **H640})
    torch.manual_seed(0)
    big = CellFoundation(cfg640).eval()
    vb, db = values[:a.cells_h640], depth[:a.cells_h640]
    n = values.shape[1]
    fl, fl640 = flops_per_cell(model.config, n), flops_per_cell(cfg640, n)
    rows = []
    for r in range(a.repeats):
        peak = matmul_peak()
        g64, t64 = forward_gflops(model, vals, dep, fl)
        g640, t640 = forward_gflops(big, vb, db, fl640, batch=a.cells_h640)
        from torch.nn.attention import sdpa_kernel, SDPBackend
        with sdpa_kernel(SDPBackend.MATH): g64m, _ = forward_gflops(model, vals, dep, fl)   # tried: the unfused SDPA math path
        peak2 = matmul_peak()
        pk = max(peak, peak2)
        rows.append({'peak_gflops': pk, 'peak_before': peak, 'peak_after': peak2, 'h64_gflops': g64, 'h64_seconds': t64,
                     'h64_cells_per_s': len(vals) / t64, 'h640_gflops': g640, 'h640_seconds': t640,
                     'h640_s_per_cell': t640 / len(vb), 'h64_frac': g64 / pk, 'h640_frac': g640 / pk,
                     'h64_math_sdpa_gflops': g64m, 'h64_math_sdpa_frac': g64m / pk})
        print(f"repeat {r}: peak {pk:.1f} GFLOP/s; h64 {g64:.1f} ({g64 / pk:.0%}), h640 {g640:.1f} ({g640 / pk:.0%})", flush=True)
    S = n + 2
    out = {'flops_h64': fl, 'flops_h640': fl640, 'config_h640': cfg640.to_dict(), 'repeats': rows,
           'frac_of_peak': C.median([x['h64_frac'] for x in rows]), 'frac_of_peak_h640': C.median([x['h640_frac'] for x in rows]),
           'peak_gflops': C.median([x['peak_gflops'] for x in rows]), 'h64_gflops': C.median([x['h64_gflops'] for x in rows]),
           'h640_gflops': C.median([x['h640_gflops'] for x in rows]), 'h64_cells_per_s': C.median([x['h64_cells_per_s'] for x in rows]),
           'h64_math_sdpa_frac': C.median([x['h64_math_sdpa_frac'] for x in rows]),
           'n_cells_h64': len(vals), 'n_cells_h640': len(vb), 'batch_h64': 16, 'batch_h640': a.cells_h640,
           'matmul_peak_shape': '2048 x 2048 @ 2048 x 2048 float32',
           'shape_gflops': {'h64 projection (16*767 x 64 @ 64 x 64)': shape_gflops(16 * S, 64, 64),
                            'h64 MLP up (16*767 x 64 @ 64 x 192)': shape_gflops(16 * S, 64, model.config.intermediate_size),
                            'h640 projection (4*767 x 640 @ 640 x 640)': shape_gflops(4 * S, 640, 640),
                            'h640 MLP up (4*767 x 640 @ 640 x 1664)': shape_gflops(4 * S, 640, 1664)},
           'profile_h64': profile_forward(model, vals, dep), 'profile_h640': profile_forward(big, vb, db, batch=a.cells_h640)}
    top = {'extract_frac_of_peak': out['frac_of_peak'], 'extract_frac_of_peak_h640': out['frac_of_peak_h640']}
    C.save_results('extract', out, top)   # the throughput part, saved before the (long) RSS part
    if not a.skip_rss:
        print('peak RSS of the store build and one SAE epoch at 1x, 2x, 4x ...', flush=True)
        out['rss'] = rss(build_scales=tuple(a.build_scales))
        top.update({f'rss_mb_{s}x': max(x for x in (out['rss'][f'{s}x']['build_mb'], out['rss'][f'{s}x']['sae_epoch_mb']) if x is not None) for s in (1, 2, 4)})
    else:
        prev = C.load_results().get('sections', {}).get('extract', {}).get('rss')
        if prev: out['rss'] = {**prev, 'reused_from_previous_run': True}
    C.save_results('extract', out, top)


if __name__ == '__main__':
    main()
