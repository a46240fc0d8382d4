"""Progress bars for long computations (convention 11): tqdm, shown in a terminal or a notebook,
switchable off per call. Interrupting (Ctrl-C) is safe: adapters write into the AnnData only
after the computation has finished."""

from __future__ import annotations

from contextlib import contextmanager

#: with ``progress=None``, show a bar for inputs of at least this many matrix elements
AUTO_ELEMENTS = 10_000_000


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass


def check_progress(progress) -> bool | None:
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None (automatic), got {progress!r}")
    return progress


@contextmanager
def progress_bar(total: int, desc: str, progress: bool | None, elements: int, *, unit: str = "block"):
    """A tqdm bar of ``total`` steps (``update``/``set_description``), or a silent stand-in.

    ``progress=None`` shows it when the input has at least :data:`AUTO_ELEMENTS` elements."""
    show = elements >= AUTO_ELEMENTS if progress is None else progress
    if not show or total <= 0:
        yield _Silent()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit != "block", leave=False)
    try:
        yield bar
    finally:
        bar.close()
