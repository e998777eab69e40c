"""Optional: the committed default SAE folder is a SAELens folder — SAELens' own loader reads it, and its `TopKSAE`
encodes and decodes exactly like ours. Skipped unless `sae_lens` is importable (it is not a dependency: it pulls in
transformer-lens, transformers, wandb, ...). To run it, in a throw-away venv (git-ignored):

    python3 -m venv .venv-saelens
    .venv-saelens/bin/pip install torch==2.13.0            # first, so sae-lens keeps the CPU build
    .venv-saelens/bin/pip install sae-lens scikit-learn scanpy pytest
    .venv-saelens/bin/pip install -e . --no-deps
    OMP_NUM_THREADS=1 .venv-saelens/bin/pytest -q tests/test_saelens.py
"""
import json
import pytest

sae_lens = pytest.importorskip('sae_lens')
import torch
from safetensors import safe_open
from cellsteer_nb.sae import DEFAULT_SAE, SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME, load_sae

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope='module')
def ours():
    return load_sae(DEFAULT_SAE).eval()


@pytest.fixture(scope='module')
def theirs():
    # dtype given explicitly so that the parity checks below run whatever cfg.json says about dtype;
    # loading with SAELens' defaults is checked on its own in test_saelens_loads_the_folder_with_its_defaults
    return sae_lens.SAE.load_from_disk(DEFAULT_SAE, dtype='float32').eval()


def test_weights_are_stored_in_saelens_layout():
    cfg = json.loads((DEFAULT_SAE/SAE_CFG_FILENAME).read_text())
    d_in, d_sae = cfg['d_in'], cfg['d_sae']
    with safe_open(str(DEFAULT_SAE/SAE_WEIGHTS_FILENAME), 'pt') as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert shapes == {'W_dec': (d_sae, d_in), 'W_enc': (d_in, d_sae), 'b_dec': (d_in,), 'b_enc': (d_sae,)}
    assert dtypes == {torch.float32}
    assert cfg['architecture'] == 'topk' and cfg['apply_b_dec_to_input'] is True


def test_saelens_loads_the_folder_with_its_defaults(ours):
    "`SAE.load_from_disk(path)` with no overrides: needs `dtype` in cfg.json (KeyError 'dtype' otherwise)."
    sae = sae_lens.SAE.load_from_disk(DEFAULT_SAE)
    assert isinstance(sae, sae_lens.TopKSAE)
    c = sae.cfg
    assert (c.d_in, c.d_sae, c.k) == (ours.cfg.d_in, ours.cfg.d_sae, ours.cfg.k)
    assert c.dtype == 'float32' and c.apply_b_dec_to_input is True
    assert c.normalize_activations == 'none' and c.reshape_activations == 'none' and c.rescale_acts_by_decoder_norm is False
    assert tuple(sae.W_dec.shape) == (ours.cfg.d_sae, ours.cfg.d_in)


def test_saelens_keeps_our_metadata(ours):
    "Our metadata (model hash, panel hash, layer) survives SAELens' loader: needs a 6.x `metadata.sae_lens_version`."
    meta = sae_lens.SAE.load_from_disk(DEFAULT_SAE).cfg.metadata
    for k, v in ours.cfg.metadata.items(): assert meta.get(k) == v, (k, meta.get(k), v)


def test_saelens_topk_matches_ours_on_random_inputs(ours, theirs):
    assert isinstance(theirs, sae_lens.TopKSAE) and theirs.cfg.k == ours.cfg.k
    for k in ('W_enc', 'W_dec', 'b_enc', 'b_dec'): assert torch.equal(getattr(theirs, k).detach(), getattr(ours, k).detach()), k
    g = torch.Generator().manual_seed(0)
    for shape in ((2048, ours.cfg.d_in), (4, 300, ours.cfg.d_in)):  # a token batch and a (cells, genes, d) batch
        x = ours.b_dec.detach() + 2 * torch.randn(*shape, generator=g)
        with torch.no_grad():
            f_ours, f_theirs = ours.encode(x), theirs.encode(x)
            assert torch.equal(f_ours > 0, f_theirs > 0)  # same active latents
            torch.testing.assert_close(f_theirs, f_ours, **TOL)
            assert ((f_ours > 0).sum(-1) <= ours.cfg.k).all()
            torch.testing.assert_close(theirs.decode(f_ours), ours.decode(f_ours), **TOL)
            torch.testing.assert_close(theirs(x), ours(x)[0], **TOL)


def test_saelens_topk_matches_ours_on_layer12_activations(ours, theirs):
    pytest.importorskip('scanpy')
    import warnings
    from cellsteer_nb.core import DEFAULT_CHECKPOINT
    from cellsteer_nb.data import load_pbmc68k, align_to_panel
    from cellsteer_nb.model import load_checkpoint, cell_inputs
    model, genes = load_checkpoint(DEFAULT_CHECKPOINT)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        adata = align_to_panel(load_pbmc68k()[:8], genes)
    values, depth = cell_inputs(adata)
    with torch.inference_mode(): x = model(values, depth, stop_after=ours.cfg.hook_layer)  # (8, genes, d_in)
    x = x.clone()
    with torch.no_grad():
        f_ours, f_theirs = ours.encode(x), theirs.encode(x)
        assert torch.equal(f_ours > 0, f_theirs > 0)
        torch.testing.assert_close(f_theirs, f_ours, **TOL)
        torch.testing.assert_close(theirs.decode(f_theirs), ours.decode(f_ours), **TOL)
