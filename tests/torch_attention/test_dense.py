"""The dense SDPA path's padded length: few distinct shapes (cuDNN builds a graph per shape), little padding."""

from accelbridge.torch_attention import dense


def test_lengths_are_bucketed_onto_eight_steps_an_octave():
    assert [dense.bucket(n) for n in (1, 64, 65, 700, 1000, 3001, 4096, 4097)] == [64, 64, 128, 704, 1024, 3072,
                                                                                   4096, 4608]  # fmt: skip
    padded = [dense.bucket(n) for n in range(1, 33000)]
    assert all(n <= p <= max(n + 63, n * 1.125) for n, p in zip(range(1, 33000), padded))
    assert len(set(padded)) <= 8 * 10  # at most 8 shapes an octave up to 32k


def test_each_new_padded_shape_is_logged_once(caplog, monkeypatch):
    monkeypatch.setattr(dense, "_SHAPES", set())
    with caplog.at_level("INFO", logger="accelbridge"):
        for shape in [(2, 8, 2, 3072, 128), (2, 8, 2, 3072, 128), (3, 8, 2, 3072, 128)]:
            dense._say_new_shape(*shape)
    said = [r.getMessage() for r in caplog.records if "SDPA batch" in r.getMessage()]
    assert len(said) == 2 and "(2, 8, 2, 3072, 128)" in said[0] and "graph" in said[0]
