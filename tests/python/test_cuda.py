"""ember.cuda and ember.backends: what every build answers (no device here:
the clear errors), and with a CUDA device (tests/gpu/device_check.sh runs
this file too; its label is cuda) devices, memory statistics, streams,
events and record_stream against what the C layer's tests establish."""
import unittest

import ember

HAVE_CUDA = ember.cuda.is_available()


class TestEveryBuild(unittest.TestCase):
    def tearDown(self):
        ember.set_float32_matmul_precision("highest")

    def test_queries_agree(self):
        self.assertEqual(ember.cuda.is_available(), ember.cuda.device_count() > 0)
        self.assertEqual(ember.cuda.unavailable_reason() == "", HAVE_CUDA)
        self.assertEqual(ember.cuda.is_initialized(), HAVE_CUDA)
        if not HAVE_CUDA:
            self.assertFalse(ember.backends.cudnn.is_available())

    def test_device_arguments_are_checked(self):
        with self.assertRaisesRegex(ValueError, "expected a cuda device, got cpu"):
            ember.cuda.synchronize("cpu")
        with self.assertRaisesRegex(ValueError, "expected a cuda device"):
            ember.cuda.memory_stats(ember.device("cpu"))
        with self.assertRaises(TypeError):
            ember.cuda.synchronize(1.5)
        with self.assertRaises(RuntimeError):
            ember.cuda.set_device("cuda:9" if HAVE_CUDA else 0)
        with self.assertRaisesRegex(TypeError, "ember.cuda.Stream"):
            ember.cuda.set_stream("not a stream")
        with self.assertRaisesRegex(TypeError, "ember.cuda.Stream"):
            ember.ones(3).record_stream(None)
        with self.assertRaisesRegex(ValueError, "expected a device"):
            ember.cuda.set_device(None)
        ember.cuda.set_device(-1)  # as torch: changes nothing

    @unittest.skipIf(HAVE_CUDA, "a CUDA device is present")
    def test_without_a_device_calls_say_why(self):
        why = ember.cuda.unavailable_reason()
        self.assertTrue(why)
        for call in (ember.cuda.current_device, ember.cuda.init, ember.cuda.synchronize,
                     ember.cuda.memory_stats, ember.cuda.memory_allocated,
                     ember.cuda.reset_peak_memory_stats, ember.cuda.get_device_name,
                     ember.cuda.current_stream, ember.cuda.Stream, ember.cuda.Event,
                     lambda: ember.arange(3.0).pin_memory()):
            with self.assertRaises(RuntimeError) as cm:
                call()
            self.assertIn("CUDA", str(cm.exception))
        ember.cuda.empty_cache()  # nothing cached: a no-op, as torch's
        self.assertFalse(ember.arange(3.0).is_pinned())

    def test_matmul_precision(self):
        self.assertEqual(ember.get_float32_matmul_precision(), "highest")
        self.assertFalse(ember.backends.cuda.matmul.allow_tf32)
        ember.set_float32_matmul_precision("medium")
        self.assertEqual(ember.get_float32_matmul_precision(), "medium")
        self.assertTrue(ember.backends.cuda.matmul.allow_tf32)
        ember.backends.cuda.matmul.allow_tf32 = False
        self.assertEqual(ember.get_float32_matmul_precision(), "highest")
        ember.backends.cuda.matmul.allow_tf32 = True
        self.assertEqual(ember.get_float32_matmul_precision(), "high")
        with self.assertRaisesRegex(ValueError, 'expected "highest", "high" or "medium", got "fast"'):
            ember.set_float32_matmul_precision("fast")
        self.assertEqual(ember.get_float32_matmul_precision(), "high")

    def test_manual_seed_seeds_the_one_generator(self):
        ember.cuda.manual_seed(123)
        a = ember.rand(5)
        ember.manual_seed(123)
        self.assertEqual(ember.rand(5).tolist(), a.tolist())
        ember.cuda.manual_seed_all(7)
        self.assertEqual(ember.initial_seed(), 7)


@unittest.skipUnless(HAVE_CUDA, "no CUDA device: " + ember.cuda.unavailable_reason())
class TestDevice(unittest.TestCase):
    def test_devices(self):
        self.assertGreaterEqual(ember.cuda.device_count(), 1)
        self.assertEqual(ember.cuda.current_device(), 0)
        self.assertTrue(ember.cuda.get_device_name(0))
        self.assertEqual(ember.cuda.get_device_name(), ember.cuda.get_device_name("cuda:0"))
        with ember.cuda.device(0):
            self.assertEqual(ember.cuda.current_device(), 0)
        ember.cuda.init()
        ember.cuda.synchronize()
        self.assertTrue(ember.backends.cuda.is_built())

    def test_memory_statistics(self):
        ember.cuda.synchronize()
        ember.cuda.empty_cache()
        before = ember.cuda.memory_allocated()
        ember.cuda.reset_peak_memory_stats()
        x = ember.zeros(1 << 20, device="cuda")  # 4 MiB
        self.assertGreaterEqual(ember.cuda.memory_allocated() - before, 4 << 20)
        self.assertGreaterEqual(ember.cuda.max_memory_allocated(), ember.cuda.memory_allocated())
        self.assertGreaterEqual(ember.cuda.memory_reserved(), ember.cuda.memory_allocated())
        stats = ember.cuda.memory_stats("cuda:0")
        self.assertGreater(stats["num_allocs"], 0)
        del x
        self.assertEqual(ember.cuda.memory_allocated(), before)
        self.assertGreaterEqual(ember.cuda.max_memory_reserved(), 4 << 20)
        ember.cuda.empty_cache()

    def test_streams_and_events(self):
        default = ember.cuda.current_stream()
        self.assertEqual(default, ember.cuda.default_stream())
        s = ember.cuda.Stream()
        self.assertNotEqual(s, default)
        self.assertEqual(s.device_index, 0)
        self.assertNotEqual(s.cuda_stream, 0)
        start, end = ember.cuda.Event(enable_timing=True), ember.cuda.Event(enable_timing=True)
        x = ember.rand(1 << 20).to("cuda")
        s.wait_stream(default)  # x is ready before s uses it
        with ember.cuda.stream(s):
            self.assertEqual(ember.cuda.current_stream(), s)
            start.record()
            y = x * 2 + 1
            end.record()
        self.assertEqual(ember.cuda.current_stream(), default)
        end.synchronize()
        self.assertTrue(end.query())
        self.assertGreaterEqual(start.elapsed_time(end), 0.0)
        default.wait_stream(s)
        self.assertEqual(y.cpu().tolist(), (x.cpu() * 2 + 1).tolist())
        s.synchronize()
        self.assertTrue(s.query())
        ev = ember.cuda.Event()
        ev.record(s)
        ev.wait()  # the current stream waits for s
        default.wait_event(ev)
        with self.assertRaisesRegex(ValueError, "enable_timing"):
            ev.elapsed_time(ev)
        # a dead Stream's CUDA stream serves the next one (its cached blocks too)
        handle = s.cuda_stream
        del s
        self.assertEqual(ember.cuda.Stream().cuda_stream, handle)

    def test_record_stream(self):
        s = ember.cuda.Stream()
        x = ember.ones(1 << 16, device="cuda")
        s.wait_stream(ember.cuda.current_stream())
        with ember.cuda.stream(s):
            y = x + 1
        x.record_stream(s)
        del x  # freed only once s has finished with it
        ember.cuda.synchronize()
        self.assertEqual(y.sum().item(), 2.0 * (1 << 16))
        with self.assertRaises(RuntimeError):
            ember.ones(3).record_stream(s)  # a CPU tensor: "expected a CUDA tensor"

    def test_copy_between_devices_and_load_state_dict(self):
        g = ember.zeros(3, device="cuda")
        g.copy_(ember.tensor([1.0, 2.0, 3.0]))
        self.assertEqual(g.cpu().tolist(), [1.0, 2.0, 3.0])
        c = ember.zeros(3, dtype=ember.float64)
        c.copy_(g)
        self.assertEqual(c.tolist(), [1.0, 2.0, 3.0])
        src = ember.nn.Linear(3, 2)
        dst = ember.nn.Linear(3, 2).cuda()
        dst.load_state_dict(src.state_dict())
        self.assertTrue(dst.weight.is_cuda)
        self.assertEqual(dst.weight.cpu().tolist(), src.weight.tolist())
        x = ember.tensor([[1.0, 2.0, 4.0]], device="cuda")
        self.assertEqual(x.to("cpu", ember.float64, non_blocking=True).tolist(), [[1.0, 2.0, 4.0]])

    def test_moves_carry_gradients(self):
        w = ember.ones(3, requires_grad=True)
        (w.to("cuda") * 3).sum().backward()
        self.assertEqual(w.grad.device.type, "cpu")
        self.assertEqual(w.grad.tolist(), [3.0] * 3)
        v = ember.ones(3, device="cuda", requires_grad=True)
        self.assertTrue(v.is_leaf)
        (v.cpu() * 5).sum().backward()
        self.assertTrue(v.grad.is_cuda)
        self.assertEqual(v.grad.cpu().tolist(), [5.0] * 3)

    def test_pinned_memory(self):
        x = ember.arange(6.0)
        p = x.pin_memory()
        self.assertTrue(p.is_pinned())
        self.assertEqual(p.tolist(), x.tolist())
        g = p.to("cuda", non_blocking=True)
        self.assertEqual(g.cpu().tolist(), x.tolist())
        h = p.cuda(non_blocking=True)
        back = h.to("cpu", non_blocking=True)  # into pinned memory: ready after a sync
        ember.cuda.synchronize()
        self.assertTrue(back.is_pinned())
        self.assertEqual(back.tolist(), x.tolist())


if __name__ == "__main__":
    unittest.main()
