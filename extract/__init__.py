"""avaf.extract: videos -> features, the offline stage (DESIGN.md §3).

    decode/    one frame and one second of 16 kHz mono audio per second (PyAV, decord), isolated in a child
    encoders/  the frozen encoders: CLIP ViT tokens and text, VGGish; weight loading and checksums
    synth/     generated videos and questions whose answers are known (demos and tests)
    questions  annotation files -> CLIP text features;  pipeline  plan -> engine -> shards -> merge
    engine, ray_engine  where the work runs: this process, or Ray;  cli  avaf-extract, avaf-demo

`extract` never imports `train`; both read and write through `avaf.shared`.
"""
