"""CUDA-graph capture of a step that writes ``out``: the replay must equal the eager run."""

import torch


def assert_replay_equals_eager(step, out: torch.Tensor) -> None:
    """Run ``step`` eagerly, capture it in a graph, zero ``out``, replay: ``out`` must come back the same."""
    step()
    eager = out.clone()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, eager)
