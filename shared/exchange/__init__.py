"""Exchange with other AVQA codebases: export a store to their feature folders, import them back.

npy_folders   the per-file .npy folders of MUSIC-AVQA, PSTP-Net and AVAF-Net code (export_npy / import_npy)
layouts       the layouts TSPM, QA-TIGER, AV-Master and STG read, as data (the store's tspm set)
packs_export  export_pack: writes one of those layouts; stg: STG's HDF5 files; manifest: MANIFEST.json
cli           avaf-export, avaf-import

EXPORTERS is avaf-export's --format table: a format's name -> its exporter, called as
exporter(feats, out, ExportOptions) and returning a report whose lines() the command prints. A new folder
layout of the tspm set is one entry in layouts.LAYOUTS; another format is a module here and one entry below.
"""

from functools import partial

from avaf.shared.exchange.layouts import LAYOUTS
from avaf.shared.exchange.npy_folders import ExportOptions, ImportOptions, export_npy, import_npy
from avaf.shared.exchange.packs_export import export_pack

EXPORTERS = {"npy": export_npy} | {name: partial(export_pack, name) for name in LAYOUTS}

__all__ = ["EXPORTERS", "ExportOptions", "ImportOptions", "export_npy", "export_pack", "import_npy"]
