"""Voxel size and origin (um) from the metadata of volume files; used by
:mod:`anodetwin.io.formats`.

Every function returns, next to the values, *notes*: one short sentence per value that was
assumed (``"z taken equal to x"``) or per piece of metadata that was found but could not be
used (``"found ImageJ spacing=-1.5 but ignored: not a positive number"``). The sources join
them into ``attrs["voxel_size_note"]``, log them and ``anodetwin inspect`` prints them, so
that nothing present in a file is dropped silently.

Sequences of 3 values (``voxel_size = [vz, vy, vx]``) are in the stored axis order of the
array; an :class:`~anodetwin.io._axes.AxisMap` given as ``order`` turns them into (z, y, x).
Values named by axis (NeXus ``x_pixel_size``, OME axes, OME-TIFF ``PhysicalSizeX``) are placed
by name.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np

from anodetwin.io.volume import VOXEL_SIZE_RANGE_UM

Triple = tuple[float, float, float]
ZERO: Triple = (0.0, 0.0, 0.0)

#: Plausible voxel sizes in um (0.1 nm to 10 cm); values outside are taken as a unit mistake.
VS_MIN_UM, VS_MAX_UM = VOXEL_SIZE_RANGE_UM

# Micrometres per length unit, in the spellings of ImageJ, NeXus, OME (UDUNITS) and TIFF;
# micro signs (U+00B5, U+03BC, ImageJ's escaped '\u00B5') are folded to 'u' first.
UNIT_TO_UM = {
    **dict.fromkeys(("um", "micron", "microns", "micrometer", "micrometers", "micrometre",
                     "micrometres"), 1.0),
    **dict.fromkeys(("nm", "nanometer", "nanometers", "nanometre", "nanometres"), 1e-3),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"), 1e3),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), 1e4),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), 1e6),
    **dict.fromkeys(("angstrom", "angstroms", "\u00e5", "\u212b", "\u00e5ngstr\u00f6m"), 1e-4),
    **dict.fromkeys(("pm", "picometer", "picometre"), 1e-6),
    **dict.fromkeys(("inch", "inches", "in"), 25400.0),
}


class Calibration(NamedTuple):
    """What a file says about its geometry.

    ``origin`` is in um, or in voxels when ``origin_voxels`` is True (a file without voxel
    size written by anodetwin); ``attrs`` holds ``provenance`` and ``voxel_size_note``.
    """

    voxel_size_um: Triple | None
    origin: Triple
    origin_voxels: bool
    attrs: dict


def text(value: Any) -> str | None:
    """A str from an attribute value.

    Parameters
    ----------
    value : object
        str, bytes (decoded as UTF-8), or a 0-d or 1-element array of either.

    Returns
    -------
    str or None
        The text; None for any other value.
    """
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", "replace")
    return str(value) if isinstance(value, (str, np.str_)) else None


def unit_scale(unit: Any) -> float | None:
    """Micrometres per ``unit`` (a length unit name), or None if it is not one.

    Parameters
    ----------
    unit : object
        Unit text (e.g. ``"nm"``, ``"micron"``, ``"\\u00B5m"``; case-insensitive).

    Returns
    -------
    float or None
        um per unit; None if ``unit`` is no known length unit.
    """
    t = text(unit)
    if t is None:
        return None
    t = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), t.strip())
    t = t.replace("\u00b5", "u").replace("\u03bc", "u").lower()
    return UNIT_TO_UM.get(t)


def numbers(value: Any) -> np.ndarray | None:
    """Float values of an attribute: a number, a sequence, or text holding them (JSON
    ``"[1.0, 0.5, 0.5]"``, ``"1.0 0.5 0.5"``, ``"1,0.5,0.5"``).

    Parameters
    ----------
    value : object
        The attribute value.

    Returns
    -------
    ndarray of float, shape (n,), or None
        The values, flattened; None if it holds no numbers.
    """
    t = text(value)
    if t is not None:
        try:
            value = json.loads(t)
        except ValueError:
            parts = [p for p in re.split(r"[\s,;()\[\]]+", t) if p]
            value = parts if parts else None
    try:
        arr = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return None
    return arr if arr.size else None


def show(value: Any) -> str:
    """Short text of an attribute value for a note.

    Parameters
    ----------
    value : object
        Text, number or array.

    Returns
    -------
    str
        Quoted text cut to 40 characters, or the first six numbers in brackets.
    """
    t = text(value)
    if t is not None:
        return repr(t) if len(t) <= 40 else repr(t[:37] + "...")
    try:
        arr = np.asarray(value).reshape(-1)
        return "[" + ", ".join(f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)
                               for v in arr[:6].tolist()) + ("]" if arr.size <= 6 else ", ...]")
    except (TypeError, ValueError):
        return repr(value)[:40]


def why_bad(v: float) -> str | None:
    """Why ``v`` is no usable voxel size, or None if it is one.

    Parameters
    ----------
    v : float
        Candidate voxel size, um.

    Returns
    -------
    str or None
        The reason (not finite, not positive, or outside ``VS_MIN_UM``-``VS_MAX_UM``);
        None for a plausible size.
    """
    if not np.isfinite(v):
        return f"{v:g} is not a finite number"
    if v <= 0:
        return f"{v:g} is not a positive number"
    if v < VS_MIN_UM or v > VS_MAX_UM:
        return (f"{v:g} um is implausible (outside {VS_MIN_UM:g}-{VS_MAX_UM:g} um; "
                "a value in another unit?)")
    return None


# --------------------------------------------------------------------------------------------
# key/value metadata (HDF5 and Zarr attributes, JSON sidecars, NeXus fields)


class Fields:
    """Metadata as ``(value, unit)`` per key; a mapping's unit of ``key`` is ``key_units`` /
    ``key_unit``, else the mapping's ``units``/``unit`` entry."""

    def __init__(self, meta: dict):
        self.meta = meta

    def keys(self) -> Iterable[str]:
        return list(self.meta)

    def get(self, key: str) -> tuple[Any, Any] | None:
        """Value and unit of ``key``.

        Parameters
        ----------
        key : str
            Metadata key.

        Returns
        -------
        tuple of (object, object) or None
            (value, unit or None); None if the key is absent.
        """
        if key not in self.meta:
            return None
        unit = next((self.meta[k] for k in (f"{key}_units", f"{key}_unit", "units", "unit")
                     if k in self.meta), None)
        return self.meta[key], unit


_VS_KEYS = ("voxel_size_um", "element_size_um", "voxel_size", "element_size", "pixel_size")
_SIZE_KEY = re.compile(r"^(?:voxel|element|pixel)_size(?:_(?P<unit>[^_]+))?$", re.IGNORECASE)


def size_keys(fields: Fields) -> list[tuple[str, float | None]]:
    """The voxel-size keys present, preferred first, each with the unit its name states.

    Parameters
    ----------
    fields : Fields
        The metadata.

    Returns
    -------
    list of tuple of (str, float or None)
        Key and um per unit of its name (``voxel_size_nm`` -> 1e-3; ``voxel_size`` ->
        None); keys naming an unknown unit are left out.
    """
    found = []
    for key in fields.keys():
        m = _SIZE_KEY.match(str(key))
        if not m:
            continue
        if m["unit"] is None:
            found.append((key, None))
        elif (s := unit_scale(m["unit"])) is not None:
            found.append((key, s))
    rank = {k: i for i, k in enumerate(_VS_KEYS)}
    return sorted(found, key=lambda t: (rank.get(t[0], len(rank)), str(t[0])))


def _unit_scales(key: str, key_scale: float | None, unit: Any,
                 n: int) -> tuple[np.ndarray | None, list[str], str | None]:
    """Um per stored unit for the ``n`` values of ``key``: from the unit attribute (one, or
    one per axis), else the key's own unit, else um (noted). Returns (scales, notes,
    why the unit cannot be used)."""
    units = None
    if unit is not None and text(unit) is None:
        try:
            units = list(np.asarray(unit, dtype=object).reshape(-1))
        except (TypeError, ValueError):
            units = None
        if units is not None and len(units) == 1:
            unit, units = units[0], None
    if units is not None and len(units) != n:
        return None, [], f"{len(units)} units {show(unit)} for {n} value(s)"
    if units is not None:
        scales = [unit_scale(u) for u in units]
        if None in scales:
            return None, [], f"units {show(unit)} are not all length units"
        return np.asarray(scales, float), [], None
    scale = unit_scale(unit) if units is None else None
    if scale is not None:
        named = _SIZE_KEY.match(key)
        notes = ([f"'{key}' taken in {text(unit)} as its unit attribute says, not in "
                  f"{named['unit'] if named and named['unit'] else 'the unit of its name'}"]
                 if key_scale is not None and scale != key_scale else [])
        return np.full(n, scale), notes, None
    if key_scale is not None:
        return np.full(n, key_scale), [], None
    what = f" ({show(unit)} is none)" if unit is not None and units is None else ""
    return np.full(n, 1.0), [f"'{key}' has no length unit{what}, um assumed"], None


def scaled_sizes(key: str, key_scale: float | None, value: Any,
                 unit: Any) -> tuple[np.ndarray | None, list[str]]:
    """Voxel size in um from ``key = value`` (1 or 3 values, stored order) with ``unit``.

    A bad z (first of 3 values) is replaced by x and noted; any other problem ignores the
    whole entry, noted as ``found ... but ignored: <why>``.

    Parameters
    ----------
    key : str
        The metadata key (named in the notes).
    key_scale : float or None
        um per unit stated by the key's name (see :func:`size_keys`).
    value : object
        Stored value: 1 or 3 numbers, stored axis order.
    unit : object
        Unit attribute: one unit, one per value, or None.

    Returns
    -------
    sizes : ndarray of float, shape (1,) or (3,), or None
        Voxel size in um; None when the entry is ignored.
    notes : list of str
        What was assumed or ignored.
    """
    found = f"found {key} = {show(value)}" + (f" ({show(unit)})" if unit is not None else "")
    arr = numbers(value)
    if arr is None:
        return None, [f"{found} but ignored: not numbers"]
    if arr.size not in (1, 3):
        return None, [f"{found} but ignored: {arr.size} values, need 1 or 3 (z, y, x)"]
    scales, notes, bad_unit = _unit_scales(key, key_scale, unit, arr.size)
    if bad_unit:
        return None, [f"{found} but ignored: {bad_unit}"]
    um = arr * scales
    bad = [why_bad(v) for v in um]
    if not any(bad):
        return um, notes
    if arr.size == 3 and bad[0] and not any(bad[1:]):
        um[0] = um[2]
        return um, notes + [f"{found} but z ignored: {bad[0]}; z taken equal to x"]
    return None, [f"{found} but ignored: {next(b for b in bad if b)}"]


def per_axis_sizes(fields: Fields) -> tuple[Triple | None, list[str]]:
    """Voxel size from NeXus-style ``x_pixel_size``/``y_pixel_size``/``z_pixel_size``.

    A missing or unusable y or z is taken equal to x (noted).

    Parameters
    ----------
    fields : Fields
        Metadata holding the per-axis keys and their units.

    Returns
    -------
    tuple of (tuple of 3 float or None, list of str)
        Size (z, y, x) in um, None without a usable x; and the notes.
    """
    entries = {ax: (f"{ax}_pixel_size", *item) for ax in "xyz"
               if (item := fields.get(f"{ax}_pixel_size")) is not None}
    per, notes = _sizes_per_axis(entries)
    return _zyx_from_x(per, notes,
                       lambda ax: f"{ax} voxel size taken equal to x (no usable {ax}_pixel_size)")


def _sizes_per_axis(entries: dict[str, tuple[str, Any, Any]], source: str = "",
                    need_one: bool = True) -> tuple[dict[str, float], list[str]]:
    """Sizes in um per axis from ``entries`` (axis -> (key, value, unit)) and the notes,
    ``found`` in them followed by ``source`` (e.g. ``"OME "``). With ``need_one`` an entry of
    several values is ignored (noted); without it its first value is taken."""
    per: dict[str, float] = {}
    notes: list[str] = []
    for ax, (key, value, unit) in entries.items():
        arr, n = scaled_sizes(key, None, value, unit)
        notes += [s.replace("found ", f"found {source}", 1) for s in n] if source else n
        if arr is not None and (arr.size == 1 or not need_one):
            per[ax] = float(arr[0])
        elif arr is not None:
            notes.append(f"found {key} with {arr.size} values but ignored: need 1")
    return per, notes


def _zyx_from_x(per: dict[str, float], notes: list[str],
                missing: Any) -> tuple[Triple | None, list[str]]:
    """(z, y, x) from per-axis sizes ``per`` (keys ``x``, ``y``, ``z``): None without x; a
    missing y or z taken equal to x, with the note ``missing(axis)``."""
    if "x" not in per:
        return None, notes
    for ax in "yz":
        if ax not in per:
            per[ax] = per["x"]
            notes.append(missing(ax))
    return (per["z"], per["y"], per["x"]), list(dict.fromkeys(notes))


def calibration(fields: Fields, order: Any = None) -> tuple[Triple | None, list[str]]:
    """Voxel size (z, y, x) in um from metadata fields, and the notes.

    Tries ``voxel_size_um``, ``element_size_um``, ``voxel_size``, ``element_size``,
    ``pixel_size`` and any ``voxel_size_<unit>`` key (1 or 3 values, stored axis order,
    permuted by ``order``), then NeXus ``x/y/z_pixel_size``.

    Parameters
    ----------
    fields : Fields
        The metadata.
    order : AxisMap, optional
        Maps stored-order triples onto (z, y, x); None: stored order is (z, y, x).

    Returns
    -------
    voxel_size : tuple of 3 float or None
        The first usable size, um; None if none is usable.
    notes : list of str
        What was assumed, or found but ignored (no duplicates).
    """
    notes: list[str] = []
    for key, key_scale in size_keys(fields):
        value, unit = fields.get(key)  # type: ignore[misc]
        arr, n = scaled_sizes(key, key_scale, value, unit)
        notes += n
        if arr is not None:
            arr = np.repeat(arr, 3) if arr.size == 1 else arr
            if order is not None:
                arr = np.asarray(order.permute3(arr))
            return (float(arr[0]), float(arr[1]), float(arr[2])), list(dict.fromkeys(notes))
    vs, n = per_axis_sizes(fields)
    return vs, list(dict.fromkeys(notes + n))


def is_anodetwin(meta: dict) -> bool:
    """True for metadata written by anodetwin (``axes = "zyx"`` and its provenance).

    Parameters
    ----------
    meta : dict
        Metadata mapping; ``provenance`` may be a dict or JSON text.

    Returns
    -------
    bool
        Whether ``axes`` is ``"zyx"`` and the provenance's ``tool`` is ``"anodetwin"``.
    """
    prov = _provenance(meta)
    return text(meta.get("axes")) == "zyx" and isinstance(prov, dict) \
        and prov.get("tool") == "anodetwin"


def _provenance(meta: dict) -> Any:
    """``meta["provenance"]``, decoded where it is JSON text (None where that text is not
    JSON)."""
    prov = meta.get("provenance")
    if isinstance(prov, (bytes, str)):
        try:
            prov = json.loads(prov)
        except ValueError:
            prov = None
    return prov


def origin(meta: dict, has_size: bool, order: Any = None) -> tuple[Triple, bool, list[str]]:
    """Origin from ``origin_um``, ``origin_voxels`` or ``origin`` (in the mapping's length
    unit), with whether it is in voxels, and notes; (0, 0, 0) um if there is none.

    Files written by anodetwin before ``origin_voxels`` existed stored the origin of a volume
    without voxel size, in voxels, as ``origin_um``; that is read as voxels.

    Parameters
    ----------
    meta : dict
        Metadata mapping.
    has_size : bool
        Whether a voxel size was found (decides how an old ``origin_um`` is read).
    order : AxisMap, optional
        Maps the stored-order triple onto (z, y, x).

    Returns
    -------
    origin : tuple of 3 float
        Centre of voxel (0, 0, 0), (z, y, x), um (or voxels).
    in_voxels : bool
        Whether ``origin`` is in voxels.
    notes : list of str
        An entry found but ignored (not 3 finite numbers).
    """
    if "origin_um" in meta:
        key, scale = "origin_um", 1.0
        voxels = not has_size and is_anodetwin(meta)
    elif "origin_voxels" in meta:
        key, scale, voxels = "origin_voxels", 1.0, True
    elif "origin" in meta:
        key, voxels = "origin", False
        unit = next((meta[k] for k in ("origin_units", "origin_unit", "units", "unit")
                     if k in meta and unit_scale(meta[k]) is not None), None)
        scale = 1.0 if unit is None else float(unit_scale(unit))  # type: ignore[arg-type]
    else:
        return ZERO, False, []
    arr = numbers(meta[key])
    if arr is None or arr.size != 3 or not np.all(np.isfinite(arr)):
        return ZERO, False, [f"found {key} = {show(meta[key])} but ignored: need 3 finite "
                             "numbers (z, y, x)"]
    arr = arr * scale
    if order is not None:
        arr = np.asarray(order.permute3(arr))
    return (float(arr[0]), float(arr[1]), float(arr[2])), voxels, []


def from_meta(meta: Any, extra: Fields | None = None, order: Any = None) -> Calibration:
    """Voxel size, origin and attrs (``provenance``, ``voxel_size_note``) from a metadata
    mapping (anodetwin metadata, a JSON sidecar, HDF5/Zarr attributes).

    ``extra`` is tried when ``meta`` holds no usable voxel size (e.g. NeXus fields beside an
    HDF5 dataset); ``order`` maps stored-order triples onto (z, y, x).

    Parameters
    ----------
    meta : mapping
        The metadata.
    extra : Fields, optional
        Fallback fields for the voxel size.
    order : AxisMap, optional
        Axis order of the stored array; None: (z, y, x).

    Returns
    -------
    Calibration
        Voxel size (z, y, x) in um or None, origin, whether it is in voxels, and attrs
        with the provenance, carried missing-data notes and ``voxel_size_note``.
    """
    meta = dict(meta)
    vs, notes = calibration(Fields(meta), order)
    if vs is None and extra is not None:
        vs, more = calibration(extra, order)
        notes += more
    org, voxels, more = origin(meta, vs is not None, order)
    notes += more
    attrs: dict[str, Any] = {}
    prov = _provenance(meta)
    if isinstance(prov, dict):
        attrs["provenance"] = prov
    for key in ("missing_chunks_note", "missing_data_note"):  # of the source converted from
        if text(meta.get(key)):
            attrs[key] = text(meta[key])
    stored = text(meta.get("voxel_size_note"))
    joined = list(dict.fromkeys(([stored] if stored else []) + notes))
    if joined:
        attrs["voxel_size_note"] = "; ".join(joined)
    return Calibration(vs, org, voxels, attrs)


# --------------------------------------------------------------------------------------------
# TIFF: ImageJ description, OME-XML, resolution tags


def imagej_calibration(ij: dict, page: Any, nz: int) -> tuple[Triple | None, Triple, list[str]]:
    """Voxel size and origin (um) from ImageJ's description, with the notes.

    x is in ``unit`` (or ``xunit``), y in ``yunit``, z in ``zunit`` (each defaulting to
    ``unit``); X/YResolution are pixels per unit, ``spacing`` the z step (ImageJ leaves it
    out when it is 1), ``xorigin``/``yorigin``/``zorigin`` the origin in pixels. A unit of
    ``pixel`` (or none) means uncalibrated.

    Parameters
    ----------
    ij : dict
        ImageJ metadata (``tifffile.TiffFile.imagej_metadata``).
    page : tifffile.TiffPage
        First page, holding the resolution tags.
    nz : int
        Number of slices (a single slice has no z spacing).

    Returns
    -------
    voxel_size : tuple of 3 float or None
        (z, y, x), um; None when uncalibrated or unusable.
    origin : tuple of 3 float
        Centre of the first voxel (z, y, x), um; zeros without a calibration.
    notes : list of str
        Assumptions made and entries ignored.
    """
    xunit = ij.get("xunit", ij.get("unit"))
    if xunit is None or 282 not in page.tags or \
            str(xunit).strip().lower() in ("", "pixel", "pixels", "px"):
        return None, ZERO, []
    ux = unit_scale(xunit)
    if ux is None:
        return None, ZERO, [f"found ImageJ unit={xunit!r} with a resolution but ignored: not a "
                            "length unit anodetwin knows (um, nm, mm, micron, ...)"]
    notes, scale = [], {"x": ux}
    for ax in "yz":
        s = unit_scale(ij[f"{ax}unit"]) if f"{ax}unit" in ij else ux
        if s is None:
            notes.append(f"found ImageJ {ax}unit={ij[f'{ax}unit']!r} but ignored: not a "
                         f"length unit, '{xunit}' assumed")
        scale[ax] = s or ux
    xres, yres = page.get_resolution()
    if not (xres > 0 and yres > 0):
        return None, ZERO, [f"found ImageJ unit={xunit!r} but ignored: resolution "
                            f"{xres:g}x{yres:g} is not positive"]
    vx, vy = ux / xres, scale["y"] / yres
    bad = why_bad(vx) or why_bad(vy)
    if bad:
        return None, ZERO, [f"found ImageJ unit={xunit!r} and resolution {xres:g}x{yres:g} "
                            f"but ignored: {bad}"]
    if "spacing" in ij:
        spacing = numbers(ij["spacing"])
        vz = float(spacing[0]) * scale["z"] if spacing is not None and spacing.size == 1 \
            else float("nan")
        bad = why_bad(vz) if spacing is not None and spacing.size == 1 else "not a number"
        if bad:
            vz = vx
            notes.append(f"found ImageJ spacing={ij['spacing']!r} but ignored: {bad}; z taken "
                         "equal to x")
    elif nz > 1:
        vz = scale["z"]
        notes.append(f"no 'spacing' in the ImageJ header, ImageJ's default of 1 "
                     f"{ij.get('zunit', xunit)} per slice assumed for z")
    else:
        vz = vx
        notes.append("z taken equal to x (a 2D image has no z spacing)")
    try:
        org = tuple(-float(ij.get(f"{ax}origin", 0.0)) * v
                    for ax, v in zip("zyx", (vz, vy, vx), strict=True))
    except (TypeError, ValueError):
        org = ZERO
    return (vz, vy, vx), org, notes  # type: ignore[return-value]


#: Resolutions (pixels per inch) that writers store by default: not a calibration.
DEFAULT_DPI = (1.0, 72.0, 96.0)


def resolution_calibration(page: Any) -> tuple[Triple | None, list[str]]:
    """Voxel size (um) from the TIFF ResolutionUnit (inch, cm; mm, um as tifffile writes
    them) and X/YResolution tags; z, which TIFF does not store, is taken equal to x.

    72 or 96 pixels per inch are writers' defaults: kept, but marked as assumed. Without a
    unit (ResolutionUnit NONE) there is no calibration.

    Parameters
    ----------
    page : tifffile.TiffPage
        The page with the resolution tags.

    Returns
    -------
    tuple of (tuple of 3 float or None, list of str)
        Voxel size (z, y, x) in um, or None without a usable resolution; and notes on
        what was assumed (always that z equals x) or ignored.
    """
    from tifffile import RESUNIT

    unit = page.tags.valueof(296)
    if unit is None or int(unit) not in (2, 3, 4, 5) or 282 not in page.tags:
        return None, []
    raw = page.get_resolution()
    xr, yr = page.get_resolution(RESUNIT.MICROMETER)  # pixels per um
    if 283 not in page.tags:
        yr, raw = xr, (raw[0], raw[0])
    if not (xr > 0 and yr > 0):
        return None, [f"found TIFF resolution {raw[0]:g}x{raw[1]:g} per "
                      f"{RESUNIT(int(unit)).name.lower()} but ignored: not positive"]
    vs = (1.0 / xr, 1.0 / yr, 1.0 / xr)
    bad = next((b for b in map(why_bad, vs) if b), None)
    if bad:
        return None, [f"found TIFF resolution {raw[0]:g}x{raw[1]:g} per "
                      f"{RESUNIT(int(unit)).name.lower()} but ignored: {bad}"]
    notes = []
    if raw[0] == raw[1] and ((int(unit) == 2 and float(raw[0]) in DEFAULT_DPI)
                             or (int(unit) == 3 and float(raw[0]) == 1.0)):
        per = "dpi" if int(unit) == 2 else "pixel per cm"
        notes.append(f"x and y from a resolution of {raw[0]:g} {per}, a common writer default "
                     "rather than a calibration, assumed")
    return vs, notes + ["z taken equal to x (TIFF resolution tags give x and y only)"]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def ome_tiff_calibration(xml: str, index: int) -> tuple[Triple | None, list[str]]:
    """Voxel size of an OME-XML image from ``PhysicalSizeX/Y/Z``.

    Each size is in its ``PhysicalSize*Unit`` (default um); a missing or unusable Y or Z
    is taken equal to X (noted).

    Parameters
    ----------
    xml : str
        The OME-XML description.
    index : int
        Index of the ``Image`` element (the TIFF series).

    Returns
    -------
    voxel_size : tuple of 3 float or None
        (z, y, x) in um; None without a usable PhysicalSizeX (or invalid XML).
    notes : list of str
        Assumptions and ignored entries.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        return None, [f"found OME-XML but ignored: not valid XML ({exc})"]
    images = [el for el in root.iter() if _local(el.tag) == "Image"]
    pixels = next((el for el in images[index] if _local(el.tag) == "Pixels"), None) \
        if index < len(images) else None
    if pixels is None:
        return None, []
    entries = {ax.lower(): (f"PhysicalSize{ax}", value,
                            pixels.get(f"PhysicalSize{ax}Unit", "\u00b5m"))
               for ax in "XYZ" if (value := pixels.get(f"PhysicalSize{ax}")) is not None}
    per, notes = _sizes_per_axis(entries, source="OME ", need_one=False)
    return _zyx_from_x(per, notes,
                       lambda ax: f"{ax} taken equal to x (no usable OME PhysicalSize{ax.upper()})")


# --------------------------------------------------------------------------------------------
# OME-Zarr


def multiscales(attrs: dict) -> list:
    """The OME-Zarr ``multiscales`` list of a group's attributes.

    Parameters
    ----------
    attrs : dict
        Group attributes (v0.4, or v0.5 with the metadata under ``"ome"``).

    Returns
    -------
    list of dict
        The multiscale entries that are mappings; empty if there are none.
    """
    ome = attrs.get("ome")
    ms = attrs.get("multiscales", ome.get("multiscales") if isinstance(ome, dict) else None)
    return [m for m in ms if isinstance(m, dict)] if isinstance(ms, list) else []


def ome_entry(attrs: dict, name: str) -> tuple[dict, dict] | None:
    """Find the OME-Zarr entry of one array of a group.

    Parameters
    ----------
    attrs : dict
        The group's attributes.
    name : str
        Path of the array within the group, without leading or trailing slashes.

    Returns
    -------
    tuple of (dict, dict) or None
        (multiscale, dataset entry) of the array; None if no multiscale lists it.
    """
    for ms in multiscales(attrs):
        entry = next((d for d in ms.get("datasets") or [] if isinstance(d, dict)
                      and str(d.get("path", "")).strip("/") == name), None)
        if entry is not None:
            return ms, entry
    return None


def _ome_transforms(ms: dict, entry: dict, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Scale and translation per stored axis: the dataset's transformations, then the
    multiscale's."""
    scale, trans = np.ones(ndim), np.zeros(ndim)
    for tf in [*(entry.get("coordinateTransformations") or []),
               *(ms.get("coordinateTransformations") or [])]:
        if tf.get("type") == "scale":
            s = np.asarray(tf["scale"], dtype=float).reshape(ndim)
            scale, trans = scale * s, trans * s
        elif tf.get("type") == "translation":
            trans = trans + np.asarray(tf["translation"], dtype=float).reshape(ndim)
    return scale, trans


def ome_calibration(attrs: dict, name: str, order: Any) -> tuple[Triple | None, Triple,
                                                                 list[str]]:
    """Voxel size and origin (um) of array ``name`` of an OME-Zarr multiscale image.

    The dataset's ``scale``/``translation`` transformations are applied, then the
    multiscale's; each of the z, y, x axes (found through ``order``, an AxisMap over the
    stored axes) is in its ``unit`` (none: um, noted; not a length: ignored, noted).

    Parameters
    ----------
    attrs : dict
        Attributes of the array's parent group.
    name : str
        Path of the array within that group.
    order : AxisMap
        Which stored axis is z, y, x.

    Returns
    -------
    voxel_size : tuple of 3 float or None
        (z, y, x), um; None when the array is not in a multiscale or its metadata is
        unusable.
    origin : tuple of 3 float
        Translation of the first voxel (z, y, x), um.
    notes : list of str
        Assumed units and ignored metadata.
    """
    found = ome_entry(attrs, name)
    if found is None:
        return None, ZERO, []
    ms, entry = found
    ndim = len(order.stored_shape)
    try:
        scale, trans = _ome_transforms(ms, entry, ndim)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return None, ZERO, [f"found OME-Zarr coordinateTransformations of '{name}' but "
                            f"ignored: not {ndim} numbers per transformation ({exc})"]
    axes = list(ms.get("axes") or [])
    axes = axes if len(axes) == ndim else [{}] * ndim
    units, notes = [], []
    for k in order.stored_axes():
        ax = axes[k] if isinstance(axes[k], dict) else {"name": axes[k]}
        unit = ax.get("unit")
        if unit is None:
            notes.append(f"OME-Zarr axis '{ax.get('name', '?')}' has no unit, um assumed")
        elif unit_scale(unit) is None:
            return None, ZERO, [f"found OME-Zarr axis '{ax.get('name', '?')}' unit "
                                f"{unit!r} but ignored: not a length unit"]
        units.append(1.0 if unit is None else unit_scale(unit))
    vs = np.asarray([scale[k] for k in order.stored_axes()]) * units
    org = np.asarray([trans[k] for k in order.stored_axes()]) * units
    bad = next((b for b in map(why_bad, vs) if b), None)
    if bad or not np.all(np.isfinite(org)):
        return None, ZERO, [f"found OME-Zarr scale of '{name}' but ignored: "
                            f"{bad or 'translation not finite'}"]
    return tuple(map(float, vs)), tuple(map(float, org)), notes  # type: ignore[return-value]
