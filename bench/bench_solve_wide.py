"""Item 1b, the steering solve at the seed's width: one solve and the 40-lambda path at p = 5,120 (the real wide SAE when
`make sae-wide` has made it, the synthetic Gram of `bench_solve.synthetic` otherwise), the solve time over p = 512 ... 16,384
(synthetic), and the whole latent step with the wide SAE on 2 cores.

- One solve: `solve_lasso(tol=1e-6)` from beta = 0 at the report's lambda / lambda_max (reports/cd4_steering.json); the Gram's
  formation is timed apart. Every row is certified on the full problem: relative duality gap and KKT violation / lambda.
- Path: `lasso_path` on the CV's grid (40 lambdas down to 1e-3 lambda_max, warm starts, tol 1e-9) against scikit-learn's
  `lasso_path` on the stacked design with the same Gram and X'y precomputed (tol 1e-10), interleaved, median of the repeats;
  and against skglm's and celer's `Lasso` (warm starts along the same grid, tol 1e-10) on the stacked design, one run each
  beside one of ours, when they are installed (`make bench` installs them, --no-deps). Every path's largest gap and KKT
  violation are ours, computed at the end.
- Scaling: least-squares slope of log seconds on log p over the synthetic sizes.
- Latent step: the report's `latent.latent_step` (CV, 20 matched random-feature draws, wrong targets, reverse, the Adam
  comparison) and `steering_options` (every option, 'only GO-annotated features free' with the wide SAE's GO annotation,
  computed or read from the cache before the timing) with the wide SAE's feature means, 2 threads, in a child process,
  the step's disk cache bypassed; certified like the rows above (its solution's and every fold's gap, its KKT violation).

- The p = 16,384 headline: one solve on the real 16,384-feature SAE's Gram (`make sae-wide SAE_WIDE_EXPANSIONS=256`) when it is
  in the cache (`--only-real16k` measures just that row), the synthetic row otherwise.

    python bench/bench_solve_wide.py [--repeats 3] [--max-p 16384] [--sae DIR] [--sae16k DIR] [--only-real16k]
"""
import _common as C
import argparse, json, os, sys, time
import numpy as np


def certify(terms, beta, lam, w=None):
    "(relative duality gap, KKT violation / lam) of beta on the full problem."
    from cellsteer_nb.contrastive import duality_gap, kkt_violation
    return duality_gap(terms, beta, lam, w), kkt_violation(terms, beta, lam, w) / lam


def one_solve(terms, lam, repeats):
    from cellsteer_nb.contrastive import solve_lasso
    ts = []
    for _ in range(repeats):
        (b, info), t = C.timed(solve_lasso, terms, lam, tol=1e-6); ts.append(t)
    gap, kkt = certify(terms, b, lam)
    return {'seconds': ts, 'median_s': C.median(ts), 'gap': gap, 'kkt_over_lambda': kkt, 'n_nonzero': int((b != 0).sum()),
            'outer': info['outer'], 'sweeps': info['sweeps'], 'ws_size': info['ws_size'], 'n_screened': int(info['screened'].sum()),
            'n_free': info['n_free'], 'certified': bool(gap <= 1e-6 and kkt <= 1e-3)}


def paths(terms, X, y, lams, repeats, save=lambda out: None):
    "Ours against scikit-learn (interleaved), skglm and celer (one run each beside ours) on the same grid; each certified by our gap; `save(out)` after each."
    from cellsteer_nb.contrastive import lasso_path
    from sklearn.linear_model import lasso_path as sk_lasso_path
    N = X.shape[0]
    alphas = lams / (2 * N)
    def ours(): return lasso_path(terms, lams).betas
    def sk(): return sk_lasso_path(X, y, alphas=alphas, tol=1e-10, max_iter=100_000, precompute=terms.G, Xy=-terms.c)[1].T
    def warm(cls):
        def run():
            m, out = cls(alpha=alphas[0], fit_intercept=False, tol=1e-10, max_iter=100_000, warm_start=True), []
            for a in alphas: m.set_params(alpha=a); m.fit(X, y); out.append(m.coef_.copy())
            return np.array(out)
        return run
    def cert(B): return {'max_gap': max(certify(terms, b, l)[0] for b, l in zip(B, lams)), 'max_kkt_over_lambda': max(certify(terms, b, l)[1] for b, l in zip(B, lams))}
    res = C.interleaved(ours, sk, repeats)
    out = {'sklearn': {k: v for k, v in res.items() if k != 'last'} | {'ours': cert(res['last']['ours']), 'theirs': cert(res['last']['theirs']),
                                                                      'max_abs_beta_diff': float(np.abs(res['last']['ours'] - res['last']['theirs']).max())},
           'design_mib': X.nbytes / 2 ** 20, 'skglm': {'skipped': 'not run yet'}, 'celer': {'skipped': 'not run yet'}}
    save(out)
    for name, mod in (('skglm', 'skglm'), ('celer', 'celer')):
        try: cls = __import__(mod).Lasso
        except ImportError: out[name] = {'skipped': f'{mod} not installed'}; continue
        warm(cls)()   # compile (skglm: numba) outside the timing
        r = C.interleaved(ours, warm(cls), 1)
        out[name] = {k: v for k, v in r.items() if k != 'last'} | {'theirs': cert(r['last']['theirs']), 'version': __import__(mod).__version__}
        save(out)
    return out


def wide_terms(sae_dir):
    "(terms, Gram seconds, (Z, F, W, mu), (adata, sae, model)): the report's CD4 T -> CD8 T problem with the SAE in `sae_dir` (feature means from the cache)."
    from cellsteer_nb.sae import load_sae, sae_metadata
    from cellsteer_nb.features import feature_means
    from cellsteer_nb.latent import SteeringConfig, steering_inputs
    from cellsteer_nb.contrastive import lasso_terms
    model, adata, _ = C.pipeline()
    sae = load_sae(sae_dir, expect=sae_metadata())
    feature_means(adata, model, sae)
    cfg = SteeringConfig()
    labels, Z, F, W, cen, _ = steering_inputs(adata, sae.W_dec.detach().numpy())
    src = labels == cfg.source
    t0 = time.perf_counter(); terms = lasso_terms(Z[src], F[src], W, cen[cfg.target]); gram_s = time.perf_counter() - t0
    return terms, gram_s, (Z[src], F[src], W, cen[cfg.target]), (adata, sae, model)


def latent_child(sae_dir):
    "Time the report's latent step and the options with the wide SAE (threads as set by the parent); prints one JSON line."
    from cellsteer_nb.annotate import annotation_step
    from cellsteer_nb.latent import SteeringConfig, OPTIONS, steering_inputs, _latent, _option_rows
    _, _, _, (adata, sae, model) = wide_terms(sae_dir)
    features = annotation_step(adata, model, sae).table   # the GO step's table (for 'only GO-annotated features free'), not timed
    inputs = steering_inputs(adata, sae.W_dec.detach().numpy())
    cfg = SteeringConfig()   # the report's: 20 matched random-feature draws, 2,000 bootstraps, the Adam comparison
    # the step's bodies, not their disk caches: computed here, whatever an earlier run left
    t0 = time.perf_counter(); res = _latent(*inputs, features, cfg, None); t_lat = time.perf_counter() - t0
    t0 = time.perf_counter(); rows = _option_rows(*inputs, features, cfg, OPTIONS); t_opt = time.perf_counter() - t0
    s = res.steering
    gap, kkt, fold_gap = s['duality_gap_relative'], s['kkt_violation_relative'], s['max_fold_duality_gap_relative']
    print(json.dumps({'latent_s': t_lat, 'options_s': t_opt, 'total_s': t_lat + t_opt, 'adam_s': res.timings['adam_s'], 'solve_s': res.timings['solve_s'],
                      'threads': int(os.environ.get('OMP_NUM_THREADS', 0)), 'p': inputs[3].shape[0],
                      'n_live': int((inputs[2][inputs[0] == cfg.source] != 0).any(0).sum()),
                      'n_moved': s['n_moved_features'], 'lambda': s['lambda'], 'gap': gap, 'kkt_over_lambda': kkt, 'max_fold_gap': fold_gap,
                      'certified': bool(max(gap, fold_gap) <= 1e-6 and kkt <= 1e-3), 'adam_excess': s['adam_objective_relative_excess'],
                      'adam_epochs': s['adam_epochs'], 'fraction_closer_heldout': s['fraction_closer_heldout'], 'options': [r['option'] for r in rows]}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--max-p', type=int, default=16384)
    ap.add_argument('--sae', default=None, help='the wide SAE (default: make sae-wide\'s x80 in the cache, if there)')
    ap.add_argument('--sae16k', default=None, help='the 16,384-feature SAE of the p = 16,384 real row (default: make sae-wide\'s x256 in the cache, if there)')
    ap.add_argument('--only-real16k', action='store_true', help='measure only the real p = 16,384 row (the rest of the section kept)')
    ap.add_argument('--latent-child', default=None, help=argparse.SUPPRESS)
    ap.add_argument('--skip-latent', action='store_true')
    ap.add_argument('--latent-from', default=None, help='the JSON line of a --latent-child run of this script (with --skip-latent)')
    a = ap.parse_args()
    if a.latent_child: return latent_child(a.latent_child)
    from cellsteer_nb.core import cache_dir
    from cellsteer_nb.contrastive import lambda_max, lambda_grid, stacked_design, solve_lasso, lasso_terms
    from bench_solve import synthetic, synthetic_inputs
    sae_dir = a.sae or str(cache_dir() / 'sae_wide' / 'sae_l12_x80')
    have_wide = os.path.exists(os.path.join(sae_dir, 'cfg.json'))
    rep = json.loads((C.ROOT/'reports'/'cd4_steering.json').read_text())['steering']
    ratio = rep['lambda'] / rep['lambda_max']
    model, adata, sae = C.pipeline()
    from cellsteer_nb.latent import SteeringConfig, steering_inputs
    cfg = SteeringConfig()
    labels, Z, F, W, cen, _ = steering_inputs(adata, sae.W_dec.detach().numpy())
    src = labels == cfg.source
    base = (Z[src], F[src], W, cen[cfg.target])
    solve_lasso(synthetic(*base, 512), 1.0, tol=1e-3)   # numba JIT outside the timings
    out = {'lambda_over_lambda_max': ratio, 'wide_sae': sae_dir if have_wide else None}
    def save(): C.save_results('solve_wide', out, headline(out))
    sae16k = a.sae16k or str(cache_dir() / 'sae_wide' / 'sae_l12_x256')
    if a.only_real16k:
        out = {**C.load_results()['sections']['solve_wide'], 'real16k': real_row(sae16k, ratio, 1)[0]}; out.pop('measured_at', None); save(); return
    if os.path.exists(os.path.join(sae16k, 'cfg.json')): out['real16k'] = real_row(sae16k, ratio, 1)[0]
    # 1. scaling over synthetic sizes
    rows = []
    for q in [x for x in (512, 1024, 2048, 4096, 5120, 8192, 16384) if x <= a.max_p]:
        t0 = time.perf_counter(); syn = synthetic(*base, q); gram_s = time.perf_counter() - t0
        lam = ratio * lambda_max(syn)
        row = {'p': q, 'gram_s': gram_s, 'lambda': lam, **one_solve(syn, lam, a.repeats if q <= 5120 else 1)}
        rows.append(row); del syn
        print(f"synthetic p={q}: {row['median_s']:.3f} s (Gram {gram_s:.1f} s), gap {row['gap']:.1e}, KKT {row['kkt_over_lambda']:.1e} lam, "
              f"{row['n_nonzero']} non-zero, ws {row['ws_size']}, screened {row['n_screened']}, {row['outer']} passes", flush=True)
    lp, lt = np.log([r['p'] for r in rows]), np.log([r['median_s'] for r in rows])
    out['scaling'] = {'rows': rows, 'exponent': float(np.polyfit(lp, lt, 1)[0]), 'p_range': [rows[0]['p'], rows[-1]['p']]}
    save()
    # 2. the real wide SAE: one solve and the path
    if have_wide:
        out['real'], terms, args = real_row(sae_dir, ratio, a.repeats)
        save()
    else:
        args = synthetic_inputs(*base, 5120)
        terms = lasso_terms(*args)
    X, y = stacked_design(*args)
    lams = lambda_grid(lambda_max(terms), cfg.n_lams, cfg.eps)
    out['path'] = {'p': len(terms.c), 'problem': 'real wide SAE' if have_wide else 'synthetic', 'n_lambdas': len(lams)}
    out['path'].update(paths(terms, X, y, lams, a.repeats, lambda r: (out['path'].update(r), save())))
    pa = out['path']
    print(f"path p={len(terms.c)}: ours {pa['sklearn']['ours_median_s']:.2f} s, sklearn {pa['sklearn']['theirs_median_s']:.2f} s (x{pa['sklearn']['speedup']:.2f}); "
          + '; '.join(f"{k} x{pa[k]['speedup']:.2f}" for k in ('skglm', 'celer') if 'speedup' in pa[k]), flush=True)
    del X, terms
    # 3. the whole latent step, 2 threads
    if have_wide and not a.skip_latent:
        env = {**os.environ, **{v: '2' for v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'NUMBA_NUM_THREADS')}}
        out['latent'] = C.run_child([__file__, '--latent-child', sae_dir], env=env)
        print(f"latent step p={out['latent']['p']}: {out['latent']['total_s']:.0f} s", flush=True)
    if a.latent_from: out['latent'] = json.loads(open(a.latent_from).read().strip().splitlines()[-1])
    save()


def real_row(sae_dir, ratio, repeats) -> tuple:
    "(row, terms, (Z, F, W, mu)): certified solves on the Gram of the SAE in `sae_dir` at the report's lambda / lambda_max, and that problem."
    from cellsteer_nb.contrastive import lambda_max
    terms, gram_s, args, _ = wide_terms(sae_dir)
    lam = ratio * lambda_max(terms)
    row = {'sae': sae_dir, 'p': len(terms.c), 'gram_s': gram_s, 'lambda': lam, **one_solve(terms, lam, repeats)}
    print(f"real p={row['p']}: {row['median_s']:.3f} s, gap {row['gap']:.1e}, KKT {row['kkt_over_lambda']:.1e} lam, {row['n_nonzero']} non-zero", flush=True)
    return row, terms, args


def headline(out) -> dict:
    "The top-level keys of results.json that item 1b sets (None where not measured yet); p = 16,384: the real SAE's row when measured."
    rows, pa = out.get('scaling', {}).get('rows', []), out.get('path', {})
    s5 = out.get('real') or next((r for r in rows if r['p'] == 5120), {})
    s16 = out.get('real16k') or next((r for r in rows if r['p'] == 16384), {})
    return {'solve_s_p5120': s5.get('median_s'), 'solve_s_p16384': s16.get('median_s'),
            'path_speedup_vs_sklearn_p5120': pa.get('sklearn', {}).get('speedup'),
            'path_speedup_vs_skglm_p5120': pa.get('skglm', {}).get('speedup'), 'path_speedup_vs_celer_p5120': pa.get('celer', {}).get('speedup'),
            'solve_scaling_exponent': out.get('scaling', {}).get('exponent'), 'latent_step_s_p5120': out.get('latent', {}).get('total_s')}


if __name__ == '__main__':
    main()
