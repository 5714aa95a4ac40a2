"""dicomweb-lifecycle (tools/lifecycle.py): sends the DELETE or restore until done, and says how it ended."""

from __future__ import annotations

import pytest

from tools import lifecycle

URL = "https://archive.example.org/o3-dpacs-wado"


def _scripted(*answers: lifecycle.Answer):
    sent: list[tuple[str, str]] = []
    queue = list(answers)

    def send(method: str, url: str, key: str) -> lifecycle.Answer:
        assert key == "o3k_admin"
        sent.append((method, url))
        return queue.pop(0)

    return send, sent


def test_a_pending_delete_is_sent_again_until_done() -> None:
    send, sent = _scripted((202, {"status": "pending"}, 0.0), (503, {}, 2.0), (204, {}, 0.0))
    slept: list[float] = []
    target = lifecycle.Target("1.2.3", "1.2.3.4")
    code, line = lifecycle.run(
        "delete", target, url=URL, key="o3k_admin", send=send, sleep=slept.append
    )
    assert (code, slept) == (0, [2.0])
    assert sent == [("DELETE", f"{URL}/rs/studies/1.2.3/series/1.2.3.4")] * 3
    assert "done" in line


def test_a_restore_posts_to_the_restore_resource_and_prints_its_counts() -> None:
    send, sent = _scripted((200, {"restored": 3}, 0.0))
    target = lifecycle.Target("1.2.3", "1.2.3.4", "1.2.3.4.5")
    code, line = lifecycle.run("restore", target, url=URL + "/", key="o3k_admin", send=send)
    assert code == 0 and '"restored": 3' in line
    assert sent == [("POST", f"{URL}/rs/restore/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5")]


@pytest.mark.parametrize(("status", "code"), [(404, 1), (403, 2), (400, 2)])
def test_refusals_end_with_their_own_exit_code(status: int, code: int) -> None:
    send, _ = _scripted((status, {"message": "no"}, 0.0))
    assert (
        lifecycle.run("delete", lifecycle.Target("1.2.3"), url=URL, key="o3k_admin", send=send)[0]
        == code
    )


def test_an_instance_needs_its_series() -> None:
    with pytest.raises(SystemExit):
        lifecycle.main(["--url", URL, "--key", "k", "delete", "1.2.3", "--instance", "1.2.3.4.5"])


def test_rejected_lists_every_page_of_a_study_one_json_line_each() -> None:
    record = {"sopInstanceUID": "1.2.3.4.5", "state": "applied"}
    send, sent = _scripted(
        (200, {"rejected": [record], "next": "1.2.3/1.2.3.4/1.2.3.4.5.json"}, 0.0),
        (200, {"rejected": [record], "next": None}, 0.0),
    )
    code, lines = lifecycle.rejected("1.2.3", url=URL, key="o3k_admin", send=send)
    assert code == 0 and len(lines) == 2 and '"state": "applied"' in lines[0]
    assert sent[0] == ("GET", f"{URL}/iocm/rejected?StudyInstanceUID=1.2.3")
    assert sent[1][1].endswith("after=1.2.3%2F1.2.3.4%2F1.2.3.4.5.json")


def test_rejected_refused_ends_with_2() -> None:
    send, _ = _scripted((403, {"message": "admin only"}, 0.0))
    code, lines = lifecycle.rejected(None, url=URL, key="o3k_admin", send=send)
    assert code == 2 and "admin only" in lines[-1]


def test_delete_needs_a_study() -> None:
    with pytest.raises(SystemExit):
        lifecycle.main(["--url", URL, "--key", "k", "delete"])
