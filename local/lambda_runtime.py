"""The Lambda runtime, emulated: each function's handler loaded from its ``CodeUri`` and run
in-process, in containers, with a Lambda context and the functions' environment.

* :class:`FunctionContainers` keeps a function's execution environments: each a separately
  loaded copy of ``<CodeUri>/<module>.py``, serving one invocation at a time.
* :class:`EnvironmentScope` sets the functions' environment variables while an invocation
  runs (or once, for a process that serves nothing else).
* :class:`LambdaRuntime` holds every function of the template and is what the gateway and
  the local event source invoke.
* :func:`payload_size` and the invoke limits: what Lambda accepts and returns synchronously.

It knows nothing of HTTP or API Gateway. See docs/local-stack.md for what is not reproduced.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from local.template import ACCOUNT_ID, PROJECT_ROOT, REGION, Function

#: Lambda synchronous invoke: request payload (the event JSON) and response payload.
LAMBDA_REQUEST_LIMIT = 6_291_456
LAMBDA_RESPONSE_LIMIT = 6_291_556


def payload_size(document: Any) -> int:
    """Bytes of ``document`` as Lambda's JSON payload. A base64 body needs no escaping, so it
    counts as its length plus quotes, without serialising megabytes for a number."""
    if isinstance(document, dict) and document.get("isBase64Encoded"):
        body = document.get("body")
        if isinstance(body, str) and body.isascii():
            rest = {**document, "body": ""}
            return len(json.dumps(rest, separators=(",", ":")).encode("utf-8")) + len(body)
    return len(json.dumps(document, separators=(",", ":")).encode("utf-8"))


def oversize(document: Any, limit: int) -> int | None:
    """:func:`payload_size` of ``document`` when it is over ``limit``, else None.

    A text body is counted at its most (12 bytes a character: an escaped surrogate pair)
    first: a body that fits even so is not serialised to be measured.
    """
    body = document.get("body") if isinstance(document, dict) else None
    if (
        isinstance(body, str)
        and len(body) * 12 <= limit
        and payload_size({**document, "body": ""}) + len(body) * 12 <= limit
    ):
        return None
    size = payload_size(document)
    return size if size > limit else None


@dataclass
class LambdaContext:
    """The parts of the Lambda context object that handlers and Powertools read."""

    function_name: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    identity: object | None = None
    client_context: object | None = None
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        """The function's ARN, as Lambda would pass it."""
        return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        """The log group Lambda would write to."""
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        """A log stream name in Lambda's format."""
        return f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{self.aws_request_id.replace('-', '')}"

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's configured timeout (not enforced)."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


Handler = Callable[[dict[str, Any], LambdaContext], Any]


class FunctionContainers:
    """A function's execution environments ("containers"), as Lambda keeps them.

    Each container is a separately loaded copy of the handler module and runs one
    invocation at a time, so module-level state (the Powertools resolver's current event,
    caches) is never shared by concurrent requests. A request takes an idle container or
    loads a new one (a cold start); containers are kept warm for the stack's lifetime.
    """

    def __init__(self, function: Function, namespace: str) -> None:
        self.function = function
        self._module_prefix = f"_local_{namespace}_{function.logical_id}"
        self._idle: list[Handler] = []
        self._created = 0
        self._lock = threading.Lock()

    @property
    def containers(self) -> int:
        """How many containers were started (cold starts)."""
        return self._created

    def _acquire(self) -> Handler:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            self._created += 1
            module_name = f"{self._module_prefix}_{self._created}"
        return self._load(module_name)

    def _load(self, module_name: str) -> Handler:
        module_path, _, attribute = self.function.handler.rpartition(".")
        source = self.function.code_uri.joinpath(*module_path.split(".")).with_suffix(".py")
        spec = importlib.util.spec_from_file_location(module_name, source)
        if spec is None or spec.loader is None or not source.is_file():
            raise ImportError(f"cannot load {source}")
        module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        handler: Handler = getattr(module, attribute)
        return handler

    def warm(self) -> None:
        """Start one container ahead of the first request (Lambda's init phase)."""
        handler = self._acquire()
        with self._lock:
            self._idle.append(handler)

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler; exceptions propagate (the caller maps them as AWS would)."""
        handler = self._acquire()
        context = LambdaContext(
            function_name=self.function.name,
            memory_limit_in_mb=self.function.memory_size,
            timeout_seconds=self.function.timeout,
        )
        try:
            return handler(event, context)
        finally:
            with self._lock:
                self._idle.append(handler)


class EnvironmentScope:
    """Apply the functions' environment while at least one invocation runs.

    Outside invocations the process environment is left as it was, so tests sharing the
    process (pytest workers) do not see the local endpoints and resource names. A process
    that serves nothing but the stack (``dicomweb-serve``) pins them instead: set once,
    never swapped per request.

    Two stacks in one process (a test's own beside the session's) take turns: an invocation
    of one waits until no invocation of the other runs, since both set the same variables
    (``DICOMWEB_DATA_DIR``, endpoints) and a handler reads them while it runs. Invocations
    of one stack run concurrently, as before.
    """

    #: The scope whose invocations run now (None: no invocation runs), for every scope.
    _turn = threading.Condition()
    _owner: EnvironmentScope | None = None

    def __init__(self, variables: Mapping[str, str], on_change: Callable[[], None]) -> None:
        self._variables = dict(variables)
        self._on_change = on_change
        self._saved: dict[str, str | None] = {}
        self._depth = 0
        self._pinned = False

    def pin(self) -> None:
        """Set the variables for the rest of the process's life."""
        import os  # noqa: PLC0415 - only the local stack touches the process environment

        with self._turn:
            os.environ.update(self._variables)
            self._on_change()
            self._pinned = True

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Context manager: the variables are set inside."""
        import os  # noqa: PLC0415 - only the local stack touches the process environment

        if self._pinned:
            yield
            return
        with self._turn:
            while EnvironmentScope._owner not in (None, self):
                self._turn.wait()
            EnvironmentScope._owner = self
            if self._depth == 0:
                self._saved = {key: os.environ.get(key) for key in self._variables}
                os.environ.update(self._variables)
                self._on_change()
            self._depth += 1
        try:
            yield
        finally:
            with self._turn:
                self._depth -= 1
                if self._depth == 0:
                    for key, value in self._saved.items():
                        if value is None:
                            os.environ.pop(key, None)
                        else:
                            os.environ[key] = value
                    self._on_change()
                    EnvironmentScope._owner = None
                    self._turn.notify_all()


class LambdaRuntime:
    """Every function of the template, invoked by logical id in the functions' environment.

    The project root is put on ``sys.path``, so handlers ``import shared`` as they do from
    the AppLayer in AWS.

    Examples
    --------
    >>> runtime = LambdaRuntime(template.functions, {"STAGE": "dev"})
    >>> runtime.invoke("IngestFunction", {"detail-type": "Scheduled Event"})
    """

    def __init__(
        self,
        functions: Mapping[str, Function],
        environment: Mapping[str, str],
        *,
        on_environment_change: Callable[[], None] = lambda: None,
    ) -> None:
        namespace = uuid.uuid4().hex[:8]
        self.functions = {
            name: FunctionContainers(function, namespace) for name, function in functions.items()
        }
        self.environment = EnvironmentScope(environment, on_environment_change)
        if str(PROJECT_ROOT) not in sys.path:
            sys.path.insert(0, str(PROJECT_ROOT))

    def invoke(self, function: str, event: dict[str, Any]) -> Any:
        """Run a function for an event, with the functions' environment set; exceptions
        propagate (the handler's own, or an ImportError of its module)."""
        with self.environment.active():
            return self.functions[function].invoke(event)

    def warm(self) -> None:
        """One warm container per function, loaded with the functions' environment: a
        server that forks workers afterwards gives each of them loaded handlers."""
        with self.environment.active():
            for containers in self.functions.values():
                containers.warm()
