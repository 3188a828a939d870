"""Frames on a CUDA device: NVDEC's YUV planes to RGB, turned upright and resized like CLIP, never on the CPU.

NVDEC hands back NV12 (8-bit) or P010 (10-bit in 16) planes: luma (H, W) and interleaved chroma (H/2, W/2,
2). ``yuv_to_rgb`` converts them the way the CPU path's swscale does (the frame's matrix: BT.709 when tagged
so, BT.2020 likewise, else BT.601; limited range unless the frame says full; each chroma sample shared by its
2 x 2 pixels), within a grey level of it. ``resize_cuda`` is CLIP's resize (shorter side to S, bicubic,
centre crop) with torch's antialiased bicubic, within a grey level or two of PIL's. torch is imported inside
the functions: the CPU decode path never needs it.
"""

from __future__ import annotations

from avaf.extract.decode.views import View, geometry

# (Kr, Kb) of each AVColorSpace FFmpeg tags frames with; anything else converts as BT.601, like swscale
_MATRIX = {1: (0.2126, 0.0722), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
_BT601 = (0.299, 0.114)
FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def yuv_to_rgb(luma, chroma, colorspace: int = 0, color_range: int = 0):
    """(H, W) luma and (H/2, W/2, 2) CbCr planes (uint8, or uint16 holding the bits at the top) -> (H, W, 3)
    uint8 RGB on the planes' device."""
    import torch

    scale = 256.0 if luma.dtype == torch.uint16 else 1.0  # P010 / P016: the value sits in the top bits
    y = luma.to(torch.float32) / scale
    c = chroma.to(torch.float32) / scale
    c = c.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)[: y.shape[0], : y.shape[1]]
    cb, cr = c[..., 0] - 128.0, c[..., 1] - 128.0
    if color_range != FULL_RANGE:
        y = (y - 16.0) * (255.0 / 219.0)
        cb, cr = cb * (255.0 / 224.0), cr * (255.0 / 224.0)
    kr, kb = _MATRIX.get(int(colorspace), _BT601)
    kg = 1.0 - kr - kb
    r = y + 2.0 * (1.0 - kr) * cr
    b = y + 2.0 * (1.0 - kb) * cb
    g = y - (2.0 * kb * (1.0 - kb) / kg) * cb - (2.0 * kr * (1.0 - kr) / kg) * cr
    return torch.stack((r, g, b), dim=-1).floor_().clamp_(0, 255).to(torch.uint8)  # swscale truncates


def upright_cuda(rgb, turns: int, mirrored: bool):
    """``sampling.upright`` for a (H, W, 3) tensor: ``turns`` quarter turns counter-clockwise, then the mirror."""
    import torch

    out = torch.rot90(rgb, turns, dims=(0, 1)) if turns else rgb
    return out.flip(1) if mirrored else out


def resize_cuda(frames, image_size: int | View):
    """(B, H, W, 3) uint8 CUDA -> (B, S, S, 3) uint8 CUDA: a view (an int: CLIP's, ``View(S)``) with torch's
    antialiased bicubic: shorter side to the view's, centre crop. View(0): the frames unchanged."""
    import torch
    import torch.nn.functional as F

    view = image_size if isinstance(image_size, View) else View(image_size)
    if not view.size:
        return frames
    height, width = frames.shape[1:3]
    new_w, new_h, top, left = geometry(width, height, view)
    s = view.size
    x = frames.permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    if (new_w, new_h) != (width, height):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    x = x[:, :, top : top + s, left : left + s]
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # (B, S, S, 3)
