"""Reference run for `cellsteer_nb.exprobj`: the all-cell fits of the expression objective and the final-layer latent objective
with every source cell measured exactly (no sample), more candidates and many more Gauss–Newton steps, against the reduced
configuration the report runs; and the speed–accuracy trade-off of reduced configurations. Writes
reports/expression_objective_full.json (rewritten after each part). Run: `OMP_NUM_THREADS=1 python tools/expression_objective_full.py`."""
import json, os, sys, time
from dataclasses import asdict
from pathlib import Path
import numpy as np, pandas as pd, torch
from cellsteer_nb.core import DEFAULT_CHECKPOINT, SOURCE, TARGET, atomic_write, dumps_json
from cellsteer_nb.data import load_pbmc68k, align_to_panel
from cellsteer_nb.model import load_checkpoint, model_inputs
from cellsteer_nb.hooks import embed_cells
from cellsteer_nb.sae import DEFAULT_SAE, load_sae, sae_metadata
from cellsteer_nb.features import feature_means
from cellsteer_nb.latent import steering_inputs, moved_set, jaccard, SteeringConfig, steer_toward
from cellsteer_nb.readout import layer_residuals
from cellsteer_nb.steer import embedding_shift
from cellsteer_nb.contrastive import fold_ids
from cellsteer_nb.expression import reference_de
from cellsteer_nb.exprobj import (ExprObjConfig, expression_objective_step, expression_objective, final_layer_objective, cell_outputs,
                                  objective_gradients, pick_candidates, spread_sample, fd_jacobians, gauss_newton, _cos)

OUT = Path(os.environ.get('EXPROBJ_FULL_OUT', Path(__file__).resolve().parents[1]/'reports'/'expression_objective_full.json'))
SMOKE = bool(os.environ.get('EXPROBJ_SMOKE'))  # a quick check of the script itself
REF = dict(n_candidates=4 if SMOKE else 64, max_iter=1 if SMOKE else 30, tol=1e-6)
TRADEOFF = [dict(n_candidates=4, n_jacobian_cells=4, max_iter=1)] if SMOKE else [
    dict(n_candidates=24, n_jacobian_cells=8, max_iter=4), dict(n_candidates=48, n_jacobian_cells=16, max_iter=8),
    dict(n_candidates=48, n_jacobian_cells=32, max_iter=16)]

def main():
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', 1)))
    out = {'reference_config': REF, 'notes': 'all-cell fits (no cross-fitting); objective = fit + lambda ||alpha - 1||_1 measured exactly on every source cell'}
    save = lambda: atomic_write(OUT, dumps_json(out))
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    sae = load_sae(DEFAULT_SAE, expect=sae_metadata()).requires_grad_(False)
    adata = align_to_panel(load_pbmc68k(), genes)
    embed_cells(adata, model); feature_means(adata, model, sae)
    labels, Z, F, W, cen, _ = steering_inputs(adata, sae.W_dec.detach().numpy())
    src = labels == SOURCE
    lat = steer_toward(Z[src], F[src], W, cen[TARGET], SteeringConfig())
    lam_rel, latent_beta = lat.cv.lambda_1se / lat.cv.lams[0], lat.beta
    top = np.argsort(-np.abs(reference_de(adata).effect.to_numpy()), kind='stable')[:100]
    cfg = ExprObjConfig()
    t0 = time.perf_counter(); red = expression_objective_step(adata, model, sae, top, 1 + latent_beta, lam_rel, cfg)
    out['reduced'] = {**red.to_json(), 'config': asdict(cfg), 'wall_s_including_cache': time.perf_counter() - t0}
    save()
    vs, ds = model_inputs(adata[src], model)
    res_s = layer_residuals(model, vs, ds, sae.cfg.hook_layer, cfg.n_masks, cfg.seed)
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
    print(dumps_json(out))

if __name__ == '__main__': main()
