"""`avaf-inspect FILE`: explain what a feature file holds (schema, config, feature sets, counts, shapes,
failures)."""

from __future__ import annotations

import json

import click

from avaf.shared.cli import CONTEXT, Command, common_options
from avaf.shared.store.describe import describe_store, format_description


@click.command("avaf-inspect", cls=Command, context_settings=CONTEXT)
@common_options
@click.argument("feats", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the same information as one JSON object.")
@click.option(
    "--checksum",
    is_flag=True,
    help="Print one digest of the arrays (not of when or where they were made): equal digests, equal arrays.",
)
def main(feats: str, as_json: bool, checksum: bool) -> None:
    """Show the schema version, extraction config, feature sets (each array's role, shape, encoder and
    weights checksum), counts of videos and questions (per split and question type), dataset shapes and
    dtypes, failed videos with their errors, and whether random weights were used, for FEATS (a feats.h5
    store or one of its shards)."""
    if checksum:
        from avaf.shared.store.checksum import array_digest

        click.echo(f"sha256:{array_digest(feats)}  {feats}")
        return
    d = describe_store(feats)
    click.echo(json.dumps(d, indent=2) if as_json else format_description(d))
