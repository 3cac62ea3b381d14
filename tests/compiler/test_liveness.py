"""The one liveness rule: a value is dropped right after its last reader, never before."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from coreml_compile.compiler.liveness import release_after


def test_values_go_after_their_last_reader_and_kept_ones_never():
    reads = [["x", "w"], ["a", "x"], ["a", "b"]]
    assert release_after(reads, keep=["w"]) == [[], ["x"], ["a", "b"]]


@given(st.lists(st.lists(st.integers(0, 9), max_size=4), max_size=12), st.sets(st.integers(0, 9)))
def test_each_value_is_released_once_at_its_last_read(reads, keep):
    release = release_after(reads, keep)
    released = [v for step in release for v in step]
    assert len(released) == len(set(released))
    for i, step in enumerate(release):
        for v in step:
            assert v not in keep
            assert v in reads[i]
            assert all(v not in later for later in reads[i + 1 :])
    read_anywhere = {v for step in reads for v in step}
    assert set(released) == read_anywhere - keep
