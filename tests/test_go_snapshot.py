"""The GO snapshot builder (`tools/build_go_snapshot.py`) on synthetic Bioconductor databases, and its output read back
by the library's loaders (`cellsteer_nb.go`). No apt, no network: the fixtures have GO.db's and org.Hs.eg.db's schema."""
import gzip, importlib.util, sqlite3, warnings
from pathlib import Path
import pytest
from cellsteer_nb.core import file_hash
from cellsteer_nb.go import OBO_NAME, GENE2GO_NAME, SYMBOLS_NAME, load_godag, load_alias_map, map_symbols, load_gene2go, read_gene2go

ROOT = Path(__file__).resolve().parents[1]


def _load_builder():
    spec = importlib.util.spec_from_file_location('build_go_snapshot', ROOT/'tools'/'build_go_snapshot.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


bgs = _load_builder()


def _mini_go(path):
    "A tiny GO.sqlite with GO.db's schema: a BP chain down to B cell receptor signaling pathway, a CC complex part_of the plasma membrane."
    con = sqlite3.connect(path)
    con.executescript('''
    create table metadata (name text primary key, value text);
    create table go_term (_id integer primary key, go_id text, term text, ontology text, definition text);
    create table go_obsolete (go_id text primary key, term text, ontology text, definition text);
    create table go_synonym (_id integer, synonym text, secondary text, like_go_id integer);
    create table go_bp_parents (_id integer, _parent_id integer, relationship_type text);
    create table go_mf_parents (_id integer, _parent_id integer, relationship_type text);
    create table go_cc_parents (_id integer, _parent_id integer, relationship_type text);
    insert into metadata values ('GOSOURCEDATE', '2022-07-01'), ('GOSOURCEURL', 'http://example/go-basic.obo');
    insert into go_term values (1, 'all', 'all', 'universal', null),
      (2, 'GO:0008150', 'biological_process', 'BP', 'A process.'), (3, 'GO:0002376', 'immune system process', 'BP', null),
      (4, 'GO:0050851', 'antigen receptor-mediated signaling pathway', 'BP', null),
      (5, 'GO:0050853', 'B cell receptor signaling pathway', 'BP', 'The "BCR" pathway.'),
      (6, 'GO:0003674', 'molecular_function', 'MF', null), (7, 'GO:0005575', 'cellular_component', 'CC', null),
      (8, 'GO:0005886', 'plasma membrane', 'CC', null), (9, 'GO:0098802', 'plasma membrane signaling receptor complex', 'CC', null);
    insert into go_obsolete values ('GO:0000005', 'obsolete ribosomal chaperone activity', 'MF', 'OBSOLETE.');
    insert into go_synonym values (5, 'GO:0099999', 'GO:0099999', 1), (5, 'BCR signaling', null, 0);
    insert into go_bp_parents values (2, 1, 'isa'), (3, 2, 'isa'), (4, 3, 'isa'), (5, 4, 'isa');
    insert into go_mf_parents values (6, 1, 'isa');
    insert into go_cc_parents values (7, 1, 'isa'), (8, 7, 'isa'), (9, 7, 'isa'), (9, 8, 'part of');
    ''')
    con.commit(); con.close(); return path


def _mini_org(path):
    "A tiny org.Hs.eg.sqlite with org.Hs.eg.db's schema: a duplicated row, an ambiguous alias (CD8), a mitochondrial gene (ND3)."
    con = sqlite3.connect(path)
    con.executescript('''
    create table metadata (name text primary key, value text);
    create table genes (_id integer primary key, gene_id text);
    create table gene_info (_id integer, gene_name text, symbol text);
    create table go_bp (_id integer, go_id text, evidence text);
    create table go_mf (_id integer, go_id text, evidence text);
    create table go_cc (_id integer, go_id text, evidence text);
    create table alias (_id integer, alias_symbol text);
    insert into metadata values ('EGSOURCEDATE', '2022-Sep12'), ('GOEGSOURCEDATE', '2022-Sep12'), ('GOSOURCEDATE', '2022-07-01'), ('TAXID', '9606');
    insert into genes values (1, '973'), (2, '925'), (3, '4537'), (4, '1');
    insert into gene_info values (1, 'CD79a molecule', 'CD79A'), (2, 'CD8a molecule', 'CD8A'), (3, 'NADH dehydrogenase 3', 'ND3'), (4, 'other', 'OTHER');
    insert into go_bp values (1, 'GO:0050853', 'IBA'), (1, 'GO:0050853', 'ISS'), (1, 'GO:0050853', 'ISS'),
      (2, 'GO:0002376', 'IDA'), (2, 'GO:0008150', 'ND'), (3, 'GO:0008150', 'IEA');
    insert into go_mf values (2, 'GO:0003674', 'ND');
    insert into go_cc values (1, 'GO:0098802', 'IDA');
    insert into alias values (1, 'CD79A'), (1, 'IGA'), (1, 'MB-1'), (2, 'CD8A'), (2, 'CD8'), (3, 'ND3'), (4, 'OTHER'), (4, 'CD8');
    ''')
    con.commit(); con.close(); return path


@pytest.fixture(scope='module')
def dbs(tmp_path_factory):
    d = tmp_path_factory.mktemp('bioc')
    return _mini_go(d/'GO.sqlite'), _mini_org(d/'org.Hs.eg.sqlite')


@pytest.fixture(scope='module')
def snap(dbs, tmp_path_factory):
    "The mini snapshot written by the builder."
    out = tmp_path_factory.mktemp('snap')
    summary = bgs.build_go_snapshot(*dbs, out, debs={'r-bioc-go.db': {'version': '0', 'file': 'x.deb', 'sha256': 'ab'}})
    return out, summary


def test_godb_to_obo(dbs):
    mini_go, _ = dbs
    obo_text = bgs.godb_to_obo(mini_go)
    assert 'id: all' not in obo_text and 'data-version: releases/2022-07-01' in obo_text  # the pseudo-root is dropped
    assert 'relationship: part_of GO:0005886 ! plasma membrane' in obo_text and 'alt_id: GO:0099999' in obo_text
    assert '[Term]\nid: GO:0000005\nname: obsolete ribosomal chaperone activity\nnamespace: molecular_function\nis_obsolete: true\n' in obo_text
    assert 'def:' not in obo_text and 'def: "The \\"BCR\\" pathway." []' in bgs.godb_to_obo(mini_go, definitions=True)


def test_orgdb_tables(dbs):
    g2g_mini, sym_mini = bgs.orgdb_tables(dbs[1])
    assert list(g2g_mini.columns) == ['symbol', 'entrez_id', 'go_id', 'evidence', 'ontology']
    assert len(g2g_mini) == 7  # the duplicated ISS row is dropped
    assert sorted(g2g_mini.query('symbol == "CD79A"').evidence) == ['IBA', 'IDA', 'ISS']
    assert sym_mini.query('alias == "CD8"').symbol.tolist() == ['OTHER', 'CD8A']  # sorted by entrez id: an ambiguous alias


def test_build_go_snapshot(dbs, snap, tmp_path):
    out, summary = snap
    assert (summary['n_terms'], summary['n_obsolete'], summary['n_part_of'], summary['n_genes_annotated']) == (8, 1, 1, 3)
    src_md = (out/'SOURCE.md').read_text()
    assert '2022-07-01' in src_md and '2022-Sep12' in src_md and 'python tools/build_go_snapshot.py' in src_md
    assert "`r-bioc-go.db` 0 (`x.deb`, sha256 `ab`)" in src_md
    assert f"`{file_hash(out/OBO_NAME)}`" in src_md  # checksums of the files written
    bgs.build_go_snapshot(*dbs, tmp_path)
    for name in (OBO_NAME, GENE2GO_NAME, SYMBOLS_NAME): assert file_hash(tmp_path/name) == file_hash(out/name)  # deterministic bytes
    assert gzip.decompress((out/OBO_NAME).read_bytes()).decode() == bgs.godb_to_obo(dbs[0])


def test_bundled_obo_header_matches_builder():
    "The committed snapshot's OBO header is the one the builder writes (so a rebuild can reproduce its bytes)."
    from cellsteer_nb.go import GO_DIR
    with gzip.open(GO_DIR/OBO_NAME, 'rt') as f: head = [next(f) for _ in range(4)]
    assert head[3] == 'remark: converted by cellsteer_nb.go from Bioconductor GO.db (source http://current.geneontology.org/ontology/go-basic.obo)\n'


def test_round_trip_goatools(snap, tmp_path):
    "The converter's output read by goatools (`load_godag`): part_of, alt_id, obsolete handling."
    out, _ = snap
    mini_dag = load_godag(out/OBO_NAME)
    assert len({t.id for t in mini_dag.values()}) == 8
    assert mini_dag['GO:0099999'].id == 'GO:0050853'
    assert {p.id for p in mini_dag['GO:0098802'].relationship['part_of']} == {'GO:0005886'}
    assert 'GO:0000005' not in mini_dag and 'GO:0000005' in load_godag(out/OBO_NAME, load_obsolete=True)
    assert not getattr(load_godag(out/OBO_NAME, optional_attrs=())['GO:0098802'], 'relationship', {})
    with pytest.raises(FileNotFoundError, match='does not exist'): load_godag(tmp_path/'none.obo')


def test_alias_map_of_snapshot(snap):
    out, _ = snap
    mini_amap = load_alias_map(out/SYMBOLS_NAME)
    assert mini_amap['CD8'] == ('CD8A', 'OTHER')
    assert map_symbols(['MB-1', 'CD8', 'MT-ND3'], mini_amap) == {'MB-1': 'CD79A', 'MT-ND3': 'ND3'}
    assert map_symbols(['CD8'], mini_amap, prefer={'CD8A'}) == {'CD8': 'CD8A'}


def test_gene2go_of_snapshot(dbs, snap, tmp_path):
    "The mini snapshot's annotation table read back, keyed by a panel through its own alias map."
    out, _ = snap
    g2g = read_gene2go(out/GENE2GO_NAME)
    assert g2g.equals(bgs.orgdb_tables(dbs[1])[0])  # the table written is the table read
    mini_amap = load_alias_map(out/SYMBOLS_NAME)
    assert load_gene2go(out/GENE2GO_NAME, symbols=['MB-1', 'MT-ND3'], alias_map=mini_amap) == \
        {'MB-1': {'GO:0050853', 'GO:0098802'}, 'MT-ND3': {'GO:0008150'}}
    with pytest.raises(FileNotFoundError, match='does not exist'): read_gene2go(tmp_path/'none.tsv')


def test_main_writes_snapshot(dbs, tmp_path, monkeypatch):
    "The command line: download (stubbed here: it needs apt and the network), convert into --out, remove the scratch folder."
    work = tmp_path/'debs'; work.mkdir()
    debs = {'r-bioc-go.db': {'version': '3.16.0-1', 'file': 'r-bioc-go.db_3.16.0-1_all.deb', 'sha256': 'cd'}}
    monkeypatch.setattr(bgs, 'download_bioc_go', lambda workdir: {'go_sqlite': dbs[0], 'org_sqlite': dbs[1], 'debs': debs})
    bgs.main(['--out', str(tmp_path/'out'), '--workdir', str(work)])
    assert {p.name for p in (tmp_path/'out').iterdir()} == {OBO_NAME, GENE2GO_NAME, SYMBOLS_NAME, 'SOURCE.md'}
    assert '`r-bioc-go.db` 3.16.0-1' in (tmp_path/'out'/'SOURCE.md').read_text()
    assert not work.exists()
