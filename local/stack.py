"""The local stack: the API Gateway emulator over one of two storage backends.

* ``local`` (the default of ``make serve``): Part 10 files in ``data_dir/objects`` and the
  index in ``data_dir/index.sqlite3``, durable across restarts; keys and secrets in
  ``data_dir/secrets``, the dev API key among them (reused on every start unless one is
  given); presigned URLs served by the emulator itself.
* ``moto``: moto's S3, DynamoDB and Secrets Manager, created from template.yaml (cloud
  fidelity; in memory, gone when the stack stops).

``LocalStack`` runs everything in threads of the current process::

    with LocalStack(port=0, api_key=key, data_dir=tmp) as stack:
        requests.get(stack.base_url + "/...", headers={"Authorization": stack.api_key})

One stack per process: handlers read their settings from the process environment, which the
stack sets (the union of every function's variables plus the backend's) while an
invocation runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import boto3
from botocore.config import Config

from local import moto_fixes
from local.api_gateway import Gateway
from local.api_gateway.usage import Meter, UsagePlans
from local.events import EventSource
from local.lambda_runtime import LambdaRuntime
from local.objects import ObjectServer
from local.server import ApiServer
from local.settings import DEFAULT_DATA_DIR
from local.template import DEFAULT_TEMPLATE, REGION, StackTemplate, load
from shared import bootstrap, config, keys
from shared.bootstrap import SECRETS_DIR, URL_SIGNING_KEY_FILE

logger = logging.getLogger("local.stack")

DEV_KEY_LABEL = "local dev key"
#: The dev key of a data directory (under its secrets), when none is given.
DEV_KEY_FILE = "dev-api-key"
#: Usage plan counters (token buckets, daily quotas) in the data directory.
USAGE_FILE = "usage.sqlite3"
_PR_SET_PDEATHSIG = 1
STORAGES = ("local", "moto")


class _SerialMotoServer:
    """moto's server answering one request at a time.

    moto's backends are not thread-safe: concurrent DynamoDB transactions on one item can
    lose an update inside moto (seen with 20 concurrent STOWs). DynamoDB serialises
    conflicting writes itself, so serving moto's requests one by one is the faithful model.
    """

    def __init__(self) -> None:
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from moto.moto_server.werkzeug_app import (  # noqa: PLC0415 - heavy, only when started
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server  # noqa: PLC0415

        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            "127.0.0.1", 0, app, threaded=False, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        self._thread.start()

    def get_host_and_port(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _moto_server() -> Any:
    moto_fixes.install()
    return _SerialMotoServer()


def _become_worker(server: ApiServer, objects: ObjectServer | None) -> None:
    """The life of a forked worker: serve until told to stop, then leave at once."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if objects is not None:
        objects.server_close()  # the parent serves objects

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        os._exit(0)


def parse_overrides(text: str) -> dict[str, str]:
    """Parse ``Key=Value`` pairs separated by spaces or commas (sam's --parameter-overrides)."""
    overrides: dict[str, str] = {}
    for item in text.replace(",", " ").split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"parameter override {item!r} is not Key=Value")
        overrides[key.removeprefix("ParameterKey=")] = value
    return overrides


def _clear_settings_cache() -> None:
    """Forget settings cached by shared.config, so they are re-read from the environment."""
    config.settings.cache_clear()


class LocalStack:
    """Moto server, resources and the API emulator, running in threads of this process."""

    #: Moto stacks running in this process (they share moto's backends).
    _moto_stacks: ClassVar[int] = 0

    def __init__(  # noqa: PLR0913 - keyword-only options
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        template_path: Path = DEFAULT_TEMPLATE,
        parameter_overrides: Mapping[str, str] | None = None,
        state_file: Path | None = None,
        storage: str = "local",
        data_dir: Path | None = None,
        workers: int = 1,
        owns_process: bool = False,
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}")
        self.template: StackTemplate = load(template_path, parameter_overrides)
        self.storage = storage
        self.data_dir = (data_dir or DEFAULT_DATA_DIR).resolve()
        # moto answers one request at a time from this process: extra workers would only
        # queue behind it. The local backend shares files and SQLite between processes.
        self.workers = max(1, workers) if storage == "local" else 1
        # Serving is all this process does (dicomweb-serve): the functions' environment
        # is set once rather than swapped in and out around every request.
        self.owns_process = owns_process
        self._children: list[int] = []
        self.host = host
        self.requested_port = port
        # The dev key: the one given, else the data directory's (local backend) or a new one
        # (moto, whose key list lives as long as the stack); chosen at start.
        self.api_key = api_key or ""
        #: Where the dev key is kept when it is the data directory's.
        self.key_file: Path | None = None
        self.state_file = state_file
        self.moto_endpoint = ""
        self.environment: dict[str, str] = {}
        self._archive: bootstrap.Archive | None = None
        self._moto: Any = None
        self._objects: ObjectServer | None = None
        self._events: EventSource | None = None
        self._runtime: LambdaRuntime | None = None
        self._server: ApiServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        """The API emulator's port."""
        if self._server is None:
            raise RuntimeError("the local stack is not running")
        return self._server.port

    @property
    def api_root(self) -> str:
        """``http://host:port`` (no stage: paths are the template's, like sam local)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The DICOMweb base URL, e.g. ``http://127.0.0.1:3000/o3-dpacs-wado``."""
        base_path = self.environment.get("API_BASE_PATH", "")
        return self.api_root + base_path

    @property
    def secret_id(self) -> str:
        """The API keys secret (what ``ApiKeysSecretArn`` is in AWS)."""
        if "ApiKeysSecretArn" in self.template.outputs:
            return self.template.outputs["ApiKeysSecretArn"]
        return next((s.name for s in self.template.secrets.values()), "")

    # ------------------------------------------------------------ lifecycle

    def client(self, service: str, client_config: Config | None = None) -> Any:
        """Return a boto3 client for moto (explicit endpoint: needs no environment)."""
        factory: Any = boto3.client  # the stubs want a literal service name
        return factory(
            service,
            endpoint_url=self.moto_endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
            config=client_config,
        )

    @property
    def archive(self) -> bootstrap.Archive:
        """This stack's archive, as its functions see it (``shared.bootstrap``): the same
        settings, built in this process (for tests and tools)."""
        if not self.environment:
            raise RuntimeError("the local stack is not running")
        if self._archive is None:
            settings = config.Settings.from_mapping(self.environment)
            self._archive = bootstrap.build(settings, clients=self.client)
        return self._archive

    def start(self) -> LocalStack:
        """Start the backend, install the dev key and serve the API."""
        werkzeug_log = logging.getLogger("werkzeug")  # moto's per-request access log
        if werkzeug_log.level == logging.NOTSET:
            werkzeug_log.setLevel(logging.WARNING)
        self._server = ApiServer((self.host, self.requested_port), None)
        try:
            if self.storage == "moto":
                self.api_key = self.api_key or keys.generate(DEV_KEY_LABEL)[0]
                self._moto = _moto_server()
                self._moto.start()
                LocalStack._moto_stacks += 1
                moto_host, moto_port = self._moto.get_host_and_port()
                self.moto_endpoint = f"http://{moto_host}:{moto_port}"
                self._create_resources()
            else:
                self._prepare_data_dir()
                self._objects = self._object_server()
            self.environment = self._function_environment()
            runtime = LambdaRuntime(
                self.template.functions,
                self.environment,
                on_environment_change=_clear_settings_cache,
            )
            if self.owns_process:
                runtime.environment.pin()
            self._runtime = runtime
            self._server.gateway = Gateway(
                self.template,
                self._invoke_api,
                usage_plans=self._usage_plans(),
                on_request=self._api_used,
                on_answered=self._api_answered,
            )
            if self._objects is not None:
                # Handlers loaded once, before the fork: no worker pays a cold start.
                runtime.warm()
                self._fork_workers()  # before this process starts any thread
                self._objects.start()
            self._events = self._event_source(runtime)
            self._events.start()
        except BaseException:
            self._server.server_close()
            self._server = None
            if self._objects is not None:
                self._objects.stop()
                self._objects = None
            if self._moto is not None:
                self._moto.stop()
                self._moto = None
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="api-emulator", daemon=True
        )
        self._thread.start()
        if self.state_file is not None:
            self._write_state(self.state_file)
        return self

    def _usage_plans(self) -> UsagePlans:
        """Usage plans of the template and the key store's entries (their usage identifiers
        and own limits); counters in the data directory, shared by the workers (local
        backend), or in memory (moto: one process)."""
        meter = Meter(None) if self.storage == "moto" else Meter(self.data_dir / USAGE_FILE)
        return UsagePlans(
            plans=self.template.usage_plans,
            api_keys=self.template.api_keys,
            default_plan=self.template.outputs.get("DefaultUsagePlanId"),
            entries=self.archive.key_store.load,
            meter=meter,
        )

    def _fork_workers(self) -> None:
        """Pre-fork ``workers - 1`` processes accepting on the same listening socket.

        Each runs its own copy of the handlers (as Lambda runs containers), with its own
        authorizer cache; all share the data directory. They exit on SIGTERM or SIGINT, and
        when this process dies (Linux parent-death signal).
        """
        server = self._server
        if server is None:
            raise RuntimeError("the API server is not bound yet")
        if self.workers > 1:
            # Every process is woken for each connection and one wins it: the others must
            # not block in accept(), or they would never see a shutdown request.
            server.socket.setblocking(False)
        for _ in range(self.workers - 1):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                _become_worker(server, self._objects)
            self._children.append(pid)

    def _event_source(self, runtime: LambdaRuntime) -> EventSource:
        """S3 "Object Created" events and schedules of the template, raised locally."""
        bucket = next(iter(self.template.buckets.values()), None)
        return EventSource(
            template=self.template,
            store=self.archive.objects,
            invoke=runtime.invoke,
            bucket=bucket.name if bucket is not None else "",
            settle=self.storage == "local",
            background_streams=self.owns_process,
            watch=(
                (
                    self.data_dir / bootstrap.INDEX_FILE,
                    self.data_dir / f"{bootstrap.INDEX_FILE}-wal",
                )
                if self.storage == "local"
                else ()
            ),
        )

    def _api_used(self, function: str) -> None:
        if self._events is not None:
            self._events.wake()

    def _api_answered(self, function: str) -> None:
        if self._events is not None and self.owns_process:
            self._events.changed()  # it may have committed: the stream's readers run

    def _invoke_api(self, function: str, event: dict[str, Any]) -> Any:
        """An API request's invocation; where the stack shares the process's environment
        (tests), the stream's readers run after it within the same environment scope: no
        thread of this stack changes the environment between two requests."""
        runtime = self._runtime
        if runtime is None:
            raise RuntimeError("the stack is not started")
        if self.owns_process or self._events is None or not self._events.stream_readers:
            return runtime.invoke(function, event)
        with runtime.environment.active():
            output = runtime.invoke(function, event)
            self._events.run_streams_now()
            return output

    def _object_created(self, key: str) -> None:
        if self._events is not None:
            self._events.created(key)

    @property
    def events(self) -> EventSource | None:
        """The local event source (tests poll it to ingest at once)."""
        return self._events

    def stop(self) -> None:
        """Stop the workers, the emulator and the backend; remove the state file."""
        for pid in self._children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in self._children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self._children = []
        if self._events is not None:
            self._events.stop()
            self._events = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._moto is not None:
            LocalStack._moto_stacks -= 1
            if not LocalStack._moto_stacks:  # another may still use moto's backends
                self._reset_moto()
            self._moto.stop()
            self._moto = None
        if self._objects is not None:
            self._objects.stop()
            self._objects = None
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)

    def _reset_moto(self) -> None:
        """Forget what moto holds once the process's last moto stack stops: moto's backends
        live as long as the process, so a moto stack started after this one (a test
        module's own, then a session's) would otherwise find its table and bucket there
        already. Two moto stacks alive at once in one process still share (and collide on)
        their resource names."""
        url = f"{self.moto_endpoint}/moto-api/reset"  # moto's own endpoint, on loopback
        request = urllib.request.Request(url, method="POST")  # noqa: S310
        with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ internals

    def _function_environment(self) -> dict[str, str]:
        environment = self.template.environment()
        environment.update(
            {
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "POWERTOOLS_TRACE_DISABLED": "true",
                # No CloudWatch to turn EMF lines into metrics: they would only fill the
                # terminal (the audit trail is kept, in the data directory).
                "POWERTOOLS_METRICS_DISABLED": "true",
                "DICOMWEB_STORAGE": self.storage,
                # Both backends: the change feed's events go to events.jsonl in it.
                "DICOMWEB_DATA_DIR": str(self.data_dir),
            }
        )
        if self.storage == "moto":
            environment.update(
                {
                    "AWS_ENDPOINT_URL_S3": self.moto_endpoint,
                    "AWS_ENDPOINT_URL_DYNAMODB": self.moto_endpoint,
                    # boto3 derives the name from the service id "Secrets Manager"; the
                    # run-together spelling is set too for tools that use it.
                    "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.moto_endpoint,
                    "AWS_ENDPOINT_URL_SECRETSMANAGER": self.moto_endpoint,
                }
            )
        else:
            environment.update({"DICOMWEB_LOCAL_URL": self.objects_url})
        return environment

    def _prepare_data_dir(self) -> None:
        """Create or migrate the data directory; install the dev key if it is not there.

        Without a given key, the dev key is the one kept in ``secrets/dev-api-key`` (made on
        the first start), so starts do not pile up keys.
        """
        from shared.adapters.local_secrets import secret  # noqa: PLC0415
        from shared.adapters.sqlite_schema import open_database  # noqa: PLC0415

        self.data_dir.mkdir(parents=True, exist_ok=True)
        open_database(self.data_dir / bootstrap.INDEX_FILE).close()
        if not self.api_key:
            self.key_file = self.data_dir / SECRETS_DIR / DEV_KEY_FILE
            kept = secret(self.key_file, lambda: keys.generate()[0].encode("ascii"))
            self.api_key = kept.decode("ascii", "replace").strip()
        local = config.Settings(storage="local", data_dir=str(self.data_dir))
        store = bootstrap.build(local).key_store
        entry = keys.entry_for(self.api_key, DEV_KEY_LABEL)
        if not any(e.sha256 == entry.sha256 for e in store.load()):
            store.add(entry)

    def _signing_key(self) -> bytes:
        from shared.adapters.local_secrets import FileSecret  # noqa: PLC0415

        return FileSecret(self.data_dir / SECRETS_DIR / URL_SIGNING_KEY_FILE).value()

    def _object_server(self) -> ObjectServer:
        """What answers presigned object URLs for the local backend: a server of its own, on
        another port, so a redirect to it leaves the API's origin as one to S3 does."""
        from shared.adapters.local_urls import UrlSigner  # noqa: PLC0415

        signer = UrlSigner(self._signing_key(), "")
        bucket = next(iter(self.template.buckets.values()), None)
        expirations = bucket.expirations if bucket is not None else ()
        origins = bucket.cors_origins if bucket is not None else ()
        return ObjectServer(
            (self.host, 0),
            signer,
            self.data_dir / bootstrap.OBJECTS_DIR,
            expirations,
            origins,
            on_created=self._object_created,
        )

    @property
    def objects_url(self) -> str:
        """The root of presigned object URLs (local backend)."""
        return self._objects.base_url if self._objects is not None else ""

    def _create_resources(self) -> None:
        s3 = self.client("s3")
        for bucket in self.template.buckets.values():
            s3.create_bucket(Bucket=bucket.name)
            if bucket.versioning:
                s3.put_bucket_versioning(
                    Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
                )
        dynamodb = self.client("dynamodb")
        for table in self.template.tables.values():
            dynamodb.create_table(TableName=table.name, **table.create_args)
        secretsmanager = self.client("secretsmanager")
        for secret in self.template.secrets.values():
            secretsmanager.create_secret(
                Name=secret.name,
                Description=secret.description,
                SecretString=secret.secret_string or "{}",
            )
        if self.template.secrets:
            keys_secret = config.Settings(keys_secret_id=self.secret_id)
            store = bootstrap.build(keys_secret, clients=self.client).key_store
            store.add(keys.entry_for(self.api_key, DEV_KEY_LABEL))

    def state(self) -> dict[str, Any]:
        """What ``dicomweb-apikeys --local`` needs to reach this stack."""
        return {
            "pid": os.getpid(),
            "storage": self.storage,
            "data_dir": str(self.data_dir),
            "moto_endpoint": self.moto_endpoint,
            "region": REGION,
            "base_url": self.base_url,
            "secret_id": self.secret_id,
            "buckets": [b.name for b in self.template.buckets.values()],
            "tables": [t.name for t in self.template.tables.values()],
            "secrets": [s.name for s in self.template.secrets.values()],
        }

    def _write_state(self, path: Path) -> None:
        path.write_text(json.dumps(self.state(), indent=2) + "\n", encoding="utf-8")
