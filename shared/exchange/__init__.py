"""Exchange with other AVQA codebases: export a store to their feature folders, import them back.

npy_folders  the per-file .npy folders of the AVQA repositories (export_npy / import_npy);
cli          avaf-export, avaf-import

EXPORTERS is avaf-export's --format table: a format's name -> its exporter, called as
exporter(feats, out, ExportOptions) and returning a report whose lines() the command prints. A new format
(docs/reuse.md) is a module beside npy_folders and one entry here.
"""

from avaf.shared.exchange.npy_folders import ExportOptions, ImportOptions, export_npy, import_npy

EXPORTERS = {"npy": export_npy}

__all__ = ["EXPORTERS", "ExportOptions", "ImportOptions", "export_npy", "import_npy"]
