"""Issue 23, the cost of the gene-editing baseline: the report's section 'Editing genes vs steering features' computed cold
(`gene_baseline._gene_baseline`, the step's disk cache bypassed; the latent and expression steps it reads come from the cache),
with the report's configuration and threads (2: `make report` leaves torch at its default on the 2 cores), split by phase
(marker arms; the sparse edit; the marker arms aimed at the wrong targets; the random-gene controls); and the `--small` set.
Target: at most 2 minutes added to `make report` cold.

    python bench/bench_gene_baseline.py [--threads 2]
"""
import _common as C
import argparse, os, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args()
    for v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'NUMBA_NUM_THREADS'): os.environ[v] = str(a.threads)
    import torch
    model, adata, sae = C.pipeline()
    torch.set_num_threads(a.threads)
    from cellsteer_nb.pipeline import report_config, expression_config
    from cellsteer_nb.latent import SteeringConfig, latent_step, steering_inputs
    from cellsteer_nb.expression import expression_step
    from cellsteer_nb.gene_baseline import GeneBaselineConfig, _gene_baseline
    cfg = report_config()
    W = sae.W_dec.detach().numpy()
    lat = latent_step(adata, W, None, SteeringConfig(source=cfg['source'], target=cfg['target'], wrong_targets=tuple(cfg['wrong_targets']), seed=cfg['seed'],
                                                     n_random=cfg['steer_random_draws'], n_boot=cfg['steer_boot'], compare_adam=cfg['steer_compare_adam']))
    ex = expression_step(adata, model, sae, lat, expression_config(cfg))
    kw = dict(source=cfg['source'], target=cfg['target'], markers=tuple(cfg['markers']), source_markers=tuple(cfg['source_markers']), seed=cfg['seed'])
    out = {'threads': a.threads, 'loadavg_before': C.loadavg()}
    for name, gcfg in (('full', GeneBaselineConfig(wrong_targets=tuple(cfg['wrong_targets']), **kw)), ('small', GeneBaselineConfig.small(**kw))):
        t0 = time.perf_counter()
        res = _gene_baseline(adata, model, *steering_inputs(adata, W), lat, ex, gcfg)
        g = res.gene_baseline
        out[name] = {'seconds': time.perf_counter() - t0, 'phases_s': res.timings, 'n_arms': len(g['arms']), 'n_eval_cells': g['n_eval_cells'],
                     'n_expr_cells': g['n_expr_cells'], 'n_source_cells': g['n_source_cells'], 'n_random': gcfg.n_random}
        print(name, out[name], flush=True)
    out['loadavg_after'] = C.loadavg()
    C.save_results('gene_baseline', out, {'gene_baseline_s': out['full']['seconds'], 'gene_baseline_small_s': out['small']['seconds']})


if __name__ == '__main__':
    main()
