"""dicomweb-import against a fake archive on a real socket (tests/fakes/upload_archive.py):
batching under the payload limit, the upload path (single PUT and multipart), retries,
resuming, and a walker that never crashes on what it finds."""

from __future__ import annotations

import io
import json
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.dicomweb.multipart import parse_related
from tests.fakes.upload_archive import LIMIT, fake_archive
from tests.support import dicom_files
from tools.importer import batching, cli
from tools.importer.journal import Journal
from tools.importer.run import import_paths
from tools.importer.scan import Entry, scan
from tools.importer.sender import DUPLICATE, FAILED, SKIPPED, STORED, Retry, Sender
from tools.importer.walk import Item, Note, walk

NO_WAIT = Retry(attempts=4, base=0.0, cap=0.0)


def _sender(base: str, **kwargs: object) -> Sender:
    return Sender(base, "key", "TEST", retry=NO_WAIT, sleep=lambda _s: None, **kwargs)  # type: ignore[arg-type]


def _files(folder: Path, count: int, source: str = "CT_small.dcm") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        path = folder / f"{number:03d}.dcm"
        path.write_bytes(dicom_files.with_new_uids(source))
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- batching


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=5_000_000), max_size=60),
    limit=st.integers(min_value=200, max_value=LIMIT),
    max_parts=st.integers(min_value=1, max_value=20),
)
def test_batches_stay_under_the_limit_and_keep_every_file_once(
    sizes: list[int], limit: int, max_parts: int
) -> None:
    items = list(range(len(sizes)))
    batches, large = batching.plan(items, sizes, limit, max_parts)
    boundary = batching.new_boundary()
    for batch in batches:
        assert batch
        assert len(batch) <= max_parts
        assert batching.body_size([sizes[i] for i in batch], boundary) <= limit
    assert sorted([i for batch in batches for i in batch] + large) == items
    assert [i for batch in batches for i in batch] == [i for i in items if i not in large]
    assert all(not batching.fits_alone(sizes[i], limit) for i in large)


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.binary(max_size=300), max_size=8))
def test_body_size_is_the_encoded_length_and_the_archive_reads_it_back(
    payloads: list[bytes],
) -> None:
    boundary = batching.new_boundary()
    body = batching.encode(payloads, boundary)
    assert len(body) == batching.body_size([len(p) for p in payloads], boundary)
    if payloads:  # the STOW parser refuses a body without parts
        parts = parse_related(body, boundary)
        assert [bytes(p.content) for p in parts] == payloads
        assert {p.content_type for p in parts} == {"application/dicom"}


# ----------------------------------------------------------------------------- walking


def test_walker_finds_files_in_folders_zips_tars_and_notes_the_rest(tmp_path: Path) -> None:
    good = dicom_files.data("CT_small.dcm")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.dcm").write_bytes(good)
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    with zipfile.ZipFile(tmp_path / "in" / "z.zip", "w") as archive:
        archive.writestr("sub/b.dcm", dicom_files.data("MR_small.dcm"))
        archive.writestr("readme", b"hello")
    with tarfile.open(tmp_path / "in" / "t.tar.gz", "w:gz") as archive:
        info = tarfile.TarInfo("c.dcm")
        data = dicom_files.data("rtplan.dcm")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    (tmp_path / "in" / "broken.zip").write_bytes(b"PK\x03\x04" + b"\0" * 50)
    found = list(walk([tmp_path / "in", tmp_path / "missing"], tmp_path / "scratch"))
    items = {f.source.split("/in/")[-1]: f for f in found if isinstance(f, Item)}
    notes = {f.source.split("/")[-1]: f.note for f in found if isinstance(f, Note)}
    assert set(items) == {"a.dcm", "z.zip!sub/b.dcm", "t.tar.gz!c.dcm"}
    assert items["z.zip!sub/b.dcm"].read() == dicom_files.data("MR_small.dcm")
    assert items["t.tar.gz!c.dcm"].read() == dicom_files.data("rtplan.dcm")
    assert set(notes) == {"notes.txt", "z.zip!readme", "broken.zip", "missing"}


def test_walker_follows_a_dicomdir_and_notes_missing_files(tmp_path: Path) -> None:
    source = dicom_files.path("DICOMDIR").parent
    copy = tmp_path / "fileset"
    import shutil

    shutil.copytree(source, copy)
    referenced = [f for f in walk([copy / "DICOMDIR"], tmp_path / "s") if isinstance(f, Item)]
    assert len(referenced) > 10
    victim = Path(referenced[0].source)
    victim.unlink()
    found = list(walk([copy / "DICOMDIR"], tmp_path / "s"))
    assert [f for f in found if isinstance(f, Note) and "missing" in f.note] == [
        Note(str(victim), "referenced by DICOMDIR but missing")
    ]
    assert not any(f.source.endswith("DICOMDIR") for f in found if isinstance(f, Item))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    blobs=st.lists(st.binary(max_size=600), max_size=4),
    cut=st.integers(min_value=0, max_value=2000),
)
def test_walker_never_crashes_on_arbitrary_files_zips_and_tars(
    tmp_path: Path, blobs: list[bytes], cut: int
) -> None:
    folder = tmp_path / "fuzz"
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir()
    zipped, tarred = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        for number, blob in enumerate(blobs):
            archive.writestr(f"m{number}", b"\0" * 128 + b"DICM" + blob)
    with tarfile.open(fileobj=tarred, mode="w:gz") as archive:
        for number, blob in enumerate(blobs):
            info = tarfile.TarInfo(f"m{number}")
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    for number, blob in enumerate(blobs):
        (folder / f"raw{number}").write_bytes(blob)
        (folder / f"dicm{number}").write_bytes(b"\0" * 128 + b"DICM" + blob)
    (folder / "cut.zip").write_bytes(zipped.getvalue()[:cut])
    (folder / "cut.tgz").write_bytes(tarred.getvalue()[:cut])
    (folder / "whole.zip").write_bytes(zipped.getvalue())
    for found in walk([folder], tmp_path / "scratch"):
        if isinstance(found, Item):
            scan(found)  # reading the header never raises either


# ----------------------------------------------------------------------------- sending


def test_small_files_go_in_batches_and_throttling_is_retried(tmp_path: Path) -> None:
    paths = _files(tmp_path / "in", 12)
    with fake_archive() as archive:
        archive.throttle = [429, 503]
        sender = _sender(archive.base, limit=200_000)
        report = import_paths([tmp_path / "in"], sender, Journal(None), workers=3)
    assert len(report.of(STORED)) == 12, report.summary()
    assert len(archive.stored) == 12
    assert max(archive.stow_requests) <= 200_000
    assert len(archive.stow_requests) - 2 < 12  # several files per request
    assert {Path(o.source) for o in report.outcomes} == set(paths)


def test_throttling_that_never_ends_is_a_transient_failure(tmp_path: Path) -> None:
    _files(tmp_path / "in", 1)
    with fake_archive() as archive:
        archive.throttle = [503] * 10
        report = import_paths([tmp_path / "in"], _sender(archive.base), Journal(None))
    [failed] = report.of(FAILED)
    assert failed.transient
    assert "HTTP 503" in failed.reason


@pytest.mark.parametrize("single_put_limit", [10_000_000, 100_000], ids=["single", "multipart"])
def test_large_files_take_the_upload_path(tmp_path: Path, single_put_limit: int) -> None:
    big = _files(tmp_path / "in", 2, "693_UNCI.dcm")
    with fake_archive() as archive:
        archive.single_put_limit = single_put_limit
        archive.part_size = 200_000
        archive.put_failures = 2  # a retried PUT sends the whole file again
        sender = _sender(archive.base, limit=300_000)
        report = import_paths([tmp_path / "in"], sender, Journal(None), workers=2)
        again = [sender.upload(scan(Item(str(big[0]), big[0].stat().st_size, big[0])))]
    assert len(report.of(STORED)) == 2, report.summary()
    assert archive.stow_requests == []
    assert sorted(archive.stored.values()) == sorted(p.read_bytes() for p in big)
    assert [o.status for o in again] == [DUPLICATE]


def test_without_an_upload_path_large_files_fail_with_a_reason(tmp_path: Path) -> None:
    _files(tmp_path / "in", 1, "693_UNCI.dcm")
    _files(tmp_path / "small", 1)
    with fake_archive() as archive:
        archive.uploads_enabled = False
        report = import_paths(
            [tmp_path / "in", tmp_path / "small"],
            _sender(archive.base, limit=300_000),
            Journal(None),
        )
    [failed] = report.of(FAILED)
    assert "no upload path" in failed.reason
    assert len(report.of(STORED)) == 1


def test_repeats_are_duplicates_and_a_second_run_skips_everything(tmp_path: Path) -> None:
    paths = _files(tmp_path / "in", 3)
    (tmp_path / "in" / "copy.dcm").write_bytes(paths[0].read_bytes())
    journal_path = tmp_path / "journal.jsonl"
    with fake_archive() as archive:
        first = import_paths([tmp_path / "in"], _sender(archive.base), Journal(journal_path))
        second = import_paths([tmp_path / "in"], _sender(archive.base), Journal(journal_path))
    assert first.counts | {"notes": 0} == {
        STORED: 3,
        DUPLICATE: 1,
        SKIPPED: 0,
        FAILED: 0,
        "notes": 0,
    }
    assert second.counts[SKIPPED] == 4
    assert second.counts[STORED] == second.counts[DUPLICATE] == 0


def test_a_torn_journal_line_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"sopInstanceUID": "1.2.3", "status": "stored"}\n{"sopInstanceUID": "1.2')
    journal = Journal(path)
    assert "1.2.3" in journal
    assert "1.2" not in journal


def test_the_cli_writes_a_json_report_and_exits_1_on_failures(tmp_path: Path) -> None:
    _files(tmp_path / "in", 2)
    (tmp_path / "in" / "truncated.dcm").write_bytes(dicom_files.data("CT_small.dcm")[:200])
    with fake_archive() as archive:
        status = cli.main(
            [
                str(tmp_path / "in"),
                "--url",
                archive.base,
                "--key",
                "k",
                "--report",
                str(tmp_path / "r.json"),
                "--no-journal",
            ]
        )
    report = json.loads((tmp_path / "r.json").read_text())
    assert status == 1
    assert report["counts"]["stored"] == 2
    assert [f["source"].rsplit("/", 1)[1] for f in report["failed"]] == ["truncated.dcm"]
    assert report["failed"][0]["failureReason"] == 0xC000


def test_scan_reads_uids_without_patient_data() -> None:
    entry = scan(Item("x", 1, dicom_files.path("CT_small.dcm")))
    assert entry == Entry(
        entry.item,
        "1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322",
        "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322",
    )


@pytest.fixture(scope="module")
def fifteen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fifteen")
    for number in range(15):
        source = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")[number % 3]
        (folder / f"{number:02d}.dcm").write_bytes(dicom_files.with_new_uids(source))
    (folder / "copy.dcm").write_bytes((folder / "00.dcm").read_bytes())
    return folder


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    count=st.integers(min_value=1, max_value=16),
    limit=st.integers(min_value=20_000, max_value=400_000),
    throttle=st.lists(st.sampled_from([429, 503]), max_size=3),
    workers=st.integers(min_value=1, max_value=4),
)
def test_every_file_gets_exactly_one_outcome_and_is_stored_once(
    fifteen: Path, count: int, limit: int, throttle: list[int], workers: int
) -> None:
    paths = sorted(fifteen.iterdir())[:count]
    with fake_archive() as archive:
        archive.throttle = list(throttle)
        archive.single_put_limit, archive.part_size = 30_000, 16_000
        report = import_paths(
            paths, _sender(archive.base, limit=limit), Journal(None), workers=workers
        )
        stored = dict(archive.stored)
    assert sorted(o.source for o in report.outcomes) == sorted(str(p) for p in paths)
    assert {o.status for o in report.outcomes} <= {STORED, DUPLICATE}, report.summary()
    assert sorted(stored.values()) == sorted({p.read_bytes() for p in paths})
    assert max([0, *archive.stow_requests]) <= limit


def test_no_patient_data_in_the_output_or_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    secret = {"PatientName": "Zyxwvut^Qponmlk", "PatientID": "PID-98765-SECRET"}
    whole = dicom_files.with_new_uids(
        patient_id=secret["PatientID"], PatientName=secret["PatientName"]
    )
    (folder / "ok.dcm").write_bytes(whole)
    (folder / "cut.dcm").write_bytes(whole[: len(whole) // 2])
    with fake_archive() as archive:
        arguments = [str(folder), "--url", archive.base, "--key", "k", "--no-journal"]
        cli.main([*arguments, "--report", str(tmp_path / "r.json")])
    seen = capsys.readouterr()
    text = seen.out + seen.err + (tmp_path / "r.json").read_text()
    assert "cut.dcm" in text
    assert not any(value in text for value in secret.values())


def test_a_zip_member_failing_its_crc_fails_alone(tmp_path: Path) -> None:
    members = [dicom_files.with_new_uids() for _ in range(3)]
    with zipfile.ZipFile(tmp_path / "set.zip", "w", zipfile.ZIP_STORED) as archive:
        for number, data in enumerate(members):
            archive.writestr(f"m{number}.dcm", data)
    raw = bytearray((tmp_path / "set.zip").read_bytes())
    at = raw.find(members[1]) + len(members[1]) - 10  # in the pixel data of the second
    raw[at] ^= 0xFF
    (tmp_path / "set.zip").write_bytes(bytes(raw))
    with fake_archive() as archive:
        report = import_paths([tmp_path / "set.zip"], _sender(archive.base), Journal(None))
    assert sorted(o.source.rsplit("!", 1)[1] for o in report.of(STORED)) == ["m0.dcm", "m2.dcm"]
    [failed] = report.of(FAILED)
    assert failed.source.endswith("!m1.dcm")
    assert failed.reason == "cannot read the file: BadZipFile"


def test_a_dicomdir_pointing_outside_its_folder_is_a_note(tmp_path: Path) -> None:
    import pydicom

    (tmp_path / "set").mkdir()
    (tmp_path / "secret.dcm").write_bytes(dicom_files.data("CT_small.dcm"))
    fileset = pydicom.dcmread(dicom_files.path("DICOMDIR"))
    records = [r for r in fileset.DirectoryRecordSequence if "ReferencedFileID" in r]
    with warnings.catch_warnings():  # not a valid CS value: that is the point
        warnings.simplefilter("ignore")
        records[0].ReferencedFileID = ["..", "SECRET.DCM"]
    for record in records[1:]:
        record.ReferencedFileID = ["MISSING"]
    fileset.save_as(tmp_path / "set" / "DICOMDIR")
    found = list(walk([tmp_path / "set"], tmp_path / "scratch"))
    assert not [f for f in found if isinstance(f, Item)]
    notes = [f.note for f in found if isinstance(f, Note)]
    assert sum("unsafe path" in n for n in notes) == 1
    assert sum("missing" in n for n in notes) == len(records) - 1


def test_an_upload_refused_as_a_duplicate_is_a_duplicate(tmp_path: Path) -> None:
    import pydicom

    folder = tmp_path / "in"
    [first] = _files(folder, 1, "693_UNCI.dcm")
    other = pydicom.dcmread(first)
    other.InstanceNumber = 99  # same SOP Instance UID, other content
    other.save_as(folder / "other.dcm", enforce_file_format=True)
    with fake_archive() as archive:
        report = import_paths([folder], _sender(archive.base, limit=300_000), Journal(None))
    assert sorted(o.status for o in report.outcomes) == [DUPLICATE, STORED]
    [duplicate] = report.of(DUPLICATE)
    assert duplicate.failure_reason == 0x0111


@pytest.mark.parametrize("qido_status", [200, 403])
def test_the_archive_says_what_it_holds_or_the_run_goes_on_without_asking(
    tmp_path: Path, qido_status: int
) -> None:
    _files(tmp_path / "in", 4)
    with fake_archive() as archive:
        archive.qido_status = qido_status
        first = import_paths([tmp_path / "in"], _sender(archive.base), Journal(None))
        again = import_paths([tmp_path / "in"], _sender(archive.base), Journal(None))
    assert first.counts[STORED] == 4
    if qido_status == 200:
        assert again.counts[SKIPPED] == 4
        assert not again.notes
    else:  # a store-only key: every file is sent again, and STOW takes it as stored
        assert again.counts[STORED] == 4
        assert [n.note for n in again.notes] == [
            "not checked which instances are stored: the API key may not search (HTTP 403)"
        ]


@pytest.mark.parametrize("aet", ["..", ".", "A/B", "a" * 17, "A\\B", "   "])
def test_an_ae_title_the_archive_url_cannot_carry_is_refused_before_sending(
    tmp_path: Path, aet: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main([str(tmp_path), "--key", "k" * 20, "--aet", aet, "--no-journal"])
    assert status == 2
    assert "--aet is not a usable AE title" in capsys.readouterr().err
