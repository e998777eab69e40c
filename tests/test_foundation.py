"""Checks the notebooks' own test cells do not cover: the shipped checkpoint, the probe and SAE bars on the full bundled
data, and that the committed report agrees with what the pipeline computes from the committed checkpoint — to the
cross-hardware tolerances of `cellsteer_nb.reference` (the same machine reproduces it byte for byte: test_determinism.py)."""
import json
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from cellsteer_nb.core import DEFAULT_CHECKPOINT
from cellsteer_nb.data import load_pbmc68k
from cellsteer_nb.model import load_checkpoint, WEIGHTS_FILE
from cellsteer_nb.reference import BARS, close_enough
from cellsteer_nb.pipeline import foundation_results, probe_results, report_config
from cellsteer_nb.sae import DEFAULT_SAE, load_sae, sae_metadata
from cellsteer_nb.stream import sae_step
from cellsteer_nb.annotate import annotation_step

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = json.loads((ROOT/'reports'/'cd4_steering.json').read_text())


def test_checkpoint_is_small_and_matches_the_bundled_panel():
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    assert (DEFAULT_CHECKPOINT/WEIGHTS_FILE).stat().st_size <= 10 * 2**20
    assert genes == list(load_pbmc68k().var_names)
    c = model.config
    assert c.num_hidden_layers >= 14 and 64 <= c.hidden_size <= 128  # layer 12 interior
    info = json.loads((DEFAULT_CHECKPOINT/'training.json').read_text())
    assert info['model_config'] == c.to_dict()
    assert (DEFAULT_CHECKPOINT/'MODEL_CARD.md').exists() and (DEFAULT_CHECKPOINT/'loss_curve.png').exists()


@pytest.fixture(scope='module')
def full_results(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv('CELLSTEER_CACHE', str(tmp_path_factory.mktemp('cache')))  # cold cache: recompute everything; restored afterwards
    cfg = report_config(small=False)
    res, timings, adata, model = foundation_results(cfg)
    res.update(probe_results(cfg, adata, model))   # the layer-12 embedding of every cell and the CD4 T vs CD8 T probe
    sae = load_sae(DEFAULT_SAE, expect=sae_metadata())
    res["sae"] = sae_step(model, sae, adata, timing_steps=cfg['sae_timing_steps']).to_json()
    yield res, timings, adata, model, sae
    mp.undo()


def test_probe_bar_holds(full_results):
    p = full_results[0]['probe']
    assert p['layer12_cv_accuracy'] >= p['raw_expression_cv_accuracy'] - BARS['probe.below_raw_by_at_most']
    assert p['layer12_cv_accuracy'] >= p['random_model_cv_accuracy'] + BARS['probe.above_random_by_at_least']


def test_pretraining_beats_the_mean_baseline(full_results):
    m = full_results[0]['model']
    assert m['heldout_mse'] < m['mean_baseline_mse']
    assert m['heldout_unmasked_mse'] < m['mean_baseline_mse']


def _mismatches(section:str, committed:dict, recomputed:dict) -> list:
    return [f'{section}.{k}: committed {committed.get(k)!r}, recomputed {v!r}' for k, v in recomputed.items()
            if not close_enough(f'{section}.{k}', committed.get(k), v)]


def test_committed_report_matches_the_pipeline(full_results):
    res = full_results[0]
    bad = sum((_mismatches(s, COMMITTED[s], res[s]) for s in ('model', 'probe', 'sae')), [])
    assert not bad, 'rerun make report: ' + '; '.join(bad)


def test_default_sae_meets_the_bars(full_results):
    s = full_results[0]['sae']
    assert s['fvu'] < BARS['sae.max_fvu'] and s['dead_fraction'] < BARS['sae.max_dead_fraction'] and s['loss_recovered'] > BARS['sae.min_loss_recovered']


@pytest.fixture(scope='module')
def annotation(full_results):
    _, _, adata, model, sae = full_results
    return annotation_step(adata, model, sae)


def test_committed_annotation_matches_the_pipeline(annotation):
    ann = annotation.to_json()
    keys = ('frac_features_go_annotated', 'frac_neurons_go_annotated', 'frac_neurons_go_annotated_matched_size',
            'specificity_mannwhitney_p', 'n_population_genes', 'median_max_ic_features', 'median_top_gene_active_share', 'coexpression')
    bad = _mismatches('sae', COMMITTED['sae'], {k: ann[k] for k in keys})
    assert not bad, 'rerun make report: ' + '; '.join(bad)


def _term_sets(tab:pd.DataFrame, rule:str) -> list:
    cols = [f'{rule}term{i}_id' for i in (1, 2, 3)]
    return [set(x for x in row if isinstance(x, str)) for row in tab[cols].itertuples(index=False)]


def test_committed_features_csv_matches_the_pipeline(annotation):
    """features.csv: same columns and features; densities and feature means within 1% relative; GO labels equal except
    for features with a term at the FDR edge (q within a factor 2 of the 0.05 cut, in either table)."""
    ours, theirs = annotation.table, pd.read_csv(ROOT/'reports'/'features.csv')
    assert list(ours.columns) == list(theirs.columns) and list(ours.feature) == list(theirs.feature), 'features.csv: rerun make report'
    for col in ('density', 'fbar_mean'):
        np.testing.assert_allclose(ours[col], theirs[col], rtol=0.01, atol=1e-6, err_msg=f'features.csv {col}: rerun make report')
    for rule in ('', 'coexpression_'):
        fdr = np.c_[ours[[f'{rule}term{i}_fdr' for i in (1, 2, 3)]], theirs[[f'{rule}term{i}_fdr' for i in (1, 2, 3)]]]
        edge = np.any((fdr > 0.025) & (fdr < 0.1), axis=1)
        differ = np.array([a != b for a, b in zip(_term_sets(ours, rule), _term_sets(theirs, rule))])
        assert not (differ & ~edge).any(), f'{rule}GO labels differ away from the FDR edge at features {list(ours.feature[differ & ~edge])[:10]}'
        assert differ.mean() < 0.02, f'{rule}GO labels differ at {differ.sum()} features'
