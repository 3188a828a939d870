"""Exchange with other AVQA codebases: export a store to their per-video .npy layouts, import them back.

npy_folders  export_npy / import_npy and the layouts;  cli  avaf-export, avaf-import
"""

from avaf.shared.exchange.npy_folders import export_npy, import_npy

__all__ = ["export_npy", "import_npy"]
