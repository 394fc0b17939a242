"""Parity fixtures for DINOv2, CLIP, SigLIP and DeiT (part of ``make_parity_fixtures.py``).

Every family is a tiny model (width 32, depth 2, 4 heads, MLP 64, patch 4,
16-px images: a 4x4 position grid) with random weights rounded to float16,
built in its reference library and saved in its own format, float16 on disk
(the loaders upcast; the references compute in float32 on the same values):

- Hugging Face ``Dinov2Model``, ``Dinov2WithRegistersModel`` and a SwiGLU
  ``Dinov2Model`` as folders (``save_pretrained``);
- the DINOv2 hub's state dicts (``.pth`` / ``.safetensors``), written from the
  same weights, with their outputs from ``HubDino`` below: a small torch model
  written here from reading facebookresearch/dinov2's
  ``DinoVisionTransformer`` (``interpolate_pos_encoding``), checked against
  the Hugging Face model on the native grid;
- OpenAI CLIP (QuickGELU, the marker keys of OpenAI's archives) and OpenCLIP
  (GELU, layer scale) state dicts from ``open_clip``; a Hugging Face
  ``CLIPVisionModelWithProjection`` folder;
- a Hugging Face ``SiglipVisionModel`` folder and the same weights as a
  big_vision ``.npz`` (scanned blocks, ``params/img/``, a stub text tower),
  read back by timm's big_vision reader for its outputs;
- a timm ``VisionTransformerDistilled`` (DeiT) ``.safetensors``.

Position-embedding conventions are exercised on an 8x12 input (a 2x3 grid,
shrinking and not square) through the reference models themselves, and on
bare grids through ``torch.nn.functional.interpolate``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile

import numpy as np

W, DEPTH, HEADS, MLP, PATCH, IMAGE = 32, 2, 4, 64, 4, 16
RESIZED = (8, 12)
SEED = 0


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy().copy()


def _randomize(module, torch, seed: int, scale: float = 0.2) -> None:
    """Random float16-representable weights (norms and layer scales near 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * scale
            one = any(s in name for s in ("norm", "ln_", "layernorm", "lambda1", "gamma", "ls_"))
            value = 1.0 + noise if (one and not name.endswith("bias")) else noise
            p.copy_(value.half().float())


def _half(sd) -> dict:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def _nchw(x, torch):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _store(refs, name, tokens, emb, attention) -> None:
    """Reference outputs; the attention of the first image only (the fixture stays small)."""
    refs[f"{name}/tokens"] = tokens
    refs[f"{name}/embedding"] = emb
    refs[f"{name}/attention"] = attention[:1]


def _save_folder(model, path: str, preprocessor: dict | None = None) -> None:
    if os.path.exists(path):
        shutil.rmtree(path)
    with tempfile.TemporaryDirectory() as tmp:
        model.half().save_pretrained(tmp, safe_serialization=True)
        model.float()
        os.makedirs(path)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(os.path.join(tmp, name), path)
    if preprocessor is not None:
        with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
            json.dump(preprocessor, f, indent=1)


def _hf_outputs(out, tokens_fn, emb) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    attention = np.stack([_np(a) for a in out.attentions], axis=1)
    return _np(tokens_fn(out)), _np(emb), attention


# --------------------------------------------------------------------------- DINOv2 hub model


def hub_classes(torch):
    """``HubDino``: the DINOv2 hub's forward pass, from reading its ``DinoVisionTransformer``."""
    nn, F = torch.nn, torch.nn.functional

    class LayerScale(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(d))

    class Block(nn.Module):
        def __init__(self, d, hidden, swiglu):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
            self.attn = nn.Module()
            self.attn.qkv, self.attn.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ls1, self.ls2 = LayerScale(d), LayerScale(d)
            self.mlp, self.swiglu = nn.Module(), swiglu
            if swiglu:
                self.mlp.w12, self.mlp.w3 = nn.Linear(d, 2 * hidden), nn.Linear(hidden, d)
            else:
                self.mlp.fc1, self.mlp.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

        def forward(self, x, record):
            b, n, d = x.shape
            qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, HEADS, d // HEADS)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            a = ((q @ k.transpose(-2, -1)) / math.sqrt(d // HEADS)).softmax(-1)
            record.append(a)
            y = self.attn.proj((a @ v).transpose(1, 2).reshape(b, n, d))
            x = x + self.ls1.gamma * y
            h = self.norm2(x)
            if self.swiglu:
                x1, x2 = self.mlp.w12(h).chunk(2, dim=-1)
                h = self.mlp.w3(F.silu(x1) * x2)
            else:
                h = self.mlp.fc2(F.gelu(self.mlp.fc1(h)))
            return x + self.ls2.gamma * h

    class HubDino(nn.Module):
        def __init__(self, grid, registers=0, hidden=MLP, swiglu=False, offset=0.1, aa=False):
            super().__init__()
            self.patch_embed = nn.Module()
            self.patch_embed.proj = nn.Conv2d(3, W, PATCH, PATCH)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, W))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, W))
            if registers:
                self.register_tokens = nn.Parameter(torch.zeros(1, registers, W))
            self.mask_token = nn.Parameter(torch.zeros(1, W))
            self.blocks = nn.ModuleList(Block(W, hidden, swiglu) for _ in range(DEPTH))
            self.norm = nn.LayerNorm(W, eps=1e-6)
            self.registers, self.offset, self.aa = registers, offset, aa

        def positions(self, n_patches, height, width):
            pos = self.pos_embed
            n = pos.shape[1] - 1
            if n_patches == n and height == width:
                return pos
            rows, cols = height // PATCH, width // PATCH
            m = int(math.sqrt(n))
            grid = pos[:, 1:].reshape(1, m, m, W).permute(0, 3, 1, 2)
            if self.offset:  # the hub's interpolate_offset: a scale factor, not a size
                kw = dict(scale_factor=((rows + self.offset) / m, (cols + self.offset) / m))
            else:
                kw = dict(size=(rows, cols))
            grid = F.interpolate(grid, mode="bicubic", antialias=self.aa, **kw)
            assert tuple(grid.shape[-2:]) == (rows, cols)
            return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, W)], dim=1)

        def forward(self, images):
            b, _, height, width = images.shape
            x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
            x = x + self.positions(x.shape[1] - 1, height, width)
            if self.registers:
                x = torch.cat([x[:, :1], self.register_tokens.expand(b, -1, -1), x[:, 1:]], 1)
            record = []
            for block in self.blocks:
                x = block(x, record)
            x = self.norm(x)
            return x[:, 1 + self.registers :], x[:, 0], torch.stack(record, dim=1)

    return HubDino


def hf_to_hub(sd) -> dict:
    """Hugging Face Dinov2 saved names -> the hub's (q, k, v fused into ``attn.qkv``)."""
    simple = [
        ("embeddings.cls_token", "cls_token"),
        ("embeddings.mask_token", "mask_token"),
        ("embeddings.register_tokens", "register_tokens"),
        ("embeddings.position_embeddings", "pos_embed"),
        ("embeddings.patch_embeddings.projection", "patch_embed.proj"),
        ("attention.output.dense", "attn.proj"),
        ("layer_scale1.lambda1", "ls1.gamma"),
        ("layer_scale2.lambda1", "ls2.gamma"),
        ("mlp.weights_in", "mlp.w12"),
        ("mlp.weights_out", "mlp.w3"),
        ("encoder.layer.", "blocks."),
        ("layernorm.", "norm."),
    ]
    out = {}
    for key, value in sd.items():
        if ".attention.attention." in key:
            continue
        for a, b in simple:
            key = key.replace(a, b)
        out[key] = value
    for i in range(DEPTH):
        for kind in ("weight", "bias"):
            parts = [
                sd[f"encoder.layer.{i}.attention.attention.{n}.{kind}"]
                for n in ("query", "key", "value")
            ]
            out[f"blocks.{i}.attn.qkv.{kind}"] = np.concatenate(parts, axis=0)
    return out


def make_dinov2(out_dir, refs, torch, tf, x, xr) -> None:
    from safetensors.numpy import load_file
    from safetensors.numpy import save_file as save_np

    HubDino = hub_classes(torch)
    base = dict(
        hidden_size=W,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        mlp_ratio=MLP // W,
        image_size=IMAGE,
        patch_size=PATCH,
        layerscale_value=1.0,
        attn_implementation="eager",
    )
    variants = [
        ("dinov2", tf.Dinov2Model, tf.Dinov2Config(**base), {}),
        (
            "dinov2_reg",
            tf.Dinov2WithRegistersModel,
            tf.Dinov2WithRegistersConfig(**base, num_register_tokens=2),
            dict(registers=2, offset=0.0, aa=True),
        ),
        (
            "dinov2_swiglu",
            tf.Dinov2Model,
            tf.Dinov2Config(**base, use_swiglu_ffn=True),
            dict(hidden=(int(MLP * 2 / 3) + 7) // 8 * 8, swiglu=True),
        ),
    ]
    for seed, (name, cls, cfg, hub_kw) in enumerate(variants, start=10):
        hf = cls(cfg).eval()
        _randomize(hf, torch, seed)
        folder = os.path.join(out_dir, f"{name}_hf")
        _save_folder(hf, folder)
        r = hub_kw.get("registers", 0)
        with torch.no_grad():
            for key, images in (("", x), ("@8x12", xr)):
                if name == "dinov2_swiglu" and key:
                    continue
                o = hf(pixel_values=_nchw(images, torch), output_attentions=True)
                patches = o.last_hidden_state[:, 1 + r :]
                got = _hf_outputs(o, lambda _, p=patches: p, o.pooler_output)
                _store(refs, f"{name}_hf{key}", *got)
        # The hub's file and model from the same weights.
        hub_sd = hf_to_hub(load_file(os.path.join(folder, "model.safetensors")))
        hub = HubDino(IMAGE // PATCH, **hub_kw).eval()
        hub.load_state_dict({k: torch.from_numpy(v).float() for k, v in hub_sd.items()})
        path = os.path.join(out_dir, f"{name}_hub")
        save_np(hub_sd, path + ".safetensors")
        if name == "dinov2":  # also as the hub's own .pth (read with the torch extra only)
            torch.save({k: torch.from_numpy(v) for k, v in hub_sd.items()}, path + ".pth")
        with torch.no_grad():
            for key, images in (("", x), ("@8x12", xr)):
                if name == "dinov2_swiglu" and key:
                    continue
                tokens, emb, att = hub(_nchw(images, torch))
                _store(refs, f"{name}_hub{key}", _np(tokens), _np(emb), _np(att))
        # The hub model is the Hugging Face model on the native grid.
        for part in ("tokens", "embedding", "attention"):
            a, b = refs[f"{name}_hub/{part}"], refs[f"{name}_hf/{part}"]
            assert np.abs(a - b).max() < 1e-5, (name, part, np.abs(a - b).max())


# --------------------------------------------------------------------------- CLIP


def _mha_recorder(blocks):
    """Records torch ``nn.MultiheadAttention`` weights per head (open_clip calls it without)."""
    maps = []
    for block in blocks:
        forward = block.attn.forward

        def wrapped(*args, _forward=forward, **kw):
            kw.update(need_weights=True, average_attn_weights=False)
            out = _forward(*args, **kw)
            maps.append(out[1])
            return out

        block.attn.forward = wrapped
    return maps


def make_clip(out_dir, refs, torch, tf, x) -> None:
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from safetensors.torch import save_file

    text = CLIPTextCfg(context_length=8, vocab_size=64, width=16, heads=2, layers=1)
    for seed, (name, quick, ls) in enumerate(
        (("clip_openai", True, None), ("openclip", False, 0.5)), start=20
    ):
        vision = CLIPVisionCfg(
            layers=DEPTH,
            width=W,
            head_width=W // HEADS,
            mlp_ratio=MLP / W,
            patch_size=PATCH,
            image_size=IMAGE,
            ls_init_value=ls,
        )
        model = CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text, quick_gelu=quick).eval()
        _randomize(model, torch, seed)
        sd = _half(model.state_dict())
        if quick:
            # What OpenAI's TorchScript archives add to the state dict.
            sd.update(
                input_resolution=torch.tensor(IMAGE),
                context_length=torch.tensor(8),
                vocab_size=torch.tensor(64),
            )
        save_file(sd, os.path.join(out_dir, f"{name}.safetensors"))
        visual = model.visual
        visual.output_tokens = True
        maps = _mha_recorder(visual.transformer.resblocks)
        with torch.no_grad():
            pooled, tokens = visual(_nchw(x, torch))
            tokens = tokens @ visual.proj  # the project's tokens: ln_post(x) @ proj
        _store(refs, name, _np(tokens), _np(pooled), np.stack([_np(a) for a in maps], axis=1))

    cfg = tf.CLIPVisionConfig(
        hidden_size=W,
        intermediate_size=MLP,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        image_size=IMAGE,
        patch_size=PATCH,
        projection_dim=16,
        attn_implementation="eager",
    )
    hf = tf.CLIPVisionModelWithProjection(cfg).eval()
    _randomize(hf, torch, 22)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    pre = dict(image_mean=list(mean), image_std=list(std), do_normalize=True)
    _save_folder(hf, os.path.join(out_dir, "clip_hf"), pre)
    with torch.no_grad():
        o = hf(pixel_values=_nchw(x, torch), output_attentions=True)
        vm = hf.vision_model

        def tokens_fn(o):
            return hf.visual_projection(vm.post_layernorm(o.last_hidden_state[:, 1:]))

        _store(refs, "clip_hf", *_hf_outputs(o, tokens_fn, o.image_embeds))


# --------------------------------------------------------------------------- SigLIP


def _write_big_vision(path: str, sd) -> None:
    """A Hugging Face SigLIP vision state dict as big_vision's SigLIP ``.npz`` (scanned)."""
    t = lambda k: sd[k].detach().float().numpy()  # noqa: E731
    dh = W // HEADS
    img = "params/img/"
    out = {
        img + "embedding/kernel": t("embeddings.patch_embedding.weight").transpose(2, 3, 1, 0),
        img + "embedding/bias": t("embeddings.patch_embedding.bias"),
        img + "pos_embedding": t("embeddings.position_embedding.weight")[None],
        img + "Transformer/encoder_norm/scale": t("post_layernorm.weight"),
        img + "Transformer/encoder_norm/bias": t("post_layernorm.bias"),
        img + "MAPHead_0/probe": t("head.probe"),
        img + "MAPHead_0/LayerNorm_0/scale": t("head.layernorm.weight"),
        img + "MAPHead_0/LayerNorm_0/bias": t("head.layernorm.bias"),
        # A stub text tower and the logit temperature and bias, as in a real file.
        "params/txt/Embed_0/embedding": np.zeros((8, 16), np.float32),
        "params/t": np.zeros((1,), np.float32),
        "params/b": np.zeros((1,), np.float32),
    }
    for r in (0, 1):
        out[img + f"MAPHead_0/MlpBlock_0/Dense_{r}/kernel"] = t(f"head.mlp.fc{r + 1}.weight").T
        out[img + f"MAPHead_0/MlpBlock_0/Dense_{r}/bias"] = t(f"head.mlp.fc{r + 1}.bias")
    mha = img + "MAPHead_0/MultiHeadDotProductAttention_0/"
    qkv_w = np.split(t("head.attention.in_proj_weight"), 3)
    qkv_b = np.split(t("head.attention.in_proj_bias"), 3)
    for n, w, b in zip(("query", "key", "value"), qkv_w, qkv_b, strict=True):
        out[mha + f"{n}/kernel"] = w.T.reshape(W, HEADS, dh)
        out[mha + f"{n}/bias"] = b.reshape(HEADS, dh)
    out[mha + "out/kernel"] = t("head.attention.out_proj.weight").T.reshape(HEADS, dh, W)
    out[mha + "out/bias"] = t("head.attention.out_proj.bias")
    blocks: dict[str, list] = {}

    def add(name, value):
        blocks.setdefault(name, []).append(value)

    for i in range(DEPTH):
        p = f"encoder.layers.{i}."
        for ln, src in (("LayerNorm_0", "layer_norm1"), ("LayerNorm_1", "layer_norm2")):
            add(f"{ln}/scale", t(p + src + ".weight"))
            add(f"{ln}/bias", t(p + src + ".bias"))
        for n, src in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            add(f"MultiHeadDotProductAttention_0/{n}/kernel", t(p + f"self_attn.{src}.weight").T)
            add(f"MultiHeadDotProductAttention_0/{n}/bias", t(p + f"self_attn.{src}.bias"))
        add("MultiHeadDotProductAttention_0/out/kernel", t(p + "self_attn.out_proj.weight").T)
        add("MultiHeadDotProductAttention_0/out/bias", t(p + "self_attn.out_proj.bias"))
        for r in (0, 1):
            add(f"MlpBlock_0/Dense_{r}/kernel", t(p + f"mlp.fc{r + 1}.weight").T)
            add(f"MlpBlock_0/Dense_{r}/bias", t(p + f"mlp.fc{r + 1}.bias"))
    for name, values in blocks.items():
        v = np.stack(values)
        if "MultiHeadDotProductAttention_0" in name and not name.endswith("out/bias"):
            if name.endswith("out/kernel"):
                v = v.reshape(DEPTH, HEADS, dh, W)
            elif name.endswith("kernel"):
                v = v.reshape(DEPTH, W, HEADS, dh)
            else:
                v = v.reshape(DEPTH, HEADS, dh)
        out[img + "Transformer/encoderblock/" + name] = v
    np.savez(path, **{k: v.astype(np.float16) for k, v in out.items()})


def make_siglip(out_dir, refs, torch, tf, vision_transformer, recorder, x, xr) -> None:
    cfg = tf.SiglipVisionConfig(
        hidden_size=W,
        intermediate_size=MLP,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        image_size=IMAGE,
        patch_size=PATCH,
        attn_implementation="eager",
    )
    hf = tf.SiglipVisionModel(cfg).eval()
    _randomize(hf, torch, 30)
    _save_folder(hf, os.path.join(out_dir, "siglip_hf"))
    with torch.no_grad():
        for key, images in (("", x), ("@8x12", xr)):
            o = hf(pixel_values=_nchw(images, torch), output_attentions=True,
                   interpolate_pos_encoding=bool(key))  # fmt: skip
            got = _hf_outputs(o, lambda o: o.last_hidden_state, o.pooler_output)
            _store(refs, f"siglip_hf{key}", *got)
    # big_vision .npz of the same weights, read by timm's big_vision reader.
    path = os.path.join(out_dir, "siglip_bv.npz")
    _write_big_vision(path, hf.state_dict())
    ref = vision_transformer.VisionTransformer(
        img_size=IMAGE,
        patch_size=PATCH,
        embed_dim=W,
        depth=DEPTH,
        num_heads=HEADS,
        mlp_ratio=MLP / W,
        class_token=False,
        global_pool="map",
        act_layer="gelu_tanh",
        num_classes=0,
    ).eval()
    vision_transformer._load_weights(ref, path)
    rec = recorder(ref.blocks)
    with torch.no_grad():
        feats = ref.forward_features(_nchw(x, torch))
        emb = ref.forward_head(feats, pre_logits=True)
    _store(refs, "siglip_bv", _np(feats), _np(emb), rec.stacked())
    for part in ("tokens", "embedding", "attention"):
        a, b = refs[f"siglip_bv/{part}"], refs[f"siglip_hf/{part}"]
        assert np.abs(a - b).max() < 1e-5, ("timm's reading of the .npz differs from HF", part)


# --------------------------------------------------------------------------- DeiT


def make_deit(out_dir, refs, torch, deit, vision_transformer, recorder, x, xr) -> None:
    from safetensors.torch import save_file

    def build(size):
        return deit.VisionTransformerDistilled(
            img_size=size,
            patch_size=PATCH,
            embed_dim=W,
            depth=DEPTH,
            num_heads=HEADS,
            mlp_ratio=MLP / W,
            num_classes=10,
        ).eval()

    model = build(IMAGE)
    _randomize(model, torch, 40)
    save_file(_half(model.state_dict()), os.path.join(out_dir, "deit.safetensors"))
    resized = build(RESIZED)
    # timm's own loading path at another size (deit's filter: bicubic, antialias).
    filter_fn = vision_transformer.checkpoint_filter_fn
    sd = filter_fn(model.state_dict(), resized, adapt_layer_scale=True)
    resized.load_state_dict(sd)
    for key, m, images in (("", model, x), ("@8x12", resized, xr)):
        rec = recorder(m.blocks)
        with torch.no_grad():
            feats = m.forward_features(_nchw(images, torch))
            emb = m.forward_head(feats, pre_logits=True)
        _store(refs, f"deit{key}", _np(feats[:, 2:]), _np(emb), rec.stacked())


# --------------------------------------------------------------------------- bare grids


INTERP_CASES = {  # name -> (source grid side, target grid)
    "5to3x4": (5, (3, 4)),
    "5to7x9": (5, (7, 9)),
    "5to5x8": (5, (5, 8)),
    "37to16": (37, (16, 16)),
}


def make_interp(refs, torch) -> None:
    """torch's bicubic resampling of random grids under the three conventions."""
    F = torch.nn.functional
    rng = np.random.default_rng(SEED)
    for name, (m, (h, w)) in INTERP_CASES.items():
        grid = rng.standard_normal((m, m, 3 if m < 10 else 2)).astype(np.float32)
        t = torch.from_numpy(grid).permute(2, 0, 1)[None]
        calls = {
            "bicubic": dict(size=(h, w)),
            "bicubic_antialias": dict(size=(h, w), antialias=True),
            "bicubic_offset": dict(scale_factor=((h + 0.1) / m, (w + 0.1) / m)),
        }
        refs[f"interp/{name}/grid"] = grid
        for method, kw in calls.items():
            out = F.interpolate(t, mode="bicubic", align_corners=False, **kw)
            refs[f"interp/{name}/{method}"] = _np(out[0].permute(1, 2, 0))


def make_families(out_dir, torch, tf, vision_transformer, deit, recorder) -> dict:
    """Writes every family's files into ``out_dir``; returns the reference arrays."""
    rng = np.random.default_rng(SEED + 1)
    x = rng.standard_normal((2, IMAGE, IMAGE, 3)).astype(np.float32)
    xr = rng.standard_normal((2, *RESIZED, 3)).astype(np.float32)
    refs: dict[str, np.ndarray] = {"images": x, "images@8x12": xr}
    torch.manual_seed(SEED)
    make_dinov2(out_dir, refs, torch, tf, x, xr)
    make_clip(out_dir, refs, torch, tf, x)
    make_siglip(out_dir, refs, torch, tf, vision_transformer, recorder, x, xr)
    make_deit(out_dir, refs, torch, deit, vision_transformer, recorder, x, xr)
    make_interp(refs, torch)
    return refs
