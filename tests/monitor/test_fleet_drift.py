"""Per-key drift of a fleet: one CUSUM per key, alarms selected by BH across keys; no key
alarms on in-control rows of 300 keys, the drifted keys are the ones that alarm, the state
resumes exactly (two runs on halves = one run on all), an estimated baseline is lowered."""

import numpy as np
import pytest

from mleops.errors import DataError
from mleops.monitor.cusum import CusumConfig
from mleops.monitor.fleet_drift import FleetDrift, KeyBaselines, p_values

K = 300


def _rows(rng, n, drifted=(), drop=0.6):
    key = rng.integers(0, K, n)
    ll = rng.normal(-1.0, 1.0, n) - drop * np.isin(key, drifted)
    return key, ll


def _detector(**kw):
    return FleetDrift(KeyBaselines(np.full(K, -1.0), np.ones(K)),
                      CusumConfig(window=20, horizon=200), **kw)


def test_in_control_keys_do_not_alarm_and_drifted_keys_do():
    rng = np.random.default_rng(0)
    quiet = _detector()
    quiet.update(*_rows(rng, 60_000))
    assert quiet.alarmed.size == 0, quiet.report([str(i) for i in range(K)])["worst_keys"][:3]
    drifted = list(range(0, K, 30))  # 10 keys
    det = _detector()
    det.update(*_rows(rng, 60_000, drifted))
    found = set(det.alarmed.tolist())
    assert found <= set(drifted) and len(found) >= 9, found


def test_the_state_resumes_exactly_and_alarms_stay():
    rng = np.random.default_rng(1)
    key, ll = _rows(rng, 60_000, [5, 17])
    one = _detector()
    one.update(key, ll)
    two = _detector()
    two.update(key[:23_456], ll[:23_456])
    two = FleetDrift.from_dict(two.to_dict())
    two.update(key[23_456:], ll[23_456:])
    for f in ("s", "s_max", "n_p", "windows", "rows", "alarm"):
        np.testing.assert_allclose(one.a[f], two.a[f], err_msg=f)
    assert set(one.alarmed.tolist()) == {5, 17}
    calm = FleetDrift.from_dict(one.to_dict())
    calm.update(*_rows(rng, 30_000))  # the drift stops: the alarms stay raised
    assert set(calm.alarmed.tolist()) >= {5, 17}


def test_p_values_fall_with_the_maximum_and_an_estimated_baseline_is_lowered():
    p = p_values(np.array([0.0, 2.0, 5.0, 10.0]), 0.5, 200)
    assert (np.diff(p) < 0).all() and p[0] > 0.99 and p[-1] < 2e-3
    est = FleetDrift(KeyBaselines(np.full(3, -1.0), np.ones(3), np.full(3, 100.0)),
                     CusumConfig(window=20, horizon=200), fdr=0.05)
    assert (est.ref < -1.0).all() and est.q == 0.025
    with pytest.raises(DataError):
        KeyBaselines(np.array([-1.0]), np.array([0.0]))
    with pytest.raises(DataError):
        _detector(fdr=1.5)


def test_p_values_are_siegmunds_and_never_overflow():
    from mleops.monitor.cusum import siegmund_arl

    for h in (0.0, 1.0, 4.0, 9.0):
        assert p_values(np.array([h]), 0.5, 300)[0] == pytest.approx(
            -np.expm1(-300 / siegmund_arl(0.5, h)), rel=1e-12)
    assert p_values(np.array([1e6]), 0.5, 300)[0] == 0.0


def test_serially_correlated_rows_widen_the_windows_instead_of_paging():
    from scipy.signal import lfilter

    rng = np.random.default_rng(3)
    key = rng.integers(0, K, 90_000)
    order = np.argsort(key, kind="stable")
    e = np.empty(key.size)
    e[order] = lfilter([np.sqrt(1 - 0.36)], [1, -0.6], rng.standard_normal(key.size))
    ll = -1.0 + e
    naive = FleetDrift(KeyBaselines(np.full(K, -1.0), np.ones(K)),
                       CusumConfig(window=20, horizon=200, serial=False))
    naive.update(key, ll)
    widened = _detector()
    widened.update(key, ll)
    assert naive.alarmed.size > 0  # iid windows would page on this noise
    assert widened.alarmed.size == 0 and widened.serial_factor > 2.5, widened.serial_factor
