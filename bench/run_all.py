"""`make bench`: run every benchmark (one process each, one thread, one after the other) and render bench/RESULTS.md from
bench/results.json. Every number in RESULTS.md is read from results.json, which the scripts write.

    python bench/run_all.py                 # everything, ~35 min (the end-to-end `make report` timings take ~10 min of it)
    python bench/run_all.py --skip-e2e      # everything but item 6; its previous numbers are kept, marked as reused
    python bench/run_all.py --only solve go # some of them
    python bench/run_all.py --render        # only rewrite RESULTS.md
"""
import _common as C
import argparse, subprocess, sys, time

SCRIPTS = {'solve': 'bench_solve.py', 'solve_wide': 'bench_solve_wide.py', 'go': 'bench_go.py', 'sae': 'bench_sae.py', 'extract': 'bench_extract.py',
           'steering': 'bench_steering.py', 'seed_scale': 'bench_seed_scale.py', 'stream': 'bench_stream.py', 'gene_baseline': 'bench_gene_baseline.py',
           'e2e': 'bench_report.py'}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--skip-e2e', action='store_true')
    ap.add_argument('--only', nargs='*')
    ap.add_argument('--render', action='store_true')
    a = ap.parse_args()
    if not a.render:
        names = a.only or [n for n in SCRIPTS if not (a.skip_e2e and n == 'e2e')]
        status = {}
        for name in names:
            print(f'== {name} ({SCRIPTS[name]})', flush=True)
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, str(C.BENCH/SCRIPTS[name])], cwd=C.ROOT)
            status[name] = {'rc': p.returncode, 'seconds': time.perf_counter() - t0}
            if p.returncode != 0:
                print(f'!! {name} failed (rc {p.returncode}); continuing', flush=True)
                C.save_results(name, {**C.load_results().get('sections', {}).get(name, {}), 'error': f'last run failed with rc {p.returncode}'})
        res = C.load_results()
        if a.skip_e2e and 'e2e' in res.get('sections', {}):
            C.save_results('e2e', {**res['sections']['e2e'], 'reused_from_previous_run': True})
        C.save_results('run', {'scripts': status, 'skip_e2e': a.skip_e2e})
    from render import render
    (C.BENCH/'RESULTS.md').write_text(render(C.load_results()))
    print('wrote bench/RESULTS.md')


if __name__ == '__main__':
    main()
