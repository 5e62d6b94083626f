"""Pixel classifier: exact slab features, accuracy against phantom truth, model files, errors."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.feature import hessian_matrix_eigvals

from anodetwin.errors import (
    CorruptFileError,
    DimensionError,
    InputNotFoundError,
    ParameterError,
    ShapeMismatchError,
)
from anodetwin.phantom import config_from_dict, generate_series
from anodetwin.segment.classifier import (
    DEFAULT_SIGMAS,
    FORMAT,
    KNOWN_CLASSES,
    UNLABELLED,
    PixelClassifier,
    load_classifier,
    pixel_features,
    train_classifier,
)

#: Small forests keep the tests fast; the defaults (100 trees, 200 000 voxels) do better.
FAST = {"n_estimators": 30, "max_samples_per_class": 20_000, "n_jobs": 2}
N_SLICES = 12  # annotated slices per model, as in the reference experiment


def merged_truth(phases: np.ndarray) -> np.ndarray:
    """What phase contrast separates: Si 2, copper 4, separator 5, all else (pore, CBD,
    lithiated Si) 1."""
    truth = np.ones_like(phases)
    for code in (2, 4, 5):
        truth[phases == code] = code
    return truth


def training_slices(nz: int) -> np.ndarray:
    return np.linspace(8, nz - 9, N_SLICES).round().astype(int)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    import h5py

    path = tmp_path_factory.mktemp("classifier") / "s.h5"
    cfg = config_from_dict({"series": {"soc": [0.0, 0.85]}}, seed=2)
    generate_series(cfg, path, progress=False)
    with h5py.File(path, "r") as f:
        return {t: (f[f"steps/{t}/tomogram"][:], f[f"steps/{t}/phases"][:])
                for t in ("T0", "T1")}


@pytest.fixture(scope="module")
def model_t0(series):
    tomo, phases = series["T0"]
    slices = training_slices(tomo.shape[0])
    return train_classifier(tomo, merged_truth(phases), slices=slices, **FAST), slices


def held_out_si_dice(clf: PixelClassifier, tomo, phases, slices) -> float:
    labels = clf.predict(tomo, progress=False)
    assert labels.dtype == np.uint8 and labels.shape == tomo.shape
    assert set(np.unique(labels)) <= set(clf.classes)
    rest = np.ones(tomo.shape[0], bool)
    rest[slices] = False
    return dice(labels[rest] == 2, phases[rest] == 2)


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------

def test_features_match_scipy_filters():
    rng = np.random.default_rng(5)
    vol = ndi.gaussian_filter(rng.random((26, 21, 23)), 1.0) * 1000.0 + 200.0
    sigmas = (0.7, 1.6)
    lo, hi = np.percentile(vol, (0.5, 99.5))
    feats = pixel_features(vol, sigmas=sigmas)
    assert feats.dtype == np.float32 and feats.shape == vol.shape + (1 + 6 * len(sigmas),)
    norm = (vol - lo) / (hi - lo)
    np.testing.assert_allclose(feats[..., 0], norm, rtol=1e-5, atol=1e-6)
    for i, s in enumerate(sigmas):
        f = feats[..., 1 + 6 * i:7 + 6 * i]
        kw = {"mode": "reflect", "truncate": 4.0}
        tol = {"rtol": 1e-4, "atol": 1e-5}
        np.testing.assert_allclose(f[..., 0], ndi.gaussian_filter(norm, s, **kw), **tol)
        np.testing.assert_allclose(f[..., 1], ndi.gaussian_gradient_magnitude(norm, s, **kw),
                                   **tol)
        np.testing.assert_allclose(f[..., 2], ndi.gaussian_laplace(norm, s, **kw), **tol)
        h = []
        for i0, i1 in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)):
            order = [0, 0, 0]
            order[i0] += 1
            order[i1] += 1
            h.append(ndi.gaussian_filter(norm, s, order=order, **kw))
        eig = np.moveaxis(hessian_matrix_eigvals(h), 0, -1)  # largest first
        np.testing.assert_allclose(f[..., 3:6], eig, **tol)


def test_features_of_z_range_equal_whole_volume(series):
    tomo = series["T0"][0][:, :48, :48]
    nz = tomo.shape[0]
    whole = pixel_features(tomo)
    assert whole.shape == tomo.shape + (1 + 6 * len(DEFAULT_SIGMAS),)
    for z0, z1 in ((50, 83), (0, 5), (nz - 3, nz), (100, 101), (15, 30)):
        part = pixel_features(tomo, z_range=(z0, z1))
        assert part.shape == (z1 - z0,) + whole.shape[1:]
        np.testing.assert_allclose(part, whole[z0:z1], rtol=1e-5, err_msg=f"z_range {z0}:{z1}")
    # an explicit scale equal to the volume's own range changes nothing
    lo, hi = np.percentile(tomo, (0.5, 99.5))
    np.testing.assert_array_equal(pixel_features(tomo, z_range=(40, 44), scale=(lo, hi)),
                                  whole[40:44])


# --------------------------------------------------------------------------------------------
# accuracy against the phantom's truth
# --------------------------------------------------------------------------------------------

def test_si_dice_pristine_step(series, model_t0):
    clf, slices = model_t0
    tomo, phases = series["T0"]
    assert len(slices) <= N_SLICES
    assert clf.classes == (1, 2, 4, 5)
    assert clf.params["slices"] == sorted(int(z) for z in slices)
    assert all(n <= FAST["max_samples_per_class"]
               for n in clf.params["training_voxels"].values())
    d = held_out_si_dice(clf, tomo, phases, slices)
    assert d >= 0.95, f"Si Dice on held-out slices of T0 is {d:.4f} (< 0.95)"


def test_si_dice_lithiated_step(series):
    tomo, phases = series["T1"]
    slices = training_slices(tomo.shape[0])
    clf = train_classifier(tomo, merged_truth(phases), slices=slices, **FAST)
    d = held_out_si_dice(clf, tomo, phases, slices)
    assert d >= 0.90, f"Si Dice on held-out slices of T1 is {d:.4f} (< 0.90)"


def test_training_from_sparse_annotations(series):
    """255 marks unlabelled voxels; without ``slices`` every annotated slice counts."""
    tomo, phases = series["T0"]
    truth = merged_truth(phases)
    ann = np.full_like(truth, UNLABELLED)
    for z in (30, 90, 150):
        ann[z] = truth[z]
    ann[91, :10] = truth[91, :10]  # a partly annotated slice
    clf = train_classifier(tomo, ann, n_estimators=5, max_samples_per_class=500, seed=3)
    assert clf.params["slices"] == [30, 90, 91, 150]
    assert clf.params["annotated_voxels"]["2"] == int(((ann == 2)).sum())
    assert clf.params["training_voxels"]["2"] == 500
    again = train_classifier(tomo, ann, n_estimators=5, max_samples_per_class=500, seed=3)
    crop = tomo[60:70, :40, :40]
    np.testing.assert_array_equal(clf.predict(crop, progress=False),
                                  again.predict(crop, progress=False))


# --------------------------------------------------------------------------------------------
# prediction and model files
# --------------------------------------------------------------------------------------------

def test_slab_size_does_not_change_result(series, model_t0):
    clf, _ = model_t0
    crop = series["T0"][0][60:108, :40, :40]
    small = clf.predict(crop, slab=7, progress=False)
    large = clf.predict(crop, slab=64, progress=False)
    np.testing.assert_array_equal(small, large)
    proba = clf.predict_proba(crop, slab=11)
    assert proba.dtype == np.float32 and proba.shape == crop.shape + (len(clf.classes),)
    np.testing.assert_allclose(proba.sum(axis=-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(clf.classes)[proba.argmax(axis=-1)], large)
    # another dtype of the same grey values gives the same labels
    np.testing.assert_array_equal(clf.predict(crop.astype(np.float32), progress=False), large)


def test_save_and_reload_identical_labels(series, model_t0, tmp_path):
    clf, _ = model_t0
    path = clf.save(tmp_path / "m.joblib")
    assert path == tmp_path / "m.joblib" and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.joblib"]  # no temporaries left
    payload = joblib.load(path)
    assert payload["format"] == FORMAT and payload["format_version"] == 1
    assert payload["provenance"]["command"] == "segment-train"
    back = load_classifier(path)
    assert back.classes == clf.classes and back.sigmas == clf.sigmas
    assert back.scale == clf.scale and back.params == clf.params
    crop = series["T0"][0][40:80]
    np.testing.assert_array_equal(back.predict(crop, progress=False),
                                  clf.predict(crop, progress=False))


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

@pytest.fixture
def small():
    rng = np.random.default_rng(1)
    vol = rng.normal(1000.0, 100.0, (10, 12, 14)).astype(np.float32)
    ann = np.full(vol.shape, UNLABELLED, np.uint8)
    ann[3, :6] = 1
    ann[3, 6:] = 2
    return vol, ann


def raises_one_line(exc_type, func, *args, match=None, **kwargs):
    with pytest.raises(exc_type, match=match) as info:
        func(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def test_error_shape_mismatch(small):
    vol, ann = small
    msg = raises_one_line(ShapeMismatchError, train_classifier, vol, ann[:, :, :-1])
    assert "(10, 12, 13)" in msg and "(10, 12, 14)" in msg


def test_error_unknown_classes(small):
    vol, ann = small
    ann[4, 0, 0] = 9
    ann[4, 0, 1] = 7
    msg = raises_one_line(ParameterError, train_classifier, vol, ann)
    assert "[7, 9]" in msg and "255" in msg


@pytest.mark.parametrize("case", ["one class", "nothing annotated", "empty slices"])
def test_error_too_few_classes(small, case):
    vol, ann = small
    slices = None
    if case == "one class":
        ann[3] = 2
    elif case == "nothing annotated":
        ann[:] = UNLABELLED
    else:
        slices = [0, 1]  # annotations only on slice 3
    raises_one_line(ParameterError, train_classifier, vol, ann, slices=slices)


@pytest.mark.parametrize("slices", [[3, 10], [-1, 3], [3, 2.5], []])
def test_error_slices(small, slices):
    vol, ann = small
    raises_one_line(ParameterError, train_classifier, vol, ann, slices=slices)


def test_error_constant_volume(small):
    _, ann = small
    msg = raises_one_line(ParameterError, train_classifier, np.full(ann.shape, 7, np.uint16),
                          ann)
    assert "constant" in msg and "7" in msg


def test_constants():
    assert KNOWN_CLASSES == (0, 1, 2, 3, 4, 5) and UNLABELLED == 255


def test_error_load(tmp_path):
    raises_one_line(InputNotFoundError, load_classifier, tmp_path / "missing.joblib")
    text = tmp_path / "notes.joblib"
    text.write_text("not a model\n")
    raises_one_line(CorruptFileError, load_classifier, text)
    other = tmp_path / "other.joblib"
    joblib.dump({"format": "something-else", "forest": None}, other)
    raises_one_line(CorruptFileError, load_classifier, other)
    listing = tmp_path / "list.joblib"
    joblib.dump([1, 2, 3], listing)
    raises_one_line(CorruptFileError, load_classifier, listing)
    broken = tmp_path / "broken.joblib"
    joblib.dump({"format": FORMAT, "format_version": 1, "classes": [1, 2], "sigmas": [1.0],
                 "scale": [0.0, 1.0], "params": {}, "forest": "no forest"}, broken)
    raises_one_line(CorruptFileError, load_classifier, broken)


def test_error_dimensions_and_parameters(small, model_t0):
    vol, ann = small
    clf, _ = model_t0
    raises_one_line(DimensionError, clf.predict, vol[0], progress=False)
    raises_one_line(DimensionError, clf.predict_proba, vol[None])
    raises_one_line(DimensionError, train_classifier, vol[0], ann[0])
    raises_one_line(ParameterError, clf.predict, vol, slab=0, progress=False)
    raises_one_line(ParameterError, pixel_features, vol, z_range=(5, 11))
    raises_one_line(ParameterError, pixel_features, vol, z_range=(5, 5))
    raises_one_line(ParameterError, pixel_features, vol, sigmas=(1.0, -2.0))
    raises_one_line(ParameterError, pixel_features, vol, scale=(3.0, 3.0))
    raises_one_line(ParameterError, train_classifier, vol, ann, n_estimators=0)
