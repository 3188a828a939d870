"""`avaf-sweep`: the paper's experiment tables (3-5: ablations, φ, β; any grid over avaf-train's options) as
grids of ordinary `avaf-train` runs on Ray Tune, resumable, aggregated over seeds (docs/sweeps.md).

    avaf-sweep --feats feats.h5 --grid ablations --seeds 3 --out sweeps/table3

    grids   the built-in grids, grid files, and the plan: one trial per (grid point, seed), its run folder
    runner  the trials left on Ray Tune, each calling `avaf.train.loop.train` in its own worker
    report  table.md, results.json and the plots, rebuilt from the run folders
    config  the sweep's own flags;  cli  the command
"""
