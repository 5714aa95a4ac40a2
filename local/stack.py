"""The local stack: moto server + resources from template.yaml + the API Gateway emulator.

``LocalStack`` runs everything in threads of the current process::

    with LocalStack(port=0, api_key=key) as stack:
        requests.get(stack.base_url + "/...", headers={"Authorization": stack.api_key})

One stack per process: handlers read their settings from the process environment, which the
stack sets (the union of every function's variables plus the moto endpoints) while an
invocation runs.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3

from local.emulator import EmulatorServer, Gateway
from local.template import DEFAULT_TEMPLATE, PROJECT_ROOT, REGION, StackTemplate, load
from shared import keys
from shared.adapters.key_store import SecretsManagerKeyStore

logger = logging.getLogger("local.stack")

DEFAULT_STATE_FILE = PROJECT_ROOT / ".local-stack.json"
DEV_KEY_LABEL = "local dev key"


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
    return _SerialMotoServer()


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
    from shared import config  # noqa: PLC0415 - keep the import local to the stack

    config.settings.cache_clear()


class LocalStack:
    """Moto server, resources and the API emulator, running in threads of this process."""

    def __init__(  # noqa: PLR0913 - keyword-only options
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        api_key: str | None = None,
        template_path: Path = DEFAULT_TEMPLATE,
        parameter_overrides: Mapping[str, str] | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.template: StackTemplate = load(template_path, parameter_overrides)
        self.host = host
        self.requested_port = port
        self.api_key = api_key or keys.generate(DEV_KEY_LABEL)[0]
        self.key_generated = api_key is None
        self.state_file = state_file
        self.moto_endpoint = ""
        self.environment: dict[str, str] = {}
        self._moto: Any = None
        self._server: EmulatorServer | None = None
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

    def client(self, service: str) -> Any:
        """Return a boto3 client for moto (explicit endpoint: needs no environment)."""
        factory: Any = boto3.client  # the stubs want a literal service name
        return factory(
            service,
            endpoint_url=self.moto_endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 - moto's dummy credentials
        )

    def start(self) -> LocalStack:
        """Start moto, create the resources, install the dev key and serve the API."""
        werkzeug_log = logging.getLogger("werkzeug")  # moto's per-request access log
        if werkzeug_log.level == logging.NOTSET:
            werkzeug_log.setLevel(logging.WARNING)
        self._moto = _moto_server()
        self._moto.start()
        moto_host, moto_port = self._moto.get_host_and_port()
        self.moto_endpoint = f"http://{moto_host}:{moto_port}"
        try:
            self._create_resources()
            self.environment = self._function_environment()
            gateway = Gateway(
                self.template,
                self.environment,
                on_environment_change=_clear_settings_cache,
            )
            self._server = EmulatorServer((self.host, self.requested_port), gateway)
        except BaseException:
            self._moto.stop()
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="api-emulator", daemon=True
        )
        self._thread.start()
        if self.state_file is not None:
            self._write_state(self.state_file)
        return self

    def stop(self) -> None:
        """Stop the emulator and moto; remove the state file."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)

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
                "AWS_ENDPOINT_URL_S3": self.moto_endpoint,
                "AWS_ENDPOINT_URL_DYNAMODB": self.moto_endpoint,
                # boto3 derives the name from the service id "Secrets Manager"; the
                # run-together spelling is set too for tools that use it.
                "AWS_ENDPOINT_URL_SECRETS_MANAGER": self.moto_endpoint,
                "AWS_ENDPOINT_URL_SECRETSMANAGER": self.moto_endpoint,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_SESSION_TOKEN": "testing",
                "POWERTOOLS_TRACE_DISABLED": "true",
            }
        )
        return environment

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
            store = SecretsManagerKeyStore(secretsmanager, self.secret_id)
            store.add(keys.entry_for(self.api_key, DEV_KEY_LABEL))

    def state(self) -> dict[str, Any]:
        """What tools/apikeys.py --local needs to reach this stack."""
        return {
            "pid": os.getpid(),
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
