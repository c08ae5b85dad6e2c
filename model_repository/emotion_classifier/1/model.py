"""The classifier step inside a Python-backend model (configs/python.pbtxt), on the CPU.

Runs the TorchScript file 1/model.pt, the same file the production libtorch
configuration serves, with the same inputs: the Python backend hands execute()
every request of a dynamic batch separately, so this model flattens and
concatenates them as the libtorch backend does, and the graph itself cuts the
rows apart, drops their padding and runs them in chunks of similar length.

What it adds on the CPU: with the `onednn_linear` parameter it swaps the graph's
Linear layers for oneDNN's kernel with weights packed once at load time (stock
PyTorch sends them to MKL, which is slow on small batches and on AMD CPUs); with
`intra_op_threads_alone` a lone request's forward pass uses the idle cores; and a
request the model cannot read fails alone instead of failing its whole batch.
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from core_sharing import CoreSharing
from ragged_requests import RaggedClassifierModel

# Read once, by the OpenMP runtime that loads with torch, and only matters with more
# than one intra-op thread: an idle OpenMP thread stops spinning after 3000 polls
# instead of libgomp's default 300000, so the worker thread of a two-thread forward pass
# frees its core for the other steps. Measured with intra_op_threads_alone "2", p50 at
# one client: 14.6-14.8 ms with the default, 9.3-9.9 ms with 3000.
os.environ.setdefault("GOMP_SPINCOUNT", "3000")
# oneDNN (onednn_linear) compiles and caches a kernel per input shape, and every batch of
# texts is a new shape. Two caches hold them, oneDNN's own and that of ideep, PyTorch's
# wrapper around it (LRU_CACHE_CAPACITY), both 1024 entries by default. Measured, a 40 s
# soak of the real model: with only oneDNN's capped at 32 each instance grew 1.5 MiB/s
# (+34 MiB from the first half to the second); with both capped it stayed flat (+6 MiB
# for the whole server, noise) at the same texts/s.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")
os.environ.setdefault("LRU_CACHE_CAPACITY", "32")
import torch  # noqa: E402


class TritonPythonModel(RaggedClassifierModel):
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("intra_op_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        threads_alone = int(params.get("intra_op_threads_alone", "0"))
        self.threads, self.threads_alone = threads, threads_alone
        self.cores = CoreSharing(args, config) if threads_alone > threads > 0 else None
        # The libtorch backend's switch, honoured here too: TorchScript's optimizing executor
        # re-profiles the graph for every new input shape, and every batch is a new shape.
        self.optimized_execution = params.get("DISABLE_OPTIMIZED_EXECUTION", "false").lower() != "true"

        path = os.path.join(args["model_repository"], args["model_version"], "model.pt")
        self.model = torch.jit.load(path, map_location="cpu").eval()
        if params.get("onednn_linear", "false").lower() == "true":
            swapped = use_onednn_linear(self.model)
            pb_utils.Logger.log_info(f"{args['model_name']}: {swapped} Linear layers run oneDNN's packed kernel")
        # The first calls of a TorchScript module profile and optimise the graph;
        # pay for them here rather than in the first user's request.
        for length in (8, 16):
            ids = np.ones((2, length), dtype=np.int64)
            self._forward([(ids, np.ones_like(ids))])

    def _forward(self, batch):
        """The graph's outputs for [(ids, mask), ...], passed as the libtorch backend passes a ragged batch."""
        ids = torch.from_numpy(np.concatenate([ids.reshape(-1) for ids, _ in batch]))
        mask = torch.from_numpy(np.concatenate([mask.reshape(-1) for _, mask in batch]))
        widths = torch.from_numpy(
            np.concatenate([np.full((len(ids), 1), ids.shape[1], dtype=np.int32) for ids, _ in batch])
        )
        if self.cores:
            threads = self.threads_alone if self.cores.alone() else self.threads
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        with torch.inference_mode(), torch.jit.optimized_execution(self.optimized_execution):
            logits, token_counts = self.model(ids, mask, widths)
        return logits.numpy(), token_counts.numpy()


LINEAR = """
graph(%x, %weight, %bias):
  %out = aten::linear(%x, %weight, %bias)
  return (%out)"""
ONEDNN_LINEAR = """
graph(%x, %weight, %bias):
  %batch_size : NoneType = prim::Constant()
  %packed = mkldnn::_reorder_linear_weight(%weight, %batch_size)
  %no_activation : str = prim::Constant[value="none"]()
  %scalars : Scalar?[] = prim::ListConstruct()
  %algorithm : str = prim::Constant[value=""]()
  %out = mkldnn::_linear_pointwise(%x, %packed, %bias, %no_activation, %scalars, %algorithm)
  return (%out)"""


def use_onednn_linear(module) -> int:
    """Rewrites a frozen TorchScript module in memory: every aten::linear runs oneDNN's kernel.

    A weight that is a graph constant (all of them, in a frozen module) is packed into
    oneDNN's layout once, here, and read from a module attribute; packing it on every
    call would cost more than the kernel saves. Measured on 2 Zen 4 cores, one text of
    19 tokens: 7.4 -> 4.5 ms with 2 threads, 11.5 -> 8.3 ms with 1. Returns how many
    Linear layers now run oneDNN.
    """
    if not torch.backends.mkldnn.is_available():
        return 0
    graph = module.graph
    torch._C._jit_pass_inline(graph)
    torch._C._jit_pass_custom_pattern_based_rewrite_graph(LINEAR, ONEDNN_LINEAR, graph)
    module_self = next(graph.inputs())
    for index, reorder in enumerate(graph.findAllNodes("mkldnn::_reorder_linear_weight")):
        weight = next(reorder.inputs())
        if weight.node().kind() != "prim::Constant":
            continue  # not frozen: packed per call, still correct
        name = f"onednn_packed_weight_{index}"
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.toIValue(), None)
        module._c._register_attribute(name, torch._C.TensorType.get(), packed)
        read = graph.create("prim::GetAttr", [module_self])
        read.s_("name", name)
        read.output().setType(torch._C.TensorType.get())
        read.insertBefore(reorder)
        reorder.output().replaceAllUsesWith(read.output())
        reorder.destroy()
    torch._C._jit_pass_dce(graph)
    return len(graph.findAllNodes("mkldnn::_linear_pointwise"))
