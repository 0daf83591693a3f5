"""`factory.make_app()`: the trailing () means call it once with no arguments."""

from _respond import make

#: How many times make_app ran in this process (a loader must call it once, not per request).
CALLS = 0


def make_app():
    global CALLS
    CALLS += 1
    return make("factory")
