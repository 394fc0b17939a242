"""Writes the parity fixtures of ``tests/test_checkpoints_parity.py`` (developers run this, not CI).

Small models with random weights are built in the reference PyTorch libraries
(timm's VisionTransformer and ResNetV2, Hugging Face ``ViTModel``); their
weights are saved in every supported format and their outputs on fixed inputs
(tokens, embedding, attention) next to them. Where a format has a reference
reader (timm reads the original ViT / AugReg, big_vision and BiT ``.npz``
files; Hugging Face reads its own ``save_pretrained`` output), the weights
are written first and the *reference library* loads them, so the renaming in
``pairviz_jax.checkpoints`` is checked against an independent reader.

Needs (not runtime dependencies of pairviz-jax)::

    pip install torch==2.13.0 safetensors transformers
    pip install --no-deps timm

timm, transformers and open_clip import torchvision, which is not needed here;
when it is missing (or does not match torch) a stand-in module is installed
for the imports only. The DINOv2, CLIP, SigLIP and DeiT fixtures
(``tests/test_checkpoints_families.py``) are made by ``parity_families.py``
(also needs ``open_clip_torch``).

Run from the repository root::

    python tools/make_parity_fixtures.py [--out tests/fixtures] [--only families]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from functools import partial

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _torchvision_stub  # noqa: E402  (tools/, beside this file)

SEED = 0
# ViT: width 32, depth 2, 4 heads, MLP 64, patch 8, 32-px images (a 4x4 grid).
VIT = dict(width=32, depth=2, heads=4, mlp=64, patch=8, image=32)
PROJ = 16  # stands in for the paper's 512-D projection
# ResNetV2: three stages (2, 1, 1 units), stem width 8, 4 GroupNorm groups, 64-px images.
RESNET = dict(layers=(2, 1, 1), width=8, groups=4, image=64)


def _import_transformers():
    """Imports the Hugging Face ViT before any torchvision stand-in exists."""
    import transformers.models.vit.modeling_vit  # noqa: F401
    from transformers import ViTConfig, ViTModel

    return ViTConfig, ViTModel


def _import_timm():
    import timm
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models import resnetv2, vision_transformer

    return timm, vision_transformer, resnetv2, GroupNormAct, StdConv2d


def _randomize(module, torch, scale: float = 0.2) -> None:
    """Random weights everywhere (norms near 1), so every parameter matters."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            is_norm = any(s in name for s in ("norm", "layernorm", ".gn", "gn1", "gn2", "gn3"))
            p.copy_(1.0 + noise if (is_norm and name.endswith("weight")) else noise)


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def _images(shape, seed) -> np.ndarray:
    """[B, H, W, 3] float32 inputs, roughly normalised."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _nchw(x, torch):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


class _AttentionRecorder:
    """Records timm's softmax attention (the input of ``attn_drop``), [B, H, N, N] per block."""

    def __init__(self, blocks):
        self.maps = []
        for block in blocks:
            block.attn.fused_attn = False
            block.attn.attn_drop.register_forward_hook(lambda m, i, o: self.maps.append(_np(o)))

    def stacked(self) -> np.ndarray:
        out = np.stack(self.maps, axis=1)  # [B, L, H, N, N]
        self.maps = []
        return out


def _timm_vit(vision_transformer, image, **kw):
    return vision_transformer.VisionTransformer(
        img_size=image,
        patch_size=VIT["patch"],
        embed_dim=VIT["width"],
        depth=VIT["depth"],
        num_heads=VIT["heads"],
        mlp_ratio=VIT["mlp"] / VIT["width"],
        **kw,
    )


def _vit_outputs(model, x, torch, *, head_per_token: bool, drop_cls: bool = False):
    """(tokens [B, K*K, E], embedding [B, E], attention [B, L, H, N, N]) of a timm ViT."""
    rec = _AttentionRecorder(model.blocks)
    with torch.no_grad():
        if drop_cls:
            # The authors' Embeddings: prepend the class token, add the position
            # embedding, then drop the token before the encoder.
            h = model._pos_embed(model.patch_embed(x))[:, 1:]
            h = model.norm(model.blocks(h))
            tokens = model.head(h)
            emb = tokens.mean(1)
        else:
            h = model.forward_features(x)
            emb = model.forward_head(h)
            tokens = model.head(h) if head_per_token else h
            tokens = tokens[:, model.num_prefix_tokens :]
    attention = rec.stacked()
    return _np(tokens), _np(emb), attention


def _write_vit_npz(path, sd, *, layout: str) -> None:
    """A timm ViT state dict written as an original ViT (``vit_npz``) or scanned big_vision file."""
    d, h = VIT["width"], VIT["heads"]
    t = lambda k: _np(sd[k])  # noqa: E731
    out = {
        "embedding/kernel": t("patch_embed.proj.weight").transpose(2, 3, 1, 0),
        "embedding/bias": t("patch_embed.proj.bias"),
        "Transformer/encoder_norm/scale": t("norm.weight"),
        "Transformer/encoder_norm/bias": t("norm.bias"),
    }
    if "cls_token" in sd:
        out["cls"] = t("cls_token")
    if "head.weight" in sd:
        out["head/kernel"] = t("head.weight").T
        out["head/bias"] = t("head.bias")
    big = layout == "big_vision"
    out["pos_embedding" if big else "Transformer/posembed_input/pos_embedding"] = t("pos_embed")
    names = (
        ("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0")
        if big
        else (
            "MultiHeadDotProductAttention_1",
            "LayerNorm_2",
            "MlpBlock_3",
        )
    )
    mha, ln2, mlp = names
    blocks = []
    for i in range(VIT["depth"]):
        b = f"blocks.{i}."
        q, k, v = np.split(t(b + "attn.qkv.weight"), 3, axis=0)
        qb, kb, vb = np.split(t(b + "attn.qkv.bias"), 3)
        blk = {
            "LayerNorm_0/scale": t(b + "norm1.weight"),
            "LayerNorm_0/bias": t(b + "norm1.bias"),
            f"{ln2}/scale": t(b + "norm2.weight"),
            f"{ln2}/bias": t(b + "norm2.bias"),
            f"{mha}/out/kernel": t(b + "attn.proj.weight").T.reshape(h, d // h, d),
            f"{mha}/out/bias": t(b + "attn.proj.bias"),
            f"{mlp}/Dense_0/kernel": t(b + "mlp.fc1.weight").T,
            f"{mlp}/Dense_0/bias": t(b + "mlp.fc1.bias"),
            f"{mlp}/Dense_1/kernel": t(b + "mlp.fc2.weight").T,
            f"{mlp}/Dense_1/bias": t(b + "mlp.fc2.bias"),
        }
        for name, w, bias in (("query", q, qb), ("key", k, kb), ("value", v, vb)):
            blk[f"{mha}/{name}/kernel"] = w.T.reshape(d, h, d // h)
            blk[f"{mha}/{name}/bias"] = bias.reshape(h, d // h)
        blocks.append(blk)
    if big:  # scanned: one entry per name with a leading depth axis
        for name in blocks[0]:
            out[f"Transformer/encoderblock/{name}"] = np.stack([b[name] for b in blocks])
    else:
        for i, blk in enumerate(blocks):
            for name, value in blk.items():
                out[f"Transformer/encoderblock_{i}/{name}"] = value
    np.savez(path, **out)


def _authors_vit_state(sd) -> dict:
    """timm ViT state dict -> the authors' key names (``module.`` as saved from DataParallel)."""
    out = {
        "transformer.embeddings.patch_embeddings.weight": sd["patch_embed.proj.weight"],
        "transformer.embeddings.patch_embeddings.bias": sd["patch_embed.proj.bias"],
        "transformer.embeddings.position_embeddings": sd["pos_embed"],
        "transformer.embeddings.cls_token": sd["cls_token"],
        "transformer.encoder.encoder_norm.weight": sd["norm.weight"],
        "transformer.encoder.encoder_norm.bias": sd["norm.bias"],
        "head.weight": sd["head.weight"],
        "head.bias": sd["head.bias"],
    }
    for i in range(VIT["depth"]):
        b, a = f"blocks.{i}.", f"transformer.encoder.layer.{i}."
        for kind in ("weight", "bias"):
            for name, part in zip(
                ("query", "key", "value"), sd[b + f"attn.qkv.{kind}"].chunk(3, dim=0), strict=True
            ):
                out[a + f"attn.{name}.{kind}"] = part.clone()
            out[a + f"attn.out.{kind}"] = sd[b + f"attn.proj.{kind}"]
            out[a + f"attention_norm.{kind}"] = sd[b + f"norm1.{kind}"]
            out[a + f"ffn_norm.{kind}"] = sd[b + f"norm2.{kind}"]
            out[a + f"ffn.fc1.{kind}"] = sd[b + f"mlp.fc1.{kind}"]
            out[a + f"ffn.fc2.{kind}"] = sd[b + f"mlp.fc2.{kind}"]
    return {"module." + k: v.contiguous() for k, v in out.items()}


def _authors_resnet_state(sd) -> dict:
    """timm ResNetV2 state dict -> the authors' (BiT PyTorch) key names."""
    out = {
        "root.conv.weight": sd["stem.conv.weight"],
        "head.gn.weight": sd["norm.weight"],
        "head.gn.bias": sd["norm.bias"],
        "head.conv.weight": sd["head.fc.weight"],
        "head.conv.bias": sd["head.fc.bias"],
    }
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] != "stages":
            continue
        s, u, rest = int(parts[1]), int(parts[3]), ".".join(parts[4:])
        rest = rest.replace("norm", "gn").replace("downsample.conv", "downsample")
        out[f"body.block{s + 1}.unit{u + 1:02d}.{rest}"] = value
    return {k: v.contiguous() for k, v in out.items()}


def _write_bit_npz(path, sd) -> None:
    """timm ResNetV2 state dict -> a BiT release ``.npz`` (``resnet/`` prefix, HWIO, gamma/beta)."""
    out = {}
    for key, value in _authors_resnet_state(sd).items():
        w = _np(value)
        name = (
            key.replace("root.conv.weight", "root_block/standardized_conv2d/kernel")
            .replace("head.gn.weight", "group_norm/gamma")
            .replace("head.gn.bias", "group_norm/beta")
            .replace("head.conv.weight", "head/conv2d/kernel")
            .replace("head.conv.bias", "head/conv2d/bias")
            .replace("body.", "")
        )
        for i, abc in ((1, "a"), (2, "b"), (3, "c")):
            name = name.replace(f".gn{i}.weight", f"/{abc}/group_norm/gamma")
            name = name.replace(f".gn{i}.bias", f"/{abc}/group_norm/beta")
            name = name.replace(f".conv{i}.weight", f"/{abc}/standardized_conv2d/kernel")
        name = name.replace(".downsample.weight", "/a/proj/standardized_conv2d/kernel")
        name = name.replace(".unit", "/unit")
        out["resnet/" + name] = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w
    np.savez(path, **out)


def make_vit(out_dir, refs, torch, vision_transformer, save_file, ViTConfig, ViTModel):
    image = VIT["image"]
    x_np = _images((2, image, image, 3), 1)
    x = _nchw(x_np, torch)
    refs["vit_images"] = x_np

    # timm: class token kept, token pooling, classifier head == per-token projection.
    m = _timm_vit(vision_transformer, image, num_classes=PROJ, global_pool="token").eval()
    _randomize(m, torch)
    save_file(
        {k: v.contiguous() for k, v in m.state_dict().items()}, f"{out_dir}/timm_vit.safetensors"
    )
    refs["timm_vit/tokens"], refs["timm_vit/embedding"], refs["timm_vit/attention"] = _vit_outputs(
        m, x, torch, head_per_token=True
    )

    # The authors' model: same weights, class token dropped after the position embedding.
    state = _authors_vit_state(m.state_dict())
    save_file(state, f"{out_dir}/authors_vit.safetensors")
    torch.save(state, f"{out_dir}/authors_vit.pth")
    refs["authors_vit/tokens"], refs["authors_vit/embedding"], refs["authors_vit/attention"] = (
        _vit_outputs(m, x, torch, head_per_token=True, drop_cls=True)
    )

    # Original ViT / AugReg .npz: written from new random weights on a 4x4 grid, read
    # by timm's own .npz loader into a 40-px model, which resamples to 5x5.
    src = _timm_vit(vision_transformer, image, num_classes=PROJ, global_pool="avg", fc_norm=False)
    _randomize(src, torch)
    _write_vit_npz(f"{out_dir}/vit_npz.npz", src.state_dict(), layout="vit_npz")
    big_image = image + VIT["patch"]
    ref = _timm_vit(
        vision_transformer, big_image, num_classes=PROJ, global_pool="avg", fc_norm=False
    ).eval()
    vision_transformer._load_weights(ref, f"{out_dir}/vit_npz.npz")
    xb_np = _images((2, big_image, big_image, 3), 2)
    refs["vit_npz/images"] = xb_np
    refs["vit_npz/tokens"], refs["vit_npz/embedding"], refs["vit_npz/attention"] = _vit_outputs(
        ref, _nchw(xb_np, torch), torch, head_per_token=True
    )

    # big_vision .npz, scanned blocks, no class token, gap, read by timm.
    src = _timm_vit(
        vision_transformer,
        image,
        num_classes=PROJ,
        global_pool="avg",
        fc_norm=False,
        class_token=False,
    )
    _randomize(src, torch)
    _write_vit_npz(f"{out_dir}/big_vision.npz", src.state_dict(), layout="big_vision")
    ref = _timm_vit(
        vision_transformer,
        image,
        num_classes=PROJ,
        global_pool="avg",
        fc_norm=False,
        class_token=False,
    ).eval()
    vision_transformer._load_weights(ref, f"{out_dir}/big_vision.npz")
    refs["big_vision/tokens"], refs["big_vision/embedding"], refs["big_vision/attention"] = (
        _vit_outputs(ref, x, torch, head_per_token=True)
    )

    # Hugging Face ViTModel (with its pooler), saved with save_pretrained, reloaded by HF.
    cfg = ViTConfig(
        hidden_size=VIT["width"],
        num_hidden_layers=VIT["depth"],
        num_attention_heads=VIT["heads"],
        intermediate_size=VIT["mlp"],
        image_size=image,
        patch_size=VIT["patch"],
        attn_implementation="eager",
    )
    hf = ViTModel(cfg, add_pooling_layer=True).eval()
    _randomize(hf, torch)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp, safe_serialization=True)
        os.replace(f"{tmp}/model.safetensors", f"{out_dir}/hf_vit.safetensors")
    with torch.no_grad():
        o = hf(pixel_values=x, output_attentions=True)
    refs["hf_vit/tokens"] = _np(o.last_hidden_state[:, 1:])
    refs["hf_vit/embedding"] = _np(o.last_hidden_state[:, 0])
    refs["hf_vit/attention"] = np.stack([_np(a) for a in o.attentions], axis=1)
    refs["hf_vit/layer_norm_eps"] = np.float32(cfg.layer_norm_eps)


def make_resnet(out_dir, refs, torch, resnetv2, GroupNormAct, StdConv2d, save_file):
    w = RESNET["width"]
    channels = tuple(4 * w * 2**s for s in range(len(RESNET["layers"])))
    kw = dict(
        layers=RESNET["layers"],
        channels=channels,
        num_classes=PROJ,
        stem_chs=w,
        stem_type="fixed",
        conv_layer=partial(StdConv2d, eps=1e-8),
        norm_layer=partial(GroupNormAct, num_groups=RESNET["groups"]),
    )
    image = RESNET["image"]
    x_np = _images((2, image, image, 3), 3)
    x = _nchw(x_np, torch)
    refs["resnet_images"] = x_np

    src = resnetv2.ResNetV2(**kw).eval()
    _randomize(src, torch, scale=0.5)
    sd = src.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, f"{out_dir}/timm_resnetv2.safetensors")
    state = _authors_resnet_state(sd)
    save_file(state, f"{out_dir}/authors_resnet.safetensors")
    torch.save(state, f"{out_dir}/authors_resnet.pth")
    _write_bit_npz(f"{out_dir}/bit.npz", sd)

    # The reference reads the BiT .npz with timm's own loader.
    ref = resnetv2.ResNetV2(**kw).eval()
    resnetv2._load_weights(ref, f"{out_dir}/bit.npz")
    with torch.no_grad():
        feats = ref.forward_features(x)  # after the final GroupNorm + ReLU
        tokens = ref.head.fc(feats).flatten(2).transpose(1, 2)  # the 1x1 head per location
        emb = ref(x)
    refs["resnet/tokens"] = _np(tokens)
    refs["resnet/embedding"] = _np(emb)
    refs["resnet/std_eps"] = np.float32(1e-8)


def _finish(out_dir: str, names: list[str], versions: dict) -> None:
    for name in names:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            os.chmod(path, 0o755)
            for f in os.listdir(path):
                os.chmod(os.path.join(path, f), 0o644)
        else:
            os.chmod(path, 0o644)
    total = sum(_size(os.path.join(out_dir, n)) for n in names)
    print(f"wrote {len(names)} entries, {total / 1e6:.2f} MB, to {out_dir}: {versions}")


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
    return os.path.getsize(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("tests", "fixtures"))
    parser.add_argument(
        "--only",
        choices=("all", "legacy", "families"),
        default="all",
        help="legacy: the ViT/ResNet fixtures of issue 3; families: DINOv2, CLIP, SigLIP, DeiT",
    )
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not _torchvision_stub.torchvision_works():
        # Before transformers, timm or open_clip import it.
        _torchvision_stub.install()

    ViTConfig, ViTModel = _import_transformers()
    import torch
    import transformers
    from safetensors.torch import save_file

    timm, vision_transformer, resnetv2, GroupNormAct, StdConv2d = _import_timm()
    versions = dict(
        torch=torch.__version__, timm=timm.__version__, transformers=transformers.__version__
    )
    before = set(os.listdir(args.out))
    if args.only in ("all", "legacy"):
        torch.manual_seed(SEED)
        refs: dict[str, np.ndarray] = {}
        make_vit(args.out, refs, torch, vision_transformer, save_file, ViTConfig, ViTModel)
        make_resnet(args.out, refs, torch, resnetv2, GroupNormAct, StdConv2d, save_file)
        np.savez(os.path.join(args.out, "parity_refs.npz"), **refs)
        meta = dict(vit=VIT, proj=PROJ, resnet=RESNET, versions=versions)
        with open(os.path.join(args.out, "parity_meta.json"), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
    if args.only in ("all", "families"):
        import open_clip
        import parity_families as fam
        from timm.models import deit

        versions["open_clip"] = open_clip.__version__
        refs = fam.make_families(
            args.out, torch, transformers, vision_transformer, deit, _AttentionRecorder
        )
        np.savez(os.path.join(args.out, "families_refs.npz"), **refs)
        meta = dict(
            width=fam.W, depth=fam.DEPTH, heads=fam.HEADS, mlp=fam.MLP, patch=fam.PATCH,
            image=fam.IMAGE, resized=fam.RESIZED, versions=versions,
        )  # fmt: skip
        with open(os.path.join(args.out, "families_meta.json"), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
    written = sorted(set(os.listdir(args.out)) - before) or sorted(os.listdir(args.out))
    _finish(args.out, written, versions)


if __name__ == "__main__":
    main()
