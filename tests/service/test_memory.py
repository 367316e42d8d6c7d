"""Memory bounded for every accepted input: a max-size request (RESSHIFT_MAX_PIXELS, the
default 4 Mpx) through a real `resshift serve` process, with a tiny pixel-space model
shaped like the bundled one (x4, the canvas at the output size: 8000x8000), and the
server's peak RSS read from /proc. The tiny network keeps it to a minute or two; what
the bound is about (canvases, tiles in flight, the output) does not depend on it."""

from __future__ import annotations

import copy
import io
import os
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers.service import Serve

pytestmark = pytest.mark.timeout(600)
LIMIT = int(2.5 * 2 ** 30)


def tiny_pixel_model(root) -> str:
    """The bundled demo's configuration with an 8-channel network, one step."""
    import torch

    import model
    from model.directory import build_networks
    from model.restorer import Restorer
    cfg = copy.deepcopy(model.load("demo").config)
    cfg.unet.update(model_channels=8, channel_mult=[1], num_res_blocks=[0],
                    attention_resolutions=[], norm_groups=4, swin_embed_dim=8,
                    num_head_channels=8, mlp_ratio=1)
    cfg.diffusion["sampler"] = "single_step"
    cfg.name = "tiny-pixel"
    torch.manual_seed(0)
    unet, ae = build_networks(cfg)
    return str(model.save(Restorer(cfg, unet, ae), root / "tiny-pixel"))


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_a_max_size_request_stays_under_2_5_gib(tmp_path):
    path = tiny_pixel_model(tmp_path)
    rng = np.random.default_rng(0)
    small = (rng.random((250, 250, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(small).resize((2000, 2000), Image.BICUBIC)   # 4 Mpx: the limit
    buf = io.BytesIO()
    image.save(buf, "PNG")
    server = Serve("all", {"RESSHIFT_MODELS": f"sr={path}", "RESSHIFT_TILE": "128",
                           "RESSHIFT_TORCH_THREADS": "1"}, tmp_path, "memory")
    try:
        server.wait_ready()
        job = httpx.post(server.url + "/v1/jobs", timeout=60,
                         files={"image": ("big.png", buf.getvalue(), "image/png")})
        assert job.status_code == 202, job.text
        url = f"{server.url}/v1/jobs/{job.json()['id']}"
        end = time.monotonic() + 540
        while (state := httpx.get(url, timeout=10).json())["status"] in ("queued", "running"):
            assert time.monotonic() < end, "the max-size job did not finish"
            time.sleep(1)
        assert state["status"] == "succeeded", state
        result = httpx.get(url + "/result", timeout=120)
        assert result.status_code == 200
        assert Image.open(io.BytesIO(result.content)).size == (8000, 8000)
        peak = peak_rss(server.proc.pid)
    finally:
        server.stop()
    assert peak <= LIMIT, f"peak RSS {peak / 2 ** 30:.2f} GiB"
