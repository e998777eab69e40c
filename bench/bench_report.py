"""Item 6, end to end: `make report` cold (empty cache) and warm, in seconds and peak RSS, in a temporary clone of the repository.

The clone (`git clone` of the committed HEAD) runs `tools/run_notebooks.py` (what `make report` runs after its install
step) with this repository's virtualenv, `PYTHONPATH=<clone>` (so the clone's `cellsteer_nb` is the one imported:
checked), one thread (OMP/MKL/NUMBA = 1) and `CELLSTEER_CACHE` pointing at a fresh empty directory. Cold = first run on
the empty cache; warm = second run on the cache the first one filled. A third, warm, run under cProfile gives the
profile of what dominates a warm run (skip with --no-profile). Nothing in this working tree (reports/, caches) is touched.

    python bench/bench_report.py [--no-profile] [--keep]
"""
import _common as C
import argparse, json, os, pstats, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path


def run_notebooks(clone: Path, env: dict, profile: Path | None = None) -> dict:
    cmd = [sys.executable] + (['-m', 'cProfile', '-o', str(profile)] if profile else []) + [str(clone/'tools'/'run_notebooks.py')]
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env, cwd=clone)
        _, status, usage = os.wait4(p.pid, 0)   # this child's own resource use: its CPU time and peak RSS (Linux: KiB)
        wall = time.perf_counter() - t0
        out.seek(0); err.seek(0); stdout, stderr = out.read(), err.read()
    code = p.returncode = os.waitstatus_to_exitcode(status)
    if code != 0: raise RuntimeError(f'run_notebooks failed ({code}):\n{stdout[-2000:]}\n{stderr[-4000:]}')
    per_nb = {m.group(1): float(m.group(2)) for m in re.finditer(r'^\s+(\S+\.ipynb): (\d+) s$', stdout, re.M)}
    t = clone/'reports'/'timings.json'
    return {'seconds': wall, 'cpu_seconds': usage.ru_utime + usage.ru_stime, 'peak_rss_mb': usage.ru_maxrss / 1024, 'per_notebook_s': per_nb,
            'report_timings': json.loads(t.read_text()) if t.exists() else None}


def profile_summary(prof: Path, n: int = 30) -> dict:
    st = pstats.Stats(str(prof))
    total = st.total_tt
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, callers) in st.stats.items():
        rows.append({'function': f'{Path(file).name}:{line}({fn})', 'file': file, 'calls': nc, 'tottime_s': tt, 'cumtime_s': ct})
    def short(r):
        f = r['file']
        for key in ('site-packages/', 'cellsteer_nb/', 'lib/python3'):
            if key in f: f = f.split(key, 1)[1]; break
        return {**r, 'file': f}
    by_cum = [short(r) for r in sorted(rows, key=lambda r: -r['cumtime_s']) if 'cellsteer_nb' in r['file']][:n]
    by_tot = [short(r) for r in sorted(rows, key=lambda r: -r['tottime_s'])][:n]
    return {'total_s': total, 'top_cellsteer_by_cumtime': by_cum, 'top_by_tottime': by_tot}


def profile_notebook(clone: Path, env: dict, name: str, prof: Path) -> Path:
    "Run one notebook of the clone (warm cache) under cProfile, as run_notebooks.py runs it."
    code = (f"import os, cProfile; from execnb.nbio import read_nb; from execnb.shell import CaptureShell; os.chdir({str(clone/'nbs')!r}); "
            f"sh = CaptureShell(); nb = read_nb({name!r}); "
            f"cProfile.run(\"sh.run_all(nb, exc_stop=True, preproc=lambda c: '#| eval: false' in c.source or 'nbdev_export()' in c.source)\", {str(prof)!r})")
    subprocess.run([sys.executable, '-c', code], check=True, env=env, cwd=clone/'nbs', capture_output=True)
    return prof


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--no-profile', action='store_true', help='no cProfile-d third (warm) run')
    ap.add_argument('--profile-worst', action='store_true', help='cProfile the slowest warm notebook alone')
    ap.add_argument('--keep', action='store_true', help='keep the temporary clone and cache')
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix='cellsteer_e2e_'))
    clone, cache = tmp/'repo', tmp/'cache'
    try:
        subprocess.run(['git', 'clone', '-q', str(C.ROOT), str(clone)], check=True)
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=clone, capture_output=True, text=True).stdout.strip()
        cache.mkdir()
        env = {**os.environ, 'PYTHONPATH': str(clone), 'CELLSTEER_CACHE': str(cache), 'MPLBACKEND': 'Agg'}
        env.pop('IN_TEST', None)
        where = subprocess.run([sys.executable, '-c', 'import cellsteer_nb; print(cellsteer_nb.__file__)'], cwd=clone/'nbs',
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        if not where.startswith(str(clone)): raise RuntimeError(f'the clone is not the imported package: {where}')
        out = {'clone_commit': commit, 'imported_package': where.replace(str(tmp), '<tmp>'), 'threads': C.THREADS,
               'command': 'PYTHONPATH=<clone> CELLSTEER_CACHE=<empty tmp> OMP_NUM_THREADS=1 .venv/bin/python tools/run_notebooks.py',
               'loadavg_before': C.loadavg()}
        print('cold run ...', flush=True)
        out['cold'] = run_notebooks(clone, env)
        out['cache_mb_after_cold'] = sum(f.stat().st_size for f in cache.rglob('*') if f.is_file()) / 2**20
        print(f"  cold {out['cold']['seconds']:.0f} s; warm run ...", flush=True)
        out['warm'] = run_notebooks(clone, env)
        print(f"  warm {out['warm']['seconds']:.0f} s", flush=True)
        if not a.no_profile:
            prof = tmp/'warm.prof'
            print('warm run under cProfile ...', flush=True)
            out['warm_profiled'] = run_notebooks(clone, env, prof)
            out['warm_profile'] = profile_summary(prof)
        out['loadavg_after'] = C.loadavg()
        if a.profile_worst:   # cProfile of the slowest warm notebook alone (cheaper than a profiled warm run)
            worst = max(out['warm']['per_notebook_s'], key=out['warm']['per_notebook_s'].get)
            out['worst_notebook_profile'] = {'notebook': worst, **profile_summary(profile_notebook(clone, env, worst, tmp/'nb.prof'))}
        C.save_results('e2e', out, {'report_cold_s': out['cold']['seconds'], 'report_warm_s': out['warm']['seconds'], 'report_peak_rss_mb': out['cold']['peak_rss_mb']})
        print(json.dumps({'report_cold_s': out['cold']['seconds'], 'report_warm_s': out['warm']['seconds']}))
    finally:
        if not a.keep: shutil.rmtree(tmp, ignore_errors=True)
        else: print('kept', tmp)


if __name__ == '__main__':
    main()
