"""avaf.shared: what both stages agree on.

store/     the feature store: schema, HDF5 helpers, reader, shard writer, merge, describe (avaf-inspect)
avqa/      MUSIC-AVQA knowledge: annotations, the 42 answers, the 9 question types
exchange/  export to and import from the per-video .npy layouts of other AVQA codebases
dataset    a PyTorch dataset over a store;  ray_session  the one ray.init of extraction and sweeps
config, errors, files, version, cli  one helper for each job
"""
