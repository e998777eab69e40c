"""The working-set solver (`contrastive.solve_lasso`) against the full-sweep solver it replaced (frozen below as it was at
5ca4ca2) and scikit-learn, on the bundled CD4 T -> CD8 T problem and a random p = 2,000 problem: same beta to 1e-8."""
import time
import numpy as np
import pytest
from cellsteer_nb.contrastive import (_anderson, _cd_sweeps, _weights, duality_gap, kkt_violation, lambda_max, lasso_terms,
                                      primal, sklearn_reference, solve_lasso, stacked_design, working_set)


def old_solve_lasso(terms, lam, weights=None, free=None, nonneg_alpha=False, beta0=None, tol=1e-9, max_sweeps=100_000,
                    check_every=10, anderson=5):
    "The previous solver (5ca4ca2), verbatim but for the KKT line: coordinate descent over every free feature with Anderson steps."
    p = len(terms.c)
    w, work = _weights(weights, p), working_set(terms, free)
    lo = np.full(p, -1.0 if nonneg_alpha else -np.inf)
    beta = np.zeros(p) if beta0 is None else np.maximum(np.where(work, beta0, 0.0), lo)
    G, idx, thr = np.ascontiguousarray(terms.G), np.flatnonzero(work), lam * w / 2
    t0, sweeps, xs = time.perf_counter(), 0, [beta.copy()]
    while True:
        if sweeps % check_every == 0:
            gap = duality_gap(terms, beta, lam, w, work, nonneg_alpha)
            if gap <= tol or sweeps >= max_sweeps: break
            q = G @ beta + terms.c
        _cd_sweeps(G, q, beta, thr, lo, idx, 1); sweeps += 1
        xs.append(beta.copy())
        if len(xs) > anderson:
            ex = _anderson(xs, lo)
            if ex is not None and primal(terms, ex, lam, w) < primal(terms, beta, lam, w): beta, q = ex, G @ ex + terms.c
            xs = [beta.copy()]
    return beta, {'gap': gap, 'sweeps': sweeps, 'seconds': time.perf_counter() - t0}


def random_problem(p=2000, n=60, d=32, seed=0):
    "(Z, F, W, mu): random cells, sparse feature means and unit decoder rows, built like the steering problem."
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(p, d)); W /= np.linalg.norm(W, axis=1, keepdims=True)
    F = rng.exponential(size=(n, p)) * (rng.random((n, p)) < 0.1)
    return rng.normal(size=(n, d)), F, W, rng.normal(size=d)


def agree(terms, lam, **kw):
    new, info = solve_lasso(terms, lam, tol=1e-12, **kw)
    old, oinfo = old_solve_lasso(terms, lam, tol=1e-12, **kw)
    assert info["gap"] <= 1e-12 and info["kkt"] <= 1e-6 * lam
    assert np.abs(new - old).max() <= 1e-8, np.abs(new - old).max()
    return new, info, oinfo


@pytest.mark.parametrize('frac', [0.2, 0.05])
def test_random_p2000_agrees_with_the_old_solver(frac):
    terms = lasso_terms(*random_problem())
    new, info, oinfo = agree(terms, frac * lambda_max(terms))
    assert info['outer'] > 1 and info['screened'].sum() > 0   # the working sets and the screening did run


def test_random_p2000_agrees_with_sklearn():
    Z, F, W, mu = random_problem()
    terms, (X, y) = lasso_terms(Z, F, W, mu), stacked_design(Z, F, W, mu)
    lam = 0.2 * lambda_max(terms)   # cheap for scikit-learn: few non-zero beta
    new = solve_lasso(terms, lam, tol=1e-12)[0]
    sk = sklearn_reference(X, y, lam, free=working_set(terms))
    assert 0 < (new != 0).sum() and np.abs(new - sk).max() <= 1e-8


@pytest.fixture(scope='module')
def bundled():
    "The report's CD4 T -> CD8 T problem on the bundled cells, default checkpoint and SAE."
    from cellsteer_nb.core import DEFAULT_CHECKPOINT, CELL_TYPE_KEY, EMBED_KEY, FBAR_KEY, SOURCE, TARGET
    from cellsteer_nb.data import load_pbmc68k, align_to_panel
    from cellsteer_nb.model import load_checkpoint
    from cellsteer_nb.hooks import embed_cells
    from cellsteer_nb.sae import DEFAULT_SAE, load_sae, sae_metadata
    from cellsteer_nb.features import feature_means
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    adata = align_to_panel(load_pbmc68k(), genes)
    sae = load_sae(DEFAULT_SAE, expect=sae_metadata())
    embed_cells(adata, model); feature_means(adata, model, sae)
    labels = adata.obs[CELL_TYPE_KEY].astype(str).to_numpy()
    Z, F = adata.obsm[EMBED_KEY].astype(np.float64), adata.obsm[FBAR_KEY].astype(np.float64)
    src = labels == SOURCE
    args = Z[src], F[src], sae.W_dec.detach().numpy(), Z[labels == TARGET].mean(0)
    return lasso_terms(*args), stacked_design(*args)


@pytest.mark.parametrize('frac', [0.05, 0.01])
def test_bundled_agrees_with_the_old_solver(bundled, frac):
    terms, _ = bundled
    agree(terms, frac * lambda_max(terms))


def test_bundled_agrees_with_sklearn(bundled):
    terms, (X, y) = bundled
    lam = 0.1 * lambda_max(terms)
    new = solve_lasso(terms, lam, tol=1e-12)[0]
    sk = sklearn_reference(X, y, lam, free=working_set(terms))
    assert np.abs(new - sk).max() <= 1e-8
