"""Decoding (DESIGN.md §3 "Sampling", "Decoding"): a video file -> `DecodedVideo` (T frames, T seconds of audio).

backends  decode_video / decode_with_fallback over PyAV and decord;  worker  the same in a child process
sampling  the sampling grid, resizing and audio assembly every backend shares
"""

from avaf.extract.decode.backends import decode_video, decode_with_fallback, find_media, video_id
from avaf.extract.decode.sampling import DecodedVideo, DecodeError, MediaError
from avaf.extract.decode.worker import IsolatedDecoder, decode_isolated

__all__ = [
    "DecodeError",
    "DecodedVideo",
    "IsolatedDecoder",
    "MediaError",
    "decode_isolated",
    "decode_video",
    "decode_with_fallback",
    "find_media",
    "video_id",
]
