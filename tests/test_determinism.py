"""Byte-identical results on one machine: two cold runs (separate empty caches) of the embedding, the feature means and the
latent steering step and the expression step (readouts of steered cells) give the same bytes, and a warm rerun loads
the same bytes from the disk cache. In-process memoisation is
cleared between the runs, so the second run recomputes everything. (Across machines the committed numbers reproduce to the tolerances of
cellsteer_nb.reference, tested in test_foundation.py.)"""
import numpy as np
import pytest
from cellsteer_nb import core
from cellsteer_nb.core import DEFAULT_CHECKPOINT, EMBED_KEY, FBAR_KEY, dumps_json
from cellsteer_nb.data import load_pbmc68k, align_to_panel, subsample_types
from cellsteer_nb.model import load_checkpoint
from cellsteer_nb.hooks import embed_cells
from cellsteer_nb.sae import DEFAULT_SAE, load_sae, sae_metadata
from cellsteer_nb.features import feature_means
from cellsteer_nb.latent import SteeringConfig, latent_step
from cellsteer_nb.expression import ExpressionConfig, expression_step


def _run(tmp_path, name, monkeypatch):
    monkeypatch.setenv('CELLSTEER_CACHE', str(tmp_path/name))
    core._MEMO.clear()
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    sae = load_sae(DEFAULT_SAE, expect=sae_metadata())
    adata = subsample_types(align_to_panel(load_pbmc68k(), genes), 15, types=['CD4 T', 'CD8 T', 'B', 'Monocyte'])
    embed_cells(adata, model); feature_means(adata, model, sae)
    res = latent_step(adata, sae.W_dec.detach().numpy(), None, SteeringConfig(n_random=3, n_boot=100, n_lams=20, wrong_targets=('B', 'Monocyte')))
    ex = expression_step(adata, model, sae.requires_grad_(False), res, ExpressionConfig(n_target=6, n_null=1, n_boot=50))
    return (adata.obsm[EMBED_KEY].tobytes(), adata.obsm[FBAR_KEY].tobytes(), dumps_json(res.to_json()), dumps_json(ex.to_json()),
            ex.steered['masked'].tobytes())


def test_two_cold_runs_are_byte_identical(tmp_path, monkeypatch):
    first, second = _run(tmp_path, 'a', monkeypatch), _run(tmp_path, 'b', monkeypatch)
    assert first[0] == second[0] and first[1] == second[1]
    assert first[2] == second[2]
    assert first[3] == second[3] and first[4] == second[4]


def test_a_warm_run_loads_every_step_from_disk(tmp_path, monkeypatch):
    "A rerun on the same cache with the in-process memo cleared (a new process, in effect): the same bytes, and no step computed again (no new cache entry)."
    first = _run(tmp_path, 'a', monkeypatch)
    entries = lambda: sorted(str(p.relative_to(tmp_path)) for p in (tmp_path/'a').glob('*/*'))
    before = entries()
    assert {'latent', 'expression'} <= {e.split('/')[1] for e in before}
    assert _run(tmp_path, 'a', monkeypatch) == first
    assert entries() == before    # every key was the same as in the first run: the steps were loaded, not refitted
