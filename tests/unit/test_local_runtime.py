"""The Lambda runtime on its own: handlers loaded from CodeUri into containers, run with a
Lambda context and the functions' environment, which is set only while one runs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from local.lambda_runtime import EnvironmentScope, LambdaRuntime, payload_size
from local.template import Function

APP = """
import os

CALLS = []

def handler(event, context):
    CALLS.append(event)
    if event.get("wait"):
        event["wait"].wait(5)
    return {
        "calls": len(CALLS),
        "variable": os.environ.get("LOCAL_RUNTIME_TEST"),
        "function": context.function_name,
        "remaining": context.get_remaining_time_in_millis(),
    }
"""


@pytest.fixture
def runtime(tmp_path: Path) -> LambdaRuntime:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "app.py").write_text(APP, encoding="utf-8")
    function = Function(
        logical_id="Fn",
        code_uri=tmp_path / "fn",
        handler="app.handler",
        runtime="python3.13",
        memory_size=128,
        timeout=3,
        environment={},
        routes=(),
    )
    return LambdaRuntime({"Fn": function}, {"LOCAL_RUNTIME_TEST": "set"})


def test_a_warm_container_is_reused_with_its_module_state(runtime: LambdaRuntime) -> None:
    first = runtime.invoke("Fn", {})
    second = runtime.invoke("Fn", {})
    assert (first["calls"], second["calls"]) == (1, 2)
    assert runtime.functions["Fn"].containers == 1
    assert first["function"] == "local-fn"
    assert 0 < first["remaining"] <= 3000


def test_concurrent_invocations_get_containers_of_their_own(runtime: LambdaRuntime) -> None:
    release = threading.Event()
    busy = threading.Thread(target=runtime.invoke, args=("Fn", {"wait": release}))
    busy.start()
    try:
        while runtime.functions["Fn"].containers < 1:
            threading.Event().wait(0.01)
        assert runtime.invoke("Fn", {})["calls"] == 1  # a second, fresh copy of app.py
    finally:
        release.set()
        busy.join()
    assert runtime.functions["Fn"].containers == 2


def test_the_environment_is_set_only_while_a_function_runs(runtime: LambdaRuntime) -> None:
    assert "LOCAL_RUNTIME_TEST" not in os.environ
    assert runtime.invoke("Fn", {})["variable"] == "set"
    assert "LOCAL_RUNTIME_TEST" not in os.environ


def test_a_module_that_cannot_load_raises(runtime: LambdaRuntime, tmp_path: Path) -> None:
    (tmp_path / "fn" / "app.py").write_text("raise RuntimeError('import time')", encoding="utf-8")
    with pytest.raises(RuntimeError, match="import time"):
        runtime.invoke("Fn", {})


def test_a_base64_body_counts_its_length_without_escaping() -> None:
    event = {"isBase64Encoded": True, "body": "QUJD" * 1000}
    assert payload_size(event) == len('{"isBase64Encoded":true,"body":""}') + 4000
    assert payload_size({"body": "\u00e9"}) == len('{"body":"\\u00e9"}')


def test_two_stacks_in_one_process_take_turns() -> None:
    """A background invocation of one stack (its change feed publisher) never runs while
    another stack's request runs: both set DICOMWEB_DATA_DIR, and a handler reads it."""
    first = EnvironmentScope({"O3_TURN_TEST": "first"}, lambda: None)
    second = EnvironmentScope({"O3_TURN_TEST": "second"}, lambda: None)
    seen: list[str] = []
    entered = threading.Event()

    def request_of_the_first() -> None:
        with first.active():
            entered.set()
            time.sleep(0.2)
            seen.append(os.environ["O3_TURN_TEST"])  # still its own

    def background_of_the_second() -> None:
        entered.wait()
        with second.active():
            seen.append(os.environ["O3_TURN_TEST"])

    threads = [threading.Thread(target=f) for f in (request_of_the_first, background_of_the_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert seen == ["first", "second"]
    assert "O3_TURN_TEST" not in os.environ
    with first.active(), first.active():  # one stack's invocations nest and overlap
        assert os.environ["O3_TURN_TEST"] == "first"
