#!/usr/bin/python3
"""scikit-learn reference for the flashgmm engine tests and benchmark.

Run with Debian's interpreter (/usr/bin/python3, python3-sklearn, numpy).

  sklearn_ref.py fit  DATA.fvecs ROWS INIT.model ITERS REG OUT
      Starts GaussianMixture from the model in INIT.model (flashgmm's flat
      serialisation: "GMM1", K, D, cov as uint32 LE, then weights, means,
      vars as float32 LE), runs exactly ITERS EM iterations in float64
      (tol = 0, so it never stops early) with reg_covar = REG, and writes to
      OUT the lines "mean_loglik <x>" (score of the returned model), "n_iter",
      "max_mean_rel", and then the model (one line each: weights, means, vars).
  sklearn_ref.py time DATA.fvecs ROWS INIT.model ITERS REG OUT
      Times fit() with 1 and with 1 + ITERS iterations (best of two each)
      and writes "seconds_per_iter <x>" = the difference / ITERS (so the
      set-up that fit() does once is not counted), then the result of the
      longer fit.

Exit status 77 when scikit-learn is missing (the C test reports SKIP).
"""
import sys
import time
import warnings

try:
    import numpy as np
    from sklearn.mixture import GaussianMixture
    from sklearn.exceptions import ConvergenceWarning
except ImportError as e:  # pragma: no cover
    sys.stderr.write("sklearn_ref.py: %s\n" % e)
    sys.exit(77)


def read_fvecs(path, rows):
    a = np.fromfile(path, dtype="<i4")
    d = int(a[0])
    a = a.reshape(-1, d + 1)
    if rows > 0:
        a = a[:rows]
    return a[:, 1:].copy().view("<f4")


def read_model(path):
    b = open(path, "rb").read()
    magic, K, D, cov = np.frombuffer(b[:16], dtype="<u4")
    if magic != 0x314D4D47:
        raise SystemExit("bad model magic")
    f = np.frombuffer(b[16:], dtype="<f4").astype(np.float64)
    K, D = int(K), int(D)
    w = f[:K]
    mu = f[K:K + K * D].reshape(K, D)
    v = f[K + K * D:]
    if cov == 1:
        v = v.reshape(K, D)
    return int(cov), w, mu, v


def main():
    if len(sys.argv) != 8 or sys.argv[1] not in ("fit", "time"):
        sys.stderr.write(__doc__)
        return 2
    mode, data, rows, init, iters, reg, out = sys.argv[1:]
    X = read_fvecs(data, int(rows)).astype(np.float64)
    cov, w, mu, v = read_model(init)
    iters = int(iters)

    def make(n):
        return GaussianMixture(
            n_components=mu.shape[0],
            covariance_type="diag" if cov == 1 else "spherical",
            tol=0.0,
            reg_covar=float(reg),
            max_iter=n,
            n_init=1,
            init_params="random",
            weights_init=w / w.sum(),
            means_init=mu,
            precisions_init=1.0 / v,
            random_state=0,
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        per_iter = None
        if mode == "time":
            # best of two of each (the machine is shared: take the least
            # disturbed run)
            short = long_ = float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                make(1).fit(X)
                t1 = time.perf_counter()
                gm = make(1 + iters)
                gm.fit(X)
                t2 = time.perf_counter()
                short = min(short, t1 - t0)
                long_ = min(long_, t2 - t1)
            per_iter = (long_ - short) / max(iters, 1)
        else:
            gm = make(iters)
            gm.fit(X)
    ll = gm.score(X)
    with open(out, "w") as f:
        f.write("mean_loglik %.17g\n" % ll)
        f.write("n_iter %d\n" % gm.n_iter_)
        if mode == "time":
            f.write("seconds_per_iter %.6g\n" % per_iter)
        f.write("weights " + " ".join("%.17g" % x for x in gm.weights_) + "\n")
        f.write("means " + " ".join("%.17g" % x for x in gm.means_.ravel()) + "\n")
        f.write("vars " + " ".join("%.17g" % x for x in np.ravel(gm.covariances_)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
