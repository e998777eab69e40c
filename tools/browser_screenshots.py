"""Screenshots of the feature browser in headless Chromium, for the report and the README (`make report` runs this after
the report notebook). A feature's page (the first moved feature of the steering solution) goes to `--out`; with `--all`,
the index (after a search for CD8B) and the steering page as well."""
import argparse, json
from pathlib import Path
from cellsteer_nb.browser import BROWSER_SCREENSHOT, chromium_page, open_page

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument('--reports', default='reports', help='the folder `make report` wrote (with browser/ and cd4_steering.json)')
ap.add_argument('--out', default=None, help=f'the feature page screenshot (default REPORTS/{BROWSER_SCREENSHOT})')
ap.add_argument('--all', metavar='DIR', default=None, help='also write index.png and steering.png into DIR')
args = ap.parse_args()
reports = Path(args.reports)
f = json.loads((reports/'cd4_steering.json').read_text())['steering']['moved_features'][0]['feature']
with chromium_page(1280, 1500) as page:
    open_page(page, reports/f'browser/feature.html#{f}', ready=str(f))
    page.screenshot(path=str(args.out or reports/BROWSER_SCREENSHOT), full_page=False)
    if args.all:
        open_page(page, reports/'browser/index.html'); page.fill('#search', 'CD8B')
        page.screenshot(path=str(Path(args.all)/'index.png'))
        open_page(page, reports/'browser/steering.html'); page.screenshot(path=str(Path(args.all)/'steering.png'), full_page=True)
    assert not page.console_errors, page.console_errors
print(f'feature {f}: {args.out or reports/BROWSER_SCREENSHOT}')
