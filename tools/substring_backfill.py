"""File DynamoDB studies stored before the substring index under their trigrams
(``shared/adapters/dynamo_backfill.py``), so that ``*abc*`` searches find them.

Usage::

    dicomweb-substring-backfill --table <IndexTableName>

The embedded backend (SQLite) needs no tool: it backfills when it is opened. AWS
credentials and region come from the usual boto3 sources (AWS_PROFILE, AWS_REGION...).
One Scan of the table (study items without the index, keys only); per study one GetItem,
its postings (BatchWriteItem), one UpdateItem and one UpdateItem per trigram count. It is
idempotent: run it again after a failure.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import boto3

from shared.adapters.dynamo_backfill import backfill_substring_index
from shared.adapters.dynamo_index import DynamoInstanceIndex


def main(argv: list[str] | None = None, clients: Any = boto3.client) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="dicomweb-substring-backfill", description=__doc__)
    parser.add_argument("--table", required=True, help="the index table (IndexTableName)")
    args = parser.parse_args(argv)
    client = clients("dynamodb")
    filed = backfill_substring_index(DynamoInstanceIndex(client, args.table), client, args.table)
    print(f"{filed} studies filed under their trigrams.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
