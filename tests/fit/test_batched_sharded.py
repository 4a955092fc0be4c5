"""fit_many (vmapped, ragged) equals one fit per series; sharded fits equal unsharded ones."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mleops


@pytest.mark.slow
def test_fit_many_equals_individual_fits_on_ragged_series():
    rng = np.random.default_rng(3)
    series = [rng.weibull(1.2 + 0.1 * i, n) * (1 + i) for i, n in enumerate([15, 200, 1000, 37])]
    many = mleops.fit_many(series, "weibull")
    assert many.converged.all() and len(many) == 4
    for i, s in enumerate(series):
        one = mleops.fit(s, "weibull")
        np.testing.assert_allclose(many.params[i], one.values, rtol=1e-8)
        np.testing.assert_allclose(many.loglik[i], one.loglik, rtol=1e-11)
        np.testing.assert_allclose(many.se[i], list(one.se.values()), rtol=1e-6)
        assert many.n_obs[i] == len(s)


@pytest.mark.slow
def test_fit_many_with_censoring_and_gamma_matrix():
    rng = np.random.default_rng(8)
    x = rng.gamma(2.0, 1.5, (50, 400))
    many = mleops.fit_many(x, "gamma")
    assert many.converged.all()
    z = (many.params - [2.0, 1.5]) / many.se
    assert np.abs(z).max() < 4.5  # 100 estimates, all within their CIs' reach
    t = rng.weibull(1.5, (3, 300))
    ev = (t < 1.2).astype(float)
    cen = mleops.fit_many(np.minimum(t, 1.2), "weibull", event=ev)
    for i in range(3):
        one = mleops.fit(np.minimum(t[i], 1.2), "weibull", event=ev[i])
        np.testing.assert_allclose(cen.params[i], one.values, rtol=1e-8)
    assert cen.series(0)["converged"] is True


@pytest.mark.slow
@pytest.mark.parametrize("family", ["weibull", "gamma"])
def test_fit_many_reads_the_callers_buffer_at_every_alignment(family):
    """A rectangular array is read in place from its first 64-byte boundary, the values
    before it joined back in the kernel: each of the 8 possible offsets, a read-only array
    (which takes the copy) and the ragged path give the same fits."""
    rng = np.random.default_rng(5)
    base = rng.weibull(1.4, 7 * 120 + 8) * 2 if family == "weibull" else rng.gamma(2.0, 1.5, 848)
    for k in range(8):
        x = base[k:k + 7 * 120].reshape(7, 120)
        got = mleops.fit_many(x, family)
        assert got.converged.all()
        for i, one in enumerate(mleops.fit(s, family) for s in x):
            np.testing.assert_allclose(got.params[i], one.values, rtol=1e-9)
            np.testing.assert_allclose(got.loglik[i], one.loglik, rtol=1e-12)
    frozen = base[:7 * 120].reshape(7, 120).copy()
    frozen.flags.writeable = False
    np.testing.assert_allclose(mleops.fit_many(frozen, family).params,
                               mleops.fit_many(list(frozen), family).params, rtol=1e-12)


def test_in_place_shares_the_buffer_and_refuses_what_it_cannot_share():
    from mleops.fit.data import in_place

    a = np.arange(1.0, 1001.0)
    head, body = in_place(a)
    assert head.size < 8 and head.size + body.size == a.size
    assert body.unsafe_buffer_pointer() == a.ctypes.data + 8 * head.size  # no copy
    np.testing.assert_array_equal(np.concatenate([head, np.asarray(body)]), a)
    ro = a.copy()
    ro.flags.writeable = False
    assert in_place(ro) is None and in_place(a[::2]) is None
    assert in_place(a.astype(np.float32)) is None


SHARDED = textwrap.dedent("""
    import json, numpy as np, jax, mleops
    assert len(jax.devices()) == 4, jax.devices()
    rng = np.random.default_rng(0)
    out = {}
    t = rng.weibull(1.4, 100_003) * 3   # not a multiple of 4: exercises padding
    ev = (t < 5).astype(float)
    X = np.column_stack([np.ones(20_001), rng.normal(size=20_001)])
    y = rng.poisson(np.exp(0.2 + 0.3 * X[:, 1])).astype(float)
    for name, kw in [("weibull", dict(x=np.minimum(t, 5), family="weibull", event=ev)),
                     ("gamma", dict(x=t, family="gamma")),
                     ("poisson_glm", dict(x=y, family="poisson_glm", X=X, features=["const", "a"]))]:
        a = mleops.fit(**kw)
        b = mleops.fit(**kw, sharded=True)
        out[name] = dict(a=a.values.tolist(), b=b.values.tolist(), la=a.loglik, lb=b.loglik,
                         sa=list(a.se.values()), sb=list(b.se.values()), dev=b.device,
                         conv=bool(a.converged and b.converged))
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_sharded_equals_unsharded_on_4_cpu_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu", "MLEOPS_JAX_CACHE": "off"}
    out = subprocess.run([sys.executable, "-c", SHARDED], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.split("RESULT", 1)[1])
    for name, r in res.items():
        assert r["conv"], name
        assert r["dev"] == "cpux4", name
        np.testing.assert_allclose(r["b"], r["a"], rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(r["lb"], r["la"], rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(r["sb"], r["sa"], rtol=1e-7, err_msg=name)


def test_power_sums_fused_and_apart_agree():
    """One series sums in one fused pass, many series (many_series) apart: same values."""
    import jax
    import jax.numpy as jnp

    from mleops.fit.fast import many_series, power_sums

    lx = jnp.log(2.0 * np.random.default_rng(3).weibull(1.5, 4096))
    w, m = jnp.ones_like(lx), jnp.max(lx)
    fused = jax.jit(lambda c, lx: power_sums(c, lx, m, w))(1.3, lx)
    with many_series():
        apart = jax.jit(lambda c, lx: power_sums(c, lx, m, w))(1.3, lx)
        jaxpr_apart = str(jax.make_jaxpr(lambda c: power_sums(c, lx, m, w))(1.3))
    assert "optimization_barrier" in jaxpr_apart  # (fresh closures: traces are cached per function)
    assert "optimization_barrier" not in str(jax.make_jaxpr(lambda c: power_sums(c, lx, m, w))(1.3))
    want = [float(jnp.sum(jnp.exp(1.3 * (lx - m)) * (lx - m) ** j)) for j in range(3)]
    np.testing.assert_allclose(fused, want, rtol=1e-12)
    np.testing.assert_allclose(apart, want, rtol=1e-12)
