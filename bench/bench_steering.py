"""Item 5, steering costs, each against what a user would do without our caching or solver (interleaved, median of 3, one thread):

- Readout, unmasked: ours `readout(model, layer_residuals(...), 'unmasked', sae, alpha)` runs only the blocks after layer 12
  from the cached layer-12 residuals; the alternative is a full steered forward from the inputs (`steer(model, sae, alpha)` +
  `predict_expression`). Cells/s of both, over the CD4 T (source) cells, alpha = the report's latent solution.
- Readout, masked-context: ours from the 4 cached masked residuals; the alternative 4 full steered forwards of the masked
  inputs (each gene read from the pass that masks it).
- Expression objective (the report's configuration, `ExprObjConfig()`, unmasked readout, top-100 genes by |mean readout
  difference| between CD8 T and CD4 T): the VJP gradient at alpha = 1 over `n_grad_cells` cells, the finite-difference
  Jacobians over `n_candidates` features on `n_jacobian_cells` cells, and one Gauss-Newton step (one evaluation of the steered
  outputs on the Jacobian cells + the exact trust-region Lasso of the linearised objective). Against it: one first-order
  (Adam-style) step on the same objective = one VJP through the blocks after layer 12 on the same Jacobian cells; the ratio
  says how many first-order steps one Gauss-Newton step costs.
- The final-layer variant (`final_layer_objective`, mean residual after the last block): the same three costs.
(The caches these use are the package's, built on first use: `layer_residuals` of the source and target cells.)

    python bench/bench_steering.py [--repeats 3]
"""
import _common as C
import argparse
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    a = ap.parse_args()
    import torch
    from cellsteer_nb.core import SOURCE, TARGET, CELL_TYPE_KEY
    from cellsteer_nb.model import model_inputs, predict_expression
    from cellsteer_nb.readout import layer_residuals, readout, masked_values
    from cellsteer_nb.steer import steer
    from cellsteer_nb.contrastive import fold_ids
    from cellsteer_nb.exprobj import (ExprObjConfig, OUTPUTS, cell_outputs, expression_objective, final_layer_objective, objective_gradients,
                                      fd_jacobians, linear_model, trust_step, spread_sample, pick_candidates)
    model, adata, sae = C.pipeline()
    model.eval(); sae.requires_grad_(False)
    P = C.steering_problem(adata, sae)
    alpha = 1 + P['fit'].beta
    labels = adata.obs[CELL_TYPE_KEY].astype(str).to_numpy()
    (vs, ds), (vt, dt) = model_inputs(adata[labels == SOURCE], model), model_inputs(adata[labels == TARGET], model)
    cfg = ExprObjConfig()
    res_s, res_t = layer_residuals(model, vs, ds, 12, cfg.n_masks, cfg.seed), layer_residuals(model, vt, dt, 12, cfg.n_masks, cfg.seed)
    n = len(vs)
    out = {'n_source_cells': n, 'n_target_cells': len(vt), 'threads': C.THREADS}

    # readouts
    def ours_unmasked(): return readout(model, res_s, 'unmasked', sae, alpha)
    def full_unmasked():
        with steer(model, sae, alpha): return predict_expression(model, vs, ds, desc=None).numpy()
    def ours_masked(): return readout(model, res_s, 'masked', sae, alpha)
    def full_masked():
        o = np.empty((n, vs.shape[1]), np.float32)
        with steer(model, sae, alpha):
            for mask in res_s['masks']:
                o[:, mask] = predict_expression(model, masked_values(vs, mask, model.config.mask_token_id), ds, desc=None).numpy()[:, mask]
        return o
    for name, ours, theirs in (('readout_unmasked', ours_unmasked, full_unmasked), ('readout_masked', ours_masked, full_masked)):
        r = C.interleaved(ours, theirs, a.repeats)
        diff = float(np.abs(r['last']['ours'] - r['last']['theirs']).max())
        out[name] = {**{k: v for k, v in r.items() if k != 'last'}, 'ours_cells_per_s': n / r['ours_median_s'],
                     'full_forward_cells_per_s': n / r['theirs_median_s'], 'max_abs_diff': diff}
        print(f"{name}: ours {n / r['ours_median_s']:.1f} cells/s, full forward {n / r['theirs_median_s']:.1f} cells/s, x{r['speedup']:.2f} (max |diff| {diff:.1e})", flush=True)

    # expression objective and final-layer variant
    kw = dict(kind=cfg.kind, layer=12)
    with torch.inference_mode():
        o_s = {k: v.double().numpy() for k, v in cell_outputs(model, sae, res_s, np.arange(n), None, OUTPUTS, batch_size=cfg.batch_size, **kw).items()}
        o_t = {k: v.double().numpy() for k, v in cell_outputs(model, sae, res_t, np.arange(len(vt)), None, OUTPUTS, batch_size=cfg.batch_size, **kw).items()}
    genes = np.argsort(-np.abs(o_t['readout'].mean(0) - o_s['readout'].mean(0)), kind='stable')[:100]
    objs = {'expression': expression_objective(o_s['readout'], o_t['readout'], genes), 'final_layer': final_layer_objective(o_t['final'])}
    folds = fold_ids(n, cfg.n_folds, cfg.seed)
    src = np.arange(n)
    grad_cells = spread_sample(folds, cfg.n_grad_cells, cfg.seed + 1)
    S = spread_sample(folds, cfg.n_jacobian_cells, cfg.seed)
    latent_beta = P['fit'].beta
    p = sae.cfg.d_sae
    for name, obj in objs.items():
        O = obj.select(o_s)
        g = objective_gradients(model, sae, res_s, src, [obj], [O], grad_cells, **kw)[0]
        lam = 0.01 * np.abs(g).max()
        cand = pick_candidates(g, latent_beta, cfg.n_candidates)
        J, _ = fd_jacobians(model, sae, res_s, S, cand, [obj], cfg.fd_step, batch_size=cfg.batch_size, **kw)
        J = J[0]
        def gn_step():
            terms, _ = linear_model(obj, O, O[S], O[S], J, np.zeros(len(cand)))
            new, _ = trust_step(terms, lam, np.zeros(len(cand)), cfg.radius)
            B = np.zeros(p, np.float32); B[cand] = new
            with torch.inference_mode():
                cell_outputs(model, sae, res_s, S, torch.as_tensor(B).expand(len(S), p), (obj.what,), batch_size=cfg.batch_size, **kw)
            return new
        def first_order_step():  # one VJP through the blocks after layer 12 on the same cells: an Adam step's cost
            return objective_gradients(model, sae, res_s, S, [obj], [O[S]], None, **kw)
        gn_step()  # numba JIT outside the timings
        r = C.interleaved(gn_step, first_order_step, a.repeats)
        t_grad = [C.timed(objective_gradients, model, sae, res_s, src, [obj], [O], grad_cells, **kw)[1] for _ in range(a.repeats)]
        t_jac = [C.timed(fd_jacobians, model, sae, res_s, S, cand, [obj], cfg.fd_step, batch_size=cfg.batch_size, **kw)[1]]  # once: ~1 min
        out[name] = {'gauss_newton_step_s': r['ours_median_s'], 'first_order_step_s': r['theirs_median_s'],
                     'gn_step_over_first_order_step': r['ours_median_s'] / r['theirs_median_s'], 'ratios_first_order_over_gn': r['ratios'],
                     'gradient_s': C.median(t_grad), 'gradient_cells': len(grad_cells), 'jacobian_s': C.median(t_jac),
                     'jacobian_cells': len(S), 'candidates': len(cand), 'jacobian_passes_per_cell': len(cand) + 1}
        print(f"{name}: GN step {r['ours_median_s']:.2f} s, first-order step {r['theirs_median_s']:.2f} s; gradient {C.median(t_grad):.2f} s "
              f"({len(grad_cells)} cells), Jacobians {C.median(t_jac):.2f} s ({len(S)} cells x {len(cand) + 1} passes)", flush=True)
    C.save_results('steering', out, {'readout_unmasked_cells_per_s': out['readout_unmasked']['ours_cells_per_s'],
                                     'readout_masked_cells_per_s': out['readout_masked']['ours_cells_per_s'],
                                     'readout_unmasked_speedup_vs_full_forward': out['readout_unmasked']['speedup'],
                                     'readout_masked_speedup_vs_full_forward': out['readout_masked']['speedup'],
                                     'exprobj_gn_step_s': out['expression']['gauss_newton_step_s'],
                                     'final_layer_gn_step_s': out['final_layer']['gauss_newton_step_s']})


if __name__ == '__main__':
    main()
