"""Shared helpers of the `make bench` scripts: one thread everywhere, the merged `bench/results.json`, timing, RSS.

Every script sets the thread environment *before* importing numpy / torch / numba (import this module first)."""
import os
for _v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'NUMBA_NUM_THREADS', 'VECLIB_MAXIMUM_THREADS'):
    os.environ.setdefault(_v, '1')
import json, platform, subprocess, sys, time, fcntl
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = Path(os.environ.get('BENCH_RESULTS', BENCH/'results.json')).absolute()   # another file for a run not to be merged yet
THREADS = int(os.environ['OMP_NUM_THREADS'])


def set_threads():
    "One torch thread (intra- and inter-op) for ours and the alternative alike."
    import torch
    torch.set_num_threads(THREADS)
    try: torch.set_num_interop_threads(THREADS)
    except RuntimeError: pass


def _jsonable(o):
    import numpy as np
    if isinstance(o, dict): return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)): return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating,)): return float(o)
    if isinstance(o, (np.integer,)): return int(o)
    if isinstance(o, np.bool_): return bool(o)
    if isinstance(o, np.ndarray): return _jsonable(o.tolist())
    if isinstance(o, float) and o != o: return None
    return o


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save_results(section: str, data: dict, top: dict | None = None):
    "Merge `data` under `results[section]` and the headline keys `top` at the top level of bench/results.json (locked, atomic)."
    with open(BENCH/'.results.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = load_results()
        res.setdefault('sections', {})[section] = _jsonable({**data, 'measured_at': time.strftime('%Y-%m-%d %H:%M:%S')})
        res.update(_jsonable(top or {}))
        res['environment'] = environment()
        tmp = RESULTS.with_suffix('.json.tmp')
        tmp.write_text(json.dumps(res, indent=1, sort_keys=True) + '\n')
        tmp.replace(RESULTS)
    return res


def environment() -> dict:
    "CPU model (lscpu), cores, threads used, versions."
    cpu = ''
    try:
        for line in subprocess.run(['lscpu'], capture_output=True, text=True).stdout.splitlines():
            if line.startswith('Model name:'): cpu = line.split(':', 1)[1].strip()
    except OSError: pass
    vers = {}
    for m in ('numpy', 'torch', 'numba', 'scipy', 'goatools', 'sklearn'):
        try: vers[m] = __import__(m).__version__
        except Exception: pass
    return {'cpu_model': cpu, 'cpus': os.cpu_count(), 'threads': THREADS, 'python': platform.python_version(),
            'versions': vers, 'thread_env': {v: os.environ.get(v) for v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'NUMBA_NUM_THREADS')}}


def loadavg() -> float: return os.getloadavg()[0]


def median(xs):
    xs = sorted(xs); n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def timed(f, *a, **k):
    t0 = time.perf_counter(); out = f(*a, **k); return out, time.perf_counter() - t0


def interleaved(ours, theirs, repeats: int = 3) -> dict:
    """Time `ours()` and `theirs()` alternately `repeats` times (same process, same threads).
    Returns per-repeat seconds, the per-repeat ratios theirs/ours and their median (the reported speed-up)."""
    to, tt, last = [], [], {}
    for r in range(repeats):
        for name, f, acc in (('ours', ours, to), ('theirs', theirs, tt)) if r % 2 == 0 else (('theirs', theirs, tt), ('ours', ours, to)):
            out, s = timed(f); acc.append(s); last[name] = out
    ratios = [b / a for a, b in zip(to, tt)]
    return {'ours_s': to, 'theirs_s': tt, 'ratios': ratios, 'speedup': median(ratios),
            'ours_median_s': median(to), 'theirs_median_s': median(tt), 'last': last}


def status_kib() -> dict:
    out = {}
    for line in Path('/proc/self/status').read_text().splitlines():
        k, _, v = line.partition(':')
        if k in ('RssAnon', 'RssFile', 'VmHWM', 'VmRSS'): out[k] = int(v.split()[0])
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set in MiB: VmHWM of /proc/self/status (the high-water mark of this address space, reset by
    exec; ru_maxrss is not: a child exec'd from a big parent inherits the parent's peak)."""
    return status_kib()['VmHWM'] / 1024


def run_child(args: list, env: dict | None = None, timeout: float | None = None) -> dict:
    "Run `python <args>` in a fresh process (same thread env) and parse the last stdout line as JSON."
    p = subprocess.run([sys.executable, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)
    if p.returncode != 0: raise RuntimeError(f'child {args} failed ({p.returncode}):\n{p.stderr[-3000:]}')
    return json.loads(p.stdout.strip().splitlines()[-1])


def pipeline():
    """(model, adata, sae): the default checkpoint, the bundled cells aligned to its panel with the layer-12 embedding and the
    default SAE's feature means (both from the package's cache, `$CELLSTEER_CACHE`, computed on first use), as the report has them."""
    import warnings
    from cellsteer_nb.core import DEFAULT_CHECKPOINT
    from cellsteer_nb.data import load_pbmc68k, align_to_panel
    from cellsteer_nb.model import load_checkpoint
    from cellsteer_nb.hooks import embed_cells
    from cellsteer_nb.sae import load_sae, DEFAULT_SAE, sae_metadata
    from cellsteer_nb.features import feature_means
    set_threads()
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        adata = align_to_panel(load_pbmc68k(), genes)
    embed_cells(adata, model)
    sae = load_sae(DEFAULT_SAE, expect=sae_metadata(DEFAULT_CHECKPOINT))
    feature_means(adata, model, sae)
    return model, adata, sae


def steering_problem(adata, sae):
    """The report's CD4 T -> CD8 T contrastive problem (`latent_step` with the default `SteeringConfig`): dict with the
    `LassoTerms`, lambda (lambda_1se of the CV), penalty weights, free mask (None), the CV fit and its inputs."""
    from cellsteer_nb.latent import SteeringConfig, steering_inputs, steer_toward, free_features
    from cellsteer_nb.contrastive import lasso_terms
    cfg = SteeringConfig()
    labels, Z, F, W, cen, _ = steering_inputs(adata, sae.W_dec.detach().numpy())
    src = labels == cfg.source
    Zs, Fs, mu_t = Z[src], F[src], cen[cfg.target]
    free = free_features(cfg.free, None, W.shape[0]) if cfg.free == 'all' else None
    fit = steer_toward(Zs, Fs, W, mu_t, cfg, free)
    return {'terms': lasso_terms(Zs, Fs, W, mu_t), 'lam': fit.cv.lambda_1se, 'weights': fit.cv.weights, 'free': free,
            'nonneg_alpha': cfg.nonneg_alpha, 'fit': fit, 'cfg': cfg, 'Zs': Zs, 'Fs': Fs, 'W': W, 'mu_t': mu_t}
