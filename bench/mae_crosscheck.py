#!/usr/bin/env python3
"""Runs ResearchKit's MAE weights through the independent PyTorch model in mae_reference.py.

Usage: /usr/bin/python3 bench/mae_crosscheck.py DIR   (DIR is written by tests/ResearchKit.Tests/CrossCheckTests.cs)

DIR/manifest.json: {"config": {...}, "tensors": [{"name", "shape", "file"}, ...]}, each file raw
little-endian float32. Tensors: the C# model's named_parameters() and named_buffers() under their C#
names, plus "input.images" [B, C, H, W] and "input.noise" [B, L] (uniform masking noise).
Parameters are copied into TinyMae by an explicit name map; buffers (the fixed sin-cos positions) are
not copied but compared with TinyMae's own, so a positional-embedding bug cannot hide.
Writes DIR/out/ the same way: "encoder.hidden.{i}" [B, 1 + K, D] (each block's raw output),
"latent" [B, 1 + K, D], "prediction" [B, L, p·p·C], "mask" [B, L] (1 = removed), "loss" [1],
"buffer.{C# name}" (TinyMae's own positions)."""
import json, os, sys
import numpy as np
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mae_reference import TinyMae


def block_names(cs, py):
    """C# TransformerBlock parameter names → mae_reference Block names."""
    pairs = [("norm1", "norm1"), ("attn.qkv", "qkv"), ("attn.proj", "proj"),
             ("norm2", "norm2"), ("mlp.fc1", "fc1"), ("mlp.fc2", "fc2")]
    return {f"{cs}.{a}.{w}": f"{py}.{b}.{w}" for a, b in pairs for w in ("weight", "bias")}


def parameter_names(depth, ddepth):
    """C# name → TinyMae name for every parameter."""
    names = {
        "encoder.patchEmbed.weight": "embed.weight", "encoder.patchEmbed.bias": "embed.bias",
        "encoder.clsToken": "cls",
        "encoder.norm.weight": "norm.weight", "encoder.norm.bias": "norm.bias",
        "decoderEmbed.weight": "dembed.weight", "decoderEmbed.bias": "dembed.bias",
        "maskToken": "mask_token",
        "decoderNorm.weight": "dnorm.weight", "decoderNorm.bias": "dnorm.bias",
        "decoderPred.weight": "pred.weight", "decoderPred.bias": "pred.bias",
    }
    for i in range(depth):
        names.update(block_names(f"encoder.blocks.{i}", f"blocks.{i}"))
    for i in range(ddepth):
        names.update(block_names(f"decoderBlocks.{i}", f"dblocks.{i}"))
    return names


BUFFER_NAMES = {"encoder.posEmbed": "pos", "decoderPos": "dpos"}   # compared, never copied
INPUTS = ("input.images", "input.noise")


def read(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    tensors = {}
    for entry in manifest["tensors"]:
        data = np.fromfile(os.path.join(folder, entry["file"]), dtype="<f4")
        if data.size != int(np.prod(entry["shape"])):
            sys.exit(f"{entry['name']}: file has {data.size} values, shape {entry['shape']} needs {int(np.prod(entry['shape']))}")
        tensors[entry["name"]] = torch.from_numpy(data.reshape(entry["shape"]).copy())
    return manifest["config"], tensors


def write(folder, tensors):
    os.makedirs(folder, exist_ok=True)
    entries = []
    for i, (name, t) in enumerate(tensors.items()):
        file = f"{i:03d}.f32"
        t.detach().contiguous().numpy().astype("<f4").tofile(os.path.join(folder, file))
        entries.append({"name": name, "shape": list(t.shape), "file": file})
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"tensors": entries}, f, indent=1)


def load_weights(model, config, tensors):
    """Copies every C# parameter into its mapped TinyMae parameter; fails on any tensor unmapped, unused or misshaped."""
    names = parameter_names(config["depth"], config["decoder_depth"])
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    expected = {**names, **BUFFER_NAMES, **{n: None for n in INPUTS}}
    errors = [f"C# tensor {n} has no TinyMae counterpart" for n in sorted(tensors.keys() - expected.keys())]
    errors += [f"C# tensor {n} was not exported" for n in sorted(expected.keys() - tensors.keys())]
    errors += [f"TinyMae parameter {p} gets no C# weight" for p in sorted(params.keys() - set(names.values()))]
    errors += [f"TinyMae buffer {p} has no C# counterpart" for p in sorted(buffers.keys() - set(BUFFER_NAMES.values()))]
    ours = {**params, **buffers}
    for cs, py in {**names, **BUFFER_NAMES}.items():
        if py not in ours:
            errors.append(f"name map points {cs} at {py}, which TinyMae does not have")
        elif cs in tensors and tensors[cs].shape != ours[py].shape:
            errors.append(f"{cs}: C# shape {list(tensors[cs].shape)} ≠ TinyMae {py} shape {list(ours[py].shape)}")
    if errors:
        sys.exit("weight mapping failed:\n  " + "\n  ".join(errors))
    with torch.no_grad():
        for cs, py in names.items():
            params[py].copy_(tensors[cs])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    folder = sys.argv[1]
    config, tensors = read(folder)
    torch.set_num_threads(1)   # a tiny batch; the tests' machine is shared
    model = TinyMae(config["image_size"], config["channels"], config["patch_size"], config["dim"], config["depth"],
                    config["heads"], config["decoder_dim"], config["decoder_depth"], config["decoder_heads"],
                    config["mask_ratio"], config["norm_pix_loss"]).eval()
    load_weights(model, config, tensors)
    images, noise = tensors["input.images"], tensors["input.noise"]
    with torch.no_grad():
        patches = model.patchify(images)
        keep, restore, mask = model.random_masking(*patches.shape[:2], noise)
        hidden = []
        latent = model.forward_encoder(patches, keep, hidden)
        prediction = model.forward_decoder(latent, restore)
        loss = model.forward_loss(patches, prediction, mask)
    buffers = dict(model.named_buffers())
    outputs = {f"encoder.hidden.{i}": h for i, h in enumerate(hidden)}
    outputs.update(latent=latent, prediction=prediction, mask=mask, loss=loss.reshape(1))
    outputs.update({f"buffer.{cs}": buffers[py] for cs, py in BUFFER_NAMES.items()})
    write(os.path.join(folder, "out"), outputs)
    print(f"reference: {len(hidden)} encoder layers, latent {list(latent.shape)}, loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
