"""Synthetic electrode microstructures: copper foil, packed Si particles, carbon-binder
domain (CBD), pores and a porous separator, with exact phase and particle labels.

Grid: (z, y, x) voxels of ``geometry.voxel_size_um``; z = 0 is the copper side. Layers from
z = 0: copper foil, anode coating (composition thickness), separator (its thickness plus the
headroom the swelling electrode will push it into).

Particles: volume-equivalent diameters from a truncated log-normal distribution, placed
largest first by random sequential addition into free space (an exact distance map to the
placed spheres and the layer faces, on a grid of about 0.4 um, updated around each new
sphere) where a new particle may reach into its neighbours by up to ``max_overlap`` of its
radius (calendered contacts), until the Si volume fraction of the coating is reached. Shapes: spheres, randomly oriented ellipsoids, or irregular bodies (an
ellipsoid whose radius is modulated by a smooth random function of direction). Where two
bodies overlap, each voxel goes to the particle whose surface is relatively farther (smaller
normalised distance), so touching particles share a flat contact face.

CBD: the pore voxels with the highest score ``S * exp(-d / l)``, with S the local Si density
(Gaussian of the Si mask, width ~ 0.6 um) and d the distance to Si, up to the CBD volume
fraction: this puts CBD at necks between particles first, then as a coating.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from anodetwin.errors import NumericalError
from anodetwin.log import get_logger
from anodetwin.phases import PHASE
from anodetwin.phantom.composition import Composition, electrode_composition
from anodetwin.phantom.config import PhantomConfig
from anodetwin.segment.particles import touching_pairs

__all__ = ["PHASE", "PARTICLE_DTYPE", "Layers", "Microstructure", "layers_for",
           "make_microstructure", "phantom_particle_table", "normalised_distance"]

log = get_logger("phantom")


#: Row layout of the particle table (lengths in um, volumes in um3).
PARTICLE_DTYPE = np.dtype([("id", "i4"), ("centroid_z_um", "f8"), ("centroid_y_um", "f8"),
                           ("centroid_x_um", "f8"), ("volume_um3", "f8"),
                           ("equivalent_diameter_um", "f8"), ("touching", "i4"),
                           ("distance_to_collector_um", "f8"), ("cracked", "?")])


@dataclass(frozen=True)
class Layers:
    """Layer bounds of a phantom grid: the z ranges of the copper foil, the anode coating
    and the separator, and the grid they divide.

    Attributes
    ----------
    shape : (int, int, int)
        Grid shape (z, y, x).
    voxel_size_um : float
        Isotropic voxel edge (um).
    cu, anode, separator : (int, int)
        z range of the copper foil, the anode coating and the separator with its headroom
        (voxels; z0 inclusive, z1 exclusive).
    """

    shape: tuple[int, int, int]
    voxel_size_um: float
    cu: tuple[int, int]
    anode: tuple[int, int]
    separator: tuple[int, int]


@dataclass
class Microstructure:
    """Labels of the pristine electrode (T0): the truth the phantom series starts from.

    Attributes
    ----------
    phases : numpy.ndarray of uint8, shape (nz, ny, nx)
        The phase code of each voxel (:data:`anodetwin.phases.PHASE`).
    particles : numpy.ndarray of int32, shape (nz, ny, nx)
        Particle instance ids (0 = none).
    table : numpy.ndarray
        Structured particle table (:data:`PARTICLE_DTYPE`, :func:`phantom_particle_table`).
    layers : Layers
        Layer bounds (voxels) and the isotropic voxel edge.
    composition : Composition
        Volume fractions and capacities of the coating.
    shape_params : dict
        Per-particle geometry (centre, axes, rotation, roughness coefficients) used to
        rasterise the bodies; needed for lithiation fronts.
    """

    phases: np.ndarray
    particles: np.ndarray
    table: np.ndarray
    layers: Layers
    composition: Composition
    shape_params: dict

    @property
    def voxel_size_um(self) -> float:
        """Isotropic voxel edge (um) of the phantom grid (a phantom's voxels are cubes)."""
        return self.layers.voxel_size_um


def layers_for(cfg: PhantomConfig, comp: Composition | None = None) -> Layers:
    """Grid shape and layer bounds for a configuration.

    Parameters
    ----------
    cfg : PhantomConfig
        The phantom configuration (geometry, coating thickness, swelling for the headroom).
    comp : Composition, optional
        The coating's composition (default: computed from ``cfg.composition``).

    Returns
    -------
    Layers
    """
    g = cfg.geometry
    comp = comp or electrode_composition(cfg.composition)
    v = g.voxel_size_um
    n_xy = int(round(g.lateral_um / v))
    n_cu = int(round(g.cu_thickness_um / v))
    n_an = int(round(cfg.composition.thickness_um / v))
    n_sep = int(round(g.separator_thickness_um / v))
    if g.headroom_um == "auto":
        smax = max(cfg.socs())
        grow = cfg.series.beta * smax * comp.si_utilisation * comp.si_fraction \
            * (1 - cfg.series.pore_absorption)
        n_head = int(np.ceil(1.15 * grow * n_an)) + 2
    else:
        n_head = int(round(float(g.headroom_um) / v))
    nz = n_cu + n_an + n_sep + n_head
    return Layers((nz, n_xy, n_xy), v, (0, n_cu), (n_cu, n_cu + n_an), (n_cu + n_an, nz))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _sample_diameters(cfg: PhantomConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` volume-equivalent diameters (um) from the truncated log-normal distribution."""
    p = cfg.particles
    out = np.zeros(0)
    while out.size < n:
        d = np.exp(np.log(p.median_diameter_um) + p.sigma_ln * rng.standard_normal(2 * n + 16))
        out = np.concatenate([out, d[(d >= p.min_diameter_um) & (d <= p.max_diameter_um)]])
    return out[:n]


def _diameter_stream(cfg: PhantomConfig, target_um3: float, rng: np.random.Generator):
    """Diameters to place: first a sample whose volume matches the target (+10% for contacts
    and the cut at the lateral faces), largest first; then more draws from the same
    distribution for as long as the packing asks for them."""
    first: list[float] = []
    total = 0.0
    while total < 1.1 * target_um3:
        d = float(_sample_diameters(cfg, rng, 1)[0])
        first.append(d)
        total += np.pi / 6 * d**3
    yield from sorted(first, reverse=True)
    while True:
        yield float(_sample_diameters(cfg, rng, 1)[0])


def _body_params(cfg: PhantomConfig, centre: np.ndarray, radius: float,
                 rng: np.random.Generator) -> dict:
    """Rotation, semi-axes (um) and roughness modes of one particle."""
    p = cfg.particles
    if p.shape == "sphere":
        axes = np.full(3, radius)
        rot = np.eye(3)
    else:
        f = np.exp(rng.uniform(-p.aspect_spread, p.aspect_spread, 3))
        f /= np.cbrt(np.prod(f))  # same volume as the sphere
        axes = radius * f
        rot = _random_rotation(rng)
    modes = np.zeros((0, 4))
    if p.shape == "irregular" and p.roughness > 0:
        k = 6
        dirs = rng.normal(size=(k, 3))
        freq = rng.uniform(1.5, 3.5, k)
        dirs *= (freq / np.linalg.norm(dirs, axis=1))[:, None]
        phase = rng.uniform(0, 2 * np.pi, k)
        modes = np.column_stack([dirs, phase])
    return {"centre": centre, "axes": axes, "rot": rot, "modes": modes,
            "roughness": p.roughness if p.shape == "irregular" else 0.0}


def normalised_distance(params: dict, zyx_um: np.ndarray) -> np.ndarray:
    """Normalised distance of points from a particle body (< 1 inside, 1 on the surface).

    Parameters
    ----------
    params : dict
        Body geometry (``centre``, ``rot``, ``axes``, ``modes``, ``roughness``; um) of
        :attr:`Microstructure.shape_params`.
    zyx_um : numpy.ndarray, shape (..., 3)
        Points (z, y, x; um).

    Returns
    -------
    numpy.ndarray, shape (...)
        The ellipsoidal radius of each point over the body's (rough) surface radius.
    """
    d = zyx_um - params["centre"]
    local = d @ params["rot"]
    q = np.sqrt(np.sum((local / params["axes"]) ** 2, axis=-1))
    if params["roughness"] and len(params["modes"]):
        n = local / np.maximum(np.linalg.norm(local, axis=-1, keepdims=True), 1e-12)
        m = params["modes"]
        f = np.cos(n @ m[:, :3].T + m[:, 3]).sum(axis=-1) / np.sqrt(len(m) / 2.0)
        q = q / (1.0 + params["roughness"] * np.tanh(f))
    return q


def _bbox(params: dict, v: float, shape: tuple[int, int, int]) -> tuple[slice, ...]:
    reach = float(params["axes"].max()) * (1 + params["roughness"]) + v
    c = params["centre"] / v
    r = reach / v
    return tuple(slice(max(0, int(np.floor(ci - r))), min(n, int(np.ceil(ci + r)) + 1))
                 for ci, n in zip(c, shape, strict=True))


def _grid_um(sl: tuple[slice, ...], v: float) -> np.ndarray:
    z, y, x = (np.arange(s.start, s.stop) * v for s in sl)
    return np.stack(np.meshgrid(z, y, x, indexing="ij"), axis=-1)


def _place_particles(cfg: PhantomConfig, layers: Layers, comp: Composition,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    v = layers.voxel_size_um
    nz, ny, nx = layers.shape
    a0, a1 = layers.anode
    layer_um3 = (a1 - a0) * ny * nx * v**3
    target_vox = comp.si_fraction * (a1 - a0) * ny * nx
    diameters = _diameter_stream(cfg, comp.si_fraction * layer_um3, rng)
    # free space on a coarse grid (~0.4 um): distance (um) from each grid point to the
    # nearest placed sphere or to the copper / separator planes, capped at the largest
    # radius and updated exactly around each new sphere
    p = cfg.particles
    h = max(v, min(0.5, p.min_diameter_um / 4))
    cap = p.max_diameter_um / 2
    gz = a0 * v + (np.arange(int(np.ceil((a1 - a0) * v / h))) + 0.5) * h
    gy = (np.arange(int(np.ceil(ny * v / h))) + 0.5) * h
    gx = (np.arange(int(np.ceil(nx * v / h))) + 0.5) * h
    wall = np.minimum(gz - a0 * v, a1 * v - gz)
    free = np.broadcast_to(np.minimum(wall, cap)[:, None, None],
                           (len(gz), len(gy), len(gx))).astype(np.float32)
    labels = np.zeros(layers.shape, np.int32)
    best = np.full(layers.shape, np.inf, np.float32)
    params: dict[int, dict] = {}
    si_vox = 0
    ov = p.max_overlap
    pid = 0
    misses = 0
    for d in diameters:
        if si_vox >= target_vox or misses > 200:
            break
        r = d / 2
        need = min(r * (1 - ov), cap)
        cand = np.flatnonzero(free.ravel() >= need)
        if cand.size == 0:
            misses += 1
            continue
        misses = 0
        k = np.unravel_index(cand[rng.integers(cand.size)], free.shape)
        c = np.array([gz[k[0]], gy[k[1]], gx[k[2]]]) + rng.uniform(-h / 2, h / 2, 3)
        c[0] = np.clip(c[0], a0 * v + need, a1 * v - need) if (a1 - a0) * v > 2 * need \
            else (a0 + a1) * v / 2
        box = [np.flatnonzero(np.abs(g - ci) <= r + cap) for g, ci in zip((gz, gy, gx), c,
                                                                           strict=True)]
        sub = np.ix_(*box)
        dd = np.sqrt((gz[box[0]][:, None, None] - c[0]) ** 2
                     + (gy[box[1]][None, :, None] - c[1]) ** 2
                     + (gx[box[2]][None, None, :] - c[2]) ** 2) - r
        free[sub] = np.minimum(free[sub], np.maximum(dd, 0.0))
        pid += 1
        prm = _body_params(cfg, c, r, rng)
        sl = _bbox(prm, v, layers.shape)
        q = normalised_distance(prm, _grid_um(sl, v) + v / 2).astype(np.float32)
        inside = (q < 1.0)
        zsl = slice(max(sl[0].start, a0), min(sl[0].stop, a1))
        inside[: zsl.start - sl[0].start] = False
        if sl[0].stop > zsl.stop:
            inside[zsl.stop - sl[0].start:] = False
        win = inside & (q < best[sl])
        new = win & (labels[sl] == 0)
        si_vox += int(new.sum())
        labels[sl][win] = pid
        best[sl][win] = q[win]
        params[pid] = prm
    frac = si_vox / ((a1 - a0) * ny * nx)
    if frac < comp.si_fraction - 0.02:
        raise NumericalError(
            f"particle packing reached a Si fraction of {frac:.3f}, short of "
            f"{comp.si_fraction:.3f}", "allow more overlap (particles.max_overlap), use a wider "
            "size distribution or a lower loading")
    log.debug("placed %d particles, Si fraction %.3f", pid, frac)
    return labels, best, params


def phantom_particle_table(particles: np.ndarray, voxel_size_um: float,
                           collector_z_um: float, cracked: set[int] | None = None
                           ) -> np.ndarray:
    """Truth particle table of a phantom's instance labels (:data:`PARTICLE_DTYPE`).

    Unlike :func:`anodetwin.segment.particles.particle_table` (measured particles, positions
    from the first voxel centre, surfaces and bounding boxes), positions here are in the
    phantom's frame, whose origin is the corner of the grid (voxel ``i`` spans ``i v`` to
    ``(i + 1) v``), and each row carries the cracked flag of the truth.

    Parameters
    ----------
    particles : numpy.ndarray of int
        Particle ids (0 = none), (z, y, x).
    voxel_size_um : float
        Isotropic voxel edge (um).
    collector_z_um : float
        Height of the collector surface above the grid's low z face (um).
    cracked : set of int, optional
        Ids of the cracked particles.

    Returns
    -------
    numpy.ndarray
        One row per particle id present, ascending: id, centroid (z, y, x; um, voxel
        centres), volume (um3), volume-equivalent diameter (um), number of touching
        neighbours (sharing a voxel face), centroid height above the collector (um), cracked
        flag.
    """
    v = voxel_size_um
    ids = np.unique(particles)
    ids = ids[ids > 0]
    n = int(particles.max()) + 1 if particles.size else 1
    lab = particles.ravel()
    counts = np.bincount(lab, minlength=n)
    touch = np.zeros(n, np.int64)
    pairs = touching_pairs(particles)
    if len(pairs):
        np.add.at(touch, pairs[:, 0], 1)
        np.add.at(touch, pairs[:, 1], 1)
    t = np.zeros(len(ids), PARTICLE_DTYPE)
    c = counts[ids]
    t["id"] = ids
    for axis, name in enumerate("zyx"):
        index = np.arange(particles.shape[axis], dtype=np.float64)
        index = np.expand_dims(index, [a for a in range(3) if a != axis])
        sums = np.bincount(lab, weights=np.broadcast_to(index, particles.shape).ravel(),
                           minlength=n)
        t[f"centroid_{name}_um"] = (sums[ids] / c + 0.5) * v
    t["volume_um3"] = c * v**3
    t["equivalent_diameter_um"] = np.cbrt(6 * t["volume_um3"] / np.pi)
    t["touching"] = touch[ids]
    t["distance_to_collector_um"] = t["centroid_z_um"] - collector_z_um
    if cracked:
        t["cracked"] = np.isin(ids, sorted(cracked))
    return t


def _crack(cfg: PhantomConfig, labels: np.ndarray, params: dict, layers: Layers,
           rng: np.random.Generator) -> set[int]:
    p = cfg.particles
    v = layers.voxel_size_um
    top = layers.anode[1] * v
    near = [i for i, prm in params.items() if top - prm["centre"][0] <= p.crack_zone_um]
    n = int(round(p.cracked_fraction * len(near)))
    chosen = set(int(i) for i in rng.choice(near, size=n, replace=False)) if n else set()
    for i in sorted(chosen):
        prm = params[i]
        sl = _bbox(prm, v, labels.shape)
        normal = rng.normal(size=3)
        normal /= np.linalg.norm(normal)
        offset = rng.uniform(-0.3, 0.3) * float(prm["axes"].min())
        dist = (_grid_um(sl, v) + v / 2 - prm["centre"]) @ normal - offset
        cut = (np.abs(dist) <= p.crack_width_um / 2) & (labels[sl] == i)
        labels[sl][cut] = 0
        prm["crack"] = (normal, offset)
    return chosen


def _separator(cfg: PhantomConfig, layers: Layers, rng: np.random.Generator) -> np.ndarray:
    """Solid mask of a porous polymer separator: thresholded anisotropic random field
    (elongated in-plane fibrils), to the requested porosity."""
    s0, s1 = layers.separator
    v = layers.voxel_size_um
    se = cfg.separator
    shape = (s1 - s0,) + layers.shape[1:]
    field = rng.standard_normal(shape).astype(np.float32)
    sig = (se.fibre_width_um / v / 2, se.fibre_length_um / v / 2, se.fibre_width_um / v / 2)
    field = ndimage.gaussian_filter(field, sig, mode="wrap")
    thr = np.quantile(field, se.porosity)
    return field > thr


def _cbd(si: np.ndarray, pore: np.ndarray, n_target: int, v: float) -> np.ndarray:
    if n_target <= 0:
        return np.zeros_like(pore)
    s = ndimage.gaussian_filter(si.astype(np.float32), 0.6 / v)
    d = ndimage.distance_transform_edt(~si) * v
    score = np.where(pore, s * np.exp(-d / 0.5), -1.0).astype(np.float32)
    flat = score.ravel()
    n_target = min(n_target, int(pore.sum()))
    thr = np.partition(flat, flat.size - n_target)[flat.size - n_target]
    cbd = score > thr
    extra = n_target - int(cbd.sum())
    if extra > 0:  # ties at the threshold: take them in index order
        tie = np.flatnonzero((flat == thr) & pore.ravel())[:extra]
        cbd.ravel()[tie] = True
    return cbd


def make_microstructure(cfg: PhantomConfig, rng: np.random.Generator | None = None
                        ) -> Microstructure:
    """Generate the pristine electrode labels for a configuration.

    Parameters
    ----------
    cfg : PhantomConfig
        The phantom configuration.
    rng : numpy.random.Generator, optional
        Random source (default: seeded by ``cfg.seed``, so the result is deterministic).

    Returns
    -------
    Microstructure

    Raises
    ------
    NumericalError
        If the particle packing cannot reach the Si fraction of the composition.
    """
    rng = rng or np.random.default_rng(cfg.seed)
    comp = electrode_composition(cfg.composition)
    layers = layers_for(cfg, comp)
    v = layers.voxel_size_um
    labels, _, params = _place_particles(cfg, layers, comp, rng)
    cracked = _crack(cfg, labels, params, layers, rng)
    phases = np.zeros(layers.shape, np.uint8)
    c0, c1 = layers.cu
    a0, a1 = layers.anode
    s0, s1 = layers.separator
    phases[c0:c1] = PHASE["copper"]
    an = phases[a0:a1]
    si = labels[a0:a1] > 0
    an[si] = PHASE["si"]
    n_cbd = int(round(comp.cbd_fraction * si.size))
    cbd = _cbd(si, ~si, n_cbd, v)
    an[cbd] = PHASE["cbd"]
    phases[s0:s1][_separator(cfg, layers, rng)] = PHASE["separator"]
    # particle ids are compacted to 1..N after cracks (a crack never removes a whole body)
    table = phantom_particle_table(labels, v, c1 * v, cracked)
    return Microstructure(phases, labels, table, layers, comp, params)
