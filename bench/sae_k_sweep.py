"""Sweep of the TopK SAE's k on the default checkpoint's layer 12: the default `SAETrainConfig` with only k changed,
trained by `fit_sae` on the bundled cells' training split and scored on the held-out cells (FVU, FVU within gene, L0,
dead share, masked-value loss recovered when the SAE reconstruction is spliced into layer 12). One torch thread.

    python bench/sae_k_sweep.py            # train every k (a few minutes each), write sae_k_sweep.json, SAE_K_SWEEP.md, sae_k_sweep.png
    python bench/sae_k_sweep.py render     # rewrite the markdown and the figure from the json
"""
import json, os, platform, sys, time, warnings
from dataclasses import asdict
from pathlib import Path

OUT = Path(__file__).parent
KS = (4, 8, 16, 32)
BARS = {'fvu': 0.2, 'dead_frac': 0.1, 'loss_recovered': 0.8}  # fvu < 0.2, dead share < 10%, loss recovered > 0.8 (report.py)


def meets(q: dict) -> bool:
    return q['fvu'] < BARS['fvu'] and q['dead_frac'] < BARS['dead_frac'] and q['loss_recovered'] > BARS['loss_recovered']


def run(cache: str):
    os.environ['CELLSTEER_CACHE'] = cache  # cold cache: fit_sae caches its result, and the timings must be of real training
    import torch
    torch.set_num_threads(1)
    from cellsteer_nb.core import DEFAULT_CHECKPOINT, atomic_write, dumps_json
    from cellsteer_nb.data import load_pbmc68k, align_to_panel
    from cellsteer_nb.model import load_checkpoint, cell_inputs
    from cellsteer_nb.sae import SAETrainConfig, fit_sae, load_sae, DEFAULT_SAE
    from cellsteer_nb.store import activation_store_for
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        values, depth = cell_inputs(align_to_panel(load_pbmc68k(), genes))
    t0 = time.perf_counter(); activation_store_for(model, values, depth)  # the store is built here, outside the timings
    store_seconds = time.perf_counter() - t0
    default = SAETrainConfig()
    runs = []
    for k in KS:
        cfg = SAETrainConfig(k=k)
        t0 = time.perf_counter()
        sae, quality, history = fit_sae(model, values, depth, cfg, progress=False)
        seconds = time.perf_counter() - t0
        run = {'k': k, 'cfg': asdict(cfg), 'quality': quality, 'seconds': seconds, 'history': history, 'meets_bars': meets(quality)}
        if k == default.k:  # does the sweep's default-k run reproduce the committed default SAE?
            ref = load_sae(DEFAULT_SAE)
            run['max_abs_diff_vs_default_sae'] = max((a - b).abs().max().item() for a, b in zip(sae.state_dict().values(), ref.state_dict().values()))
        runs.append(run)
        print(f"k={k}: fvu {quality['fvu']:.4f} l0 {quality['l0']:.2f} dead {quality['dead_frac']:.3f} "
              f"loss recovered {quality['loss_recovered']:.3f} ({seconds:.0f} s)", flush=True)
    res = {'default_cfg': asdict(default), 'bars': BARS, 'runs': runs, 'store_seconds': store_seconds,
           'n_cells': len(values), 'n_genes': values.shape[1], 'd_in': model.config.hidden_size,
           'machine': {'python': platform.python_version(), 'torch': torch.__version__.split('+')[0], 'cpus': os.cpu_count(),
                       'torch_threads': torch.get_num_threads(), 'loadavg_end': os.getloadavg()[0]}}
    atomic_write(OUT/'sae_k_sweep.json', dumps_json(res))


def figure(res: dict):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from cellsteer_nb.core import save_figure
    runs, bars = res['runs'], res['bars']
    ks = [r['k'] for r in runs]; q = lambda key: [r['quality'][key] for r in runs]
    colors = dict(zip(ks, plt.cm.viridis([i / max(1, len(ks) - 1) * 0.85 for i in range(len(ks))])))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(q('l0'), q('fvu'), '-', color='0.6', lw=1, zorder=1)
    ax.plot(q('l0'), q('fvu_within_gene'), ':', color='0.6', lw=1, zorder=1)
    for r in runs:
        ax.scatter(r['quality']['l0'], r['quality']['fvu'], color=colors[r['k']], s=40, zorder=2)
        ax.scatter(r['quality']['l0'], r['quality']['fvu_within_gene'], facecolor='none', edgecolor=colors[r['k']], s=40, zorder=2)
        ax.annotate(f"k={r['k']}", (r['quality']['l0'], r['quality']['fvu']), textcoords='offset points', xytext=(4, 4), fontsize=8)
    ax.axhline(bars['fvu'], ls='--', color='tab:red', lw=1, label=f"bar: FVU < {bars['fvu']}")
    ax.scatter([], [], color='0.3', label='FVU (total variance)'); ax.scatter([], [], facecolor='none', edgecolor='0.3', label='FVU within gene')
    ax.set(xscale='log', xlabel='L0 (active latents per held-out token, log)', ylabel='held-out FVU (log)', yscale='log', title='Reconstruction vs sparsity')
    ax.set_xticks(q('l0')); ax.set_xticklabels([f'{v:.3g}' for v in q('l0')]); ax.minorticks_off()
    ax.legend(frameon=False, fontsize=8)
    ax = axes[1]
    ax.plot(ks, q('loss_recovered'), 'o-', color='tab:blue', label='loss recovered')
    ax.plot(ks, q('dead_frac'), 's-', color='tab:orange', label='dead share')
    ax.axhline(bars['loss_recovered'], ls='--', color='tab:blue', lw=1, label=f"bar: loss recovered > {bars['loss_recovered']}")
    ax.axhline(bars['dead_frac'], ls='--', color='tab:orange', lw=1, label=f"bar: dead share < {bars['dead_frac']:.0%}")
    ax.set(xscale='log', xlabel='k (log)', ylabel='fraction', title='Loss recovered and dead latents vs k', ylim=(-0.03, 1.03))
    ax.set_xticks(ks); ax.set_xticklabels(map(str, ks)); ax.minorticks_off()
    ax.legend(frameon=False, fontsize=8, loc='center right')
    ax = axes[2]
    for r in runs:
        h = r['history']
        ax.plot([p['step'] for p in h], [p['fvu'] for p in h], color=colors[r['k']], label=f"k={r['k']}")
    ax.axhline(bars['fvu'], ls='--', color='tab:red', lw=1)
    ax.set(xlabel='step', ylabel='training-batch FVU (log)', yscale='log', title='Training curves')
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    save_figure(fig, OUT/'sae_k_sweep.png')


def render():
    from cellsteer_nb.core import atomic_write
    res = json.loads((OUT/'sae_k_sweep.json').read_text())
    figure(res)
    runs, bars, dc, m = res['runs'], res['bars'], res['default_cfg'], res['machine']
    ok = [r['k'] for r in runs if r['meets_bars']]
    lines = ['# SAE k sweep', '',
             '*Generated by `python bench/sae_k_sweep.py` (writes `sae_k_sweep.json`, this file and `sae_k_sweep.png`).*', '',
             f"TopK SAE on every gene token's layer-12 residual of the default checkpoint, {res['n_cells']} bundled cells × "
             f"{res['n_genes']} genes, d_in = {res['d_in']}. Every run is the default `SAETrainConfig` (expansion {dc['expansion']} → "
             f"{dc['expansion'] * res['d_in']} latents, {dc['steps']:,} steps of {dc['batch_size']:,} tokens, lr {dc['lr']:g}, "
             f"held-out share {dc['heldout_frac']:g}, seed {dc['seed']}) with only k changed, trained by `fit_sae`; all metrics are on the "
             'held-out cells. Bars as in the report: FVU < '
             f"{bars['fvu']}, dead share < {bars['dead_frac']:.0%}, loss recovered > {bars['loss_recovered']}.", '',
             '| k | L0 | FVU | FVU within gene | dead share | masked loss: clean / SAE / ablated | loss recovered | meets bars | train s |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in runs:
        q = r['quality']
        lines.append(f"| {r['k']}{' (default)' if r['k'] == dc['k'] else ''} | {q['l0']:.2f} | {q['fvu']:.4f} | {q['fvu_within_gene']:.4f} | "
                     f"{q['dead_frac']:.3f} | {q['loss_clean']:.4f} / {q['loss_sae']:.4f} / {q['loss_ablated']:.4f} | "
                     f"{q['loss_recovered']:.3f} | {'yes' if r['meets_bars'] else 'no'} | {r['seconds']:.0f} |")
    if ok:
        verdict = (f"k = {', '.join(map(str, ok))} meet{'s' if len(ok) == 1 else ''} all three bars; the sparsest that does is k = {min(ok)}. "
                   f"The default k = {dc['k']} {'meets them' if dc['k'] in ok else 'does not meet them'}"
                   + (f" and is the sparsest that does." if dc['k'] == min(ok) else '.'))
    else: verdict = f"No k meets all three bars (the default is k = {dc['k']})."
    fails = [(r['k'], [n for n, bad in (('FVU', r['quality']['fvu'] >= bars['fvu']), ('dead share', r['quality']['dead_frac'] >= bars['dead_frac']),
                                        ('loss recovered', r['quality']['loss_recovered'] <= bars['loss_recovered'])) if bad]) for r in runs if not r['meets_bars']]
    if fails: verdict += ' Missed: ' + '; '.join(f"k = {k}: {', '.join(b)}" for k, b in fails) + '.'
    lines += ['', verdict, '', '![FVU vs L0, loss recovered and dead share vs k, training curves](sae_k_sweep.png)', '']
    d = next((r for r in runs if 'max_abs_diff_vs_default_sae' in r), None)
    if d is not None:
        lines.append(f"The k = {d['k']} run against the committed `cellsteer_nb/assets/sae_l12`: largest absolute weight difference "
                     f"{d['max_abs_diff_vs_default_sae']:.3g}" + (' (identical).' if d['max_abs_diff_vs_default_sae'] == 0 else
                     ' (not bit-identical).'))
    lines += [f"L0 is the mean number of active latents per held-out token (at most k). Seconds are `fit_sae` wall-clock (training, held-out "
              f"scoring and the three spliced-loss passes, on a cold cache; the activation store was built beforehand) with {m['torch_threads']} torch "
              f"thread on a shared {m['cpus']}-core machine (load average {m['loadavg_end']:.1f} at the end): read them as rough. "
              'One seed per k.']
    atomic_write(OUT/'SAE_K_SWEEP.md', '\n'.join(lines) + '\n')


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'render': render()
    else:
        import tempfile
        with tempfile.TemporaryDirectory(prefix='cellsteer_k_sweep_') as tmp: run(tmp)
        render()
