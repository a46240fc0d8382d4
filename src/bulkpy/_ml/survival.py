"""The penalised Cox model of :func:`bulkpy.tl.survival`: scikit-survival's coxnet (elastic-net
penalised partial likelihood by coordinate descent, as R's ``glmnet(family = "cox")``) with the
penalty as plain hyper-parameters, so that it tunes in a grid like any scikit-learn model.

scikit-survival is an optional dependency (``pip install "bulkpy[survival]"``)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

#: The extra that installs the survival dependencies.
EXTRA = "survival"

#: Length of the warm-started path of penalties from the largest useful one down to ``alpha``
#: (glmnet's advice: a single small penalty fitted from zero converges badly; the path gets there
#: step by step).
PATH_LENGTH = 20


def _alpha_max(X: np.ndarray, y: np.ndarray, l1_ratio: float) -> float:
    """The smallest elastic-net penalty at which every Cox coefficient is zero (glmnet's
    ``lambda_max``): ``max_j |U_j| / (n * l1_ratio)`` with ``U`` the score at beta = 0
    (Breslow), for the data as coxnet sees it (genes centred)."""
    t, e = y["time"], y["event"]
    order = np.argsort(t, kind="stable")
    ts, xs, es = t[order], X[order] - X.mean(axis=0), e[order]
    s1 = np.cumsum(xs[::-1], axis=0)[::-1]
    first = np.searchsorted(ts, ts[es], side="left")
    n_risk = (ts.size - first)[:, None]
    u = (xs[es] - s1[first] / n_risk).sum(axis=0)
    return float(np.abs(u).max() / (X.shape[0] * l1_ratio))


def require_sksurv():
    """Import scikit-survival or say how to install it."""
    try:
        import sksurv  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "bk.tl.survival needs scikit-survival, which is an optional dependency of bulkpy; install it with "
            f'pip install "bulkpy[{EXTRA}]" (or pip install scikit-survival)'
        ) from err


def survival_target(time, event) -> np.ndarray:
    """The structured array scikit-survival takes: fields ``event`` (bool) and ``time`` (float)."""
    y = np.empty(len(time), dtype=[("event", bool), ("time", np.float64)])
    y["event"] = np.asarray(event, dtype=bool)
    y["time"] = np.asarray(time, dtype=np.float64)
    return y


class PenalizedCox(BaseEstimator):
    """Elastic-net penalised Cox proportional-hazards model (scikit-survival's
    ``CoxnetSurvivalAnalysis``), fitted along a warm-started path of penalties from the largest
    useful one (every coefficient zero) down to ``alpha``; the coefficients at ``alpha`` are
    kept (all zero when ``alpha`` is at or above that largest penalty).

    Parameters
    ----------
    alpha
        Penalty strength (glmnet's ``lambda``) on standardised genes.
    l1_ratio
        Elastic-net mixing in (0, 1]: 1 is the lasso, small values are close to ridge.

    Attributes
    ----------
    coef_
        Log hazard ratio of each input gene (per unit of the input, i.e. per standard deviation
        after the pipeline's scaling).
    """

    def __init__(self, alpha=0.1, l1_ratio=0.5):
        self.alpha = alpha
        self.l1_ratio = l1_ratio

    def fit(self, X, y):
        require_sksurv()
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        X = np.asarray(X, dtype=np.float64)
        if not (isinstance(self.alpha, int | float) and self.alpha > 0):
            raise ValueError(f"alpha must be a positive number, got {self.alpha!r}")
        if not (isinstance(self.l1_ratio, int | float) and 0 < self.l1_ratio <= 1):
            raise ValueError(f"l1_ratio must be in (0, 1], got {self.l1_ratio!r}")
        alpha, l1 = float(self.alpha), float(self.l1_ratio)
        # the path starts at the smallest penalty that zeroes every gene (glmnet's lambda_max:
        # the largest |score| at beta = 0 over n * l1_ratio); coxnet stops a path that does not
        # move, so a path starting above it would end before reaching alpha
        self.alpha_max_ = _alpha_max(X, y, l1)
        if alpha >= self.alpha_max_:
            self.coef_ = np.zeros(X.shape[1])
            self.converged_ = True
            self.n_features_in_ = X.shape[1]
            return self
        alphas = np.geomspace(self.alpha_max_, alpha, PATH_LENGTH)
        model = CoxnetSurvivalAnalysis(alphas=alphas, l1_ratio=l1, max_iter=100_000)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(X, y)
        if model.coef_.shape[1] != alphas.size or not np.isclose(model.alphas_[-1], alpha):
            raise RuntimeError(f"coxnet stopped its path at alpha={model.alphas_[-1]:.3g} before reaching {alpha}")
        self.converged_ = True
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):  # recorded in converged_ (and the params)
                self.converged_ = False
            elif "all coefficients are zero" in str(w.message):
                pass  # a penalty this strong selects no gene: a legitimate candidate of the grid (risk 0)
            else:
                warnings.warn(w.message, w.category, stacklevel=2)
        self.coef_ = np.asarray(model.coef_[:, -1], dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        """Risk score (the linear predictor, log relative hazard) of each sample."""
        check_is_fitted(self, "coef_")
        return np.asarray(X, dtype=np.float64) @ self.coef_
