#!/usr/bin/env python3
"""PyTorch reference for `researchkit bench --method mae`: the same MAE (--preset tiny: ViT dim 128, depth 6, 4 heads,
patch 4, decoder dim 64, depth 2, 4 heads, 28×28×1; --preset vit-base: ViT-B/16 with the paper's decoder, 512 wide,
8 deep, 16 heads, 224×224×3), mask ratio 0.75, the same step (forward + backward + AdamW), batch and threads, on the CPU
or CUDA, in fp32, TF32 or bf16 autocast. Steps run back to back; the device is synchronised at the end of each timing
window, as ResearchKit's StepTimer does. Prints one JSON line.
Run with Debian's PyTorch: /usr/bin/python3 bench/mae_reference.py (see bench/README.md); bench/gpu.sh runs it on CUDA.
mae_crosscheck.py reuses TinyMae, piece by piece, to check ResearchKit's MAE numerically."""
import argparse, json, math, resource, statistics, time
import torch
import torch.nn as nn
import torch.nn.functional as F


def sincos_2d(dim, grid):
    """[1 + grid², dim]: zero row for [CLS], then column encoding then row encoding per token."""
    half = dim // 2
    omega = 1.0 / 10000 ** (torch.arange(half // 2, dtype=torch.float64) / (half // 2))
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    def enc(pos):
        angles = pos.flatten().double()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], 1)
    table = torch.cat([enc(cols), enc(rows)], 1).float()
    return torch.cat([torch.zeros(1, dim), table], 0)[None]


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def attend(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if hasattr(F, "scaled_dot_product_attention"):
            out = F.scaled_dot_product_attention(q, k, v)
        else:  # PyTorch < 2.0 (Debian 12 ships 1.13)
            out = ((q @ k.transpose(-2, -1)) / math.sqrt(D // self.heads)).softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, T, D))

    def forward(self, x):
        x = x + self.attend(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyMae(nn.Module):
    def __init__(self, size=28, channels=1, patch=4, dim=128, depth=6, heads=4, ddim=64, ddepth=2, dheads=4, ratio=0.75, norm_pix=False):
        super().__init__()
        self.patch, self.channels, self.ratio, self.norm_pix, grid = patch, channels, ratio, norm_pix, size // patch
        self.embed = nn.Linear(patch * patch * channels, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos", sincos_2d(dim, grid))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.dembed = nn.Linear(dim, ddim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ddim))
        self.register_buffer("dpos", sincos_2d(ddim, grid))
        self.dblocks = nn.ModuleList(Block(ddim, dheads) for _ in range(ddepth))
        self.dnorm = nn.LayerNorm(ddim, eps=1e-6)
        self.pred = nn.Linear(ddim, patch * patch * channels)

    def patchify(self, x):
        B, C, H, W = x.shape
        p = self.patch
        x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // p) * (W // p), p * p * C)

    def random_masking(self, B, L, noise=None, device="cpu"):
        """noise [B, L] uniform (drawn on the device when None) → keep [B, K] indices, restore [B, L], mask [B, L] (1 is remove)."""
        keep = int(L * (1 - self.ratio))
        shuffle = (torch.rand(B, L, device=device) if noise is None else noise).argsort(1)   # small noise is kept
        restore = shuffle.argsort(1)
        mask = torch.ones(B, L, device=shuffle.device)
        mask[:, :keep] = 0
        return shuffle[:, :keep], restore, mask.gather(1, restore)

    def forward_encoder(self, patches, keep, hidden=None):
        """patches [B, L, p·p·C], keep [B, K] → normed latent [B, 1 + K, D]; appends each block's raw output to hidden."""
        B = patches.shape[0]
        x = self.embed(patches) + self.pos[:, 1:]
        x = x.gather(1, keep[:, :, None].expand(-1, -1, x.shape[2]))
        x = torch.cat([(self.cls + self.pos[:, :1]).expand(B, -1, -1), x], 1)
        for block in self.blocks:
            x = block(x)
            if hidden is not None:
                hidden.append(x)
        return self.norm(x)

    def forward_decoder(self, latent, restore):
        """latent [B, 1 + K, D], restore [B, L] → predicted patches [B, L, p·p·C]."""
        x = self.dembed(latent)
        B, L = restore.shape
        fill = self.mask_token.expand(B, L + 1 - x.shape[1], -1)
        y = torch.cat([x[:, 1:], fill], 1).gather(1, restore[:, :, None].expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1], y], 1) + self.dpos
        for block in self.dblocks:
            x = block(x)
        return self.pred(self.dnorm(x))[:, 1:]

    def forward_loss(self, patches, prediction, mask):
        """MSE per patch, averaged over removed patches; with norm_pix, targets are normalised per patch
        by mean and unbiased variance (+1e-6), as MAE's official models_mae.py does (torch's var default)."""
        target = patches
        if self.norm_pix:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return (((prediction - target) ** 2).mean(-1) * mask).sum() / mask.sum()

    def forward(self, images, noise=None):
        patches = self.patchify(images)
        keep, restore, mask = self.random_masking(*patches.shape[:2], noise, device=images.device)
        prediction = self.forward_decoder(self.forward_encoder(patches, keep), restore)
        return self.forward_loss(patches, prediction, mask)


PRESETS = {   # image size, channels, patch, encoder (dim, depth, heads), decoder (dim, depth, heads)
    "tiny": dict(size=28, channels=1, patch=4, dim=128, depth=6, heads=4, ddim=64, ddepth=2, dheads=4),
    "vit-base": dict(size=224, channels=3, patch=16, dim=768, depth=12, heads=12, ddim=512, ddepth=8, dheads=16),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--channels", type=int, default=None, help="default: the preset's")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32",
                        help="fp32; tf32 matmuls and convolutions; bf16 autocast around the forward pass")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
        torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
    preset = dict(PRESETS[args.preset])
    preset["size"] = args.image_size or preset["size"]
    preset["channels"] = args.channels or preset["channels"]
    torch.manual_seed(0)
    model = TinyMae(**preset).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    images = torch.randn(args.batch, preset["channels"], preset["size"], preset["size"], device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = model(images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    synchronize()
    windows, total, means = min(args.steps, 5), 0.0, []
    for w in range(windows):
        count = args.steps * (w + 1) // windows - args.steps * w // windows
        start = time.perf_counter()
        for _ in range(count):
            step()
        synchronize()
        elapsed = time.perf_counter() - start
        means.append(elapsed / count)
        total += elapsed
    mean = total / args.steps
    result = {
        "implementation": f"pytorch {torch.__version__}", "preset": args.preset, "device": str(device), "precision": args.precision,
        "batch": args.batch, "steps": args.steps, "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "images_per_s": round(args.batch / mean, 1),
        "median_step_ms": round(1000 * statistics.median(means), 2),
        "mean_step_ms": round(1000 * mean, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device.type == "cuda":
        free, total_memory = torch.cuda.mem_get_info()
        result["device_memory_mb"] = round((total_memory - free) / 1048576, 1)
        result["peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 1048576, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
