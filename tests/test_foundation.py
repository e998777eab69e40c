"""Checks the notebooks' own test cells do not cover: the shipped checkpoint, the probe and SAE bars on the full bundled
data, and that the committed report agrees with what the pipeline computes from the committed checkpoint."""
import json
from pathlib import Path
import pytest
from cellsteer_nb.core import DEFAULT_CHECKPOINT
from cellsteer_nb.data import load_pbmc68k
from cellsteer_nb.model import load_checkpoint, WEIGHTS_FILE
from cellsteer_nb.report import foundation_results, report_config, sae_results

ROOT = Path(__file__).resolve().parent.parent


def test_checkpoint_is_small_and_matches_the_bundled_panel():
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    assert (DEFAULT_CHECKPOINT/WEIGHTS_FILE).stat().st_size <= 10 * 2**20
    assert genes == list(load_pbmc68k().var_names)
    c = model.config
    assert c.num_hidden_layers >= 14 and 64 <= c.hidden_size <= 128  # layer 12 interior, DESIGN.md §2
    info = json.loads((DEFAULT_CHECKPOINT/'training.json').read_text())
    assert info['model_config'] == c.to_dict()
    assert (DEFAULT_CHECKPOINT/'MODEL_CARD.md').exists() and (DEFAULT_CHECKPOINT/'loss_curve.png').exists()


@pytest.fixture(scope='module')
def full_results(tmp_path_factory):
    import os
    os.environ['CELLSTEER_CACHE'] = str(tmp_path_factory.mktemp('cache'))  # cold cache: recompute everything
    cfg = report_config(small=False)
    res, timings, adata, model = foundation_results(cfg)
    res['sae'], _, sae = sae_results(cfg, model, adata)
    return res, timings, adata, model, sae


def test_probe_bar_holds(full_results):
    p = full_results[0]['probe']
    assert p['layer12_cv_accuracy'] >= p['raw_expression_cv_accuracy'] - 0.08
    assert p['layer12_cv_accuracy'] >= p['random_model_cv_accuracy'] + 0.05


def test_pretraining_beats_the_mean_baseline(full_results):
    m = full_results[0]['model']
    assert m['heldout_mse'] < m['mean_baseline_mse']
    assert m['heldout_unmasked_mse'] < m['mean_baseline_mse']


def test_committed_report_matches_the_pipeline(full_results):
    committed = json.loads((ROOT/'reports'/'cd4_steering.json').read_text())
    res = full_results[0]
    for section in ('model', 'probe', 'sae'):
        for k, v in res[section].items():
            assert committed[section][k] == pytest.approx(v, rel=1e-4, abs=1e-6), f'{section}.{k}: rerun make report'


def test_default_sae_meets_the_bars(full_results):
    s = full_results[0]['sae']
    assert s['fvu'] < 0.2 and s['dead_fraction'] < 0.1 and s['loss_recovered'] > 0.8



@pytest.fixture(scope='module')
def annotation(full_results, tmp_path_factory):
    from cellsteer_nb.report import annotation_results
    _, _, adata, model, sae = full_results
    out = tmp_path_factory.mktemp('annotation')
    return annotation_results(report_config(small=False), model, adata, sae, out)[0], out


def test_committed_annotation_matches_the_pipeline(annotation):
    ann, out = annotation
    committed = json.loads((ROOT/'reports'/'cd4_steering.json').read_text())['sae']
    for k in ('frac_features_go_annotated', 'frac_neurons_go_annotated', 'frac_neurons_go_annotated_matched_size',
              'specificity_mannwhitney_p', 'n_population_genes', 'median_max_ic_features', 'median_top_gene_active_share'):
        assert committed[k] == pytest.approx(ann[k], rel=1e-4, abs=1e-12), f'sae.{k}: rerun make report'
    assert committed['coexpression']['frac_features_go_annotated'] == pytest.approx(ann['coexpression']['frac_features_go_annotated'], rel=1e-4)
    import pandas as pd
    ours, theirs = pd.read_csv(out/'features.csv'), pd.read_csv(ROOT/'reports'/'features.csv')
    assert list(ours.columns) == list(theirs.columns), 'features.csv: rerun make report'
    num = ours.select_dtypes('number').columns
    pd.testing.assert_frame_equal(ours[num], theirs[num], rtol=1e-4, atol=1e-9)
    pd.testing.assert_frame_equal(ours.drop(columns=num), theirs.drop(columns=num))


@pytest.mark.xfail(strict=True, reason="issue 4's bar does not hold on the embedded model under the seed's token rule "
                                       '(reports/cd4_steering.md, bench/SAE_ANNOTATION_SWEEP.md); strict: a pass means the report changed')
def test_sae_features_are_annotated_more_often_than_neurons(annotation):
    ann, _ = annotation
    assert ann['frac_features_go_annotated'] > ann['frac_neurons_go_annotated']
