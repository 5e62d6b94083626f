"""Cell protocol and equivalent-circuit cell against exact solutions; the reference protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from anodetwin.errors import CorruptFileError, InputNotFoundError, ParameterError
from anodetwin.simulate.materials import MODELS_DIR
from anodetwin.simulate.protocol import CellHistory, Protocol, Segment, load_protocol, simulate_cell

REF_TEXT = (MODELS_DIR / "reference_cell.toml").read_text()
SOC = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
OCV = (3.0, 3.55, 3.65, 3.8, 3.95, 4.1, 4.3)
Q, R = 3.5, 440.0  # mAh/cm2, ohm cm2


def _cell(*segments, soc=SOC, ocv=OCV, s0=0.0, rest=1.0, scan=10.0, scan0=None) -> Protocol:
    return Protocol("test", Q, 10.0, soc, ocv, R, tuple(segments), rest, scan, s0, scan0)


def _run(*segments, **kw) -> CellHistory:
    return simulate_cell(_cell(*segments, **kw))


@pytest.fixture(scope="module")
def ref() -> CellHistory:
    return simulate_cell(load_protocol("reference_cell"))


def test_cc_soc_is_c_rate_times_time():
    h = _run(Segment("cc", c_rate=0.25, max_minutes=120))
    t = np.linspace(0, 7200, 97)
    np.testing.assert_allclose(h.soc_at(t), 0.25 * t / 3600, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(h.soc, 0.25 * h.time_s / 3600, rtol=1e-14, atol=1e-15)
    assert h.current_at(1000.0) == pytest.approx(0.25 * Q, rel=1e-14)
    # V = OCV + I R with I in A/cm2
    np.testing.assert_allclose(h.voltage_v, np.interp(h.soc, SOC, OCV) + 0.25 * Q * 1e-3 * R)
    dis = _run(Segment("cc", "discharge", c_rate=0.5, max_minutes=30), s0=0.8)
    assert dis.soc_at(1800.0) == pytest.approx(0.55, abs=1e-14)
    assert dis.current_at(900.0) == pytest.approx(-0.5 * Q, rel=1e-14)


def test_cc_to_cv_switch_at_the_analytic_time():
    g = Segment("cccv", c_rate=1 / 3, voltage_v=4.3, until_c_rate=0.1, max_minutes=120)
    h = _run(g)
    # the cut-off is met on the OCV piece (0.3, 3.65)-(0.5, 3.8): OCV(s*) = 4.3 - I R
    target = 4.3 - Q / 3 * 1e-3 * R
    s_star = 0.3 + (target - 3.65) / (3.8 - 3.65) * 0.2
    t_star = s_star * 3 * 3600
    cv_start = h.time_s[np.argmax(h.phase == "cv")]
    assert cv_start == pytest.approx(t_star, rel=1e-13)
    assert np.any(np.isclose(h.breakpoints_s, t_star, rtol=1e-13))
    assert h.soc_at(t_star) == pytest.approx(s_star, rel=1e-13)
    print(f"CC->CV at t = {t_star:.1f} s, SoC {s_star:.5f}")
    cv = h.phase == "cv"
    np.testing.assert_allclose(h.voltage_v[cv], 4.3, rtol=1e-12)
    assert np.all(h.voltage_v[h.phase == "cc"] <= 4.3 + 1e-12)


def test_cv_current_is_the_exact_exponential_on_a_linear_ocv():
    # one linear OCV piece: OCV = 3.0 + 1.3 SoC; hold 4.0 V from SoC 0.2
    k, vh, s0, until = 1.3, 4.0, 0.2, 0.05
    h = _run(Segment("cv", voltage_v=vh, until_c_rate=until), soc=(0, 1), ocv=(3.0, 4.3), s0=s0)
    tau = R * Q * 3.6 / k  # s
    i0 = (vh - 3.0 - k * s0) / R * 1e3  # mA/cm2
    t_end = tau * math.log(i0 / (until * Q))
    t = np.linspace(0, t_end, 200, endpoint=False)
    np.testing.assert_allclose(h.current_at(t), i0 * np.exp(-t / tau), rtol=1e-6)
    s_eq = (vh - 3.0) / k
    np.testing.assert_allclose(h.soc_at(t), s_eq + (s0 - s_eq) * np.exp(-t / tau), rtol=1e-6)
    assert h.time_s[-1] == pytest.approx(t_end, rel=1e-10)  # ends at I = C/20 exactly
    assert h.current_ma_cm2[-1] == pytest.approx(until * Q, rel=1e-10)


def test_cv_across_ocv_kinks_matches_solve_ivp():
    h = _run(Segment("cv", voltage_v=4.2, max_minutes=600), s0=0.05)
    rs = 3.6 * Q * R

    def rhs(_t, y):
        return [(4.2 - np.interp(y[0], SOC, OCV)) / rs]

    t = np.linspace(0, 36000, 301)
    sol = solve_ivp(rhs, (0, 36000), [0.05], t_eval=t, rtol=1e-11, atol=1e-13, method="DOP853")
    np.testing.assert_allclose(h.soc_at(t), sol.y[0], rtol=1e-7)
    assert h.soc_at(36000.0) < 0.95  # SoC of 4.2 V OCV, approached from below
    assert np.all(np.diff(h.soc) >= 0)


def test_rests_and_scans_hold_the_soc(ref):
    still = np.isin(ref.phase, ["rest", "ocv", "scan"])
    assert still.sum() > 100
    assert np.all(ref.current_ma_cm2[still] == 0)
    np.testing.assert_allclose(ref.voltage_v[still], np.interp(ref.soc[still], SOC, OCV))
    for g in np.unique(ref.segment):
        m = still & (ref.segment == g)
        if m.any():
            assert np.ptp(ref.soc[m]) == 0
    h = _run(Segment("rest", max_minutes=30), s0=0.4)
    assert h.soc_at(np.linspace(0, 1800, 7)).tolist() == [0.4] * 7


def test_charge_stops_at_soc_1():
    h = _run(Segment("cc", c_rate=1.0, voltage_v=6.0, max_minutes=90), s0=0.5)
    assert h.soc_at(1800.0) == pytest.approx(1.0, abs=1e-14)
    assert h.soc_at(5400.0) == 1.0 and h.current_at(3000.0) == 0.0
    assert h.soc.max() == 1.0
    assert np.any(np.isclose(h.breakpoints_s, 1800.0))


def test_reference_protocol(ref, tmp_path):
    p = ref.protocol
    assert p.theta_full == pytest.approx(3.5 / (3.0 * 0.89 * 3.579), rel=1e-12)
    assert p.theta_full == pytest.approx(0.3663, abs=1e-4)
    soc = {name: ref.soc_at(t) for name, t in ref.scans.items()}
    print("SoC at scans:", {k: round(v, 4) for k, v in soc.items()})
    assert list(soc) == [f"T{i}" for i in range(10)]
    assert ref.scans["T0"] == 0.0 and soc["T0"] == 0.0
    assert soc["T3"] == pytest.approx(0.5, abs=0.1)
    assert soc["T6"] == pytest.approx(0.85, abs=0.1)
    assert soc["T8"] == pytest.approx(0.70, abs=0.1)  # paper: "T8 (70% SoC)"
    assert soc["T9"] == soc["T8"]  # double scan, no electrochemistry
    assert all(np.diff(list(ref.scans.values())) > 0)
    # the first CV starts in the third charge segment (paper: between T2 and T3)
    assert ref.segment[np.argmax(ref.phase == "cv")] == 2
    # each scan starts after a 1-min open-circuit rest; the FE stepper lands on both
    for t in list(ref.scans.values())[1:]:
        assert np.isin([t - 60.0, t, t + 600.0], ref.breakpoints_s).all()
    assert np.all(np.diff(ref.breakpoints_s) > 0)
    np.testing.assert_allclose(ref.theta_mean_at(ref.scans["T6"]), soc["T6"] * p.theta_full)
    # the dense samples agree with the exact pieces away from the jumps
    t = ref.time_s[1:-1][np.diff(ref.time_s)[1:] > 0]
    np.testing.assert_allclose(ref.soc_at(t), np.interp(t, ref.time_s, ref.soc), atol=1e-12)
    out = ref.to_csv(tmp_path / "cell.csv")
    lines = out.read_text().splitlines()
    assert lines[0] == "time_s,time_h,soc,current_ma_cm2,voltage_v,segment,phase"
    assert len(lines) == ref.time_s.size + 1


def _write(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


_BAD = {
    "missing": (("[resistance]", "[resistance_x]"), "resistance"),
    "unit": (('unit = "ohm*cm2"', 'unit = "ohm"'), "resistance"),
    "ocv": (("3.8, 3.95", "3.96, 3.95"), "ocv_voltage"),
    "soc_table": (("0.9, 1.0]", "0.9, 1.2]"), "ocv_soc"),
    "soc0": (("[initial_soc]\nvalue = 0.0", "[initial_soc]\nvalue = 1.5"), "initial_soc"),
    "rate": (('c_rate = "C/6"', "c_rate = -0.2"), "c_rate"),
    "time": (("max_minutes = 20", "max_minutes = -20"), "max_minutes"),
    "mode": (('mode = "rest"', 'mode = "pause"'), "mode"),
    "hold": (("voltage_v = 4.3", "voltage_v = 4.5"), "hold voltage 4.5"),
    "key": (('scan = "T9"', 'scan = "T9"\nvoltage = 3'), "unknown keys"),
    "rate_text": (('c_rate = "C/6"', 'c_rate = "fast"'), "c_rate"),
}


@pytest.mark.parametrize("case", sorted(_BAD))
def test_bad_inputs_raise_one_line_errors(tmp_path, case):
    (old, new), needle = _BAD[case]
    assert old in REF_TEXT
    with pytest.raises(ParameterError) as err:
        load_protocol(_write(tmp_path, REF_TEXT.replace(old, new, 1)))
    msg = str(err.value)
    assert "\n" not in msg and needle in msg and "; " in msg, msg


def test_unreachable_cutoff_without_time_limit_is_rejected(tmp_path):
    seg = '\n[[segments]]\nmode = "cc"\nc_rate = "C/3"\nvoltage_v = {}\n'
    # reachable end: OCV(1) + I R = 4.3 + 0.513 V
    assert load_protocol(_write(tmp_path, REF_TEXT + seg.format(4.8))).segments[-1].mode == "cc"
    with pytest.raises(ParameterError, match="never reached"):
        load_protocol(_write(tmp_path, REF_TEXT + seg.format(4.9)))
    with pytest.raises(ParameterError, match="never reached"):
        load_protocol(_write(tmp_path, REF_TEXT + '\n[[segments]]\nmode = "cc"\nc_rate = 1\n'))
    ok = REF_TEXT + seg.format(4.9) + "max_minutes = 5\n"
    assert load_protocol(_write(tmp_path, ok)).segments[-1].max_minutes == 5


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputNotFoundError, match="reference_cell"):
        load_protocol("no_such_protocol")
    with pytest.raises(CorruptFileError):
        load_protocol(_write(tmp_path, "name = [unclosed"))
    with pytest.raises(ParameterError, match="never ends"):
        Segment("cv", voltage_v=4.0)


def test_cell_csv_rows_are_written_to_fixed_precision(tmp_path):
    """cell.csv: time with 6 decimals, hours with 9, SoC with 12 significant digits, current
    and voltage with 9; a CC charge at C/4 from SoC 0 for 60 min: the first and last rows by
    hand (I = 0.25 Q, V = OCV(SoC) + I R, OCV linear on (0, 3.0)-(0.1, 3.55))."""
    h = _run(Segment("cc", c_rate=0.25, max_minutes=60))
    text = h.to_csv(tmp_path / "cell.csv").read_text()
    lines = text.splitlines()
    assert text.endswith("\n") and "\r" not in text
    i = 0.25 * Q  # 0.875 mA/cm2
    v0 = 3.0 + i * 1e-3 * R  # 3.385 V
    assert lines[1] == f"0.000000,0.000000000,0,{i:.9g},{v0:.9g},0,cc"
    assert lines[1] == "0.000000,0.000000000,0,0.875,3.385,0,cc"
    v1 = 3.55 + (0.25 - 0.1) / 0.2 * 0.1 + i * 1e-3 * R  # SoC 0.25: (0.1, 3.55)-(0.3, 3.65)
    assert lines[-1] == f"3600.000000,1.000000000,0.25,{i:.9g},{v1:.9g},0,cc"
