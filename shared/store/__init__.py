"""The feature store (DESIGN.md §2): one self-describing HDF5 file, read with h5py and numpy only.

schema  every HDF5 path, dtype and shape;  h5  open/validate, read and write columns
writer  immutable shards;  merge  shards -> feats.h5;  reader  FeatureStore;  describe  avaf-inspect
"""

from avaf.shared.errors import StoreError
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore, VideoBatch
from avaf.shared.store.writer import QuestionFeatures, ShardWriter, VideoFeatures

__all__ = [
    "FeatureStore",
    "QuestionFeatures",
    "ShardWriter",
    "StoreError",
    "VideoBatch",
    "VideoFeatures",
    "build_store",
]
