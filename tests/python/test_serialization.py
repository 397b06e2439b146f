"""ember.save / ember.load: safetensors files of state dicts and nested
checkpoints; files written by hand here load, files ember writes parse by
hand; bad input is refused with a clear error."""
import json
import os
import struct
import tempfile
import unittest
from collections import OrderedDict

import ember
import ember.nn as nn


def read_safetensors(path):
    """A tiny independent reader: {name: (dtype, shape, raw bytes)}, metadata."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode())
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        out[name] = (e["dtype"], e["shape"], data[b:end])
    return out, meta


def write_safetensors(path, tensors, meta=None):
    """tensors: {name: (dtype, shape, bytes)}."""
    header, data = {}, b""
    for name, (dt, shape, raw) in tensors.items():
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)


class TestSerialization(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "ckpt.safetensors")

    def tearDown(self):
        self.dir.cleanup()

    def model(self):
        return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))

    def test_state_dict_roundtrip(self):
        a, b = self.model(), self.model()
        a(ember.randn(5, 3))  # moves BatchNorm's running statistics
        ember.save(a.state_dict(), self.path)
        sd = ember.load(self.path)
        self.assertIsInstance(sd, OrderedDict)
        self.assertEqual(list(sd.keys()), list(a.state_dict().keys()))
        b.load_state_dict(sd)
        for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            self.assertEqual(x.dtype, y.dtype, k)
            self.assertEqual(x.tolist(), y.tolist(), k)
        self.assertEqual(sd["1.num_batches_tracked"].dtype, ember.int64)
        # the file is plain safetensors: names, dtypes, shapes, little-endian data
        entries, meta = read_safetensors(self.path)
        self.assertEqual(entries["0.weight"][0], "F32")
        self.assertEqual(entries["0.weight"][1], [4, 3])
        self.assertEqual(list(struct.unpack("<12f", entries["0.weight"][2])),
                         [v for row in a[0].weight.tolist() for v in row])
        self.assertEqual(entries["1.num_batches_tracked"][:2], ("I64", []))
        self.assertIn("ember.structure", meta)

    def test_nested_checkpoint(self):
        m = self.model()
        opt = ember.optim.Adam(m.parameters(), lr=0.01)
        m(ember.randn(4, 3)).sum().backward()
        opt.step()
        ckpt = {"model": m.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
                "loss": 0.25, "name": "run-1", "tags": ("a", "b"), "none": None,
                "history": [1.5, 2.5]}
        ember.save(ckpt, self.path, metadata={"note": "hello"})
        back = ember.load(self.path)
        self.assertEqual(set(back.keys()), set(ckpt.keys()))
        self.assertEqual(back["epoch"], 3)
        self.assertEqual(back["loss"], 0.25)
        self.assertEqual(back["name"], "run-1")
        self.assertEqual(back["tags"], ("a", "b"))
        self.assertIsNone(back["none"])
        self.assertEqual(back["history"], [1.5, 2.5])
        self.assertEqual(list(back["optimizer"]["state"].keys()), [0, 1, 2, 3, 4, 5])
        self.assertEqual(back["optimizer"]["param_groups"][0]["betas"], (0.9, 0.999))
        m2 = self.model()
        m2.load_state_dict(back["model"])
        opt2 = ember.optim.Adam(m2.parameters(), lr=0.5)
        opt2.load_state_dict(back["optimizer"])
        self.assertEqual(opt2.param_groups[0]["lr"], 0.01)
        self.assertEqual(opt2.state_dict()["state"][0]["exp_avg"].tolist(),
                         opt.state_dict()["state"][0]["exp_avg"].tolist())
        entries, meta = read_safetensors(self.path)
        self.assertIn("model.0.weight", entries)
        self.assertIn("optimizer.state.0.exp_avg", entries)
        self.assertEqual(meta["note"], "hello")

    def test_foreign_file(self):
        write_safetensors(self.path, {
            "w": ("F64", [2, 2], struct.pack("<4d", 1.0, 2.0, 3.0, 4.0)),
            "b": ("I32", [3], struct.pack("<3i", -1, 0, 7)),
            "h": ("F16", [1], struct.pack("<e", 0.5)),
            "m": ("BOOL", [2], b"\x01\x00"),
        })
        sd = ember.load(self.path)
        self.assertEqual(sd["w"].dtype, ember.float64)
        self.assertEqual(sd["w"].tolist(), [[1.0, 2.0], [3.0, 4.0]])
        self.assertEqual(sd["b"].tolist(), [-1, 0, 7])
        self.assertEqual(sd["b"].dtype, ember.int32)
        self.assertEqual(sd["h"].tolist(), [0.5])
        self.assertEqual(sd["m"].tolist(), [True, False])

    def test_bad_input(self):
        with self.assertRaises(TypeError):
            ember.save({"f": lambda: 0}, self.path)
        with self.assertRaises(TypeError):
            ember.save({(1, 2): ember.zeros(1)}, self.path)
        with self.assertRaises(OSError):
            ember.load(os.path.join(self.dir.name, "missing.safetensors"))
        with open(self.path, "wb") as f:
            f.write(struct.pack("<Q", 1 << 40) + b"{}")
        with self.assertRaises((OSError, ValueError)):
            ember.load(self.path)
        write_safetensors(self.path, {"w": ("F32", [4], b"\x00" * 8)})
        with self.assertRaises((OSError, ValueError)):
            ember.load(self.path)
        write_safetensors(self.path, {"w": ("F32", [1], b"\x00" * 4)}, meta={"ember.structure": "{not json"})
        with self.assertRaises(ValueError):
            ember.load(self.path)
        with self.assertRaises(TypeError):
            ember.save({}, 42)

    def test_views_and_map_location(self):
        t = ember.arange(12, dtype=ember.float32).reshape(3, 4)
        ember.save({"tt": t.t(), "row": t[1], "step": t[:, ::2]}, self.path)
        back = ember.load(self.path, map_location="cpu")
        self.assertEqual(back["tt"].tolist(), t.t().tolist())
        self.assertEqual(back["row"].tolist(), [4.0, 5.0, 6.0, 7.0])
        self.assertEqual(back["step"].tolist(), [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]])


if __name__ == "__main__":
    unittest.main()
