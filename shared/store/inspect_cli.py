"""`avaf-inspect FILE`: explain what a feature file holds (schema, config, counts, shapes, failures)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import click

from avaf.shared.cli import CONTEXT, Command, common_options, config_options, from_flags, option
from avaf.shared.store.describe import describe_store, format_description


@dataclass(frozen=True)
class InspectConfig:
    json: bool = option(False, "Print the same information as one JSON object.")


@click.command("avaf-inspect", cls=Command, context_settings=CONTEXT)
@common_options
@click.argument("feats", type=click.Path(dir_okay=False))
@config_options(InspectConfig)
def main(feats: str, **flags) -> None:
    """Show the schema version, extraction config, counts of videos and questions (per split and
    question type), dataset shapes and dtypes, failed videos with their errors, and whether random
    weights were used, for FEATS (a feats.h5 store or one of its shards)."""
    d = describe_store(feats)
    as_json = from_flags(InspectConfig, flags).json
    click.echo(json.dumps(d, indent=2) if as_json else format_description(d))
