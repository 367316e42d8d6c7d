"""Hyper-parameters of the released ResShift checkpoints (and SinSR), by preset name.

The values are the official configs' (``model.params``, ``autoencoder.params``,
``diffusion.params``) with the official names, so an official YAML and a preset build the
same networks. The released checkpoints share almost all of them, so each preset is the
shared networks and schedule below plus what that checkpoint changes; data only.
"""

from __future__ import annotations

import copy


def merged(base: dict, delta: dict) -> dict:
    """A new dict: ``base`` with ``delta`` laid over it.

    Nested dicts merge key by key; any other value in ``delta`` replaces the base's.
    Keys keep the base's order and new keys follow, so a preset written as a delta
    serialises (model.json) in the same order as one written out in full.
    """
    out = copy.deepcopy(base)
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# The Swin-UNet of every release. ``lq_size`` (the LQ conditioning size) is each
# checkpoint's own, so every preset states it.
_UNET = {
    "image_size": 64,
    "in_channels": 3,
    "model_channels": 160,
    "out_channels": 3,
    "attention_resolutions": [64, 32, 16, 8],
    "dropout": 0,
    "channel_mult": [1, 2, 2, 4],
    "num_res_blocks": [2, 2, 2, 2],
    "conv_resample": True,
    "dims": 2,
    "use_fp16": False,
    "num_head_channels": 32,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "swin_depth": 2,
    "swin_embed_dim": 192,
    "window_size": 8,
    "mlp_ratio": 4,
    "cond_lq": True,
}

# The f4 VQ autoencoder (autoencoder_vq_f4.pth and the face-inpainting one).
_AUTOENCODER_F4 = {
    "embed_dim": 3,
    "n_embed": 8192,
    "ddconfig": {
        "double_z": False,
        "z_channels": 3,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 2, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [],
        "dropout": 0.0,
        "padding_mode": "zeros",
    },
}

# The 4-step x4 schedule; the other releases change steps, noise floor or scale.
_DIFFUSION = {
    "sf": 4,
    "schedule_name": "exponential",
    "schedule_kwargs": {"power": 0.3},
    "etas_end": 0.99,
    "steps": 4,
    "min_noise_level": 0.2,
    "kappa": 2.0,
    "weighted_mse": False,
    "predict_type": "xstart",
    "timestep_respacing": None,
    "scale_factor": 1.0,
    "normalize_input": True,
    "latent_flag": True,
}


def _release(description: str, task: str, unet_file: str,
             autoencoder_file: str = "autoencoder_vq_f4.pth", **delta: dict) -> dict:
    """One released checkpoint: the shared networks and schedule with ``delta`` over them
    (keyword per section: ``unet=``, ``autoencoder=``, ``diffusion=``)."""
    base = {
        "description": description,
        "task": task,
        "official_unet_file": unet_file,
        "official_autoencoder_file": autoencoder_file,
        "unet": _UNET,
        "autoencoder": _AUTOENCODER_F4,
        "diffusion": _DIFFUSION,
    }
    return merged(base, delta)


_PRESETS: dict[str, dict] = {
    "realsr_v3": _release(
        "x4 real-world super-resolution, 4 steps (TPAMI v3, the default)",
        "sr", "resshift_realsrx4_s4_v3.pth",
        unet={"lq_size": 64}),
    "realsr_v1": _release(
        "x4 real-world super-resolution, 15 steps (NeurIPS v1)",
        "sr", "resshift_realsrx4_s15_v1.pth",
        unet={"lq_size": 64},
        diffusion={"steps": 15, "min_noise_level": 0.04}),
    "bicsr": _release(
        "x4 bicubic super-resolution, 4 steps",
        "sr", "resshift_bicsrx4_s4.pth",
        unet={"lq_size": 64}),
    # Inpainting conditions on the mask too, at full resolution (no upscaling).
    "inpaint_imagenet": _release(
        "inpainting on ImageNet-like images, 4 steps, needs a mask",
        "inpaint", "resshift_inpainting_imagenet_s4.pth",
        unet={"cond_mask": True, "lq_size": 256},
        diffusion={"sf": 1}),
    "inpaint_face": _release(
        "face inpainting, 4 steps, needs a mask",
        "inpaint", "resshift_inpainting_face_s4.pth", "celeba256_vq_f4_dim3_face.pth",
        unet={"cond_mask": True, "lq_size": 256},
        diffusion={"sf": 1}),
    # Face restoration works in the 8-channel latent of a deeper f8 autoencoder.
    "faceir": _release(
        "blind face restoration on aligned 512x512 faces, 4 steps, f8 autoencoder",
        "face", "resshift_faceir_s4.pth", "ffhq512_vq_f8_dim8_face.pth",
        unet={"in_channels": 8, "out_channels": 8, "lq_size": 512},
        autoencoder={"embed_dim": 8, "n_embed": 4096,
                     "ddconfig": {"z_channels": 8, "resolution": 512, "ch": 64,
                                  "ch_mult": [1, 2, 4, 8], "num_res_blocks": [1, 2, 3, 4]}},
        diffusion={"sf": 1}),
}

# SinSR (CVPR 2024) distils realsr_v1 into one step: same UNet and autoencoder, one
# network call at the last timestep of the 15-step schedule, its x0 prediction is the
# result (no posterior step).
_PRESETS["sinsr"] = merged(_PRESETS["realsr_v1"], {
    "description": "x4 real-world super-resolution in ONE step (SinSR, distilled from realsr_v1)",
    "official_unet_file": "SinSR_v1.pth",
    "diffusion": {"sampler": "single_step"},
})

PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str) -> dict:
    """A deep copy of preset ``name``'s description, task and configs."""
    if name not in _PRESETS:
        raise KeyError(f"unknown preset {name!r}; known presets: {', '.join(PRESET_NAMES)}")
    return copy.deepcopy(_PRESETS[name])
