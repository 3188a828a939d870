"""Which video packets to decode so that the frame nearest each t + 0.5 s comes out as a full decode gives it.

DESIGN.md §3 "Decoding": one frame per second is kept of 25-30, so most of the decode work is waste. A demux
pass (``scan_packets``, no decoding: about 1% of the decode) reads every video packet's presentation time and
keyframe flag; from those alone the frames the sampling rule takes are known exactly (``nearest_indices``
over the packet times, the same rule as a full decode). ``plan_packets`` then says, per packet, whether to
decode it in full, decode it only if it is a reference frame, or never send it; ``PacketFeeder`` applies that
while PyAV decodes. The rule stays exact (tests/test_decode_fast.py compares every frame and timestamp with a
decode of every frame); the plan is given up (every packet decoded) when a packet has no timestamp. Savings:
docs/extraction.md, "Decoding only what is needed".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from avaf.extract.decode.sampling import nearest_indices

logger = logging.getLogger(__name__)

SEND, NONREF, SKIP = 0, 1, 2  # what happens to a packet: decoded in full, decoded if a reference, not sent


@dataclass
class PacketScan:
    """The video packets of one stream, in decode order (empty packets left out)."""

    times: np.ndarray  # (P,) presentation time on the timeline (s)
    keys: np.ndarray  # (P,) bool, keyframe flag
    end: float  # where the last frame ends on the timeline (s): the latest pts + duration


def scan_packets(path: str | Path, index: int, origin: float) -> PacketScan | None:
    """Demux video stream ``index`` of ``path`` without decoding; None when some packet has no timestamp."""
    times, keys, end = [], [], 0.0
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        stream = container.streams[index]
        if stream.time_base is None:
            return None
        base = float(stream.time_base)
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if packet.pts is None:
                    return None
                time = packet.pts * base - origin
                times.append(time)
                keys.append(packet.is_keyframe)
                end = max(end, time + (packet.duration or 0) * base)
        except av.error.FFmpegError as err:  # a truncated or corrupt file: plan what could be read
            logger.debug("%s: demux stopped early (%s)", path, err)
    if not times:
        return None
    return PacketScan(np.asarray(times, np.float64), np.asarray(keys, bool), end)


def plan_packets(scan: PacketScan, targets: np.ndarray) -> np.ndarray:
    """(P,) SEND / NONREF / SKIP for each packet of ``scan`` (decode order), given the sample times.

    * **needed** (the frame taken for some second): SEND, decoded in full;
    * **between a keyframe and a needed packet** of the same keyframe interval ("segment"): NONREF, sent with
      FFmpeg's ``skip_frame = NONREF``, so reference frames are decoded (a needed frame may depend on them)
      and non-reference frames, which nothing depends on, are dropped unseen;
    * **after the last needed packet of its segment**, or in a segment with no needed packet: SKIP. The next
      needed segment starts at a keyframe, a random access point, so the frames decoded there are unchanged.

    A needed frame presented before its segment's keyframe (a leading picture of an open GOP: HEVC RASL,
    H.264 open-GOP B-frames) depends on the previous segment, which is then sent up to its end. Frames decoded
    but not needed (reference frames, leading pictures whose references were not sent) are never taken:
    every second's nearest frame is decoded, so the nearest decoded frame is it.
    """
    times, count = scan.times, len(scan.times)
    by_time = np.argsort(times, kind="stable")  # presentation order
    needed = np.zeros(count, bool)
    needed[by_time[nearest_indices(times[by_time], targets)]] = True
    keys = scan.keys.copy()
    keys[0] = True  # a stream cut before its first keyframe: its first packets start a segment all the same
    segment = np.cumsum(keys) - 1  # (P,) segment of each packet
    starts = np.flatnonzero(keys)  # first packet (the keyframe) of each segment
    last = np.full(len(starts), -1)  # last packet to send in each segment (-1: none)
    for i in np.flatnonzero(needed):
        s = segment[i]
        last[s] = max(last[s], i)
        if s > 0 and times[i] < times[starts[s]]:  # a leading picture: it refers to the previous segment
            last[s - 1] = starts[s] - 1
    action = np.full(count, SKIP, np.int8)
    sent = np.arange(count) <= last[segment]
    action[sent] = NONREF
    action[needed] = SEND
    return action


class PacketFeeder:
    """Sends each video packet (decode order) to the decoder as ``plan_packets`` says; with no plan, every one."""

    def __init__(self, codec_context, actions: np.ndarray | None) -> None:
        self.ctx, self.actions, self.count = codec_context, actions, 0
        self.mode = "DEFAULT"
        sent = np.flatnonzero(actions != SKIP) if actions is not None else np.zeros(0, int)
        self._last_sent = int(sent[-1]) + 1 if len(sent) else 0

    @property
    def finished(self) -> bool:
        """Every packet the plan sends has been sent."""
        return self.actions is not None and self.count >= self._last_sent

    def wants(self, packet) -> bool:
        """Whether to decode ``packet`` (setting skip_frame for it); empty packets (the flush) always."""
        if self.actions is None or not packet.size:
            return True
        index, self.count = self.count, self.count + 1
        action = self.actions[index] if index < len(self.actions) else SEND
        mode = "NONREF" if action == NONREF else "DEFAULT"
        if mode != self.mode:
            self.ctx.skip_frame = self.mode = mode
        return action != SKIP
