"""The published steering solution, recomputed from the package's own embeddings and feature means: the alpha in
reports/steering_alpha.csv satisfies the Lasso's optimality conditions at the published lambda, and the steering bars
recorded in reports/cd4_steering.json hold."""
import json
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from cellsteer_nb.core import DEFAULT_CHECKPOINT, CELL_TYPE_KEY, EMBED_KEY, FBAR_KEY
from cellsteer_nb.data import load_pbmc68k, align_to_panel
from cellsteer_nb.model import load_checkpoint
from cellsteer_nb.hooks import embed_cells
from cellsteer_nb.sae import DEFAULT_SAE, load_sae, sae_metadata
from cellsteer_nb.features import feature_means
from cellsteer_nb.contrastive import lasso_terms, penalty_weights, kkt_violation, duality_gap
from cellsteer_nb.report import steering_bars

ROOT = Path(__file__).resolve().parent.parent
REPORT = json.loads((ROOT/'reports'/'cd4_steering.json').read_text())


@pytest.fixture(scope='module')
def cells():
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    sae = load_sae(DEFAULT_SAE, expect=sae_metadata())
    adata = align_to_panel(load_pbmc68k(), genes)
    embed_cells(adata, model); feature_means(adata, model, sae)
    return adata, sae


def test_published_alpha_is_optimal_at_the_published_lambda(cells):
    adata, sae = cells
    s = REPORT['steering']
    labels = adata.obs[CELL_TYPE_KEY].astype(str).to_numpy()
    Z, F = adata.obsm[EMBED_KEY].astype(np.float64), adata.obsm[FBAR_KEY].astype(np.float64)
    src = labels == s['source']
    terms = lasso_terms(Z[src], F[src], sae.W_dec.detach().numpy(), Z[labels == s['target']].mean(0))
    beta = pd.read_csv(ROOT/'reports'/'steering_alpha.csv').alpha.to_numpy() - 1
    w = penalty_weights(terms, s['penalty'])
    # alpha is published to 9 significant digits, lambda to 6, and embeddings differ across CPUs in the last float32 digits:
    # the optimality conditions must hold to 1e-3 of lambda and the duality gap to 1e-4 (the solver's own certificate is 1e-6).
    assert kkt_violation(terms, beta, s['lambda'], w, None, s['nonneg_alpha']) <= 1e-3 * s['lambda']
    assert duality_gap(terms, beta, s['lambda'], w, None, s['nonneg_alpha']) <= 1e-4
    assert int((np.abs(beta) > 0.3).sum()) == s['n_moved_features']


def test_published_steering_bars_hold():
    bars = steering_bars(REPORT['steering'])
    assert all(bars.values()), [k for k, v in bars.items() if not v]
