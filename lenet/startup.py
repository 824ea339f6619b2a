"""Start-up without the cyclic garbage collector, for the commands (train.py, lenet-predict, lenet-serve).

Importing torch and Lightning creates about a million objects that live as long as the process. While
they are being created, CPython's collector keeps starting collections, and its full ones walk every
object made so far: seven of them during `import lightning`, a fifth of its time (4.3 against 5.6 s,
medians of 6 alternating imports, Intel Xeon, 2 cores). The commands import with the collector off,
then freeze what the imports made, so that later collections skip it, and turn the collector back on:
training and serving run with it, as any program does.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def end_of_startup() -> None:
    """After a start-up begun with `gc.disable()`: freeze every object made so far out of later
    collections and turn the collector on again. Does nothing where the collector is on, so a second
    call (the next job of a Hydra multirun) never freezes that job's garbage."""
    if gc.isenabled():
        return
    gc.freeze()
    gc.enable()


@contextmanager
def imports_without_collector() -> Iterator[None]:
    """The collector is off within; end_of_startup() after. Where it is already off (a caller started
    up that way), it stays off for that caller to end."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        end_of_startup()
