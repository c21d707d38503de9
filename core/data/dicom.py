"""DICOM ingest: pixels through the modality LUT and VOI LUT / window (MONOCHROME1 inverted, 16-bit handled), and
de-identification after DICOM PS3.15 Annex E (basic application level confidentiality profile).

Nothing identifying leaves this module: `read_dicom` de-identifies the dataset in memory first, then returns the
display pixels (uint8), a small allow-listed metadata dict (with replaced UIDs) and what it removed.
Originals are never copied or rewritten.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.data.checks import MAX_PIXELS, BadFile

PROFILE = "DICOM PS3.15 Annex E basic application level confidentiality profile"

# Basic-profile attributes by action (PS3.15 Table E.1-1). Identifiers and free text are removed, names and
# dates blanked; every UID is replaced by a new one (consistently within one import).
REMOVE = (
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName", "PatientBirthDate", "PatientBirthTime",
    "PatientAddress", "PatientTelephoneNumbers", "PatientAge", "PatientSize", "PatientWeight", "EthnicGroup",
    "Occupation", "MilitaryRank", "BranchOfService", "MedicalRecordLocator", "AdditionalPatientHistory",
    "PatientComments", "PatientReligiousPreference", "CountryOfResidence", "RegionOfResidence",
    "PatientInsurancePlanCodeSequence", "ResponsiblePerson", "ResponsibleOrganization", "PatientState",
    "PregnancyStatus", "SmokingStatus", "MedicalAlerts", "Allergies", "LastMenstrualDate",
    "PatientSexNeutered", "PatientBreedDescription", "PatientSpeciesDescription",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime", "AcquisitionDate",
    "AcquisitionTime", "AcquisitionDateTime", "ContentDate", "ContentTime", "InstanceCreationDate",
    "InstanceCreationTime", "OverlayDate", "OverlayTime", "CurveDate", "CurveTime",
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence",
    "NameOfPhysiciansReadingStudy", "PhysiciansReadingStudyIdentificationSequence", "OperatorsName",
    "OperatorIdentificationSequence", "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence",
    "RequestingPhysician", "RequestingService", "ScheduledPerformingPhysicianName",
    "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence", "InstitutionalDepartmentName",
    "StationName", "DeviceSerialNumber", "DetectorID", "PlateID", "CassetteID", "GantryID", "GeneratorID",
    "StudyDescription", "SeriesDescription", "ProtocolName", "RequestAttributesSequence",
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "DerivationDescription", "ImageComments",
    "RequestedProcedureDescription", "RequestedProcedureID", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime", "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID", "ReasonForStudy", "ReasonForTheRequestedProcedure", "RequestedContrastAgent",
    "FrameComments", "TextString", "TextComments", "AdmissionID", "IssuerOfAdmissionID", "ServiceEpisodeID",
    "ServiceEpisodeDescription", "CurrentPatientLocation", "PatientInstitutionResidence", "VisitComments",
    "ReferencedPatientSequence", "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
    "ReferencedPatientAliasSequence", "ReferencedImageSequence", "SourceImageSequence", "IdentifyingComments",
    "InterpretationAuthor", "InterpretationRecorder", "InterpretationTranscriber", "ResultsIDIssuer",
    "DistributionName", "DistributionAddress", "OrderEntererLocation", "OrderCallbackPhoneNumber",
    "OrderEnteredBy", "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
    "ContentCreatorName", "ContentCreatorIdentificationCodeSequence", "PersonName", "VerifyingObserverName",
    "VerifyingObserverSequence", "VerifyingOrganization", "AuthorObserverSequence", "ParticipantSequence",
    "CustodialOrganizationSequence", "ModifiedAttributesSequence", "OriginalAttributesSequence",
    "DigitalSignaturesSequence", "TimezoneOffsetFromUTC", "SoftwareVersions", "Manufacturer",
    "ManufacturerModelName", "DeviceUID", "PatientSex",
    # Completed against PS3.15 Table E.1-1 (basic profile actions X / Z / D / X/Z / X/D / Z/D / X/Z/D).
    "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDeviceProcessingDescription",
    "AcquisitionProtocolDescription", "ActualHumanPerformersSequence", "AdmittingDate", "AdmittingTime",
    "AffectedSOPInstanceUID", "Arbitrary", "CommentsOnThePerformedProcedureStep",
    "ConfidentialityConstraintOnPatientDataDescription", "ContributionDescription", "ContrastBolusAgent",
    "CurrentObserverTrial", "DataSetTrailingPadding", "DischargeDiagnosisDescription", "EndAcquisitionDateTime",
    "ExpectedCompletionDateTime", "GraphicAnnotationSequence", "HumanPerformerName", "HumanPerformerOrganization",
    "IconImageSequence", "ImagePresentationComments", "ImagingServiceRequestComments", "Impressions",
    "InsurancePlanIdentification", "IntendedRecipientsOfResultsIdentificationSequence",
    "InterpretationApproverSequence", "InterpretationDiagnosisDescription", "InterpretationText",
    "IssuerOfAdmissionIDSequence", "IssuerOfPatientIDQualifiersSequence", "MAC", "ModifyingDeviceID",
    "ModifyingDeviceManufacturer", "NamesOfIntendedRecipientsOfResults", "PatientTransportArrangements",
    "PerformedLocation", "PerformedStationAETitle", "PerformedStationGeographicLocationCodeSequence",
    "PerformedStationName", "PerformedStationNameCodeSequence", "PersonAddress", "PersonIdentificationCodeSequence",
    "PersonTelephoneNumbers", "PhysicianApprovingInterpretation", "PreMedication", "ReferencedDigitalSignatureSequence",
    "ReferencedSOPInstanceMACSequence", "RequestedProcedureComments", "RequestedProcedureLocation",
    "RequestingPhysicianIdentificationSequence", "ResultsComments", "ResultsDistributionListSequence",
    "ReviewerName", "ScheduledHumanPerformersSequence", "ScheduledPatientInstitutionResidence",
    "ScheduledPerformingPhysicianIdentificationSequence", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime", "ScheduledProcedureStepLocation", "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime", "ScheduledStationAETitle", "ScheduledStationGeographicLocationCodeSequence",
    "ScheduledStationName", "ScheduledStationNameCodeSequence", "ScheduledStudyLocation",
    "ScheduledStudyLocationAETitle", "SpecialNeeds", "StudyComments", "StudyIDIssuer", "TopicAuthor",
    "TopicKeywords", "TopicSubject", "TopicTitle", "VerifyingObserverIdentificationCodeSequence",
    "PatientTelecomInformation", "PatientPrimaryLanguageCodeSequence", "PatientPrimaryLanguageModifierCodeSequence",
    "ReasonForTheImagingServiceRequest", "ReasonForVisit", "ReasonForVisitCodeSequence", "RouteOfAdmissions",
    "ReferencedPatientPhotoSequence", "StorageMediaFileSetID", "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID", "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointDescription",
    "ClinicalTrialCoordinatingCenterName", "DischargeDate", "DischargeTime", "PatientBirthDateInAlternativeCalendar",
    "PatientDeathDateInAlternativeCalendar", "PatientAlternativeCalendar", "ResponsiblePersonRole",
    "SourceApplicationEntityTitle", "StationAETitle",
    "ConsultingPhysicianName", "ConsultingPhysicianIdentificationSequence", "EvaluatorName",
    "EvaluatorSequence", "OtherPatientIDsSequence", "PatientInsurancePlanCodeSequence",
)
# Whole value representations the basic profile removes wherever they occur (names, dates, times, free text),
# with their tags kept out of the allow-list below.
REMOVE = tuple(dict.fromkeys(REMOVE))
REMOVE_VR = ("PN", "DA", "DT", "TM", "LT", "ST", "UT")
# UIDs that name a standard thing (a class, a transfer syntax, a coding scheme), not an instance: kept.
KEEP_UID = ("TransferSyntaxUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID", "MappingResourceUID",
            "ContextUID", "PrivateInformationCreatorUID")
REPLACE_UID = (
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "SynchronizationFrameOfReferenceUID", "InstanceCreatorUID", "IrradiationEventUID", "StorageMediaFileSetUID",
    "ConcatenationUID", "DimensionOrganizationUID", "ReferencedSOPInstanceUID", "ReferencedFrameOfReferenceUID",
    "RelatedFrameOfReferenceUID", "TargetUID", "UID", "TemplateExtensionCreatorUID",
    "TemplateExtensionOrganizationUID", "FiducialUID", "DoseReferenceUID", "CreatorVersionUID",
)
# What Exemplar keeps per image after de-identification (technical, non-identifying).
KEEP = ("Modality", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "PixelRepresentation", "Rows",
        "Columns", "ViewPosition", "BodyPartExamined", "PatientOrientation", "ImagerPixelSpacing", "PixelSpacing",
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@dataclass
class Deidentifier:
    """Consistent replacements within one import: the same original UID / patient maps to the same new value."""

    uid_map: dict[str, str] = field(default_factory=dict)
    patient_map: dict[str, str] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    replaced: dict[str, int] = field(default_factory=dict)
    private_removed: int = 0
    overlays_removed: int = 0
    burned_in: int = 0
    files: int = 0
    secret: bytes | None = None  # keyed pseudonyms / UIDs: stable across imports, not reversible without it

    def _keyed(self, kind: str, value: str) -> str:
        return hmac.new(self.secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def new_uid(self, old: str) -> str:
        if old not in self.uid_map:
            self.uid_map[old] = f"2.25.{int(self._keyed('uid', old)[:30], 16) if self.secret else uuid.uuid4().int}"
        return self.uid_map[old]

    def pseudonym(self, patient_id: str) -> str:
        if patient_id not in self.patient_map:
            self.patient_map[patient_id] = ("P" + self._keyed("patient", patient_id)[:10] if self.secret
                                            else f"P{len(self.patient_map) + 1:05d}")
        return self.patient_map[patient_id]

    def apply(self, ds) -> str | None:
        """De-identify ds in place (recursing into sequences); returns the import-local patient pseudonym."""
        self.files += 1
        pid = str(ds.get("PatientID", "") or "")
        pseudo = self.pseudonym(pid) if pid else None
        self._walk(ds)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.new_uid(str(meta.MediaStorageSOPInstanceUID))
        return pseudo

    def _count(self, table: dict, key: str) -> None:
        table[key] = table.get(key, 0) + 1

    def _walk(self, ds) -> None:
        n_priv = len([e for e in ds if e.tag.is_private])
        if n_priv:
            ds.remove_private_tags()
            self.private_removed += n_priv
        for elem in list(ds):
            g = elem.tag.group
            if 0x6000 <= g <= 0x60FF and elem.tag.element in (0x3000, 0x4000):  # overlay data / comments
                del ds[elem.tag]
                self.overlays_removed += 1
            elif 0x5000 <= g <= 0x50FF:  # retired curves
                del ds[elem.tag]
                self._count(self.removed, "CurveData")
        for kw in REMOVE:
            if kw in ds:
                delattr(ds, kw)
                self._count(self.removed, kw)
        for elem in list(ds):
            if elem.VR in REMOVE_VR:
                del ds[elem.tag]
                self._count(self.removed, elem.keyword or str(elem.tag))
        for kw in REPLACE_UID:
            if kw in ds and ds.data_element(kw).value:
                val = ds.data_element(kw).value
                if isinstance(val, (list, tuple)) or type(val).__name__ == "MultiValue":
                    setattr(ds, kw, [self.new_uid(str(v)) for v in val])
                else:
                    setattr(ds, kw, self.new_uid(str(val)))
                self._count(self.replaced, kw)
        for elem in list(ds):  # every other instance UID (Annex E: "all UIDs" are replaced)
            kw = elem.keyword or ""
            if (elem.VR == "UI" and elem.value and kw not in REPLACE_UID and kw not in KEEP_UID
                    and not kw.endswith("ClassUID") and isinstance(elem.value, str)):
                elem.value = self.new_uid(str(elem.value))
                self._count(self.replaced, kw or str(elem.tag))
        for elem in list(ds):
            if elem.VR == "SQ":
                for item in elem.value:
                    self._walk(item)

    def report(self) -> dict:
        return {"profile": PROFILE, "files": self.files, "removed": dict(sorted(self.removed.items())),
                "uids_replaced": dict(sorted(self.replaced.items())), "private_tags_removed": self.private_removed,
                "overlays_removed": self.overlays_removed, "patients_pseudonymised": len(self.patient_map),
                "burned_in_annotation": int(self.burned_in),
                "note": "originals were not copied; only pixels and the allow-listed technical attributes were kept"}


@dataclass
class DicomImage:
    pixels: np.ndarray  # uint8 (H, W) display values
    meta: dict
    sha256: str
    burned_in: bool = False  # BurnedInAnnotation = YES: text (maybe identifiers) is part of the pixels


def _window(x: np.ndarray, center: float, width: float, func: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 window → [0, 1]."""
    func = (func or "LINEAR").upper()
    if func == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))
    if func == "LINEAR_EXACT":
        return np.clip((x - center) / max(width, 1e-6) + 0.5, 0.0, 1.0)
    w = max(width, 1.0)
    return np.clip((x - (center - 0.5)) / max(w - 1.0, 1e-6) + 0.5, 0.0, 1.0)


def _first(v) -> float:
    if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
        v = v[0]
    return float(v)


def display_pixels(ds, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """Stored pixels → [0, 1] display values: modality LUT, then VOI LUT or window (else min-max), MONOCHROME1
    inverted. Returns (float array, what was applied)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if "PixelData" not in ds:
        raise BadFile("DICOM has no pixel data")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows <= 0 or cols <= 0:
        raise BadFile(f"zero-size image ({cols}×{rows})")
    if rows * cols * frames > max_pixels:
        raise BadFile(f"decompression bomb: header claims {cols}×{rows}×{frames} = {rows * cols * frames:,} pixels "
                      f"(limit {max_pixels:,})")
    try:
        arr = ds.pixel_array
    except Exception as exc:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise BadFile(f"cannot decode DICOM pixel data (transfer syntax {ts}): {type(exc).__name__}: {exc}") from None
    applied: dict = {}
    if frames > 1:
        arr = arr[0]
        applied["frames"] = f"first of {frames}"
    if arr.ndim == 3:  # colour: luminance
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        applied["colour"] = "converted to luminance"
    x = apply_modality_lut(arr, ds)
    if "RescaleSlope" in ds or "ModalityLUTSequence" in ds:
        applied["modality_lut"] = "LUT" if "ModalityLUTSequence" in ds else \
            f"slope {float(ds.RescaleSlope)} intercept {float(ds.get('RescaleIntercept', 0))}"
    if "VOILUTSequence" in ds:
        desc = ds.VOILUTSequence[0].LUTDescriptor
        bits = int(desc[2]) if len(desc) > 2 else 16
        xi = x if np.issubdtype(x.dtype, np.integer) else np.round(x).astype(np.int64)  # LUTs index integers
        v = apply_voi_lut(xi, ds, index=0, prefer_lut=True).astype(np.float64) / float(2 ** bits - 1)
        applied["voi"] = "VOI LUT"
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        x = x.astype(np.float64)
        c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
        v = _window(x, c, w, str(ds.get("VOILUTFunction", "LINEAR")))
        applied["voi"] = f"window center {c:g} width {w:g}"
    else:
        x = x.astype(np.float64)
        lo, hi = float(x.min()), float(x.max())
        v = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
        applied["voi"] = "min-max"
    v = np.clip(v, 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        v = 1.0 - v
        applied["inverted"] = "MONOCHROME1"
    return v, applied


def read_dicom(source: str | Path | bytes, deid: Deidentifier, max_pixels: int = MAX_PIXELS,
               name: str = "") -> DicomImage:
    """Read, de-identify (in memory) and render one DICOM file; raises BadFile with a reason."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else str(source)
        if isinstance(source, (str, Path)) and Path(source).stat().st_size == 0:
            raise BadFile("empty file (0 bytes)")
        ds = pydicom.dcmread(fp)
    except BadFile:
        raise
    except InvalidDicomError as exc:
        raise BadFile(f"not a DICOM file ({exc})") from None
    except Exception as exc:
        raise BadFile(f"truncated or corrupt DICOM ({type(exc).__name__}: {exc})") from None
    burned = str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES"
    pseudo = deid.apply(ds)
    if burned:
        deid.burned_in += 1
    v, applied = display_pixels(ds, max_pixels)
    pixels = np.round(v * 255.0).astype(np.uint8)
    meta = {"source": "dicom", **applied}
    for kw in KEEP:
        if kw in ds and ds.data_element(kw).value not in (None, ""):
            val = ds.data_element(kw).value
            meta[kw] = [float(x) for x in val] if type(val).__name__ == "MultiValue" and kw.endswith("Spacing") \
                else (str(val) if not isinstance(val, (int, float)) else val)
    if pseudo:
        meta["patient"] = pseudo
    h = hashlib.sha256(np.ascontiguousarray(pixels).tobytes() + str(pixels.shape).encode()).hexdigest()
    return DicomImage(pixels=pixels, meta=meta, sha256=h, burned_in=burned)
