"""Runs in the SAELens side venv (.venv-saelens; no cellsteer_nb import): trains SAELens' `TopKTrainingSAE` with SAELens'
own `SAETrainer` on the token batches in `<dir>/train_batches.npy` (one per step, in order), then its held-out FVU and dead share (latents
never active) on `<dir>/heldout.npy`. Prints one JSON line. Used by bench_sae.py.

    .venv-saelens/bin/python bench/_saelens_child.py DIR K D_SAE LR SEED
"""
import json, os, sys, time
import numpy as np, torch

def main():
    d, k, d_sae, lr, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    import sae_lens
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer
    B = torch.from_numpy(np.load(os.path.join(d, 'train_batches.npy')))
    H = torch.from_numpy(np.load(os.path.join(d, 'heldout.npy')))
    steps, batch, d_in = B.shape
    torch.manual_seed(seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype='float32', device='cpu'))
    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=lr, lr_end=lr, device='cpu')
    trainer = SAETrainer(cfg, sae, iter(B))
    os.environ['TQDM_DISABLE'] = '1'
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    sae.eval()
    with torch.no_grad():
        sse = sum(float((H[i:i + 8192] - sae(H[i:i + 8192])).double().pow(2).sum()) for i in range(0, len(H), 8192))
        fired = torch.zeros(d_sae, dtype=torch.bool)
        for i in range(0, len(H), 8192): fired |= (sae.encode(H[i:i + 8192]) > 0).any(0)
    sst = float((H.double() - H.double().mean(0)).pow(2).sum())
    print(json.dumps({'seconds': seconds, 'tokens_per_s': steps * batch / seconds, 'heldout_fvu': sse / sst, 'heldout_dead_frac': 1 - float(fired.float().mean()),
                      'sae_lens_version': sae_lens.__version__, 'torch': torch.__version__, 'threads': torch.get_num_threads(),
                      'steps': steps, 'batch': batch, 'cfg': {kk: str(v) for kk, v in vars(sae.cfg).items() if kk != 'metadata'}}))

if __name__ == '__main__':
    main()
