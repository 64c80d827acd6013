"""The conformance harness takes its error class names from the manifest (`error_classes`, the
spec's §11 table at the manifest's version), so a newer manifest with a new class needs no new
harness."""

import json

import pytest

from wcodec import harness as H


def _manifest(tmp_path, classes, vec_class):
    m = {"schema": H.MANIFEST_SCHEMA, "vectors": [
        {"id": "x_NEW-01_thing", "file": "x.wcd", "expected": "invalid", "error_class": vec_class}]}
    if classes is not None:
        m["error_classes"] = classes
    p = tmp_path / "manifest.json"
    p.write_text(json.dumps(m))
    return p


def test_published_manifest_lists_the_harness_defaults():
    m = H.load_manifest(H.default_paths(None, None)[0])
    assert H.manifest_classes(m) == H.ERROR_CLASSES


def test_a_manifest_can_add_a_class(tmp_path):
    m = H.load_manifest(_manifest(tmp_path, list(H.ERROR_CLASSES) + ["FutureError"],
                                  "FutureError"))
    classes = H.manifest_classes(m)
    assert H.first_class("wcodec: FutureError: something", classes) == "FutureError"
    assert H.first_class("wcodec: FutureError: something") is None  # not a default class
    entry = m["vectors"][0]
    verdict = H.judge(entry, H.Outcome(18, "FutureError: rejected", 0.1), tmp_path / "o",
                      30.0, require_class=True, classes=classes)
    assert verdict["passed"] and verdict["named_class"] == "FutureError"


@pytest.mark.parametrize("classes,vec_class", [
    (None, "FutureError"),              # default list: unknown class
    (["BadMagic"], "Truncated"),        # declared list without the vector's class
    ([], "BadMagic"),                   # empty
    (["Bad Magic|.*"], "BadMagic"),     # not a class name (would break the name regex)
])
def test_bad_class_lists_are_rejected(tmp_path, classes, vec_class):
    with pytest.raises(H.HarnessError):
        H.load_manifest(_manifest(tmp_path, classes, vec_class))
