"""The model runtime: loading, predicting, explaining."""

import io

import numpy as np
import pytest
from PIL import Image

from inference.services import DecisionRule, load_model, predict_image
from tests.images import png_bytes

CLASSES = ["covid", "normal", "pneumonia"]


def test_prediction_gives_a_probability_per_class_and_a_heatmap(tiny_model_path):
    loaded = load_model(str(tiny_model_path), key="runtime-1", class_names=CLASSES, input_size=32)
    result = predict_image(png_bytes(size=120), loaded)
    assert set(result.probabilities) == set(CLASSES)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    assert result.confidence == result.probabilities[result.label]
    assert result.inference_ms > 0
    heatmap = Image.open(io.BytesIO(result.heatmap_jpeg))
    assert heatmap.format == "JPEG" and heatmap.size == (120, 120)


def test_the_loader_keeps_a_model_per_version_key(tiny_model_path):
    first = load_model(str(tiny_model_path), key="runtime-cache", class_names=CLASSES, input_size=32)
    again = load_model(str(tiny_model_path), key="runtime-cache", class_names=CLASSES, input_size=32)
    other = load_model(str(tiny_model_path), key="runtime-cache-2", class_names=CLASSES, input_size=32)
    assert again is first
    assert other is not first


def test_temperature_above_one_softens_probabilities_and_keeps_their_order():
    probs = np.array([[0.9, 0.08, 0.02]])
    softened = DecisionRule(temperature=2.0).adjust(probs)
    assert softened.sum() == pytest.approx(1.0)
    assert softened[0, 0] < 0.9
    assert list(np.argsort(softened[0])) == list(np.argsort(probs[0]))


def test_a_site_bias_changes_that_sites_answer_only():
    rule = DecisionRule(bias=(0.0, 0.0, 0.0), site_bias={"new-hospital": (0.0, 2.0, 0.0)})
    probs = np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    adjusted = rule.adjust(probs, ["old-hospital", "new-hospital"])
    assert adjusted[0].argmax() == 0 and adjusted[1].argmax() == 1
    assert DecisionRule.from_dict(rule.as_dict()) == rule


def test_predict_image_decides_with_the_sites_bias(tiny_model_path):
    rule = DecisionRule(site_bias={"site-x": (0.0, 50.0, 0.0)})
    loaded = load_model(
        str(tiny_model_path), key="runtime-site-bias", class_names=CLASSES, input_size=32, decision=rule
    )
    from tests.images import png_bytes

    result = predict_image(png_bytes(seed=1), loaded, site="site-x", with_heatmap=False)
    assert result.label == "normal" and result.confidence > 0.99


def test_the_overlay_tints_where_the_heatmap_is_hot_and_keeps_the_image_elsewhere():
    from inference.services import heatmap_overlay_jpeg

    gray = np.full((400, 400), 128, dtype=np.uint8)
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[:, :2] = 1.0  # hot on the left quarter, cold on the right
    overlay = np.asarray(Image.open(io.BytesIO(heatmap_overlay_jpeg(gray, heat))).convert("RGB"), dtype=int)

    assert overlay.shape == (400, 400, 3)
    cold = overlay[:, 300:].reshape(-1, 3).mean(axis=0)
    hot = overlay[:, :40].reshape(-1, 3).mean(axis=0)
    assert np.all(np.abs(cold - 128) < 4)  # heat 0: the X-ray as it is
    # heat 1: half the image, half jet's hottest colour (dark red: 128, 0, 0), so red stays, green and blue halve
    assert hot[0] > 110 and hot[1] < 80 and hot[2] < 80
