"""Item 7, the seed's scale: a random AIDO.Cell-100M-shaped model (18 blocks x hidden 640, 16 heads, SwiGLU 1,664 — our
assumption for the intermediate size — 19,264 gene tokens + 2 depth tokens) on this CPU, one thread, one cell.

Measured: building the model, the embedding, and blocks 0 and 1 of the forward on one cell (each block of a forward to layer
12 has the same shape and cost, so the forward to layer 12 = embedding + 13 x the median measured block time; `--full` runs
the real `model(..., stop_after=12)` instead, ~6-7 min a cell here); peak RSS (ru_maxrss) after building and after the forward.
Extrapolated, from the measured seconds per cell (CPU) and from the counted matmul FLOPs (GPU): PBMC3K (2,700 cells) and a
1M-cell atlas on this CPU (1 thread and both cores, assuming perfect scaling) and on one H100 under the stated assumptions;
the size of a full layer-12 activation store (fp32, bf16); and the SAE-training consequences.

    python bench/bench_seed_scale.py [--full] [--blocks 2]
"""
import _common as C
import argparse, time

N_GENES = 19_264
H100 = {'bf16_dense_tflops': 989.0, 'tf32_dense_tflops': 494.7, 'fp32_tflops': 66.9, 'utilisation': 0.4,
        'source': 'NVIDIA H100 SXM5 datasheet, dense (no sparsity); utilisation 40% is our assumption for a flash-attention transformer forward'}
CELLS = {'pbmc3k': 2_700, 'atlas_1m': 1_000_000}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--full', action='store_true')
    ap.add_argument('--blocks', type=int, default=2)
    a = ap.parse_args()
    import torch
    C.set_threads()
    from cellsteer_nb.model import CellFoundation, CellFoundationConfig
    from bench_extract import flops_per_cell, H640
    rss0 = C.peak_rss_mb()
    cfg = CellFoundationConfig(max_position_embeddings=N_GENES, **H640)
    torch.manual_seed(0)
    t0 = time.perf_counter(); model = CellFoundation(cfg).eval(); t_build = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    rss_model = C.peak_rss_mb()
    g = torch.Generator().manual_seed(0)
    values = torch.where(torch.rand(1, N_GENES, generator=g) < 0.1, torch.rand(1, N_GENES, generator=g) * 3, torch.zeros(1, N_GENES))
    depth = torch.tensor([3.5])
    fl = flops_per_cell(cfg, N_GENES)
    out = {'config': cfg.to_dict(), 'n_params': n_params, 'build_s': t_build, 'threads': C.THREADS, 'flops_per_cell': fl,
           'rss_before_model_mb': rss0, 'rss_after_model_mb': rss_model}
    with torch.inference_mode():
        if a.full:
            t0 = time.perf_counter(); model(values, depth, stop_after=12); s = time.perf_counter() - t0
            out.update(method='measured: full forward to layer 12', forward_s_per_cell=s)
        else:
            t0 = time.perf_counter(); x = model.embed(values, depth); t_embed = time.perf_counter() - t0
            tb = []
            for i in range(a.blocks):
                t0 = time.perf_counter(); x = model.encoder.layer[i](x); tb.append(time.perf_counter() - t0)
                print(f'block {i}: {tb[-1]:.1f} s', flush=True)
            s = t_embed + fl['blocks'] * C.median(tb)
            out.update(method=f'embedding + {fl["blocks"]} x median of {a.blocks} measured blocks (blocks 0..12 have identical shapes)',
                       embed_s=t_embed, block_s=tb, forward_s_per_cell=s)
    rss_peak = C.peak_rss_mb()
    out.update(peak_rss_mb=rss_peak, peak_rss_forward_delta_mb=rss_peak - rss_model,
               achieved_gflops=fl['counted'] / s / 1e9,
               attention_matrix_gb_if_materialised=cfg.num_attention_heads * fl['tokens'] ** 2 * 4 / 1e9)
    # extrapolations
    ex = {}
    flops_cell = fl['counted']
    for name, n in CELLS.items():
        gpu_bf16 = n * flops_cell / (H100['bf16_dense_tflops'] * 1e12 * H100['utilisation'])
        gpu_fp32 = n * flops_cell / (H100['fp32_tflops'] * 1e12 * H100['utilisation'])
        store = n * N_GENES * cfg.hidden_size
        ex[name] = {'cells': n, 'cpu_1thread_s': n * s, 'cpu_2cores_s': n * s / 2, 'cpu_1thread_days': n * s / 86400,
                    'h100_bf16_s': gpu_bf16, 'h100_fp32_s': gpu_fp32, 'flops': n * flops_cell,
                    'store_gb_fp32': store * 4 / 1e9, 'store_gb_bf16': store * 2 / 1e9, 'tokens': n * N_GENES}
    out['extrapolated'] = ex
    out['h100_assumptions'] = H100
    # SAE training at that scale: per-token cost of producing an activation vs of one SAE step on it
    d, p = cfg.hidden_size, 8 * cfg.hidden_size
    sae_flops_token = 3 * 2 * 2 * d * p   # encoder + decoder matmuls, forward + backward (~3x forward), dense TopK
    model_flops_token = flops_cell / N_GENES
    out['sae'] = {'d_sae': p, 'sae_train_flops_per_token': sae_flops_token, 'model_forward_flops_per_token': model_flops_token,
                  'forward_over_sae_step_per_token': model_flops_token / sae_flops_token,
                  'stream_buffer_gb_64_cells_fp32': 64 * N_GENES * d * 4 / 1e9,
                  'pbmc3k_tokens': CELLS['pbmc3k'] * N_GENES}
    C.save_results('seed_scale', out, {'aido100m_forward_s_per_cell_cpu': s, 'aido100m_peak_rss_mb': rss_peak,
                                       'aido100m_store_gb_pbmc3k_fp32': ex['pbmc3k']['store_gb_fp32'],
                                       'aido100m_store_gb_pbmc3k_bf16': ex['pbmc3k']['store_gb_bf16'],
                                       'aido100m_pbmc3k_cpu_hours': ex['pbmc3k']['cpu_1thread_s'] / 3600,
                                       'aido100m_1m_h100_bf16_hours': ex['atlas_1m']['h100_bf16_s'] / 3600})
    print(f"forward to layer 12: {s:.0f} s a cell (1 thread), peak RSS {rss_peak:.0f} MiB; PBMC3K store {ex['pbmc3k']['store_gb_fp32']:.0f} GB fp32")


if __name__ == '__main__':
    main()
