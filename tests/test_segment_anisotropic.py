"""Segmentation on anisotropic voxels: every physical quantity uses the (z, y, x) voxel size.

Truths are computed by hand from the geometry of synthetic scenes laid on a grid of voxels
(0.4, 0.2, 0.1) um (z, y, x): box volumes, centroids and marching-cubes areas, sphere
volumes, blurred-edge widths, interface windows and tracked motions in um.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy import ndimage
from scipy.special import erf

from anodetwin.io import Volume
from anodetwin.phases import PHASE
from anodetwin.segment.particles import label_particles, particle_table

VS = (0.4, 0.2, 0.1)  # um, (z, y, x)
FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))


def _coords(extent_um, vs):
    """Physical voxel-centre coordinates (um) of a grid covering ``extent_um`` (z, y, x)."""
    n = np.round(np.asarray(extent_um, float) / np.asarray(vs)).astype(int)
    axes = [(np.arange(k) + 0.5) * v for k, v in zip(n, vs, strict=True)]
    return np.meshgrid(*axes, indexing="ij")


def _spheres(extent_um, vs, centres, radius):
    """Mask of spheres of ``radius`` (um) at physical ``centres`` (um, z y x)."""
    z, y, x = _coords(extent_um, vs)
    m = np.zeros(z.shape, bool)
    for c in centres:
        m |= (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < radius**2
    return m


def _box_area(n, vs):
    """Marching-cubes area (level 0.5) of a solid box of ``n`` (z, y, x) voxels: flat faces
    through the outer voxel centres +- half a voxel, chamfers of half a voxel along the 12
    edges, corner triangles with legs of half a voxel."""
    a, b, c = [(k - 1) * v for k, v in zip(n, vs, strict=True)]
    vz, vy, vx = vs
    faces = 2 * (a * b + a * c + b * c)
    edges = 2 * (c * np.hypot(vz, vy) + b * np.hypot(vz, vx) + a * np.hypot(vy, vx))
    hz, hy, hx = 0.5 * vz, 0.5 * vy, 0.5 * vx
    corners = 8 * 0.5 * np.sqrt((hz * hy) ** 2 + (hy * hx) ** 2 + (hz * hx) ** 2)
    return faces + edges + corners


def test_box_table_uses_the_voxel_size_of_each_axis():
    n = (5, 10, 20)  # a 2 x 2 x 2 um cube on the (0.4, 0.2, 0.1) um grid
    lab = np.zeros((12, 20, 36), np.int32)
    lab[3:8, 4:14, 7:27] = 1
    t = particle_table(lab, VS, collector_z=0.5)
    assert len(t) == 1
    assert t["volume_um3"][0] == pytest.approx(8.0)
    assert t["equivalent_diameter_um"][0] == pytest.approx((6 * 8.0 / np.pi) ** (1 / 3))
    # centroid: voxel index of the box centre times the axis's voxel size
    assert t["centroid_z_um"][0] == pytest.approx(5.0 * 0.4)
    assert t["centroid_y_um"][0] == pytest.approx(8.5 * 0.2)
    assert t["centroid_x_um"][0] == pytest.approx(16.5 * 0.1)
    assert t["distance_to_collector_um"][0] == pytest.approx((5.0 - 0.5) * 0.4)
    assert t["surface_um2"][0] == pytest.approx(_box_area(n, VS), rel=1e-9)
    # one value is still isotropic
    iso = particle_table(lab, 0.4)
    assert iso["volume_um3"][0] == pytest.approx(5 * 10 * 20 * 0.4**3)


def test_physical_sphere_is_one_particle_with_its_volume():
    r = 2.4
    m = _spheres((8, 8, 8), VS, [(4, 4, 4)], r)  # an ellipsoid of 12 x 24 x 48 voxels
    lab = label_particles(m, voxel_size_um=VS)
    assert lab.max() == 1
    t = particle_table(lab, VS)
    assert t["volume_um3"][0] == pytest.approx(4 / 3 * np.pi * r**3, rel=0.02)
    assert t["equivalent_diameter_um"][0] == pytest.approx(2 * r, rel=0.01)
    for ax, v in zip("zyx", VS, strict=True):  # from the first voxel centre (v / 2 in)
        assert t[f"centroid_{ax}_um"][0] == pytest.approx(4.0 - v / 2, abs=0.03)
    # marching cubes of a binary staircase overestimates a curved surface (here by 18%,
    # 8% on a 0.1 um isotropic grid): a loose check; the box test checks the area exactly
    assert 1.0 < t["surface_um2"][0] / (4 * np.pi * r**2) < 1.25


def test_watershed_splits_spheres_stacked_along_the_coarse_axis():
    # two spheres (r 2.4 um) 1.2 r apart along z: a neck of radius 0.8 r between them in
    # physical space (a saddle 0.48 um below the centres), but in voxels the neck (0.8 x 12
    # voxels along y) is wider than the z half-axis (6 voxels), so a distance map in voxels
    # peaks at the neck and merges them
    r, d = 2.4, 1.2 * 2.4
    m = _spheres((10, 8, 8), VS, [(5 - d / 2, 4, 4), (5 + d / 2, 4, 4)], r)
    lab = label_particles(m, voxel_size_um=VS)
    assert lab.max() == 2
    t = np.sort(particle_table(lab, VS), order="centroid_z_um")
    # each piece: a sphere less the cap beyond the neck plane (cap height hc)
    hc = r - d / 2
    v_cap = np.pi * hc**2 * (3 * r - hc) / 3
    z_cap = 3 * (2 * r - hc) ** 2 / (4 * (3 * r - hc))  # cap centroid from the centre
    v_piece = 4 / 3 * np.pi * r**3 - v_cap
    shift = v_cap * z_cap / v_piece  # the piece's centroid moves away from the neck
    want = np.array([5 - d / 2 - shift, 5 + d / 2 + shift]) - VS[0] / 2  # from voxel 0
    assert t["centroid_z_um"] == pytest.approx(want, abs=0.06)
    assert t["volume_um3"] == pytest.approx([v_piece, v_piece], rel=0.03)


def test_isotropic_resampling_gives_the_same_physical_numbers():
    centres, r = [(3.0, 3.0, 3.0), (5.4, 5.6, 5.2)], 1.5
    tables = []
    for vs in (VS, (0.1, 0.1, 0.1)):
        m = _spheres((8, 8, 8), vs, centres, r)
        z, y, x = _coords((8, 8, 8), vs)
        m |= (z > 0.8) & (z < 2.0) & (y > 5.0) & (y < 7.0) & (x > 0.5) & (x < 2.5)
        t = particle_table(label_particles(m, voxel_size_um=vs), vs)
        for ax, v in zip("zyx", vs, strict=True):  # table: from the first voxel centre
            t[f"centroid_{ax}_um"] += 0.5 * v  # scene frame: from the grid corner
        tables.append(t)
    a, b = (np.sort(t, order="centroid_x_um") for t in tables)
    assert len(a) == len(b) == 3
    for key in ("centroid_z_um", "centroid_y_um", "centroid_x_um"):
        assert a[key] == pytest.approx(b[key], abs=0.03)
    assert a["centroid_z_um"][1:] == pytest.approx([3.0, 5.4], abs=0.03)
    assert a["volume_um3"] == pytest.approx(b["volume_um3"], rel=0.05)
    assert a["equivalent_diameter_um"] == pytest.approx(b["equivalent_diameter_um"], rel=0.02)
    assert a["surface_um2"] == pytest.approx(b["surface_um2"], rel=0.06)
    box = a[np.argmin(a["centroid_x_um"])]
    assert box["volume_um3"] == pytest.approx(1.2 * 2.0 * 2.0)


def test_edge_resolution_in_um_whatever_the_edge_direction():
    from anodetwin.segment.resolution import edge_resolution

    sigma, radius = 0.3, 2.6  # um: Gaussian blur of a sphere's edge
    z, y, x = _coords((10, 8, 8), VS)
    rho = np.sqrt((z - 5) ** 2 + (y - 4) ** 2 + (x - 4) ** 2)
    grey = 0.5 * (1 - erf((rho - radius) / (np.sqrt(2) * sigma)))
    res = edge_resolution(grey, rho < radius, VS)
    assert res.fwhm_um == pytest.approx(FWHM * sigma, rel=0.03)
    assert res.fwhm_voxels == pytest.approx(FWHM * sigma / min(VS), rel=0.03)


def _tomogram(extent_um, vs, si, seed=0):
    """Grey values: copper foil below z = 1.2 um (1.0), ``si`` mask (0.6), matrix (0.3),
    blurred by 0.2 um and with a little noise."""
    z = _coords(extent_um, vs)[0]
    g = np.full(z.shape, 0.3)
    g[si] = 0.6
    g[z < 1.2] = 1.0
    g = ndimage.gaussian_filter(g, [0.2 / v for v in vs])
    return (g + np.random.default_rng(seed).normal(0, 0.01, g.shape)).astype(np.float32)


def test_segment_volume_stores_and_uses_the_voxel_size_triple(tmp_path):
    from anodetwin.segment.pipeline import read_labels, segment_volume, write_labels

    r = 1.5
    centres = [(3.5, 2.5, 2.5), (3.5, 5.5, 5.5), (6.5, 2.5, 5.8)]
    si = _spheres((12, 8, 8), VS, centres, r)
    seg = segment_volume(Volume(_tomogram((12, 8, 8), VS, si), VS), progress=False)
    assert seg.voxel_size_um == VS
    assert seg.collector_face == "low"
    t = np.sort(seg.table, order="centroid_z_um")
    assert len(t) == 3
    assert t["volume_um3"] == pytest.approx([4 / 3 * np.pi * r**3] * 3, rel=0.08)
    assert t["equivalent_diameter_um"] == pytest.approx([2 * r] * 3, rel=0.03)
    got = np.stack([t["centroid_z_um"], t["centroid_y_um"], t["centroid_x_um"]], axis=1)
    # centroids are voxel indices times the voxel size (0: the first voxel centre, which
    # lies half a voxel inside the scene's corner)
    want = np.array(centres)[np.lexsort(np.array(centres).T[::-1])] - 0.5 * np.array(VS)
    got = got[np.lexsort(got.T[::-1])]
    assert got == pytest.approx(want, abs=0.1)
    # height of the lowest centres (3.5 um in the scene) above the foil top (1.2 um)
    low = t[0]
    assert low["distance_to_collector_um"] == pytest.approx(3.5 - 1.2, abs=0.15)
    assert seg.resolution_fwhm_um == pytest.approx(FWHM * 0.2, rel=0.3)
    write_labels(tmp_path / "lab.h5", seg)
    with h5py.File(tmp_path / "lab.h5") as f:
        assert tuple(f.attrs["voxel_size_um"]) == pytest.approx(VS)
        assert tuple(f["phases"].attrs["element_size_um"]) == pytest.approx(VS)
        assert tuple(f["particles"].attrs["element_size_um"]) == pytest.approx(VS)
    assert read_labels(tmp_path / "lab.h5").voxel_size_um == pytest.approx(VS)


def test_surface_window_is_converted_per_lateral_axis():
    from anodetwin.segment.phases import segment_phases

    si = np.zeros((20, 40, 80), bool)  # 8 x 8 x 8 um
    si[3:8] = True  # Si layer from 1.2 to 3.2 um (voxel faces), on the foil
    si[3:15, 18:23, 36:45] = True  # a pillar up to 6.0 um, 1.0 um (y) by 0.9 um (x)
    ps = segment_phases(_tomogram((8, 8, 8), VS, si), voxel_size_um=VS,
                        surface_window_um=2.2)
    sep_um = ps.separator_z * VS[0]  # um above the first voxel centre
    layer, top = sep_um[2, 2], sep_um[20, 40]
    assert top == pytest.approx(6.0 - 0.2) and layer == pytest.approx(3.2 - 0.2)
    # the envelope reaches 1.0 um (of a 2.2 um window) beyond the pillar along y and x:
    # 5 voxels of 0.2 um along y, 10 voxels of 0.1 um along x
    assert sep_um[22 + 4, 40] == top and sep_um[22 + 7, 40] == layer  # 0.8, 1.4 um
    assert sep_um[18 - 4, 40] == top and sep_um[18 - 7, 40] == layer
    assert sep_um[20, 44 + 8] == top and sep_um[20, 44 + 13] == layer  # 0.8, 1.3 um
    assert sep_um[20, 36 - 8] == top and sep_um[20, 36 - 13] == layer


def _step(vs, si_boxes, separator_z):
    """A Segmentation with Si boxes (particles 1..n) between a foil top at z = 2.5 voxels
    and a flat separator interface at ``separator_z`` (voxels)."""
    from anodetwin.segment.pipeline import Segmentation

    shape = (30, 20, 50)
    ph = np.full(shape, PHASE["cbd"], np.uint8)
    ph[:3] = PHASE["copper"]
    pa = np.zeros(shape, np.int32)
    for i, sl in enumerate(si_boxes, 1):
        ph[sl], pa[sl] = PHASE["si"], i
    col, sep = np.full(shape[1:], 2.5), np.full(shape[1:], float(separator_z))
    return Segmentation(ph, pa, particle_table(pa, vs, col), col, sep, vs,
                        collector_face="low")


def test_morphology_volumes_thickness_and_tracks_in_um(tmp_path):
    from anodetwin.segment.morphology import series_morphology, write_morphology

    big0 = np.s_[5:10, 2:12, 5:25]  # 5 x 10 x 20 voxels = 2 x 2 x 2 um = 8 um3
    big1 = np.s_[5:10, 2:12, 5:15]  # shrinks to 4 um3
    small0 = np.s_[12:14, 14:18, 28:36]  # 2 x 4 x 8 voxels = 0.8 um cube = 0.512 um3
    small1 = np.s_[12:14, 14:18, 38:46]  # moved 1.0 um (10 voxels) along x: no overlap
    steps = [_step(VS, [big0, small0], 22.5), _step(VS, [big1, small1], 27.5)]
    m = series_morphology(steps, prior="none")
    assert m.voxel_size_um == VS
    assert [r["thickness_mean_um"] for r in m.steps] == pytest.approx([8.0, 10.0])
    assert [r["si_volume_um3"] for r in m.steps] == pytest.approx([8.512, 4.512])
    assert m.steps[1]["rnl"] == pytest.approx(4.512 / 8.512)
    assert np.nanmean(m.thickness_maps[1]) == pytest.approx(10.0)
    t = m.tracks.table
    assert m.tracks.n_tracks == 2  # the small particle is linked by its centroid (1 um away)
    big = np.sort(t[t["particle"] == 1], order="step")
    assert big["volume_um3"] == pytest.approx([8.0, 4.0])
    assert big["centroid_x_um"] == pytest.approx([14.5 * 0.1, 9.5 * 0.1])
    small = np.sort(t[t["particle"] == 2], order="step")
    assert small["volume_um3"] == pytest.approx([0.512, 0.512])
    assert small["track"][0] == small["track"][1]
    assert small["displacement_x_um"][1] == pytest.approx(1.0)
    assert small["displacement_z_um"][1] == pytest.approx(0.0)
    write_morphology(tmp_path / "m", m)
    with h5py.File(tmp_path / "m" / "thickness.h5") as f:
        assert tuple(f.attrs["voxel_size_um"]) == pytest.approx(VS)
    # an explicit voxel size re-measures the particles too
    iso = series_morphology(steps, prior="none", voxel_size_um=0.2)
    assert iso.tables[0]["volume_um3"][0] == pytest.approx(5 * 10 * 20 * 0.2**3)
