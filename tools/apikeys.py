"""Create, list and revoke DICOMweb API keys without redeploying.

Keys live as SHA-256 digests in the stack's Secrets Manager secret (output ``ApiKeysSecretArn``).
A new key is printed once; only its digest is stored. A revoked key stops working once the
authorizer caches expire (AuthorizerCacheTtl + KeyCacheTtl seconds at most).

Usage::

    python tools/apikeys.py --stack o3-dpacs create --label "viewer ward 3"
    python tools/apikeys.py --stack o3-dpacs list
    python tools/apikeys.py --secret-id arn:aws:secretsmanager:... revoke 1a2b3c4d
    python tools/apikeys.py --local list          # the stack started by `make serve`

AWS credentials and region come from the usual boto3 sources (AWS_PROFILE, AWS_REGION...).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:  # `python tools/apikeys.py` puts only tools/ on the path
    sys.path.insert(0, str(PROJECT_ROOT))

from shared import keys  # noqa: E402 - needs the project root on sys.path
from shared.adapters.key_store import FileKeyStore, SecretsManagerKeyStore  # noqa: E402
from shared.ports import KeyStore  # noqa: E402
from shared.wiring import API_KEYS_FILE, SECRETS_DIR  # noqa: E402

DEFAULT_STATE_FILE = PROJECT_ROOT / ".local-stack.json"
SECRET_OUTPUT = "ApiKeysSecretArn"  # noqa: S105 - an output name, not a password


class UsageError(Exception):
    """A problem with the arguments or the target stack, reported without a traceback."""


def _client(service: str, **kwargs: Any) -> Any:
    factory: Any = boto3.client  # the stubs want a literal service name
    return factory(service, **kwargs)


def secret_from_stack(stack_name: str, cloudformation: Any | None = None) -> str:
    """Return the ``ApiKeysSecretArn`` output of a deployed stack."""
    client = cloudformation or _client("cloudformation")
    stacks = client.describe_stacks(StackName=stack_name).get("Stacks", [])
    for output in stacks[0].get("Outputs", []) if stacks else []:
        if output.get("OutputKey") == SECRET_OUTPUT:
            return str(output["OutputValue"])
    raise UsageError(f"stack {stack_name} has no {SECRET_OUTPUT} output")


def _local_state(state_file: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{state_file} not found: is `make serve` running?") from None
    return state


def local_target(state_file: Path) -> tuple[Any, str]:
    """Return a Secrets Manager client for the local stack (moto storage) and its secret id."""
    state = _local_state(state_file)
    client = _client(
        "secretsmanager",
        endpoint_url=state["moto_endpoint"],
        region_name=state.get("region", "us-east-1"),
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
    )
    return client, str(state["secret_id"])


def _store(args: argparse.Namespace) -> KeyStore:
    if args.local:
        state = _local_state(args.state_file)
        if state.get("storage", "moto") == "local":
            return FileKeyStore(Path(state["data_dir"]) / SECRETS_DIR / API_KEYS_FILE)
        client, secret_id = local_target(args.state_file)
        return SecretsManagerKeyStore(client, secret_id)
    secret_id = args.secret_id or secret_from_stack(args.stack)
    return SecretsManagerKeyStore(_client("secretsmanager"), secret_id)


def create(
    store: KeyStore, label: str, scopes: tuple[str, ...] = keys.DEFAULT_SCOPES
) -> tuple[str, keys.KeyEntry]:
    """Generate a key, store its digest and return both."""
    key, entry = keys.generate(label, scopes)
    store.add(entry)
    return key, entry


def set_scopes(store: KeyStore, key_id: str, scopes: tuple[str, ...]) -> keys.KeyEntry | None:
    """Change a key's scopes (in effect within the authorizer's caches, no redeploy)."""
    checked = keys.checked_scopes(scopes)
    entries = store.load()
    found = None
    for position, entry in enumerate(entries):
        if entry.id == key_id:
            found = replace(entry, scopes=checked)
            entries[position] = found
    if found is not None:
        store.save(entries)
    return found


def format_entries(entries: list[keys.KeyEntry]) -> str:
    """Render key entries as a table: id, created, digest prefix, scopes, label."""
    lines = [f"{'ID':8}  {'CREATED':20}  {'SHA256':11}  {'SCOPES':17}  LABEL"]
    lines += [
        f"{e.id:8}  {e.created:20}  {e.sha256[:8]}...  {','.join(e.scopes):17}  {e.label}"
        for e in entries
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python tools/apikeys.py",
        description="Create, list and revoke DICOMweb API keys.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--stack", help="CloudFormation stack name (reads ApiKeysSecretArn)")
    target.add_argument("--secret-id", help="secret name or ARN")
    target.add_argument("--local", action="store_true", help="the local stack (make serve)")
    parser.add_argument(
        "--state-file",
        type=Path,
        default=DEFAULT_STATE_FILE,
        help="local stack state file (default: .local-stack.json)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create_cmd = commands.add_parser("create", help="create a key and print it once")
    create_cmd.add_argument("--label", default="", help="who or what uses the key")
    scope_help = (
        f"what the key may do, repeatable: {', '.join(keys.SCOPES)} "
        f"(default: {' and '.join(keys.DEFAULT_SCOPES)})"
    )
    create_cmd.add_argument("--scope", action="append", dest="scopes", help=scope_help)
    commands.add_parser("list", help="list active keys (never the keys themselves)")
    scopes_cmd = commands.add_parser("scopes", help="change what a key may do")
    scopes_cmd.add_argument("key_id")
    scopes_cmd.add_argument(
        "--scope", action="append", dest="scopes", required=True, help=scope_help
    )
    revoke_cmd = commands.add_parser("revoke", help="revoke a key by its id")
    revoke_cmd.add_argument("key_id")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        store = _store(args)
        if args.command == "create":
            key, entry = create(store, args.label, tuple(args.scopes or keys.DEFAULT_SCOPES))
            print(
                f"Created key {entry.id} ({entry.label or 'no label'}; "
                f"{', '.join(entry.scopes)}). Store it now:"
            )
            print(key)
        elif args.command == "list":
            print(format_entries(store.load()))
        elif args.command == "scopes":
            changed = set_scopes(store, args.key_id, tuple(args.scopes))
            if changed is None:
                print(f"No key with id {args.key_id}.", file=sys.stderr)
                return 1
            print(f"Key {changed.id} may now: {', '.join(changed.scopes)}.")
        elif store.revoke(args.key_id):
            print(f"Revoked key {args.key_id}.")
        else:
            print(f"No key with id {args.key_id}.", file=sys.stderr)
            return 1
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
