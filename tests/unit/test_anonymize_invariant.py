"""The anonymizer leaves no identity anywhere: an invariant over objects, not a list of tags.

For every corpus file, and for SR, KO, PR, RT, SEG and encapsulated-PDF objects carrying
generated identities (names in several scripts, IDs, birth dates, accession numbers,
institutions, physicians, UIDs) in names, IDs, dates, free text, sequences at any depth and
private tags, no original identifying value appears anywhere in the anonymized bytes: a byte
search in UTF-8 and UTF-16 (both byte orders), as written, upper and lower case. Pixel data,
which the profile passes through untouched, is cut out of the searched bytes first. dciodvfy
(dicom3tools) reports no error the original did not have.

Short identifying values (2 to 5 characters: a name 'Li^Bo', an ID 'AB12', an institution
'UCH', also as AE titles in the File Meta) are hunted as whole words in every value of the
output and of the DICOM JSON ``anonymize_json`` returns, since a byte search would find
them by chance; so are the words of every corpus file's identifying values.
"""

from __future__ import annotations

import io
import re
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from shared.dicom import anonymize as anon
from tests.support import dicom_files
from tests.support.debian_tools import dciodvfy_errors, require_debian_tool

KEY = b"invariant test key"

# ----------------------------------------------------------------------------- identities

_LATIN = "bcdfghjklmnpqrstvwxz"
_VOWELS = "aeiouy"
_SCRIPTS = (
    "αβγδεζηθικλμνξοπρστυφχψω",  # Greek
    "абвгдежзиклмнопрстуфхцчшщ",  # Cyrillic
    "山田太郎花子鈴木佐藤高橋渡辺伊藤中村小林",  # CJK ideographs (Japanese names)
    "김이박최정강조윤장임한오서신권황안송",  # Hangul
)


@st.composite
def _word(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 3)) == 0:
        alphabet = draw(st.sampled_from(_SCRIPTS))
        return draw(st.text(alphabet=alphabet, min_size=3, max_size=6))
    syllables = draw(st.integers(3, 5))
    letters = [
        draw(st.sampled_from(_LATIN)) + draw(st.sampled_from(_VOWELS)) for _ in range(syllables)
    ]
    return "".join(letters).capitalize()


@dataclass(frozen=True)
class Identity:
    family: str
    given: str
    patient_id: str
    other_id: str
    birth_date: str
    accession: str
    institution: str
    physician: str
    operator: str
    uids: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.family}^{self.given}"

    def free_text(self) -> str:
        return (
            f"Patient {self.given} {self.family}, MRN {self.patient_id}, born {self.birth_date},"
            f" seen at {self.institution} by Dr {self.physician}"
        )

    def needles(self) -> set[str]:
        """Every form in which the identity must not reappear."""
        found = {
            self.family,
            self.given,
            self.name,
            f"{self.given} {self.family}",
            self.patient_id,
            self.other_id,
            self.birth_date,
            self.accession,
            self.institution,
            self.physician,
            self.operator,
            *self.uids,
        }
        return {n for n in found if len(n) >= 3}


@st.composite
def identities(draw: st.DrawFn) -> Identity:
    return Identity(
        family=draw(_word()),
        given=draw(_word()),
        patient_id=draw(st.from_regex(r"[A-Z]{2}[0-9]{6,9}", fullmatch=True)),
        other_id=draw(st.from_regex(r"[0-9]{3}-[0-9]{2}-[0-9]{4}", fullmatch=True)),
        birth_date=draw(st.dates().map(lambda d: d.strftime("%Y%m%d"))),
        accession=draw(st.from_regex(r"A[0-9]{7,11}", fullmatch=True)),
        institution=f"{draw(_word())} {draw(_word())} Clinic",
        physician=draw(_word()),
        operator=draw(_word()),
        uids=tuple(
            generate_uid(entropy_srcs=[str(n)])
            for n in draw(st.lists(st.integers(), min_size=5, max_size=5, unique=True))
        ),
    )


FIXED = Identity(
    "Pemberton", "Wilhelmina", "MR4471902", "123-45-6789", "19710203", "A20240099", "Saint Quentin Clinic", "Okonkwo",
    "Vasquez", ("1.2.826.0.1.3680043.8.498.1001", "1.2.826.0.1.3680043.8.498.1002",
    "1.2.826.0.1.3680043.8.498.1003", "1.2.826.0.1.3680043.8.498.1004", "1.2.826.0.1.3680043.8.498.1005"),
)  # fmt: skip

FIXED_SHORT = Identity(
    "Li", "Bo", "AB12", "Q7X", "19710203", "K3", "UCH", "Xu", "Ng",
    tuple(f"1.2.826.0.1.3680043.8.498.200{n}" for n in range(5)),
)  # fmt: skip
_NEUTRAL = Identity(
    "Neutral", "Person", "ID0", "000-00-0000", "19000101", "A0", "Nowhere", "Nobody",
    "Nobody", tuple(generate_uid() for _ in range(5)),
)  # fmt: skip


# ----------------------------------------------------------------------------- placements

# Where identity is put: attribute -> the identity value it gets. Table attributes and free
# text the product clears (document title, SR text), at the top and at any depth.
_PLACES: dict[str, str] = {
    "PatientName": "name",
    "PatientID": "patient_id",
    "OtherPatientIDs": "other_id",
    "PatientBirthDate": "birth_date",
    "AccessionNumber": "accession",
    "InstitutionName": "institution",
    "InstitutionAddress": "free_text",
    "ReferringPhysicianName": "physician_pn",
    "PerformingPhysicianName": "physician_pn",
    "OperatorsName": "operator_pn",
    "PersonName": "name",
    "ContentCreatorName": "physician_pn",
    "VerifyingObserverName": "physician_pn",
    "TextValue": "free_text",
    "UnformattedTextValue": "free_text",
    "ImageComments": "free_text",
    "StudyDescription": "free_text",
    "SeriesDescription": "free_text",
    "DocumentTitle": "free_text",
    "PatientComments": "free_text",
    "AdditionalPatientHistory": "free_text",
    "ReferencedSOPInstanceUID": "uid",
    "FrameOfReferenceUID": "uid",
    # Retained by the profile elsewhere, but free text inside an SR content tree, which goes
    # as a whole (a report system may write a name as a code meaning).
    "CodeMeaning": "free_text",
}
_ONLY_IN_CONTENT = {"CodeMeaning"}
# Sequences to nest placements in: outside the table, emptied, removed, references, SR.
_CONTAINERS = (
    "ProcedureCodeSequence",
    "AnatomicRegionSequence",
    "ReferencedSeriesSequence",
    "ReferencedStudySequence",
    "ReferencedImageSequence",
    "SourceImageSequence",
    "RequestAttributesSequence",
    "OtherPatientIDsSequence",
    "ContentSequence",
    "VerifyingObserverSequence",
    "AcquisitionContextSequence",
    "PerformedProtocolCodeSequence",
    "private",
)


def _value(identity: Identity, kind: str) -> str:
    if kind == "name":
        return identity.name
    if kind == "physician_pn":
        return f"{identity.physician}^Doctor"
    if kind == "operator_pn":
        return identity.operator
    if kind == "uid":
        return identity.uids[hash(kind) % len(identity.uids)]
    if kind == "free_text":
        return identity.free_text()
    return str(getattr(identity, kind))


def _private(item: Dataset, identity: Identity, depth: int) -> Dataset:
    block = item.private_block(0x0031 + 2 * depth, "ACME IDENTITY", create=True)
    block.add_new(0x10, "LO", identity.free_text()[:64])
    block.add_new(0x11, "UI", identity.uids[0])
    inner = Dataset()
    block.add_new(0x12, "SQ", Sequence([inner]))
    return inner


def _place(
    ds: Dataset,
    identity: Identity,
    path: list[str],
    keyword: str,
    places: Mapping[str, str] = _PLACES,
) -> None:
    if keyword in _ONLY_IN_CONTENT and "ContentSequence" not in path:
        path = ["ContentSequence", *path]
    item = ds
    for depth, container in enumerate(path):
        if container == "private":
            item = _private(item, identity, depth)
            continue
        if container not in item or not item[container].value:
            setattr(item, container, Sequence([Dataset()]))
        item = item[container].value[0]
    setattr(item, keyword, _value(identity, places[keyword]))


_placements = st.lists(
    st.tuples(
        st.lists(st.sampled_from(_CONTAINERS), max_size=4),
        st.sampled_from(sorted(_PLACES)),
    ),
    min_size=1,
    max_size=25,
)


# ----------------------------------------------------------------------------- objects


def _meta(ds: Dataset) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _common(ds: Dataset, identity: Identity, sop_class: str, modality: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = identity.uids[:3]
    ds.PatientName = identity.name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = "O"
    ds.AccessionNumber = identity.accession
    ds.InstitutionName = identity.institution
    ds.ReferringPhysicianName = f"{identity.physician}^Doctor"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240102", "101010", identity.patient_id[:16]
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, 1
    ds.Manufacturer = "ACME"
    ds.ContentDate, ds.ContentTime = "20240102", "101010"


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return item


def _text_item(identity: Identity) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
    item.ConceptNameCodeSequence = [_code("121106", "Comment")]
    item.TextValue = identity.free_text()
    return item


def _pname_item(identity: Identity) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = "HAS OBS CONTEXT", "PNAME"
    item.ConceptNameCodeSequence = [_code("121008", "Person Observer Name")]
    item.PersonName = identity.name
    return item


def _image_item(identity: Identity) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ref.ReferencedSOPInstanceUID = identity.uids[3]
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
    item.ReferencedSOPSequence = [ref]
    return item


def _evidence(identity: Identity) -> Sequence:
    instance = Dataset()
    instance.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    instance.ReferencedSOPInstanceUID = identity.uids[3]
    series = Dataset()
    series.SeriesInstanceUID = identity.uids[4]
    series.ReferencedSOPSequence = [instance]
    study = Dataset()
    study.StudyInstanceUID = identity.uids[1]
    study.ReferencedSeriesSequence = [series]
    return Sequence([study])


def build_sr(identity: Identity) -> Dataset:
    ds = Dataset()
    _common(ds, identity, "1.2.840.10008.5.1.4.1.1.88.33", "SR")  # Comprehensive SR
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("11528-7", "Radiology Report")]
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = f"{identity.physician}^Doctor"
    observer.VerifyingObserverIdentificationCodeSequence = []
    observer.VerifyingOrganization = identity.institution
    observer.VerificationDateTime = "20240102101010"
    ds.VerifyingObserverSequence = [observer]
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(identity)
    section = Dataset()
    section.RelationshipType, section.ValueType = "CONTAINS", "CONTAINER"
    section.ConceptNameCodeSequence = [_code("121070", "Findings")]
    section.ContinuityOfContent = "SEPARATE"
    section.ContentSequence = [_text_item(identity), _image_item(identity)]
    ds.ContentSequence = [_pname_item(identity), section]
    ds.PerformedProcedureCodeSequence = []
    ds.ReferencedPerformedProcedureStepSequence = []
    return ds


def build_ko(identity: Identity) -> Dataset:
    ds = Dataset()
    _common(ds, identity, "1.2.840.10008.5.1.4.1.1.88.59", "KO")
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("113000", "Of Interest")]
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(identity)
    ds.ContentTemplateSequence = [Dataset()]
    ds.ContentTemplateSequence[0].MappingResource = "DCMR"
    ds.ContentTemplateSequence[0].TemplateIdentifier = "2010"
    ds.ContentSequence = [_image_item(identity), _text_item(identity)]
    ds.ReferencedPerformedProcedureStepSequence = []
    return ds


def build_pr(identity: Identity) -> Dataset:
    ds = Dataset()
    _common(ds, identity, "1.2.840.10008.5.1.4.1.1.11.1", "PR")
    ds.ContentLabel = "ANNOTATION"
    ds.ContentDescription = identity.free_text()[:64]
    ds.ContentCreatorName = f"{identity.physician}^Doctor"
    ds.PresentationCreationDate, ds.PresentationCreationTime = "20240102", "101010"
    series = Dataset()
    series.SeriesInstanceUID = identity.uids[4]
    image = Dataset()
    image.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    image.ReferencedSOPInstanceUID = identity.uids[3]
    series.ReferencedImageSequence = [image]
    ds.ReferencedSeriesSequence = [series]
    text = Dataset()
    text.UnformattedTextValue = identity.free_text()
    text.BoundingBoxAnnotationUnits = "PIXEL"
    text.BoundingBoxTopLeftHandCorner = [1.0, 1.0]
    text.BoundingBoxBottomRightHandCorner = [100.0, 20.0]
    text.BoundingBoxTextHorizontalJustification = "LEFT"
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = [text]
    ds.GraphicAnnotationSequence = [annotation]
    layer = Dataset()
    layer.GraphicLayer, layer.GraphicLayerOrder = "LAYER1", 1
    ds.GraphicLayerSequence = [layer]
    ds.PresentationLUTShape = "IDENTITY"
    return ds


def build_pdf(identity: Identity) -> Dataset:
    ds = Dataset()
    _common(ds, identity, "1.2.840.10008.5.1.4.1.1.104.1", "DOC")
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "NO"
    ds.DocumentTitle = f"Report of {identity.given} {identity.family}"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\n% " + identity.free_text().encode() + b"\n%%EOF"
    )
    ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.ConceptNameCodeSequence = [_code("11528-7", "Radiology Report")]
    return ds


def _from_corpus(name: str) -> Callable[[Identity], Dataset]:
    def build(identity: Identity) -> Dataset:
        ds = pydicom.dcmread(dicom_files.path(name), force=True)
        if "TransferSyntaxUID" not in ds.file_meta:
            for _ in ds.iterall():  # decode raw elements; written anew as explicit VR
                pass
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = identity.name
        ds.PatientID = identity.patient_id
        ds.PatientBirthDate = identity.birth_date
        ds.AccessionNumber = identity.accession
        ds.InstitutionName = identity.institution
        ds.StudyInstanceUID, ds.SeriesInstanceUID = identity.uids[1], identity.uids[2]
        ds.SOPInstanceUID = identity.uids[0]
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        return ds

    return build


BUILDERS: dict[str, Callable[[Identity], Dataset]] = {
    "SR": build_sr,
    "KO": build_ko,
    "PR": build_pr,
    "PDF": build_pdf,
    "RT plan": _from_corpus("rtplan.dcm"),
    "RT struct": _from_corpus("rtstruct.dcm"),
    "RT dose": _from_corpus("rtdose.dcm"),
    "SEG": _from_corpus("liver_1frame.dcm"),
    "SR corpus": _from_corpus("reportsi.dcm"),
    "CT": _from_corpus("CT_small.dcm"),
}


def _write(ds: Dataset) -> bytes:
    if getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" in ds.file_meta:
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()
    return _meta(ds)


# ----------------------------------------------------------------------------- the search


def _without_pixels(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds and ds[keyword].value:
            data = data.replace(bytes(ds[keyword].value), b"", 1)
    return data


def _forms(needle: str) -> Iterator[bytes]:
    for text in {needle, needle.upper(), needle.lower()}:
        for codec in ("utf-8", "utf-16-le", "utf-16-be"):
            yield text.encode(codec)


def leaks(needles: set[str], output: bytes, allowed: bytes = b"") -> list[str]:
    """The needles found in ``output`` (pixel data cut out) in any encoding or case."""
    haystack = _without_pixels(output)
    found = []
    for needle in sorted(needles):
        for form in _forms(needle):
            if form in haystack and form not in allowed:
                found.append(needle)
                break
    return found


# ----------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(identity=identities(), placements=_placements)
def test_no_identity_survives_anywhere(
    kind: str, identity: Identity, placements: list[tuple[list[str], str]]
) -> None:
    ds = BUILDERS[kind](identity)
    for path, keyword in placements:
        _place(ds, identity, path, keyword)
    _private(ds, identity, 0)
    data = _write(ds)
    output = anon.anonymize(data, KEY)
    # Text the anonymizer itself writes (dummies, method names) is not a leak.
    assert not leaks(identity.needles(), output, allowed=_baseline(kind)), kind


_baselines: dict[str, bytes] = {}


def _baseline(kind: str) -> bytes:
    """What the anonymizer writes for an object of this kind with a neutral identity."""
    if kind not in _baselines:
        _baselines[kind] = _without_pixels(anon.anonymize(_write(BUILDERS[kind](_NEUTRAL)), KEY))
    return _baselines[kind]


# ----------------------------------------------------------------------------- short values

# Short identifying values (2 to 5 characters: 'Li^Bo', 'AB12', 'UCH') are too short for a
# byte search, which would find them by chance in binary values and fixed text. They are
# searched as whole tokens in the values of the output (every element at every depth, the
# File Meta, private elements, binary values other than pixel data, and the DICOM JSON
# that QIDO-RS answers), case-insensitively. A token the output of the same object with a
# neutral identity also holds (a modality, a code value, a word of a kept description or of
# the blank PDF) is fixed text and not counted; UID components are digits, so only tokens
# holding a letter are searched.

_TOKEN = re.compile(r"[^\W_]+")
_SHORT_SCRIPTS = (*_SCRIPTS, "ÄÖÜäöüßÉéÈèÑñÇç")
_PIXELS = {"PixelData", "FloatPixelData", "DoubleFloatPixelData"}
_BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}


@st.composite
def _short(draw: st.DrawFn, letters: str = string.ascii_letters, scripts: bool = True) -> str:
    """A token of 2 to 5 characters with a letter: random, so unlikely in any fixed text."""
    if scripts and draw(st.integers(0, 4)) == 0:
        alphabet = draw(st.sampled_from(_SHORT_SCRIPTS))
        return draw(st.text(alphabet=alphabet, min_size=2, max_size=3))
    token = draw(st.text(alphabet=letters, min_size=2, max_size=5))
    return draw(st.sampled_from([c for c in letters if c.isalpha()])) + token[1:]


@st.composite
def short_identities(draw: st.DrawFn) -> Identity:
    """An identity whose names, IDs and institution are single short words."""
    upper_digits = string.ascii_uppercase + string.digits
    return Identity(
        family=draw(_short()),
        given=draw(_short()),
        patient_id=draw(_short(upper_digits)),
        other_id=draw(_short(upper_digits)),
        birth_date=draw(st.dates().map(lambda d: d.strftime("%Y%m%d"))),
        accession=draw(_short(upper_digits)),
        institution=draw(_short(string.ascii_uppercase, scripts=False)),  # also an AE title
        physician=draw(_short()),
        operator=draw(_short()),
        uids=tuple(generate_uid() for _ in range(5)),
    )


def _short_needles(identity: Identity) -> set[str]:
    values = (
        identity.family,
        identity.given,
        identity.patient_id,
        identity.other_id,
        identity.accession,
        identity.institution,
        identity.physician,
        identity.operator,
    )
    return {t.lower() for v in values for t in _TOKEN.findall(v) if not t.isdigit()}


# Where else short identifying values are found in practice: AE titles, station and
# department names, issuers; and person names Table E.1-1 does not list, which the product
# replaces as any name. Each is in the table or a name (checked below): none may remain.
_SHORT_PLACES: dict[str, str] = {
    "EvaluatorName": "physician_pn",
    "SecondaryReviewerName": "name",
    "StationName": "institution",
    "InstitutionalDepartmentName": "institution",
    "IssuerOfPatientID": "institution",
    "PerformedStationAETitle": "institution",
    "ScheduledStationAETitle": "institution",
    "RequestingService": "institution",
    "OtherPatientNames": "name",
    "RequestingPhysician": "physician_pn",
    "PhysiciansOfRecord": "physician_pn",
    "StudyID": "accession",
    "AdmissionID": "other_id",
    "DeviceSerialNumber": "other_id",
    "ProtocolName": "free_text",
}
_META_PLACES = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
)


_short_placements = st.lists(
    st.tuples(
        st.lists(st.sampled_from(_CONTAINERS), max_size=3),
        st.sampled_from(sorted({*_PLACES, *_SHORT_PLACES})),
    ),
    min_size=1,
    max_size=25,
)


def _text_of(element: DataElement) -> list[str]:
    """The values of a (non-sequence) element as text; binary values decoded as Latin-1."""
    if element.keyword in _PIXELS or element.value is None:
        return []
    if element.VR in _BINARY_VRS:
        raw = element.value if isinstance(element.value, bytes) else b""
        return [raw.decode("latin-1")]
    values = element.value if element.VM > 1 else [element.value]
    return [str(v) for v in values]


def output_tokens(data: bytes) -> set[str]:
    """Every token of every value of a Part 10 file (pixel data aside), lower-case."""
    ds = pydicom.dcmread(io.BytesIO(data))
    tokens: set[str] = set()
    for element in [*ds.file_meta, *_all_elements(ds)]:
        for text in _text_of(element):
            tokens |= {t.lower() for t in _TOKEN.findall(text)}
    return tokens


def json_tokens(document: object) -> set[str]:
    """Every token of every string value of DICOM JSON (inline binary aside), lower-case."""
    tokens: set[str] = set()
    pending = [document]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            tokens |= {t.lower() for t in _TOKEN.findall(item)}
        elif isinstance(item, dict):
            pending.extend(v for k, v in item.items() if k not in ("InlineBinary", "vr"))
        elif isinstance(item, list):
            pending.extend(item)
    return tokens


def _with_meta_titles(data: bytes, title: str) -> bytes:
    """The file with ``title`` as its File Meta source, sending and receiving AE titles."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword in _META_PLACES:
        setattr(ds.file_meta, keyword, title)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _all_elements(ds: Dataset) -> Iterator[DataElement]:
    """Every element at every depth, private ones included (sequences themselves aside)."""
    pending = [ds]
    while pending:
        item = pending.pop()
        for element in item:
            if element.VR == "SQ":
                pending.extend(element.value)
            else:
                yield element


def _json_of(ds: Dataset) -> dict[str, object]:
    """The object's attributes in DICOM JSON, as the index keeps them (no pixel data)."""
    copy = Dataset(ds)
    for keyword in _PIXELS:
        if keyword in copy:
            del copy[keyword]
    return copy.to_json_dict(bulk_data_threshold=1 << 30)


_short_baselines: dict[str, set[str]] = {}


def _short_baseline(kind: str) -> set[str]:
    """Tokens the outputs of this kind of object hold with a neutral identity (fixed text)."""
    if kind not in _short_baselines:
        ds = BUILDERS[kind](_NEUTRAL)
        _private(ds, _NEUTRAL, 0)
        tokens = output_tokens(anon.anonymize(_write(ds), KEY))
        tokens |= json_tokens(anon.anonymize_json(_json_of(ds), KEY))
        _short_baselines[kind] = tokens
    return _short_baselines[kind]


@pytest.mark.parametrize("kind", sorted(BUILDERS))
@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(identity=short_identities(), placements=_short_placements)
def test_no_short_identifying_value_survives_as_a_word(
    kind: str, identity: Identity, placements: list[tuple[list[str], str]]
) -> None:
    ds = BUILDERS[kind](identity)
    for path, keyword in placements:
        _place(ds, identity, path, keyword, {**_PLACES, **_SHORT_PLACES})
    _private(ds, identity, 0)
    data = _with_meta_titles(_write(ds), identity.institution)
    needles = _short_needles(identity) - _short_baseline(kind)
    assert needles  # the identity's tokens are random: fixed text rarely holds one
    in_file = needles & output_tokens(anon.anonymize(data, KEY))
    in_json = needles & json_tokens(anon.anonymize_json(_json_of(ds), KEY))
    assert not in_file, (kind, sorted(in_file))
    assert not in_json, (kind, sorted(in_json))


def test_the_short_value_places_are_in_the_table_or_names() -> None:
    table = anon.action_table()
    for keyword in _SHORT_PLACES:
        assert table.action(Tag(keyword)) is not None or dictionary_VR(keyword) == "PN", keyword


def test_the_word_search_finds_a_short_value_left_anywhere() -> None:
    output = anon.anonymize(_write(build_ko(FIXED_SHORT)), KEY)
    assert not _short_needles(FIXED_SHORT) & output_tokens(output)
    for keyword, depth in (("Manufacturer", 0), ("CodeMeaning", 2), ("PatientID", 1)):
        leaked = pydicom.dcmread(io.BytesIO(output))
        item = leaked
        for _ in range(depth):
            item.ReferencedStudySequence = [Dataset()]
            item = item.ReferencedStudySequence[0]
        setattr(item, keyword, f"{FIXED_SHORT.institution}-CT1")  # as a leak would leave it
        out = io.BytesIO()
        leaked.save_as(out, enforce_file_format=True)
        assert FIXED_SHORT.institution.lower() in output_tokens(out.getvalue()), keyword


def test_an_encapsulated_pdf_becomes_a_blank_page_with_its_length() -> None:
    identity = FIXED
    output = pydicom.dcmread(io.BytesIO(anon.anonymize(_write(build_pdf(identity)), KEY)))
    document = output.EncapsulatedDocument
    assert document.startswith(b"%PDF-1.4") and b"%%EOF" in document
    assert output.EncapsulatedDocumentLength == len(anon.BLANK_PDF)
    assert "DocumentTitle" in output and not output.DocumentTitle


def test_an_sr_keeps_no_content_but_stays_a_verified_document() -> None:
    identity = FIXED
    output = pydicom.dcmread(io.BytesIO(anon.anonymize(_write(build_sr(identity)), KEY)))
    assert "ContentSequence" not in output
    assert output.VerificationFlag == "VERIFIED"
    (observer,) = output.VerifyingObserverSequence
    assert observer.VerifyingObserverName == "Anonymized"
    evidence = output.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == anon.map_uid(identity.uids[1], KEY)


# Identifying attributes of corpus files; UIDs are collected from every U attribute.
_IDENTIFYING = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "OperatorsName",
    "PersonName",
    "ContentCreatorName",
    "VerifyingObserverName",
)


def _corpus_needles(ds: Dataset) -> set[str]:
    table = anon.action_table()
    found: set[str] = set()
    pending = [ds]
    while pending:
        item = pending.pop()
        for element in item:
            if element.VR == "SQ":
                pending.extend(element.value)
                continue
            if element.keyword in _IDENTIFYING or table.action(element.tag) == "U":
                for value in element.value if element.VM > 1 else [element.value]:
                    found |= _split_name(str(value or "").strip("\0 "))
    return {n for n in found if len(n) >= 6 and not n.startswith(anon.DICOM_UID_ROOT)}


def _split_name(value: str) -> set[str]:
    parts = {value} | set(value.replace("=", "^").split("^"))
    return {p.strip() for p in parts if p.strip()}


_CORPUS = [
    name
    for name in dicom_files.part10_files(max_size=8_000_000)
    if name not in {r.name for r in dicom_files.REJECTED} and not name.startswith("DICOMDIR")
]


def _elements(ds: Dataset) -> Iterator[DataElement]:
    yield from ds.file_meta
    pending = [ds]
    while pending:
        item = pending.pop()
        for element in item:
            if element.VR == "SQ":
                pending.extend(element.value)
            else:
                yield element


def _unexplained(needle: str, original: Dataset, output: bytes) -> bool:
    """Whether ``needle`` is in the output other than through an attribute the profile
    retains and the original held with that very value (a manufacturer named like the
    institution in test data, a software's UID that is also its instance creator UID)."""
    table = anon.action_table()
    kept = {
        (e.tag, str(e.value))
        for e in _elements(original)
        if table.action(e.tag) is None and e.VR not in ("PN", "UN")
    }
    out = pydicom.dcmread(io.BytesIO(output))
    needle = needle.lower()
    for element in _elements(out):
        if element.VR in ("OB", "OW", "UN") or needle not in str(element.value).lower():
            continue
        if (element.tag, str(element.value)) not in kept:
            return True
    # Not inside any value either: then it is in the raw bytes, which is a leak.
    texts = " ".join(str(e.value) for e in _elements(out) if e.VR not in ("OB", "OW", "UN"))
    return needle not in texts.lower()


@pytest.mark.parametrize("name", _CORPUS)
def test_no_identifying_value_of_a_corpus_file_survives(name: str) -> None:
    data = dicom_files.data(name)
    try:
        original = pydicom.dcmread(io.BytesIO(data))
        output = anon.anonymize(data, KEY)
    except (anon.NotPart10, anon.BurnedInAnnotation):
        return  # refused: nothing served
    dummies = {str(v).lower() for v in (anon._TEXT, anon._DUMMIES["PN"])}
    needles = {n for n in _corpus_needles(original) if n.lower() not in dummies}
    found = [n for n in leaks(needles, output) if _unexplained(n, original, output)]
    assert not found, name


def _identifying_words(original: Dataset) -> set[str]:
    """Words (with a letter) of the corpus file's identifying values (the identifying
    attributes, person names anywhere, private elements, the File Meta AE titles) that no
    other attribute of the file holds: those may only reappear through a leak."""
    identifying: set[str] = set()
    other: set[str] = set()
    meta = [(e, e.tag in anon._META_REMOVED) for e in original.file_meta]
    for element, removed in [*meta, *((e, False) for e in _all_elements(original))]:
        words = {t.lower() for text in _text_of(element) for t in _TOKEN.findall(text)}
        if (
            removed
            or element.keyword in _IDENTIFYING
            or element.VR == "PN"
            or element.tag.is_private
        ):
            identifying |= words
        else:
            other |= words
    return {w for w in identifying - other - _FIXED_WORDS if not w.isdigit()}


#: Text the anonymizer writes itself: dummies, the method and its code, the blank PDF.
_FIXED_WORDS = {
    t.lower()
    for text in (
        anon._TEXT,
        *(str(v) for v in anon._DUMMIES.values()),
        anon.METHOD,
        *anon.PROFILE_CODE,
        "YES",
        "REMOVED",
        anon.BLANK_PDF.decode("latin-1"),
    )
    for t in _TOKEN.findall(text)
}


@pytest.mark.parametrize("name", _CORPUS)
def test_no_identifying_word_of_a_corpus_file_survives(name: str) -> None:
    data = dicom_files.data(name)
    try:
        original = pydicom.dcmread(io.BytesIO(data))
        output = anon.anonymize(data, KEY)
    except (anon.NotPart10, anon.BurnedInAnnotation):
        return  # refused: nothing served
    words = _identifying_words(original)
    assert not words & output_tokens(output), (name, sorted(words & output_tokens(output)))


# ----------------------------------------------------------------------------- dciodvfy


@pytest.mark.tools
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_dciodvfy_reports_no_new_errors_on_built_objects(kind: str, tmp_path: Path) -> None:
    dciodvfy = require_debian_tool("dciodvfy", "dicom3tools")
    identity = FIXED
    ds = BUILDERS[kind](identity)
    _private(ds, identity, 0)
    before, after = tmp_path / "before.dcm", tmp_path / "after.dcm"
    before.write_bytes(_write(ds))
    after.write_bytes(anon.anonymize(before.read_bytes(), KEY))
    new = dciodvfy_errors(dciodvfy, after) - dciodvfy_errors(dciodvfy, before)
    assert not new, f"{kind}: {sorted(new)}"
