"""Lesson 6 (few-shot recognizer) run alone by papermill at the small size, its recognizer built from ONE image per
class; its figures checked against a recomputation on the same features and the same draws."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from threadpoolctl import threadpool_limits

from _course_fixtures import course_data_dir
from instructor import NOTEBOOK_DIR
from instructor.run import SMALL_PARAMETERS as SMALL
from utils import checks, data, features
from utils.deep_features import DeepFeatures

pytestmark = pytest.mark.slow
NAME = "06_few_shot_recognizer"
CLASSIFIERS = ["lesson 3: scaler + LR", "L2 + nearest centroid", "L2 + LR"]


def _template(name: str, m: dict) -> Pipeline:
    """The classifier ``name`` of the lesson, built here from the run's parameters."""
    return {"lesson 3: scaler + LR": Pipeline([("scale", StandardScaler()),
                                               ("classify", LogisticRegression(C=m["lesson3_C"], max_iter=1000))]),
            "L2 + nearest centroid": Pipeline([("l2", Normalizer()), ("classify", NearestCentroid())]),
            "L2 + LR": Pipeline([("l2", Normalizer()),
                                 ("classify", LogisticRegression(C=m["few_shot_C"], class_weight="balanced",
                                                                 max_iter=1000))])}[name]


@pytest.fixture(scope="module")
def lesson6(tmp_path_factory) -> dict:
    from instructor import run

    build = tmp_path_factory.mktemp("lesson6")
    parameters = dict(SMALL, data_dir=str(course_data_dir()), few_images_per_class=1)
    run.run_course(build, parameters, notebooks=[NOTEBOOK_DIR / f"{NAME}.ipynb"], log=lambda _: None)
    return {"metrics": json.loads((build / "metrics" / f"{NAME}.json").read_text()),
            "notebook": nbformat.read(build / "notebooks" / f"{NAME}.ipynb", as_version=4)}


@pytest.fixture(scope="module")
def recomputed(lesson6) -> dict:
    """Every draw's validation and test accuracy of the three classifiers, and raw pixels' test accuracy
    (on one BLAS thread, as in the lesson, so that the regressions sum in the same order)."""
    with threadpool_limits(1):
        return _recompute(lesson6["metrics"])


def _recompute(m: dict) -> dict:
    train, test = data.load_course_data(course_data_dir(), SMALL["n_train_per_class"], SMALL["n_test_per_class"],
                                        seed=m["seed"])
    f_train, f_test = (features.featurize_images(s.images, m["backbone"], m["image_size"]) for s in (train, test))
    pixels = lambda s: s.images.reshape(len(s), -1).astype(np.float32) / 255  # noqa: E731
    y_train, y_test = train.labels, test.labels
    draws = {s: [data.take_per_class(y_train, s, seed=m["seed"] + r) for r in range(m["repeats"])]
             for s in m["few_shot"]["shots"]}
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731

    def centroid_predict(x_train, y, x):  # nearest centroid of L2-normalized rows, written out
        centroids = np.stack([unit(x_train)[y == c].mean(axis=0) for c in range(4)])
        return np.linalg.norm(unit(x)[:, None] - centroids[None], axis=2).argmin(axis=1)

    lesson3 = _template("lesson 3: scaler + LR", m)
    l2_lr = LogisticRegression(C=m["few_shot_C"], max_iter=1000)  # balanced draws: class weights all 1
    predictors = {
        "lesson 3: scaler + LR": lambda x, y: clone(lesson3).fit(x, y).predict,
        "L2 + nearest centroid": lambda x, y: lambda q: centroid_predict(x, y, q),
        "L2 + LR": lambda x, y: lambda q: clone(l2_lr).fit(unit(x), y).predict(unit(q)),
    }
    validation = {name: [] for name in CLASSIFIERS}
    test_acc = {name: [] for name in CLASSIFIERS}
    test_draws = {name: [] for name in CLASSIFIERS}  # per shot count, each draw's test accuracy
    raw = []
    for s, draws_s in draws.items():
        for name, make in predictors.items():
            val, tst = [], []
            for idx in draws_s:
                rest = np.setdiff1d(np.arange(len(y_train)), idx)
                predict = make(f_train[idx], y_train[idx])
                val.append((predict(f_train[rest]) == y_train[rest]).mean())
                tst.append((predict(f_test) == y_test).mean())
            validation[name].append(np.mean(val))
            test_acc[name].append(np.mean(tst))
            test_draws[name].append(tst)
        raw.append(np.mean([(centroid_predict(pixels(train)[i], y_train[i], pixels(test)) == y_test).mean()
                            for i in draws_s]))
    return {"validation": validation, "test": test_acc, "test_draws": test_draws, "raw": raw, "draws": draws, "f_train": f_train,
            "f_test": f_test, "y_train": y_train, "y_test": y_test}


def test_few_shot_figures_equal_a_recomputation_on_the_same_draws(lesson6, recomputed) -> None:
    few = lesson6["metrics"]["few_shot"]
    assert few["shots"] == [s for s in [1, 2, 5, 10, 20, 50, 100, 200] if s <= SMALL["n_train_per_class"]]
    for name in CLASSIFIERS:
        assert few["by_classifier"][name] == pytest.approx(recomputed["test"][name], abs=1e-9), name
        assert lesson6["metrics"]["few_shot_validation"][name] == pytest.approx(
            recomputed["validation"][name], abs=1e-9), name
    assert few["raw_pixel_accuracy"] == pytest.approx(recomputed["raw"], abs=1e-9)
    # the crossover the lesson reads: the fewest shots from which L2 + LR stays ahead of the nearest centroid by more
    # than two standard errors of its lead, draw by draw
    clear = []
    for logistic, centroid in zip(*(recomputed["test_draws"][name] for name in ("L2 + LR", "L2 + nearest centroid"))):
        lead = np.array(logistic) - np.array(centroid)
        margin = 2 * lead.std(ddof=1) / np.sqrt(len(lead)) if len(lead) > 1 else 0.0
        clear.append(lead.mean() > margin)
    ahead = [s for i, s in enumerate(few["shots"]) if all(clear[i:])]
    assert few["logistic_overtakes_centroid"] == (ahead[0] if ahead else None)


def test_the_classifier_is_chosen_on_validation_not_on_the_test_set(lesson6, recomputed) -> None:
    m = lesson6["metrics"]
    means = {name: float(np.mean(v)) for name, v in recomputed["validation"].items()}
    assert m["few_shot_mean_validation"] == pytest.approx(means, abs=1e-9)
    chosen = m["few_shot_classifier"]
    assert chosen == m["few_shot"]["classifier"] == max(CLASSIFIERS, key=means.get)  # first of ties, like idxmax
    deep = m["few_shot"]["deep_feature_accuracy"]
    assert deep == m["few_shot"]["by_classifier"][chosen]
    shots = m["few_shot"]["shots"]
    assert m["one_shot_accuracy"] == deep[shots.index(1)] and m["five_shot_accuracy"] == deep[shots.index(5)]
    out = "".join(o.get("text", "") for c in lesson6["notebook"].cells if c.cell_type == "code"
                  for o in c.get("outputs", []))
    assert f"chosen for the curve and the recognizer: {chosen}" in out


def test_a_recognizer_from_one_image_per_class_fits_and_predicts(lesson6) -> None:
    m = lesson6["metrics"]
    recognizer = m["recognizer"]
    assert recognizer["images"] == 4 and recognizer["classes"] == list(data._COURSE_CLASSES)
    assert recognizer["steps"] == ["features", *_template(m["few_shot_classifier"], m).named_steps]
    assert len(recognizer["predictions"]) == 1 + 2 * 4  # the cat photo and two test images per class
    assert {p["recognized as"] for p in recognizer["predictions"]} <= set(data._COURSE_CLASSES)
    assert 0 <= recognizer["test_accuracy"] <= 1
    # leave-one-out with cross_val_predict, then the same folder through train_recognizer (the command's code):
    # one photo per class, so leave-one-out cannot get any right, and both say so
    assert recognizer["loo_accuracy"] == recognizer["command_loo_accuracy"] == 0
    assert recognizer["loo_predicted"] is not None and len(recognizer["loo_predicted"]) == 4
    assert 0 < recognizer["unknown_threshold"] <= 1
    out = "".join(o.get("text", "") for c in lesson6["notebook"].cells if c.cell_type == "code"
                  for o in c.get("outputs", []))
    assert "0 of 4 photos right: accuracy 0.000" in out
    assert "one photo only in automobile, bird, cat, dog: counted wrong" in out
    assert "one photo only, which leave-one-out cannot get right" in out
    assert "the same accuracy as cross_val_predict above: True" in out


def test_the_new_photos_show_their_class_and_the_count_right_matches_a_recomputation(lesson6, recomputed,
                                                                                    skimage_data) -> None:
    """The example photos (Chelsea, a cat, and two test images per class) with their true class beside the
    recognizer's answer; the answers and the count right recomputed from the same images' features."""
    m = lesson6["metrics"]
    rows, y_test, y_train = m["recognizer"]["predictions"], recomputed["y_test"], recomputed["y_train"]
    test_rows = data.take_per_class(y_test, 2, seed=m["seed"])
    assert [r["true class"] for r in rows] == ["cat", *(data._COURSE_CLASSES[y_test[i]] for i in test_rows)]
    folder = data.take_per_class(y_train, 1, seed=m["seed"])  # the stand-in folder: one course image per class
    with threadpool_limits(1):
        model = _template(m["few_shot_classifier"], m).fit(recomputed["f_train"][folder], y_train[folder])
        chelsea = DeepFeatures(m["backbone"], m["image_size"]).fit(None).transform([skimage_data / "chelsea.png"])
        predicted = model.predict(np.concatenate([chelsea, recomputed["f_test"][test_rows]]))
    assert [r["recognized as"] for r in rows] == [data._COURSE_CLASSES[p] for p in predicted]
    right = sum(r["true class"] == r["recognized as"] for r in rows)
    assert m["recognizer"]["new_photos_right"] == right
    out = "".join(o.get("text", "") for c in lesson6["notebook"].cells if c.cell_type == "code"
                  for o in c.get("outputs", []))
    assert f"new photos would be right; {right} are." in out


def _stdout(cell) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.get("outputs", []))


def test_no_exercise_answer_is_on_screen_before_its_question(lesson6, recomputed) -> None:
    """The expected answers of 6.1, 6.2 and 6.3 are not in any output above their questions. With 48 test images
    accuracies are multiples of 1/48, so a figure the lesson shows for another reason (a mean of the curve or of
    the validation table) may coincide with an answer: such coincidences are allowed, nothing else."""
    nb, m, r = lesson6["notebook"], lesson6["metrics"], recomputed
    question = {e: next(i for i, c in enumerate(nb.cells) if c.cell_type == "code"
                        and f'checks.check("{e}"' in c.source) for e in ("6.1", "6.2", "6.3")}
    expected = {
        "6.1": checks._expected_answer("6.1", model=_template(m["few_shot_classifier"], m), X_train=r["f_train"],
                                      y_train=r["y_train"], X_test=r["f_test"], y_test=r["y_test"], seed=m["seed"]),
        "6.2": checks._expected_answer("6.2", draws=r["draws"][1], X_train=r["f_train"], y_train=r["y_train"],
                                      X_test=r["f_test"], y_test=r["y_test"]),
        "6.3": checks._expected_answer("6.3", draws=r["draws"][5], X_train=r["f_train"], y_train=r["y_train"],
                                      X_test=r["f_test"], y_test=r["y_test"]),
    }
    tables = [*m["few_shot"]["by_classifier"].values(), m["few_shot"]["raw_pixel_accuracy"],
              *m["few_shot_validation"].values()]
    other_figures = {f"{v:.3f}" for values in tables for v in values}
    for exercise, value in expected.items():
        above = nb.cells[:question[exercise]]
        before = "".join(_stdout(c) for c in above if c.cell_type == "code")
        assert f"{value:.1%}" not in before, exercise
        assert f"{value:.3f}" not in before or f"{value:.3f}" in other_figures, exercise
    code_above = "\n".join(c.source for c in nb.cells[:question["6.3"]] if c.cell_type == "code")
    assert "KNeighborsClassifier" not in code_above  # the lesson never computes a 1-NN before asking for one
    code_above = "\n".join(c.source for c in nb.cells[:question["6.2"]] if c.cell_type == "code")
    assert "NearestCentroid()" not in code_above.replace('("classify", NearestCentroid())', "")  # never alone
    # machine tuning and library-noise filters live in setup(), not in the lesson's cells (issue 25)
    every_cell = "\n".join(c.source for c in nb.cells)
    assert "threadpool_limits" not in every_cell and "filterwarnings" not in every_cell
