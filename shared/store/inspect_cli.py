"""`avaf-inspect FILE`: explain what a feature file holds (schema, config, counts, shapes, failures)."""

from __future__ import annotations

import json
import sys

import click

from avaf.shared.errors import StoreError
from avaf.shared.store.describe import describe_store, format_description


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("feats", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the same information as one JSON object.")
def main(feats: str, as_json: bool) -> None:
    """Show the schema version, extraction config, counts of videos and questions (per split and
    question type), dataset shapes and dtypes, failed videos with their errors, and whether random
    weights were used, for FEATS (a feats.h5 store or one of its shards)."""
    try:
        d = describe_store(feats)
    except StoreError as e:
        click.echo(f"avaf-inspect: {e}", err=True)
        sys.exit(2)
    click.echo(json.dumps(d, indent=2) if as_json else format_description(d))
