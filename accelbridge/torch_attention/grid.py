"""Launch arithmetic the Triton launchers share: block counts and power-of-two block sizes."""


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (Triton block shapes are powers of two)."""
    return 1 << (n - 1).bit_length()
