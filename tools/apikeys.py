"""Create, list, limit and revoke DICOMweb API keys without redeploying.

Keys live as SHA-256 digests in the stack's Secrets Manager secret (output ``ApiKeysSecretArn``).
A new key is printed once; only its digest is stored. It is printed a second after it is
stored: an authorizer that read the key list just before looks a key up again only a second
later, and API Gateway would keep a refusal for AuthorizerCacheTtl. A revoked key stops
working once the authorizer caches expire (AuthorizerCacheTtl + KeyCacheTtl seconds at most).

Per-key limits: each key gets an API Gateway API key (its value a random usage identifier,
never the key) on the stack's default usage plan (output ``DefaultUsagePlanId``: the
KeyRateLimit, KeyBurstLimit and KeyDailyQuota parameters) or, with ``--rate``, on a plan of
its own. Keys made before per-key limits share the legacy plan (no limits of their own)
until ``migrate`` puts each one on the default plan.

Usage::

    dicomweb-apikeys --stack o3-dpacs create --label "viewer ward 3"
    dicomweb-apikeys --stack o3-dpacs create --label script \\
        --rate 20 --burst 40 --quota 100000
    dicomweb-apikeys --stack o3-dpacs limits 1a2b3c4d --rate 5 --quota 10000
    dicomweb-apikeys --stack o3-dpacs limits 1a2b3c4d --default
    dicomweb-apikeys --stack o3-dpacs migrate   # keys from before per-key limits
    dicomweb-apikeys --stack o3-dpacs list
    dicomweb-apikeys --secret-id arn:aws:... --usage-plan-id abc123 revoke 1a2b3c4d
    dicomweb-apikeys --local list          # the running local stack (make serve)

AWS credentials and region come from the usual boto3 sources (AWS_PROFILE, AWS_REGION...).
``--local`` finds the running local stack by its state file, as ``dicomweb-serve`` names it
(``LOCAL_STACK_STATE``, else the checkout's ``.local-stack.json``; :mod:`local.settings`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3

from local import settings
from shared import bootstrap, config, keys
from shared.adapters.usage_plans import ApiGatewayUsagePlans, EntryLimits, UsagePlanAdmin
from shared.ports import KeyStore

SECRET_OUTPUT = "ApiKeysSecretArn"  # noqa: S105 - an output name, not a password
PLAN_OUTPUT = "DefaultUsagePlanId"


class UsageError(Exception):
    """A problem with the arguments or the target stack, reported without a traceback."""


def _client(service: str, **kwargs: Any) -> Any:
    factory: Any = boto3.client  # the stubs want a literal service name
    return factory(service, **kwargs)


def _stack_outputs(stack_name: str, cloudformation: Any | None = None) -> dict[str, str]:
    client = cloudformation or _client("cloudformation")
    stacks = client.describe_stacks(StackName=stack_name).get("Stacks", [])
    outputs = stacks[0].get("Outputs", []) if stacks else []
    return {str(o.get("OutputKey")): str(o.get("OutputValue")) for o in outputs}


def secret_from_stack(stack_name: str, cloudformation: Any | None = None) -> str:
    """Return the ``ApiKeysSecretArn`` output of a deployed stack."""
    outputs = _stack_outputs(stack_name, cloudformation)
    if SECRET_OUTPUT not in outputs:
        raise UsageError(f"stack {stack_name} has no {SECRET_OUTPUT} output")
    return outputs[SECRET_OUTPUT]


def _local_state(state_file: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{state_file} not found: is the local stack running?") from None
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
            local = config.Settings(storage="local", data_dir=str(state["data_dir"]))
            return bootstrap.build(local).key_store
        client, secret_id = local_target(args.state_file)
        moto = config.Settings(keys_secret_id=secret_id)
        return bootstrap.build(moto, clients=lambda service, _: client).key_store
    secret_id = args.secret_id or secret_from_stack(args.stack)
    return bootstrap.build(config.Settings(keys_secret_id=secret_id)).key_store


def _plans(args: argparse.Namespace) -> UsagePlanAdmin | None:
    """Where keys' limits are kept; None: a stack deployed before per-key limits."""
    if args.local:
        return EntryLimits()
    plan_id = args.usage_plan_id
    if not plan_id and args.stack:
        plan_id = _stack_outputs(args.stack).get(PLAN_OUTPUT, "")
    return ApiGatewayUsagePlans(_client("apigateway"), plan_id) if plan_id else None


def _needs(plans: UsagePlanAdmin | None) -> UsagePlanAdmin:
    if plans is None:
        raise UsageError(
            f"no usage plan known: deploy the current template (output {PLAN_OUTPUT}), "
            "and name it with --stack or --usage-plan-id"
        )
    return plans


def create(
    store: KeyStore,
    label: str,
    scopes: tuple[str, ...] = keys.DEFAULT_SCOPES,
    limits: keys.Limits | None = None,
    plans: UsagePlanAdmin | None = None,
) -> tuple[str, keys.KeyEntry]:
    """Generate a key, put it on its usage plan, store its digest and return both.

    Without ``plans`` (a stack from before per-key limits) the key is a legacy one.
    """
    key, entry = keys.generate(label, scopes)
    if plans is not None:
        entry = plans.attach(replace(entry, usage_key=keys.new_usage_key(), limits=limits))
    elif limits is not None:
        _needs(plans)
    store.add(entry)
    return key, entry


def _wait_until_usable() -> None:
    """Wait out the authorizers' refresh interval: a key shown after it is usable is never
    refused (a refusal API Gateway would keep for AuthorizerCacheTtl)."""
    time.sleep(keys.REFRESH_INTERVAL)


def _usable_note(plans: UsagePlanAdmin | None) -> str:
    """When the new key works, said after the wait."""
    if isinstance(plans, ApiGatewayUsagePlans):
        return (
            "Usable now; API Gateway may take a few seconds to put its API key on its usage "
            "plan (until then: 403, reason INVALID_API_KEY; retry)."
        )
    return "Usable now."


def _replace_entry(
    store: KeyStore, key_id: str, change: Callable[[keys.KeyEntry], keys.KeyEntry]
) -> keys.KeyEntry | None:
    """Apply ``change`` to the entry with this id and save; None when there is none."""
    entries = store.load()
    for position, entry in enumerate(entries):
        if entry.id == key_id:
            entries[position] = change(entry)
            store.save(entries)
            return entries[position]
    return None


def set_limits(
    store: KeyStore, plans: UsagePlanAdmin, key_id: str, limits: keys.Limits | None
) -> keys.KeyEntry | None:
    """Give a key its own limits, or (None) the default plan's; a legacy key is migrated."""

    def change(entry: keys.KeyEntry) -> keys.KeyEntry:
        if not entry.usage_key:
            return plans.attach(replace(entry, usage_key=keys.new_usage_key(), limits=limits))
        return plans.change(entry, limits)

    return _replace_entry(store, key_id, change)


def migrate(store: KeyStore, plans: UsagePlanAdmin) -> list[str]:
    """Put every key made before per-key limits on the default plan; return their ids.

    One key at a time, each saved at once: a run that stops half-way can be repeated.
    """
    moved = []
    for entry in store.load():
        if not entry.usage_key:
            _replace_entry(
                store, entry.id, lambda e: plans.attach(replace(e, usage_key=keys.new_usage_key()))
            )
            moved.append(entry.id)
    return moved


def revoke(store: KeyStore, key_id: str, plans: UsagePlanAdmin | None = None) -> bool:
    """Remove the key (it stops working), then its API key and own usage plan."""
    entry = next((e for e in store.load() if e.id == key_id), None)
    if entry is None or not store.revoke(key_id):
        return False
    if plans is not None and entry.usage_key:
        plans.detach(entry)
    return True


def _limits_option(args: argparse.Namespace, current: keys.Limits | None) -> keys.Limits | None:
    """Limits from --rate/--burst/--quota; what is not given is kept from ``current``."""
    given = (args.rate, args.burst, args.quota)
    if all(value is None for value in given):
        return None
    rate = args.rate if args.rate is not None else current.rate if current else None
    if rate is None:
        raise UsageError("--rate is needed to give a key limits of its own")
    burst = args.burst
    if burst is None and current is not None and args.rate is None:
        burst = current.burst
    quota = args.quota
    if quota is None and current is not None:
        quota = current.quota
    return keys.checked_limits(rate, burst, quota)


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


def _limits_text(entry: keys.KeyEntry) -> str:
    if not entry.usage_key:
        return "legacy (migrate)"
    return entry.limits.describe() if entry.limits else "default plan"


def format_entries(entries: list[keys.KeyEntry]) -> str:
    """Render key entries as a table: id, created, digest prefix, scopes, limits, label."""
    lines = [f"{'ID':8}  {'CREATED':20}  {'SHA256':11}  {'SCOPES':17}  {'LIMITS':32}  LABEL"]
    lines += [
        f"{e.id:8}  {e.created:20}  {e.sha256[:8]}...  {','.join(e.scopes):17}  "
        f"{_limits_text(e):32}  {e.label}"
        for e in entries
    ]
    return "\n".join(lines)


def _add_limit_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--rate", type=float, help="own limits: requests per second in steady state"
    )
    command.add_argument(
        "--burst", type=int, help="own limits: requests at once above the rate (default 2x rate)"
    )
    command.add_argument("--quota", type=int, help="own limits: requests per UTC day (0 = none)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomweb-apikeys",
        description="Create, list and revoke DICOMweb API keys.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--stack", help="CloudFormation stack name (reads ApiKeysSecretArn)")
    target.add_argument("--secret-id", help="secret name or ARN")
    target.add_argument("--local", action="store_true", help="the running local stack")
    parser.add_argument(
        "--usage-plan-id",
        help="the stack's DefaultUsagePlanId (with --secret-id; --stack reads it)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=settings.state_file(os.environ),
        help="the local stack's state file (default: LOCAL_STACK_STATE, else .local-stack.json)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create_cmd = commands.add_parser("create", help="create a key and print it once")
    create_cmd.add_argument("--label", default="", help="who or what uses the key")
    scope_help = (
        f"what the key may do, repeatable: {', '.join(keys.SCOPES)} "
        f"(default: {' and '.join(keys.DEFAULT_SCOPES)})"
    )
    create_cmd.add_argument("--scope", action="append", dest="scopes", help=scope_help)
    _add_limit_options(create_cmd)
    commands.add_parser("list", help="list active keys (never the keys themselves)")
    limits_cmd = commands.add_parser("limits", help="change a key's request rate and quota")
    limits_cmd.add_argument("key_id")
    _add_limit_options(limits_cmd)
    limits_cmd.add_argument(
        "--default", action="store_true", help="back to the stack's default usage plan"
    )
    commands.add_parser("migrate", help="give keys from before per-key limits their own API key")
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
            plans = _plans(args)
            key, entry = create(
                store,
                args.label,
                tuple(args.scopes or keys.DEFAULT_SCOPES),
                _limits_option(args, None),
                plans,
            )
            _wait_until_usable()
            print(
                f"Created key {entry.id} ({entry.label or 'no label'}; "
                f"{', '.join(entry.scopes)}; {_limits_text(entry)}). {_usable_note(plans)}"
            )
            print("Store it now:")
            print(key)
        elif args.command == "limits":
            return _limits_command(args, store)
        elif args.command == "migrate":
            moved = migrate(store, _needs(_plans(args)))
            print(f"Migrated {len(moved)} key(s) to the default usage plan: {' '.join(moved)}")
        elif args.command == "list":
            print(format_entries(store.load()))
        elif args.command == "scopes":
            changed = set_scopes(store, args.key_id, tuple(args.scopes))
            if changed is None:
                print(f"No key with id {args.key_id}.", file=sys.stderr)
                return 1
            print(f"Key {changed.id} may now: {', '.join(changed.scopes)}.")
        elif revoke(store, args.key_id, _plans(args)):
            print(f"Revoked key {args.key_id}.")
        else:
            print(f"No key with id {args.key_id}.", file=sys.stderr)
            return 1
    except (UsageError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _limits_command(args: argparse.Namespace, store: KeyStore) -> int:
    plans = _needs(_plans(args))
    current = next((e for e in store.load() if e.id == args.key_id), None)
    if current is None:
        print(f"No key with id {args.key_id}.", file=sys.stderr)
        return 1
    limits = None if args.default else _limits_option(args, current.limits)
    if limits is None and not args.default:
        raise UsageError("give --rate/--burst/--quota, or --default")
    changed = set_limits(store, plans, args.key_id, limits)
    if changed is None:
        print(f"No key with id {args.key_id}.", file=sys.stderr)
        return 1
    print(f"Key {changed.id}: {_limits_text(changed)}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
