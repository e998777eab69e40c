"""Item 1, contrastive solve: our exact solver against Adam on the same objective (as the seed ran it), our regularisation
path against scikit-learn's `lasso_path`, and our solve time as the number of features grows (synthetic Gram matrices).

Objective: the report's CD4 T -> CD8 T Lasso (`latent_step` defaults): P(beta) = mean_i ||z_i(beta) - mu||^2 + lam sum_j w_j|beta_j|,
lam = the CV's lambda_1se, w = 1 ('l1'), all features free, beta = alpha - 1.
- Ours: `solve_lasso(..., tol=1e-6)` from beta = 0 (relative duality gap <= 1e-6); numba compiled before timing.
- Adam: alpha initialised at 1, lr 0.01, full batch, float64, exactly `adam_baseline`'s loss (torch, 1 thread); timed until
  its objective comes within 1e-4 (relative) of P* (P* = our solution at tol 1e-10), capped at min(100 x our time, 20,000 steps).
- Path: `lasso_path` on the CV's 40-lambda grid (warm starts, tol 1e-9) against `sklearn.linear_model.lasso_path` on the
  stacked design (alpha = lam / (2 N), columns / w, its Gram precomputed, tol 1e-10), same grid; both solutions' duality gaps reported.
- Scaling: p = 512 ... 8192 synthetic SAE features built like ours (`synthetic`: our decoder rows resampled with noise, each with
  its feature's per-cell means, G = (W W') * (F'F / n) on our source cells); the Gram spectrum's power-law exponent is
  reported next to ours. lam at our lam / lam_max. Time of `solve_lasso(tol=1e-6)` from beta = 0 (median of the repeats up to
  p = 2048, one run at 4096); at 8192 (above --full-p) extrapolated: measured seconds a sweep (20 sweeps) x the sweeps the
  power law of the solved sizes predicts. The growth exponent is the least-squares slope of log t on log p (solved sizes).
  Also: Adam run uncapped to 20,000 steps once (where it gets).
Interleaved, median of 3 repeats, one thread.

    python bench/bench_solve.py [--repeats 3] [--max-p 8192]
"""
import _common as C
import argparse, inspect, time
import numpy as np


def adam_until(terms, lam, w, p_star, rel=1e-4, lr=0.01, max_steps=20_000, max_seconds=None):
    "The seed's Adam on exactly `adam_baseline`'s loss, stopped within `rel` of `p_star` or at the cap: dict."
    import torch
    p = len(terms.c)
    G, c, wt = torch.from_numpy(terms.G), torch.from_numpy(terms.c), torch.from_numpy(np.asarray(w, np.float64))
    alpha = torch.ones(p, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([alpha], lr=lr)
    target = p_star + rel * abs(p_star)
    t0, best, reached = time.perf_counter(), np.inf, False
    for step in range(max_steps + 1):
        beta = alpha - 1
        loss = beta @ (G @ beta) + 2 * c @ beta + lam * (wt * beta.abs()).sum()
        obj = loss.item() + terms.const   # P of the current iterate (LassoTerms.fit adds const)
        best = min(best, obj)
        if obj <= target: reached = True; break
        if step == max_steps or (max_seconds is not None and time.perf_counter() - t0 > max_seconds): break
        opt.zero_grad(); loss.backward(); opt.step()
    s = time.perf_counter() - t0
    return {'seconds': s, 'steps': step, 'reached': reached, 'objective': obj, 'best_objective': best,
            'relative_gap_to_optimum': (obj - p_star) / abs(p_star), 'best_relative_gap': (best - p_star) / abs(p_star)}


def power_law(eigs, top=0.9):
    "Exponent b of eigenvalue_i ~ i^-b, fitted (log-log least squares) over the largest `top` share of the nonzero eigenvalues."
    e = np.sort(eigs[eigs > 1e-12 * eigs.max()])[::-1]
    e = e[:max(2, int(top * len(e)))]
    return float(-np.polyfit(np.log(np.arange(1, len(e) + 1)), np.log(e), 1)[0])


def synthetic_inputs(Zs, Fs, W, mu, p, seed=0, noise=0.3):
    """(Z, F, W, mu) of a synthetic SAE of p features built like ours: decoder rows are our rows resampled with replacement plus
    N(0, noise^2) per coordinate (renormalised to unit length), each with its source feature's per-cell means; our cells and target."""
    rng = np.random.default_rng(seed)
    alive = np.flatnonzero(Fs.any(0))
    pick = rng.choice(alive, p, replace=True)
    Wq = W[pick] + noise * rng.standard_normal((p, W.shape[1])) / np.sqrt(W.shape[1])
    Wq /= np.linalg.norm(Wq, axis=1, keepdims=True)
    return Zs, Fs[:, pick], Wq, mu


def synthetic(Zs, Fs, W, mu, p, seed=0, noise=0.3):
    """LassoTerms of `synthetic_inputs`: G = (W W') * (F'F / n), c from our cells and target, as `lasso_terms` does. Its Gram
    spectrum keeps our spectrum's shape (power-law exponents reported)."""
    from cellsteer_nb.contrastive import lasso_terms
    return lasso_terms(*synthetic_inputs(Zs, Fs, W, mu, p, seed, noise))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--max-p', type=int, default=8192)
    ap.add_argument('--full-p', type=int, default=4096, help='largest p solved to the end; above it the time is extrapolated')
    a = ap.parse_args()
    from cellsteer_nb.contrastive import solve_lasso, primal, duality_gap, lasso_path, stacked_design, lambda_max
    model, adata, sae = C.pipeline()
    P = C.steering_problem(adata, sae)
    terms, lam, w, free = P['terms'], P['lam'], P['weights'], P['free']
    p = len(terms.c)
    solve_lasso(terms, lam, w, free, tol=1e-6)  # numba JIT outside the timings
    b_star, info_star = solve_lasso(terms, lam, w, free, tol=1e-10)
    p_star = primal(terms, b_star, lam, w)
    out = {'p': p, 'n_source_cells': terms.n, 'lambda': lam, 'lambda_over_lambda_max': lam / lambda_max(terms, w, free),
           'optimum_objective': p_star, 'optimum_gap': info_star['gap'], 'n_nonzero': int((b_star != 0).sum())}

    # 1a. ours vs Adam, interleaved
    rows = []
    for r in range(a.repeats):
        def ours():
            b, info = solve_lasso(terms, lam, w, free, tol=1e-6); return b, info
        (b, info), t_ours = C.timed(ours)
        cap_s = 100 * t_ours
        adam = adam_until(terms, lam, w, p_star, max_seconds=cap_s)
        rows.append({'ours_s': t_ours, 'ours_gap': info['gap'], 'ours_sweeps': info['sweeps'],
                     'ours_rel_excess': (primal(terms, b, lam, w) - p_star) / abs(p_star), 'cap_s': cap_s, **{f'adam_{k}': v for k, v in adam.items()}})
        print(f"repeat {r}: ours {t_ours*1e3:.1f} ms (gap {info['gap']:.1e}); Adam {adam['seconds']:.2f} s, {adam['steps']} steps, "
              f"reached={adam['reached']}, rel gap {adam['relative_gap_to_optimum']:.2e}", flush=True)
    ratios = [r['adam_seconds'] / r['ours_s'] for r in rows]
    full = adam_until(terms, lam, w, p_star)  # no time cap: where Adam is after (up to) 20,000 steps
    print(f"Adam uncapped: {full['steps']} steps, {full['seconds']:.1f} s, reached={full['reached']}, rel gap {full['relative_gap_to_optimum']:.2e}", flush=True)
    reached = all(r['adam_reached'] for r in rows)
    out['adam'] = {'repeats': rows, 'ratios': ratios, 'speedup': C.median(ratios), 'all_reached': reached,
                   'speedup_is_lower_bound': not reached, 'to_20000_steps': full, 'lr': 0.01, 'rel_tol': 1e-4, 'max_steps': 20_000, 'cap_multiple': 100}

    # 1b. regularisation path: ours vs scikit-learn
    from sklearn.linear_model import lasso_path as sk_lasso_path
    lams = P['fit'].cv.lams
    X, y = stacked_design(P['Zs'], P['Fs'], P['W'], P['mu_t'])
    N = X.shape[0]
    Xw = X / w
    def ours_path(): return lasso_path(terms, lams, weights=w, free=free)
    def sk_path():
        _, coefs, _ = sk_lasso_path(Xw, y, alphas=lams / (2 * N), tol=1e-10, max_iter=100_000, precompute=True)
        return coefs.T / w
    res = C.interleaved(ours_path, sk_path, a.repeats)
    pth, skB = res['last']['ours'], res['last']['theirs']
    sk_gaps = [duality_gap(terms, skB[i], l, w, free) for i, l in enumerate(lams)]
    out['path'] = {k: v for k, v in res.items() if k != 'last'}
    out['path'].update(n_lambdas=len(lams), ours_max_gap=float(np.max(pth.gaps)), sklearn_max_gap=float(np.max(sk_gaps)),
                       sklearn_design_rows=N, max_abs_beta_diff=float(np.abs(pth.betas - skB).max()))
    print(f"path: ours {res['ours_median_s']:.2f} s, sklearn {res['theirs_median_s']:.2f} s, x{res['speedup']:.1f}", flush=True)

    # 1c. scaling in p
    spectrum = np.linalg.eigvalsh(terms.G)
    ratio = out['lambda_over_lambda_max']
    scale = []
    pp = [q for q in (512, 1024, 2048, 4096, 8192) if q <= a.max_p]
    for q in pp:
        t0 = time.perf_counter(); syn = synthetic(P['Zs'], P['Fs'], P['W'], P['mu_t'], q); t_build = time.perf_counter() - t0
        lam_q = ratio * lambda_max(syn)
        (_, inf20), t20 = C.timed(solve_lasso, syn, lam_q, tol=1e-300, max_sweeps=20)   # seconds a sweep (incl. its checks)
        row = {'p': q, 'build_s': t_build, 'seconds_per_sweep': t20 / 20}
        if q <= a.full_p:
            ts, infos = [], []
            for r in range(a.repeats if q <= 2048 else 1):
                (bq, inf), t = C.timed(solve_lasso, syn, lam_q, tol=1e-6, max_sweeps=50_000)
                ts.append(t); infos.append(inf)
            row.update(seconds=ts, median_s=C.median(ts), gap=infos[-1]['gap'], converged=infos[-1]['converged'], sweeps=infos[-1]['sweeps'],
                       n_nonzero=int((bq != 0).sum()), extrapolated=False,
                       spectrum_power_law_exponent=power_law(np.linalg.eigvalsh(syn.G)) if q <= 2048 else None)
        else:   # sweeps needed from the power law of the measured sizes, times the measured seconds a sweep
            done = [x for x in scale if not x['extrapolated']]
            k, b0 = np.polyfit(np.log([x['p'] for x in done]), np.log([x['sweeps'] for x in done]), 1)
            sweeps = float(np.exp(b0) * q ** k)
            row.update(median_s=sweeps * row['seconds_per_sweep'], sweeps=sweeps, extrapolated=True, sweeps_exponent=float(k))
        scale.append(row)
        print(f"p={q}: {row['median_s']:.2f} s{' (extrapolated)' if row['extrapolated'] else ''}, {row['sweeps']:.0f} sweeps, {row['seconds_per_sweep']*1e3:.2f} ms a sweep", flush=True)
        del syn
    meas = [x for x in scale if not x['extrapolated']]
    lp, lt = np.log([x['p'] for x in meas]), np.log([x['median_s'] for x in meas])
    ls = np.log([x['seconds_per_sweep'] for x in scale])
    out['scaling'] = {'rows': scale, 'exponent': float(np.polyfit(lp, lt, 1)[0]) if len(meas) > 1 else None,
                      'sweep_time_exponent': float(np.polyfit(np.log([x['p'] for x in scale]), ls, 1)[0]) if len(scale) > 1 else None,
                      'sweeps_exponent': float(np.polyfit(lp, np.log([x['sweeps'] for x in meas]), 1)[0]) if len(meas) > 1 else None,
                      'ours_spectrum_power_law_exponent': power_law(spectrum), 'lambda_over_lambda_max': ratio,
                      **{k: inspect.signature(solve_lasso).parameters[k].default for k in ('check_every', 'anderson')},
                      'repeats_note': 'median of the repeats for p <= 2048, one run at 4096, extrapolated above --full-p'}
    C.save_results('solve', out, {'solve_speedup': out['adam']['speedup'], 'solve_speedup_lower_bound': not reached,
                                  'path_speedup_vs_sklearn': out['path']['speedup'], 'solve_scaling_exponent': out['scaling']['exponent']})


if __name__ == '__main__':
    main()
