// cellsteer feature browser: hand-written, no libraries, nothing loaded from the network.
// Data are <script> files that fill window.CS_DATA (Chromium blocks fetch() of local files under file://).
'use strict';
const META = window.CS_DATA.meta;
const PAGE_SIZE = 50;

function esc(s) { return String(s ?? '').replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'})[c]); }
function num(x, d = 3) { return x === null || x === undefined ? '—' : Number(x).toFixed(d); }
function pct(x, d = 2) { return x === null || x === undefined ? '—' : (100 * x).toFixed(d) + '%'; }
function sci(x) { return x === null || x === undefined ? '—' : Number(x).toPrecision(3); }
function fref(f) { return `<a href="feature.html#${f}">f${f}</a>`; }
function colour(label) { return META.palette[label] || '#999'; }
function kv(pairs) { return '<dl class="kv">' + pairs.map(([k, v, key]) => `<dt>${k}</dt><dd${key ? ` data-k="${key}"` : ''}>${v}</dd>`).join('') + '</dl>'; }
function panel(id, title, body, wide) { return `<section class="panel${wide ? ' wide' : ''}" id="${id}"><h2>${title}</h2>${body}</section>`; }

// Load one data script once; resolves with its CS_DATA entry.
function load(key, src) {
  if (window.CS_DATA[key]) return Promise.resolve(window.CS_DATA[key]);
  return new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = src;
    s.onload = () => resolve(window.CS_DATA[key]);
    s.onerror = () => reject(new Error('cannot load ' + src));
    document.head.appendChild(s);
  });
}
function featureFile(f) { return `data/f/${String(f).padStart(5, '0')}.js`; }

// ---- index: every feature, sortable, searchable, paginated ----
const COLUMNS = [
  ['feature', 'feature', true, f => fref(f)],
  ['density', 'density (tokens)', true, x => pct(x, 3)],
  ['cell_density', 'cells active', true, x => pct(x, 1)],
  ['top_genes', 'top genes (token rule)', false, g => `<span class="genes">${esc(g)}</span>`],
  ['term', 'top GO term (token rule)', false, t => t ? esc(t) : '—'],
  ['term_ic', 'IC', true, x => num(x, 2)],
  ['coexpression_top_genes', 'top genes (co-expression)', false, g => `<span class="genes">${esc(g)}</span>`],
  ['coexpression_term', 'top GO term (co-expression)', false, t => t ? esc(t) : '—'],
  ['coexpression_term_ic', 'IC', true, x => num(x, 2)],
  ['alpha', 'α', true, x => num(x, 3)],
  ['top_label', 'most active in', false, l => `<span class="swatch" style="background:${colour(l)}"></span>${esc(l)}`],
];

function matches(ix, q) {
  const n = ix.feature.length;
  if (!q) return [...Array(n).keys()];
  const gene = q.toUpperCase(), text = q.toLowerCase(), out = [];
  for (let i = 0; i < n; i++) {
    if ((' ' + ix.genes[i] + ' ').toUpperCase().includes(' ' + gene + ' ') || ix.terms[i].toLowerCase().includes(text)) out.push(i);
  }
  return out;
}

function indexPage() {
  const ix = window.CS_DATA.index;
  const state = {q: '', sort: 'feature', dir: 1, page: 0, rows: null};
  const main = document.getElementById('main');
  main.innerHTML = `<p class="note">Every SAE feature of the layer-12 SAE (${META.n_features.toLocaleString('en')}); density = share of gene tokens where it fires,
    cells active = share of cells where it fires at some token; α = its scale in the <a href="steering.html">steering solution</a>
    (<span class="src">${esc(META.source)}</span> → <span class="tgt">${esc(META.target)}</span>; 1 = unchanged). Click a column to sort.</p>
    <div class="controls"><input id="search" type="search" placeholder="gene symbol (e.g. CD8B) or GO term text" aria-label="search">
    <span id="count"></span><button id="prev">‹ prev</button><span id="pageinfo"></span><button id="next">next ›</button></div>
    <table id="features"><thead><tr>${COLUMNS.map(([k, name, n]) => `<th class="sortable${n ? ' num' : ''}" data-col="${k}">${name}</th>`).join('')}</tr></thead><tbody></tbody></table>`;
  const order = () => {
    const v = ix[state.sort], rows = matches(ix, state.q);
    rows.sort((a, b) => {
      const x = v[a], y = v[b];
      if (x === y) return a - b;
      if (x === null) return 1; if (y === null) return -1;
      return (x < y ? -1 : 1) * state.dir;
    });
    state.rows = rows;
  };
  const draw = () => {
    const pages = Math.max(1, Math.ceil(state.rows.length / PAGE_SIZE));
    state.page = Math.min(state.page, pages - 1);
    const slice = state.rows.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
    main.querySelector('tbody').innerHTML = slice.map(i => `<tr data-feature="${ix.feature[i]}">` +
      COLUMNS.map(([k, , n, fmt]) => `<td${n ? ' class="num"' : ''}>${fmt(ix[k][i])}</td>`).join('') + '</tr>').join('');
    document.getElementById('count').textContent = `${state.rows.length.toLocaleString('en')} features` + (state.q ? ` match “${state.q}”` : '');
    document.getElementById('pageinfo').textContent = `page ${state.page + 1} of ${pages}`;
    main.querySelectorAll('th').forEach(th => th.classList.toggle('sorted-asc', th.dataset.col === state.sort && state.dir > 0));
    main.querySelectorAll('th').forEach(th => th.classList.toggle('sorted-desc', th.dataset.col === state.sort && state.dir < 0));
  };
  main.querySelectorAll('th.sortable').forEach(th => th.addEventListener('click', () => {
    state.dir = state.sort === th.dataset.col ? -state.dir : (th.classList.contains('num') && th.dataset.col !== 'feature' ? -1 : 1);
    state.sort = th.dataset.col; state.page = 0; order(); draw();
  }));
  document.getElementById('search').addEventListener('input', e => { state.q = e.target.value.trim(); state.page = 0; order(); draw(); });
  document.getElementById('prev').addEventListener('click', () => { state.page = Math.max(0, state.page - 1); draw(); });
  document.getElementById('next').addEventListener('click', () => { state.page += 1; draw(); });
  order(); draw();
  document.body.dataset.ready = '1';
}

// ---- small SVG charts ----
function histogram(counts, edges) {
  let lo = counts.findIndex(c => c > 0), hi = counts.length - 1 - [...counts].reverse().findIndex(c => c > 0);
  if (lo < 0) return '<p class="note">never active on these cells</p>';
  const W = 420, H = 170, m = 34, bins = counts.slice(lo, hi + 1), top = Math.max(...bins), bw = (W - m - 8) / bins.length;
  const bars = bins.map((c, i) => `<rect x="${m + i * bw}" y="${H - 22 - (H - 40) * c / top}" width="${Math.max(bw - 1, 1)}" height="${(H - 40) * c / top}" fill="#555"><title>${sci(edges[lo + i])}–${sci(edges[lo + i + 1])}: ${c}</title></rect>`);
  return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="histogram">${bars.join('')}
    <line x1="${m}" y1="${H - 22}" x2="${W - 8}" y2="${H - 22}" stroke="#999"/>
    <text x="${m}" y="${H - 6}" font-size="11">${sci(edges[lo])}</text><text x="${W - 8}" y="${H - 6}" font-size="11" text-anchor="end">${sci(edges[hi + 1])}</text>
    <text x="${(W + m) / 2}" y="${H - 6}" font-size="11" text-anchor="middle">activation (log scale)</text>
    <text x="4" y="14" font-size="11">${top.toLocaleString('en')}</text></svg>`;
}

function labelBars(values) {
  const W = 420, rowH = 20, m = 110, top = Math.max(...values, 1e-12);
  const rows = META.labels.map((l, i) => `<text x="${m - 6}" y="${i * rowH + 14}" font-size="12" text-anchor="end">${esc(l)}</text>
    <rect x="${m}" y="${i * rowH + 3}" width="${(W - m - 70) * values[i] / top}" height="${rowH - 6}" fill="${colour(l)}"/>
    <text x="${m + (W - m - 70) * values[i] / top + 4}" y="${i * rowH + 14}" font-size="11" data-label="${esc(l)}">${sci(values[i])}</text>`);
  return `<svg viewBox="0 0 ${W} ${META.labels.length * rowH + 4}" width="100%" role="img" aria-label="mean by label">${rows.join('')}</svg>`;
}

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function viridis(t) {
  const x = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1), i = Math.min(Math.floor(x), VIRIDIS.length - 2), u = x - i;
  return `rgb(${VIRIDIS[i].map((c, k) => Math.round(c + (VIRIDIS[i + 1][k] - c) * u)).join(',')})`;
}

function drawUmap(canvas, values) {
  const ctx = canvas.getContext('2d'), W = canvas.width, H = canvas.height, pts = META.umap;
  const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys), top = Math.max(...values, 1e-12);
  const px = x => 10 + (W - 20) * (x - x0) / (x1 - x0 || 1), py = y => H - 10 - (H - 20) * (y - y0) / (y1 - y0 || 1);
  ctx.clearRect(0, 0, W, H);
  const order = [...values.keys()].sort((a, b) => values[a] - values[b]);   // active cells drawn last, on top
  for (const i of order) {
    ctx.fillStyle = values[i] > 0 ? viridis(values[i] / top) : '#d8d8d8';
    ctx.beginPath(); ctx.arc(px(pts[i][0]), py(pts[i][1]), values[i] > 0 ? 3 : 2, 0, 2 * Math.PI); ctx.fill();
  }
}

// ---- one feature ----
function termsTable(terms) {
  if (!terms.length) return '<p class="note">no significant GO term (FDR &lt; 0.05)</p>';
  return '<table><tr><th>GO term</th><th class="num">IC</th><th class="num">FDR</th></tr>' +
    terms.map(t => `<tr><td>${esc(t.name)} <span class="note">${esc(t.id)}</span></td><td class="num">${num(t.ic, 2)}</td><td class="num">${sci(t.fdr)}</td></tr>`).join('') + '</table>';
}

function rulePanel(d, rule, title, prKey) {
  const r = d[rule];
  return panel(`p-${rule}`, title, kv([['participation ratio', num(r.participation_ratio, 2), `${rule}_pr`], ['gene-set size', r.set_size, `${rule}_size`],
      ['significant GO terms', r.n_significant, `${rule}_nsig`]]) +
    `<p class="genes" data-k="${rule}_genes">${r.gene_set.slice(0, 30).map(esc).join(' ')}${r.gene_set.length > 30 ? ' …' : ''}</p>` + termsTable(r.terms));
}

function effectPanel(d) {
  const e = d.effect, moved = Math.abs(d.alpha - 1) > META.moved_threshold;
  const head = kv([['α in the steering solution', num(d.alpha, 3), 'alpha'], ['moved (|α − 1| > 0.3)', moved ? 'yes' : 'no', 'moved']]);
  if (!e) return panel('p-effect', 'Steering this feature alone', head + '<p class="note">Not computed: the browser computes this for the moved features of the steering solution and the single-feature step\'s features.</p>');
  const list = (a, side) => `<span class="genes ${side}" data-k="effect_${a}_${side}">${e[a][side].map(esc).join(' ') || '—'}</span>`;
  return panel('p-effect', 'Steering this feature alone', head +
    `<p class="note">Scaled alone in its ${e.n_cells} most active cells (${esc(e.source)}); unmasked readout, paired t-test per gene, Bonferroni &lt; 0.05; top 10 each way.</p>
    <table><tr><th></th><th>genes up</th><th>genes down</th></tr>
    <tr><td>α = 2</td><td>${list('2', 'up')}</td><td>${list('2', 'down')}</td></tr>
    <tr><td>α = −2</td><td>${list('-2', 'up')}</td><td>${list('-2', 'down')}</td></tr></table>`);
}

function renderFeature(d) {
  document.getElementById('title').textContent = `Feature ${d.feature}`;
  const cells = '<table><tr><th>cell</th><th>label</th><th class="num">mean activation</th></tr>' + d.top_cells.map(c =>
    `<tr><td>${esc(c.name)}</td><td><span class="swatch" style="background:${colour(c.label)}"></span>${esc(c.label)}</td><td class="num">${sci(c.value)}</td></tr>`).join('') + '</table>';
  const nb = '<table><tr><th>feature</th><th class="num">cosine</th><th>top term (token)</th><th>top term (co-expression)</th></tr>' + d.neighbours.map(n =>
    `<tr><td>${fref(n.feature)}</td><td class="num">${num(n.cos, 3)}</td><td>${esc(n.term ?? '—')}</td><td>${esc(n.coexpression_term ?? '—')}</td></tr>`).join('') + '</table>';
  document.getElementById('main').innerHTML = `<p><a href="feature.html#${Math.max(d.feature - 1, 0)}">‹ previous</a> · <a href="feature.html#${Math.min(d.feature + 1, META.n_features - 1)}">next ›</a></p>
  <div class="grid">
  ${panel('p-density', 'Activation density', kv([['share of gene tokens where it fires', pct(d.density, 3), 'density'], ['share of cells where it fires', pct(d.cell_density, 1), 'cell_density'],
      ['mean over cells of the per-cell mean', sci(d.fbar_mean), 'fbar_mean'], ['most active in', esc(d.top_label), 'top_label']]) +
      '<h2>Non-zero activations (every gene token)</h2>' + histogram(d.hist_counts, META.hist_edges))}
  ${panel('p-labels', 'Mean activation by cell type', labelBars(d.by_label) + '<p class="note">Mean over each label\'s cells of the per-cell mean over gene tokens.</p>')}
  ${panel('p-umap', 'Layer-12 UMAP coloured by this feature', `<canvas id="umap" width="420" height="340"></canvas><p class="note">Per-cell mean activation (viridis, yellow = highest); grey: not active.</p>`)}
  ${panel('p-cells', 'Top-activating cells', cells)}
  ${rulePanel(d, 'token', 'Token rule: top genes and GO terms')}
  ${rulePanel(d, 'coexpression', 'Co-expression rule: top genes and GO terms')}
  ${effectPanel(d)}
  ${panel('p-neighbours', 'Nearest features by decoder cosine', nb)}
  </div>`;
  drawUmap(document.getElementById('umap'), d.fbar);
  document.body.dataset.ready = String(d.feature);
}

function featurePage() {
  const show = () => {
    const f = parseInt(location.hash.slice(1) || '0', 10);
    if (!(f >= 0 && f < META.n_features)) { document.getElementById('main').innerHTML = `<p>No feature ${esc(location.hash.slice(1))}.</p>`; return; }
    load(`f/${f}`, featureFile(f)).then(renderFeature, err => { document.getElementById('main').innerHTML = `<p>${esc(err.message)}</p>`; });
  };
  window.addEventListener('hashchange', show);
  show();
}

// ---- the steering solution ----
function steeringPage(s) {
  document.getElementById('title').innerHTML = `Steering <span class="src">${esc(META.source)}</span> cells toward <span class="tgt">${esc(META.target)}</span>`;
  const one = x => Number.isInteger(x) ? String(x) : (x !== 0 && Math.abs(x) < 1e-3 ? sci(x) : num(x, 4));
  const val = v => Array.isArray(v) ? v.map(one).join(' / ') : one(v);
  const metrics = '<table><tr><th>held-out metric</th><th class="num">value</th><th class="num">95% CI</th></tr>' + s.metrics.map(([k, v, ci]) =>
    `<tr><td>${esc(k)}</td><td class="num">${val(v)}</td><td class="num">${ci ? '[' + ci.map(x => num(x, 4)).join(', ') + ']' : ''}</td></tr>`).join('') + '</table>';
  const controls = '<table><tr><th>control</th><th class="num">value</th></tr>' + s.controls.map(([k, v]) => `<tr><td>${esc(k)}</td><td class="num">${val(v)}</td></tr>`).join('') + '</table>';
  const moved = '<table id="moved"><tr><th>feature</th><th class="num">α</th><th class="num">mean f̄ (source)</th><th>top genes (token)</th><th>top term (token)</th><th>top genes (co-expression)</th><th>top term (co-expression)</th></tr>' +
    s.moved.map(m => `<tr data-feature="${m.feature}"><td>${fref(m.feature)}</td><td class="num">${num(m.alpha, 3)}</td><td class="num">${num(m.fbar_source, 4)}</td>
      <td class="genes">${esc(m.top_genes.split(' ').slice(0, 5).join(' '))}</td><td>${esc(m.term1 ?? '—')}</td>
      <td class="genes">${esc(m.coexpression_top_genes.split(' ').slice(0, 5).join(' '))}</td><td>${esc(m.coexpression_term1 ?? '—')}</td></tr>`).join('') + '</table>';
  const img = (k, alt) => s.images[k] ? `<img class="figure" src="${s.images[k]}" alt="${alt}">` : '<p class="note">(figure not drawn in this run)</p>';
  document.getElementById('main').innerHTML = `<div class="grid">
    ${panel('p-moved', `Moved features (${s.moved.length}; |α − 1| &gt; ${META.moved_threshold}), α ascending`, moved, true)}
    ${panel('p-metrics', 'Held-out metrics', metrics)}
    ${panel('p-controls', 'Controls', controls)}
    ${panel('p-path', 'λ path', `<p class="note">λ_max ${num(s.lambda_path[0], 4)}, chosen λ ${num(s.lambda_path[1], 4)}, smallest λ ${num(s.lambda_path[2], 4)}</p>` + img('path', 'lambda path'), true)}
    ${panel('p-umap', 'Steered cells on the layer-12 UMAP', img('umap', 'steered UMAP'), true)}
    ${panel('p-controls-figure', 'Controls (figure)', img('controls', 'controls'), true)}
  </div>`;
  document.body.dataset.ready = '1';
}

// ---- start ----
document.getElementById('title').textContent = META.title;
const page = document.body.dataset.page;
if (page === 'index') load('index', 'data/index.js').then(indexPage);
else if (page === 'feature') featurePage();
else if (page === 'steering') load('steering', 'data/steering.js').then(steeringPage);
