"""The frozen encoders (DESIGN.md §3 "Encoders"): CLIP ViT tokens and text, VGGish, and their weights.

clip_encoder    open_clip image tokens [T, 50, D] (ln_post and proj on every token) and text features
vggish_encoder  torchvggish's VGG with its log-mel front end reproduced; raw embeddings [T, 128]
weights         default / local-file / random weights, checksums, the offline fetch
stage           both encoders together over decoded videos -> `VideoFeatures`
batching        passes of one fixed shape, so a video's features never depend on its batch-mates
"""

from avaf.extract.encoders.stage import Encoders, encode_videos, load_encoders
from avaf.extract.encoders.weights import WeightsUnavailable

__all__ = ["Encoders", "WeightsUnavailable", "encode_videos", "load_encoders"]
