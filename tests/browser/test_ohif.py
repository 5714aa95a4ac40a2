"""The OHIF Viewer, end to end, in headless Chromium.

One local stack (``python -m local`` via ``tests/support/served.py``, CORS limited to the
viewer's origin) gets three real studies through STOW: a CT series (three slices of
``CT_small.dcm``), an Enhanced MR multi-frame (``emri_small.dcm``) and a colour US
(``US1_J2KR.dcm``, JPEG 2000), each with fresh UIDs and a patient name carrying a per-run
token. OHIF's prebuilt app (``tools/viewer.py``: pinned, cached in ``.viewer/``) is served
with the generated ``app-config.js``; Selenium drives Chromium through the study list as a
user would: types a patient-name filter, opens each study in the Basic Viewer. The browser's
performance log (Chrome DevTools network events) tells which DICOMweb requests were sent,
with which ``Authorization`` header, and how they were answered.

Screenshots and the browser console go to ``.artifacts/browser/``. Chromium and
chromedriver come from Debian (installed on demand by ``tests/support/debian_tools.py``; in
CI a missing tool fails the test instead of skipping it).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from pydicom.uid import generate_uid
from selenium import webdriver
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from local.template import PROJECT_ROOT
from shared import keys
from shared.dicomweb.multipart import build_related, new_boundary
from tests.support import dicom_files
from tests.support.debian_tools import cannot_run, require_debian_tool
from tests.support.served import Served, free_port, served
from tools import viewer

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

ARTIFACTS = PROJECT_ROOT / ".artifacts" / "browser"
AET = "OHIF"
RUN = "ZB" + uuid.uuid4().hex[:6].upper()  # patient names start with it: one filter finds ours
UI_TIMEOUT_S = 30  # the study list, a filter's result, a page change
RENDER_TIMEOUT_S = 45  # from opening a study to pixels on the canvas
MIN_PIXEL_STD = 8.0  # a blank (black or flat) viewport has a standard deviation near 0


@dataclass(frozen=True)
class Study:
    modality: str
    family_name: str
    study_uid: str
    instances: int


@dataclass
class NetworkLog:
    """DICOMweb requests seen by the browser, from Chrome's performance log."""

    base_url: str
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def collect(self, driver: webdriver.Chrome) -> None:
        for entry in driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            request_id = params.get("requestId")
            method = message.get("method")
            if method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                if url.startswith(self.base_url):
                    self.requests[request_id] = {
                        "method": params["request"]["method"],
                        "url": url,
                        "headers": params["request"].get("headers", {}),
                    }
            elif request_id in self.requests:
                seen = self.requests[request_id]
                if method == "Network.responseReceived":
                    seen["status"] = params["response"]["status"]
                elif method == "Network.loadingFailed":
                    seen["failed"] = params.get("errorText") or "failed"
                    seen["cors"] = params.get("corsErrorStatus")

    def dicomweb(self) -> list[dict[str, Any]]:
        """Requests other than CORS preflights."""
        return [r for r in self.requests.values() if r["method"] != "OPTIONS"]

    def failures(self) -> list[str]:
        """Every request (preflights included) that failed or answered 4xx/5xx."""
        return [
            f"{r['method']} {r['url']} -> {r.get('status', '')} {r.get('failed', '')}".strip()
            for r in self.requests.values()
            if r.get("failed") or r.get("status", 0) >= 400
        ]


@dataclass
class Scene:
    stack: Served
    viewer_url: str
    studies: dict[str, Study]
    driver: webdriver.Chrome
    network: NetworkLog

    def page(self, name: str) -> Path:
        """Save a screenshot and the browser console under .artifacts/browser/."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        console = "\n".join(f"{e['level']} {e['message']}" for e in self.driver.get_log("browser"))
        (ARTIFACTS / f"{name}.console.txt").write_text(console + "\n", encoding="utf-8")
        return path


# --- data ----------------------------------------------------------------------------------


def _stow(stack: Served, files: list[bytes]) -> None:
    boundary = new_boundary()
    answer = requests.post(
        f"{stack.base_url}/stowRsListener/{AET}/studies",
        data=build_related([(f, "application/dicom") for f in files], boundary),
        headers={
            "Authorization": stack.api_key,
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text


def _store_studies(stack: Served) -> dict[str, Study]:
    """The three studies, each under its own patient (name RUN + modality)."""
    studies = {}
    ct_study, ct_series = generate_uid(), generate_uid()
    studies["CT"] = Study("CT", f"{RUN}CT", ct_study, 3)
    _stow(
        stack,
        [
            dicom_files.with_new_uids(
                "CT_small.dcm",
                study=ct_study,
                series=ct_series,
                patient_id=f"{RUN}-CT",
                PatientName=f"{RUN}CT^Browser",
                StudyDescription="Browser CT",
                InstanceNumber=n,
                ImagePositionPatient=[-158.135803, -179.035797, -75.699997 + 5 * n],
                SliceLocation=-75.699997 + 5 * n,
            )
            for n in (1, 2, 3)
        ],
    )
    for modality, name in (("MR", "emri_small.dcm"), ("US", "US1_J2KR.dcm")):
        study = generate_uid()
        studies[modality] = Study(modality, f"{RUN}{modality}", study, 1)
        _stow(
            stack,
            [
                dicom_files.with_new_uids(
                    name,
                    study=study,
                    patient_id=f"{RUN}-{modality}",
                    PatientName=f"{RUN}{modality}^Browser",
                    StudyDescription=f"Browser {modality}",
                )
            ],
        )
    return studies


# --- browser -------------------------------------------------------------------------------


def _chrome() -> webdriver.Chrome:
    chromium = require_debian_tool("chromium", "chromium")
    chromedriver = require_debian_tool("chromedriver", "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--use-angle=swiftshader",  # WebGL (Cornerstone3D) without a GPU
        "--enable-unsafe-swiftshader",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    try:
        return webdriver.Chrome(options=options, service=Service(chromedriver))
    except WebDriverException as exc:
        cannot_run(f"Chromium did not start: {exc.msg}")
        raise


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    try:
        dist = viewer.fetch_ohif()
    except viewer.ViewerError as exc:
        cannot_run(f"OHIF {viewer.OHIF_VERSION} not available: {exc}")
    workdir = tmp_path_factory.mktemp("browser")
    viewer_port = free_port()
    origin = f"http://127.0.0.1:{viewer_port}"
    key, _ = keys.generate("browser-test")
    with served(workdir, key, overrides=f"CorsAllowOrigin={origin}") as stack:
        studies = _store_studies(stack)
        config = viewer.write_app_config(
            workdir / viewer.CONFIG_FILE, viewer.Archive(stack.base_url, AET), key
        )
        with viewer.ViewerServer(dist, config, viewer_port) as site:
            assert site.url == origin
            driver = _chrome()
            try:
                yield Scene(stack, site.url, studies, driver, NetworkLog(stack.base_url))
            finally:
                driver.quit()


def _wait(scene: Scene, condition: Callable[[webdriver.Chrome], Any], what: str) -> Any:
    try:
        # The study list re-renders while it loads: an element found a moment ago may be gone.
        wait = WebDriverWait(
            scene.driver,
            UI_TIMEOUT_S,
            poll_frequency=0.2,
            ignored_exceptions=(StaleElementReferenceException,),
        )
        return wait.until(condition)
    except TimeoutException:
        scene.page("timeout")
        scene.network.collect(scene.driver)
        pytest.fail(f"timed out waiting for {what}; failed requests: {scene.network.failures()}")


def _study_rows(driver: webdriver.Chrome) -> dict[str, WebElement]:
    rows = driver.find_elements(By.CSS_SELECTOR, '[data-cy^="studyRow-"]')
    return {str(r.get_attribute("data-cy")).removeprefix("studyRow-"): r for r in rows}


def _open_study_list(scene: Scene) -> None:
    scene.driver.get(scene.viewer_url + "/")
    # A returning user: OHIF's first-visit tour would cover the viewport.
    scene.driver.execute_script(
        "window.localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));"
    )


def _type_filter(scene: Scene, text: str) -> None:
    """Type into the Patient Name filter, key by key, as a user does."""
    field = _wait(
        scene,
        lambda d: next(
            iter(d.find_elements(By.CSS_SELECTOR, '[data-cy="input-patientName"]')), None
        ),
        "the study list's Patient Name filter",
    )
    field.clear()
    for char in text:
        field.send_keys(char)


def _shown(scene: Scene, expected: set[str]) -> bool:
    return set(_study_rows(scene.driver)) == expected


# --- tests ---------------------------------------------------------------------------------


def test_study_list_finds_the_stored_studies_with_the_api_key(scene: Scene) -> None:
    """The list shows our three studies for the run's token, one for a full family name;
    every QIDO request carried the key and was answered 200, through CORS preflights that
    passed for the viewer's origin."""
    ours = {s.study_uid for s in scene.studies.values()}
    _open_study_list(scene)
    _type_filter(scene, RUN.lower())  # PN matching is case-insensitive
    _wait(scene, lambda d: _shown(scene, ours), f"the three studies of {RUN}")
    scene.page("study-list")
    mr = scene.studies["MR"]
    _type_filter(scene, mr.family_name)
    _wait(scene, lambda d: _shown(scene, {mr.study_uid}), f"only {mr.family_name}")
    row = _study_rows(scene.driver)[mr.study_uid]
    assert mr.family_name in row.text  # shown as "FAMILY, Given"
    assert "MR" in row.text
    scene.page("study-list-filtered")

    scene.network.collect(scene.driver)
    qido = [r for r in scene.network.dicomweb() if "/qido/" in r["url"]]
    searches = [r["url"] for r in qido]
    assert any(f"PatientName=*{RUN.lower()}*" in u for u in searches), searches
    assert any(f"PatientName=*{mr.family_name}*" in u for u in searches), searches
    for request in qido:
        assert request["url"].startswith(f"{scene.stack.base_url}/qido/{AET}/"), request
        assert request["headers"].get("Authorization") == scene.stack.api_key, request
        assert request.get("status") == 200, request
    assert scene.network.failures() == []


def test_viewer_requests_carry_the_key_and_the_study_opens(scene: Scene) -> None:
    """Opening a study from the list: the Basic Viewer route is reached, and every request
    it sends to the archive carries the key (whatever the archive answers today)."""
    ct = scene.studies["CT"]
    _open_viewer(scene, ct)
    _wait(
        scene,
        lambda d: any("/rs/studies/" in r["url"] for r in _collected(scene)),
        "a WADO-RS request for the study",
    )
    scene.page("viewer-opened-CT")
    wado = [r for r in scene.network.dicomweb() if "/rs/" in r["url"]]
    assert wado
    for request in wado:
        assert request["url"].startswith(f"{scene.stack.base_url}/rs/studies/{ct.study_uid}")
        assert request["headers"].get("Authorization") == scene.stack.api_key, request


@pytest.mark.parametrize("modality", ["CT", "MR", "US"])
def test_each_study_renders(scene: Scene, modality: str) -> None:
    """Each study shows pixels in the viewport and no DICOMweb request fails."""
    study = scene.studies[modality]
    _open_viewer(scene, study)
    std = 0.0
    with contextlib.suppress(TimeoutException):
        std = WebDriverWait(scene.driver, RENDER_TIMEOUT_S, poll_frequency=0.5).until(
            lambda d: _rendered(scene)
        )
    screenshot = scene.page(f"viewer-{modality}")
    failures = scene.network.failures()
    assert failures == [], f"DICOMweb requests failed ({screenshot}):\n" + "\n".join(failures)
    assert std >= MIN_PIXEL_STD, f"viewport blank after {RENDER_TIMEOUT_S} s ({screenshot})"
    assert _screenshot_std(scene) >= MIN_PIXEL_STD, screenshot
    metadata = [r for r in scene.network.dicomweb() if r["url"].endswith("/metadata")]
    frames = [r for r in scene.network.dicomweb() if re.search(r"/frames/\d", r["url"])]
    assert metadata and frames, "OHIF loaded neither metadata nor frames"


def _collected(scene: Scene) -> list[dict[str, Any]]:
    scene.network.collect(scene.driver)
    return scene.network.dicomweb()


def _open_viewer(scene: Scene, study: Study) -> None:
    """From the study list: filter by the patient's name, expand the row, Basic Viewer."""
    _open_study_list(scene)
    _type_filter(scene, study.family_name)
    _wait(scene, lambda d: _shown(scene, {study.study_uid}), study.family_name)
    scene.network.collect(scene.driver)
    scene.network.requests.clear()  # from here on: what opening the study asks for
    _wait(scene, lambda d: _click(_study_rows(d)[study.study_uid]), "the study row")
    button = _wait(
        scene,
        lambda d: next(
            (
                b
                for b in d.find_elements(
                    By.CSS_SELECTOR, f'[data-cy="mode-viewer-{study.study_uid}"]'
                )
                if b.is_enabled()
            ),
            None,
        ),
        "the Basic Viewer button",
    )
    button.click()
    _wait(scene, lambda d: "/viewer" in d.current_url, "the viewer route")


def _click(element: Any) -> bool:
    element.click()
    return True


def _rendered(scene: Scene) -> float | bool:
    """The pixel standard deviation of the viewport's canvas once it shows an image; stops
    the wait at the first failed DICOMweb request."""
    scene.network.collect(scene.driver)
    if scene.network.failures():
        return -1.0  # truthy: stop waiting, the assertions report the failures
    data_url = scene.driver.execute_script(
        "const c = document.querySelector('.cornerstone-viewport-element canvas');"
        "return c && c.width > 0 ? c.toDataURL('image/png') : null;"
    )
    if not data_url:
        return False
    std = _std(base64.b64decode(data_url.split(",", 1)[1]))
    return std if std >= MIN_PIXEL_STD else False


def _screenshot_std(scene: Scene) -> float:
    """The same measure on a screenshot of the viewport element (what the user sees)."""
    element = scene.driver.find_element(By.CSS_SELECTOR, ".cornerstone-viewport-element")
    return _std(element.screenshot_as_png)


def _std(png: bytes) -> float:
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(pixels.std()) if pixels.size else 0.0
