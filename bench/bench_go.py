"""Item 2, GO enrichment of every SAE feature: ours (`propagate_assoc` + one vectorised `go_enrichment` of all features)
against goatools `GOEnrichmentStudy` (constructed once, then `run_study` per feature), on the report's inputs: each
feature's gene set by the token rule (`unit_gene_sets`, default `AnnotationConfig`), population = expressed panel genes
with a GO annotation, the bundled GO DAG and annotations, propagation over is_a + part_of (goatools
`propagate_counts=True, relationships={'part_of'}`), one-sided Fisher (`fisher_scipy_stats`, `alternative='greater'`), BH.

goatools takes ~0.1-0.5 s a feature, so each repeat runs it on a fixed random sample of features (a different sample per
repeat) and extrapolates to all F features: construction + F x mean seconds per feature. Ours always runs all features.
Agreement: max |log10 p_ours - log10 p_goatools| (and the same for BH q) over every term of every sampled feature.
Interleaved, median of 3 repeats, one thread.

    python bench/bench_go.py [--repeats 3] [--sample 40]
"""
import _common as C
import argparse, contextlib, io, time
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--sample', type=int, default=40)
    a = ap.parse_args()
    from goatools.go_enrichment import GOEnrichmentStudy
    from cellsteer_nb.annotate import AnnotationConfig, expressed_genes, unit_gene_sets
    from cellsteer_nb.features import feature_stats
    from cellsteer_nb.go import load_godag, load_gene2go, propagate_assoc, go_enrichment
    model, adata, sae = C.pipeline()
    cfg = AnnotationConfig()
    genes = list(adata.var_names)
    expressed = expressed_genes(adata, cfg.min_mean, cfg.min_frac)
    fstats = feature_stats(model, sae, adata)
    sets, _ = unit_gene_sets(fstats['gene_mean'], genes, expressed, cfg)
    godag = load_godag()
    direct = load_gene2go(symbols=genes)
    prop0 = propagate_assoc(direct, godag, cfg.relationships)
    population = [g for g, e in zip(genes, expressed) if e and prop0.get(g)]
    pop_set = set(population)
    sets = [[g for g in s if g in pop_set] for s in sets]   # the same study sets for both (ours would intersect anyway)
    F = len(sets)

    def ours():
        return go_enrichment(sets, population, propagate_assoc(direct, godag, cfg.relationships))

    def goatools_sample(sample):
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            goea = GOEnrichmentStudy(population, {g: set(s) for g, s in direct.items()}, godag, propagate_counts=True,
                                     relationships=set(cfg.relationships), alpha=cfg.alpha, methods=['fdr_bh'],
                                     pvalcalc='fisher_scipy_stats', alternative='greater', log=None)
        t_construct = time.perf_counter() - t0
        recs, t1 = {}, time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            for f in sample: recs[f] = {r.GO: (r.p_uncorrected, r.p_fdr_bh) for r in goea.run_study(sets[f], log=None)}
        t_run = time.perf_counter() - t1
        return t_construct, t_run, recs

    rng = np.random.default_rng(0)
    nonempty = np.flatnonzero([len(s) > 0 for s in sets])
    samples = [rng.choice(nonempty, min(a.sample, len(nonempty)), replace=False) for _ in range(a.repeats)]
    rows, dp, dq, n_cmp, terms_ok = [], 0.0, 0.0, 0, True
    for r in range(a.repeats):
        order = ('ours', 'theirs') if r % 2 == 0 else ('theirs', 'ours')
        for who in order:
            if who == 'ours': enr, t_ours = C.timed(ours)
            else: (t_con, t_run, recs), t_theirs_sample = C.timed(goatools_sample, samples[r])
        per_feature = t_run / len(samples[r])
        t_theirs_all = t_con + F * per_feature
        for f, rec in recs.items():
            terms_ok &= sorted(rec) == list(enr.terms)
            pr = np.array([rec[t][0] for t in enr.terms]); qr = np.array([rec[t][1] for t in enr.terms])
            dp = max(dp, float(np.abs(np.log10(enr.p[f]) - np.log10(pr)).max()))
            dq = max(dq, float(np.abs(np.log10(enr.q[f]) - np.log10(qr)).max()))
            n_cmp += len(pr)
        rows.append({'ours_s': t_ours, 'goatools_construct_s': t_con, 'goatools_per_feature_s': per_feature,
                     'goatools_sample_features': len(samples[r]), 'goatools_extrapolated_all_s': t_theirs_all,
                     'ratio': t_theirs_all / t_ours})
        print(f"repeat {r}: ours {t_ours:.2f} s for {F} features; goatools {t_con:.2f} s + {per_feature:.3f} s/feature -> {t_theirs_all:.0f} s; "
              f"x{t_theirs_all / t_ours:.0f}", flush=True)
    ratios = [x['ratio'] for x in rows]
    out = {'n_features': F, 'n_terms': len(enr.terms), 'population': enr.pop_n, 'repeats': rows, 'ratios': ratios,
           'speedup': C.median(ratios), 'max_abs_dlog10_p': dp, 'max_abs_dlog10_q': dq, 'n_pvalues_compared': n_cmp,
           'n_features_compared': int(sum(len(s) for s in samples)), 'same_terms': bool(terms_ok),
           'extrapolated': True, 'goatools_setup': "GOEnrichmentStudy(population, direct assoc copy, godag, propagate_counts=True, relationships={'part_of'}, methods=['fdr_bh'], pvalcalc='fisher_scipy_stats', alternative='greater')"}
    C.save_results('go', out, {'go_speedup': out['speedup'], 'go_max_abs_dlog10_p': dp})


if __name__ == '__main__':
    main()
