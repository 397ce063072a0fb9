"""The reference (sharpzo_ext.reference) is itself checked against published vectors, so the op
tests that compare to it compare to the contract."""

import math

import numpy as np
import pytest

from sharpzo_ext import reference

KATS = [  # Random123 kat_vectors: rounds, counter, key, output
    (10, [0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    (10, [0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    (10, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
    (7, [0, 0, 0, 0], [0, 0], [0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48]),
    (7, [0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662]),
    (7, [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A]),
]


@pytest.mark.parametrize("rounds, counter, key, expected", KATS)
def test_philox_known_answers(rounds, counter, key, expected):
    out = reference.philox4x32(np.array(counter, dtype=np.uint32), np.array(key, dtype=np.uint32),
                               rounds=rounds)
    assert out.tolist() == expected


def test_philox_pytorch_cpu_constants():
    # aten/src/ATen/test/cpu_generator_test.cpp: counter (offset, 0, 0, 0), key (seed, 0)
    assert reference.philox4x32([4, 0, 0, 0], [0, 0])[:2].tolist() == [4013802324, 2979262830]
    assert reference.philox4x32([1, 0, 0, 0], [10, 0])[:2].tolist() == [2007330488, 2354548925]


def test_stream_layout_uses_the_third_vector():
    # seed = (k0, k1), stream = (c2, c3), block = (c0, c1): element j = 128 block + i of the
    # Rademacher stream is bit i % 32 of word i // 32. The block is beyond any offset < 2^63, so
    # go through the reference's block function directly.
    _, counter, key, expected = KATS[2]
    seed = key[0] | key[1] << 32
    stream = counter[2] | counter[3] << 32
    block = counter[0] | counter[1] << 32
    words = reference._blocks(seed, stream, np.array([block], dtype=np.uint64))[0]
    assert words.tolist() == expected


def test_rademacher_values_are_the_bits_of_block_zero():
    words = KATS[0][3]
    expected = [1.0 if (words[j // 32] >> (j % 32)) & 1 else -1.0 for j in range(128)]
    assert reference.stream_values(128, 0, 0, "rademacher").tolist() == expected


def test_gaussian_values_follow_the_box_muller_formula():
    w = KATS[0][3]  # seed 0, stream 0, block 0
    u = [((wk >> 9) + 0.5) * 2.0**-23 for wk in w]
    r01, r23 = math.sqrt(-2 * math.log(u[0])), math.sqrt(-2 * math.log(u[2]))
    expected = [r01 * math.cos(2 * math.pi * u[1]), r01 * math.sin(2 * math.pi * u[1]),
                r23 * math.cos(2 * math.pi * u[3]), r23 * math.sin(2 * math.pi * u[3])]
    np.testing.assert_allclose(reference.stream_values(4, 0, 0, "gaussian"), expected, rtol=1e-15)
