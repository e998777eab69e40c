"""Reference run for `cellsteer_nb.exprobj`: the all-cell fits of the expression objective and the final-layer latent objective
with every source cell measured exactly (no sample), more candidates and many more Gauss–Newton steps, against the reduced
configuration the report runs; and the speed–accuracy trade-off of reduced configurations (unmasked readout: the top-level keys).
Under the key `masked`, the same for the report's headline masked-context readout on a fixed seeded sample of source cells (see
`masked_part`), and the effect of early stopping on the report's masked configuration. Writes
reports/expression_objective_full.json (rewritten after each part). Run: `OMP_NUM_THREADS=1 python tools/expression_objective_full.py`
(`--parts masked` reruns only the masked part and keeps the other keys of an existing JSON)."""
import argparse, json, os, sys, time
from dataclasses import asdict
from pathlib import Path
import numpy as np, pandas as pd, torch
from cellsteer_nb.core import DEFAULT_CHECKPOINT, SOURCE, TARGET, atomic_write, dumps_json
from cellsteer_nb.data import load_pbmc68k, align_to_panel
from cellsteer_nb.model import load_checkpoint
from cellsteer_nb.hooks import embed_cells
from cellsteer_nb.sae import DEFAULT_SAE, load_sae, sae_metadata
from cellsteer_nb.features import feature_means
from cellsteer_nb.latent import steering_inputs, moved_set, jaccard, SteeringConfig, steer_toward
from cellsteer_nb.readout import cell_residuals, readout
from cellsteer_nb.steer import embedding_shift
from cellsteer_nb.contrastive import fold_ids
from cellsteer_nb.expression import reference_de, gap_table, direction_shares
from cellsteer_nb.exprobj import (ExprObjConfig, expression_objective_step, expression_objective, final_layer_objective, cell_outputs,
                                  objective_gradients, pick_candidates, spread_sample, validation_cells, estimate_value, fd_jacobians,
                                  gauss_newton, _cos)

OUT = Path(os.environ.get('EXPROBJ_FULL_OUT', Path(__file__).resolve().parents[1]/'reports'/'expression_objective_full.json'))
SMOKE = bool(os.environ.get('EXPROBJ_SMOKE'))  # a quick check of the script itself
REF = dict(n_candidates=4 if SMOKE else 64, max_iter=1 if SMOKE else 30, tol=1e-6)
TRADEOFF = [dict(n_candidates=4, n_jacobian_cells=4, max_iter=1)] if SMOKE else [
    dict(n_candidates=24, n_jacobian_cells=8, max_iter=4), dict(n_candidates=48, n_jacobian_cells=16, max_iter=8),
    dict(n_candidates=48, n_jacobian_cells=32, max_iter=16)]
# masked-context readout: a fixed seeded sample of source cells on which the objective is measured exactly (4 passes per cell)
MASKED_SAMPLE = 6 if SMOKE else 12
MASKED_REF = dict(n_candidates=4, max_iter=2, relinearise_every=1, tol=1e-6) if SMOKE else dict(n_candidates=32, max_iter=16, relinearise_every=8, tol=1e-6)
MASKED_CONFIGS = [dict(n_candidates=4, n_jacobian_cells=3, max_iter=1)] if SMOKE else [
    dict(n_candidates=24, n_jacobian_cells=8, max_iter=4), dict(n_candidates=24, n_jacobian_cells=12, max_iter=8)]

def setup():
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    sae = load_sae(DEFAULT_SAE, expect=sae_metadata()).requires_grad_(False)
    adata = align_to_panel(load_pbmc68k(), genes)
    embed_cells(adata, model); feature_means(adata, model, sae)
    labels, Z, F, W, cen, _ = steering_inputs(adata, sae.W_dec.detach().numpy())
    src = labels == SOURCE
    lat = steer_toward(Z[src], F[src], W, cen[TARGET], SteeringConfig())
    lam_rel, latent_beta = lat.cv.lambda_1se / lat.cv.lams[0], lat.beta
    de = reference_de(adata)
    top = np.argsort(-np.abs(de.effect.to_numpy()), kind='stable')[:100]
    return model, sae, adata, labels, Z, F, W, cen, src, lam_rel, latent_beta, de, top

def unmasked_part(out, save, model, sae, adata, labels, Z, F, W, cen, src, lam_rel, latent_beta, de, top):
    out.update({'reference_config': REF, 'notes': 'all-cell fits (no cross-fitting); objective = fit + lambda ||alpha - 1||_1 measured exactly on every source cell'})
    cfg = ExprObjConfig()
    t0 = time.perf_counter(); red = expression_objective_step(adata, model, sae, top, 1 + latent_beta, lam_rel, cfg)
    out['reduced'] = {**red.to_json(), 'config': asdict(cfg), 'wall_s_including_cache': time.perf_counter() - t0}
    save()
    res_s = cell_residuals(model, adata, np.flatnonzero(src), sae.cfg.hook_layer, cfg.n_masks, cfg.seed)
    a = red.arrays
    objs = [expression_objective(a['y_source'], a['y_target'], top), final_layer_objective(a['z_final_target'])]
    O0 = [objs[0].select({'readout': a['y_source']}), a['z_final_source']]
    n, p, cells = int(src.sum()), sae.cfg.d_sae, np.arange(int(src.sum()))
    lams = a['lambdas']  # the reduced run's lambdas: both fits solve the same problem
    def exact(k, beta):
        with torch.inference_mode():
            o = cell_outputs(model, sae, res_s, cells, torch.as_tensor(beta, dtype=torch.float32).expand(n, p), (objs[k].what,), cfg.kind, batch_size=cfg.batch_size)
        O = objs[k].select(o).double().numpy()
        return objs[k].value(O) + lams[k] * np.abs(beta).sum(), O
    names = ('expression_objective', 'final_layer')
    red_betas = [a['betas_expr'][0], a['betas_final'][0]]
    red_exact = [exact(k, red_betas[k])[0] for k in range(2)]
    P0 = [objs[k].value(O0[k]) for k in range(2)]
    t0 = time.perf_counter(); grads = objective_gradients(model, sae, res_s, cells, objs, O0, kind=cfg.kind); t_grad = time.perf_counter() - t0
    out['gradient_all_cells_s'] = t_grad
    out['lambda_max_all_cells'] = np.abs(grads).max(1).tolist(); out['lambda_max_reduced'] = np.abs(a['gradients']).max(1).tolist()
    def fit(k, n_cand, S, max_iter, tol, g):
        cand = pick_candidates(g[k], latent_beta, n_cand)
        t0 = time.perf_counter()
        J, Os = fd_jacobians(model, sae, res_s, S, cand, [objs[k]], cfg.fd_step, kind=cfg.kind, batch_size=cfg.batch_size)
        def evaluate(b):
            B = np.zeros(p, np.float32); B[cand] = b
            with torch.inference_mode():
                o = cell_outputs(model, sae, res_s, S, torch.as_tensor(B).expand(len(S), p), (objs[k].what,), cfg.kind, batch_size=cfg.batch_size)
            return objs[k].select(o).double().numpy()
        b, info = gauss_newton(objs[k], lams[k], O0[k], O0[k][S], J[0], evaluate, max_iter, tol, cfg.radius, True)
        beta = np.zeros(p); beta[cand] = b
        return beta, info, time.perf_counter() - t0
    folds = fold_ids(n, cfg.n_folds, cfg.seed)
    out['tradeoff'] = []
    for tc in TRADEOFF:
        row = {**tc}
        for k in range(2):
            beta, info, sec = fit(k, tc['n_candidates'], spread_sample(folds, tc['n_jacobian_cells'], cfg.seed), tc['max_iter'], cfg.tol, a['gradients'])
            row[names[k]] = {'seconds': sec, 'objective_exact': exact(k, beta)[0], 'objective_estimate': info['objective'], 'n_moved_features': len(moved_set(beta))}
        out['tradeoff'].append(row); save()
    for k in range(2):
        beta, info, sec = fit(k, REF['n_candidates'], cells, REF['max_iter'], REF['tol'], grads)
        P_ref, O_ref = exact(k, beta)
        r = {'seconds': sec, 'objective_alpha1': P0[k], 'objective_reference': P_ref, 'objective_reduced_exact': red_exact[k],
             'objective_reduced_estimate': float(a['fit_info_expr' if k == 0 else 'fit_info_final'][0, 1]),
             'objective_relative_excess_vs_reference': (red_exact[k] - P_ref) / P_ref,
             'fraction_of_reference_decrease_reached': (P0[k] - red_exact[k]) / (P0[k] - P_ref),
             'iterations': info['iterations'], 'history': info['history'], 'lambda': float(lams[k]),
             'n_moved_features': len(moved_set(beta)), 'n_nonzero_features': int((beta != 0).sum()),
             'alpha_cosine_with_latent': _cos(beta, latent_beta), 'alpha_cosine_with_reduced': _cos(beta, red_betas[k]),
             'moved_set_jaccard_with_layer12': jaccard(moved_set(beta), moved_set(latent_beta)),
             'moved_set_jaccard_with_reduced': jaccard(moved_set(beta), moved_set(red_betas[k]))}
        if k == 0:
            r['fraction_farther_latent_in_sample'] = float((np.linalg.norm(Z[src] + embedding_shift(F[src], W, 1 + beta) - cen[TARGET], axis=1)
                                                            > np.linalg.norm(Z[src] - cen[TARGET], axis=1)).mean())
        else:
            mu = a['z_final_target'].mean(0)
            r['fraction_closer_in_sample'] = float((np.linalg.norm(O_ref - mu, axis=1) < np.linalg.norm(O0[1] - mu, axis=1)).mean())
        out[names[k]] = r; save()

def _step_summary(res, de, top, sec):
    "What early stopping changes in one run of the report's masked step: objectives, where each fit stopped, held-out shares."
    e, fl, r = res.expression_objective, res.final_layer, res.readouts
    shares = direction_shares(gap_table(de, r['source'].mean(0), r['target'].mean(0), r['steered_heldout'].mean(0)))
    keep = ['objective_alpha1', 'objective_fit', 'objective_heldout_alpha1', 'objective_heldout', 'n_moved_features', 'n_nonzero_features',
            'fraction_farther_latent', 'alpha_cosine_with_latent', 'gauss_newton_steps', 'stopped_at', 'kept_step', 'early_stopped']
    return {'expression_objective': {**{k: e[k] for k in keep}, 'heldout_up_correct_share': shares['up_correct_share'],
                                     'heldout_down_correct_share': shares['down_correct_share'], 'n_up': shares['n_up'], 'n_down': shares['n_down']},
            'final_layer': {k: fl[k] for k in ['objective_fit', 'fraction_closer_heldout', 'n_moved_features', 'gauss_newton_steps', 'stopped_at', 'kept_step', 'early_stopped']},
            'seconds': res.timings['total_s'], 'fits_seconds': res.timings['fits_s'], 'wall_s_including_cache': sec}

def masked_part(out, save, model, sae, adata, labels, Z, F, W, cen, src, lam_rel, latent_beta, de, top, steps=True, sample=True):
    """The masked-context readout (the report's headline). (1) The report's configuration (`ExprObjConfig.for_readout('masked')`,
    cross-fitted) with early stopping (the default) and without. (2) Reference vs reduced fits of the expression objective on a fixed
    seeded sample of source cells: every fit solves the same problem, the objective (report's target, weights and λ) on the sample's
    mean steered readout, measured exactly on all sample cells; the reference has Jacobians on every sample cell, more candidates,
    re-linearisation and many more steps; the reduced ones Jacobians on a subset, with and without early stopping on the rest."""
    m = out.setdefault('masked', {})
    m['notes'] = 'masked-context readout; see tools/expression_objective_full.py masked_part'
    cfg = ExprObjConfig.for_readout('masked')
    if steps:
        rc = m['report_config'] = {'config': asdict(cfg), 'early_stopping_config': {'n_val_cells': 8, 'patience': cfg.patience}}
        for name, c in (('early_stopping', ExprObjConfig.for_readout('masked', n_val_cells=8)), ('no_early_stopping', cfg)):
            t0 = time.perf_counter(); r = expression_objective_step(adata, model, sae, top, 1 + latent_beta, lam_rel, c)
            rc[name] = _step_summary(r, de, top, time.perf_counter() - t0); rc['lambda'] = r.expression_objective['lambda']; save()
    if not sample: return
    res_s, res_t = (cell_residuals(model, adata, np.flatnonzero(c), sae.cfg.hook_layer, cfg.n_masks, cfg.seed) for c in (src, labels == TARGET))
    n, p = int(src.sum()), sae.cfg.d_sae
    folds = fold_ids(n, cfg.n_folds, cfg.seed)
    # the report's masked objective and lambda, by the step's own rule (lambda_rel x lambda_max from the gradient on its grad cells)
    y_s, y_t = readout(model, res_s, 'masked'), readout(model, res_t, 'masked')
    obj = expression_objective(y_s, y_t, top)
    g_rep = objective_gradients(model, sae, res_s, np.arange(n), [obj], [obj.select({'readout': y_s.astype(np.float64)})],
                                spread_sample(folds, cfg.n_grad_cells, cfg.seed + 1), kind='masked')[0]
    lam = lam_rel * float(np.abs(g_rep).max())
    a = {'y_source': y_s.astype(np.float64)}
    S = spread_sample(folds, MASKED_SAMPLE, seed=3)
    O0 = obj.select({'readout': a['y_source']})[S]   # the sample's unsteered masked readout of the genes
    def outputs(cells, beta):
        with torch.inference_mode():
            o = cell_outputs(model, sae, res_s, cells, torch.as_tensor(beta, dtype=torch.float32).expand(len(cells), p), ('readout',), 'masked', batch_size=cfg.batch_size)
        return obj.select(o).double().numpy()
    def exact(beta): return obj.value(outputs(S, beta)) + lam * np.abs(beta).sum()
    P0 = obj.value(O0)
    t0 = time.perf_counter(); grad = objective_gradients(model, sae, res_s, S, [obj], [O0], kind='masked')[0]; t_grad = time.perf_counter() - t0
    m['sample'] = {'n_cells': len(S), 'cells': S.tolist(), 'rule': 'spread_sample(fold_ids(n_source, 5, 0), n, seed=3): dealt round-robin over the 5 folds',
                   'lambda': lam, 'lambda_rule': "the report's masked step's lambda (lambda_rel x its lambda_max)", 'lambda_max_sample': float(np.abs(grad).max()),
                   'objective_alpha1': P0, 'gradient_s': t_grad,
                   'objective': 'sum_g w_g (mean_{i in sample} y_ig(alpha) - t_g)^2 + lambda ||alpha - 1||_1, t and w from all source/target cells (the report\'s)'}
    save()
    def fit(K, cells, max_iter, tol, val=None, relin_every=None, J0=None):
        cand = pick_candidates(grad, latent_beta, K)
        def full(b):
            B = np.zeros(p, np.float32); B[cand] = b; return B
        t0 = time.perf_counter()
        J = fd_jacobians(model, sae, res_s, cells, cand, [obj], cfg.fd_step, kind='masked', batch_size=cfg.batch_size)[0][0] if J0 is None else J0
        t_jac = time.perf_counter() - t0
        validate = None if val is None or not len(val) else (lambda b: estimate_value(obj, O0, O0[np.searchsorted(S, val)], outputs(val, full(b)) if np.any(b) else O0[np.searchsorted(S, val)]) + lam * np.abs(b).sum())
        relin = None if relin_every is None else (lambda b: fd_jacobians(model, sae, res_s, cells, cand, [obj], cfg.fd_step, full(b), kind='masked', batch_size=cfg.batch_size)[0][0])
        b, info = gauss_newton(obj, lam, O0, O0[np.searchsorted(S, cells)], J, lambda b: outputs(cells, full(b)), max_iter, tol, cfg.radius, True,
                               relin, relin_every or 1, validate, cfg.patience)
        sec = time.perf_counter() - t0
        beta = full(b).astype(np.float64)
        return beta, info, {'seconds': sec, 'jacobian_seconds': t_jac, 'objective_exact': exact(beta), 'objective_estimate': info['objective'],
                            'iterations': info['iterations'], 'kept_step': info['kept_step'], 'early_stopped': info['early_stopped'],
                            'n_moved_features': len(moved_set(beta)), 'n_nonzero_features': int((beta != 0).sum())}, J, cand
    m['configs'] = []; betas = {}
    for tc in MASKED_CONFIGS:
        cells = S[spread_sample(folds[S], tc['n_jacobian_cells'], seed=cfg.seed)]
        beta, info, row, J, cand = fit(tc['n_candidates'], cells, tc['max_iter'], cfg.tol)
        rest = np.setdiff1d(S, cells)
        val = np.sort(rest[np.random.default_rng(cfg.seed + 2).permutation(len(rest))][:8])   # early stopping as in the measured step: up to 8 cells
        row = {**tc, 'no_early_stopping': row}
        if len(val):
            beta_es, _, row_es, _, _ = fit(tc['n_candidates'], cells, tc['max_iter'], cfg.tol, val=val, J0=J)
            row_es['seconds'] += row['no_early_stopping']['jacobian_seconds']; row_es['jacobian_seconds'] = row['no_early_stopping']['jacobian_seconds']
            row['early_stopping'] = {**row_es, 'n_validation_cells': len(val)}
        m['configs'].append(row); betas[tuple(tc.values())] = beta; save()
    ref_beta, info, row, _, _ = fit(MASKED_REF['n_candidates'], S, MASKED_REF['max_iter'], MASKED_REF['tol'], relin_every=MASKED_REF['relinearise_every'])
    P_ref = row['objective_exact']
    m['reference'] = {**MASKED_REF, 'n_jacobian_cells': len(S), **row, 'objective_alpha1': P0, 'history': info['history'],
                      'alpha_cosine_with_latent': _cos(ref_beta, latent_beta), 'moved_set_jaccard_with_layer12': jaccard(moved_set(ref_beta), moved_set(latent_beta))}
    for row, beta in zip(m['configs'], betas.values()):
        for k in ('no_early_stopping', 'early_stopping'):
            if k in row:
                r = row[k]; r['objective_relative_excess_vs_reference'] = (r['objective_exact'] - P_ref) / P_ref
                r['fraction_of_reference_decrease_reached'] = (P0 - r['objective_exact']) / (P0 - P_ref)
        row['no_early_stopping']['alpha_cosine_with_reference'] = _cos(beta, ref_beta)
        row['no_early_stopping']['moved_set_jaccard_with_reference'] = jaccard(moved_set(beta), moved_set(ref_beta))
    save()

def main():
    ap = argparse.ArgumentParser(); ap.add_argument('--parts', default='unmasked,masked', help='comma-separated: unmasked, masked (= masked-steps and masked-sample)')
    parts = ap.parse_args().parts.split(',')
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 1)))
    out = json.loads(OUT.read_text()) if 'unmasked' not in parts and OUT.exists() else {}
    save = lambda: atomic_write(OUT, dumps_json(out))
    ctx = setup()
    if 'unmasked' in parts: unmasked_part(out, save, *ctx)
    st, sa = 'masked' in parts or 'masked-steps' in parts, 'masked' in parts or 'masked-sample' in parts
    if st or sa: masked_part(out, save, *ctx, steps=st, sample=sa)
    print(dumps_json(out))

if __name__ == '__main__': main()

