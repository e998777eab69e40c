"""Item 3, SAE training: ours (`SAETrainer` on a `TopKSAE`, the current recipe: `SAETrainConfig()`'s defaults) against SAELens (`TopKTrainingSAE` trained by SAELens' own
`SAETrainer`, its defaults otherwise: AuxK coefficient 1, decoder-norm rescaling, decoder init norm 0.1, grad-norm clip 1),
in the side venv `.venv-saelens` (`torch==2.13.0` + `sae-lens`, as tests/test_saelens.py makes it; `make bench` creates it).

Same width (8 x 64 = 512), k (8), batch (1024), steps, learning rate (1e-3, Adam, constant), same token batches in the
same order: `steps` batches drawn once from the cached layer-12 activation store's training cells (`token_batches`, the
default SAE's split) and held in memory for both, so neither side pays for reading the store. Timed: the training loop
alone (ours `SAETrainer.fit`, theirs `SAETrainer.fit`), in separate processes (theirs must run in its venv), alternately,
one thread each. Held-out FVU, computed the same way for both: sum ||x - x_hat||^2 / sum ||x - mean x||^2 over every gene
token of the held-out cells (float64); held-out dead share: latents never active on those tokens. Median of 3 repeats.

Ablation (one run each, same batches): the committed SAEs' recipe (`LEGACY_SAE_RECIPE`: dense step, no gradient clipping,
AuxK coefficient 1/32) and the changes one at a time, up to the current recipe; and where our step spends its
time (torch profiler, 200 steps) with the committed recipe and with the current one.

    python bench/bench_sae.py [--repeats 3] [--steps 1000]
"""
import _common as C
import argparse, json, os, subprocess, tempfile, time
import numpy as np

SIDE = C.ROOT/'.venv-saelens'/'bin'/'python'


RECIPE_KEYS = ('sparse_step', 'grad_clip', 'aux_coeff', 'dead_after_tokens')


def ablation_variants():
    "(name, recipe) pairs: the committed SAEs' recipe, then one change at a time, up to the current defaults."
    from cellsteer_nb.sae import SAETrainConfig, LEGACY_SAE_RECIPE
    new = {k: getattr(SAETrainConfig(), k) for k in RECIPE_KEYS}
    old = {k: LEGACY_SAE_RECIPE[k] for k in RECIPE_KEYS}
    return [(f"committed recipe (dense step, no clipping, AuxK {old['aux_coeff']:g})", old),
            ('+ sparse step', {**old, 'sparse_step': new['sparse_step']}),
            ('+ sparse step + gradient clipping', {**old, 'sparse_step': new['sparse_step'], 'grad_clip': new['grad_clip']}),
            ('current recipe, dense step', {**new, 'sparse_step': old['sparse_step']}),
            ('current recipe, no clipping', {**new, 'grad_clip': old['grad_clip']}),
            ("current recipe, SAELens' dead window (1,000 steps: no AuxK in this run)", {**new, 'dead_after_tokens': 1001 * 1024}),
            ('committed recipe at 3x the learning rate', {**old, 'lr_factor': 3}),
            (f"current recipe (sparse step, clipping at {new['grad_clip']:g}, AuxK {new['aux_coeff']:g})", new)]


def ours_child(d, k, d_sae, lr, seed):
    "Our training on the saved batches (fresh process, like theirs), with the recipe in $BENCH_RECIPE (JSON; default: SAETrainConfig's): JSON line."
    import torch
    C.set_threads()
    from cellsteer_nb.sae import TopKSAE, SAEConfig, SAETrainer, SAETrainConfig
    B = torch.from_numpy(np.load(os.path.join(d, 'train_batches.npy')))
    H = torch.from_numpy(np.load(os.path.join(d, 'heldout.npy')))
    steps, batch, d_in = B.shape
    r = {**{kk: getattr(SAETrainConfig(), kk) for kk in RECIPE_KEYS}, **json.loads(os.environ.get('BENCH_RECIPE') or '{}')}
    sae = TopKSAE(SAEConfig(d_in, d_sae, k, aux_coeff=r['aux_coeff'], dead_after_tokens=r['dead_after_tokens']), seed=seed)
    tr = SAETrainer(sae, lr * r.get('lr_factor', 1), seed, grad_clip=r['grad_clip'], sparse=r['sparse_step'])
    if os.environ.get('BENCH_PROFILE'):
        from torch.profiler import profile, ProfilerActivity
        n = min(steps, 200)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter(); tr.fit(iter(B[:n]), n, log_every=max(1, n // 20), progress=False); sec = time.perf_counter() - t0
        ev = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        tot = sum(e.self_cpu_time_total for e in ev)
        print(json.dumps({'recipe': r, 'steps': n, 'seconds_profiled': sec, 'top_ops': [{'op': e.key, 'self_ms': e.self_cpu_time_total / 1e3,
              'share': e.self_cpu_time_total / tot, 'calls': e.count} for e in ev[:15]]}))
        return
    t0 = time.perf_counter()
    tr.fit(iter(B), steps, log_every=max(1, steps // 20), progress=False)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        sse = sum(float((H[i:i + 8192] - sae(H[i:i + 8192])[0]).double().pow(2).sum()) for i in range(0, len(H), 8192))
        fired = torch.zeros(d_sae, dtype=torch.bool)
        for i in range(0, len(H), 8192): fired |= (sae.encode(H[i:i + 8192]) > 0).any(0)
    sst = float((H.double() - H.double().mean(0)).pow(2).sum())
    print(json.dumps({'recipe': r, 'seconds': seconds, 'tokens_per_s': steps * batch / seconds, 'heldout_fvu': sse / sst, 'heldout_dead_frac': 1 - float(fired.float().mean()), 'threads': torch.get_num_threads()}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--steps', type=int, default=1000)
    ap.add_argument('--child', nargs=5)
    a = ap.parse_args()
    if a.child: return ours_child(a.child[0], int(a.child[1]), int(a.child[2]), float(a.child[3]), int(a.child[4]))
    if not SIDE.exists():
        C.save_results('sae', {'error': f'{SIDE} missing: make bench creates it (python3 -m venv .venv-saelens; pip install torch==2.13.0 sae-lens)'})
        raise SystemExit(f'{SIDE} missing')
    from cellsteer_nb.core import split_cells
    from cellsteer_nb.model import model_inputs
    from cellsteer_nb.sae import SAETrainConfig, SAEConfig
    from cellsteer_nb.store import activation_store_for
    model, adata, sae = C.pipeline()
    tc = SAETrainConfig()
    k, d_sae, lr, batch = tc.k, sae.cfg.d_sae, tc.lr, tc.batch_size
    store = activation_store_for(model, *model_inputs(adata, model), sae.cfg.hook_layer)
    train, held = split_cells(store.n_cells, tc.heldout_frac, tc.seed)
    with tempfile.TemporaryDirectory(prefix='cellsteer_sae_bench_') as d:
        it = store.token_batches(batch, train, tc.seed)
        toks, got = [], 0
        while got < a.steps * batch:   # the store's shuffled stream, cut into exactly `batch` tokens a step
            b = next(it).numpy(); toks.append(b); got += len(b)
        np.save(os.path.join(d, 'train_batches.npy'), np.concatenate(toks)[:a.steps * batch].reshape(a.steps, batch, -1))
        np.save(os.path.join(d, 'heldout.npy'), np.concatenate([store.cell_tokens(int(c)) for c in held]))
        args = [d, str(k), str(d_sae), str(lr), str(tc.seed)]
        rows, load = [], [C.loadavg()]
        for r in range(a.repeats):
            order = ('ours', 'theirs') if r % 2 == 0 else ('theirs', 'ours')
            got = {}
            for who in order:
                if who == 'ours': got[who] = C.run_child([str(C.BENCH/'bench_sae.py'), '--child', *args])
                else:
                    p = subprocess.run([str(SIDE), str(C.BENCH/'_saelens_child.py'), *args], capture_output=True, text=True, cwd=C.ROOT)
                    if p.returncode != 0: raise RuntimeError(p.stderr[-3000:])
                    got[who] = json.loads(p.stdout.strip().splitlines()[-1])
            rows.append({'ours': got['ours'], 'saelens': {kk: v for kk, v in got['theirs'].items() if kk != 'cfg'},
                         'ratio_tokens_per_s': got['ours']['tokens_per_s'] / got['theirs']['tokens_per_s']})
            print(f"repeat {r}: ours {got['ours']['tokens_per_s']:,.0f} tok/s FVU {got['ours']['heldout_fvu']:.4f}; "
                  f"SAELens {got['theirs']['tokens_per_s']:,.0f} tok/s FVU {got['theirs']['heldout_fvu']:.4f}", flush=True)
        saelens_cfg = got['theirs'].get('cfg')
        ablation = []   # one run of each recipe on the same batches, each against the median SAELens run above
        for name, rec in ablation_variants():
            o = C.run_child([str(C.BENCH/'bench_sae.py'), '--child', *args], env={'BENCH_RECIPE': json.dumps(rec)})
            ablation.append({'name': name, **o})
            print(f"ablation {name}: {o['tokens_per_s']:,.0f} tok/s FVU {o['heldout_fvu']:.4f} dead {o['heldout_dead_frac']:.3f}", flush=True)
        load.append(C.loadavg())
    ratios = [x['ratio_tokens_per_s'] for x in rows]
    with tempfile.TemporaryDirectory(prefix='cellsteer_sae_prof_') as d:   # where our training step spends its time, before and after
        np.save(os.path.join(d, 'train_batches.npy'), np.stack([next(it).numpy()[:batch] for _ in range(200)]))
        np.save(os.path.join(d, 'heldout.npy'), np.zeros((1, store.d), np.float32))
        cargs = [str(C.BENCH/'bench_sae.py'), '--child', d, str(k), str(d_sae), str(lr), str(tc.seed)]
        prof = C.run_child(cargs, env={'BENCH_PROFILE': '1'})
        prof_committed = C.run_child(cargs, env={'BENCH_PROFILE': '1', 'BENCH_RECIPE': json.dumps(ablation_variants()[0][1])})
    fo, ft = C.median([x['ours']['heldout_fvu'] for x in rows]), C.median([x['saelens']['heldout_fvu'] for x in rows])
    out = {'width': d_sae, 'k': k, 'batch': batch, 'steps': a.steps, 'lr': lr, 'n_train_cells': len(train), 'n_heldout_cells': len(held),
           'heldout_tokens': len(held) * store.n_genes, 'repeats': rows, 'ratios': ratios, 'speedup': C.median(ratios),
           'ours_tokens_per_s': C.median([x['ours']['tokens_per_s'] for x in rows]),
           'saelens_tokens_per_s': C.median([x['saelens']['tokens_per_s'] for x in rows]),
           'fvu_ours': fo, 'fvu_saelens': ft,
           'dead_ours': C.median([x['ours']['heldout_dead_frac'] for x in rows]), 'dead_saelens': C.median([x['saelens']['heldout_dead_frac'] for x in rows]), 'fvu_ratio': fo / ft, 'saelens_version': rows[-1]['saelens'].get('sae_lens_version'),
           'saelens_cfg': saelens_cfg, 'profile_ours': prof, 'profile_committed': prof_committed, 'ablation': ablation,
           'ours_recipe': rows[-1]['ours'].get('recipe'),
           'cpu_model': C.environment()['cpu_model'], 'loadavg_1min': load, 'ours_aux_coeff': SAEConfig(store.d, d_sae, k).aux_coeff}
    C.save_results('sae', out, {'sae_speedup': out['speedup'], 'sae_fvu_ours': fo, 'sae_fvu_reference': ft})


if __name__ == '__main__':
    main()
