"""Distances between a real and a synthetic feature set, each beside its real-vs-real noise floor.

Pure numpy / scikit-learn. With ~50 real images FID is meaningless (it needs n >> feature dimension),
so: KID (unbiased MMD^2, cubic polynomial kernel), PRDC (Naeem et al. 2020) and a cross-validated
two-sample classifier (0.5 AUC = indistinguishable). Every number is printed beside the same number for
two random halves of the real set, or it cannot be told from noise.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from scipy.spatial.distance import cdist
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .features import EXTRACT_ERRORS
from .model import fmt_num


# ---------------------------------------------------------------------------- normalisation


def normalize(real: np.ndarray, syn: np.ndarray, per_dim: bool) -> tuple[np.ndarray, np.ndarray]:
    """Centre both sets on the REAL set's mean, so the real set defines the origin.

    ``per_dim`` (hand-made statistics in unrelated units): divide each column by its std over both sets
    pooled. The real set's own std would do for most columns, but a statistic that is nearly constant
    on 50 photos (every photo saved at JPEG quality 70) would then blow up into a z-score of hundreds
    and the cubic KID kernel into 1e8; pooled, the column still counts, in units both sets share.
    A column constant on both sides gets std 1. Otherwise (network features, whose geometry the network
    defines): divide by one scalar, the real set's mean per-column std, so near-constant random channels
    are not blown up into noise."""
    mu = real.mean(0)
    sd = real.std(0)
    if per_dim:
        sd = np.concatenate([real, syn]).std(0)
        sd = np.where(sd > 1e-8 * max(1.0, float(np.abs(mu).max(initial=0))), sd, 1.0)
    else:
        sd = np.full_like(mu, max(float(sd.mean()), 1e-12))
    return ((real - mu) / sd).astype(np.float64), ((syn - mu) / sd).astype(np.float64)


def scaled_spaces(ctx, on_error) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, real, synthetic) for the first extractor of `stats` and `random_cnn` among ctx.features,
    scaled as KID and PRDC see them; an extractor that cannot run is reported through ``on_error(name, e)``."""
    from .features import EXTRACT_ERRORS, extract

    for name in [n for n in ("stats", "random_cnn") if n in ctx.features]:
        try:
            fr, fs = extract(ctx, name)[0]
        except EXTRACT_ERRORS as e:
            on_error(name, e)
            continue
        r, s = normalize(fr.X, fs.X, per_dim=fr.names is not None)
        yield fr.name, r, s


# ---------------------------------------------------------------------------- KID


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the KID kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018).

    The kernel is already scaled by the dimension, and :func:`normalize` has put the features in units of the
    REAL set's spread (centred on its mean). So KID has no fixed scale: it grows like the sixth power of how
    many real-set standard deviations the synthetic features sit away. A KID of ~1e6 in `random_cnn` beside a
    floor near 1 is therefore not a scaling bug: on the dice holdout (50 photos of dice on pale felt, very
    alike) vs 20 renders the random-CNN columns vary 0.07 over the real photos, and the synthetic features sit
    ~6 of those stds from the real mean per dimension with 6x the spread (6^6 ~ 5e4, and the spread's heavy
    tail under a cube does the rest). Unnormalised features give KID 18 vs a floor of 0.02: the same verdict.
    Compare a KID with its floor in the same space, never across spaces."""
    d = x.shape[1]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


@dataclass(frozen=True)
class KID:
    mean: float
    ci95: tuple[float, float]  # bootstrap over the subset values: uncertainty of the mean at this subset size
    std: float  # spread of single-subset values
    subset_size: int
    n_subsets: int


def kid(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, subset_size: int = 1000, n_subsets: int = 100) -> KID:
    """KID over random subsets (without replacement) of size min(len(x), len(y), subset_size)."""
    m = int(min(len(x), len(y), subset_size))
    vals = np.array([mmd2_unbiased(x[rng.choice(len(x), m, replace=False)], y[rng.choice(len(y), m, replace=False)])
                     for _ in range(n_subsets)])
    boots = np.array([rng.choice(vals, len(vals)).mean() for _ in range(1000)])
    return KID(float(vals.mean()), (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))), float(vals.std()), m, n_subsets)


# ---------------------------------------------------------------------------- PRDC


def knn_radii(x: np.ndarray, k: int, chunk: int = 512) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour in its own set (itself excluded).

    scipy's cdist (sqrt of summed squared differences) rather than a k-d tree or the dot-product formula:
    every distance in PRDC then comes from the same arithmetic, so a point at exactly the radius (ties,
    duplicates) compares equal instead of missing the ball by a rounding error. Chunked: O(chunk * n) memory."""
    k = min(k, len(x) - 1)
    return np.concatenate([np.partition(cdist(x[i:i + chunk], x), k, axis=1)[:, k] for i in range(0, len(x), chunk)])


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density, coverage (Naeem et al. 2020) with k-NN balls.

    Memory: one (n_real, n_fake) distance matrix; fine up to a few thousand images per side.

    Uses ``<=`` where the reference ``prdc`` package uses a strict ``<``: with ``<`` a synthetic image that
    duplicates a real one (distance 0) and a real image whose k-th neighbour is a duplicate (radius 0) count
    as outside every ball, so identical sets score density = coverage = 0. With ``<=`` identical sets score
    precision = recall = coverage = 1 and density = (k + 1) / k (each point also lies in its own ball);
    independent samples of one distribution score density ~1."""
    rr, fr = knn_radii(real, k), knn_radii(fake, k)
    d = cdist(real, fake)  # (n_real, n_fake)
    inside = d <= rr[:, None]
    return {"precision": float(inside.any(0).mean()), "recall": float((d <= fr[None, :]).any(1).mean()),
            "density": float(inside.sum(0).mean() / k), "coverage": float((d.min(1) <= rr).mean())}


# ---------------------------------------------------------------------------- noise floor


def floor_and_matched(real: np.ndarray, syn: np.ndarray, rng: np.random.Generator, splits: int = 10, k: int = 5,
                      n_subsets: int = 50) -> dict[str, dict[str, tuple[float, float]]]:
    """Real-vs-real (random halves A, B) and, like with like, real half A vs a synthetic sample of |B|.

    Both use the same split and the same set sizes, so their difference is the synthetic gap alone.
    Returns {"floor": {metric: (mean, std)}, "matched": {metric: (mean, std)}}."""
    half = len(real) // 2
    rows: dict[str, list[dict[str, float]]] = {"floor": [], "matched": []}
    for _ in range(splits):
        perm = rng.permutation(len(real))
        a, b = real[perm[:half]], real[perm[half:2 * half]]
        s = syn[rng.choice(len(syn), min(half, len(syn)), replace=False)]
        for key, other in (("floor", b), ("matched", s)):
            rows[key].append({"kid": kid(a, other, rng, half, n_subsets).mean, **prdc(a, other, min(k, half - 1))})
    return {key: {m: (float(np.mean([r[m] for r in rs])), float(np.std([r[m] for r in rs]))) for m in rs[0]} for key, rs in rows.items()}


def coverage_numbers(ms: list[dict]) -> tuple[float, float, float]:
    """(coverage of a real half by an equal-size synthetic sample, real-vs-real floor mean, floor std), averaged over
    the seeds of one feature space: what the coverage checks of the features and diversity sections grade."""
    return (_avg(ms, "coverage", "matched")[0], _avg(ms, "coverage", "floor")[0],
            float(np.mean([m["floor"]["coverage"][1] for m in ms])))


def coverage_check(label: str, ms: list[dict], note: str = ""):
    """Coverage >= floor - 2 std passes, >= half that warns, else fails (the rule of docs/report.md)."""
    from .model import graded

    cov, cov_floor, cov_std = coverage_numbers(ms)
    return graded(f"{label}: coverage of the real set", cov, cov_floor - 2 * cov_std, (cov_floor - 2 * cov_std) / 2,
                  detail="share of real images with a synthetic image inside their k-NN ball (matched sizes), vs the real-vs-real "
                         f"floor {cov_floor:.3f} ± {cov_std:.3f}; low = parts of the real world nothing synthetic resembles." + note)


def kid_check_threshold(floor: tuple[float, float]) -> float:
    """KID that still counts as noise: floor mean + 2 std (never below a tiny positive number)."""
    return max(floor[0] + 2 * floor[1], 1e-9)


# ---------------------------------------------------------------------------- two-sample classifier


@dataclass(frozen=True)
class Detection:
    auc: float
    null_std: float  # std of the AUC of a useless classifier at these sizes (Mann-Whitney)
    p_syn: np.ndarray  # out-of-fold P(synthetic) of each synthetic image used (index into the synthetic set)
    syn_index: np.ndarray
    # (feature, permutation importance in AUC, standardized coef, AUC of that feature alone folded to >= 0.5)
    importances: list[tuple[str, float, float, float]]


def balanced_syn(n_real: int, n_syn: int, rng: np.random.Generator, ratio: int = 4) -> np.ndarray:
    return np.sort(rng.choice(n_syn, min(n_syn, ratio * n_real), replace=False))


def detect(real: np.ndarray, syn: np.ndarray, rng: np.random.Generator, names: tuple[str, ...] | None = None,
           folds: int = 5, repeats: int = 5) -> Detection:
    """Cross-validated ROC AUC (5 stratified folds) of logistic regression telling real (0) from synthetic (1).

    Synthetic is subsampled to <= 4x real and the classes are weighted to balance. With ``names`` also
    permutation importances on the held-out folds (AUC lost when a column is shuffled) and the coefficients
    of a model on all data (standardized columns: comparable sizes; sign > 0 = pushes towards synthetic)."""
    idx = balanced_syn(len(real), len(syn), rng)
    X = np.vstack([real, syn[idx]])
    y = np.r_[np.zeros(len(real), int), np.ones(len(idx), int)]
    seed = int(rng.integers(2**31))
    model = lambda: make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000, C=1.0))  # noqa: E731
    oof = np.zeros(len(y))
    perm_imp = np.zeros(X.shape[1])
    # Identical rows (an image in both sets) share a group and so a fold: split across folds, the model
    # learns the twin's opposite label and scores far below chance (identical sets would give AUC ~0.1).
    _, groups = np.unique(X, axis=0, return_inverse=True)
    cv = StratifiedGroupKFold(min(folds, len(real)), shuffle=True, random_state=seed)
    for tr, te in cv.split(X, y, groups.ravel()):
        clf = model().fit(X[tr], y[tr])
        oof[te] = clf.predict_proba(X[te])[:, 1]
        if names is not None:
            perm_imp += _permutation_importance(clf, X[te], y[te], rng, repeats)
    auc = float(roc_auc_score(y, oof))
    n0, n1 = len(real), len(idx)
    imps: list[tuple[str, float, float, float]] = []
    if names is not None:
        coef = model().fit(X, y)[-1].coef_[0]
        uni = [max(a, 1 - a) for a in (roc_auc_score(y, X[:, j]) if np.ptp(X[:, j]) > 0 else 0.5 for j in range(X.shape[1]))]
        imps = sorted(zip(names, (perm_imp / folds).tolist(), coef.tolist(), uni), key=lambda t: (-round(t[1], 3), -t[3]))
    return Detection(auc, float(np.sqrt((n0 + n1 + 1) / (12 * n0 * n1))), oof[len(real):], idx, imps)


def _permutation_importance(clf, X: np.ndarray, y: np.ndarray, rng: np.random.Generator, repeats: int) -> np.ndarray:
    if len(np.unique(y)) < 2:
        return np.zeros(X.shape[1])
    base = roc_auc_score(y, clf.predict_proba(X)[:, 1])
    out = np.zeros(X.shape[1])
    for j in range(X.shape[1]):
        for _ in range(repeats):
            Xp = X.copy()
            Xp[:, j] = Xp[rng.permutation(len(X)), j]
            out[j] += (base - roc_auc_score(y, clf.predict_proba(Xp)[:, 1])) / repeats
    return out


def real_vs_real_auc(real: np.ndarray, rng: np.random.Generator, splits: int = 5) -> tuple[float, float]:
    """The classifier on two random halves of the real set: what 'indistinguishable' scores here."""
    vals = []
    for _ in range(splits):
        perm = rng.permutation(len(real))
        h = len(real) // 2
        vals.append(detect(real[perm[:h]], real[perm[h:2 * h]], rng).auc)
    return float(np.mean(vals)), float(np.std(vals))


# ---------------------------------------------------------------------------- the report section


def _space(ctx, name: str) -> list[tuple]:
    from .features import extract

    return extract(ctx, name)


_MEASURED: dict[tuple, list[dict]] = {}


def measurements(ctx, name: str) -> list[dict]:
    """:func:`measure` for every (real, synthetic) pair of one extractor, computed once per report: the features
    section grades all of it and the diversity section grades coverage with the same numbers.

    Each space draws from its own seeded stream, so its numbers do not depend on the other spaces in
    ``report.features`` or on which section asked first. Raises EXTRACT_ERRORS when the extractor cannot run."""
    from threadpoolctl import threadpool_limits

    from .features import cache_key

    k = int(ctx.options.get("prdc_k", 5))
    key = (cache_key(ctx, name), ctx.seed, k)
    if key not in _MEASURED:
        pairs = _space(ctx, name)
        rng = np.random.default_rng([ctx.seed, 7, zlib.crc32(name.encode())])
        with threadpool_limits(1):  # BLAS threads fight over a small shared machine like torch threads do
            _MEASURED[key] = [measure(fr, fs, rng, k) for fr, fs in pairs]
    return _MEASURED[key]


def measure(real_f, syn_f, rng: np.random.Generator, k: int = 5, splits: int = 10) -> dict:
    """Every number of one feature space: full-set KID/PRDC, matched and floor, classifier."""
    r, s = normalize(real_f.X, syn_f.X, per_dim=real_f.names is not None)
    full_kid = kid(r, s, rng)
    fm = floor_and_matched(r, s, rng, splits, k)
    det = detect(r, s, rng, real_f.names)
    return {"name": real_f.name, "sha": real_f.sha, "dim": int(r.shape[1]), "kid": full_kid.mean, "kid_ci95": full_kid.ci95,
            "kid_subset_size": full_kid.subset_size, **prdc(r, s, k), "auc": det.auc, "auc_null_std": det.null_std,
            "auc_floor": real_vs_real_auc(r, rng), "floor": fm["floor"], "matched": fm["matched"], "detection": det}


def _avg(ms: list[dict], key: str, sub: str | None = None) -> tuple[float, float]:
    """Mean over seeds and the spread between seeds (0 for one seed)."""
    v = np.array([(m[sub][key][0] if sub else m[key]) for m in ms], float)
    return float(v.mean()), float(v.std())


def _fmt(v: float, fmt: str | None) -> str:
    """``fmt`` None: the report's one number format (3 significant digits, scientific at >= 1e4 and < 1e-3)."""
    return fmt_num(v) if fmt is None else f"{v:{fmt}}"


def _pm(t: tuple[float, float], fmt: str | None = None) -> str:
    return f"{_fmt(t[0], fmt)} ± {_fmt(t[1], fmt)}"


def _checks(label: str, ms: list[dict]) -> list:
    from .model import Check, graded

    kid_m = _avg(ms, "kid", "matched")[0]
    floor = (_avg(ms, "kid", "floor")[0], float(np.mean([m["floor"]["kid"][1] for m in ms])))  # seed-averaged mean, std
    thr = kid_check_threshold(floor)
    st = "pass" if kid_m <= thr else "warn" if kid_m <= 5 * thr else "fail"
    out = [Check(f"{label}: KID vs real-vs-real floor", kid_m, st, f"pass <= floor mean + 2 std = {fmt_num(thr)}, warn <= 5x that, else fail",
                 "KID of a real half vs an equal-size synthetic sample, next to two real halves; above the floor the synthetic "
                 "images sit measurably apart from the real ones in this feature space.")]
    out.append(coverage_check(label, ms))
    auc = _avg(ms, "auc")[0]
    null = float(np.mean([m["auc_null_std"] for m in ms]))
    out.append(graded(f"{label}: real-vs-synthetic classifier AUC", auc, max(0.55, 0.5 + 2 * null), 0.75, higher_is_better=False,
                      detail="cross-validated AUC of logistic regression telling real from synthetic; 0.5 = indistinguishable, "
                             "1.0 = every synthetic image is given away by these features."))
    return out


def _table(label: str, ms: list[dict]) -> "object":
    from .model import Table

    def split(key: str, sub: str, fmt: str | None) -> str:  # seed-averaged mean ± seed-averaged std over the splits
        return _pm((np.mean([m[sub][key][0] for m in ms]), np.mean([m[sub][key][1] for m in ms])), fmt)

    def full(key: str, fmt: str | None) -> str:
        return _pm(_avg(ms, key), fmt) if len(ms) > 1 else _fmt(ms[0][key], fmt)

    ci = ms[0]["kid_ci95"]  # KID has no fixed scale (see mmd2_unbiased): the report's number format, not fixed decimals
    rows = [("KID", full("kid", None) + ("" if len(ms) > 1 else f" (95% CI {fmt_num(ci[0])}..{fmt_num(ci[1])})"),
             split("kid", "matched", None), split("kid", "floor", None))]
    for key in ("precision", "recall", "density", "coverage"):
        rows.append((key, full(key, ".3f"), split(key, "matched", ".3f"), split(key, "floor", ".3f")))
    af = (np.mean([m["auc_floor"][0] for m in ms]), np.mean([m["auc_floor"][1] for m in ms]))
    rows.append(("classifier AUC", full("auc", ".3f"), "", f"{af[0]:.3f} ± {af[1]:.3f} (ideal 0.5; a useless classifier's std at the "
                                                         f"full sizes {np.mean([m['auc_null_std'] for m in ms]):.3f})"))
    seeds = f"; first column mean ± spread over {len(ms)} seeds" if len(ms) > 1 else ""
    return Table(f"{label}: real vs synthetic{seeds}", ("metric", "all real vs all synthetic", "real half vs equal-size synthetic sample (mean ± std over splits)",
                                                       "real half vs other real half (noise floor, mean ± std over splits)"), tuple(rows))


def pca_figure(ctx, real_f, syn_f, path_name: str):
    from sklearn.decomposition import PCA

    from .model import Figure, pyplot

    plt = pyplot()

    r, s = normalize(real_f.X, syn_f.X, per_dim=real_f.names is not None)
    z = PCA(2, random_state=0).fit(np.vstack([r, s]))
    zr, zs = z.transform(r), z.transform(s)
    fig, ax = plt.subplots(figsize=(4.5, 4), dpi=110)
    ax.scatter(zs[:, 0], zs[:, 1], s=8, alpha=0.5, label=f"synthetic ({len(s)})")
    ax.scatter(zr[:, 0], zr[:, 1], s=14, alpha=0.8, marker="^", label=f"real ({len(r)})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend()
    ax.set_title(real_f.name, fontsize=9)
    fig.tight_layout()
    fig.savefig(ctx.figures / path_name)
    plt.close(fig)
    return Figure(f"figures/{path_name}", f"{real_f.name}: first two principal components of real and synthetic features "
                                          "(scaled by the real set); separated clouds = a visible domain gap.")


GIVEAWAY_STRIP = 12  # images per strip when there are enough


def giveaway_figures(ctx, label: str, m: dict, k: int = GIVEAWAY_STRIP) -> list:
    """Synthetic images the classifier finds most and least synthetic (out-of-fold P(synthetic)).

    The two strips never share an image: with fewer than 2k scored images each gets half of them, and the
    caption says so (and, for the real-looking strip, when even those score as synthetic)."""
    from .features import contact_sheet, side_paths
    from .model import Figure

    det: Detection = m["detection"]
    paths = side_paths(ctx.synthetic)
    n = len(det.p_syn)
    k_used = min(k, n // 2)
    order = np.argsort(-det.p_syn, kind="stable")
    short = (f" Only {k_used} per strip: {n} synthetic images were scored, and the two strips share none."
             if k_used < k else "")
    figs = []
    for which, sel in (("most-synthetic", order[:k_used]), ("most-real", order[::-1][:k_used])):
        ps = [paths[det.syn_index[i]] for i in sel]
        name = f"features_{label}_{which}.png".replace("/", "_")
        contact_sheet(ps, [f"P(syn) {det.p_syn[i]:.2f} {p.name}" for i, p in zip(sel, ps)], ctx.figures / name)
        caption = (f"{label}: the synthetic images the real-vs-synthetic classifier finds "
                   f"{'most obviously synthetic' if which == 'most-synthetic' else 'most real-looking'}." + short)
        if which == "most-real" and len(sel) and det.p_syn[sel].min() > 0.5:
            caption += (f" Even these score P(synthetic) >= {det.p_syn[sel].min():.2f}: none of the scored images looks "
                        "real to the classifier.")
        figs.append(Figure(f"figures/{name}", caption))
    return figs


def feature_section(ctx) -> "object":
    """KID, PRDC and the two-sample classifier for each extractor in ctx.features, beside real-vs-real floors."""
    from threadpoolctl import threadpool_limits

    from .model import Check, Section, Table

    checks, tables, figures, data = [], [], [], {}
    with threadpool_limits(1):  # BLAS threads fight over a small shared machine like torch threads do
        for name in ctx.features:
            try:
                pairs = _space(ctx, name)
            except EXTRACT_ERRORS as e:
                checks.append(Check(f"{name}: features", None, "warn", "", f"not computed: {e}"))
                continue
            ms = measurements(ctx, name)  # computed once, shared with the diversity section's coverage check
            checks += _checks(name, ms)
            tables.append(_table(name, ms))
            figures.append(pca_figure(ctx, *pairs[0], f"features_pca_{name}.png"))
            figures += giveaway_figures(ctx, name, ms[0])
            imps = ms[0]["detection"].importances
            if imps:
                tables.append(Table(f"{name}: what gives synthetic images away (top 10)",
                                    ("statistic", "AUC lost when shuffled", "standardized coefficient (+ = synthetic)", "AUC of it alone",
                                     "real mean", "synthetic mean"),
                                    tuple((n, round(i, 4), round(c, 3), round(u, 3), *_means(pairs[0], n)) for n, i, c, u in imps[:10])))
            data[name] = [{kk: v for kk, v in m.items() if kk != "detection"} | {"importances": m["detection"].importances} for m in ms]
            if name == "detector":
                from .features import detector_choice

                data["detector_checkpoint"] = detector_choice(ctx)
    worst = [c for c in checks if c.status in ("warn", "fail")]
    summary = (f"Feature spaces {', '.join(ctx.features)}: " + (f"{len(worst)} of {len(checks)} checks warn or fail; "
               "synthetic images are measurably apart from the real ones." if worst else "synthetic images are within real-vs-real noise."))
    return Section("features", "Feature-space fidelity (KID, PRDC, classifier)", summary, tuple(checks), tuple(figures), tuple(tables), data)


def _means(pair: tuple, col: str) -> tuple[float, float]:
    fr, fs = pair
    j = fr.names.index(col)
    return round(float(fr.X[:, j].mean()), 4), round(float(fs.X[:, j].mean()), 4)
