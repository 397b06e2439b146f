"""The built-in DDP comm hooks. Registered on a DistributedDataParallel
(``ddp.register_comm_hook(state, allreduce_hook)``) they run in C, so the
bucket's communication overlaps the rest of backward; called directly
(``hook(process_group, bucket)``) they do the same in Python and return a
future of the averaged bucket.

    allreduce_hook        average by all-reduce (DDP's default)
    fp16_compress_hook    divide by the world size, all-reduce in float16,
                          convert back
    bf16_compress_hook    the same in bfloat16
"""
import ember
import ember.distributed as dist

__all__ = ["allreduce_hook", "fp16_compress_hook", "bf16_compress_hook"]


def _group(process_group):
    return process_group if process_group is not None else dist.group.WORLD


def allreduce_hook(process_group, bucket):
    group = _group(process_group)
    world = dist.get_world_size(group)
    tensor = bucket.buffer().div_(world)
    return dist.all_reduce(tensor, group=group, async_op=True).get_future().then(
        lambda fut: fut.value()[0])


def _compress(process_group, bucket, dtype):
    group = _group(process_group)
    world = dist.get_world_size(group)
    buf = bucket.buffer()
    compressed = buf.div(world).to(dtype)
    fut = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def decompress(f):
        buf.copy_(f.value()[0])
        return buf

    return fut.then(decompress)


def fp16_compress_hook(process_group, bucket):
    return _compress(process_group, bucket, ember.float16)


def bf16_compress_hook(process_group, bucket):
    return _compress(process_group, bucket, ember.bfloat16)


# the C hook each one maps to when registered on DistributedDataParallel
allreduce_hook._ember_builtin = "allreduce"
fp16_compress_hook._ember_builtin = "fp16"
bf16_compress_hook._ember_builtin = "bf16"
