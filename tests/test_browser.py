"""The feature browser: the committed `reports/browser/` against `features.csv`, `steering_alpha.csv` and the JSON (every
feature has its data, the numbers are the pipeline's, nothing is loaded from the network, it fits in 20 MB), then the real
thing in Debian's headless Chromium from `file://`: no console errors, the CD8B search, a feature's panels and numbers, the
steering page, screenshots, and the load time at 512 features and at a synthetic 5,120."""
import json, os, re, shutil, time
from pathlib import Path
import numpy as np, pandas as pd, pytest
from cellsteer_nb.browser import CHROMIUM, feature_file, synthetic_atlas, synthetic_results, write_browser

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT/'reports'
BROWSER = REPORTS/'browser'
# any http(s) address, a protocol-relative src/href/url(), an @import, or fetch/import() of a non-local address
NETWORK = re.compile(r'''https?://|(?:src|href)\s*=\s*["']?//|url\(\s*["']?//|@import|(?:fetch|import)\s*\(\s*["'`](?!data/)''', re.I)


def read_data(path: Path):
    "The object a data script assigns to `CS_DATA[key]`."
    text = path.read_text()
    return json.loads(text[text.index('] = ') + 4:].rstrip().rstrip(';'))


@pytest.fixture(scope='module')
def features(): return pd.read_csv(REPORTS/'features.csv')


@pytest.fixture(scope='module')
def results(): return json.loads((REPORTS/'cd4_steering.json').read_text())


def test_every_feature_has_its_data(features):
    ix = read_data(BROWSER/'data/index.js')
    assert ix['feature'] == features.feature.tolist()
    assert sorted(p.name for p in (BROWSER/'data/f').iterdir()) == [Path(feature_file(f)).name for f in features.feature]
    meta = read_data(BROWSER/'data/meta.js')
    assert meta['n_features'] == len(features) and meta['palette'][meta['source']] == '#1f77b4' and meta['palette'][meta['target']] == '#d62728'


def test_numbers_are_the_pipelines(features, results):
    ix = read_data(BROWSER/'data/index.js')
    alpha = pd.read_csv(REPORTS/'steering_alpha.csv').alpha.to_numpy()
    np.testing.assert_allclose(ix['density'], features.density, rtol=1e-6)
    np.testing.assert_allclose(ix['alpha'], alpha, rtol=1e-5, atol=1e-9)
    assert ix['term'] == [t if isinstance(t, str) else None for t in features.term1]
    assert ix['coexpression_term'] == [t if isinstance(t, str) else None for t in features.coexpression_term1]
    for f in (0, 1, int(features.n_significant.idxmax()), *[m['feature'] for m in results['steering']['moved_features'][:3]]):
        d, row = read_data(BROWSER/feature_file(f)), features.iloc[f]
        assert d['feature'] == f and abs(d['density'] - row.density) <= 1e-6 * row.density and abs(d['alpha'] - alpha[f]) <= 1e-5 * abs(alpha[f])
        for rule, pre in (('token', ''), ('coexpression', 'coexpression_')):
            assert d[rule]['gene_set'][:10] == row[f'{pre}top_genes'].split()
            assert len(d[rule]['terms']) == min(3, int(row[f'{pre}n_significant']))
            for i, t in enumerate(d[rule]['terms'], 1):
                assert (t['name'], t['id']) == (row[f'{pre}term{i}'], row[f'{pre}term{i}_id'])
                assert abs(t['ic'] - row[f'{pre}term{i}_ic']) <= 1e-5 * t['ic'] and abs(t['fdr'] - row[f'{pre}term{i}_fdr']) <= 1e-5 * t['fdr']
        assert len(d['fbar']) == results['data']['n_cells'] and sum(d['hist_counts']) > 0
    st = read_data(BROWSER/'data/steering.js')
    assert st['moved'] == results['steering']['moved_features']
    assert st['metrics'][0][1:] == [results['steering']['fraction_closer_heldout'], results['steering']['fraction_closer_heldout_ci']]
    moved = [m['feature'] for m in results['steering']['moved_features']]
    assert all(read_data(BROWSER/feature_file(f))['effect'] for f in moved)   # what steering a moved feature alone does
    for sf in results['single_feature']['features']: assert read_data(BROWSER/feature_file(sf['feature']))['effect']['source'] == 'single-feature step'


def test_offline_and_small():
    files = [p for p in BROWSER.rglob('*') if p.is_file()]
    for p in files:
        if p.suffix in ('.html', '.js', '.css'): assert not NETWORK.search(p.read_text()), p
        if p.suffix == '.png': assert p.parent.name == 'img'
    size = sum(p.stat().st_size for p in files)
    assert size <= 20e6, f'{size / 1e6:.1f} MB'


# ---------------------------------------------------------------- in Chromium
def _chromium_ready() -> bool:
    try: import playwright  # noqa: F401
    except ImportError: return False
    return Path(CHROMIUM).exists()

needs_chromium = pytest.mark.skipif(not _chromium_ready() and not os.environ.get('CELLSTEER_REQUIRE_BROWSER'),
                                    reason=f'needs {CHROMIUM} (apt-get install chromium) and playwright (the dev extra); CI sets CELLSTEER_REQUIRE_BROWSER')
SHOTS = Path(os.environ.get('CELLSTEER_SCREENSHOTS') or ROOT/'.cache/browser_screenshots')


@pytest.fixture(scope='module')
def page():
    from cellsteer_nb.browser import chromium_page
    SHOTS.mkdir(parents=True, exist_ok=True)
    with chromium_page(1280, 1000) as p: yield p


@needs_chromium
def test_index_search_feature_and_steering_pages(page, features, results):
    from cellsteer_nb.browser import open_page
    t = open_page(page, BROWSER/'index.html')
    n = len(features)
    assert page.inner_text('#count') == f'{n:,} features' and page.locator('#features tbody tr').count() == 50
    page.fill('#search', 'CD8B')
    ix = read_data(BROWSER/'data/index.js')
    expect = {f for f, g in zip(ix['feature'], ix['genes']) if 'CD8B' in g.split()}
    assert expect and page.inner_text('#count').startswith(f'{len(expect)} features')
    page.screenshot(path=str(SHOTS/'index_cd8b.png'))
    found = set()
    for _ in range(-(-len(expect) // 50)):   # every page of the matches
        found |= {int(x) for x in page.locator('#features tbody tr').evaluate_all('rs => rs.map(r => r.dataset.feature)')}
        page.click('#next')
    assert found == expect
    page.fill('#search', 'T cell receptor')   # GO term text
    assert int(page.inner_text('#count').split()[0]) == sum('t cell receptor' in s.lower() for s in ix['terms'])
    page.fill('#search', '')
    page.click('th[data-col="alpha"]')        # sort: the largest α first
    assert int(page.locator('#features tbody tr').first.get_attribute('data-feature')) == int(np.argmax(ix['alpha']))

    f = results['steering']['moved_features'][0]['feature']
    page.click('th[data-col="feature"]')
    open_page(page, BROWSER/f'feature.html#{f}', ready=str(f))
    for pid in ('p-density', 'p-labels', 'p-umap', 'p-cells', 'p-token', 'p-coexpression', 'p-effect', 'p-neighbours'): assert page.locator(f'#{pid}').count() == 1, pid
    d, row = read_data(BROWSER/feature_file(f)), features.iloc[f]
    assert page.inner_text('[data-k="density"]') == f'{100 * row.density:.3f}%'
    assert page.inner_text('[data-k="alpha"]') == f"{d['alpha']:.3f}" and page.inner_text('[data-k="moved"]') == 'yes'
    assert page.inner_text('[data-k="token_pr"]') == f'{row.participation_ratio:.2f}'
    assert page.inner_text('[data-k="coexpression_genes"]').split()[:10] == row.coexpression_top_genes.split()
    assert page.locator('#p-density svg rect').count() == sum(1 for _ in range(min(i for i, c in enumerate(d['hist_counts']) if c), max(i for i, c in enumerate(d['hist_counts']) if c) + 1))
    assert page.locator('#p-labels svg rect').count() == len(read_data(BROWSER/'data/meta.js')['labels'])
    assert page.locator('#p-cells tr').count() == 1 + len(d['top_cells'])
    assert page.inner_text('[data-k="effect_2_up"]').split() == d['effect']['2']['up']
    assert page.inner_text('[data-k="effect_-2_down"]').split() == d['effect']['-2']['down']
    painted = page.evaluate("() => { const c = document.getElementById('umap'); const a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < a.length; i += 4) n += a[i] > 0; return n; }")
    assert painted > 1000   # the UMAP is drawn
    page.screenshot(path=str(SHOTS/'feature.png'), full_page=True)
    nb = d['neighbours'][0]['feature']
    page.click(f'#p-neighbours a[href="feature.html#{nb}"]')
    page.wait_for_selector(f'body[data-ready="{nb}"]')
    assert page.inner_text('#title') == f'Feature {nb}'

    open_page(page, BROWSER/'steering.html')
    assert page.locator('#moved tr[data-feature]').count() == results['steering']['n_moved_features']
    assert f"{results['steering']['fraction_closer_heldout']:.4f}" in page.inner_text('#p-metrics')
    for img in ('path', 'umap'): assert page.evaluate(f"() => document.querySelector('img[src=\"img/{img}.png\"]').naturalWidth") > 100
    page.screenshot(path=str(SHOTS/'steering.png'), full_page=True)
    assert not page.console_errors, page.console_errors
    print(f'\nindex load at {n} features: {t:.2f} s; screenshots in {SHOTS}')


@needs_chromium
def test_load_time_at_the_seeds_width(page, tmp_path):
    "5,120 synthetic features (the seed's SAE width): the index opens and searches fast, a feature page loads only its own data."
    from cellsteer_nb.browser import open_page
    atlas = synthetic_atlas(5120, 700, n_genes=765, seed=0)
    t0 = time.perf_counter(); b = write_browser(tmp_path/'browser', synthetic_results(atlas), atlas, {}, tmp_path); t_write = time.perf_counter() - t0
    t_index = open_page(page, b/'index.html')
    assert page.inner_text('#count') == '5,120 features' and page.locator('#features tbody tr').count() == 50
    t0 = time.perf_counter(); page.fill('#search', 'G17'); t_search = time.perf_counter() - t0
    t_feature = open_page(page, b/'feature.html#5000', ready='5000')
    loaded = page.evaluate("() => [...document.scripts].map(s => s.getAttribute('src')).filter(s => s && s.startsWith('data/f/'))")
    assert loaded == ['data/f/05000.js'] and not page.console_errors, (loaded, page.console_errors)
    size = sum(p.stat().st_size for p in b.rglob('*') if p.is_file())
    print(f'\n5,120 features: {size / 1e6:.1f} MB written in {t_write:.1f} s; index {t_index:.2f} s, search {t_search:.2f} s, feature page {t_feature:.2f} s')
    assert t_index < 10 and t_feature < 5
