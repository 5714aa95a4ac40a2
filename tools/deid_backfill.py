"""Give DynamoDB index items stored before the read-deidentified view their de-identified
UIDs (``shared/adapters/dynamo_backfill.py``), so that such keys can find them.

Usage::

    dicomweb-deid-backfill --table <IndexTableName> --secret-id <anonymization secret>
    dicomweb-deid-backfill ... --all      # every item again (after a key rotation)

The embedded backend (SQLite) needs no tool: it backfills when it is opened with the key.
AWS credentials and region come from the usual boto3 sources (AWS_PROFILE, AWS_REGION...).
One Scan of the table (keys only) and one UpdateItem per item without the UID.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import boto3

from shared.adapters.dynamo_backfill import backfill
from shared.dicom.uid_map import UidMap


def main(argv: list[str] | None = None, clients: Any = boto3.client) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="dicomweb-deid-backfill", description=__doc__)
    parser.add_argument("--table", required=True, help="the index table (IndexTableName)")
    parser.add_argument("--secret-id", required=True, help="the anonymization key's secret")
    parser.add_argument("--all", action="store_true", help="rewrite every item's UID")
    args = parser.parse_args(argv)
    reply = clients("secretsmanager").get_secret_value(SecretId=args.secret_id)
    uid_map = UidMap(reply["SecretString"].encode("utf-8"))
    written = backfill(clients("dynamodb"), args.table, uid_map, everything=args.all)
    print(f"{written} items now carry their de-identified UID.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
