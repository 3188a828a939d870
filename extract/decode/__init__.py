"""Decoding (DESIGN.md §3 "Sampling", "Decoding"): a video file -> `DecodedVideo` (T frames, T seconds of audio).

backends   the table of decode backends, ``decode_video``, and which backends to try in what order
sampling   the 1 fps rule, nearest frames, CLIP's resize, audio assembly; DecodedVideo and the errors
probe      PyAV's look at a file (streams, timeline, declared duration) every backend starts with
pyav_backend, by_index (decord_backend, torchcodec_backend)   the backends; plan, gpu_frames   their helpers
worker     the same decode in a child process with a timeout, and the Ray decode task
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
