"""Peak memory of the layer-12 activation store: building it (`write_activation_store`) and one full pass of
`ActivationStore.token_batches(1024)` over all its tokens, at 1x and 4x the bundled cells (cells replicated).

Every measurement runs in its own fresh child process (one torch thread) that loads the model and the data first, then
does one phase and prints JSON: `ru_maxrss` (peak resident set of the whole child), plus the peaks of its anonymous and
file-backed resident pages (`RssAnon` / `RssFile` in /proc/self/status, sampled every 20 ms by a thread). A `baseline`
child only imports and loads the model and data. Stores go to a temporary directory, deleted afterwards.
The `pass_open_maps` rows are the contrast: the same pass (same rows, same batches) through shard memmaps opened once and
kept for the store's life, as `ActivationStore` did before it mapped a shard only while reading it (a bench-local copy).

    python bench/activation_store_rss.py            # measure (about 6 minutes on 2 cores) and write both files
    python bench/activation_store_rss.py render     # rewrite the markdown from the json
"""
import json, os, platform, resource, subprocess, sys, tempfile, threading, time
from pathlib import Path

OUT = Path(__file__).parent
SCALES = (1, 4)
BATCH = 1024
PHASES = ('baseline', 'build', 'pass', 'pass_open_maps')


def _status() -> dict:
    "RssAnon / RssFile / VmHWM of this process in KiB."
    out = {}
    for line in Path('/proc/self/status').read_text().splitlines():
        k, _, v = line.partition(':')
        if k in ('RssAnon', 'RssFile', 'RssShmem', 'VmHWM', 'VmRSS'): out[k] = int(v.split()[0])
    return out


class Sampler(threading.Thread):
    "Keeps the peak RssAnon and RssFile seen while it runs (the kernel only keeps the peak of their sum)."
    def __init__(self, every=0.02):
        super().__init__(daemon=True); self.every, self.peak, self.stop = every, {'RssAnon': 0, 'RssFile': 0}, threading.Event()
    def sample(self):
        s = _status()
        for k in self.peak: self.peak[k] = max(self.peak[k], s.get(k, 0))
    def run(self):
        while not self.stop.is_set(): self.sample(); time.sleep(self.every)
    def finish(self) -> dict:
        self.stop.set(); self.join(); self.sample(); return self.peak


def _open_maps_batches(store, batch_size, seed=0):
    "`ActivationStore.token_batches` (all cells) reading through memmaps opened once and kept open, as the store once did (bench-local)."
    import numpy as np, torch
    maps = [(np.load(store.path/sh['file'], mmap_mode='r'), sh['start'], sh['end']) for sh in store.manifest['shards']]
    rng = np.random.default_rng(seed)
    keep = np.ones(store.n_cells, bool)
    while True:
        for i in rng.permutation(len(maps)):
            arr, s, e = maps[i]
            block = np.asarray(arr[np.flatnonzero(np.repeat(keep[s:e], store.n_genes))])
            for b in np.array_split(rng.permutation(len(block)), max(1, len(block) // batch_size)):
                yield torch.from_numpy(block[b])


def child(phase: str, scale: int, path: str):
    t_load = time.perf_counter()
    import torch
    torch.set_num_threads(1)
    from cellsteer_nb.core import DEFAULT_CHECKPOINT
    from cellsteer_nb.data import load_pbmc68k, align_to_panel
    from cellsteer_nb.model import load_checkpoint, cell_inputs
    from cellsteer_nb.store import write_activation_store, ActivationStore
    import warnings
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        values, depth = cell_inputs(align_to_panel(load_pbmc68k(), genes))
    values, depth = values.repeat(scale, 1), depth.repeat(scale)
    res = {'phase': phase, 'scale': scale, 'n_cells': len(values), 'n_genes': values.shape[1]}
    res['after_load'], res['load_seconds'] = _status(), time.perf_counter() - t_load
    sampler = Sampler(); sampler.start(); t0 = time.perf_counter()
    if phase == 'build':
        store = write_activation_store(model, values, depth, path)
        res['n_tokens'] = store.n_cells * store.n_genes
        res['store_bytes'] = sum(f.stat().st_size for f in Path(path).iterdir())
        res['n_shards'] = len(store.shards)
    elif phase.startswith('pass'):
        store = ActivationStore(path)
        n_tokens = store.n_cells * store.n_genes
        # one epoch = every shard once = sum over shards of its batch count (array_split into len // batch_size parts)
        n_batches = sum(max(1, (sh['end'] - sh['start']) * store.n_genes // BATCH) for sh in store.manifest['shards'])
        it = store.token_batches(BATCH, seed=0) if phase == 'pass' else _open_maps_batches(store, BATCH, seed=0)
        seen = 0
        for _ in range(n_batches): seen += len(next(it))
        assert seen == n_tokens, (seen, n_tokens)
        res.update(n_tokens=n_tokens, n_batches=n_batches)
    res['seconds'] = time.perf_counter() - t0
    res['peak'] = sampler.finish()
    res['end'] = _status()
    res['ru_maxrss_kib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps(res))


def run_child(phase, scale, path) -> dict:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'TQDM_DISABLE': '1'}
    p = subprocess.run([sys.executable, __file__, 'child', phase, str(scale), str(path)], env=env, capture_output=True, text=True)
    if p.returncode: raise RuntimeError(f'child {phase} {scale}x failed:\n{p.stderr[-3000:]}')
    r = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"{phase:>11} {scale}x: ru_maxrss {r['ru_maxrss_kib'] / 1024:.0f} MiB, {r['seconds']:.1f} s", flush=True)
    return r


MIB = lambda kib: kib / 1024


def render(runs: list, meta: dict):
    from cellsteer_nb.core import atomic_write, dumps_json
    atomic_write(OUT/'activation_store_rss.json', dumps_json({'meta': meta, 'runs': runs}))
    get = {(r['phase'], r['scale']): r for r in runs}
    label = {'baseline': 'baseline (imports + model + data only)', 'build': 'build store (`write_activation_store`)',
             'pass': 'one pass of `store.token_batches(1024)`', 'pass_open_maps': 'contrast: the same pass through memmaps kept open (bench-local)'}
    lines = ['# Activation store memory', '',
             '*Generated by `python bench/activation_store_rss.py` (writes this file and `activation_store_rss.json`).*', '',
             f"Layer-{meta['layer']} store of the default checkpoint over the bundled {meta['base_cells']} cells × {meta['n_genes']} genes "
             f"(hidden {meta['d']}), and over the same cells replicated {max(SCALES)}×. Each row is a fresh child process with one torch thread "
             f"(Python {meta['python']}, torch {meta['torch']}, {meta['cpus']} CPUs). Peak RSS is the child's `ru_maxrss`; the anonymous and "
             'file-backed peaks are sampled every 20 ms from /proc/self/status (they may peak at different times, so their sum need not '
             'equal `ru_maxrss`). Δ is against the baseline child of the same scale. Seconds are wall-clock for the phase alone (model '
             f"and data loading excluded) on a shared 2-core machine (load average {meta['loadavg_start']:.1f} before, "
             f"{meta['loadavg_end']:.1f} after): read them as rough.", '',
             '| phase | cells | tokens | peak RSS (MiB) | Δ vs baseline (MiB) | peak anon (MiB) | peak file-backed (MiB) | store on disk (MiB) | seconds |',
             '|---|---|---|---|---|---|---|---|---|']
    for phase in PHASES:
        for s in SCALES:
            r = get[(phase, s)]; b = get[('baseline', s)]
            disk = f"{get[('build', s)]['store_bytes'] / 2**20:.1f}" if phase == 'build' else '—'
            tokens = f"{r['n_cells'] * r['n_genes']:,}"
            delta = '—' if phase == 'baseline' else f"{MIB(r['ru_maxrss_kib'] - b['ru_maxrss_kib']):+.0f}"
            lines.append(f"| {label[phase]} | {r['n_cells']:,} | {tokens} | {MIB(r['ru_maxrss_kib']):.0f} | {delta} | "
                         f"{MIB(r['peak']['RssAnon']):.0f} | {MIB(r['peak']['RssFile']):.0f} | {disk} | "
                         f"{r['load_seconds'] if phase == 'baseline' else r['seconds']:.1f}{' (load)' if phase == 'baseline' else ''} |")
    d = lambda ph, s: MIB(get[(ph, s)]['ru_maxrss_kib'] - get[('baseline', s)]['ru_maxrss_kib'])
    danon = lambda ph, s: MIB(get[(ph, s)]['peak']['RssAnon'] - get[('baseline', s)]['peak']['RssAnon'])
    dfile = lambda ph, s: MIB(get[(ph, s)]['peak']['RssFile'] - get[('baseline', s)]['peak']['RssFile'])
    lo, hi = SCALES[0], SCALES[-1]
    store_mib = {s: get[('build', s)]['store_bytes'] / 2**20 for s in SCALES}
    shard_mib = meta['shard_cells'] * meta['n_genes'] * meta['d'] * 4 / 2**20
    flat = lambda ph: abs(d(ph, hi) - d(ph, lo)) < 0.25 * (store_mib[hi] - store_mib[lo])
    lines += ['', '## Reading', '',
              f"- **Build**: Δ peak RSS {d('build', lo):+.0f} MiB at {lo}× and {d('build', hi):+.0f} MiB at {hi}× while the store grows "
              f"from {store_mib[lo]:.0f} to {store_mib[hi]:.0f} MiB: " +
              ('flat — memory does not grow with cells (one shard of '
               f"{meta['shard_cells']} cells, {shard_mib:.0f} MiB, is mapped at a time, plus the forward pass of one batch)."
               if flat('build') else 'it grows with the number of cells.'),
              f"- **One pass of `store.token_batches(1024)`**: Δ peak RSS {d('pass', lo):+.0f} MiB at {lo}× and {d('pass', hi):+.0f} MiB at {hi}×, "
              f"file-backed resident pages {dfile('pass', lo):+.0f} / {dfile('pass', hi):+.0f} MiB, anonymous {danon('pass', lo):+.0f} / "
              f"{danon('pass', hi):+.0f} MiB (one shard's copy is {shard_mib:.0f} MiB): " +
              ('flat.' if flat('pass') else 'not flat: it grows with the store.'),
              f"- **Contrast, memmaps kept open**: Δ peak RSS {d('pass_open_maps', lo):+.0f} / {d('pass_open_maps', hi):+.0f} MiB, file-backed "
              f"{dfile('pass_open_maps', lo):+.0f} / {dfile('pass_open_maps', hi):+.0f} MiB against a store of {store_mib[lo]:.0f} / "
              f"{store_mib[hi]:.0f} MiB, anonymous {danon('pass_open_maps', lo):+.0f} / {danon('pass_open_maps', hi):+.0f} MiB: " +
              ('not flat. A map that outlives the read (opened once per store, as `ActivationStore.__init__` did with '
               "`np.load(..., mmap_mode='r')` for every shard) leaves every page read through it resident *in this process*, so after "
               'one epoch the whole store counts in its RSS; the anonymous memory stays at about one shard. These are clean file-backed '
               'pages that the kernel can reclaim under memory pressure, not a leak of anonymous memory, but while mapped they count in '
               "the process's RSS and `ru_maxrss` (what `top`, job schedulers and the OOM killer's score read as its memory), and "
               'nothing unmapped them while the store object lived.' if not flat('pass_open_maps') else 'flat as well.')]
    atomic_write(OUT/'ACTIVATION_STORE.md', '\n'.join(lines) + '\n')


def main():
    import torch
    from cellsteer_nb.core import DEFAULT_LAYER, DEFAULT_CHECKPOINT
    from cellsteer_nb.store import write_activation_store
    import inspect
    runs, load0 = [], os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix='cellsteer_store_rss_') as tmp:
        for s in SCALES:
            path = Path(tmp)/f'store_{s}x'
            for phase in PHASES: runs.append(run_child(phase, s, path))
    b = runs[0]
    meta = {'python': platform.python_version(), 'torch': torch.__version__.split('+')[0], 'cpus': os.cpu_count(), 'batch_size': BATCH,
            'layer': DEFAULT_LAYER, 'base_cells': b['n_cells'], 'n_genes': b['n_genes'],
            'd': json.loads((DEFAULT_CHECKPOINT/'config.json').read_text())['hidden_size'],
            'loadavg_start': load0, 'loadavg_end': os.getloadavg()[0],
            'shard_cells': inspect.signature(write_activation_store).parameters['shard_cells'].default}
    render(runs, meta)


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'child': child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == 'render':  # re-render the markdown from the json, no measuring
        saved = json.loads((OUT/'activation_store_rss.json').read_text()); render(saved['runs'], saved['meta'])
    else: main()
