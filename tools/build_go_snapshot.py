#!/usr/bin/env python3
"""Build the offline GO snapshot in `cellsteer_nb/assets/go/` from Bioconductor's Debian packages.

Bioconductor's annotation packages are SQLite databases, and Debian packages them: `r-bioc-go.db` holds `GO.sqlite`
(terms, obsolete terms, synonyms and alt_ids, and per-ontology parent tables whose `relationship_type` is `isa`,
`part of`, `regulates`, `positively regulates` or `negatively regulates`, i.e. exactly go-basic's relations), and
`r-bioc-org.hs.eg.db` holds `org.Hs.eg.sqlite` (Entrez genes, symbols, aliases, and direct GO annotations
`go_bp`/`go_mf`/`go_cc` with evidence codes, built from NCBI's `gene2go`). Each has a `metadata` table with its
source dates. This script only downloads and unpacks them (`apt-get download`, `dpkg-deb -x`; nothing is installed)
into a scratch folder outside the repository and converts them:

- `go-basic.obo.gz`: one `[Term]` per GO term in id order (`id`, `name`, `namespace`, `alt_id`s, `is_a` parents, the
  other parent relations as `relationship:` lines); GO.db's pseudo-term `all` above the three roots is dropped;
  obsolete terms carry `is_obsolete: true` (GO.db keeps no `replaced_by`/`consider`); definitions are left out unless
  asked for (`--definitions`).
- `gene2go_human.tsv.gz`: the direct annotations (`go_bp`, `go_mf`, `go_cc`; the propagated `*_all` tables are not
  used) joined to the Entrez id and the current official symbol. The schema has no qualifier column, so NCBI's `NOT`
  annotations cannot be told apart here.
- `symbols_human.tsv.gz`: the alias table (every symbol is its own alias; previous symbols are aliases).
- `SOURCE.md`: packages, versions, checksums, the dates of the databases' `metadata` tables, counts, and this command.

Rows are sorted and gzip's timestamp is zero, so the same packages give the same bytes. The library
(`cellsteer_nb.go`) only loads the result; `tests/test_go_snapshot.py` checks the conversion on synthetic databases
with the same schema, so tests never need apt or the network.

Run from the repository root (needs `apt-get`, `dpkg-deb` and network access to a Debian mirror; run
`apt-get update` once before):

    python tools/build_go_snapshot.py            # writes cellsteer_nb/assets/go/
    python tools/build_go_snapshot.py --out DIR --workdir /tmp/cellsteer_go_debs
"""
import argparse, contextlib, gzip, shutil, sqlite3, subprocess, sys
from pathlib import Path
import pandas as pd
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's cellsteer_nb, installed or not
from cellsteer_nb.core import atomic_write, file_hash
from cellsteer_nb.go import GO_DIR, OBO_NAME, GENE2GO_NAME, SYMBOLS_NAME, NAMESPACES

BIOC_DEBS = ('r-bioc-go.db', 'r-bioc-org.hs.eg.db')
_REL = {'isa': 'is_a', 'part of': 'part_of', 'regulates': 'regulates',
        'negatively regulates': 'negatively_regulates', 'positively regulates': 'positively_regulates'}
_REBUILD = """apt-get update
python tools/build_go_snapshot.py"""


def download_bioc_go(workdir) -> dict:
    "`apt-get download` + `dpkg-deb -x` the Bioconductor GO packages into `workdir`; SQLite paths and package provenance."
    workdir = Path(workdir); workdir.mkdir(parents=True, exist_ok=True)
    subprocess.run(['apt-get', 'download', *BIOC_DEBS], cwd=workdir, check=True)
    debs = {}
    for pkg in BIOC_DEBS:
        deb = sorted(workdir.glob(f'{pkg}_*.deb'))[-1]
        version = subprocess.run(['dpkg-deb', '-f', str(deb), 'Version'], capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(['dpkg-deb', '-x', str(deb), str(workdir/'root')], check=True)
        debs[pkg] = {'version': version, 'file': deb.name, 'sha256': file_hash(deb)}
    lib = workdir/'root/usr/lib/R/site-library'
    return {'go_sqlite': lib/'GO.db/extdata/GO.sqlite', 'org_sqlite': lib/'org.Hs.eg.db/extdata/org.Hs.eg.sqlite', 'debs': debs}


def _meta(con) -> dict: return dict(con.execute('select name, value from metadata').fetchall())


def _ro(path): return sqlite3.connect(f'file:{Path(path).resolve()}?mode=ro', uri=True)


def godb_to_obo(go_sqlite, definitions: bool = False) -> str:
    "The GO DAG of GO.db's `GO.sqlite` as go-basic-style OBO text (is_a, part_of, regulates relations, alt_ids, obsolete terms); `def:` lines if `definitions`."
    con = _ro(go_sqlite)
    meta = _meta(con)
    terms = con.execute("select _id, go_id, term, ontology, definition from go_term where go_id like 'GO:%'").fetchall()
    id2go = {i: g for i, g, *_ in terms}
    names = {g: n for _, g, n, *_ in terms}
    parents = {}
    for ns in ('bp', 'mf', 'cc'):
        for i, p, rel in con.execute(f'select _id, _parent_id, relationship_type from go_{ns}_parents'):
            if i in id2go and p in id2go: parents.setdefault(id2go[i], set()).add((_REL[rel], id2go[p]))
    alts = {}
    for i, alt in con.execute('select _id, secondary from go_synonym where like_go_id = 1 and secondary is not null'):
        if i in id2go: alts.setdefault(id2go[i], set()).add(alt)
    obsolete = con.execute('select go_id, term, ontology, definition from go_obsolete').fetchall()
    con.close()
    recs = [(g, n, o, d, False) for _, g, n, o, d in terms] + [(g, n, o, d, True) for g, n, o, d in obsolete]
    # the remark names the converter's first home, kept verbatim: a rebuild reproduces the committed bytes (sha256 in SOURCE.md)
    out = ['format-version: 1.2', f"data-version: releases/{meta['GOSOURCEDATE']}", 'ontology: go',
           f"remark: converted by cellsteer_nb.go from Bioconductor GO.db (source {meta.get('GOSOURCEURL', '?')})", '']
    for g, n, o, d, obs in sorted(recs):
        out += ['[Term]', f'id: {g}', f'name: {n}', f'namespace: {NAMESPACES[o]}']
        out += [f'alt_id: {a}' for a in sorted(alts.get(g, ()))]
        if definitions and d: out.append('def: "' + d.replace('\\', '\\\\').replace('"', '\\"').replace('\n', ' ') + '" []')
        edges = sorted(parents.get(g, ()))
        out += [f'is_a: {p} ! {names[p]}' for r, p in edges if r == 'is_a']
        if obs: out.append('is_obsolete: true')
        out += [f'relationship: {r} {p} ! {names[p]}' for r, p in edges if r != 'is_a']
        out.append('')
    typedefs = {'negatively_regulates': ['is_a: regulates ! regulates'], 'part_of': ['is_transitive: true'],
                'positively_regulates': ['is_a: regulates ! regulates'], 'regulates': ['transitive_over: part_of ! part of']}
    for r, extra in typedefs.items(): out += ['[Typedef]', f'id: {r}', f"name: {r.replace('_', ' ')}", *extra, '']
    return '\n'.join(out)


def orgdb_tables(org_sqlite) -> tuple:
    "(gene2go, symbols) DataFrames from org.Hs.eg.db's `org.Hs.eg.sqlite`: direct GO annotations `symbol, entrez_id, go_id, evidence, ontology`; `alias, symbol, entrez_id`."
    con = _ro(org_sqlite)
    q = ' union all '.join(f"select gi.symbol, g.gene_id as entrez_id, a.go_id, a.evidence, '{ns}' as ontology from go_{ns.lower()} a "
                           'join genes g on g._id = a._id join gene_info gi on gi._id = a._id' for ns in NAMESPACES)
    g2g = pd.read_sql_query(q, con).drop_duplicates()
    sym = pd.read_sql_query('select a.alias_symbol as alias, gi.symbol, g.gene_id as entrez_id from alias a '
                            'join genes g on g._id = a._id join gene_info gi on gi._id = a._id', con).drop_duplicates()
    con.close()
    for df in (g2g, sym): df['entrez_id'] = df['entrez_id'].astype(int)
    g2g = g2g.sort_values(['entrez_id', 'ontology', 'go_id', 'evidence'], ignore_index=True)
    sym = sym.sort_values(['alias', 'entrez_id'], ignore_index=True)
    return g2g, sym


def _gz(text: str) -> bytes: return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def build_go_snapshot(go_sqlite, org_sqlite, out_dir, debs: dict | None = None, definitions: bool = False) -> dict:
    """Convert GO.db's `GO.sqlite` and org.Hs.eg.db's `org.Hs.eg.sqlite` into `out_dir`: gzipped OBO, annotation and
    symbol tables, and SOURCE.md (with the Debian provenance `debs` from `download_bioc_go`). Returns the counts."""
    out_dir = Path(out_dir)
    obo = godb_to_obo(go_sqlite, definitions)
    g2g, sym = orgdb_tables(org_sqlite)
    atomic_write(out_dir/OBO_NAME, _gz(obo))
    atomic_write(out_dir/GENE2GO_NAME, _gz(g2g.to_csv(sep='\t', index=False, lineterminator='\n')))
    atomic_write(out_dir/SYMBOLS_NAME, _gz(sym.to_csv(sep='\t', index=False, lineterminator='\n')))
    with contextlib.closing(_ro(go_sqlite)) as c: gmeta = _meta(c)
    with contextlib.closing(_ro(org_sqlite)) as c: ometa = _meta(c)
    n_terms, n_obs = obo.count('[Term]'), obo.count('is_obsolete: true')
    rels = {r: obo.count(f'relationship: {r} ') for r in ('part_of', 'regulates', 'positively_regulates', 'negatively_regulates')}
    info = {'go_release': gmeta.get('GOSOURCEDATE'), 'go_annotation_date': ometa.get('GOEGSOURCEDATE'),
            'entrez_gene_date': ometa.get('EGSOURCEDATE'), 'n_terms': n_terms - n_obs, 'n_obsolete': n_obs,
            'n_is_a': obo.count('\nis_a: GO:'), **{f'n_{r}': n for r, n in rels.items()},
            'n_annotations': len(g2g), 'n_genes_annotated': int(g2g.entrez_id.nunique()), 'n_aliases': len(sym)}
    files = {n: (out_dir/n).stat().st_size for n in (OBO_NAME, GENE2GO_NAME, SYMBOLS_NAME)}
    deb_lines = [f"- `{p}` {d['version']} (`{d['file']}`, sha256 `{d['sha256']}`)" for p, d in (debs or {}).items()] or \
                [f'- `{p}` (version not recorded)' for p in BIOC_DEBS]
    src = f"""# GO snapshot: source

Built by `tools/build_go_snapshot.py` from the Debian packages (Debian bookworm;
downloaded with `apt-get download`, unpacked with `dpkg-deb -x`, not installed):
{chr(10).join(deb_lines)}

| | date (from the databases' `metadata` tables) |
|---|---|
| GO release (`GO.sqlite` GOSOURCEDATE; {gmeta.get('GOSOURCEURL', '')}) | {info['go_release']} |
| GO annotations (`org.Hs.eg.sqlite` GOEGSOURCEDATE; NCBI gene2go) | {info['go_annotation_date']} |
| Entrez Gene symbols and aliases (EGSOURCEDATE) | {info['entrez_gene_date']} |

## Files
| file | bytes | sha256 | content |
|---|---|---|---|
| `{OBO_NAME}` | {files[OBO_NAME]:,} | `{file_hash(out_dir/OBO_NAME)}` | {info['n_terms']:,} live + {info['n_obsolete']:,} obsolete terms; {info['n_is_a']:,} `is_a`, {info['n_part_of']:,} `part_of`, {info['n_regulates']:,} `regulates`, {info['n_positively_regulates']:,} `positively_regulates`, {info['n_negatively_regulates']:,} `negatively_regulates` edges; alt_ids; {'with' if definitions else 'no'} definitions |
| `{GENE2GO_NAME}` | {files[GENE2GO_NAME]:,} | `{file_hash(out_dir/GENE2GO_NAME)}` | `symbol, entrez_id, go_id, evidence, ontology`: {info['n_annotations']:,} direct annotations of {info['n_genes_annotated']:,} human genes (tax 9606; no NOT qualifiers in the source schema) |
| `{SYMBOLS_NAME}` | {files[SYMBOLS_NAME]:,} | `{file_hash(out_dir/SYMBOLS_NAME)}` | `alias, symbol, entrez_id`: {info['n_aliases']:,} rows (each current symbol is its own alias) |

## Rebuild
```
{_REBUILD}
```
Output is deterministic (sorted rows, gzip mtime 0): the same packages give the same bytes.
"""
    atomic_write(out_dir/'SOURCE.md', src)
    return {**info, 'files': files}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default=str(GO_DIR), help='output folder (default: the bundled cellsteer_nb/assets/go)')
    ap.add_argument('--workdir', default='/tmp/cellsteer_go_debs', help='scratch folder for the .debs, outside the repository')
    ap.add_argument('--definitions', action='store_true', help='keep GO term definitions in the OBO')
    ap.add_argument('--keep', action='store_true', help='keep the scratch folder')
    args = ap.parse_args(argv)
    src = download_bioc_go(args.workdir)
    summary = build_go_snapshot(src['go_sqlite'], src['org_sqlite'], args.out, debs=src['debs'], definitions=args.definitions)
    if not args.keep: shutil.rmtree(args.workdir, ignore_errors=True)
    print({k: v for k, v in summary.items() if k != 'files'})


if __name__ == '__main__':
    main()
