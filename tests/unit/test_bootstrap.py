"""The composition root: an archive builds each part on first use, once; parts given to
``build`` are used as they are; handlers take theirs from a provider; secrets are read by
adapters, once; the anonymizer says what its refusals mean."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from shared import bootstrap, config
from shared.adapters.local_secrets import FileSecret
from shared.adapters.secrets_manager import SecretsManagerSecret
from shared.errors import Conflict, NotAcceptable, StorageUnavailable
from shared.services.anonymizer import Anonymizer
from tests.fakes import FakeCatalog, FakeIndex
from tests.support import dicom_files

AWS = config.Settings(
    bucket="b",
    table="t",
    keys_secret_id="keys",  # noqa: S106 - secrets' names
    anonymization_secret_id="anon",  # noqa: S106
)


class Clients:
    """A boto3 client factory that records which clients are made (and makes none)."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self, service: str, client_config: Config) -> Any:
        self.made.append(service)
        return object()


def test_building_an_archive_opens_nothing(tmp_path: Path) -> None:
    bootstrap.build(config.Settings(storage="local", data_dir=str(tmp_path / "data")))
    clients = Clients()
    bootstrap.build(AWS, clients=clients)
    assert not (tmp_path / "data").exists()
    assert clients.made == []


def test_the_authorizer_s_key_ring_builds_the_key_store_alone() -> None:
    clients = Clients()
    archive = bootstrap.build(AWS, clients=clients)
    assert archive.key_ring is archive.key_ring
    assert clients.made == ["secretsmanager"]


def test_aws_parts_share_one_dynamodb_client_and_the_anonymizer_reads_no_secret() -> None:
    clients = Clients()
    archive = bootstrap.build(dataclasses.replace(AWS, anonymization_secret_id=""), clients=clients)
    assert archive.catalog is archive.catalog
    assert archive.deidentified is archive.catalog
    archive.anonymizer  # noqa: B018 - built, its key not read
    assert clients.made == ["dynamodb"]


def test_each_part_is_built_once_and_given_parts_are_used_as_they_are(tmp_path: Path) -> None:
    settings = config.Settings(storage="local", data_dir=str(tmp_path))
    archive = bootstrap.build(settings)
    assert archive.index is archive.index
    assert archive.objects is archive.objects
    catalog, index = FakeCatalog(), FakeIndex()
    given = bootstrap.build(settings, catalog=catalog, index=index)
    assert given.catalog is catalog and given.deidentified is catalog
    assert given.index is index
    assert given.settings is settings


def test_an_archive_is_frozen(tmp_path: Path) -> None:
    archive = bootstrap.build(config.Settings(storage="local", data_dir=str(tmp_path)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        archive.settings = AWS


def test_current_is_one_archive_per_settings_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = config.Settings(storage="local", data_dir=str(tmp_path / "1"))
    second = config.Settings(storage="local", data_dir=str(tmp_path / "2"))
    monkeypatch.setattr(config, "settings", lambda: first)
    one = bootstrap.current()
    assert bootstrap.current() is one and one.settings == first
    monkeypatch.setattr(config, "settings", lambda: second)
    assert bootstrap.current() is not one
    monkeypatch.setattr(config, "settings", lambda: dataclasses.replace(first))
    assert bootstrap.current() is one


def test_a_provider_serves_what_it_was_given_then_the_current_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config.Settings(storage="local", data_dir=str(tmp_path))
    monkeypatch.setattr(config, "settings", lambda: settings)
    provider, other = bootstrap.Provider(), bootstrap.Provider()
    fakes = bootstrap.build(settings, index=FakeIndex())
    with provider.using(fakes):
        assert provider() is fakes
        assert other() is bootstrap.current()
    assert provider() is bootstrap.current()


# ------------------------------------------------------------------ secrets


def test_a_file_secret_is_made_once_and_read_once(tmp_path: Path) -> None:
    secret = FileSecret(tmp_path / "secrets" / "key")
    value = secret.value()
    (tmp_path / "secrets" / "key").write_bytes(b"changed")
    assert secret.value() == value
    assert FileSecret(tmp_path / "secrets" / "key").value() == b"changed"


def test_a_secrets_manager_secret_is_read_once_and_an_outage_is_503() -> None:
    calls: list[str] = []

    class Client:
        def get_secret_value(self, SecretId: str) -> dict[str, str]:
            calls.append(SecretId)
            return {"SecretString": "the key"}

    class Down:
        def get_secret_value(self, SecretId: str) -> dict[str, str]:
            raise ClientError({"Error": {"Code": "InternalServiceError"}}, "GetSecretValue")

    secret = SecretsManagerSecret(Client, "anon", "the anonymization key")
    assert secret.value() == secret.value() == b"the key"
    assert calls == ["anon"]
    with pytest.raises(StorageUnavailable, match="the anonymization key is unavailable"):
        SecretsManagerSecret(Down, "anon", "the anonymization key").value()


def test_the_archive_s_anonymizer_and_index_use_the_same_key(tmp_path: Path) -> None:
    archive = bootstrap.build(config.Settings(storage="local", data_dir=str(tmp_path)))
    key = (tmp_path / bootstrap.SECRETS_DIR / bootstrap.ANONYMIZATION_KEY_FILE).read_bytes
    assert archive.anonymizer.key() == key()
    given = bootstrap.build(archive.settings, anonymizer=Anonymizer(lambda: b"k"))
    assert given.anonymizer.uid("1.2.3") != archive.anonymizer.uid("1.2.3")


# ------------------------------------------------------------------ the anonymizer


def test_the_anonymizer_refuses_burned_in_annotation_409_and_what_is_not_part_10_406() -> None:
    anonymizer = Anonymizer(lambda: b"k")
    with pytest.raises(Conflict):
        anonymizer(dicom_files.with_new_uids(BurnedInAnnotation="YES"))
    with pytest.raises(NotAcceptable):
        anonymizer(b"not a DICOM file")
    assert anonymizer(dicom_files.with_new_uids())[128:132] == b"DICM"
