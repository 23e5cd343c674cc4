"""Splitting a piper-shaped ONNX graph, the on-disk cache of the split, and the fallback to whole sentences
when a voice cannot be split (tiny synthetic graphs with piper's tensor scopes; real onnxruntime)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from trunkline.pipeline.models import BoundedPool, PiperSpec, piper_stream_voice, piper_voice_paths
from trunkline.pipeline.piper_stream import (
    SplitError,
    StreamSettings,
    find_split_names,
    load_split,
    load_stream_voice,
    split_voice_model,
)
from trunkline.pipeline.tts import LocalPiper

HOP = 256


def _graph(with_flow: bool = True, seed: int = 0) -> onnx.ModelProto:
    """ids → z_p [1, 2, T] and mask → (flow: conv k3, masked) → z → (decoder: conv to HOP channels,
    interleaved to [1, 1, T * HOP]); node names use piper's scopes (/flow/..., /dec/...)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 2, 3)).astype(np.float32), "flow.w"),
        numpy_helper.from_array((0.01 * rng.standard_normal((HOP, 2, 3))).astype(np.float32), "dec.w"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
        numpy_helper.from_array(np.array([1.0], np.float32), "one"),
        numpy_helper.from_array(np.array([0.1], np.float32), "tenth"),
        numpy_helper.from_array(np.array([1, 1, -1], np.int64), "flat"),
    ]
    flow = "/flow/" if with_flow else "/other/"
    nodes = [
        helper.make_node("Cast", ["input"], ["/enc_p/x"], name="/enc_p/Cast", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["/enc_p/x", "axis1"], ["/enc_p/xz"], name="/enc_p/Unsqueeze"),
        helper.make_node("Mul", ["/enc_p/xz", "tenth"], ["/enc_p/xs"], name="/enc_p/Scale"),
        helper.make_node("Sin", ["/enc_p/xs"], ["/enc_p/xsin"], name="/enc_p/Sin"),
        helper.make_node("Concat", ["/enc_p/xs", "/enc_p/xsin"], ["/Add_output_0"], name="/Concat", axis=1),
        helper.make_node("Mul", ["/enc_p/xz", "zero"], ["/m0"], name="/MaskMul"),
        helper.make_node("Add", ["/m0", "one"], ["/Cast_2_output_0"], name="/MaskAdd"),
        helper.make_node("Identity", ["/Add_output_0"], ["/f0"], name=f"{flow}Identity"),
        helper.make_node("Mul", ["/f0", "/Cast_2_output_0"], ["/f1"], name=f"{flow}Mul"),
        helper.make_node("Conv", ["/f1", "flow.w"], ["/f2"], name=f"{flow}Conv", pads=[1, 1]),
        helper.make_node("Tanh", ["/f2"], ["/f3"], name=f"{flow}Tanh"),
        helper.make_node("Mul", ["/f3", "/Cast_2_output_0"], ["/Mul_7_output_0"], name="/Mul_7"),
        helper.make_node(
            "Conv", ["/Mul_7_output_0", "dec.w"], ["/d1"], name="/dec/conv_pre/Conv", pads=[1, 1]
        ),
        helper.make_node("Transpose", ["/d1"], ["/d2"], name="/dec/Transpose", perm=[0, 2, 1]),
        helper.make_node("Reshape", ["/d2", "flat"], ["/d3"], name="/dec/Reshape"),
        helper.make_node("Tanh", ["/d3"], ["output"], name="/dec/Tanh"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-piper",
        [
            helper.make_tensor_value_info("input", TensorProto.INT64, [1, None]),
            helper.make_tensor_value_info("input_lengths", TensorProto.INT64, [1]),
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, None])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return model


def _session(model: str | bytes) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    onnx.save(_graph(), str(path))
    return path


def _feeds(n: int) -> dict[str, np.ndarray]:
    ids = np.arange(1, n + 1, dtype=np.int64)[None]
    return {"input": ids, "input_lengths": np.array([n], np.int64), "scales": np.zeros(3, np.float32)}


def test_the_three_parts_compose_to_the_whole_model(tiny: Path) -> None:
    names = find_split_names(onnx.load(str(tiny)))
    assert (names.z_p, names.mask, names.z, names.audio) == (
        "/Add_output_0", "/Cast_2_output_0", "/Mul_7_output_0", "output")  # fmt: skip
    voice = load_stream_voice(tiny, None, _session, HOP)
    feeds = _feeds(30)
    whole = _session(str(tiny)).run(None, feeds)[0].reshape(-1)
    z_p = voice.latent(feeds["input"][0].tolist(), feeds["scales"])
    np.testing.assert_allclose(voice.decode_all(z_p), whole, atol=1e-6)
    chunks = list(voice.stream(z_p, StreamSettings(4, 2.0, 16, 1, 1)))
    assert len(chunks) > 2 and len(chunks[0][0]) == 4 * HOP
    np.testing.assert_allclose(np.concatenate([a for a, _ in chunks]), whole, atol=1e-6)


def test_graphs_without_piper_scopes_or_with_speakers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SplitError):
        find_split_names(_graph(with_flow=False))
    model = _graph()
    model.graph.input.append(helper.make_tensor_value_info("sid", TensorProto.INT64, [1]))
    with pytest.raises(SplitError):
        find_split_names(model)


def test_split_is_cached_on_disk_and_keyed_by_the_voice_files_content(tiny: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    parts = load_split(tiny, cache)
    files = sorted(cache.iterdir())
    assert [f.name.split(".")[-2] for f in files] == ["decoder", "encoder", "flow"]
    assert not [f for f in files if f.suffix == ".tmp"]
    files[0].write_bytes(b"marker")  # read back from the cache, not split again
    assert load_split(tiny, cache)[2] == b"marker"
    # the same voice installed elsewhere (another virtualenv) shares the split
    elsewhere = tmp_path / "venv2" / tiny.name
    elsewhere.parent.mkdir()
    shutil.copy2(tiny, elsewhere)
    os.utime(elsewhere, ns=(10**9, 10**9))
    assert load_split(elsewhere, cache)[2] == b"marker" and len(list(cache.iterdir())) == 3
    assert load_split(tiny, cache, refresh=True) == parts
    # a new version of the voice: its own split, and the old version's files are removed
    model = onnx.load(str(tiny))
    model.doc_string = "voice v2"
    onnx.save(model, str(tiny))
    assert load_split(tiny, cache) == parts and len(list(cache.iterdir())) == 3


def test_damaged_or_unwritable_cache_still_gives_a_working_split(tiny: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    expected = split_voice_model(tiny)
    load_split(tiny, cache)
    for f in cache.iterdir():
        f.write_bytes(b"not onnx")
    voice = load_stream_voice(tiny, cache, _session, HOP)  # re-split and replaced
    assert voice.names.z == "/Mul_7_output_0"
    assert load_split(tiny, cache) == expected
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert load_split(tiny, blocker / "sub") == expected  # mkdir fails: split in memory
    assert load_split(tiny, None) == expected


async def test_a_voice_that_cannot_be_split_speaks_whole_sentences(tmp_path: Path) -> None:
    path = tmp_path / "flat.onnx"
    onnx.save(_graph(with_flow=False), str(path))
    _, config = piper_voice_paths()
    spec = PiperSpec(str(path), str(config), 1)
    assert await asyncio.to_thread(piper_stream_voice, spec, StreamSettings(), str(tmp_path)) is None
    pool = BoundedPool("tts-test", 1, 2)
    try:
        piper = LocalPiper(pool, output_rate_hz=8000, model_path=str(path), config_path=str(config),
                           intra_op_threads=1, split_cache_dir=tmp_path)  # fmt: skip
        async with asyncio.timeout(30):
            chunks = [c async for c in piper.stream("Hello there. Goodbye.")]
        assert not piper.streams
        assert len(chunks) == 2 and all(c.sample_rate_hz == 8000 and len(c.pcm) for c in chunks)
    finally:
        pool.shutdown()


async def test_a_split_piper_shaped_voice_streams_in_chunks(tiny: Path, tmp_path: Path) -> None:
    _, config = piper_voice_paths()
    pool = BoundedPool("tts-test", 1, 2)
    try:
        piper = LocalPiper(pool, output_rate_hz=22050, model_path=str(tiny), config_path=str(config),
                           intra_op_threads=1, split_cache_dir=tmp_path)  # fmt: skip
        await asyncio.to_thread(piper.preload)
        assert piper.streams
        async with asyncio.timeout(30):
            chunks = [c async for c in piper.stream("Hello there, how are you doing today?")]
        assert len(chunks) > 2 and len(chunks[0].pcm) <= StreamSettings().first_frames * HOP
    finally:
        pool.shutdown()
