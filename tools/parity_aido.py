#!/usr/bin/env python3
"""Numerical parity of `cellsteer_nb.model.CellFoundation` with genbio-ai's AIDO.Cell code (modelgenerator 0.1.3.post0).

What it checks (offline, CPU, float32, a tiny random config: hidden 32, 3 layers, 4 heads, SwiGLU 64, 20 genes):

1. modelgenerator's `CellFoundationModel` without the `flash_attn` package: its fallback calls SDPA on
   `(batch*seq, heads, head_dim)` tensors, i.e. attends across the *heads of one token*, so tokens never interact
   (DESIGN.md §2). Shown by changing token 5's input and measuring how much token 0's output moves (0 = bug).
2. With a stand-in `flash_attn_varlen_func` (SDPA over the sequence, per packed sequence of `cu_seqlens`) put
   into that module's globals, tokens interact; this corrected reference is what we compare against.
3. State-dict keys: modelgenerator's state dicts, renamed by `aido_state_dict`, are loaded into ours with
   `load_state_checked` (strict). The bare backbone `CellFoundationModel` has no expression head, so `cls.*` is
   reported missing (expected); `CellFoundationForMaskedLM` (`bert.*` + `cls.predictions.*`, the layout of the
   released checkpoints) must load with no missing, unexpected or mis-shaped tensor.
4. Forward parity on three input cases (plain; two genes masked with -1; one gene padded with -2), batch of 3
   cells. modelgenerator gets `input_ids` = values followed by two depth tokens; ours gets `values` and `depth`
   (ours appends `depth` twice; `depth_floor=None`, values < 20 so the clip is inactive). Compared:
   the input embeddings (`hidden_states[0]` vs `CellFoundation.embed`), each block's output (ours via
   `stop_after=i`, gene tokens; theirs via a forward hook on `encoder.layer[i]`), the final `encoder.ln` output
   (all tokens incl. depth; ours via a forward hook) vs `last_hidden_state`, and the expression head
   (`CellFoundationForMaskedLM` logits at gene tokens vs our `forward`). Any max |diff| > 1e-5 fails.
   Note: `hidden_states[i+1]` is block i's output only for i < L-1; the last entry, `hidden_states[L]`, is taken
   *after* the final `encoder.ln` (it equals `last_hidden_state`) — the script verifies this and uses hooks.

modelgenerator cannot be installed beside our stack, so only its two files
`modelgenerator/huggingface_models/cellfoundation/{configuration,modeling}_cellfoundation.py` are loaded, from the
wheel, as modules of a stand-in package (their only relative import is `.configuration_cellfoundation`).
They need `torch==2.13.0` and `transformers==4.38.0`.

Run (from the repository root):

    python3 -m venv .venv-parity
    .venv-parity/bin/pip install torch==2.13.0 transformers==4.38.0 'numpy<2' safetensors tqdm
    PYTHONPATH=. .venv-parity/bin/python tools/parity_aido.py [--wheel PATH]

`--wheel` takes the modelgenerator wheel, a folder holding it, or an unpacked wheel/source tree; without it the
wheel is fetched with `pip download --no-deps modelgenerator==0.1.3.post0` into a temporary folder.
Exit status: 0 on parity, 1 on any numerical or key mismatch (or if the stand-in fails to make tokens interact).
"""
import argparse, importlib, logging, subprocess, sys, tempfile, types, zipfile
from pathlib import Path

import torch
import torch.nn.functional as F

MG_VERSION = '0.1.3.post0'
MG_DIR = 'modelgenerator/huggingface_models/cellfoundation'
MG_FILES = ('configuration_cellfoundation.py', 'modeling_cellfoundation.py')
PKG = '_mg_cellfoundation'  # stand-in package name the two files are imported under
TOL = 1e-5
INTERACT_EPS = 1e-6  # a change of token 0's output above this means token 5 reached it
SEED = 0


# ----------------------------------------------------------------------------------------------- loading upstream code
def _extract(wheel: Path, dest: Path) -> Path:
    "Copy the two cellfoundation files out of the wheel into `dest`."
    with zipfile.ZipFile(wheel) as z:
        for f in MG_FILES: (dest/f).write_bytes(z.read(f'{MG_DIR}/{f}'))
    return dest


def find_sources(arg: str | None, tmp: Path) -> tuple[Path, str]:
    "Folder holding the two files, and where they came from. `arg`: a wheel, a folder with one, an unpacked tree, or None (pip download)."
    if arg is None:
        dl = tmp/'wheel'
        cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--quiet', f'modelgenerator=={MG_VERSION}', '-d', str(dl)]
        r = subprocess.run(cmd, capture_output=True, text=True)  # quiet unless it fails (pip warns about local indexes)
        if r.returncode: sys.exit(f'pip download failed ({r.returncode}):\n{r.stderr}')
        arg = str(next(dl.glob('modelgenerator-*.whl')))
    p = Path(arg)
    if p.is_dir():
        for cand in (p/MG_DIR, p):  # an unpacked wheel/source tree, or the cellfoundation folder itself
            if all((cand/f).exists() for f in MG_FILES): return cand, str(cand)
        wheels = sorted(p.glob('modelgenerator-*.whl'))
        if not wheels: raise FileNotFoundError(f'{p}: neither {MG_DIR}/ nor a modelgenerator wheel found')
        p = wheels[0]
    if MG_VERSION not in p.name: print(f'WARNING: {p.name} is not modelgenerator {MG_VERSION}')
    return _extract(p, tmp), p.name


def load_modelgenerator(src: Path):
    "Import the two files as `PKG.configuration_cellfoundation` / `PKG.modeling_cellfoundation` (relative import resolves in PKG)."
    pkg = types.ModuleType(PKG); pkg.__path__ = [str(src)]
    sys.modules[PKG] = pkg  # a bare package: the wheel's lazy __init__.py is not needed
    return (importlib.import_module(f'{PKG}.configuration_cellfoundation'),
            importlib.import_module(f'{PKG}.modeling_cellfoundation'))


# ------------------------------------------------------------------------------------------- flash-attention stand-in
def sdpa_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                softmax_scale=None, causal=False, **_):
    """CPU stand-in for `flash_attn.flash_attn_varlen_func`: `q, k, v` are packed `(total_tokens, heads, head_dim)`,
    sequence b spanning rows `cu_seqlens[b]:cu_seqlens[b+1]`. Attends over each sequence with SDPA on
    `(batch, heads, seq, head_dim)`; returns `(total_tokens, heads, head_dim)`, as flash-attn does."""
    if not torch.equal(cu_seqlens_q, cu_seqlens_k): raise NotImplementedError('q and k packed differently')
    lens = cu_seqlens_q.diff()
    sdpa = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, dropout_p=dropout_p, is_causal=causal, scale=softmax_scale)
    if bool((lens == max_seqlen_q).all()):  # every sequence full length (modelgenerator's only case): one batched call
        B, H, D = len(lens), q.shape[1], q.shape[2]
        unpack = lambda t: t.reshape(B, max_seqlen_q, H, D).transpose(1, 2)   # -> (batch, heads, seq, head_dim)
        return sdpa(unpack(q), unpack(k), unpack(v)).transpose(1, 2).reshape(-1, H, D)
    out = torch.empty_like(q)  # ragged: one sequence at a time
    for s, e in zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist()):
        seg = lambda t: t[s:e].transpose(0, 1).unsqueeze(0)                   # -> (1, heads, len, head_dim)
        out[s:e] = sdpa(seg(q), seg(k), seg(v))[0].transpose(0, 1)
    return out


class flash_stand_in:
    "Context manager: put `sdpa_varlen` into the module's globals as `flash_attn_varlen_func`, restore on exit."
    def __init__(self, mod): self.mod = mod
    def __enter__(self):
        self.old = self.mod.__dict__.get('flash_attn_varlen_func')
        self.mod.flash_attn_varlen_func = sdpa_varlen
    def __exit__(self, *exc):
        if self.old is None: del self.mod.flash_attn_varlen_func
        else: self.mod.flash_attn_varlen_func = self.old


# ------------------------------------------------------------------------------------------------------------ models
def tiny_config(cfg_mod):
    "A tiny random-weight config of modelgenerator's `CellFoundationConfig` (its attention asserts `_use_flash_attention_2`)."
    return cfg_mod.CellFoundationConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                                        max_position_embeddings=20, _use_flash_attention_2=True)


@torch.no_grad()
def randomise_(model, seed):
    """Replace every parameter by seeded noise of a useful scale (the upstream init has zero biases and unit norms,
    which would hide a mis-mapped bias or norm; N(0, 0.02) embeddings make all tokens nearly alike)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # named_parameters() lists tied tensors once
        r = torch.randn(p.shape, generator=g)
        if p.dim() == 1: p.copy_(1 + 0.1 * r if name.endswith('ln.weight') or 'LayerNorm' in name else 0.1 * r)
        elif 'embedding' in name: p.copy_(0.5 * r)                     # lookup / mask / pad / position tables
        else: p.copy_(r / p.shape[1] ** 0.5)                          # linear weights: unit-variance outputs
    return model


def key_report(ours, theirs_sd):
    "Missing / unexpected / mis-shaped keys of `aido_state_dict(theirs_sd)` against our state dict."
    own = ours.state_dict()
    missing = [k for k in own if k not in theirs_sd]
    unexpected = [k for k in theirs_sd if k not in own]
    shape = [f'{k} {tuple(theirs_sd[k].shape)} vs {tuple(v.shape)}' for k, v in own.items() if k in theirs_sd and theirs_sd[k].shape != v.shape]
    return missing, unexpected, shape


def mg_run(mg, x):
    "modelgenerator forward: (output, [raw output of encoder.layer[i] for each i]) captured by forward hooks."
    outs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outs.append(o[0])) for layer in mg.encoder.layer]
    try: out = mg(input_ids=x, output_hidden_states=True)
    finally:
        for h in hooks: h.remove()
    return out, outs


def ours_final_ln(ours, values, depth):
    "Our `encoder.ln` output on all n + 2 tokens (forward hook) and our expression readout."
    cap = {}
    h = ours.encoder.ln.register_forward_hook(lambda m, i, o: cap.setdefault('ln', o))
    try: head = ours(values, depth)
    finally: h.remove()
    return cap['ln'], head


def maxdiff(a, b): return (a - b).abs().max().item()


# -------------------------------------------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--wheel', help=f'modelgenerator {MG_VERSION} wheel, a folder holding it, or an unpacked tree (default: pip download)')
    args = ap.parse_args(argv)
    torch.set_num_threads(1); torch.manual_seed(SEED)

    import transformers
    from cellsteer_nb.model import CellFoundation, aido_state_dict, config_from_hf, load_state_checked
    failures, say = [], print

    with tempfile.TemporaryDirectory() as tmp:
        src, origin = find_sources(args.wheel, Path(tmp))
        cfg_mod, mod = load_modelgenerator(src)
    # its attention logs (once) that float32 inputs are "cast back" to the weight dtype: a no-op here (float32 weights)
    logging.getLogger(f'{PKG}.modeling_cellfoundation').setLevel(logging.ERROR)
    flash_real = 'flash_attn_varlen_func' in mod.__dict__

    # -- the three models, sharing one set of random backbone weights
    mg = randomise_(mod.CellFoundationModel(tiny_config(cfg_mod)), SEED).eval()
    mlm = mod.CellFoundationForMaskedLM(tiny_config(cfg_mod)).eval()
    mlm.bert.load_state_dict(mg.state_dict())            # strict: same backbone as `mg`
    randomise_(mlm.cls, SEED + 1)                        # random expression head
    hf = mg.config
    ours = CellFoundation(config_from_hf(hf.to_dict(), depth_floor=None)).eval()
    L, n, B = hf.num_hidden_layers, hf.max_position_embeddings, 3

    say(f'parity_aido: modelgenerator {origin} vs cellsteer_nb.model.CellFoundation')
    say(f'torch {torch.__version__}, transformers {transformers.__version__}, float32, CPU; flash_attn in module: {flash_real}')
    say(f'config: hidden {hf.hidden_size}, layers {L}, heads {hf.num_attention_heads}, intermediate {hf.intermediate_size}, '
        f'genes {n}, bins {hf.bin_num}, eps {hf.layer_norm_eps}, mask {hf.mask_token_id}, pad {hf.pad_token_id}; batch {B}; tol {TOL:g}')

    # -- state-dict keys (strict loads through our own checked loader)
    miss, unexp, shape = key_report(ours, aido_state_dict(mg.state_dict()))
    head_only = all(k.startswith('cls.') for k in miss) and not unexp and not shape
    say(f'[keys] CellFoundationModel -> ours: missing {len(miss)} {miss}, unexpected {len(unexp)} {unexp}, mis-shaped {len(shape)} {shape}')
    try: load_state_checked(ours, aido_state_dict(mg.state_dict()), 'CellFoundationModel'); say('       strict load: OK')
    except ValueError as e: say(f'       strict load refused: {e}')
    say('       ' + ('expected: the bare backbone has no expression head (cls.*)' if head_only else 'MISMATCH beyond the head'))
    if not head_only: failures.append('keys: CellFoundationModel')
    sd = aido_state_dict(mlm.state_dict())
    miss, unexp, shape = key_report(ours, sd)
    say(f'[keys] CellFoundationForMaskedLM -> ours: missing {len(miss)} {miss}, unexpected {len(unexp)} {unexp}, mis-shaped {len(shape)} {shape}')
    dropped = sorted(set(mlm.state_dict()) - {'bert.' + k for k in sd} - set(sd))
    try:
        load_state_checked(ours, sd, 'CellFoundationForMaskedLM')
        say(f'       strict load: OK ({len(sd)} tensors; dropped by aido_state_dict: {dropped})')
    except ValueError as e: say(f'       strict load refused: {e}'); failures.append('keys: CellFoundationForMaskedLM')

    # -- inputs: log-normalised values (about 40% zeros), depth = log10(total counts); depth tokens appended twice
    g = torch.Generator().manual_seed(SEED + 2)
    base = torch.log1p(torch.rand(B, n, generator=g) * 60) * (torch.rand(B, n, generator=g) > 0.4)
    depth = torch.tensor([3.2, 3.9, 4.6])
    cases = {'plain': base.clone(), 'masked': base.clone(), 'padded': base.clone()}
    cases['masked'][0, 3] = cases['masked'][2, 11] = hf.mask_token_id
    cases['padded'][1, 7] = hf.pad_token_id
    mg_input = lambda v: torch.cat([v, depth[:, None].expand(B, 2)], 1)

    # -- do tokens interact?  change token 5's input, measure how far token 0's final output moves
    moved = base.clone(); moved[:, 5] = base[:, 5] + 2.5
    with torch.no_grad():
        def coupling(f): return maxdiff(f(base)[:, 0], f(moved)[:, 0])
        mg_last = lambda v: mg(input_ids=mg_input(v)).last_hidden_state
        if flash_real: say('[attn] flash_attn is installed here: the fallback branch is not exercised')
        else:
            c = coupling(mg_last)
            say(f'[attn] upstream fallback (no flash_attn): token 0 moves by {c:.3e} when token 5 changes -> '
                + ('tokens do NOT interact (bug present: SDPA over heads, not over the sequence)' if c <= INTERACT_EPS else 'tokens interact'))
        with flash_stand_in(mod): c = coupling(mg_last)
        say(f'[attn] with stand-in flash_attn_varlen_func: token 0 moves by {c:.3e} -> ' + ('tokens interact' if c > INTERACT_EPS else 'tokens do NOT interact'))
        if c <= INTERACT_EPS: failures.append('stand-in: tokens do not interact')
        c = coupling(lambda v: ours_final_ln(ours, v, depth)[0])
        say(f'[attn] ours: token 0 moves by {c:.3e} -> ' + ('tokens interact' if c > INTERACT_EPS else 'tokens do NOT interact'))
        if c <= INTERACT_EPS: failures.append('ours: tokens do not interact')

    # -- forward parity, with the stand-in in place
    cols = ['embed'] + [f'layer{i}' for i in range(L)] + ['final_ln', 'head']
    say(f'[parity] max |ours - modelgenerator| (with stand-in); layers on gene tokens, embed/final_ln on all {n}+2 tokens')
    say('  ' + f'{"case":<8}' + ''.join(f'{c:>11}' for c in cols))
    worst = 0.0
    with torch.no_grad(), flash_stand_in(mod):
        for name, v in cases.items():
            x = mg_input(v)
            out, layer_outs = mg_run(mg, x)
            hs = out.hidden_states
            # structure of hidden_states: embeddings, blocks 0..L-2, then the *normed* output of block L-1
            if len(hs) != L + 1 or not all(torch.equal(hs[i + 1], layer_outs[i]) for i in range(L - 1)) \
               or not torch.equal(hs[L], out.last_hidden_state):
                failures.append(f'{name}: unexpected hidden_states layout')
            d = [maxdiff(ours.embed(v, depth), hs[0])]
            d += [maxdiff(ours(v, depth, stop_after=i), layer_outs[i][:, :n]) for i in range(L)]
            ln, head = ours_final_ln(ours, v, depth)
            d += [maxdiff(ln, out.last_hidden_state), maxdiff(head, mlm(input_ids=x).logits[..., 0][:, :n])]
            say('  ' + f'{name:<8}' + ''.join(f'{x:>11.2e}' for x in d))
            worst = max(worst, *d)
            if max(d) > TOL: failures.append(f'{name}: max diff {max(d):.2e}')
    with torch.no_grad():  # negative control: the same comparison against the (wrong) upstream fallback must differ
        ctl = maxdiff(ours_final_ln(ours, base, depth)[0], mg(input_ids=mg_input(base)).last_hidden_state)
    say(f'  control: ours vs upstream fallback without the stand-in, final_ln, plain: {ctl:.2e} (must be large)')
    if not flash_real and ctl <= TOL: failures.append('control: comparison insensitive')
    say(f'  hidden_states: {L + 1} entries; [i+1] == encoder.layer[i] output for i < {L - 1}; [{L}] == last_hidden_state '
        f'(after encoder.ln), so block {L - 1} is read with a hook')

    say(f'RESULT: {"PASS" if not failures else "FAIL"} (max abs diff {worst:.2e}, tol {TOL:g})' + ('' if not failures else ': ' + '; '.join(failures)))
    return 0 if not failures else 1


if __name__ == '__main__':
    sys.exit(main())
