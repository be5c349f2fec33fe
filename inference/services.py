"""The model runtime: load a model artifact, predict one image, explain it with Grad-CAM.

Takes paths and arrays, returns dataclasses, imports no Django models. Keras is
imported lazily so that Celery's prefork parent never initialises TensorFlow.
"""

import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from inference.preprocessing import ImageSource, load_grayscale, preprocess

LAST_CONV_LAYER = "last_conv"
PROBABILITY_FLOOR = 1e-7  # log(0) guard when softmax outputs are turned back into logits
_CACHE_SIZE = 2


@dataclass(frozen=True)
class LoadedModel:
    key: str
    model: Any = field(repr=False)
    class_names: tuple[str, ...]
    input_size: int
    temperature: float = 1.0
    # Compiled once per model: images → probabilities, and images → (probabilities, Grad-CAM).
    forward: Any = field(default=None, repr=False)
    explain: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class PredictionResult:
    probabilities: dict[str, float]
    label: str
    confidence: float
    inference_ms: float
    heatmap_jpeg: bytes | None = field(default=None, repr=False)


_cache: OrderedDict[str, LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()


def load_model(
    path: str, *, key: str, class_names: list[str], input_size: int, temperature: float = 1.0
) -> LoadedModel:
    """Load a .keras artifact once per process; ``key`` names the model version."""
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    import keras
    import tensorflow as tf

    model = keras.models.load_model(path, compile=False)
    loaded = LoadedModel(
        key=key,
        model=model,
        class_names=tuple(class_names),
        input_size=input_size,
        temperature=temperature,
        forward=tf.function(lambda images: model(images, training=False), reduce_retracing=True),
        explain=_explainer(model),
    )
    with _cache_lock:
        _cache[key] = loaded
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return loaded


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale softmax outputs by a temperature fitted on validation data."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, PROBABILITY_FLOOR, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)


def predict_arrays(loaded: LoadedModel, batch: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """(N, S, S, 3) preprocessed images (uint8 or float) → (N, classes) calibrated probabilities."""
    outputs = [
        np.asarray(loaded.forward(batch[start : start + batch_size].astype(np.float32, copy=False)))
        for start in range(0, len(batch), batch_size)
    ]
    probabilities = np.concatenate(outputs) if outputs else np.zeros((0, len(loaded.class_names)))
    return apply_temperature(probabilities, loaded.temperature)


def _explainer(model: Any) -> Any:
    """One compiled pass giving the probabilities and the Grad-CAM of the top class, or None
    for a model without a ``last_conv`` layer."""
    import keras
    import tensorflow as tf

    try:
        conv_layer = model.get_layer(LAST_CONV_LAYER)
    except ValueError:
        return None
    grad_model = keras.Model(model.input, [conv_layer.output, model.output])

    @tf.function(reduce_retracing=True)
    def explain(images: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            features, probabilities = grad_model(images, training=False)
            top = tf.gather(probabilities, tf.argmax(probabilities[0]), axis=1)
        weights = tf.reduce_mean(tape.gradient(top, features), axis=(1, 2))
        cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0]
        return probabilities, cam / tf.maximum(tf.reduce_max(cam), 1e-12)

    return explain


def heatmap_overlay_jpeg(gray: np.ndarray, heat: np.ndarray) -> bytes:
    """Blend a 0..1 heatmap (any size) over the grayscale image, as JPEG bytes."""
    from matplotlib import colormaps

    base = Image.fromarray(gray).convert("RGB")
    heat_img = Image.fromarray((heat * 255).astype(np.uint8)).resize(base.size, Image.Resampling.BILINEAR)
    colored = (colormaps["jet"](np.asarray(heat_img) / 255.0)[:, :, :3] * 255).astype(np.uint8)
    alpha = (np.asarray(heat_img, dtype=np.float32) / 255.0 * 0.5)[:, :, None]
    blended = (np.asarray(base) * (1 - alpha) + colored * alpha).astype(np.uint8)
    out = Image.fromarray(blended)
    out.thumbnail((768, 768))
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=88)  # a picture to look at: PNG cost 10x the time
    return buffer.getvalue()


def predict_image(source: ImageSource, loaded: LoadedModel, *, with_heatmap: bool = True) -> PredictionResult:
    """Decode, preprocess and classify one image; optionally explain the predicted class."""
    gray = load_grayscale(source)
    batch = preprocess(gray, loaded.input_size)[None]
    heat = None
    started = time.perf_counter()
    if with_heatmap and loaded.explain is not None:
        raw, cam = loaded.explain(batch)
        probabilities = apply_temperature(np.asarray(raw), loaded.temperature)[0]
        heat = np.asarray(cam)
    else:
        probabilities = predict_arrays(loaded, batch)[0]
    inference_ms = (time.perf_counter() - started) * 1000.0
    index = int(np.argmax(probabilities))
    return PredictionResult(
        probabilities={name: float(p) for name, p in zip(loaded.class_names, probabilities, strict=True)},
        label=loaded.class_names[index],
        confidence=float(probabilities[index]),
        inference_ms=inference_ms,
        heatmap_jpeg=heatmap_overlay_jpeg(gray, heat) if heat is not None else None,
    )
