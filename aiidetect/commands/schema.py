"""`aiidetect schema [record|meta]`: the JSON Schema scripts validate records against (docs/schema.md)."""
from __future__ import annotations

import typer

from ..choices import choices
from .common import QuietOpt

# records.SCHEMA_KINDS (tests/api/test_cli_help.py keeps the two equal)
SchemaKind = choices("SchemaKind", "record", "meta")


def schema(kind: SchemaKind = typer.Argument(SchemaKind.record, help="record: a scan record (scan -f json|jsonl, "
                                                                     "results export); meta: a `meta` report."),
           quiet: bool = QuietOpt):  # accepted like everywhere else: the schema is on stdout, nothing else is printed
    """Print the JSON Schema (draft 2020-12) of a scan record or of a meta report.

    The schema of this version's records (docs/schema.md, "Validating records"), the file shipped in the package.

    Examples:
      aiidetect schema > record.schema.json
      aiidetect schema meta
    """
    from ..records import json_schema
    from ..report.safe import dumps

    typer.echo(dumps(json_schema(kind.value), indent=2))


def register(apps) -> None:
    apps["root"].command("schema")(schema)
